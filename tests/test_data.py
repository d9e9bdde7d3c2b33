"""Datasets: every real format written small and read back; hostile and broken input refused."""

import gzip
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_bench.data import artifact, sources
from resnet_bench.data import prepare as prep
from resnet_bench.data.sources import DatasetError

SHARED_CIFAR_JPEG = Path(os.environ.get("RESNET_BENCH_SHARED_DATASETS",
                                        Path(__file__).resolve().parents[2] / "shared" / "datasets")) \
    / "cifar10-jpeg.tar.gz"


def add_bytes(tar: tarfile.TarFile, name: str, blob: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))


def write_cifar(path: Path, fmt="cifar10", n_train=20, n_test=10, payload=None, batch1=None, meta=None):
    """A tarball with the official member names and dict keys, tiny batches (payload/batch1/meta: raw
    pickled bytes replacing test_batch / data_batch_1 / batches.meta)."""
    rng = np.random.default_rng(0)
    k = 10 if fmt == "cifar10" else 100
    top, label_key = ("cifar-10-batches-py", b"labels") if fmt == "cifar10" else ("cifar-100-python", b"fine_labels")

    def batch(n):
        return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                label_key: [int(i % k) for i in range(n)], b"batch_label": b"x"}

    with tarfile.open(path, "w:gz") as tar:
        if fmt == "cifar10":
            for i in range(1, 6):
                blob = batch1 if (i == 1 and batch1) else pickle.dumps(batch(n_train // 5), protocol=2)
                add_bytes(tar, f"{top}/data_batch_{i}", blob)
            add_bytes(tar, f"{top}/test_batch", payload or pickle.dumps(batch(n_test), protocol=2))
            add_bytes(tar, f"{top}/batches.meta",
                      meta or pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(k)]}, protocol=2))
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


def prepare(tmp_path, *args) -> artifact.PreparedDataset:
    out = tmp_path / "prepared"
    assert prep.main([*args, "--out", str(out)]) == 0
    return artifact.load_prepared(out)


