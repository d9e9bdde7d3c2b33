"""Datasets: every real format written small and read back; hostile and broken input refused."""

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_bench import data
from resnet_bench.data import Augment, DatasetError, DeviceLoader

SHARED_CIFAR_JPEG = Path(os.environ.get("RESNET_BENCH_SHARED_DATASETS",
                                        Path(__file__).resolve().parents[2] / "shared" / "datasets")) \
    / "cifar10-jpeg.tar.gz"


def add_bytes(tar: tarfile.TarFile, name: str, blob: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def write_cifar(path: Path, fmt="cifar10", n_train=20, n_test=10, payload=None):
    """A tarball with the official member names and dict keys, tiny batches."""
    rng = np.random.default_rng(0)
    k = 10 if fmt == "cifar10" else 100
    top, label_key = ("cifar-10-batches-py", b"labels") if fmt == "cifar10" else ("cifar-100-python", b"fine_labels")

    def batch(n):
        return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                label_key: [int(i % k) for i in range(n)], b"batch_label": b"x"}

    with tarfile.open(path, "w:gz") as tar:
        if fmt == "cifar10":
            for i in range(1, 6):
                add_bytes(tar, f"{top}/data_batch_{i}", pickle.dumps(batch(n_train // 5), protocol=2))
            add_bytes(tar, f"{top}/test_batch", payload or pickle.dumps(batch(n_test), protocol=2))
            add_bytes(tar, f"{top}/batches.meta",
                      pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(k)]}, protocol=2))
        else:
            add_bytes(tar, f"{top}/train", pickle.dumps(batch(n_train), protocol=2))
            add_bytes(tar, f"{top}/test", payload or pickle.dumps(batch(n_test), protocol=2))
            add_bytes(tar, f"{top}/meta", pickle.dumps({b"fine_label_names": [f"f{i}".encode() for i in range(k)]}))
    return path


def jpeg(color, size=8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def imagefolder_items():
    items = {}
    for split in ("train", "test"):
        for cls, color in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            for i in range(4 if split == "train" else 2):
                items[f"root/{split}/{cls}/{i:04d}.jpg"] = jpeg(color)
    return items


def prepare(tmp_path, *args) -> data.PreparedDataset:
    out = tmp_path / "prepared"
    assert data.main([*args, "--out", str(out)]) == 0
    return data.load_prepared(out)


@pytest.mark.parametrize("fmt", ["cifar10", "cifar100"])
def test_cifar_python_tarball(tmp_path, fmt):
    src = write_cifar(tmp_path / "c.tar.gz", fmt, n_train=50 if fmt == "cifar10" else 200, n_test=10)
    ds = prepare(tmp_path, "--name", fmt, "--source", str(src), "--val-fraction", "0.2")
    n_train = 50 if fmt == "cifar10" else 200
    assert ds.train_x.dtype == np.uint8 and ds.train_x.shape[1:] == (3, 32, 32)
    assert len(ds.train_y) + len(ds.val_y) == n_train and len(ds.test_y) == 10
    assert ds.meta["num_classes"] == (10 if fmt == "cifar10" else 100)
    assert ds.meta["classes"][1] == ("c1" if fmt == "cifar10" else "f1")
    assert ds.meta["source_sha256"] == data.sha256_file(src)
    mean = ds.train_x.reshape(len(ds.train_x), 3, -1).transpose(1, 0, 2).reshape(3, -1).mean(1) / 255
    assert np.allclose(ds.meta["mean"], mean)


def test_mnist_idx(tmp_path):
    src = tmp_path / "mnist"
    src.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (src / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">IIII", 2051, n, 28, 28) + imgs.tobytes()))
        (src / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">II", 2049, n) + (np.arange(n) % 10).astype(np.uint8).tobytes()))
    ds = prepare(tmp_path, "--name", "fashion_mnist", "--source", str(src))
    assert ds.train_x.shape[1:] == (1, 28, 28) and len(ds.test_y) == 10
    assert ds.meta["classes"][9] == "Ankle boot"
    assert list(ds.test_y) == list(range(10))


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "dir"])
def test_imagefolder_archives_and_folders(tmp_path, kind):
    items = imagefolder_items()
    if kind == "tar.gz":
        src = tmp_path / "f.tar.gz"
        with tarfile.open(src, "w:gz") as tar:
            for name, blob in items.items():
                add_bytes(tar, name, blob)
    elif kind == "zip":
        src = tmp_path / "f.zip"
        with zipfile.ZipFile(src, "w") as zf:
            for name, blob in items.items():
                zf.writestr(name, blob)
    else:
        src = tmp_path / "f"
        for name, blob in items.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(blob)
    ds = prepare(tmp_path, "--name", "pets", "--format", "imagefolder", "--source", str(src),
                 "--val-fraction", "0.25")
    assert ds.meta["classes"] == ["cat", "dog"] and ds.train_x.shape[1:] == (3, 8, 8)
    assert ds.meta["counts"] == {"train": 6, "val": 2, "test": 4}
    # cats are red, dogs blue: the label mapping follows the folders
    x = np.concatenate([ds.train_x, ds.val_x])
    y = np.concatenate([ds.train_y, ds.val_y])
    assert (x[y == 0, 0].mean() > 150) and (x[y == 1, 2].mean() > 150)


