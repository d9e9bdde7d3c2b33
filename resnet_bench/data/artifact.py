"""The prepared artifact: `data/prepared/<name>/` with uint8 images, int64 labels, meta.json and a
`content_sha256` of what training sees; written to a temporary folder, fsynced and renamed into
place; read back memory-mapped by `load_prepared`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_bench.data.sources import DatasetError, _clean
from resnet_bench.outputs import fsync_path

ARRAY_KEYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
# Written only by a train store that keeps aspect ratios (image_size > 0): int32 N x 3, per train
# image the height, width (of its content, top-left in the zero-padded slot) and whether it is stored
# transposed (a portrait image). Hashed like the others when present.
OPTIONAL_KEYS = ("train_extents",)
ARTIFACT_FILES = frozenset([*(f"{k}.npy" for k in ARRAY_KEYS + OPTIONAL_KEYS), "meta.json"])
# meta.json keys that affect training, hashed (with the arrays) into content_sha256.
CONTENT_META_KEYS = ("classes", "num_classes", "channels", "height", "width", "mean", "std", "counts",
                     "split", "resize", "format", "source_sha256")
CONTENT_HASH_VERSION = "resnet-bench content v1"

def check_labels(y: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """int64 labels, every one in 0..num_classes-1, else a DatasetError naming the first bad one."""
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise DatasetError(f"{where}: labels must be a 1-D list of integers, got {y.dtype} {y.shape}")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        raise DatasetError(f"{where}: label {int(y[bad[0]])} at index {int(bad[0])} is outside 0..{num_classes - 1} "
                           f"({num_classes} classes; {bad.size} bad labels)")
    return y.astype(np.int64)


# ---- the output folder ----------------------------------------------------------------------------


def is_artifact(path: Path) -> bool:
    """True for a folder this stage wrote: only artifact files, and a meta.json with its keys."""
    try:
        names = {p.name for p in path.iterdir()}
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return names <= ARTIFACT_FILES and isinstance(meta, dict) and {"name", "format", "counts"} <= set(meta)


def check_out_dir(out: Path, source: Path | None) -> None:
    """Refuse an --out that would replace anything but a previous artifact (before any work)."""
    o = out.resolve()
    if o == Path.cwd().resolve() or o == Path(o.anchor) or o == Path.home().resolve():
        raise DatasetError(f"--out {out} is the working, root or home folder; name a folder of its own, "
                           "e.g. data/prepared/<name>")
    if source is not None:
        s = source.resolve()
        if s == o or o in s.parents:
            raise DatasetError(f"--out {out} contains the source {source}; writing there would delete it")
        if s in o.parents:
            raise DatasetError(f"--out {out} is inside the source {source}; writing there would change it")
    if o.exists() or o.is_symlink():
        if o.is_symlink() or not o.is_dir():
            raise DatasetError(f"--out {out} exists and is not a folder; refusing to replace it")
        if any(o.iterdir()) and not is_artifact(o):
            raise DatasetError(f"--out {out} is not empty and not a prepared artifact (expected only "
                               f"{', '.join(sorted(ARTIFACT_FILES))}); refusing to replace it")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_leftovers(out: Path) -> list[Path]:
    """Remove `.<name>.tmp<pid>` / `.<name>.old<pid>` beside `out` left by a killed run (pid gone)."""
    removed = []
    if not out.parent.is_dir():
        return removed
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(tmp|old)(\d+)$")
    for p in out.parent.iterdir():
        m = pattern.match(p.name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def commit_artifact(tmp: Path, out: Path) -> None:
    """fsync every file and the folder, then swap `tmp` in for `out`: a kill leaves one whole artifact."""
    for f in tmp.iterdir():
        fsync_path(f)
    fsync_path(tmp)
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_path(out.parent)
    shutil.rmtree(old, ignore_errors=True)


def create_npy(path: Path, dtype, shape: tuple[int, ...]) -> int:
    """An .npy file of `shape` (zero-filled, sparse) whose rows are written later; returns the data offset.

    The header is what np.save writes (format 1.0, padded to 64 bytes), so the file is byte-identical
    to np.save of the same array.
    """
    shape = tuple(int(s) for s in shape)  # numpy ints would print as np.int64(...) in the header
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        f.truncate(offset + math.prod(shape) * np.dtype(dtype).itemsize)
    return offset


# ---- the prepared artifact ------------------------------------------------------------------------


def stratified_indices(labels: np.ndarray, fraction: float, seed: int, classes=None) -> np.ndarray:
    """Sorted indices of a seeded, per-class `fraction` of `labels` (at least 1 per class if > 0).

    A class with a single image cannot give one to validation and keep one for training: refused
    (lowering the fraction would not help: every class keeps at least one validation image).
    """
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if fraction > 0 and len(idx) < 2:
            name = repr(classes[int(c)]) if classes is not None else int(c)
            raise DatasetError(f"class {name} has {len(idx)} training image: holding one out for validation "
                               "needs at least 2 images per class; add images to it")
        k = int(round(fraction * len(idx)))
        if fraction > 0:
            k = max(1, min(k, len(idx) - 1))
        picked.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(picked)) if picked else np.array([], np.int64)


def channel_sums(x: np.ndarray, rows: int = 4096) -> tuple[int, list[int], list[int]]:
    """(pixels per channel, per-channel sum, sum of squares) of uint8 N x C x H x W, exact, in row blocks."""
    c = x.shape[1]
    s1, s2 = [0] * c, [0] * c
    for i in range(0, len(x), rows):
        blk = x[i:i + rows].transpose(1, 0, 2, 3).reshape(c, -1).astype(np.int64)  # C x (rows*H*W)
        s1 = [a + int(v) for a, v in zip(s1, blk.sum(1))]
        s2 = [a + int(v) for a, v in zip(s2, (blk * blk).sum(1))]
    return len(x) * x.shape[2] * x.shape[3], s1, s2


def stats_from_sums(count_px: int, s1: list[int], s2: list[int]) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std on the 0..1 scale from exact integer sums over uint8 pixels."""
    if count_px == 0:
        raise DatasetError("the train split is empty: no mean/std (lower val_fraction or add images)")
    mean = [a / count_px / 255.0 for a in s1]
    # n * sum(x^2) - sum(x)^2 is exact in Python ints: no cancellation error.
    std = [math.sqrt(max(count_px * b - a * a, 0)) / count_px / 255.0 for a, b in zip(s1, s2)]
    return mean, std


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale of a uint8 N x C x H x W array."""
    return stats_from_sums(*channel_sums(x))


def build_artifact(train_x, train_y, test_x, test_y, classes, *, val_fraction: float, split_seed: int):
    """Hold out a stratified validation split and compute the train split's statistics."""
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    val_idx = stratified_indices(train_y, val_fraction, split_seed, list(classes))
    keep = np.ones(len(train_y), bool)
    keep[val_idx] = False
    arrays = {
        "train_x": np.ascontiguousarray(train_x[keep]), "train_y": train_y[keep].astype(np.int64),
        "val_x": np.ascontiguousarray(train_x[val_idx]), "val_y": train_y[val_idx].astype(np.int64),
        "test_x": np.ascontiguousarray(test_x), "test_y": test_y.astype(np.int64),
    }
    mean, std = channel_stats(arrays["train_x"])
    _, c, h, w = train_x.shape
    meta = {
        "classes": list(classes), "num_classes": len(classes), "channels": int(c), "height": int(h),
        "width": int(w), "mean": mean, "std": std,
        "counts": {s: int(len(arrays[f"{s}_y"])) for s in ("train", "val", "test")},
        "shapes": {s: [int(d) for d in arrays[f"{s}_x"].shape[1:]] for s in ("train", "val", "test")},
        "split": {"val_fraction": val_fraction, "seed": split_seed, "stratified": True,
                  "validation": "held out of train", "test": "official test split"},
    }
    return arrays, meta


