"""Datasets: read raw files safely, write one canonical prepared artifact, feed it from device memory.

The `prepare` stage (`main(argv)`) turns a dataset into `data/prepared/<name>/`
(see docs/ARCHITECTURE.md): uint8 images N x C x H x W, int64 labels, class
names, per-channel mean/std of the train split, source SHA-256 and counts,
with a seeded, stratified validation split held out of train. Raw files are
read in place (tar/zip members are streamed, never extracted), pickles go
through an allow-list, and every bad input raises one `DatasetError` naming
the file (or archive member) and what was expected.

Training reads the artifact with `load_prepared` and batches it with
`DeviceLoader`: the whole split sits on the device as uint8, batches are
shuffled by a seeded generator and augmented as whole-batch tensor ops.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import torch

FORMATS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
# Split folder names in image-folder datasets; Imagenette calls its test split `val`.
SPLIT_DIRS = {"train": "train", "test": "test", "val": "test"}

# File names of the official releases (Krizhevsky 2009; LeCun et al. 1998; Xiao et al. 2017),
# as torchvision downloads them.
CIFAR_FILES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# torchvision.datasets.FashionMNIST.classes
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
# IDX magic numbers (yann.lecun.com/exdb/mnist): 0x00000803 images, 0x00000801 labels.
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049
DIGITS_TEST_FRACTION = 0.2  # scikit-learn's digits ship no test split: a seeded stratified 20%


class DatasetError(ValueError):
    """A dataset file that is missing, corrupt, tampered with or unsafe."""


def available_formats() -> list[str]:
    return list(FORMATS)


# ---- verification -----------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_dir(path: Path) -> str:
    """Hash of a folder: relative paths and contents of every file, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode() + b"\0")
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def require_source(path: str | Path | None, fmt: str) -> Path:
    """The source path, or a DatasetError naming the expected path and how to provide it."""
    how = {
        "cifar10": f"download {CIFAR_FILES['cifar10']} (run prepare with --download when online) and "
                   "`dvc add` it",
        "cifar100": f"download {CIFAR_FILES['cifar100']} (run prepare with --download when online) and "
                    "`dvc add` it",
        "mnist": f"put {', '.join(MNIST_FILES.values())} in a folder (or use --download when online) and "
                 "`dvc add` the folder",
        "imagefolder": "put the archive (.tar.gz/.tgz/.zip) or folder there and `dvc add` it",
    }
    how["fashion_mnist"] = how["mnist"]
    if path is None or str(path) == "":
        raise DatasetError(f"format {fmt!r} needs --source PATH: {how.get(fmt, '')}")
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"source not found: {p} (expected the {fmt} data there); to provide it: "
                           f"{how.get(fmt, '')} (docs/datasets.md)")
    return p


def verify_sha256(path: Path, expected: str | None) -> str:
    """The source's SHA-256; a DatasetError naming the file and both hashes when it differs."""
    actual = sha256_file(path) if path.is_file() else sha256_dir(path)
    if expected and actual != expected.lower():
        raise DatasetError(f"checksum mismatch for {path}: expected sha256 {expected.lower()}, "
                           f"actual {actual}")
    return actual


