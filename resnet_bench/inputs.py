"""Files the suite reads: hostile until checked (result files pulled from a remote, tables copied back
from a cluster, configuration written by hand).

Every reader of a result file, a table or a configuration file opens it through here:

- only a regular file is read: a folder, a FIFO, a device (`/dev/zero`) or a socket is refused before
  a byte is read, so it can neither hang the reader nor fill its memory (the file is opened
  non-blocking, then checked with `fstat` on the open descriptor: no race with a swap);
- at most `max_bytes` are read, whatever the file's size claims;
- text must be UTF-8; JSON must be one document, with no duplicate keys (JSON, like YAML, would keep
  the last one silently) and no deeper than `MAX_JSON_DEPTH` levels (a 200,000-deep list is refused,
  not a RecursionError).

Each problem is an `InputError`: one line naming the file. Imports nothing of the package and
nothing heavy (collect and report depend on it).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

# A cell record with 10,000 epochs (MAX_EPOCHS) is about 4 MB; an expected_cells.json of 10,000
# cells about 20 MB. Anything bigger is not a file this suite wrote.
MAX_JSON_BYTES = 64 * 2**20
MAX_TEXT_BYTES = 8 * 2**20  # YAML and CSV headers
MAX_TABLE_BYTES = 1 * 2**30  # cells/epochs parquet and CSV (100k cells x 100 epochs is ~1 GB of CSV)
# The deepest JSON the suite writes is 5 levels (record -> attempts -> [i] -> node -> key).
MAX_JSON_DEPTH = 64

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


NAME_MAX_BYTES = 255  # longest file name of ext4, xfs, btrfs, tmpfs


class InputError(ValueError):
    """A file that cannot be read as what it should be: one line naming it."""


def user_path(text: str | os.PathLike, flag: str) -> Path:
    """A path from a flag or a config value, the one way for every path: `~` and `~user` expanded (the
    shell expands `--out ~/x` but not `--out=~/x`; both mean the same here), made absolute, symlinks
    resolved. Refused: an empty path, a NUL byte, a name longer than a file system allows."""
    raw = os.fspath(text)
    if not raw.strip():
        raise InputError(f"{flag}: empty path")
    if "\0" in raw:
        raise InputError(f"{flag}: {raw!r} contains a NUL byte")
    try:
        raw.encode("utf-8")  # a path from bytes that are not UTF-8 holds lone surrogates
    except UnicodeEncodeError:
        raise InputError(f"{flag}: {raw!r} is not UTF-8 text; give the path in UTF-8") from None
    expanded = os.path.expanduser(raw)
    if expanded.startswith("~"):
        raise InputError(f"{flag}: {raw!r}: no such user's home folder to expand {expanded.split('/')[0]!r} in")
    long = [part for part in Path(expanded).parts if len(part.encode()) > NAME_MAX_BYTES]
    if long:
        raise InputError(f"{flag}: a name in {raw[:80]!r}... is {len(long[0].encode())} bytes long; at most "
                         f"{NAME_MAX_BYTES} fit a file system")
    return Path(expanded).resolve()


def file_kind(mode: int) -> str:
    """'a FIFO', 'a character device', ... for an st_mode; 'a regular file' for one."""
    return next((name for test, name in _KINDS if test(mode)), "a regular file" if stat.S_ISREG(mode)
                else "a special file")


_kind = file_kind


class NotRegularFileError(OSError):
    """A path that exists but is not a regular file; `str()` is one line naming it and its kind."""

    def __init__(self, path, kind: str):
        super().__init__(errno.EINVAL, f"is {kind}, not a regular file", str(path))
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def open_regular(path: str | Path, mode: str = "rb", encoding: str | None = None):
    """`path` opened for reading, or NotRegularFileError; never blocks, never reads a device.

    A path a user gives may be a FIFO (opening it for reading blocks until some writer comes), a
    character device (`/dev/zero` never ends), a socket, or a symlink to one of those: the file is
    opened with O_NONBLOCK (a FIFO then opens at once) and checked with fstat on the open
    descriptor, not on the path (a path swapped after a check is still caught), before one byte is
    read; only then is the descriptor made blocking again. FileNotFoundError / PermissionError as
    `open` raises them. For streaming readers (archives); whole files: `read_bytes`, `read_text`.
    """
    if mode not in ("r", "rb"):
        raise ValueError(f"open_regular reads only (mode 'r' or 'rb'), not {mode!r}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(path, file_kind(st.st_mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None)
    except BaseException:
        os.close(fd)
        raise


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


def check_regular(path: str | Path) -> Path:
    """`path` if it names a regular file (symlinks followed), else an InputError saying what it is."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{p}: not found") from None
    except OSError as err:
        raise InputError(f"{p}: cannot read ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: is {_kind(st.st_mode)}, not a regular file")
    return p


def _open_regular(p: Path):
    """`open_regular(p)`, its errors as one-line InputErrors."""
    try:
        return open_regular(p)
    except NotRegularFileError as err:
        raise InputError(str(err)) from None
    except FileNotFoundError:
        raise InputError(f"{p}: not found") from None
    except OSError as err:
        raise InputError(f"{p}: cannot read ({err.strerror})") from None


def read_bytes(path: str | Path, *, max_bytes: int) -> bytes:
    """The whole file, which must be a regular file of at most `max_bytes`."""
    p = Path(path)
    with _open_regular(p) as f:
        try:
            # read(n) allocates n bytes before reading: ask for the file's size (plus one, to see growth),
            # not the cap (a 1 GiB cap would reserve 1 GiB for a 2 KiB meta.json)
            data = f.read(min(max_bytes, os.fstat(f.fileno()).st_size) + 1)
            while len(data) <= max_bytes:  # grew since fstat: the rest in 1 MiB steps, still capped
                more = f.read(min(1 << 20, max_bytes - len(data) + 1))
                if not more:
                    break
                data += more
        except OSError as err:
            raise InputError(f"{p}: cannot read ({err.strerror})") from None
    if len(data) > max_bytes:
        raise InputError(f"{p}: larger than {max_bytes / 2**20:g} MiB; not a file this suite wrote")
    return data


def read_head(path: str | Path, n: int) -> bytes:
    """The first `n` bytes of a regular file (a marker line, a CSV header)."""
    with _open_regular(Path(path)) as f:
        return f.read(n)


def read_text(path: str | Path, *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    data = read_bytes(path, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def json_depth(doc: Any) -> int:
    """Nesting depth of a decoded JSON document (a scalar is 0), without recursion."""
    deepest, todo = 0, [(doc, 0)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict):
            todo += [(v, depth + 1) for v in node.values()]
        elif isinstance(node, list):
            todo += [(v, depth + 1) for v in node]
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_JSON_DEPTH:
            break
    return deepest


def parse_json(text: str, where: str) -> Any:
    """One JSON document (NaN/Infinity tokens allowed: records write a diverged loss that way)."""
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except ValueError as err:  # a duplicate key
        raise InputError(f"{where}: not valid JSON ({err}; which one is meant?)") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if json_depth(doc) > MAX_JSON_DEPTH:
        raise InputError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file: regular, at most `max_bytes`, UTF-8, one document without duplicate keys, bounded depth."""
    return parse_json(read_text(path, max_bytes=max_bytes), str(path))