def content_sha256(path: Path, meta: dict, block: int = 1 << 22) -> str:
    """SHA-256 of what training sees, independent of file layout, paths and machine:

    "resnet-bench content v1\n", then for each of train_x, train_y, val_x, val_y, test_x, test_y:
    "<key> <little-endian dtype, e.g. |u1 or <i8> [<shape>]\n" and its C-order little-endian bytes
    (then the same for train_extents, when the artifact has it); then the canonical JSON (sorted keys,
    no spaces) of meta's CONTENT_META_KEYS.

    The .npy files are read with plain reads in 4 MiB blocks, not memory-mapped: mapped pages would
    count in this process's RSS and grow it with the artifact.
    """
    h = hashlib.sha256(CONTENT_HASH_VERSION.encode() + b"\n")
    for key in ARRAY_KEYS + tuple(k for k in OPTIONAL_KEYS if (path / f"{k}.npy").exists()):
        with open(path / f"{key}.npy", "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            if fortran or dtype.hasobject:
                raise DatasetError(f"{path / key}.npy: expected a C-order numeric array")
            le = dtype.newbyteorder("<")
            h.update(f"{key} {le.str} {list(shape)}\n".encode())
            step = max(dtype.itemsize, block - block % dtype.itemsize)
            while chunk := f.read(step):
                h.update(chunk if dtype == le else np.frombuffer(chunk, dtype).astype(le).tobytes())
    fields = {k: meta.get(k) for k in CONTENT_META_KEYS}
    h.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


@dataclass
class PreparedDataset:
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    meta: dict
    train_extents: np.ndarray | None = None  # int32 N x 3 (height, width, transposed); None: full images


def load_prepared(path: str | Path, *, mmap: bool = True) -> PreparedDataset:
    """The artifact's arrays (memory-mapped copy-on-write by default: pages are read on use) and meta."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise DatasetError(f"prepared dataset not found: {path}; make it with `dvc repro prepare@{path.name}` "
                           f"(or `dvc repro prepare_file@{path.name}` for a file-based dataset)")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except ValueError as err:
        raise DatasetError(f"{path / 'meta.json'} is not valid JSON ({_clean(err)}); rerun its prepare stage") \
            from None
    arrays = {}
    for key in ARRAY_KEYS:
        f = path / f"{key}.npy"
        if not f.exists():
            raise DatasetError(f"prepared dataset {path} is incomplete: {f.name} missing; rerun its prepare stage")
        try:
            arrays[key] = np.load(f, mmap_mode="c" if mmap else None, allow_pickle=False)
        except ValueError as err:
            raise DatasetError(f"{f} is not a valid .npy file ({_clean(err)}); rerun its prepare stage") from None
        split = key.split("_")[0]
        want = meta.get("counts", {}).get(split)
        if want is not None and len(arrays[key]) != want:
            raise DatasetError(f"{f} holds {len(arrays[key])} rows but meta.json counts {split}={want}; "
                               "rerun its prepare stage")
    extents = None
    if (path / "train_extents.npy").exists():
        extents = np.load(path / "train_extents.npy", allow_pickle=False)
        if extents.shape != (len(arrays["train_x"]), 3):
            raise DatasetError(f"{path / 'train_extents.npy'} has shape {extents.shape}, expected "
                               f"({len(arrays['train_x'])}, 3); rerun its prepare stage")
    return PreparedDataset(**arrays, meta=meta, train_extents=extents)


def _write_arrays(tmp: Path, arrays: dict) -> None:
    for key in ARRAY_KEYS:
        np.save(tmp / f"{key}.npy", arrays[key])


def _decoder_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("numpy", "pillow", "simplejpeg"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
