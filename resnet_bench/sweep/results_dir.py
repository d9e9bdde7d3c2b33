"""The results folder a sweep writes: which files are whose (the output policy's patterns), cell records
written atomically through a staging folder outside the DVC-cached cells/, records a full or read-only
disk refused kept elsewhere and adopted by the next sweep, and the planner that says which cells are done.
The record's type and its readers are resnet_bench.sweep.records."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Sequence

from resnet_bench import config as cfg
from resnet_bench.outputs import atomic_write, fsync_path, make_dirs, mount_of
from resnet_bench.sweep.kept_models import models_missing
from resnet_bench.sweep.records import DONE_STATUSES, CellRecord, read_record, read_record_if_any

# ---- the results folder ----------------------------------------------------------------------------

# What the sweep and collect write in results/<experiment>/ (outputs.OutputDir patterns): each is
# the other's siblings, so neither refuses the folder for holding the other's files.
CELL_FILE = r"cells/[0-9a-f]{12}\.json"
MODEL_FILE = r"cells/[0-9a-f]{12}(\.best)?\.safetensors"  # beside its record: DVC caches and shares both
SWEEP_LAYOUT = (r"expected_cells\.json", r"experiment\.json")
# + a record's temporary file (staged_write: in .staging/, or in cells/ on a mount point, and the temp name
# of older versions) and the sweep's lock file
SWEEP_KEEP = (CELL_FILE, MODEL_FILE,
              r"(cells|\.staging)/\.[0-9a-f]{12}(\.json|(\.best)?\.safetensors)\.[0-9]+\.tmp", r"\.sweep\.lock")
# DVC writes a .gitignore beside the outputs it caches (cells/): never the suite's to touch.
DVC_FILES = (r"\.gitignore",)
COLLECT_LAYOUT = (r"cells\.csv", r"cells\.parquet", r"epochs\.csv", r"epochs\.parquet", r"excluded\.csv",
                  r"metrics\.json", r"curves/[A-Za-z0-9_.-]{1,64}\.csv",
                  # the per-depth curve files of earlier versions: adopted as collect's, then removed as stale
                  r"curves/[A-Za-z0-9_.-]{1,64}__[A-Za-z0-9_.-]{1,64}__resnet[0-9]{1,5}\.csv")


class RecordNotWritten(Exception):
    """A record that could not be written to cells/; `kept` is where it is instead (or None)."""

    def __init__(self, path: Path, reason: str, kept: Path | None):
        self.path, self.reason, self.kept = path, reason, kept
        where = (f"it is kept in {kept}; the next sweep moves it into place" if kept else
                 "it could not be kept anywhere; its last checkpoint is kept, so a rerun retrains only the "
                 "last epoch")
        super().__init__(f"cannot write {path} ({reason}); {where}")


def write_record(cells_dir: Path, record: CellRecord, *, keep_dirs: Sequence[Path] = ()) -> Path:
    """Atomically write `cells_dir/<cell_id>.json`. When that fails (a read-only or full disk), the record
    goes to the first of `keep_dirs` that takes it, and RecordNotWritten says where: a finished
    training is never lost to a folder that stopped being writable."""
    path = Path(cells_dir) / f"{record.cell_id}.json"
    data = record.to_json().encode()
    try:
        make_dirs(path.parent, "cells")
        staged_write(path, data)
        return path
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
    for keep in keep_dirs:
        try:
            Path(keep).mkdir(parents=True, exist_ok=True)
            atomic_write(Path(keep) / path.name, data)
        except OSError:
            continue
        raise RecordNotWritten(path, reason, Path(keep) / path.name)
    raise RecordNotWritten(path, reason, None)


def keep_dirs_for(storage: str, results_dir: Path) -> list[Path]:
    """Where a record that cannot be written to cells/ is kept: the Tune storage when it is a local path,
    else the temporary folder; keyed by the results folder, so only its own sweep adopts it."""
    key = hashlib.sha256(str(Path(results_dir).resolve()).encode()).hexdigest()[:12]
    base = Path(tempfile.gettempdir()) / "resnet-bench" if "://" in storage else Path(storage)
    return [base / "kept-records" / key]


def adopt_kept_records(keep_dirs: Sequence[Path], cells_dir: Path, cell_ids: set[str]) -> list[Path]:
    """Move records an earlier sweep could not write into `cells_dir` (only valid records of these cells,
    and only where cells_dir has no finished result). Returns the paths written."""
    moved = []
    for keep in keep_dirs:
        for kept in sorted(Path(keep).glob("*.json")) if Path(keep).is_dir() else []:
            if kept.stem not in cell_ids:
                continue
            rec = read_record(kept)
            target = Path(cells_dir) / kept.name
            current = read_record_if_any(target)
            if current is None or current.status not in DONE_STATUSES:
                moved.append(write_record(cells_dir, rec))
            os.unlink(kept)
    return moved


# ---- writing a record without a temporary file inside cells/ -----------------------------------------

# A record's temporary file is written beside cells/, never inside it: cells/ is a DVC-cached output, and
# DVC caches and pushes every file in it, a temporary file left by a kill included.
STAGING = ".staging"
# Test hook: a writer whose target path contains this stops itself (SIGSTOP) between the temporary
# write and the rename, so that a test can kill it exactly there.
STOP_BEFORE_RENAME = "RESNET_BENCH_TEST_STOP_BEFORE_RENAME"


def staging_dir(path: Path) -> Path:
    """Where `path`'s temporary file goes: `.staging` beside its folder, or, when that is another disk
    (the folder is a mount point: a rename cannot cross disks), the folder itself (as a hidden `.*.tmp`
    file, which .dvcignore keeps out of DVC)."""
    folder = path.parent
    try:
        # a bind mount of the same file system has the same st_dev (and os.path.ismount misses it), but a
        # rename across it is EXDEV too: compare the mount points /proc/self/mounts names
        same_disk = (os.stat(folder.parent).st_dev == os.stat(folder).st_dev and not os.path.ismount(folder)
                     and mount_of(folder)[0] == mount_of(folder.parent)[0])
    except OSError:
        same_disk = False
    return folder.parent / STAGING if same_disk else folder


def staged_write(path: Path, data: bytes | Any) -> None:
    """Write `path` atomically through a temporary file in `staging_dir(path)` (fsync, rename, fsync):
    readers never see a half-written record, and a kill leaves nothing in `path`'s folder.
    `data`: bytes, or a function that writes the file's content into the binary file it is given
    (a model file streamed from Tune storage, checked as it is copied)."""
    staging = staging_dir(path)
    staging.mkdir(exist_ok=True)
    tmp = staging / f".{path.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            data(f) if callable(data) else f.write(data)
            f.flush()
            os.fsync(f.fileno())
        hook = os.environ.get(STOP_BEFORE_RENAME)
        if hook and hook in str(path):
            os.kill(os.getpid(), signal.SIGSTOP)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: no half-written temp left behind
        raise
    finally:
        if staging.name == STAGING:
            with contextlib.suppress(OSError):  # empty again unless another write is under way
                staging.rmdir()


def plan(cells: list[cfg.Cell], cells_dir: Path, keep_models: str = "none") -> tuple[list[cfg.Cell], list[cfg.Cell]]:
    """Split cells into (done, pending). Done: a valid record of the same id with status ok or diverged
    (diverged is a result: the same seed diverges again) and, for an ok cell, the model files
    `keep_models` asks for; failed cells are retried. A record file that is not valid is a RecordError
    (one line): it is neither trusted nor silently overwritten."""
    done, pending = [], []
    for cell in cells:
        rec = read_record_if_any(Path(cells_dir) / f"{cell.cell_id}.json")
        ok = rec is not None and rec.status in DONE_STATUSES and not models_missing(rec, cells_dir, keep_models)
        (done if ok else pending).append(cell)
    return done, pending
