"""Downsampled ImageNet (Chrabaszcz, Loshchilov, Hutter 2017, "A Downsampled Variant of ImageNet as an
Alternative to the CIFAR datasets"): Imagenet8/16/32/64, as image-net.org ships them.

Source: a folder holding the release's zips (`Imagenet32_train.zip`, `Imagenet32_val.zip`;
Imagenet64's train is split over `Imagenet64_train_part1.zip` / `_part2.zip`) and/or their unpacked
members: `train_data_batch_1` .. `train_data_batch_10` and `val_data`, each a pickled dict with 'data'
(N x 3*S*S uint8, the R, G and B planes in turn, as CIFAR's) and 'labels' (1..1000), plus 'mean' in the
train batches (PatrykChrabaszcz/Imagenet32_Scripts, image2numpy_imagenet_train.py). Every pickle goes
through the allow-list unpickler. Class names come from an optional `map_clsloc.txt` in the folder
("<wnid> <label> <name>" per line, the labels' order); otherwise they are the label numbers 1..1000.

Memory: one batch at a time, its pickle and its array (an Imagenet64 batch: 128,116 x 12,288 bytes =
1.57 GB, so about 3.2 GB at peak; the member cap is 2 GiB for this format). Two passes: the labels
first (the validation hold-out is stratified over all of them), then the rows, each batch's kept
images written as one contiguous run of train rows and its held-out ones as one run of val rows.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from resnet_bench.data.archives import read_members, source_kind
from resnet_bench.data.artifact import channel_sums, check_labels, create_npy, stats_from_sums, stratified_indices
from resnet_bench.data.sources import DatasetError, _read_capped, safe_unpickle
from resnet_bench.inputs import open_regular

BATCH = re.compile(r"^(train_data_batch_(\d+)|val_data)$")
NUM_CLASSES = 1000
MAX_MEMBER_MB = 2048  # an Imagenet64 train batch is 1.57 GB


def _members(path: Path, cap: int, wanted) -> Iterator[tuple[str, str, bytes]]:
    """(base name, where, bytes) of the members whose base name `wanted` accepts: files of the folder and
    members of its zips (or of the one zip given)."""
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file() and wanted(f.name):
                with open_regular(f) as fh:
                    yield f.name, str(f), _read_capped(fh, f.name, path, cap)
            elif f.is_file() and zipfile.is_zipfile(f):
                for name, blob in read_members(f, "zip", cap, lambda n: wanted(PurePosixPath(n).name)):
                    yield PurePosixPath(name).name, f"{name} in {f}", blob
    elif source_kind(path) == "zip":
        for name, blob in read_members(path, "zip", cap, lambda n: wanted(PurePosixPath(n).name)):
            yield PurePosixPath(name).name, f"{name} in {path}", blob
    else:
        raise DatasetError(f"{path} is neither a folder nor a .zip; imagenet_downsampled needs the release's zips "
                           "(e.g. Imagenet32_train.zip, Imagenet32_val.zip) or their members in a folder")


def _batch(obj, where: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(N x 3 x S x S uint8, N int64 labels 0..999, S) of one unpickled batch dict."""
    if not isinstance(obj, dict):
        raise DatasetError(f"malformed batch {where}: expected a dict, got {type(obj).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise DatasetError(f"malformed batch {where}: expected keys 'data' and 'labels', got {sorted(map(str, d))}")
    data = np.asarray(d["data"])
    side = math.isqrt(data.shape[1] // 3) if data.ndim == 2 else 0
    if data.dtype != np.uint8 or data.ndim != 2 or side < 1 or 3 * side * side != data.shape[1]:
        raise DatasetError(f"malformed batch {where}: 'data' must be uint8 N x 3*S*S, got {data.dtype} {data.shape}")
    labels = check_labels(np.asarray(d["labels"]) - 1, NUM_CLASSES, f"{where} (labels 1..{NUM_CLASSES})")
    if len(labels) != len(data):
        raise DatasetError(f"malformed batch {where}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, side, side), labels, side


def _order(name: str) -> tuple[int, int]:
    """(0, k) for train_data_batch_k, (1, 0) for val_data: the batches' row order."""
    m = BATCH.match(name)
    return (1, 0) if m.group(1) == "val_data" else (0, int(m.group(2)))


def _classes(path: Path) -> list[str]:
    f = path / "map_clsloc.txt" if path.is_dir() else None
    if f is None or not f.is_file():
        return [str(i) for i in range(1, NUM_CLASSES + 1)]
    rows = [line.split() for line in f.read_text().splitlines() if line.strip()]
    names = {int(r[1]): r[0] for r in rows if len(r) >= 2 and r[1].isdigit()}
    if sorted(names) != list(range(1, NUM_CLASSES + 1)):
        raise DatasetError(f"{f}: expected '<wnid> <label> <name>' lines for labels 1..{NUM_CLASSES}")
    return [names[i] for i in range(1, NUM_CLASSES + 1)]


def write_downsampled(path: Path, tmp: Path, *, val_fraction: float, split_seed: int, cap: int) -> dict:
    """Both passes; returns the artifact's meta."""
    wanted = lambda name: BATCH.match(name) is not None  # noqa: E731
    found, side = [], None
    for base, where, blob in _members(path, cap, wanted):  # pass 1: labels and sizes
        _, labels, s = _batch(safe_unpickle(blob, where), where)
        del blob
        if side not in (None, s):
            raise DatasetError(f"{where} holds {s} x {s} images but an earlier batch {side} x {side}")
        side = s
        found.append((_order(base), base, labels))
    names = [base for _, base, _ in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"{path}: {dup[0]} found twice (which copy is meant?)")
    if "val_data" not in names or not any(n.startswith("train_data_batch_") for n in names):
        raise DatasetError(f"{path}: expected train_data_batch_1.. and val_data (in the release's zips or as files), "
                           f"found {', '.join(sorted(names)) or 'none'}")
    found.sort()
    train = [f for f in found if f[0][0] == 0]
    test_labels = next(f[2] for f in found if f[0][0] == 1)
    all_train = np.concatenate([f[2] for f in train])
    val_rows = stratified_indices(all_train, val_fraction, split_seed)
    keep = np.ones(len(all_train), bool)
    keep[val_rows] = False
    shape = (3, side, side)
    counts = {"train": int(keep.sum()), "val": int((~keep).sum()), "test": len(test_labels)}
    offsets = {s: create_npy(tmp / f"{s}_x.npy", np.uint8, (counts[s], *shape)) for s in counts}
    np.save(tmp / "train_y.npy", all_train[keep])
    np.save(tmp / "val_y.npy", all_train[~keep])
    np.save(tmp / "test_y.npy", test_labels)
    # Where each batch's rows go: its kept images at train row t, its held-out ones at val row v.
    place, t, v, start = {}, 0, 0, 0
    for key, _, labels in train:
        k = keep[start:start + len(labels)]
        place[key] = (k, t, v)
        t, v, start = t + int(k.sum()), v + int((~k).sum()), start + len(labels)
    row_bytes = 3 * side * side
    n_px, s1, s2 = 0, [0] * 3, [0] * 3
    fds = {s: os.open(tmp / f"{s}_x.npy", os.O_WRONLY) for s in counts}
    try:
        for base, where, blob in _members(path, cap, wanted):  # pass 2: rows
            x, _, _ = _batch(safe_unpickle(blob, where), where)
            del blob
            key = _order(base)
            if key[0] == 0 and key not in place:
                raise DatasetError(f"{where} appeared between the two passes (did the source change?)")
            if key[0] == 1:
                os.pwrite(fds["test"], x.tobytes(), offsets["test"])
                continue
            k, t0, v0 = place[key]
            kept = np.ascontiguousarray(x[k])
            os.pwrite(fds["train"], kept.tobytes(), offsets["train"] + t0 * row_bytes)
            os.pwrite(fds["val"], np.ascontiguousarray(x[~k]).tobytes(), offsets["val"] + v0 * row_bytes)
            px, a, b = channel_sums(kept)
            n_px, s1, s2 = n_px + px, [p + q for p, q in zip(s1, a)], [p + q for p, q in zip(s2, b)]
            del x, kept
    finally:
        for fd in fds.values():
            os.close(fd)
    mean, std = stats_from_sums(n_px, s1, s2)
    return {"classes": _classes(path), "num_classes": NUM_CLASSES, "channels": 3, "height": side, "width": side,
            "shapes": {s: list(shape) for s in counts}, "mean": mean, "std": std, "counts": counts,
            "split": {"val_fraction": val_fraction, "seed": split_seed, "stratified": True,
                      "validation": "held out of train", "test": "val_data (the official validation set)"}}
