"""Datasets: read raw files safely, write one canonical prepared artifact, feed it to the device.

The `prepare` stage (`main(argv)`) turns a dataset into `data/prepared/<name>/` (see
docs/ARCHITECTURE.md): uint8 images N x C x H x W, int64 labels, class names, per-channel
mean/std of the train split, source SHA-256, counts, shapes and a `content_sha256` of what
training sees, with a seeded, stratified validation split held out of train (or the source's own
validation split). Raw files are read in place (tar/zip members are streamed, never extracted,
each under a size cap; tars inside a tar too), pickles go through an allow-list, images are decoded
by their content (magic bytes) only, and every bad input raises one `DatasetError` naming the file
(or archive member) and what was expected.

Image formats are prepared in bounded memory: a first pass lists the members (names and sizes
only), a second streams them to worker processes that decode, apply the store policy (train: the
shorter side resized, aspect kept up to a cap, extents recorded; val/test: Resize + CenterCrop)
and write each image straight into its row of the output `.npy` file (`os.pwrite`), returning
integer per-channel sums for mean/std. Rows are fixed by the first pass, so the output is
byte-identical for any worker count. The output folder is written as `.<name>.tmp<pid>` beside it,
fsynced, then renamed into place; `--out` must be absent, empty or a previous artifact.

Training reads the artifact with `load_prepared` (memory-mapped) and batches it with
`DeviceLoader`: ordered and sharded by a seeded generator, prefetched by a background thread,
augmented on the device (`augment`).

The package follows the flow: `sources` (checksums, names, caps, safe unpickling), `archives`
(folders, zips, tars), `readers/` (one reader per format), `decode` (images by content, the
torchvision resizes), `images` (the parallel writer and store policy of image formats),
`artifact` (the prepared folder, its hash, `load_prepared`), `prepare` (the stage's entry point);
then `augment` and `loader` (training batches; not prepare dependencies, so a loader edit
re-prepares nothing). This module imports nothing, so each stage's DVC deps are only the files it
uses.
"""
