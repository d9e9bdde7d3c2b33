"""The output policy: what every command that writes may create, replace and delete.

One policy for every writer (`report --out`, `collect --out`, `compare --out`, `sweep --results`,
`prepare --out`, `train --out`, `bench --out`, `models --csv`, `config schema --out`), independent
of flag names (a writer passes its flag only for messages):

- **Paths, one way.** `~` and `~user` are expanded in every path flag (the shell expands `--out ~/x`
  but not `--out=~/x`; both mean the same here), then the path is made absolute. Empty paths, NUL
  bytes and a name longer than 255 bytes are refused.
- **Folder or file.** `OutputDir` is a folder a command fills (report, collect, compare, sweep;
  prepare's artifact folder keeps its own whole-folder swap, `resnet_bench.data.artifact`);
  `OutputFile` is one file (train, bench, models, config schema). A folder given where a file is
  meant is refused, and the other way round.
- **It owns only what it wrote.** A folder holds a manifest, `.resnet-bench-outputs.json`, listing
  the files each writer wrote there. A writer declares the exact names it writes (`layout`), the
  names another stage writes beside them (`siblings`, never touched) and names it writes but never
  deletes (`keep`, e.g. cell records). An existing folder is accepted only if everything in it is in
  the manifest or matches those names; anything else (a paper's `figures/fig1.pdf`, a user's
  notes) refuses the folder with one line naming the file, before any work. A file named exactly
  like one of the writer's outputs is taken for an earlier run's. When it finishes, a writer
  deletes its own earlier outputs that it did not write this time (a figure no longer drawn), and
  nothing else. A single output file is replaced only if it is absent or recognisably this
  writer's (its `ours` check reads the file's own marker: a JSON Schema title, a CSV header, ...).
- **Writable before the work.** `prepare()` writes and removes a probe file in the folder (and its
  subfolders), or, where they do not exist yet, in the nearest existing folder above them, so a
  read-only or missing-permission folder fails in seconds, not after training. Folders are
  created at the first write: a refused command leaves nothing behind.
- **Atomic.** Every file is written to a temporary file in the same folder, fsynced, renamed into
  place, and the folder fsynced: a reader sees the old file or the new one, never half of one.
  Temporary names, `.<name>.<pid>.<random>.resnet-bench.tmp`, are hidden and end in `.tmp`, so no
  output glob (`*.json`, `*.csv`, `*.png`) matches them; a writer removes those a dead process left.

Imports nothing of the package and nothing heavy (collect and report depend on it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from pathlib import Path
from typing import Callable, Iterable, Iterator

MANIFEST = ".resnet-bench-outputs.json"
MANIFEST_FORMAT = "resnet-bench outputs 1"
TMP_SUFFIX = ".resnet-bench.tmp"
_TMP_RE = re.compile(r"^\..*\.(\d+)\.[0-9a-f]{8}" + re.escape(TMP_SUFFIX) + r"$")


class OutputError(ValueError):
    """An output path that cannot or must not be written: one line naming it and what to do."""


# ---- paths -------------------------------------------------------------------------------------


def out_path(text: str | os.PathLike, flag: str) -> Path:
    """An output path from a flag value, read the one way every path flag is (`inputs.user_path`: `~`
    expanded, made absolute, symlinks resolved; empty, NUL and over-long names refused)."""
    from resnet_bench.inputs import InputError, user_path

    try:
        return user_path(text, flag)
    except InputError as err:
        raise OutputError(str(err)) from None


def tmp_path(path: Path) -> Path:
    """A temporary name beside `path` that no output glob matches (hidden, ends in .tmp)."""
    stem = path.name[:100]  # the temporary name must fit NAME_MAX_BYTES too
    return path.with_name(f".{stem}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_tmp(name: str) -> bool:
    return _TMP_RE.match(name) is not None


def clean_tmps(folder: Path) -> list[Path]:
    """Remove the temporary files a dead process left in `folder` (not its subfolders)."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _TMP_RE.match(entry.name)
            if m and entry.is_file(follow_symlinks=False) and not _pid_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; once the block wrote it, fsync it and rename it into place.

    For writers that need a file name (matplotlib's savefig, pandas' to_parquet). On an exception
    the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = tmp_path(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(path.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file in the same folder, fsync, rename, fsync folder)."""
    with atomic_file(path) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)


def probe_writable(folder: Path, flag: str) -> None:
    """Create and remove a file in `folder`: the only test of writability that holds for root and for
    read-only mounts alike (os.access says yes to root on a read-only bind mount)."""
    probe = tmp_path(folder / "probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{flag} {folder}: cannot write there ({err.strerror}); give a writable folder") from None


def check_can_create(folder: Path, flag: str) -> None:
    """`folder` is a writable folder, or can be made one: its nearest existing ancestor is a writable
    folder. Nothing is created (a refused command leaves no empty folder behind)."""
    p = Path(folder)
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise OutputError(f"{flag} {folder}: {p} is a file in the way of this folder; give another path")
    probe_writable(p, flag)


def make_dirs(folder: Path, flag: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{flag} {folder}: a file is in the way of this folder; give another path") from None
    except OSError as err:
        raise OutputError(f"{flag} {folder}: cannot create it ({err.strerror})") from None


def _refuse_special(root: Path, flag: str) -> None:
    if root == Path(root.anchor) or root == Path.home().resolve():
        raise OutputError(f"{flag} {root}: is the root or home folder; give a folder of its own")


# ---- spreadsheets ------------------------------------------------------------------------------

# A CSV cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
# (OWASP "CSV injection"): `=cmd|' /C calc'!A0`. Text cells that start so are written with a
# leading apostrophe, which spreadsheets show as text; `csv_unguard` takes it off again.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_guard(value):
    """A text value safe to open in a spreadsheet (non-text values are returned as they are)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def csv_unguard(value):
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


def guard_frame(df):
    """A copy of a pandas DataFrame whose text cells went through `csv_guard` (numbers untouched)."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or str(out[col].dtype) in ("str", "string"):
            out[col] = out[col].map(csv_guard)
    return out


# ---- a folder of outputs -----------------------------------------------------------------------


class OutputDir:
    """A folder that one writer fills; it owns only what it wrote (see the module docstring).

    Patterns are regular expressions over a file's path relative to the folder, `/`-separated,
    matched in full.
    """

    def __init__(self, path: str | os.PathLike, *, writer: str, flag: str, layout: Iterable[str] = (),
                 keep: Iterable[str] = (), siblings: Iterable[str] = (), subdirs: Iterable[str] = ()):
        self.flag, self.writer = flag, writer
        self.root = out_path(path, flag)
        self.layout = [re.compile(p) for p in layout]
        self.keep = [re.compile(p) for p in keep]
        self.siblings = [re.compile(p) for p in siblings]
        self.subdirs = list(subdirs)
        self.manifest: dict[str, str] = {}
        self.legacy = True
        self.written: set[str] = set()
        self.prepared = False

    # -- checks, before any work --

    def _read_manifest(self) -> dict[str, str]:
        path = self.root / MANIFEST
        if not path.exists() and not path.is_symlink():
            return {}
        from resnet_bench.inputs import InputError, read_json

        try:
            doc = read_json(path, max_bytes=16 * 2**20)
        except InputError as err:
            raise OutputError(f"{self.flag} {self.root}: unreadable manifest ({err}); remove {MANIFEST} "
                              "after checking what the folder holds") from None
        files = doc.get("files") if isinstance(doc, dict) and doc.get("format") == MANIFEST_FORMAT else None
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) and _safe_rel(k)
                                                  for k, v in files.items()):
            raise OutputError(f"{self.flag} {self.root}: {MANIFEST} is not a resnet-bench manifest; remove it "
                              "after checking what the folder holds")
        return files

    def _accepted(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return (rel == MANIFEST or is_tmp(name) or rel in self.manifest
                or any(p.fullmatch(rel) for p in (*self.keep, *self.siblings))
                or (self.legacy and any(p.fullmatch(rel) for p in self.layout)))

    def _save_manifest(self, files: dict[str, str]) -> None:
        doc = {"format": MANIFEST_FORMAT, "files": dict(sorted(files.items()))}
        atomic_write(self.root / MANIFEST, (json.dumps(doc, indent=1) + "\n").encode())

    def _entries(self) -> Iterator[str]:
        """Every non-folder entry below the root (symlinks included, not followed), relative, sorted."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            here = Path(dirpath)
            links = [d for d in dirnames if (here / d).is_symlink()]
            for name in sorted([*filenames, *links]):
                yield (here / name).relative_to(self.root).as_posix()

    def prepare(self) -> "OutputDir":
        """Refuse a folder that holds what this writer did not write; create it; prove it writable."""
        root = self.root
        _refuse_special(root, self.flag)
        if root.exists() or root.is_symlink():
            if not root.is_dir():
                raise OutputError(f"{self.flag} {root}: exists and is not a folder; give a folder path")
            self.manifest = self._read_manifest()
            # A folder this writer has no manifest entry in (an earlier version's, or new) is adopted by
            # its file names; once the writer has written here, only what the manifest lists is its own.
            self.legacy = self.writer not in self.manifest.values()
            for rel in self._entries():
                if not self._accepted(rel):
                    raise OutputError(
                        f"{self.flag} {root}: holds {rel}, which resnet-bench {self.writer} did not write; give "
                        "an empty or new folder (nothing there is deleted or overwritten)")
        for folder in [root, *(root / s for s in self.subdirs)]:
            if folder.is_dir():
                clean_tmps(folder)
            check_can_create(folder, self.flag)
        self.prepared = True
        return self

    # -- writing --

    def _target(self, rel: str) -> Path:
        if not self.prepared:
            raise RuntimeError("OutputDir.prepare() must run before writing")
        if not any(p.fullmatch(rel) for p in (*self.layout, *self.keep)):
            raise ValueError(f"{rel!r} is not in resnet-bench {self.writer}'s layout")  # a programming error
        owner = self.manifest.get(rel)
        if owner not in (None, self.writer):
            raise OutputError(f"{self.flag} {self.root}: {rel} was written by resnet-bench {owner}; refusing "
                              f"to replace it with {self.writer}'s")
        path = self.root / rel
        make_dirs(path.parent, self.flag)
        if path.is_dir() and not path.is_symlink():
            raise OutputError(f"{self.flag} {path}: is a folder where {self.writer} writes a file")
        if owner is None:
            # Listed before it is written: a run killed between the two leaves no file of ours unlisted.
            self.manifest[rel] = self.writer
            self._save_manifest(self.manifest)
        self.written.add(rel)
        return path

    def write_bytes(self, rel: str, data: bytes) -> Path:
        path = self._target(rel)
        atomic_write(path, data)
        return path

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode())

    @contextlib.contextmanager
    def file(self, rel: str) -> Iterator[Path]:
        """A temporary path to write `rel` through (renamed into place when the block ends)."""
        with atomic_file(self._target(rel)) as tmp:
            yield tmp

    def finish(self) -> list[Path]:
        """Delete this writer's earlier outputs not written this time; write the manifest. Returns the
        deleted paths."""
        stale = []
        for rel in list(self._entries()):
            mine = self.manifest.get(rel) == self.writer or (
                self.legacy and rel not in self.manifest and any(p.fullmatch(rel) for p in self.layout))
            if mine and rel not in self.written and not any(p.fullmatch(rel) for p in self.keep):
                path = self.root / rel
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                    stale.append(path)
        files = {rel: w for rel, w in self.manifest.items()
                 if w != self.writer and (self.root / rel).exists()}
        files.update({rel: self.writer for rel in self.written})
        self._save_manifest(files)
        return stale