def test_digits_split_is_seeded_stratified_and_disjoint(tmp_path):
    a = prepare(tmp_path / "a", "--name", "digits", "--split-seed", "0")
    b = prepare(tmp_path / "b", "--name", "digits", "--split-seed", "0")
    c = prepare(tmp_path / "c", "--name", "digits", "--split-seed", "1")
    assert np.array_equal(a.val_x, b.val_x) and not np.array_equal(a.val_x, c.val_x)
    assert sum(a.meta["counts"].values()) == 1797
    assert np.bincount(a.val_y).min() >= 13  # ~10% of each class (~180 per class)
    assert a.meta["counts"]["val"] == len(a.val_y) and a.train_x.max() == 255  # 16 -> 255 scaling


def test_missing_source_names_the_path_and_the_fix(tmp_path, capsys):
    assert data.main(["--name", "cifar10", "--source", str(tmp_path / "nope.tar.gz"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "nope.tar.gz") in err and "dvc add" in err and "--download" in err


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path):
    src = write_cifar(tmp_path / "c.tar.gz")
    with pytest.raises(DatasetError) as err:
        data.prepare("cifar10", "cifar10", source=src, sha256="0" * 64, out=tmp_path / "o")
    msg = str(err.value)
    assert str(src) in msg and "0" * 64 in msg and data.sha256_file(src) in msg


def test_truncated_archive(tmp_path):
    src = write_cifar(tmp_path / "c.tar.gz")
    blob = src.read_bytes()
    src.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt archive .*c.tar.gz"):
        data.prepare("cifar10", "cifar10", source=src, out=tmp_path / "o")


def test_corrupt_image_names_the_member(tmp_path):
    src = tmp_path / "f.tar.gz"
    items = imagefolder_items()
    items["root/train/dog/0003.jpg"] = b"\xff\xd8\xff not a jpeg"
    with tarfile.open(src, "w:gz") as tar:
        for name, blob in items.items():
            add_bytes(tar, name, blob)
    with pytest.raises(DatasetError, match="corrupt image 'root/train/dog/0003.jpg'"):
        data.prepare("pets", "imagefolder", source=src, out=tmp_path / "o")


@pytest.mark.parametrize("evil", ["/etc/evil.jpg", "root/../../evil.jpg"])
@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_path_traversal_members_are_refused(tmp_path, evil, kind):
    items = {**imagefolder_items(), evil: jpeg((0, 0, 0))}
    work = tmp_path / "work"
    work.mkdir()
    src = work / f"f.{kind}"
    if kind == "tar":
        with tarfile.open(src, "w") as tar:
            for name, blob in items.items():
                add_bytes(tar, name, blob)
    else:
        with zipfile.ZipFile(src, "w") as zf:
            for name, blob in items.items():
                zf.writestr(name, blob)
    before = set(tmp_path.rglob("*"))
    with pytest.raises(DatasetError, match="unsafe member"):
        data.prepare("pets", "imagefolder", source=src, out=work / "out")
    assert set(tmp_path.rglob("*")) == before and not Path("/etc/evil.jpg").exists()


def test_malicious_pickle_is_refused_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = write_cifar(tmp_path / "c.tar.gz", payload=pickle.dumps(Evil(), protocol=2))
    with pytest.raises(DatasetError, match="refused or corrupt pickle .*test_batch.*posix.system|os.system"):
        data.prepare("cifar10", "cifar10", source=src, out=tmp_path / "o")
    assert not marker.exists()


def test_load_prepared_missing_names_the_stage(tmp_path):
    with pytest.raises(DatasetError, match=r"dvc repro prepare@cifar10"):
        data.load_prepared(tmp_path / "cifar10")


# ---- the on-device loader --------------------------------------------------------------------


def loader(x, **kw):
    args = dict(batch_size=4, shuffle=True, seed=0, mean=[0.5], std=[0.25], augment=None)
    args.update(kw)
    return DeviceLoader(x, torch.arange(len(x)), **args)


def test_loader_without_augmentation_is_the_normalised_input():
    x = torch.randint(0, 256, (10, 1, 6, 6), dtype=torch.uint8)
    batches = list(loader(x, shuffle=False))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    got = torch.cat([b[0] for b in batches])
    assert torch.allclose(got, (x.float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_loader_shuffle_is_deterministic_per_seed_and_epoch():
    x = torch.randint(0, 256, (32, 1, 4, 4), dtype=torch.uint8)
    order = lambda l, e: (l.set_epoch(e), torch.cat([y for _, y in l]).tolist())[1]
    a, b, c = loader(x), loader(x), loader(x, seed=1)
    assert order(a, 1) == order(b, 1) and order(a, 1) != order(a, 2) and order(a, 1) != order(c, 1)
    assert sorted(order(a, 3)) == list(range(32))


def test_flip_and_zero_padded_crop():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1) + 1
    gen = torch.Generator().manual_seed(0)
    flipped = data.random_crop_flip(x, Augment(flip=True), gen)
    is_flip = [(f == x[0].flip(2)).all().item() for f in flipped]
    is_same = [(f == x[0]).all().item() for f in flipped]
    assert all(a or b for a, b in zip(is_flip, is_same)) and 10 < sum(is_flip) < 54
    cropped = data.random_crop_flip(x, Augment(crop_pad=2), gen)
    assert cropped.shape == x.shape
    # each crop is a window of the zero-padded image: its non-zero pixels are a contiguous shift
    padded = torch.nn.functional.pad(x[0, 0], (2, 2, 2, 2))
    windows = {tuple(padded[i:i + 4, j:j + 4].flatten().tolist()) for i in range(5) for j in range(5)}
    assert all(tuple(c[0].flatten().tolist()) in windows for c in cropped)
    assert any((c == 0).any() for c in cropped) and len({tuple(c.flatten().tolist()) for c in cropped}) > 5


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CIFAR_JPEG.exists(),
                    reason=f"the CIFAR-10 JPEG archive is not at {SHARED_CIFAR_JPEG} (only on dev machines)")
def test_real_cifar10_jpeg_archive(tmp_path):
    ds = prepare(tmp_path, "--name", "cifar10_jpeg", "--format", "imagefolder", "--source", str(SHARED_CIFAR_JPEG),
                 "--sha256", "b379c20532d0d7113e4257fb4fe37c05481e5a503319cd10c2de3889728c9e18")
    c = ds.meta["counts"]
    assert c["train"] + c["val"] == 50_000 and c["test"] == 10_000
    assert ds.meta["classes"] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                  "ship", "truck"]
    assert ds.train_x.shape[1:] == (3, 32, 32) and np.bincount(ds.test_y).tolist() == [1000] * 10
    # CIFAR-10 train-set channel means are about 0.49, 0.48, 0.45 (widely reproduced; JPEG shifts them slightly)
    assert np.allclose(ds.meta["mean"], [0.491, 0.482, 0.447], atol=0.01)
