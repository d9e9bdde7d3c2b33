"""Datasets: read raw files safely, write one canonical prepared artifact, feed it to the device.

The `prepare` stage (`main(argv)`) turns a dataset into `data/prepared/<name>/`
(see docs/ARCHITECTURE.md): uint8 images N x C x H x W, int64 labels, class
names, per-channel mean/std of the train split, source SHA-256, counts and a
`content_sha256` of what training sees, with a seeded, stratified validation
split held out of train (or an image folder's own `val/`). Raw files are read
in place (tar/zip members are streamed, never extracted, each under a size
cap), pickles go through an allow-list, images are decoded only in the format
their suffix declares, and every bad input raises one `DatasetError` naming
the file (or archive member) and what was expected.

Image folders are prepared in bounded memory: a first pass lists the members
(names and sizes only), a second streams them to worker processes that decode,
resize and write each image straight into its row of the output `.npy` file
(`os.pwrite`), and return integer per-channel sums for mean/std. Rows are
fixed by the first pass, so the output is byte-identical for any worker count.

The output folder is written as `.<name>.tmp<pid>` beside it, fsynced, then
renamed into place; `--out` must be absent, empty or a previous artifact.

Training reads the artifact with `load_prepared` (memory-mapped) and batches
it with `DeviceLoader`: a split that fits its memory budget sits on the device
as uint8; a larger one stays memory-mapped and each batch is gathered on the
host and moved to the device.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import multiprocessing
import os
import pickle
import re
import shutil
import struct
import sys
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np
from resnet_bench.argparsing import Parser

FORMATS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder")
# File suffix -> the only Pillow format an image-folder member may be decoded as. A file is never
# handed to a decoder it does not declare (a PostScript file named .jpg would otherwise reach
# Ghostscript through Pillow's EPS plugin).
IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF",
                 ".webp": "WEBP", ".ppm": "PPM", ".tif": "TIFF", ".tiff": "TIFF"}
SPLIT_DIRS = ("train", "val", "test")
ARRAY_KEYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
ARTIFACT_FILES = frozenset([*(f"{k}.npy" for k in ARRAY_KEYS), "meta.json"])
# meta.json keys that affect training, hashed (with the arrays) into content_sha256.
CONTENT_META_KEYS = ("classes", "num_classes", "channels", "height", "width", "mean", "std", "counts",
                     "split", "resize", "format", "source_sha256")
CONTENT_HASH_VERSION = "resnet-bench content v1"

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
# Largest raw member read into memory. The largest member of any supported release is CIFAR-100's
# `train` pickle (50,000 x 3,072 bytes + labels, about 155 MB), so 256 MiB admits every official file
# and refuses a 1 GiB member before it is read. `--max-member-mb` changes it.
DEFAULT_MAX_MEMBER_MB = 256
# Largest image, in pixels, decoded: Pillow's own decompression-bomb threshold
# (PIL.Image.MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3 = 89,478,485 px, where Pillow only warns);
# here it is an error. Each worker holds at most one decoded image at a time.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
# Images sent to a worker per task: large enough to amortise the pickling of a task (~ms),
# small enough that 2 tasks per worker in flight hold little memory (256 x ~1-100 KB).
CHUNK_IMAGES = 256
RESIZE_POLICY = "shorter_side_center_crop"


class DatasetError(ValueError):
    """A dataset file that is missing, corrupt, tampered with or unsafe."""


def available_formats() -> list[str]:
    return list(FORMATS)


def _clean(msg: str) -> str:
    """One line, without the `<_io.BytesIO object at 0x...>` reprs that library errors carry."""
    msg = re.sub(r"<_io\.\w+ object at 0x[0-9a-fA-F]+>", "the data", str(msg))
    return " ".join(msg.split())


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
    if not name.startswith(("/", "\\")) and ".." not in name and ":" not in name:
        return  # fast path for the common, plainly safe name (called once per member)
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DatasetError(f"unsafe member {name!r} in {archive}: absolute path or '..' refused")


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


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_artifact(tmp: Path, out: Path) -> None:
    """fsync every file and the folder, then swap `tmp` in for `out`: a kill leaves one whole artifact."""
    for f in tmp.iterdir():
        _fsync_path(f)
    _fsync_path(tmp)
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    _fsync_path(out.parent)
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
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error) as err:
        raise DatasetError(f"refused or corrupt pickle {where}: {_clean(err)}") from None


# ---- raw members: streamed, capped -----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One raw member: its name inside the source, kind ('file' | 'dir') and size in bytes."""

    name: str
    kind: str
    size: int


