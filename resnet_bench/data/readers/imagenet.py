"""ILSVRC2012 (ImageNet-1k) from its three official files, as `torchvision.datasets.ImageNet` takes them
(torchvision/datasets/imagenet.py: ARCHIVE_META, parse_devkit_archive, parse_val_archive):

- `ILSVRC2012_devkit_t12.tar.gz`: `data/meta.mat` (`synsets`: the 1,000 leaf synsets are those with
  `num_children == 0`; fields ILSVRC2012_ID, WNID, words) and `data/ILSVRC2012_validation_ground_truth.txt`
  (one ILSVRC2012_ID per line: the label of the validation images in sorted file-name order);
- `ILSVRC2012_img_train.tar`: one tar per class, `<wnid>.tar`, of `<wnid>_<n>.JPEG` (read in place: no
  extraction, the inner tars are streamed; listing an uncompressed outer tar reads only its headers);
- `ILSVRC2012_img_val.tar`: 50,000 `ILSVRC2012_val_<n>.JPEG`, flat.

Labels are torchvision's: the index of the wnid in sorted wnid order (its ImageFolder over `train/<wnid>`).
Images are decoded by content: the train set holds a PNG named `.JPEG` and CMYK JPEGs. Splits: the
official train set is train (validation held out of it, `val_fraction`); the official validation set
is the test split. torchvision's archive MD5s are not checked here (`sha256` checks the source folder).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from resnet_bench.data.archives import list_entries, read_members
from resnet_bench.data.images import ImageIndex, IndexBuilder
from resnet_bench.data.sources import DatasetError, _clean

FILES = {"train": "ILSVRC2012_img_train.tar", "val": "ILSVRC2012_img_val.tar",
         "devkit": "ILSVRC2012_devkit_t12.tar.gz"}
META_MAT, GROUND_TRUTH = "data/meta.mat", "data/ILSVRC2012_validation_ground_truth.txt"
WNID = re.compile(r"^n\d{8}$")


def _devkit(path: Path, cap: int) -> tuple[dict[int, str], dict[str, str], list[int]]:
    """(ILSVRC2012_ID -> wnid, wnid -> words, validation labels as IDs) of the devkit archive."""
    found = {}
    for name, blob in read_members(path, "tar", cap, lambda n: n.endswith((META_MAT, GROUND_TRUTH))):
        key = META_MAT if name.endswith(META_MAT) else GROUND_TRUTH
        if key in found:
            raise DatasetError(f"duplicate member {name!r} in {path}")
        found[key] = blob
    for key in (META_MAT, GROUND_TRUTH):
        if key not in found:
            raise DatasetError(f"{path} is not the ILSVRC2012 devkit: ILSVRC2012_devkit_t12/{key} missing")
    import scipy.io

    try:
        synsets = scipy.io.loadmat(io.BytesIO(found[META_MAT]), squeeze_me=True)["synsets"]
        leaves = [s for s in synsets if int(s["num_children"]) == 0]
        idx_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
        words = {str(s["WNID"]): str(s["words"]) for s in leaves}
    except Exception as err:  # scipy raises many types on a damaged .mat
        raise DatasetError(f"malformed {META_MAT} in {path}: expected the struct array 'synsets' with fields "
                           f"ILSVRC2012_ID, WNID, words, num_children ({type(err).__name__}: {_clean(err)})") from None
    bad = sorted(w for w in words if not WNID.match(w))
    if not leaves or bad or len(idx_to_wnid) != len(leaves):
        raise DatasetError(f"malformed {META_MAT} in {path}: {len(leaves)} leaf synsets, wnids like {bad[:3]}, "
                           "IDs must be unique")
    try:
        truth = [int(line) for line in found[GROUND_TRUTH].decode("ascii").split()]
    except (UnicodeDecodeError, ValueError):
        raise DatasetError(f"malformed {GROUND_TRUTH} in {path}: expected one integer ILSVRC2012_ID per line") from None
    unknown = sorted(set(truth) - set(idx_to_wnid))
    if unknown:
        raise DatasetError(f"{GROUND_TRUTH} in {path}: IDs {unknown[:5]} are no leaf synset of {META_MAT}")
    return idx_to_wnid, words, truth


def _is_inner(name: str) -> bool:
    return "/" not in name.strip("/") and name.endswith(".tar")


def read(path: Path, cap: int):
    """(ImageIndex, stream) of the ILSVRC2012 files in folder `path`."""
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder; format imagenet needs a folder with {', '.join(FILES.values())} "
                           "(torchvision.datasets.ImageNet's root)")
    files = {k: path / v for k, v in FILES.items()}
    missing = [f.name for f in files.values() if not f.is_file()]
    if missing:
        raise DatasetError(f"{path}: {', '.join(missing)} missing; format imagenet needs {', '.join(FILES.values())}")
    idx_to_wnid, words, truth = _devkit(files["devkit"], cap)
    wnids = sorted(words)
    label = {w: i for i, w in enumerate(wnids)}
    builder = IndexBuilder()
    seen_classes: set[str] = set()
    for e in list_entries(files["train"], "tar", cap, inner=_is_inner):
        outer, _, member = e.name.partition("/")
        wnid = outer.removesuffix(".tar")
        if e.kind == "dir" and not member:
            continue
        if not member or wnid not in label or e.kind != "file" or "/" in member:
            raise DatasetError(f"member {e.name!r} of {files['train']} is not <wnid>.tar/<image> with a wnid of the "
                               f"devkit's {len(wnids)} classes (e.g. {wnids[0]}.tar/{wnids[0]}_1.JPEG)")
        seen_classes.add(wnid)
        builder.add("train", label[wnid], f"{FILES['train']}/{e.name}")
    absent = sorted(set(wnids) - seen_classes)
    if absent:
        raise DatasetError(f"{files['train']}: no images of class(es) {', '.join(absent[:5])} (the devkit lists "
                           f"{len(wnids)}); torchvision would number the classes differently")
    val = sorted(e.name for e in list_entries(files["val"], "tar", cap) if e.kind == "file")
    if len(val) != len(truth) or any("/" in n for n in val):
        raise DatasetError(f"{files['val']} holds {len(val)} images (flat) but {GROUND_TRUTH} labels {len(truth)}")
    for name, idx in zip(val, truth):
        builder.add("test", label[idx_to_wnid[idx]], f"{FILES['val']}/{name}")
    keys, labels = builder.rows(lambda key: f"with key {key:016x} in {path}")
    index = ImageIndex(wnids, keys, labels, has_val=False,
                       split_note={"test": f"{FILES['val']} (labels: {GROUND_TRUTH})"},
                       extra_meta={"class_words": [words[w] for w in wnids]})

    def stream(wanted):
        for which in ("train", "val"):
            prefix = FILES[which] + "/"
            for name, blob in read_members(files[which], "tar", cap, lambda n: wanted(prefix + n),
                                           inner=_is_inner if which == "train" else None):
                yield prefix + name, blob

    return index, stream