def check_member_name(name: str, archive: Path) -> None:
    """Refuse absolute paths and `..` in archive member names (path traversal)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DatasetError(f"unsafe member {name!r} in {archive}: absolute path or '..' refused")


# ---- safe unpickling ------------------------------------------------------------------------------


class _AllowListUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain: dicts, lists, bytes, str, ints and numpy arrays.

    A pickle naming any other global (e.g. os.system via __reduce__) is refused before
    anything is called.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        # Python 3 pickles of protocol <= 2 spell bytes as _codecs.encode(str, 'latin1'): a pure function.
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        if module == "_codecs":
            import codecs

            return codecs.encode
        from numpy._core import multiarray  # numpy >= 2; the old path is an alias of it

        return getattr(multiarray, name)


def safe_unpickle(data: bytes, where: str):
    try:
        return _AllowListUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DatasetError(f"refused or corrupt pickle {where}: {err}") from None


# ---- raw readers: each returns (train_x, train_y, test_x, test_y, classes) -------------------------


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DatasetError(f"truncated or corrupt archive {path}: {err}") from None


def _tar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every regular file in a tar, streamed once; names checked first."""
    with _open_tar(path) as tar:
        try:
            for member in tar:
                check_member_name(member.name, path)
                if member.issym() or member.islnk():
                    raise DatasetError(f"unsafe member {member.name!r} in {path}: links refused")
                if member.isfile():
                    f = tar.extractfile(member)
                    yield member.name, f.read()
        except (tarfile.TarError, OSError, EOFError, zlib_error()) as err:
            raise DatasetError(f"truncated or corrupt archive {path}: {err}") from None


def zlib_error():
    import zlib

    return zlib.error


def read_digits(split_seed: int):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap, UCI "optdigits"); scaled to 0..255.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # N x 1 x 8 x 8
    labels = bunch.target.astype(np.int64)
    test_idx = stratified_indices(labels, DIGITS_TEST_FRACTION, split_seed + 1_000_003)
    train_mask = np.ones(len(labels), bool)
    train_mask[test_idx] = False
    classes = [str(c) for c in bunch.target_names]
    return images[train_mask], labels[train_mask], images[test_idx], labels[test_idx], classes


def read_cifar(path: Path, fmt: str):
    """The official python tarball (cifar-10-batches-py/*, cifar-100-python/*), read in place."""
    train_names = ({f"data_batch_{i}" for i in range(1, 6)} if fmt == "cifar10" else {"train"})
    test_names, meta_name = {"test_batch"} if fmt == "cifar10" else {"test"}, (
        "batches.meta" if fmt == "cifar10" else "meta")
    label_key = b"labels" if fmt == "cifar10" else b"fine_labels"
    names_key = b"label_names" if fmt == "cifar10" else b"fine_label_names"
    batches, meta = {}, None
    for name, blob in _tar_members(path):
        base = PurePosixPath(name).name
        if base in train_names | test_names:
            batches[base] = safe_unpickle(blob, f"{name} in {path}")
        elif base == meta_name:
            meta = safe_unpickle(blob, f"{name} in {path}")
    missing = sorted((train_names | test_names | {meta_name}) - set(batches) - ({meta_name} if meta else set()))
    if missing:
        raise DatasetError(f"{path} is not a {fmt} python tarball: members {', '.join(missing)} missing")

    def stack(names):
        xs, ys = [], []
        for n in sorted(names):
            b = batches[n]
            try:
                xs.append(np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(b[label_key], dtype=np.int64))
            except (KeyError, ValueError) as err:
                raise DatasetError(f"malformed batch {n} in {path}: {err}") from None
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = stack(train_names)
    test_x, test_y = stack(test_names)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[names_key]]
    return train_x, train_y, test_x, test_y, classes


def _read_idx(path: Path, magic: int) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib_error()) as err:
        raise DatasetError(f"truncated or corrupt IDX file {path}: {err}") from None
    if len(raw) < 8 or struct.unpack(">I", raw[:4])[0] != magic:
        raise DatasetError(f"{path}: not an IDX file with magic {magic}")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims} but holds {body.size} bytes (truncated?)")
    return body.reshape(dims)


