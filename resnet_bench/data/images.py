"""Image datasets written in bounded memory: every reader of an image format (`readers.imagefolder`,
`readers.imagenet`, `readers.tinyimagenet`) lists its members into an `ImageIndex` (which member goes
to which row of which split, with its label; 16 bytes per image), then `write_images` streams the
members to worker processes that decode them by content, apply the store policy and write each image
straight into its row of the output `.npy` file (`os.pwrite`), returning integer per-channel sums for
the train split's mean/std. Rows are fixed by the index, so the output is byte-identical for any
worker count."""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from resnet_bench.data.artifact import create_npy, stats_from_sums, stratified_indices
from resnet_bench.data.decode import FILTER, decode_rgb, eval_image, max_long_side, train_image
from resnet_bench.data.sources import DatasetError

SPLITS = ("train", "val", "test")
# Images sent to a worker per task: large enough to amortise the pickling of a task (~ms),
# small enough that 2 tasks per worker in flight hold little memory (256 x ~1-100 KB).
CHUNK_IMAGES = 256
EXTENT_FIELDS = ("height", "width", "transposed")  # train_extents.npy columns, int32


# ---- member names -> rows --------------------------------------------------------------------------


def _parts(name: str) -> tuple[str, ...]:
    # PurePosixPath semantics ('./a//b' -> a/b) with plain string ops: 10x faster per member.
    return tuple(q for q in name.replace("\\", "/").split("/") if q not in ("", "."))


def name_key(name: str) -> int:
    """64-bit key of a member's normalised path (BLAKE2b): equal for './a/b' and 'a/b'."""
    return int.from_bytes(hashlib.blake2b("/".join(_parts(name)).encode(), digest_size=8).digest(), "little")


@dataclass
class ImageIndex:
    """Where every image goes: row i of split s is the member whose name key is `keys[s][i]`.

    A member's key is the 64-bit BLAKE2b hash of its normalised path (`name_key`); rows are sorted
    by key, an order independent of the archive's. 16 bytes per image instead of its name keep the
    index small: 1.6 MB for 100,000 images, where names, tuples and dicts took ~60 MB.
    """

    classes: list[str]
    keys: dict[str, np.ndarray]     # split -> uint64 name keys, row order
    labels: dict[str, np.ndarray]   # split -> int64 labels, row order
    has_val: bool                   # the source has its own validation split (nothing held out)
    split_note: dict = field(default_factory=dict)  # meta["split"] "validation" / "test": where they come from
    extra_meta: dict = field(default_factory=dict)  # format-specific meta.json fields (e.g. class_words)


