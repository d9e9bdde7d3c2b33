"""Image folders: strict decoding by declared format, aspect-preserving resize, and the bounded-memory
two-pass prepare (index the members, then decode in worker processes straight into the output rows)."""

from __future__ import annotations

import hashlib
import io
import math
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from resnet_bench.data.artifact import create_npy, stats_from_sums, stratified_indices
from resnet_bench.data.sources import DatasetError, _clean, list_entries, read_members, source_kind

# File suffix -> the only Pillow format an image-folder member may be decoded as. A file is never
# handed to a decoder it does not declare (a PostScript file named .jpg would otherwise reach
# Ghostscript through Pillow's EPS plugin).
IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF",
                 ".webp": "WEBP", ".ppm": "PPM", ".tif": "TIFF", ".tiff": "TIFF"}
SPLIT_DIRS = ("train", "val", "test")
# Largest image, in pixels, decoded: Pillow's own decompression-bomb threshold
# (PIL.Image.MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3 = 89,478,485 px, where Pillow only warns);
# here it is an error. Each worker holds at most one decoded image at a time.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
# Images sent to a worker per task: large enough to amortise the pickling of a task (~ms),
# small enough that 2 tasks per worker in flight hold little memory (256 x ~1-100 KB).
CHUNK_IMAGES = 256
RESIZE_POLICY = "shorter_side_center_crop"

# ---- image decoding ----------------------------------------------------------------------------


def _to_rgb(im, where: str) -> np.ndarray:
    """H x W x 3 uint8 of a Pillow image; 16-bit grey is scaled (v * 255 / 65535, rounded), not clipped."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DatasetError(f"image {where}: {im.mode} values outside 0..65535 are not a 16-bit image")
        # Integer round-half-up of v * 255 / 65535 (= v / 257), exact for every 16-bit value.
        a8 = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(a8[..., None], 3, axis=2)
    if im.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La", "RGBa"):
        raise DatasetError(f"image {where}: pixel mode {im.mode} is not supported (8/16-bit grey, palette, "
                           "RGB(A), CMYK)")
    return np.asarray(im.convert("RGB"))


def _check_pixels(w: int, h: int, where: str) -> None:
    if w * h > MAX_PIXELS:
        raise DatasetError(f"image {where} is {w} x {h} = {w * h:,} pixels, over the {MAX_PIXELS:,}-pixel "
                           "limit (Pillow's decompression-bomb threshold)")


def decode_rgb(blob: bytes, fmt: str, where: str) -> np.ndarray:
    """H x W x 3 uint8 RGB of `blob`, decoded only as `fmt` (a Pillow format name).

    JPEG goes through libjpeg-turbo in strict mode (simplejpeg): its recoverable "Corrupt JPEG data"
    warnings, which Pillow ignores, are errors here.
    """
    if fmt == "JPEG":
        import simplejpeg

        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(blob)
            _check_pixels(w, h, where)
            return simplejpeg.decode_jpeg(blob, colorspace="RGB", strict=True)
        except ValueError as err:
            raise DatasetError(f"corrupt image {where}: not a valid JPEG: {_clean(err)}") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob), formats=[fmt]) as im:
            _check_pixels(*im.size, where)
            im.load()
            return _to_rgb(im, where)
    except UnidentifiedImageError:
        raise DatasetError(f"corrupt image {where}: not a valid {fmt} file (only {fmt} is accepted for "
                           "its suffix)") from None
    except DatasetError:
        raise
    except Exception as err:  # Pillow raises many types for corrupt data
        raise DatasetError(f"corrupt image {where}: {type(err).__name__}: {_clean(err)}") from None


def resize_center(rgb: np.ndarray, size: int) -> np.ndarray:
    """size x size: the shorter side scaled to `size`, then the centre square (aspect ratio kept).

    Done as one Pillow resize of the centred min(H, W) square (`box`), which is the same mapping as
    torchvision's Resize(size) + CenterCrop(size) without the intermediate image; bilinear with
    Pillow's antialiasing support when shrinking.
    """
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb
    from PIL import Image

    side = min(h, w)
    left, top = (w - side) / 2, (h - side) / 2
    im = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR,
                                     box=(left, top, left + side, top + side))
    return np.asarray(im)


# ---- image folders: index, then parallel decode into the output files -------------------------------


@dataclass
class FolderIndex:
    """Where every image goes: row i of split k is the member whose name key is `keys[k][i]`.

    A member's key is the 64-bit BLAKE2b hash of its normalised path (`name_key`); rows are sorted
    by key, an order independent of the archive's. 16 bytes per image instead of its name keep the
    index small: 1.6 MB for 100,000 images, where names, tuples and dicts took ~60 MB.
    """

    classes: list[str]
    keys: dict[str, np.ndarray]     # split -> uint64 name keys, row order
    labels: dict[str, np.ndarray]   # split -> int64 labels, row order
    has_val: bool   # train/ val/ test/: val/ is the validation split
    test_dir: str   # the folder the test split comes from: 'test' or (Imagenette's layout) 'val'


def _suffix(name: str) -> str:
    """Lower-case suffix with its dot, as PurePosixPath(name).suffix.lower()."""
    i = name.rfind(".")
    return name[i:].lower() if 0 < i < len(name) - 1 else ""


def _is_hidden(parts: tuple[str, ...]) -> bool:
    """Junk an archiver or OS leaves: dotfiles (`.DS_Store`, AppleDouble `._x.jpg`), `__MACOSX/`, and
    anything in a hidden folder above the split folders (`.git/`). A hidden *class* folder is not
    junk: `index_imagefolder` refuses it rather than drop a class."""
    return parts[-1].startswith(".") or "__MACOSX" in parts


def _parts(name: str) -> tuple[str, ...]:
    # PurePosixPath semantics ('./a//b' -> a/b) with plain string ops: 10x faster per member.
    return tuple(q for q in name.replace("\\", "/").split("/") if q not in ("", "."))


def name_key(name: str) -> int:
    """64-bit key of a member's normalised path (BLAKE2b): equal for './a/b' and 'a/b'."""
    return int.from_bytes(hashlib.blake2b("/".join(_parts(name)).encode(), digest_size=8).digest(), "little")


