"""Archives and folders read in place, never extracted: members listed (names and sizes) and streamed
one at a time under the size cap. Tars are read front to back once by a plain header reader for
regular files and directories (tarfile for anything else); a tar nested in a tar (ILSVRC2012's train
archive is a tar of 1,000 per-class tars) is read in place; data is skipped by seeking where the file
allows it, so listing an uncompressed tar reads its headers only."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from resnet_bench.data.sources import DatasetError, _check_size, _clean, _read_capped, check_member_name
from resnet_bench.inputs import open_regular, path_problem

_TAR_BLOCK = 512
# Leading bytes of the compressions tarfile reads ("r:*"): gzip (RFC 1952), bzip2, xz.
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "lzma"))


def _corrupt(where, err) -> DatasetError:
    return DatasetError(f"truncated or corrupt archive {where}: {_clean(err)}")


def open_decompressed(path: Path):
    """The tar's bytes, decompressed, behind a 1 MiB buffer (seekable when not compressed). tarfile's
    own stream mode reads a gzip in 10 KiB records and is 2x slower on the CIFAR-10 JPEG archive
    (4.5 s vs 2.1 s per pass)."""
    import bz2
    import lzma

    raw = open_regular(path)  # a FIFO or device is refused, not read
    head = raw.read(6)
    raw.seek(0)
    opener = next((mod for magic, mod in _COMPRESSED if head.startswith(magic)), None)
    if opener:
        raw = {"gzip": gzip.open, "bz2": bz2.open, "lzma": lzma.open}[opener](raw, "rb")
    return io.BufferedReader(raw, 1 << 20) if opener else raw


class _NotPlainTar(Exception):
    """A tar header the plain reader leaves to tarfile: links, devices, pax or GNU extensions,
    base-256 numbers, a bad checksum, a truncation."""


class _Counted:
    """A file read forwards with its position counted; `skip_to` seeks when the file can."""

    def __init__(self, f):
        self.f, self.pos = f, 0
        try:
            self.can_seek = bool(f.seekable())
        except (AttributeError, OSError, ValueError):
            self.can_seek = False

    def read(self, n: int) -> bytes:
        blob = self.f.read(n)
        self.pos += len(blob)
        return blob

    def skip_to(self, target: int) -> None:
        if self.can_seek:
            self.f.seek(target - self.pos, io.SEEK_CUR)  # past the end: the next read is short
            self.pos = target
            return
        while self.pos < target:
            if not self.read(min(target - self.pos, 1 << 20)):
                raise _NotPlainTar  # truncated


class _Window(io.RawIOBase):
    """The data of one member as a file: reads stop at its end; seekable when the archive is."""

    def __init__(self, outer: _Counted, start: int, size: int):
        super().__init__()
        self.outer, self.start, self.end = outer, start, start + size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.outer.can_seek

    def tell(self) -> int:
        return self.outer.pos - self.start

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: self.start, io.SEEK_CUR: self.outer.pos, io.SEEK_END: self.end}[whence]
        target = min(max(base + offset, self.start), self.end)
        if target < self.outer.pos:
            if not self.outer.can_seek:
                raise OSError("cannot seek backwards in a compressed archive")
            self.outer.f.seek(target - self.outer.pos, io.SEEK_CUR)
            self.outer.pos = target
        else:
            self.outer.skip_to(target)
        return target - self.start

    def read(self, n: int = -1) -> bytes:
        left = self.end - self.outer.pos
        return self.outer.read(left if n is None or n < 0 else min(n, left))

    def readinto(self, b) -> int:
        blob = self.read(len(b))
        b[:len(blob)] = blob
        return len(blob)


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


def _plain_tar(c: _Counted) -> Iterator[tuple[str, str, int, int]]:
    """(name, "file" | "dir", size, data offset) of a tar holding only regular files and directories,
    named exactly as tarfile.TarInfo.frombuf names them; the caller reads a member's data through
    `c` (at most `size` bytes from the offset) and this skips the rest. Anything else (links,
    devices, pax or GNU extensions, base-256 numbers, a bad checksum, an empty or truncated archive)
    raises _NotPlainTar and the caller hands the archive to tarfile, which handles or refuses it.
    Why: tarfile spends about 50 us per header in pure Python, 3 s of the CIFAR-10 JPEG archive's
    60,000 members per pass; this reads a header in a few microseconds."""
    first = True
    while True:
        header = c.read(_TAR_BLOCK)
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
            if size > 1 << 16 or _pax_keys(c.read(-(-size // _TAR_BLOCK) * _TAR_BLOCK)[:size]) - {"comment"}:
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
        start = c.pos
        # tarfile skips data only after regular members (TarInfo._proc_builtin).
        yield name, ("dir" if is_dir else "file"), (0 if is_dir else size), start
        if c.pos > start + size:
            raise _NotPlainTar  # read past the member: cannot happen through _Window / _read_member
        c.skip_to(start + (0 if is_dir else -(-size // _TAR_BLOCK) * _TAR_BLOCK))


Entry4 = tuple[str, str, int, "bytes | None"]


def _read_member(c: _Counted, start: int, size: int) -> bytes:
    blob = c.read(size)
    if len(blob) < size:
        raise _NotPlainTar  # truncated
    return blob


def _walk(c: _Counted, where: str, cap: int, wanted, inner, prefix: str, done: list[int]) -> Iterator[Entry4]:
    """Members of the tar read through `c`; a file `inner(name)` accepts is itself walked as a tar,
    its members named '<name>/<member>'. `done[0]` counts the members yielded (for the fallback)."""
    for name, kind, size, start in _plain_tar(c):
        check_member_name(name, where)
        full = prefix + name
        if kind == "file" and inner is not None and inner(name):
            yield from _inner_tar(c, start, size, f"{where}:{name}", cap, wanted, full + "/")
        else:
            if kind == "file":
                _check_size(full, size, where, cap)
            blob = _read_member(c, start, size) if kind == "file" and wanted is not None and wanted(full) else None
            yield full, kind, size, blob
        done[0] += 1


def _inner_tar(c: _Counted, start: int, size: int, where: str, cap: int, wanted, prefix: str) -> Iterator[Entry4]:
    """A tar stored as a member: the plain reader over its window, tarfile over it from the start
    when the plain reader gives up (possible only where the outer archive can seek back)."""
    window = _Window(c, start, size)
    done = [0]
    try:
        yield from _walk(_Counted(window), where, cap, wanted, None, prefix, done)
        return
    except _NotPlainTar:
        pass
    if not c.can_seek:
        raise DatasetError(f"nested tar {where} uses tar features (links, pax or GNU headers) that are read only "
                           "from an uncompressed outer archive; recompress it without them")
    window.seek(0)
    yield from _tarfile_walk(window, where, cap, wanted, prefix, skip=done[0])


def _tarfile_walk(fileobj, where: str, cap: int, wanted, prefix: str, skip: int) -> Iterator[Entry4]:
    """tarfile's stream reader: regular files and directories; links refused; the first `skip`
    members (already yielded by the plain reader, same order) left out."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for i, member in enumerate(tar):
                check_member_name(member.name, where)
                if member.issym() or member.islnk():
                    raise DatasetError(f"unsafe member {member.name!r} in {where}: links refused")
                if i >= skip:
                    full = prefix + member.name
                    if member.isdir():
                        yield full, "dir", 0, None
                    elif member.isfile():
                        _check_size(full, member.size, where, cap)
                        blob = None
                        if wanted is not None and wanted(full):
                            blob = tar.extractfile(member).read(cap + 1)
                            _check_size(full, len(blob), where, cap)
                        yield full, "file", member.size, blob
                tar.members = []  # TarFile keeps every TarInfo otherwise: memory grows with members
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise _corrupt(where, err) from None