class IndexBuilder:
    """Members collected one at a time (split, label, name key) in compact arrays, then sorted into rows."""

    def __init__(self):
        self.split, self.label, self.key = array("B"), array("H"), array("Q")

    def add(self, split: str, label: int, name: str) -> None:
        self.split.append(SPLITS.index(split))
        self.label.append(label)
        self.key.append(name_key(name))

    def rows(self, duplicate: Callable[[int], str], *, remap: np.ndarray | None = None,
             source_of: dict[str, str | None] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(keys, labels) per split in key order. `duplicate(key)` names a member seen twice, quoted, and its
        source (refused);
        `remap` maps provisional labels to final ones; `source_of[split]`: the split added as (None: empty)."""
        keys = np.frombuffer(self.key, np.uint64)
        uniq, counts = np.unique(keys, return_counts=True)
        if len(uniq) != len(keys):
            raise DatasetError(f"duplicate member {duplicate(int(uniq[counts > 1][0]))}: refused "
                               "(which copy is meant?)")
        split_arr, labels = np.frombuffer(self.split, np.uint8), np.frombuffer(self.label, np.uint16).astype(np.int64)
        if remap is not None:
            labels = remap[labels]
        out_keys, out_labels = {}, {}
        for split in SPLITS:
            src = (source_of or {}).get(split, split)
            rows = np.flatnonzero(split_arr == SPLITS.index(src)) if src else np.zeros(0, np.int64)
            rows = rows[np.argsort(keys[rows], kind="stable")]  # deterministic order, whatever the archive's
            out_keys[split], out_labels[split] = keys[rows].copy(), labels[rows]
        return out_keys, out_labels


class RowMap:
    """name -> (array key, row) for the members being written: sorted keys and searchsorted lookup."""

    def __init__(self, keys: dict[str, np.ndarray]):
        all_keys = np.concatenate([keys[s] for s in SPLITS])
        code = np.concatenate([np.arange(len(keys[s]), dtype=np.int64) | (i << 40) for i, s in enumerate(SPLITS)])
        order = np.argsort(all_keys, kind="stable")
        self.keys, self.code = all_keys[order], code[order]

    def __call__(self, name: str) -> tuple[str, int] | None:
        k = np.uint64(name_key(name))
        i = int(np.searchsorted(self.keys, k))
        if i == len(self.keys) or self.keys[i] != k:
            return None
        c = int(self.code[i])
        return SPLITS[c >> 40], c & ((1 << 40) - 1)


# ---- the store policy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorePolicy:
    """How images are stored (prepare.files keys `image_size`, `max_aspect`, `eval_resize`, `eval_crop`).

    train: `image_size` > 0: shorter side to it, aspect kept up to `max_aspect` (zero-padded slot,
    true extent recorded in train_extents.npy); 0: each image as it is (all must be one size).
    val/test: shorter side to `eval_resize` (0: `image_size`, or no resize when that is 0 too), then
    the centre `eval_crop` square (0: the resized square; no crop when nothing is resized).
    """

    image_size: int = 0
    max_aspect: float = 1.0
    eval_resize: int = 0
    eval_crop: int = 0

    @property
    def eval_resize_to(self) -> int:
        return self.eval_resize or self.image_size

    def problems(self) -> list[str]:
        out = []
        if self.max_aspect < 1 or not math.isfinite(self.max_aspect):
            out.append(f"max_aspect {self.max_aspect} is invalid: the longer side over the shorter, >= 1")
        if self.eval_resize_to and self.eval_crop > self.eval_resize_to:
            out.append(f"eval_crop {self.eval_crop} is larger than the evaluation resize {self.eval_resize_to} "
                       "(eval_resize, or image_size when eval_resize is 0)")
        return out

    def describe(self) -> dict | None:
        """meta.json `resize`: the policy as stored (hashed into content_sha256); None: images as they are."""
        if not (self.image_size or self.eval_resize or self.eval_crop):
            return None
        train = ({"policy": "shorter_side_aspect_capped", "size": self.image_size, "max_aspect": self.max_aspect,
                  "slot": [self.image_size, max_long_side(self.image_size, self.max_aspect)],
                  "portrait": "stored transposed", "extents": "train_extents.npy"}
                 if self.image_size else {"policy": "as_is"})
        resize_to = self.eval_resize_to
        crop = self.eval_crop or resize_to
        evaluation = {"policy": "resize_center_crop" if resize_to else ("center_crop" if crop else "as_is"),
                      "resize": resize_to, "crop": crop}
        return {"train": train, "eval": evaluation, "filter": FILTER}


# ---- workers: decode, apply the policy, write the row ---------------------------------------------------


@dataclass(frozen=True)
class DecodeSpec:
    """What a worker needs to decode a member and write its row: shared by every task."""

    source: str
    out_dir: str
    policy: StorePolicy
    shapes: tuple[tuple[str, tuple[int, int, int]], ...]  # split -> C x H x W of its stored rows
    offsets: tuple[tuple[str, int], ...]  # file key -> data offset in its .npy file


_WORKER_FDS: dict[str, int] = {}


def _fd(spec: DecodeSpec, key: str) -> int:
    path = os.path.join(spec.out_dir, f"{key}.npy")
    if path not in _WORKER_FDS:
        _WORKER_FDS[path] = os.open(path, os.O_WRONLY)
    return _WORKER_FDS[path]


def decode_member(blob: bytes, name: str, spec: DecodeSpec, split: str) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(C x H x W row, (height, width, transposed) of its content) of one member of `split`."""
    where = f"{name!r} in {spec.source}"
    rgb = decode_rgb(blob, where)
    shape = dict(spec.shapes)[split]
    p = spec.policy
    transposed = False
    if split == "train" and p.image_size:
        rgb, transposed = train_image(rgb, p.image_size, p.max_aspect, where)
    elif split != "train":
        rgb = eval_image(rgb, p.eval_resize_to, p.eval_crop, where)
    chw = rgb.transpose(2, 0, 1)
    h, w = chw.shape[1:]
    if split == "train" and p.image_size:
        row = np.zeros(shape, np.uint8)
        row[:, :h, :w] = chw
        return row, (h, w, int(transposed))
    if chw.shape != shape:
        raise DatasetError(f"image {where} is {w} x {h} but the dataset's {split} images are {shape[2]} x "
                           f"{shape[1]}; set image_size (params.yaml prepare.files.<name>.image_size, or "
                           "--image-size) to resize them")
    return np.ascontiguousarray(chw), (h, w, 0)


def decode_chunk(spec: DecodeSpec, chunk: list[tuple[str, int, str, bytes]]):
    """Decode and write one task's images to their rows; returns (train images, train pixels, per-channel sum,
    sum of squares) as exact Python ints (order-independent, so any schedule gives one answer)."""
    offsets = dict(spec.offsets)
    shapes = dict(spec.shapes)
    c = shapes["train"][0]
    s1, s2, n, px = np.zeros(c, np.int64), np.zeros(c, np.int64), 0, 0
    for split, row, name, blob in chunk:
        chw, extent = decode_member(blob, name, spec, split)
        os.pwrite(_fd(spec, f"{split}_x"), chw.tobytes(), offsets[f"{split}_x"] + row * math.prod(shapes[split]))
        if split == "train":
            if "train_extents" in offsets:
                os.pwrite(_fd(spec, "train_extents"), np.asarray(extent, "<i4").tobytes(),
                          offsets["train_extents"] + row * 4 * len(EXTENT_FIELDS))
            flat = chw.reshape(c, -1).astype(np.int64)  # padding is zero: adds nothing to the sums
            s1 += flat.sum(1)
            s2 += (flat * flat).sum(1)
            n += 1
            px += extent[0] * extent[1]
    return n, px, [int(v) for v in s1], [int(v) for v in s2]


def _worker_call(args):
    """(images written: every split's, for the progress line, decode_chunk's result), or the error."""
    try:
        return len(args[1]), decode_chunk(*args)
    except DatasetError as err:
        return err  # returned, not raised: the parent reports it as one line


Stream = Callable[[Callable[[str], bool]], Iterable[tuple[str, bytes]]]


def _chunks(stream: Stream, dest: RowMap) -> Iterator[list]:
    chunk, rows = [], {}
    for name, blob in stream(lambda n: rows.setdefault(n, dest(n)) is not None):
        split, row = rows.pop(name)
        chunk.append((split, row, name, blob))
        if len(chunk) >= CHUNK_IMAGES:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _shapes(stream: Stream, dest: RowMap, policy: StorePolicy, source: str) -> dict[str, tuple[int, int, int]]:
    """C x H x W of every split's rows: fixed by the policy, else the first image's own size."""
    own = None
    if not policy.image_size:
        for name, blob in stream(lambda n: dest(n) is not None):  # stops at the first
            rgb = decode_rgb(blob, f"{name!r} in {source}")
            own = (3, rgb.shape[0], rgb.shape[1])
            break
        else:
            raise DatasetError(f"{source}: no image could be read a second time (did the source change?)")
    train = (3, policy.image_size, max_long_side(policy.image_size, policy.max_aspect)) if policy.image_size else own
    crop = policy.eval_crop or policy.eval_resize_to
    return {"train": train, "val": (3, crop, crop) if crop else own, "test": (3, crop, crop) if crop else own}


def write_images(index: ImageIndex, stream: Stream, *, source: str, tmp, policy: StorePolicy, val_fraction: float,
                 split_seed: int, workers: int) -> dict:
    """Decode every image of the index into `tmp`'s .npy files; returns the artifact's meta."""
    keys, labels = dict(index.keys), dict(index.labels)
    if not index.has_val:  # hold the validation split out of train
        val_rows = stratified_indices(labels["train"], val_fraction, split_seed, index.classes)
        keep = np.ones(len(labels["train"]), bool)
        keep[val_rows] = False
        keys["val"], keys["train"] = keys["train"][val_rows], keys["train"][keep]
        labels["val"], labels["train"] = labels["train"][val_rows], labels["train"][keep]
    dest = RowMap(keys)
    counts = {split: len(keys[split]) for split in SPLITS}
    del keys
    shapes = _shapes(stream, dest, policy, source)
    offsets = []
    for split in SPLITS:
        offsets.append((f"{split}_x", create_npy(tmp / f"{split}_x.npy", np.uint8, (counts[split], *shapes[split]))))
        np.save(tmp / f"{split}_y.npy", labels[split])
    if policy.image_size:
        offsets.append(("train_extents", create_npy(tmp / "train_extents.npy", np.dtype("<i4"),
                                                    (counts["train"], len(EXTENT_FIELDS)))))
    spec = DecodeSpec(source, str(tmp), policy, tuple(shapes.items()), tuple(offsets))
    n_img, n_px, s1, s2 = 0, 0, [0] * 3, [0] * 3
    from resnet_bench.progress import Progress

    bar = Progress(label="prepare", total=sum(counts.values()), unit="images")  # decoded and written
    tasks = ((spec, chunk) for chunk in _chunks(stream, dest))
    if workers <= 1:
        results = map(_worker_call, tasks)
        pool = None
    else:
        # forkserver, not fork: a caller that already runs threads (torch's OpenMP pool, a test
        # runner) can deadlock a forked child on a lock held at fork time. Workers start from a
        # clean server process once per pool (~0.1-0.5 s); the output is identical either way.
        pool = multiprocessing.get_context("forkserver").Pool(workers)
        results = pool.imap_unordered(_worker_call, tasks)
    failed = True
    try:
        for res in results:
            if isinstance(res, DatasetError):
                raise res
            written, res = res
            bar.update(written)
            n_img += res[0]
            n_px += res[1]
            s1 = [a + b for a, b in zip(s1, res[2])]
            s2 = [a + b for a, b in zip(s2, res[3])]
        failed = False
    finally:
        bar.close(failed=failed)
        if pool is not None:
            pool.terminate()
            pool.join()
        for fd in _WORKER_FDS.values():
            os.close(fd)
        _WORKER_FDS.clear()
    mean, std = stats_from_sums(n_px, s1, s2)
    split = {"val_fraction": val_fraction, "seed": split_seed, "stratified": not index.has_val,
             "validation": "held out of train", **index.split_note}
    c, h, w = shapes["test"]
    return {"classes": index.classes, "num_classes": len(index.classes), "channels": c, "height": h, "width": w,
            "shapes": {s: list(shapes[s]) for s in SPLITS}, "mean": mean, "std": std,
            "counts": {s: int(len(labels[s])) for s in SPLITS}, "split": split, "resize": policy.describe(),
            **index.extra_meta}