@pytest.mark.parametrize("fmt", ["cifar10", "cifar100"])
def test_cifar_python_tarball(tmp_path, fmt):
    src = write_cifar(tmp_path / "c.tar.gz", fmt, n_train=50 if fmt == "cifar10" else 200, n_test=10)
    ds = prepare(tmp_path, "--name", fmt, "--source", str(src), "--val-fraction", "0.2")
    n_train = 50 if fmt == "cifar10" else 200
    assert ds.train_x.dtype == np.uint8 and ds.train_x.shape[1:] == (3, 32, 32)
    assert len(ds.train_y) + len(ds.val_y) == n_train and len(ds.test_y) == 10
    assert ds.meta["num_classes"] == (10 if fmt == "cifar10" else 100)
    assert ds.meta["classes"][1] == ("c1" if fmt == "cifar10" else "f1")
    assert ds.meta["source_sha256"] == sources.sha256_file(src)
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
    assert prep.main(["--name", "cifar10", "--source", str(tmp_path / "nope.tar.gz"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "nope.tar.gz") in err and "dvc add" in err and "--download" in err


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path):
    src = write_cifar(tmp_path / "c.tar.gz")
    with pytest.raises(DatasetError) as err:
        prep.prepare("cifar10", "cifar10", source=src, sha256="0" * 64, out=tmp_path / "o")
    msg = str(err.value)
    assert str(src) in msg and "0" * 64 in msg and sources.sha256_file(src) in msg


def test_truncated_archive(tmp_path):
    src = write_cifar(tmp_path / "c.tar.gz")
    blob = src.read_bytes()
    src.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt archive .*c.tar.gz"):
        prep.prepare("cifar10", "cifar10", source=src, out=tmp_path / "o")


def test_corrupt_image_names_the_member(tmp_path):
    src = tmp_path / "f.tar.gz"
    items = imagefolder_items()
    items["root/train/dog/0003.jpg"] = b"\xff\xd8\xff not a jpeg"
    with tarfile.open(src, "w:gz") as tar:
        for name, blob in items.items():
            add_bytes(tar, name, blob)
    with pytest.raises(DatasetError, match="corrupt image 'root/train/dog/0003.jpg'"):
        prep.prepare("pets", "imagefolder", source=src, out=tmp_path / "o")


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
        prep.prepare("pets", "imagefolder", source=src, out=work / "out")
    assert set(tmp_path.rglob("*")) == before and not Path("/etc/evil.jpg").exists()


def test_malicious_pickle_is_refused_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = write_cifar(tmp_path / "c.tar.gz", payload=pickle.dumps(Evil(), protocol=2))
    with pytest.raises(DatasetError, match="refused or corrupt pickle .*test_batch.*posix.system|os.system"):
        prep.prepare("cifar10", "cifar10", source=src, out=tmp_path / "o")
    assert not marker.exists()


def test_load_prepared_missing_names_the_stage(tmp_path):
    with pytest.raises(DatasetError, match=r"dvc repro prepare@cifar10"):
        artifact.load_prepared(tmp_path / "cifar10")


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


# ---- image folders: layout, formats, sizes -----------------------------------------------------------


def write_source(path: Path, items: dict, dirs=()) -> Path:
    """items (member name -> bytes) as a .tar.gz, .zip or folder, by `path`'s suffix; `dirs`: extra
    directory members (an empty class folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".tar.gz"):
        with tarfile.open(path, "w:gz") as tar:
            for d in dirs:
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            for name, blob in items.items():
                add_bytes(tar, name, blob)
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, blob in items.items():
                zf.writestr(name, blob)
    else:
        for d in dirs:
            (path / d).mkdir(parents=True, exist_ok=True)
        for name, blob in items.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(blob)
    return path


def encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def corrupt_scan(blob: bytes) -> bytes:
    """A JPEG whose entropy-coded data has 40 zeroed bytes mid-scan: Pillow decodes it without a word."""
    b = bytearray(blob)
    sos = b.index(b"\xff\xda")
    mid = (sos + len(b)) // 2
    b[mid:mid + 40] = bytes(40)
    return bytes(b)


def noisy_jpeg(seed=0, size=16) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "JPEG")


POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n"


def _idx(tmp_path, images_blob: bytes) -> Path:
    src = tmp_path / "mnist"
    src.mkdir()
    (src / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(images_blob))
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (src / name).write_bytes(gzip.compress(struct.pack(">II", 2049, 1) + b"\0"))
    (src / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">IIII", 2051, 1, 2, 2) + bytes(4)))
    return src


def _cifar_batch(n_img, labels):
    return pickle.dumps({b"data": np.zeros((n_img, 3072), np.uint8), b"labels": labels}, protocol=2)


# name -> (build(tmp_path) -> argv without --out (or with it), fragment the one error line must hold)
BAD_INPUTS = {
    "out names the folder holding the source": (
        lambda t: ["--name", "pets", "--format", "imagefolder", "--out", str(t / "data"), "--source",
                   str(write_source(t / "data" / "raw" / "p.tar.gz", imagefolder_items()))], "contains the source"),
    "out is the working directory": (
        lambda t: ["--name", "digits", "--out", "."], "is the working"),
    "out is a foreign non-empty folder": (
        lambda t: ((t / "mine").mkdir(), (t / "mine" / "notes.txt").write_text("keep me"),
                   ["--name", "digits", "--out", str(t / "mine")])[-1], "not empty and not a prepared artifact"),
    "PostScript named .jpg": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--source", str(write_source(
            t / "p.tar.gz", {**imagefolder_items(), "root/train/cat/evil.jpg": POSTSCRIPT}))],
        "'root/train/cat/evil.jpg'", "its first bytes b'%!PS-Ado' are none of JPEG, PNG"),
    "PostScript named .png": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--source", str(write_source(
            t / "p.zip", {**imagefolder_items(), "root/train/cat/evil.png": POSTSCRIPT}))], "none of JPEG, PNG"),
    "PNG signature, broken body": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--source", str(write_source(
            t / "p.zip", {**imagefolder_items(), "root/train/cat/x.jpg": b"\x89PNG\r\n\x1a\n" + bytes(40)}))],
        "not a valid PNG file (its first bytes say PNG)"),
    "JPEG with corrupted scan data": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--source", str(write_source(
            t / "p", {**imagefolder_items(), "root/test/dog/bad.jpg": corrupt_scan(noisy_jpeg())}))],
        "Corrupt JPEG data"),
    "CIFAR test_batch with 20 images and 19 labels": (
        lambda t: ["--name", "cifar10", "--source", str(write_cifar(
            t / "c.tar.gz", payload=_cifar_batch(20, [i % 10 for i in range(19)])))], "20 images but 19 labels"),
    "CIFAR data batch count mismatch": (
        lambda t: ["--name", "cifar10", "--source", str(write_cifar(
            t / "c.tar.gz", batch1=_cifar_batch(4, [1, 2, 3])))], "data_batch_1"),
    "CIFAR label 12 of 10 classes": (
        lambda t: ["--name", "cifar10", "--source", str(write_cifar(
            t / "c.tar.gz", payload=_cifar_batch(3, [0, 12, 1])))], "label 12"),
    "CIFAR label -1": (
        lambda t: ["--name", "cifar10", "--source", str(write_cifar(
            t / "c.tar.gz", payload=_cifar_batch(3, [0, 1, -1])))], "label -1"),
    "CIFAR meta without label names": (
        lambda t: ["--name", "cifar10", "--source", str(write_cifar(
            t / "c.tar.gz", meta=pickle.dumps({b"num_cases_per_batch": 10000}, protocol=2)))], "label_names"),
    "empty class folder": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--source", str(write_source(
            t / "p.tar.gz", imagefolder_items(), dirs=["root/train/bird/"]))], "empty class folder train/bird"),
    "image nested below its class folder": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--source", str(write_source(
            t / "p.zip", {**imagefolder_items(), "root/train/cat/more/x.jpg": jpeg((1, 2, 3))}))],
        "nested below its class folder"),
    "duplicate archive member": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--source", str(write_source(
            t / "p.zip", {**imagefolder_items(), "./root/train/cat/0000.jpg": jpeg((0, 0, 0))}))],
        "duplicate member"),
    "varied sizes without image_size": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--source", str(write_source(
            t / "p", {**imagefolder_items(), "root/train/cat/big.jpg": jpeg((1, 2, 3), size=12)}))],
        "set image_size"),
    "member over the size cap": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--max-member-mb", "0.001", "--source", str(
            write_source(t / "p.tar.gz", {**imagefolder_items(), "root/train/cat/n.jpg": noisy_jpeg(1, 64)}))],
        "over the 1,048-byte cap"),
    "PNG over the pixel limit": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--source", str(write_source(
            t / "p.tar.gz", {**imagefolder_items(), "root/train/cat/bomb.png": encode(
                np.zeros((9000, 10000), bool), "PNG")}))], "over the 89,478,485-pixel limit"),
    "10-byte IDX header": (
        lambda t: ["--name", "mnist", "--source", str(_idx(t, struct.pack(">IIH", 2051, 5, 3)))],
        "IDX header truncated"),
    "IDX dims overflow": (
        lambda t: ["--name", "mnist", "--source", str(_idx(t, struct.pack(">IIII", 2051, 2**32 - 1, 2**32 - 1,
                                                                           2**32 - 1) + bytes(16)))],
        "header says 4294967295 x"),
    "non-archive source": (
        lambda t: ((t / "notes.txt").write_text("hello\n"),
                   ["--name", "p", "--format", "imagefolder", "--source", str(t / "notes.txt")])[-1],
        "is not a folder, a tar archive"),
    "image_size for a non-image format": (
        lambda t: ["--name", "digits", "--image-size", "16"], "apply only to the image formats"),
    "eval crop larger than the eval resize": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--image-size", "16", "--eval-resize", "12",
                   "--eval-crop", "14", "--source", str(write_source(t / "p", imagefolder_items()))],
        "eval_crop 14 is larger than the evaluation resize 12"),
    "max_aspect below 1": (
        lambda t: ["--name", "p", "--format", "imagefolder", "--image-size", "16", "--max-aspect", "0.5",
                   "--source", str(write_source(t / "p", imagefolder_items()))], "--max-aspect", "0.5"),
}
# Refused by the schema's limits on the flags (exit 2, a usage error), before any source is opened.
FLAG_CASES = ("image_size for a non-image format", "eval crop larger than the eval resize", "max_aspect below 1")


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_ends_in_one_error_line(tmp_path, monkeypatch, capsys, case):
    build, *fragments = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    argv = build(tmp_path)
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "prepared" / "x")]
    before = {p: p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()}
    assert prep.main(argv) == (2 if case in FLAG_CASES else 1)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(f in lines[0] for f in fragments), err
    assert "<_io." not in err and "Traceback" not in err
    # nothing the user had is gone or changed, and no partial artifact is left
    assert {p: p.stat().st_size for p in before if p.exists()} == before
    assert not [p for p in tmp_path.rglob(".*.tmp*")]


def test_cli_refuses_out_dot_in_a_real_process(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "resnet_bench.data.prepare", "--name", "digits", "--out", "."],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and f"--out {tmp_path} is the working" in proc.stderr
    assert (tmp_path / "keep.txt").exists()


def test_val_folder_is_the_validation_split(tmp_path):
    items = imagefolder_items()
    items.update({f"root/val/{c}/v{i}.jpg": jpeg(col) for c, col in (("cat", (200, 10, 10)),
                                                                      ("dog", (10, 10, 200))) for i in range(3)})
    ds = prepare(tmp_path, "--name", "p", "--format", "imagefolder", "--source",
                 str(write_source(tmp_path / "s.tar.gz", items)), "--val-fraction", "0.25")
    assert ds.meta["counts"] == {"train": 8, "val": 6, "test": 4}  # val/ whole, nothing held out of train
    assert ds.meta["split"]["validation"] == "val/ folder" and ds.meta["split"]["test"] == "test/ folder"
    assert sorted(ds.val_y.tolist()) == [0, 0, 0, 1, 1, 1]


def test_train_and_val_only_is_imagenette_layout(tmp_path):
    items = {k.replace("/test/", "/val/"): v for k, v in imagefolder_items().items()}
    ds = prepare(tmp_path, "--name", "p", "--format", "imagefolder", "--source",
                 str(write_source(tmp_path / "s", items)), "--val-fraction", "0.25")
    assert ds.meta["counts"] == {"train": 6, "val": 2, "test": 4}
    assert ds.meta["split"]["test"] == "val/ folder" and ds.meta["split"]["validation"] == "held out of train"


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    items = {f"r/{s}/a/{i}.png": encode(np.full((4, 4), v, np.uint16), "PNG")
             for s in ("train", "test") for i, v in enumerate((1000, 65535, 0))}
    ds = prepare(tmp_path, "--name", "p", "--format", "imagefolder", "--source",
                 str(write_source(tmp_path / "s", items)), "--val-fraction", "0")
    # round(v * 255 / 65535): 1000 -> 4 (clipping gave 255), 65535 -> 255, 0 -> 0
    assert sorted(ds.test_x[:, 0, 0, 0].tolist()) == [0, 4, 255]


def test_resize_keeps_aspect_ratio_by_centre_crop(tmp_path):
    def bands(h, w, horizontal):  # three equal bands red | green | blue along the long side
        a = np.zeros((h, w, 3), np.uint8)
        for i, ch in enumerate((0, 1, 2)):
            sl = (slice(None), slice(i * w // 3, (i + 1) * w // 3)) if horizontal else \
                (slice(i * h // 3, (i + 1) * h // 3), slice(None))
            a[sl + (ch,)] = 255
        return a

    items = {"d/train/a/wide.png": encode(bands(24, 72, True), "PNG"),
             "d/train/a/tall.png": encode(bands(90, 30, False), "PNG"),
             "d/test/a/square.png": encode(np.full((40, 40, 3), 7, np.uint8), "PNG")}
    ds = prepare(tmp_path, "--name", "p", "--format", "imagefolder", "--source",
                 str(write_source(tmp_path / "s.tar.gz", items)), "--image-size", "12", "--val-fraction", "0")
    assert ds.train_x.shape == (2, 3, 12, 12) and ds.test_x.shape == (1, 3, 12, 12)
    # Only the centre (green) band survives; the centre 8 x 8 is clear of the bilinear filter's reach
    # into the neighbouring bands. Squashing to 12 x 12 would put red and blue there too.
    centre = ds.train_x[:, :, 2:10, 2:10]
    assert (centre[:, 1] == 255).all() and (centre[:, [0, 2]] == 0).all()
    assert ds.meta["resize"]["train"] == {"policy": "shorter_side_aspect_capped", "size": 12, "max_aspect": 1.0,
                                          "slot": [12, 12], "portrait": "stored transposed",
                                          "extents": "train_extents.npy"}
    assert ds.meta["resize"]["eval"] == {"policy": "resize_center_crop", "resize": 12, "crop": 12}
    assert ds.train_extents.tolist() == [[12, 12, 0], [12, 12, 0]]


def many_images(n=120, classes=3):
    return {f"r/{s}/c{i % classes}/{i:05d}.jpg": noisy_jpeg(i, 16) for s in ("train", "test") for i in range(n)}


def test_parallel_decode_is_byte_identical_to_serial(tmp_path):
    src = write_source(tmp_path / "s.tar.gz", many_images())
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        assert prep.main(["--name", "p", "--format", "imagefolder", "--source", str(src), "--out", str(out),
                          "--workers", workers]) == 0
        outs.append(out)
    assert sorted(p.name for p in outs[0].iterdir()) == sorted(p.name for p in outs[1].iterdir())
    for f in sorted(p.name for p in outs[0].iterdir()):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    ds = artifact.load_prepared(outs[0])
    assert isinstance(ds.train_x, np.memmap) and ds.train_x.shape == (108, 3, 16, 16)  # 120 - 10% val
    # stats equal the two-pass float computation on the written train split
    x = np.asarray(ds.train_x, np.float64) / 255
    assert np.allclose(ds.meta["mean"], x.mean((0, 2, 3)), atol=1e-12)
    assert np.allclose(ds.meta["std"], x.std((0, 2, 3)), atol=1e-12)


def test_content_sha256_tracks_everything_training_sees(tmp_path):
    src = write_source(tmp_path / "s", many_images(40))
    base = ["--name", "p", "--format", "imagefolder", "--source", str(src)]
    variants = {"base": [], "same": [], "seed": ["--split-seed", "1"], "fraction": ["--val-fraction", "0.2"],
                "size": ["--image-size", "8"]}
    h = {}
    for k, extra in variants.items():
        ds = prepare(tmp_path / k, *base, *extra)
        h[k] = ds.meta["content_sha256"]
        assert h[k] == artifact.content_sha256(tmp_path / k / "prepared", ds.meta)  # documented recipe
    assert h["base"] == h["same"] and len(set(h.values())) == 4
    (src / "r/train/c0/00000.jpg").write_bytes(noisy_jpeg(999, 16))  # a different raw file
    assert prepare(tmp_path / "raw", *base).meta["content_sha256"] != h["base"]


def test_out_replaces_only_a_previous_artifact(tmp_path):
    out = tmp_path / "prepared"
    prepare(tmp_path, "--name", "digits")
    first = (out / "meta.json").read_text()
    prepare(tmp_path, "--name", "digits", "--split-seed", "3")
    assert json.loads((out / "meta.json").read_text())["split"]["seed"] == 3 and first != (out / "meta.json").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{k}.npy" for k in artifact.ARRAY_KEYS), "meta.json"])


def test_killed_run_leaves_nothing_after_the_next_start(tmp_path):
    src = write_source(tmp_path / "s.tar.gz", many_images(3000, 10))
    out = tmp_path / "data" / "prepared" / "p"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "resnet_bench.data.prepare", "--name", "p", "--format", "imagefolder",
           "--source", str(src), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    leftovers = []
    while proc.poll() is None and not leftovers:
        leftovers = list(out.parent.glob(".p.tmp*")) if out.parent.exists() else []
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert leftovers and leftovers[0].exists(), "the run ended before its temp folder was seen"
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["p"]  # DVC hashes data/prepared as a whole
    assert artifact.load_prepared(out).meta["counts"]["test"] == 3000


@pytest.mark.slow
def test_dvc_repro_prepares_from_params_and_a_loader_edit_leaves_prepare_up_to_date(tmp_path):
    """The real `dvc repro` in a temp git repo: params.yaml alone sets the image folder and its store policy;
    editing the loader or the augmentation leaves every prepare stage up to date (they are not its deps),
    editing the store code does not."""
    import yaml

    from conftest import make_project, venv_env

    project = make_project(tmp_path / "p")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):  # Imagenette's layout: train/ and val/
        for cls in ("tench", "church"):
            for i in range(n):
                h, w = (int(v) for v in rng.integers(10, 40, 2))  # every image its own size and aspect
                f = project / "data" / "raw" / "nette" / split / cls / f"{i}.jpg"
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "JPEG"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["prepare"]["files"] = {"nette": {"format": "imagefolder", "source": "data/raw/nette", "sha256": "",
                                            "image_size": 16, "max_aspect": 1.5, "eval_resize": 16, "eval_crop": 14}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = venv_env()
    run = lambda *cmd: subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    for cmd in (("git", "init", "-q"), ("dvc", "init", "-q"), ("dvc", "config", "core.analytics", "false")):
        assert run(*cmd).returncode == 0
    proc = run("dvc", "repro", "prepare_file@nette")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ds = artifact.load_prepared(project / "data" / "prepared" / "nette")
    assert ds.train_x.shape[1:] == (3, 16, 24) and ds.test_x.shape[1:] == (3, 14, 14)
    assert ds.meta["counts"]["test"] == 4 and ds.meta["resize"]["eval"]["crop"] == 14
    status = lambda: json.loads(run("dvc", "status", "prepare_file@nette", "--json").stdout)  # noqa: E731
    assert status() == {}
    for module in ("loader.py", "augment.py"):  # a training-side edit: code that runs, not a comment
        with open(project / "resnet_bench" / "data" / module, "a") as f:
            f.write("\nLOADER_EDIT = 1\n")
    assert status() == {}  # "Data and pipelines are up to date."
    with open(project / "resnet_bench" / "data" / "images.py", "a") as f:
        f.write("\nSTORE_EDIT = 1\n")
    assert status()["prepare_file@nette"][0]["changed deps"] == {"resnet_bench/data/images.py": "modified"}
    first = ds.meta["content_sha256"]
    params["prepare"]["files"]["nette"]["eval_crop"] = 12
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run("dvc", "repro", "prepare_file@nette")
    assert proc.returncode == 0 and "Running stage 'prepare_file@nette'" in proc.stdout, proc.stdout + proc.stderr
    ds = artifact.load_prepared(project / "data" / "prepared" / "nette")
    assert ds.test_x.shape[1:] == (3, 12, 12) and ds.meta["content_sha256"] != first
    assert sorted(p.name for p in (project / "data" / "prepared").iterdir()) == ["nette"]