def index_imagefolder(path: Path, entries) -> FolderIndex:
    """Check the layout `<prefix>/<split>/<class>/<image>` and give every image its row.

    Refused: images outside a class folder or nested below one, files of an undeclared type inside a
    split, empty class folders, duplicate members, two different prefixes, classes missing from train.
    """
    from array import array

    prefix = None
    dirs: dict[str, set[str]] = {s: set() for s in SPLIT_DIRS}
    per_class: dict[tuple[str, str], int] = {}
    class_id: dict[str, int] = {}  # provisional ids in first-seen order, remapped to sorted order below
    split_of, cls_of, key_of = array("B"), array("H"), array("Q")
    for e in entries:
        parts = _parts(e.name)
        if not parts or _is_hidden(parts):
            continue
        at = next((i for i, p in enumerate(parts) if p.lower() in SPLIT_DIRS), None)
        if any(p.startswith(".") for p in parts[:at if at is not None else len(parts) - 1]):
            continue  # inside a hidden folder above the split folders (.git/, .cache/)
        is_image = _suffix(parts[-1]) in IMAGE_FORMATS
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
                               f"{', '.join(IMAGE_FORMATS)}")
        dirs[split].add(rest[0])
        per_class[split, rest[0]] = per_class.get((split, rest[0]), 0) + 1
        split_of.append(SPLIT_DIRS.index(split))
        cls_of.append(class_id.setdefault(rest[0], len(class_id)))
        key_of.append(name_key(e.name))
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
    keys = np.frombuffer(key_of, np.uint64)
    uniq, counts = np.unique(keys, return_counts=True)
    if len(uniq) != len(keys):
        raise DatasetError(f"duplicate member {_name_of(path, uniq[counts > 1][0])!r} in {path}: refused "
                           "(which copy is meant?)")
    remap = np.zeros(max(len(class_id), 1), np.int64)
    for c, i in class_id.items():
        remap[i] = classes.index(c)
    split_arr, cls_arr = np.frombuffer(split_of, np.uint8), remap[np.frombuffer(cls_of, np.uint16)]
    # train + val + test: val is the validation split. train + val (Imagenette): val is the test split.
    has_val = bool(n_files["val"]) and bool(n_files["test"])
    source_of = {"train": "train", "val": "val" if has_val else None,
                 "test": "test" if n_files["test"] else "val"}
    out_keys, out_labels = {}, {}
    for split, src in source_of.items():
        rows = np.flatnonzero(split_arr == SPLIT_DIRS.index(src)) if src else np.zeros(0, np.int64)
        rows = rows[np.argsort(keys[rows], kind="stable")]  # deterministic order, whatever the archive's
        out_keys[split], out_labels[split] = keys[rows].copy(), cls_arr[rows].astype(np.int64)
    return FolderIndex(classes, out_keys, out_labels, has_val, "test" if n_files["test"] else "val")


