"""Raw sources, read safely: checksums, archive members streamed (never extracted) under a size
cap, member names checked, pickles through an allow-list. Every bad input raises one
`DatasetError` naming the file (or archive member) and what was expected."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np

from resnet_bench.inputs import open_regular, path_problem


class DatasetError(ValueError):
    """A dataset file that is missing, corrupt, tampered with or unsafe."""



def _clean(msg: str) -> str:
    """One line, without the `<_io.BytesIO object at 0x...>` reprs that library errors carry."""
    msg = re.sub(r"<_io\.\w+ object at 0x[0-9a-fA-F]+>", "the data", str(msg))
    return " ".join(msg.split())


# ---- verification -----------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open_regular(path) as f:
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
    problem = path_problem(path, folder_ok=True)  # a FIFO or device is refused before it is opened
    if problem:
        raise DatasetError(f"source {problem}")
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

    raw = open_regular(path)
    head = raw.read(6)
    raw.seek(0)
    opener = next((mod for magic, mod in _COMPRESSED if head.startswith(magic)), None)
    if opener:
        raw = {"gzip": gzip.open, "bz2": bz2.open, "lzma": lzma.open}[opener](raw, "rb")
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
                problem = path_problem(Path(root) / f)  # a FIFO inside the folder would block its reader
                if problem:
                    raise DatasetError(f"member {(rel / f).as_posix()!r} of {path}: {problem.split(': ', 1)[1]}")
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
                with open_regular(path / e.name) as f:
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
