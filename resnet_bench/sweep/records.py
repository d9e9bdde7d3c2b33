"""Cell records on disk: written atomically, read back, and the done/pending plan they give."""

from __future__ import annotations

import json
import os
from pathlib import Path

from resnet_bench import config as cfg

# The per-epoch record of resnet_bench.train.train_cell, reported to Tune as top-level numbers (Tune's
# loggers, ExperimentAnalysis and TensorBoard read them) and rebuilt from them by the driver's callback.
EPOCH_KEYS = ("epoch", "iteration", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr",
              "epoch_s", "train_img_per_s")


def atomic_write_json(path: Path, obj) -> None:
    """Write JSON via a temp file + rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # absent or unreadable: the cell is pending


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
