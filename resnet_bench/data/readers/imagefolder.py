"""Image folders: `<prefix>/<split>/<class>/<image>` in a folder, a tar (any compression) or a zip.

Splits: train/ + test/ (validation held out of train); train/ + val/ + test/ (val/ is the validation
split); train/ + val/ only (Imagenette's layout: val/ is the test split). Classes are the folders under
train/, sorted (as torchvision's `ImageFolder`). A file counts as an image by its suffix (layout only);
it is decoded by its content."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resnet_bench.data.archives import list_entries, read_members, source_kind
from resnet_bench.data.images import ImageIndex, IndexBuilder, _parts, name_key
from resnet_bench.data.sources import DatasetError

SPLIT_DIRS = ("train", "val", "test")
# Which members of a split folder are images (torchvision's IMG_EXTENSIONS less .pgm/.tif variants).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


def _suffix(name: str) -> str:
    """Lower-case suffix with its dot, as PurePosixPath(name).suffix.lower()."""
    i = name.rfind(".")
    return name[i:].lower() if 0 < i < len(name) - 1 else ""


def _is_hidden(parts: tuple[str, ...]) -> bool:
    """Junk an archiver or OS leaves: dotfiles (`.DS_Store`, AppleDouble `._x.jpg`), `__MACOSX/`, and
    anything in a hidden folder above the split folders (`.git/`). A hidden *class* folder is not
    junk: `index_imagefolder` refuses it rather than drop a class."""
    return parts[-1].startswith(".") or "__MACOSX" in parts


def index_imagefolder(path: Path, entries) -> ImageIndex:
    """Check the layout `<prefix>/<split>/<class>/<image>` and give every image its row.

    Refused: images outside a class folder or nested below one, non-image files inside a split, empty
    class folders, duplicate members, two different prefixes, classes missing from train.
    """
    prefix = None
    dirs: dict[str, set[str]] = {s: set() for s in SPLIT_DIRS}
    per_class: dict[tuple[str, str], int] = {}
    class_id: dict[str, int] = {}  # provisional ids in first-seen order, remapped to sorted order below
    builder = IndexBuilder()
    for e in entries:
        parts = _parts(e.name)
        if not parts or _is_hidden(parts):
            continue
        at = next((i for i, p in enumerate(parts) if p.lower() in SPLIT_DIRS), None)
        if any(p.startswith(".") for p in parts[:at if at is not None else len(parts) - 1]):
            continue  # inside a hidden folder above the split folders (.git/, .cache/)
        is_image = _suffix(parts[-1]) in IMAGE_SUFFIXES
        if at is None or (e.kind == "dir" and at == len(parts) - 1):
            if at is None and is_image and e.kind == "file":
                raise DatasetError(f"image {e.name!r} in {path} is outside train/, val/ and test/ "
                                   "(expected <split>/<class>/<image>)")
            continue
        if prefix is None:
            prefix = parts[:at]
        elif parts[:at] != prefix:
            raise DatasetError(f"{path} holds two image folders: {'/'.join(prefix) or '.'} and "
                               f"{'/'.join(parts[:at]) or '.'} (member {e.name!r})")
        split, rest = parts[at].lower(), parts[at + 1:]
        if rest and rest[0].startswith(".") and e.kind == "dir" and len(rest) == 1:
            continue  # a hidden folder's own entry; an image in it is refused below
        if rest and rest[0].startswith("."):
            raise DatasetError(f"class folder {parts[at]}/{rest[0]!r} in {path} starts with '.', which reads as "
                               "hidden; rename it (its images would otherwise be dropped without a word)")
        if e.kind == "dir":
            if len(rest) > 1:
                raise DatasetError(f"nested folder {e.name!r} in {path}: expected <split>/<class>/<image>, "
                                   "one level of class folders")
            dirs[split].add(rest[0])
            continue
        if len(rest) != 2:
            raise DatasetError(f"member {e.name!r} in {path} is not <split>/<class>/<image> "
                               f"({'nested below its class folder' if len(rest) > 2 else 'not in a class folder'})")
        if not is_image:
            raise DatasetError(f"member {e.name!r} in {path} is not an image file; valid suffixes: "
                               f"{', '.join(IMAGE_SUFFIXES)}")
        dirs[split].add(rest[0])
        per_class[split, rest[0]] = per_class.get((split, rest[0]), 0) + 1
        builder.add(split, class_id.setdefault(rest[0], len(class_id)), e.name)
    n_files = {s: sum(v for (sp, _), v in per_class.items() if sp == s) for s in SPLIT_DIRS}
    if not n_files["train"] or not (n_files["test"] or n_files["val"]):
        raise DatasetError(f"{path}: expected train/<class>/<image> and test/<class>/<image> (or val/), found "
                           + ", ".join(f"{n_files[s]} {s}" for s in SPLIT_DIRS) + " images")
    for split in SPLIT_DIRS:
        empty = sorted(c for c in dirs[split] if (split, c) not in per_class)
        if empty:
            raise DatasetError(f"{path}: empty class folder {split}/{empty[0]} (no images; the class count "
                               "would change)")
    classes = sorted(dirs["train"])
    for split in ("val", "test"):
        unknown = sorted(dirs[split] - set(classes))
        if unknown:
            raise DatasetError(f"{path}: {split} classes {unknown} have no train folder; train classes: "
                               f"{', '.join(classes)}")
    remap = np.zeros(max(len(class_id), 1), np.int64)
    for c, i in class_id.items():
        remap[i] = classes.index(c)
    # train + val + test: val is the validation split. train + val (Imagenette): val is the test split.
    has_val = bool(n_files["val"]) and bool(n_files["test"])
    test_dir = "test" if n_files["test"] else "val"
    source_of = {"train": "train", "val": "val" if has_val else None, "test": test_dir}
    keys, labels = builder.rows(lambda key: f"{_name_of(path, key)!r} in {path}", remap=remap, source_of=source_of)
    note = {"validation": "val/ folder" if has_val else "held out of train", "test": f"{test_dir}/ folder"}
    return ImageIndex(classes, keys, labels, has_val, note)


def _name_of(path: Path, key: int) -> str:
    """The member name with this key (for an error message only: lists the source again)."""
    for e in list_entries(path, source_kind(path), 2**62):
        if e.kind == "file" and name_key(e.name) == key:
            return e.name
    return f"<key {key:016x}>"


def read(path: Path, cap: int):
    """(ImageIndex, stream) of an image folder: stream(wanted) yields (member name, bytes)."""
    kind = source_kind(path)
    index = index_imagefolder(path, list_entries(path, kind, cap))
    return index, lambda wanted: read_members(path, kind, cap, wanted)
