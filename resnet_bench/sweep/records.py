"""Cell records on disk: written atomically, read back, and the done/pending plan they give."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.safeio import NotRegularFileError, read_text

# A temp file is written in this folder beside the target's folder, never inside it: cells/ is a
# DVC-cached output, and DVC caches and pushes every file in it, a temp left by a kill included.
STAGING = ".staging"
# Test hook: a writer whose target path contains this stops itself (SIGSTOP) between the temp
# write and the rename, so that a test can kill it exactly there.
STOP_BEFORE_RENAME = "RESNET_BENCH_TEST_STOP_BEFORE_RENAME"


def staging_dir(path: Path) -> Path:
    """Where `path`'s temp file goes: `.staging` beside its folder, or, when that is another
    disk (the folder is a mount point: a rename cannot cross disks), the folder itself (as a
    hidden `.*.tmp` file, which .dvcignore keeps out of DVC)."""
    folder = path.parent
    try:
        same_disk = os.stat(folder.parent).st_dev == os.stat(folder).st_dev
    except OSError:
        same_disk = False
    return folder.parent / STAGING if same_disk else folder


def atomic_write_json(path: Path, obj) -> None:
    """Write JSON via a temp file + rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(path)
    staging.mkdir(exist_ok=True)
    tmp = staging / f".{path.name}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
        hook = os.environ.get(STOP_BEFORE_RENAME)
        if hook and hook in str(path):
            os.kill(os.getpid(), signal.SIGSTOP)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: no half-written temp left behind
        raise
    finally:
        if staging.name == STAGING:
            with contextlib.suppress(OSError):  # empty again unless another write is under way
                staging.rmdir()


def read_record(path: Path) -> dict | None:
    """The record, or None when absent or unreadable (the cell is pending). A FIFO or device at
    the path raises NotRegularFileError: it is neither, and reading it would block or never end."""
    try:
        return json.loads(read_text(path))
    except NotRegularFileError:
        raise
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return None


def plan(cells: list[cfg.Cell], cells_dir: Path) -> tuple[list[cfg.Cell], list[cfg.Cell]]:
    """Split cells into (done, pending). Done: a result for the same id with status ok or diverged.

    Diverged is a result (the same seed diverges again); failed cells are retried.
    """
    done, pending = [], []
    for cell in cells:
        rec = read_record(cells_dir / f"{cell.cell_id}.json")
        (done if rec and rec.get("status") in ("ok", "diverged") else pending).append(cell)
    return done, pending


def failure_record(cell: cfg.Cell | dict, error: str, epochs=None, provenance: dict | None = None) -> dict:
    from resnet_bench.env import environment
    from resnet_bench.train import utcnow

    cell = cell if isinstance(cell, cfg.Cell) else cfg.Cell.model_validate(cell)
    return {"cell_id": cell.cell_id, "status": "failed", "error": error, "config": cell.to_dict(),
            "metrics": {}, "epochs": epochs or [], "env": environment(cell.runtime.device),
            "provenance": dict(provenance or {}),
            "started_at": None, "finished_at": utcnow(), "wall_s": None}