def _name_of(path: Path, key) -> str:
    """The member name with this key (for an error message only: lists the source again)."""
    kind = source_kind(path)
    for e in list_entries(path, kind, 2**62):
        if e.kind == "file" and name_key(e.name) == int(key):
            return e.name
    return f"<key {int(key):016x}>"


class RowMap:
    """name -> (array key, row) for the members being written: sorted keys and searchsorted lookup."""

    def __init__(self, keys: dict[str, np.ndarray]):
        splits = [s for s in ("train", "val", "test")]
        all_keys = np.concatenate([keys[s] for s in splits])
        code = np.concatenate([np.arange(len(keys[s]), dtype=np.int64) | (i << 40) for i, s in enumerate(splits)])
        order = np.argsort(all_keys, kind="stable")
        self.keys, self.code, self.splits = all_keys[order], code[order], splits

    def __call__(self, name: str) -> tuple[str, int] | None:
        k = np.uint64(name_key(name))
        i = int(np.searchsorted(self.keys, k))
        if i == len(self.keys) or self.keys[i] != k:
            return None
        c = int(self.code[i])
        return f"{self.splits[c >> 40]}_x", c & ((1 << 40) - 1)


@dataclass(frozen=True)
class DecodeSpec:
    """What a worker needs to decode a member and write its row: shared by every task."""

    source: str
    out_dir: str
    image_size: int | None
    shape: tuple[int, int, int]      # C x H x W of every output image
    offsets: tuple[tuple[str, int], ...]  # (array key, data offset in its .npy file)


_WORKER_FDS: dict[str, int] = {}


def _row_fd(spec: DecodeSpec, key: str) -> int:
    path = os.path.join(spec.out_dir, f"{key}.npy")
    if path not in _WORKER_FDS:
        _WORKER_FDS[path] = os.open(path, os.O_WRONLY)
    return _WORKER_FDS[path]


def decode_member(blob: bytes, name: str, spec: DecodeSpec) -> np.ndarray:
    """C x H x W uint8 of one member: decoded as its suffix declares, resized per `spec`."""
    where = f"{name!r} in {spec.source}"
    rgb = decode_rgb(blob, IMAGE_FORMATS[_suffix(name.rsplit("/", 1)[-1])], where)
    if spec.image_size:
        rgb = resize_center(rgb, spec.image_size)
    chw = rgb.transpose(2, 0, 1)
    if chw.shape != spec.shape:
        raise DatasetError(f"image {where} is {chw.shape[2]} x {chw.shape[1]} but the dataset's images are "
                           f"{spec.shape[2]} x {spec.shape[1]}; set image_size (params.yaml prepare.files."
                           "<name>.image_size, or --image-size) to resize them")
    return chw


def decode_chunk(spec: DecodeSpec, chunk: list[tuple[str, int, str, bytes]]):
    """Decode and write one task's images to their rows; returns (count, per-channel sum, sum of squares)
    over the train-split images, as exact Python ints (order-independent, so any schedule gives one answer).
    """
    offsets = dict(spec.offsets)
    c = spec.shape[0]
    row_bytes = math.prod(spec.shape)
    s1, s2, n = np.zeros(c, np.int64), np.zeros(c, np.int64), 0
    for key, row, name, blob in chunk:
        chw = decode_member(blob, name, spec)
        os.pwrite(_row_fd(spec, key), np.ascontiguousarray(chw).tobytes(), offsets[key] + row * row_bytes)
        if key == "train_x":
            flat = chw.reshape(c, -1).astype(np.int64)
            s1 += flat.sum(1)
            s2 += (flat * flat).sum(1)
            n += 1
    return n, [int(v) for v in s1], [int(v) for v in s2]