def tar_entries(path: Path, cap: int, wanted: Callable[[str], bool] | None = None,
                inner: Callable[[str], bool] | None = None) -> Iterator[Entry4]:
    """(name, kind, size, bytes or None) of every file and directory of a tar, front to back: the plain
    reader first, tarfile from where it gave up. Bytes only for files `wanted` accepts. A member whose
    name `inner` accepts is a tar read in place: its members come as '<member>/<name>' instead."""
    done = [0]
    try:
        with open_decompressed(path) as f:
            yield from _walk(_Counted(f), str(path), cap, wanted, inner, "", done)
            return
    except _NotPlainTar:
        pass
    except (OSError, EOFError, zlib.error) as err:
        raise _corrupt(path, err) from None
    try:
        f = open_decompressed(path)
    except OSError as err:
        raise _corrupt(path, err) from None
    with f:
        if inner is None:
            yield from _tarfile_walk(f, str(path), cap, wanted, "", skip=done[0])
            return
        yield from _tarfile_nested(f, path, cap, wanted, inner, skip=done[0])


def _tarfile_nested(f, path: Path, cap: int, wanted, inner, skip: int) -> Iterator[Entry4]:
    """tarfile over an outer archive whose plain read failed, its inner tars read by the plain reader."""
    try:
        with tarfile.open(fileobj=f, mode="r|") as tar:
            for i, member in enumerate(tar):
                check_member_name(member.name, path)
                if member.issym() or member.islnk():
                    raise DatasetError(f"unsafe member {member.name!r} in {path}: links refused")
                if i >= skip and member.isfile() and inner(member.name):
                    sub = _Counted(tar.extractfile(member))
                    sub.can_seek = False
                    yield from _inner_tar(sub, 0, member.size, f"{path}:{member.name}", cap, wanted,
                                          member.name + "/")
                elif i >= skip and (member.isdir() or member.isfile()):
                    size = 0 if member.isdir() else member.size
                    if member.isfile():
                        _check_size(member.name, size, path, cap)
                    blob = None
                    if member.isfile() and wanted is not None and wanted(member.name):
                        blob = tar.extractfile(member).read(cap + 1)
                    yield member.name, "dir" if member.isdir() else "file", size, blob
                tar.members = []
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise _corrupt(path, err) from None


# ---- any source: a folder, a zip or a tar -------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One raw member: its name inside the source, kind ('file' | 'dir') and size in bytes."""

    name: str
    kind: str
    size: int


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


def list_entries(path: Path, kind: str, cap: int, inner: Callable[[str], bool] | None = None) -> Iterator[Entry]:
    """Every member of a folder or archive, without reading file contents; sizes checked against `cap`.
    `inner` (tars only): members that are tars themselves, listed as '<member>/<name>'."""
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
        for name, entry_kind, size, _ in tar_entries(path, cap, inner=inner):
            yield Entry(name, entry_kind, size)


def read_members(path: Path, kind: str, cap: int, wanted=None,
                 inner: Callable[[str], bool] | None = None) -> Iterator[tuple[str, bytes]]:
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
        for name, entry_kind, _, blob in tar_entries(path, cap, wanted, inner=inner):
            if blob is not None:
                yield name, blob