def _corrupt(path: Path, err) -> DatasetError:
    return DatasetError(f"truncated or corrupt archive {path}: {_clean(err)}")


def source_kind(path: Path) -> str:
    """'dir', 'zip' or 'tar'; a DatasetError for anything else (one line)."""
    if path.is_dir():
        return "dir"
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, EOFError, zlib.error) as err:
        raise _corrupt(path, err) from None
    raise DatasetError(f"{path} is not a folder, a tar archive (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) "
                       "or a .zip archive")


def _check_size(name: str, size: int, path: Path, cap: int) -> None:
    if size > cap:
        raise DatasetError(f"member {name!r} in {path} is {size:,} bytes, over the {cap:,}-byte cap "
                           "(--max-member-mb)")


def _read_capped(f, name: str, path: Path, cap: int) -> bytes:
    blob = f.read(cap + 1)  # never more than the cap, whatever the header claims
    _check_size(name, len(blob), path, cap)
    return blob


# Leading bytes of the compressions tarfile reads ("r:*"): gzip (RFC 1952), bzip2, xz.
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "lzma"))


def _open_decompressed(path: Path):
    """The tar's bytes, decompressed, behind a 1 MiB buffer. tarfile's own stream mode reads a
    gzip in 10 KiB records and is 2x slower on the CIFAR-10 JPEG archive (4.5 s vs 2.1 s per pass)."""
    import bz2
    import lzma

    with open(path, "rb") as f:
        head = f.read(6)
    opener = next((mod for magic, mod in _COMPRESSED if head.startswith(magic)), None)
    raw = {"gzip": gzip.open, "bz2": bz2.open, "lzma": lzma.open}[opener](path, "rb") if opener else open(path, "rb")
    return io.BufferedReader(raw, 1 << 20) if opener else raw