def _safe_rel(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and ".." not in parts and "" not in parts


# ---- a single output file ----------------------------------------------------------------------


class OutputFile:
    """One output file. Replaced only when absent or recognisably this writer's (`ours(path)`)."""

    def __init__(self, path: str | os.PathLike, *, writer: str, flag: str,
                 ours: Callable[[Path], bool] | None = None):
        self.flag, self.writer, self.ours = flag, writer, ours
        self.path = out_path(path, flag)

    def prepare(self) -> "OutputFile":
        p = self.path
        if p.is_dir():
            raise OutputError(f"{self.flag} {p}: is a folder; give a file path")
        if p.exists() or p.is_symlink():
            from resnet_bench.inputs import InputError, check_regular

            try:
                check_regular(p)
            except InputError as err:
                raise OutputError(f"{self.flag} {err}; refusing to replace it") from None
            if self.ours is None or not self.ours(p):
                raise OutputError(f"{self.flag} {p}: exists and was not written by resnet-bench {self.writer}; "
                                  "give another path or remove it")
        if p.parent.is_dir():
            clean_tmps(p.parent)
        check_can_create(p.parent, self.flag)
        return self

    def write_bytes(self, data: bytes) -> Path:
        make_dirs(self.path.parent, self.flag)
        atomic_write(self.path, data)
        return self.path

    def write_text(self, text: str) -> Path:
        return self.write_bytes(text.encode())

    @contextlib.contextmanager
    def file(self) -> Iterator[Path]:
        make_dirs(self.path.parent, self.flag)
        with atomic_file(self.path) as tmp:
            yield tmp


def csv_header_is(path: Path, check: Callable[[list[str]], bool]) -> bool:
    """Whether the first line of a CSV file (read at most 64 KiB) passes `check(columns)`."""
    from resnet_bench.inputs import InputError, read_head

    try:
        head = read_head(path, 65536).decode("utf-8", "replace").splitlines()
    except InputError:
        return False
    return bool(head) and check(head[0].split(","))


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