def read_mnist(path: Path, fmt: str):
    """The four IDX gz files in `path` (or torchvision's <path>/<Class>/raw layout)."""
    candidates = [path, path / ("MNIST" if fmt == "mnist" else "FashionMNIST") / "raw"]
    folder = next((c for c in candidates if (c / MNIST_FILES["train_images"]).exists()), None)
    if folder is None:
        raise DatasetError(f"{MNIST_FILES['train_images']} not found in {path}; expected the four files "
                           f"{', '.join(MNIST_FILES.values())}")
    files = {k: folder / v for k, v in MNIST_FILES.items()}
    train_x = _read_idx(files["train_images"], IDX_IMAGES_MAGIC)[:, None]
    train_y = _read_idx(files["train_labels"], IDX_LABELS_MAGIC).astype(np.int64)
    test_x = _read_idx(files["test_images"], IDX_IMAGES_MAGIC)[:, None]
    test_y = _read_idx(files["test_labels"], IDX_LABELS_MAGIC).astype(np.int64)
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DatasetError(f"{folder}: image and label counts differ")
    classes = [str(i) for i in range(10)] if fmt == "mnist" else FASHION_CLASSES
    return train_x, train_y, test_x, test_y, classes


def _iter_imagefolder(path: Path) -> Iterator[tuple[str, bytes]]:
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                yield p.relative_to(path).as_posix(), p.read_bytes()
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    check_member_name(info.filename, path)
                    if not info.is_dir():
                        yield info.filename, zf.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, zlib_error()) as err:
            raise DatasetError(f"truncated or corrupt archive {path}: {err}") from None
    else:
        yield from _tar_members(path)


def _split_and_class(name: str) -> tuple[str, str] | None:
    """('train'|'test', class) from '<any prefix>/<split>/<class>/<file>', else None."""
    parts = PurePosixPath(name).parts
    if len(parts) < 3 or not name.lower().endswith(IMAGE_SUFFIXES):
        return None
    split = parts[-3].lower()
    return (SPLIT_DIRS[split], parts[-2]) if split in SPLIT_DIRS else None


