"""CIFAR-10 / CIFAR-100 from the official python tarballs (Krizhevsky 2009), read in place: every
batch pickle through the allow-list unpickler, every field checked."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from resnet_bench.data.archives import read_members, source_kind
from resnet_bench.data.artifact import check_labels
from resnet_bench.data.sources import DatasetError, safe_unpickle

# File names of the official releases, as torchvision downloads them.
CIFAR_FILES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}


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
