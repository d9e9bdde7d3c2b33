"""Datasets: read raw files safely, write one canonical prepared artifact, feed it to the device.

The `prepare` stage (`main(argv)`) turns a dataset into `data/prepared/<name>/`
(see docs/ARCHITECTURE.md): uint8 images N x C x H x W, int64 labels, class
names, per-channel mean/std of the train split, source SHA-256, counts and a
`content_sha256` of what training sees, with a seeded, stratified validation
split held out of train (or an image folder's own `val/`). Raw files are read
in place (tar/zip members are streamed, never extracted, each under a size
cap), pickles go through an allow-list, images are decoded only in the format
their suffix declares, and every bad input raises one `DatasetError` naming
the file (or archive member) and what was expected.

Image folders are prepared in bounded memory: a first pass lists the members
(names and sizes only), a second streams them to worker processes that decode,
resize and write each image straight into its row of the output `.npy` file
(`os.pwrite`), and return integer per-channel sums for mean/std. Rows are
fixed by the first pass, so the output is byte-identical for any worker count.

The output folder is written as `.<name>.tmp<pid>` beside it, fsynced, then
renamed into place; `--out` must be absent, empty or a previous artifact.

Training reads the artifact with `load_prepared` (memory-mapped) and batches
it with `DeviceLoader`: a split that fits its memory budget sits on the device
as uint8; a larger one stays memory-mapped and each batch is gathered on the
host and moved to the device.

The package follows the flow: `sources` (raw files and archive safety), `readers` (array
datasets) and `imagefolder` (image folders), `artifact` (the prepared folder, its hash and
`load_prepared`), `prepare` (the stage's entry point), `loader` (training batches; not a
prepare dependency). This module imports nothing, so each stage's DVC deps are only the
files it uses.
"""