def _worker_call(args):
    try:
        return decode_chunk(*args)
    except DatasetError as err:
        return err  # returned, not raised: the parent reports it as one line



def _first_shape(path: Path, kind: str, dest: RowMap, image_size: int | None, cap: int) -> tuple[int, int, int]:
    """C x H x W of every output image: image_size x image_size, else the first image's own size."""
    if image_size:
        return 3, image_size, image_size
    for name, blob in read_members(path, kind, cap, lambda n: dest(n) is not None):  # stops at the first
        rgb = decode_rgb(blob, IMAGE_FORMATS[_suffix(name.rsplit("/", 1)[-1])], f"{name!r} in {path}")
        return 3, rgb.shape[0], rgb.shape[1]
    raise DatasetError(f"{path}: no image could be read a second time (did the source change?)")


def _chunks(path, kind, cap, dest: RowMap) -> Iterator[list]:
    chunk, rows = [], {}
    for name, blob in read_members(path, kind, cap, lambda n: rows.setdefault(n, dest(n)) is not None):
        key, row = rows.pop(name)
        chunk.append((key, row, name, blob))
        if len(chunk) >= CHUNK_IMAGES:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_imagefolder(path: Path, tmp: Path, *, image_size: int | None, val_fraction: float, split_seed: int,
                      workers: int, cap: int) -> dict:
    """Decode every image of an image folder into `tmp`'s .npy files; returns the artifact's meta."""
    kind = source_kind(path)
    idx = index_imagefolder(path, list_entries(path, kind, cap))
    keys, labels = dict(idx.keys), dict(idx.labels)
    if not idx.has_val:  # hold the validation split out of train
        val_rows = stratified_indices(labels["train"], val_fraction, split_seed, idx.classes)
        keep = np.ones(len(labels["train"]), bool)
        keep[val_rows] = False
        keys["val"], keys["train"] = keys["train"][val_rows], keys["train"][keep]
        labels["val"], labels["train"] = labels["train"][val_rows], labels["train"][keep]
    dest = RowMap(keys)
    counts = {split: len(keys[split]) for split in ("train", "val", "test")}
    del keys
    shape = _first_shape(path, kind, dest, image_size, cap)
    offsets = []
    for split in ("train", "val", "test"):
        offsets.append((f"{split}_x", create_npy(tmp / f"{split}_x.npy", np.uint8, (counts[split], *shape))))
        np.save(tmp / f"{split}_y.npy", labels[split])
    spec = DecodeSpec(str(path), str(tmp), image_size, shape, tuple(offsets))
    n_img, s1, s2 = 0, [0] * shape[0], [0] * shape[0]
    tasks = ((spec, chunk) for chunk in _chunks(path, kind, cap, dest))
    if workers <= 1:
        results = map(_worker_call, tasks)
        pool = None
    else:
        # forkserver, not fork: a caller that already runs threads (torch's OpenMP pool, a test
        # runner) can deadlock a forked child on a lock held at fork time. Workers start from a
        # clean server process once per pool (~0.1-0.5 s); the output is identical either way.
        pool = multiprocessing.get_context("forkserver").Pool(workers)
        results = pool.imap_unordered(_worker_call, tasks)
    try:
        for res in results:
            if isinstance(res, DatasetError):
                raise res
            n_img += res[0]
            s1 = [a + b for a, b in zip(s1, res[1])]
            s2 = [a + b for a, b in zip(s2, res[2])]
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        for fd in _WORKER_FDS.values():
            os.close(fd)
        _WORKER_FDS.clear()
    mean, std = stats_from_sums(n_img * shape[1] * shape[2], s1, s2)
    split = {"val_fraction": val_fraction, "seed": split_seed, "stratified": not idx.has_val,
             "validation": "val/ folder" if idx.has_val else "held out of train",
             "test": f"{idx.test_dir}/ folder"}
    return {"classes": idx.classes, "num_classes": len(idx.classes), "channels": shape[0], "height": shape[1],
            "width": shape[2], "mean": mean, "std": std,
            "counts": {s: int(len(labels[s])) for s in ("train", "val", "test")}, "split": split}
