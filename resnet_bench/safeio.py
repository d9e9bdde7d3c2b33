"""Files as the suite reads and writes them: only regular files are read, and a full disk is
named. Shared by every stage; imports nothing of the package.

A path a user gives may be a FIFO (opening it for reading blocks until some writer comes), a
character device (`/dev/zero` never ends, `/dev/random` neither), a socket, or a symlink to any
of those. So a file is opened with O_NONBLOCK (opening a FIFO then returns at once) and checked
with fstat on the open descriptor, not on the path (a path swapped after a check is still
caught), before one byte is read; only then is the descriptor made blocking again.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotRegularFileError(OSError):
    """A path that exists but is not a regular file; `str()` is one line naming it and its kind."""

    def __init__(self, path, kind: str):
        super().__init__(errno.EINVAL, f"is {kind}, not a regular file", str(path))
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def file_kind(mode: int) -> str:
    """'a FIFO', 'a character device', ... for an st_mode; 'a regular file' for one."""
    return next((name for test, name in _KINDS if test(mode)), "a regular file" if stat.S_ISREG(mode)
                else "a special file")


def open_regular(path: str | Path, mode: str = "rb", encoding: str | None = None):
    """`path` opened for reading, or NotRegularFileError (never blocks, never reads a device).

    FileNotFoundError / PermissionError as `open` raises them.
    """
    if mode not in ("r", "rb"):
        raise ValueError(f"open_regular reads only (mode 'r' or 'rb'), not {mode!r}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(path, file_kind(st.st_mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None)
    except BaseException:
        os.close(fd)
        raise


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    with open_regular(path, "r", encoding=encoding) as f:
        return f.read()


def read_bytes(path: str | Path) -> bytes:
    with open_regular(path, "rb") as f:
        return f.read()


def path_problem(path: str | Path, *, folder_ok: bool = False) -> str | None:
    """None when `path` is a regular file (or, with folder_ok, a folder), symlinks followed;
    otherwise why not, one line: 'not found', 'is a FIFO, not a regular file', ..."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{path}: not found"
    except OSError as err:
        return f"{path}: {err.strerror}"
    if stat.S_ISREG(mode) or (folder_ok and stat.S_ISDIR(mode)):
        return None
    return f"{path}: is {file_kind(mode)}, not a regular file{' or a folder' if folder_ok else ''}"


# ---- a full disk, named -------------------------------------------------------------------------

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC / EDQUOT, also as the text of errors that lost the errno on the way (pyarrow's)."""
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        return True
    return any(s in str(err) for s in ("No space left on device", "Disk quota exceeded"))


def mount_of(path: str | Path) -> tuple[str, str]:
    """(mount point, file system type) of the disk holding `path` (or its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    p = p.resolve()
    best, fstype = "/", "?"
    try:
        with open("/proc/self/mounts") as f:  # Linux; elsewhere only the mount point is found
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                if (p == Path(point) or Path(point) in p.parents) and len(point) >= len(best):
                    best, fstype = point, fields[2]
    except OSError:
        while not os.path.ismount(p) and p != p.parent:
            p = p.parent
        best = str(p)
    return best, fstype


def disk_full_message(path: str | Path, what: str) -> str:
    """One line: which disk is full, how much is free, and what was being written where."""
    if "://" in str(path):  # object storage: no local disk to name
        return f"disk full: no space left writing {what} {path}"
    point, fstype = mount_of(path)
    try:
        st = os.statvfs(point)
        room = f", {st.f_bavail * st.f_frsize / 2**20:.1f} MiB free of {st.f_blocks * st.f_frsize / 2**20:.1f} MiB"
    except OSError:
        room = ""
    return (f"disk full: no space left on {point} ({fstype}{room}) writing {what} {path}; free space there "
            "or point the path at a larger disk")