def decode_image(blob: bytes, where: str, size: int | None) -> np.ndarray:
    """H x W x 3 uint8 RGB; `size` resizes (bilinear) to size x size."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as im:
            im = im.convert("RGB")
            if size and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as err:  # PIL raises many types for corrupt data
        raise DatasetError(f"corrupt image {where}: {type(err).__name__}: {err}") from None


def read_imagefolder(path: Path, image_size: int | None):
    """train/<class>/* and test/<class>/* (or val/) from a folder, .tar(.gz)/.tgz or .zip archive."""
    items = {"train": [], "test": []}
    for name, blob in _iter_imagefolder(path):
        sc = _split_and_class(name)
        if sc:
            items[sc[0]].append((sc[1], name, blob))
    if not items["train"] or not items["test"]:
        raise DatasetError(f"{path}: expected train/<class>/<image> and test/<class>/<image> "
                           f"(or val/), found {len(items['train'])} train and {len(items['test'])} test images")
    classes = sorted({c for c, _, _ in items["train"]})
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for split in ("train", "test"):
        rows = sorted(items[split], key=lambda t: t[1])  # deterministic order, whatever the archive's
        unknown = sorted({c for c, _, _ in rows} - set(index))
        if unknown:
            raise DatasetError(f"{path}: {split} classes {unknown} have no train images")
        images = [decode_image(blob, f"{name!r} in {path}", image_size) for _, name, blob in rows]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise DatasetError(f"{path}: images have different sizes {sorted(shapes)[:3]}...; "
                               "pass --image-size N to resize them")
        out += [np.stack(images).transpose(0, 3, 1, 2).copy(), np.array([index[c] for c, _, _ in rows])]
    return out[0], out[1].astype(np.int64), out[2], out[3].astype(np.int64), classes


def download(fmt: str, root: Path) -> Path:
    """Fetch the official files through torchvision (online users); returns the source path."""
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    if fmt in CIFAR_FILES:
        (tvd.CIFAR10 if fmt == "cifar10" else tvd.CIFAR100)(str(root), download=True)
        return root / CIFAR_FILES[fmt]
    if fmt in ("mnist", "fashion_mnist"):
        (tvd.MNIST if fmt == "mnist" else tvd.FashionMNIST)(str(root), download=True)
        return root
    raise DatasetError(f"--download is not available for format {fmt!r}; valid: "
                       f"{', '.join([*CIFAR_FILES, 'mnist', 'fashion_mnist'])}")


# ---- the prepared artifact ------------------------------------------------------------------------


def stratified_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, per-class `fraction` of `labels` (at least 1 per class if > 0)."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(fraction * len(idx)))
        if fraction > 0:
            k = max(1, min(k, len(idx) - 1))
        picked.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(picked)) if picked else np.array([], np.int64)


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale of a uint8 N x C x H x W array (float64 sums)."""
    c = x.shape[1]
    flat = x.transpose(1, 0, 2, 3).reshape(c, -1)
    mean = flat.mean(axis=1, dtype=np.float64) / 255.0
    std = flat.std(axis=1, dtype=np.float64) / 255.0
    return [float(m) for m in mean], [float(s) for s in std]


def build_artifact(train_x, train_y, test_x, test_y, classes, *, val_fraction: float, split_seed: int):
    """Hold out a stratified validation split and compute the train split's statistics."""
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    val_idx = stratified_indices(train_y, val_fraction, split_seed)
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
        "split": {"val_fraction": val_fraction, "seed": split_seed, "stratified": True},
    }
    return arrays, meta


def write_artifact(out: Path, arrays: dict, meta: dict) -> None:
    """Write to a temp folder beside `out`, then swap it in: a kill leaves the old artifact whole."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for key, arr in arrays.items():
        np.save(tmp / f"{key}.npy", arr)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@dataclass
class PreparedDataset:
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    meta: dict


def load_prepared(path: str | Path) -> PreparedDataset:
    path = Path(path)
    if not (path / "meta.json").exists():
        raise DatasetError(f"prepared dataset not found: {path}; make it with `dvc repro prepare@{path.name}` "
                           f"(or `dvc repro prepare_file@{path.name}` for a file-based dataset)")
    arrays = {}
    for key in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        f = path / f"{key}.npy"
        if not f.exists():
            raise DatasetError(f"prepared dataset {path} is incomplete: {f.name} missing; rerun its prepare stage")
        arrays[key] = np.load(f, allow_pickle=False)
    return PreparedDataset(**arrays, meta=json.loads((path / "meta.json").read_text()))


def prepare(name: str, fmt: str, *, source=None, sha256=None, download_data=False, out: Path,
            val_fraction=0.1, split_seed=0, image_size=None) -> dict:
    """Read a raw dataset and write its prepared artifact; returns the artifact's meta."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "digits":
        raw, src, digest = read_digits(split_seed), "sklearn.datasets.load_digits", None
    else:
        if download_data and (source is None or not Path(source).exists()):
            source = download(fmt, Path(source or Path("data") / "raw"))
        src_path = require_source(source, fmt)
        digest = verify_sha256(src_path, sha256)
        if fmt in CIFAR_FILES:
            raw = read_cifar(src_path, fmt)
        elif fmt in ("mnist", "fashion_mnist"):
            raw = read_mnist(src_path, fmt)
        else:
            raw = read_imagefolder(src_path, image_size)
        src = str(source)
    arrays, meta = build_artifact(*raw, val_fraction=val_fraction, split_seed=split_seed)
    meta.update({"name": name, "format": fmt, "source": src, "source_sha256": digest,
                 "image_size": image_size})
    if fmt == "digits":
        meta["split"]["test"] = {"fraction": DIGITS_TEST_FRACTION, "seed": split_seed + 1_000_003,
                                 "stratified": True}
    write_artifact(out, arrays, meta)
    return meta


# ---- on-device batches ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    """Batch augmentation. He et al. 2016 Sec. 4.1 (after Lee et al. 2015): 4 px zero padding,
    a random 32x32 crop and a random horizontal flip."""

    crop_pad: int = 0
    flip: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> "Augment | None":
        return cls(**d) if d else None


def crop_windows(padded: torch.Tensor, index: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Images `index` of a zero-padded stack, each cropped at its own random offset: one gather.

    padded: N x C x (H+2p) x (W+2p). `unfold` views it as N x C x (2p+1) x (2p+1) x H x W
    (every window, no copy); indexing (image, dy, dx) per row copies out B x C x H x W.
    """
    _, _, hp, wp = padded.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    b = len(index)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(padded.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(padded.device)
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    return windows[index, :, dy, dx]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right (x: B x C x H x W)."""
    m = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    x = x.clone()
    x[m] = x[m].flip(3)
    return x


def random_crop_flip(x: torch.Tensor, aug: Augment, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by `crop_pad` and crop back to H x W at a random offset per image, then flip half."""
    if aug.crop_pad:
        p = aug.crop_pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))  # zeros, as in the paper
        x = crop_windows(padded, torch.arange(len(x), device=x.device), p, gen)
    if aug.flip:
        x = random_flip(x, gen)
    return x


class DeviceLoader:
    """Batches of a whole split held on `device` as uint8; shuffling and augmentation on device.

    Deterministic: epoch e of seed s always yields the same batches (`set_epoch`).
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, *, batch_size: int, shuffle: bool, seed: int,
                 mean, std, augment: Augment | None = None, device="cpu", drop_last: bool = False):
        if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4:
            raise ValueError(f"expected uint8 N x C x H x W images, got {x_uint8.dtype} {tuple(x_uint8.shape)}")
        self.device = torch.device(device)
        self.augment = augment if augment and (augment.crop_pad or augment.flip) else None
        self.pad = self.augment.crop_pad if self.augment else 0
        # Zero-padded once for the whole split (uint8, on the device), not once per batch.
        p = self.pad
        self.x = torch.nn.functional.pad(x_uint8.to(self.device), (p, p, p, p)) if p else x_uint8.to(self.device)
        self.y = y.to(self.device, torch.int64)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        # Normalise as (x/255 - mean)/std = x * scale + shift, per channel: shape 1 x C x 1 x 1.
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _generator(self) -> torch.Generator:
        # CPU generator on every device: the same stream on CPU and GPU for a (seed, epoch).
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        return gen

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = self._generator()
        n = len(self.y)
        order = torch.randperm(n, generator=gen).to(self.device) if self.shuffle else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            idx = order[sl] if order is not None else torch.arange(sl.start, sl.stop, device=self.device)
            if self.pad:
                x = crop_windows(self.x, idx, self.pad, gen)
            else:
                x = self.x[idx]
            if self.augment and self.augment.flip:
                x = random_flip(x, gen)
            # In place on the fresh float copy: one allocation per batch.
            yield x.float().mul_(self.scale).add_(self.shift), self.y[idx]


# ---- entry point ----------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(prog="resnet-bench prepare", description="Prepare one dataset artifact.")
    p.add_argument("--name", required=True, help="artifact name, e.g. digits, cifar10_jpeg")
    p.add_argument("--format", choices=FORMATS, help="defaults to --name when that is a format")
    p.add_argument("--source", help="file or folder with the raw data")
    p.add_argument("--sha256", default="", help="expected SHA-256 of the source file (empty: no check)")
    p.add_argument("--download", action="store_true", help="fetch the official files (needs internet)")
    p.add_argument("--out", required=True, help="artifact folder, e.g. data/prepared/digits")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--image-size", type=int, help="resize image-folder images to N x N")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    fmt = args.format or args.name
    if fmt not in FORMATS:
        print(f"error: unknown format {fmt!r} (from --name; pass --format); valid: {', '.join(FORMATS)}",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        meta = prepare(args.name, fmt, source=args.source, sha256=args.sha256 or None,
                       download_data=args.download, out=Path(args.out), val_fraction=args.val_fraction,
                       split_seed=args.split_seed, image_size=args.image_size)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    c = meta["counts"]
    print(f"prepared {args.name} ({fmt}): {c['train']} train / {c['val']} val / {c['test']} test, "
          f"{meta['channels']}x{meta['height']}x{meta['width']}, {meta['num_classes']} classes -> {args.out} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
