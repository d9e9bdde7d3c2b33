"""Readers of the array datasets (digits, CIFAR, MNIST / Fashion-MNIST): each returns
(train_x, train_y, test_x, test_y, classes) as uint8 N x C x H x W and int64 labels."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from resnet_bench.data.artifact import check_labels, stratified_indices
from resnet_bench.data.sources import DatasetError, _check_size, _clean, read_members, safe_unpickle, source_kind
from resnet_bench.inputs import NotRegularFileError, open_regular

# File names of the official releases (Krizhevsky 2009; LeCun et al. 1998; Xiao et al. 2017),
# as torchvision downloads them.
CIFAR_FILES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
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
# ---- raw readers of array datasets: each returns (train_x, train_y, test_x, test_y, classes) --------


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


def _cifar_batch(b, member: str, path: Path, label_key: bytes, num_classes: int):
    """(N x 3 x 32 x 32 uint8, N int64) of one unpickled batch dict, every field checked."""
    where = f"batch {member} in {path}"
    if not isinstance(b, dict) or b"data" not in b or label_key not in b:
        keys = sorted(k.decode(errors="replace") for k in b) if isinstance(b, dict) else type(b).__name__
        raise DatasetError(f"malformed {where}: expected a dict with keys 'data' and "
                           f"{label_key.decode()!r}, got {keys}")
    data = np.asarray(b[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"malformed {where}: 'data' must be uint8 N x 3072 (32x32 RGB), got "
                           f"{data.dtype} {data.shape}")
    labels = check_labels(np.asarray(b[label_key]), num_classes, where)
    if len(labels) != len(data):
        raise DatasetError(f"malformed {where}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(path: Path, fmt: str, cap: int):
    """The official python tarball (cifar-10-batches-py/*, cifar-100-python/*), read in place."""
    train_names = ({f"data_batch_{i}" for i in range(1, 6)} if fmt == "cifar10" else {"train"})
    test_names, meta_name = {"test_batch"} if fmt == "cifar10" else {"test"}, (
        "batches.meta" if fmt == "cifar10" else "meta")
    label_key = b"labels" if fmt == "cifar10" else b"fine_labels"
    names_key = b"label_names" if fmt == "cifar10" else b"fine_label_names"
    k = CIFAR_CLASSES[fmt]
    if source_kind(path) != "tar":
        raise DatasetError(f"{path} is not a {fmt} python tarball ({CIFAR_FILES[fmt]}, a .tar.gz)")
    wanted = train_names | test_names | {meta_name}
    batches, meta, seen = {}, None, set()
    for name, blob in read_members(path, "tar", cap, lambda n: PurePosixPath(n).name in wanted):
        base = PurePosixPath(name).name
        if base in seen:
            raise DatasetError(f"duplicate member {base!r} in {path} ({name})")
        seen.add(base)
        obj = safe_unpickle(blob, f"{name} in {path}")
        if base == meta_name:
            meta = (obj, name)
        else:
            batches[base] = _cifar_batch(obj, name, path, label_key, k)
    missing = sorted(wanted - seen)
    if missing:
        raise DatasetError(f"{path} is not a {fmt} python tarball: members {', '.join(missing)} missing")
    names = meta[0].get(names_key) if isinstance(meta[0], dict) else None
    if not isinstance(names, list) or len(names) != k:
        raise DatasetError(f"malformed meta {meta[1]} in {path}: expected {names_key.decode()!r}, a list of "
                           f"{k} class names")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]

    def stack(split):
        parts = [batches[n] for n in sorted(split)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return (*stack(train_names), *stack(test_names), classes)


def _read_idx(path: Path, magic: int, ndim: int, cap: int) -> np.ndarray:
    try:
        with open_regular(path) as gz, gzip.open(gz, "rb") as f:
            raw = f.read(cap + 1)
    except NotRegularFileError as err:
        raise DatasetError(str(err)) from None
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"truncated or corrupt IDX file {path}: {_clean(err)}") from None
    _check_size(path.name, len(raw), path.parent, cap)
    if len(raw) < 4 or struct.unpack(">I", raw[:4])[0] != magic:
        raise DatasetError(f"{path}: not an IDX file with magic {magic} (0x{magic:08x})")
    if raw[3] != ndim or len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: IDX header truncated or not {ndim}-D ({len(raw)} bytes, {raw[3]} dims)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = len(raw) - 4 - 4 * ndim
    if math.prod(dims) != body:  # Python ints: no overflow however large the dims claim to be
        raise DatasetError(f"{path}: header says {' x '.join(map(str, dims))} but holds {body} bytes "
                           "(truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_mnist(path: Path, fmt: str, cap: int):
    """The four IDX gz files in `path` (or torchvision's <path>/<Class>/raw layout)."""
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder; {fmt} needs a folder with {', '.join(MNIST_FILES.values())}")
    candidates = [path, path / ("MNIST" if fmt == "mnist" else "FashionMNIST") / "raw"]
    folder = next((c for c in candidates if (c / MNIST_FILES["train_images"]).exists()), None)
    if folder is None:
        raise DatasetError(f"{MNIST_FILES['train_images']} not found in {path}; expected the four files "
                           f"{', '.join(MNIST_FILES.values())}")
    files = {k: folder / v for k, v in MNIST_FILES.items()}
    for f in files.values():
        if not f.exists():
            raise DatasetError(f"{f} missing; expected the four files {', '.join(MNIST_FILES.values())}")
    out = []
    for split in ("train", "test"):
        x = _read_idx(files[f"{split}_images"], IDX_IMAGES_MAGIC, 3, cap)[:, None]
        y = check_labels(_read_idx(files[f"{split}_labels"], IDX_LABELS_MAGIC, 1, cap), 10,
                         str(files[f"{split}_labels"]))
        if len(x) != len(y):
            raise DatasetError(f"{folder}: {split} has {len(x)} images but {len(y)} labels")
        out += [x, y]
    classes = [str(i) for i in range(10)] if fmt == "mnist" else FASHION_CLASSES
    return (*out, classes)
