"""MNIST / Fashion-MNIST from the four official IDX gz files (LeCun et al. 1998; Xiao et al. 2017)."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from resnet_bench.data.artifact import check_labels
from resnet_bench.data.sources import DatasetError, _check_size, _clean
from resnet_bench.inputs import NotRegularFileError, open_regular

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# torchvision.datasets.FashionMNIST.classes
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]
# IDX magic numbers (yann.lecun.com/exdb/mnist): 0x00000803 images, 0x00000801 labels.
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049


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