def _tar_stream(path: Path):
    """Members of a tar (any compression), read front to back once; names and link types checked."""
    try:
        with _open_decompressed(path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                check_member_name(member.name, path)
                if member.issym() or member.islnk():
                    raise DatasetError(f"unsafe member {member.name!r} in {path}: links refused")
                yield tar, member
                tar.members = []  # TarFile keeps every TarInfo otherwise: memory grows with members
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise _corrupt(path, err) from None


class _NotPlainTar(Exception):
    """A tar header the plain reader leaves to tarfile: links, devices, pax or GNU extensions,
    base-256 numbers, a bad checksum, a truncation."""


_TAR_BLOCK = 512
_POSIX_MAGIC = b"ustar\x00"  # POSIX.1-1988 ustar (tarfile.POSIX_MAGIC); GNU writes "ustar  \0"


def _tar_number(field: bytes) -> int:
    """An octal header number as tarfile's nti reads it (up to the first NUL); else _NotPlainTar."""
    if field[:1] and field[0] & 0x80:
        raise _NotPlainTar  # GNU base-256
    try:
        return int(field.split(b"\x00", 1)[0].decode("ascii").strip() or "0", 8)
    except (UnicodeDecodeError, ValueError):
        raise _NotPlainTar from None


def _pax_keys(records: bytes) -> set[str]:
    """Keys of pax records ("%d %s=%s\\n" each, POSIX.1-2001); _NotPlainTar if malformed."""
    keys, pos = set(), 0
    while pos < len(records):
        space = records.find(b" ", pos)
        try:
            length = int(records[pos:space])
        except ValueError:
            raise _NotPlainTar from None
        record = records[pos:pos + length]
        if space < 0 or length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise _NotPlainTar
        keys.add(record[space - pos + 1:record.index(b"=")].decode("utf-8", "replace"))
        pos += length
    return keys


def _tar_text(field: bytes) -> str:
    return field.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")  # tarfile's nts


def _plain_tar(f) -> Iterator[tuple[str, str, int, Callable[[int], bytes]]]:
    """(name, "file" | "dir", size, read) of a tar holding only regular files and directories,
    named exactly as tarfile.TarInfo.frombuf names them. Anything else (links, devices, pax or
    GNU extensions, base-256 numbers, a bad checksum, an empty or truncated archive) raises
    _NotPlainTar and the caller hands the archive to tarfile, which handles or refuses it.
    Why: tarfile spends about 50 us per header in pure Python, 3 s of the CIFAR-10 JPEG
    archive's 60,000 members per pass; this reads a header in a few microseconds."""
    first = True
    while True:
        header = f.read(_TAR_BLOCK)
        if len(header) < _TAR_BLOCK or (header == b"\x00" * _TAR_BLOCK and first):
            if header or first:
                raise _NotPlainTar  # truncated, or empty: tarfile's error message
            return
        if header == b"\x00" * _TAR_BLOCK:
            return  # end-of-archive marker
        first = False
        if _tar_number(header[148:156]) != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise _NotPlainTar
        typeflag = header[156:157]
        size = _tar_number(header[124:136])
        if typeflag == b"g":
            # A pax global header: tarfile applies it only through later per-file pax headers
            # (which this reader leaves to tarfile). `git archive` writes one with a comment.
            if size > 1 << 16 or _pax_keys(f.read(-(-size // _TAR_BLOCK) * _TAR_BLOCK)[:size]) - {"comment"}:
                raise _NotPlainTar
            continue
        if typeflag not in (b"0", b"\x00", b"7", b"5"):
            raise _NotPlainTar
        name, prefix = _tar_text(header[:100]), _tar_text(header[345:500])
        is_dir = typeflag == b"5" or (typeflag == b"\x00" and name.endswith("/"))
        if is_dir:
            name = name.rstrip("/")
        if prefix:
            name = prefix + "/" + name
        # tarfile skips data only after regular members (TarInfo._proc_builtin).
        left = 0 if is_dir else -(-size // _TAR_BLOCK) * _TAR_BLOCK
        state = {"left": left}

        def read(n: int, _state=state, _size=size) -> bytes:
            want = min(n, _size)
            blob = f.read(want)
            if len(blob) < want:
                raise _NotPlainTar
            _state["left"] -= len(blob)
            return blob

        yield name, ("dir" if is_dir else "file"), (0 if is_dir else size), read
        while state["left"] > 0:  # skip what the caller did not read, and the padding
            chunk = f.read(min(state["left"], 1 << 20))
            if not chunk:
                raise _NotPlainTar
            state["left"] -= len(chunk)


def _tar_entries(path: Path, cap: int, wanted=None) -> Iterator[tuple[str, str, int, bytes | None]]:
    """(name, kind, size, bytes or None) of every file and directory of a tar, front to back:
    the plain reader first, tarfile from where it gave up. Bytes only for files `wanted` accepts."""
    done = 0
    try:
        with _open_decompressed(path) as f:
            for name, kind, size, read in _plain_tar(f):
                check_member_name(name, path)
                if kind == "file":
                    _check_size(name, size, path, cap)
                blob = read(cap + 1) if kind == "file" and wanted is not None and wanted(name) else None
                yield name, kind, size, blob
                done += 1
            return
    except _NotPlainTar:
        pass
    except (OSError, EOFError, zlib.error) as err:
        raise _corrupt(path, err) from None
    for i, (tar, member) in enumerate(_tar_stream(path)):
        if i < done:
            continue  # already yielded by the plain reader (same members, same order)
        if member.isdir():
            yield member.name, "dir", 0, None
        elif member.isfile():
            _check_size(member.name, member.size, path, cap)
            blob = None
            if wanted is not None and wanted(member.name):
                try:
                    blob = _read_capped(tar.extractfile(member), member.name, path, cap)
                except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
                    raise _corrupt(path, err) from None
            yield member.name, "file", member.size, blob


def list_entries(path: Path, kind: str, cap: int) -> Iterator[Entry]:
    """Every member of a folder or archive, without reading file contents; sizes checked against `cap`."""
    if kind == "dir":
        for root, dirs, files in os.walk(path):
            dirs.sort()
            rel = Path(root).relative_to(path)
            for d in dirs:
                yield Entry((rel / d).as_posix(), "dir", 0)
            for f in sorted(files):
                size = (Path(root) / f).stat().st_size
                _check_size((rel / f).as_posix(), size, path, cap)
                yield Entry((rel / f).as_posix(), "file", size)
    elif kind == "zip":
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    check_member_name(info.filename, path)
                    if not info.is_dir():
                        _check_size(info.filename, info.file_size, path, cap)
                    yield Entry(info.filename, "dir" if info.is_dir() else "file", info.file_size)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            raise _corrupt(path, err) from None
    else:
        for name, entry_kind, size, _ in _tar_entries(path, cap):
            yield Entry(name, entry_kind, size)


def read_members(path: Path, kind: str, cap: int, wanted=None) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files `wanted(name)` accepts, in source order, one in memory at a time."""
    wanted = wanted or (lambda name: True)
    if kind == "dir":
        for e in list_entries(path, kind, cap):
            if e.kind == "file" and wanted(e.name):
                with open(path / e.name, "rb") as f:
                    yield e.name, _read_capped(f, e.name, path, cap)
    elif kind == "zip":
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    check_member_name(info.filename, path)
                    if not info.is_dir() and wanted(info.filename):
                        with zf.open(info) as f:
                            yield info.filename, _read_capped(f, info.filename, path, cap)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            raise _corrupt(path, err) from None
    else:
        for name, entry_kind, _, blob in _tar_entries(path, cap, wanted):
            if blob is not None:
                yield name, blob


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
        with gzip.open(path, "rb") as f:
            raw = f.read(cap + 1)
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
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


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


def stats_from_sums(count_px: int, s1: list[int], s2: list[int]) -> tuple[list[float], list[float]]:
    """Per-channel mean and population std on the 0..1 scale from exact integer sums over uint8 pixels."""
    if count_px == 0:
        raise DatasetError("the train split is empty: no mean/std (lower val_fraction or add images)")
    mean = [a / count_px / 255.0 for a in s1]
    # n * sum(x^2) - sum(x)^2 is exact in Python ints: no cancellation error.
    std = [math.sqrt(max(count_px * b - a * a, 0)) / count_px / 255.0 for a, b in zip(s1, s2)]
    return mean, std


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
        val_rows = stratified_indices(labels["train"], val_fraction, split_seed)
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


def channel_sums(x: np.ndarray, rows: int = 4096) -> tuple[int, list[int], list[int]]:
    """(pixels per channel, per-channel sum, sum of squares) of uint8 N x C x H x W, exact, in row blocks."""
    c = x.shape[1]
    s1, s2 = [0] * c, [0] * c
    for i in range(0, len(x), rows):
        blk = x[i:i + rows].transpose(1, 0, 2, 3).reshape(c, -1).astype(np.int64)  # C x (rows*H*W)
        s1 = [a + int(v) for a, v in zip(s1, blk.sum(1))]
        s2 = [a + int(v) for a, v in zip(s2, (blk * blk).sum(1))]
    return len(x) * x.shape[2] * x.shape[3], s1, s2


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale of a uint8 N x C x H x W array."""
    return stats_from_sums(*channel_sums(x))


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
        "split": {"val_fraction": val_fraction, "seed": split_seed, "stratified": True,
                  "validation": "held out of train", "test": "official test split"},
    }
    return arrays, meta


def content_sha256(path: Path, meta: dict, block: int = 1 << 22) -> str:
    """SHA-256 of what training sees, independent of file layout, paths and machine:

    "resnet-bench content v1\n", then for each of train_x, train_y, val_x, val_y, test_x, test_y:
    "<key> <little-endian dtype, e.g. |u1 or <i8> [<shape>]\n" and its C-order little-endian bytes;
    then the canonical JSON (sorted keys, no spaces) of meta's CONTENT_META_KEYS.

    The .npy files are read with plain reads in 4 MiB blocks, not memory-mapped: mapped pages would
    count in this process's RSS and grow it with the artifact.
    """
    h = hashlib.sha256(CONTENT_HASH_VERSION.encode() + b"\n")
    for key in ARRAY_KEYS:
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
    return PreparedDataset(**arrays, meta=meta)


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


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def prepare(name: str, fmt: str, *, source=None, sha256=None, download_data=False, out: Path,
            val_fraction=0.1, split_seed=0, image_size=None, workers: int | None = None,
            max_member_mb: float = DEFAULT_MAX_MEMBER_MB) -> dict:
    """Read a raw dataset and write its prepared artifact; returns the artifact's meta.

    Every check that needs no decoding (format, options, --out, source, checksum) runs first.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"--val-fraction: {val_fraction} is invalid: must be in [0, 1)")
    image_size = int(image_size) if image_size else None
    if image_size is not None and (image_size < 1 or fmt != "imagefolder"):
        raise DatasetError(f"image_size {image_size} is invalid for format {fmt!r}: a positive size applies "
                           "only to imagefolder (0 = keep the images' own size)")
    cap = int(max_member_mb * 2**20)
    if cap < 1:
        raise DatasetError(f"--max-member-mb must be positive, got {max_member_mb}")
    src_path = None
    if fmt != "digits":
        if download_data and (source is None or not Path(source).exists()):
            source = download(fmt, Path(source or Path("data") / "raw"))
        src_path = require_source(source, fmt)
    check_out_dir(out, src_path)
    clean_leftovers(out)
    digest = verify_sha256(src_path, sha256) if src_path else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if fmt == "imagefolder":
            meta = write_imagefolder(src_path, tmp, image_size=image_size, val_fraction=val_fraction,
                                     split_seed=split_seed, workers=workers or default_workers(), cap=cap)
        else:
            if fmt == "digits":
                raw = read_digits(split_seed)
            elif fmt in CIFAR_FILES:
                raw = read_cifar(src_path, fmt, cap)
            else:
                raw = read_mnist(src_path, fmt, cap)
            arrays, meta = build_artifact(*raw, val_fraction=val_fraction, split_seed=split_seed)
            _write_arrays(tmp, arrays)
            del arrays, raw
        resize = ({"policy": RESIZE_POLICY, "size": image_size, "filter": "bilinear (Pillow, antialiased)"}
                  if image_size else None)
        meta.update({"name": name, "format": fmt, "source": str(source) if src_path else
                     "sklearn.datasets.load_digits", "source_sha256": digest, "image_size": image_size,
                     "resize": resize, "decoders": _decoder_versions()})
        if fmt == "digits":
            meta["split"]["test"] = {"fraction": DIGITS_TEST_FRACTION, "seed": split_seed + 1_000_003,
                                     "stratified": True}
        meta["content_sha256"] = content_sha256(tmp, meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        commit_artifact(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


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


# ---- batches on the device ------------------------------------------------------------------------
# torch is imported inside these functions: `prepare` (and its worker processes) never needs it.


@dataclass(frozen=True)
class Augment:
    """Batch augmentation. He et al. 2016 Sec. 4.1 (after Lee et al. 2015): 4 px zero padding,
    a random 32x32 crop and a random horizontal flip."""

    crop_pad: int = 0
    flip: bool = False

    @classmethod
    def from_dict(cls, d: dict | None) -> "Augment | None":
        return cls(**d) if d else None


def crop_windows(padded, index, pad: int, gen):
    """Images `index` of a zero-padded stack, each cropped at its own random offset: one gather.

    padded: N x C x (H+2p) x (W+2p). `unfold` views it as N x C x (2p+1) x (2p+1) x H x W
    (every window, no copy); indexing (image, dy, dx) per row copies out B x C x H x W.
    """
    import torch

    _, _, hp, wp = padded.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    b = len(index)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(padded.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(padded.device)
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    return windows[index, :, dy, dx]


def random_flip(x, gen):
    """Mirror a random half of the batch left-right (x: B x C x H x W)."""
    import torch

    m = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    x = x.clone()
    x[m] = x[m].flip(3)
    return x


def random_crop_flip(x, aug: Augment, gen):
    """Zero-pad by `crop_pad` and crop back to H x W at a random offset per image, then flip half."""
    import torch

    if aug.crop_pad:
        p = aug.crop_pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))  # zeros, as in the paper
        x = crop_windows(padded, torch.arange(len(x), device=x.device), p, gen)
    if aug.flip:
        x = random_flip(x, gen)
    return x


def default_resident_bytes(device) -> int:
    """Half the memory free on `device` now: CUDA's free memory, or the host's available memory."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    import psutil

    return psutil.virtual_memory().available // 2


class DeviceLoader:
    """Batches of one split: shuffled by a seeded generator, augmented and normalised on `device`.

    A split whose (padded) uint8 bytes fit `max_resident_bytes` is copied to the device once and
    batches are gathered there. A larger one stays where it is (an np.memmap from `load_prepared`, so
    on disk and in the page cache): each batch's rows are gathered on the host (pinned for CUDA),
    moved to the device and padded there. Both modes draw the same random numbers in the same order,
    so they yield identical batches.

    Deterministic: epoch e of seed s always yields the same batches (`set_epoch`).
    """

    def __init__(self, x_uint8, y, *, batch_size: int, shuffle: bool, seed: int, mean, std,
                 augment: Augment | None = None, device="cpu", drop_last: bool = False,
                 max_resident_bytes: int | None = None):
        import torch

        x = torch.from_numpy(x_uint8) if isinstance(x_uint8, np.ndarray) else x_uint8
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"expected uint8 N x C x H x W images, got {x.dtype} {tuple(x.shape)}")
        self.device = torch.device(device)
        self.augment = augment if augment and (augment.crop_pad or augment.flip) else None
        self.pad = p = self.augment.crop_pad if self.augment else 0
        n, c, h, w = x.shape
        padded_bytes = n * c * (h + 2 * p) * (w + 2 * p)
        budget = default_resident_bytes(self.device) if max_resident_bytes is None else max_resident_bytes
        self.resident = padded_bytes <= budget
        if self.resident:
            # Zero-padded once for the whole split (uint8, on the device), not once per batch.
            x = x.to(self.device)
            self.x = torch.nn.functional.pad(x, (p, p, p, p)) if p else x
        else:
            self.x = x  # stays on the host (memory-mapped): only each batch's rows are read
        self.y = torch.as_tensor(np.asarray(y) if isinstance(y, np.ndarray) else y).to(self.device, torch.int64)
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

    def _generator(self):
        import torch

        # CPU generator on every device: the same stream on CPU and GPU for a (seed, epoch).
        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        return gen

    def _host_batch(self, idx_cpu):
        """B x C x (H+2p) x (W+2p) uint8 on the device: rows gathered from the host split, then padded."""
        import torch

        xb = self.x.index_select(0, idx_cpu)  # reads only these rows' pages of a memory map
        if self.device.type == "cuda":
            xb = xb.pin_memory().to(self.device, non_blocking=True)
        else:
            xb = xb.to(self.device)
        p = self.pad
        return torch.nn.functional.pad(xb, (p, p, p, p)) if p else xb

    def __iter__(self):
        import torch

        gen = self._generator()
        n = len(self.y)
        order_cpu = torch.randperm(n, generator=gen) if self.shuffle else None
        order = order_cpu.to(self.device) if order_cpu is not None and self.resident else order_cpu
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min(n, (i + 1) * self.batch_size)
            if self.resident:
                idx = order[lo:hi] if order is not None else torch.arange(lo, hi, device=self.device)
                src, rows = self.x, idx
            else:
                idx_cpu = order_cpu[lo:hi] if order_cpu is not None else torch.arange(lo, hi)
                src = self._host_batch(idx_cpu)
                rows = torch.arange(hi - lo, device=self.device)
                idx = idx_cpu.to(self.device)
            x = crop_windows(src, rows, self.pad, gen) if self.pad else (src[rows] if self.resident else src)
            if self.augment and self.augment.flip:
                x = random_flip(x, gen)
            # In place on the fresh float copy: one allocation per batch.
            yield x.float().mul_(self.scale).add_(self.shift), self.y[idx]


# ---- entry point ----------------------------------------------------------------------------------


def parse_args(argv):
    p = Parser(prog="resnet-bench prepare", description="Prepare one dataset artifact.")
    p.add_argument("--name", required=True, help="artifact name, e.g. digits, cifar10_jpeg")
    p.add_argument("--format", choices=FORMATS, help="defaults to --name when that is a format")
    p.add_argument("--source", help="file or folder with the raw data")
    p.add_argument("--sha256", default="", help="expected SHA-256 of the source file (empty: no check)")
    p.add_argument("--download", action="store_true", help="fetch the official files (needs internet)")
    p.add_argument("--out", required=True, help="artifact folder, e.g. data/prepared/digits; must be absent, "
                   "empty or a previous artifact")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=0,
                   help="imagefolder: shorter side to N, then centre crop N x N (0: keep the images' size)")
    p.add_argument("--workers", type=int, default=0,
                   help="decode processes (0: one per available core); the output does not depend on it")
    p.add_argument("--max-member-mb", type=float, default=DEFAULT_MAX_MEMBER_MB,
                   help=f"largest raw file or archive member read, MiB (default {DEFAULT_MAX_MEMBER_MB})")
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
                       split_seed=args.split_seed, image_size=args.image_size, workers=args.workers or None,
                       max_member_mb=args.max_member_mb)
    except DatasetError as err:
        print(f"error: {_clean(err)}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, permission denied: name the file, no traceback
        print(f"error: {_clean(err.strerror or err)}: {err.filename or args.out}", file=sys.stderr)
        return 1
    c = meta["counts"]
    print(f"prepared {args.name} ({fmt}): {c['train']} train / {c['val']} val / {c['test']} test, "
          f"{meta['channels']}x{meta['height']}x{meta['width']}, {meta['num_classes']} classes -> {args.out} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
