"""Tiny ImageNet (Stanford CS231n, `tiny-imagenet-200.zip`): 200 classes of 64 x 64 images.

Layout under the archive's one top folder (`tiny-imagenet-200/`): `wnids.txt` (the 200 wnids, one per
line), `words.txt` (wnid <tab> words, for many more wnids), `train/<wnid>/images/<wnid>_<n>.JPEG`
(500 per class; `train/<wnid>/<wnid>_boxes.txt` is ignored), `val/images/val_<n>.JPEG` labelled by
`val/val_annotations.txt` (file <tab> wnid <tab> box), `test/images/` (unlabelled: ignored).
Classes are the wnids sorted (as an ImageFolder over train/ numbers them). Splits: train is train
(validation held out of it); the labelled val/ is the test split. Some images are greyscale JPEGs.
"""

from __future__ import annotations

from pathlib import Path

from resnet_bench.data.archives import list_entries, read_members, source_kind
from resnet_bench.data.images import ImageIndex, IndexBuilder, _parts
from resnet_bench.data.sources import DatasetError



def _text(blob: bytes, name: str, path: Path) -> list[list[str]]:
    try:
        return [line.split("\t") if "\t" in line else line.split() for line in blob.decode("utf-8").splitlines()
                if line.strip()]
    except UnicodeDecodeError:
        raise DatasetError(f"{name} in {path} is not UTF-8 text") from None


def read(path: Path, cap: int):
    """(ImageIndex, stream) of tiny-imagenet-200.zip (or the folder it unpacks to)."""
    kind = source_kind(path)
    entries = [e for e in list_entries(path, kind, cap) if e.kind == "file"]
    roots = [_parts(e.name)[:-1] for e in entries if _parts(e.name)[-1:] == ("wnids.txt",)]
    if len(roots) != 1:
        raise DatasetError(f"{path} is not tiny-imagenet-200: expected one tiny-imagenet-200/wnids.txt, found "
                           f"{len(roots)}")
    top = roots[0]

    def rel(name: str) -> tuple[str, ...]:
        parts = _parts(name)
        return parts[len(top):] if parts[:len(top)] == top else ()

    texts = {"wnids.txt", "words.txt", "val/val_annotations.txt"}
    found = {}
    for name, blob in read_members(path, kind, cap, lambda n: "/".join(rel(n)) in texts):
        found["/".join(rel(name))] = _text(blob, name, path)
    for need in ("wnids.txt", "val/val_annotations.txt"):
        if need not in found:
            raise DatasetError(f"{path}: {'/'.join(top + (need,))} missing (tiny-imagenet-200 layout)")
    wnids = sorted(row[0] for row in found["wnids.txt"])
    if len(set(wnids)) != len(wnids):
        raise DatasetError(f"{path}: wnids.txt lists a wnid twice")
    label = {w: i for i, w in enumerate(wnids)}
    annotated = {}
    for row in found["val/val_annotations.txt"]:
        if len(row) < 2 or row[1] not in label:
            raise DatasetError(f"{path}: val_annotations.txt line {row!r} is not <file> <wnid of wnids.txt> ...")
        annotated[row[0]] = label[row[1]]
    builder, seen_val = IndexBuilder(), set()
    for e in entries:
        parts = rel(e.name)
        if parts[:1] == ("train",) and len(parts) == 4 and parts[2] == "images":
            if parts[1] not in label:
                raise DatasetError(f"member {e.name!r} of {path}: class {parts[1]} is not in wnids.txt")
            builder.add("train", label[parts[1]], e.name)
        elif parts[:2] == ("val", "images") and len(parts) == 3:
            if parts[2] not in annotated:
                raise DatasetError(f"member {e.name!r} of {path} has no line in val/val_annotations.txt")
            seen_val.add(parts[2])
            builder.add("test", annotated[parts[2]], e.name)
    lost = sorted(set(annotated) - seen_val)
    if lost:
        raise DatasetError(f"{path}: val_annotations.txt names {len(lost)} image(s) not in val/images/, e.g. {lost[0]}")
    keys, labels = builder.rows(lambda key: f"with key {key:016x} in {path}")
    empty = sorted(set(wnids) - set(wnids[i] for i in labels["train"]))
    if empty:
        raise DatasetError(f"{path}: no train images of class(es) {', '.join(empty[:5])}")
    words = {row[0]: row[1] for row in found.get("words.txt", []) if len(row) > 1}
    index = ImageIndex(wnids, keys, labels, has_val=False, split_note={"test": "val/ (val_annotations.txt)"},
                       extra_meta={"class_words": [words.get(w, "") for w in wnids]})
    return index, lambda wanted: read_members(path, kind, cap, wanted)
