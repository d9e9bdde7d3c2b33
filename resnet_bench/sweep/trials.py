"""Trial functions: what runs in a Ray worker process for one cell (train) or one distinct
architecture (bench). They report to Tune; the driver writes the records."""

from __future__ import annotations

import json
import shutil
import tempfile
import traceback
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.sweep.records import failure_record
from resnet_bench.sweep.storage import CKPT_FILE, CKPT_META

# ---- trial functions: run in Ray worker processes -------------------------------------------


def train_trial(trial_config: dict) -> None:
    """One cell. Reports the whole record as the final result; never raises for a cell error.

    Every epoch's checkpoint goes to Tune (`tune.report(..., checkpoint=...)`), which copies it
    to `storage_path`; when Tune retries the trial after its worker or node died, possibly on
    another node, `tune.get_checkpoint()` hands it back and training resumes after that epoch.
    A trial's process dying is left to Tune (not caught): that is what triggers the retry.
    """
    from ray import tune

    from resnet_bench.env import node_info
    from resnet_bench.train import train_cell

    cell = cfg.Cell.model_validate(trial_config["cell"])  # validated again on arrival
    config, paths = trial_config["cell"], trial_config["paths"]
    provenance = trial_config.get("provenance") or {}
    node = node_info()
    epochs: list[dict] = []
    # A private local directory: the checkpoint is written here, then Tune copies it to storage.
    work = Path(tempfile.mkdtemp(prefix=f"resnet-bench-{config['cell_id']}-"))
    try:
        restored = tune.get_checkpoint()
        if restored is None and trial_config.get("resume_from"):
            # Left by an earlier sweep that was killed mid-cell (see adopt_prior_checkpoint).
            restored = tune.Checkpoint(trial_config["resume_from"])
        if restored is not None:
            restored.to_directory(str(work))

        def on_checkpoint(path: Path, rec: dict) -> None:
            meta = {"cell_id": config["cell_id"], "epoch": rec["epoch"], "bytes": path.stat().st_size}
            (path.parent / CKPT_META).write_text(json.dumps(meta))
            tune.report({"final": False, "epoch": rec["epoch"], "epoch_json": json.dumps(rec), **node},
                        checkpoint=tune.Checkpoint.from_directory(str(path.parent)))

        try:
            record = train_cell(cell, paths["prepared_dir"], checkpoint_path=work / CKPT_FILE,
                                on_epoch=epochs.append, on_checkpoint=on_checkpoint, provenance=provenance)
        except Exception as err:  # recorded, never swallowed: the record carries the traceback
            tb = traceback.format_exc(limit=-8)
            record = failure_record(cell, f"{type(err).__name__}: {err}\n{tb}", epochs,
                                    {**provenance, "node": node})
        record["node"] = node
        tune.report({"final": True, "record_json": json.dumps(record, default=str), **node})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_trial(trial_config: dict) -> None:
    from ray import tune

    from resnet_bench.bench import benchmark_model
    from resnet_bench.env import node_info
    from resnet_bench.train import build_cell_model, pin_numeric_environment

    cell, meta = cfg.Cell.model_validate(trial_config["cell"]), trial_config["meta"]
    b, rt = cell.bench, cell.runtime
    try:
        pin_numeric_environment(cell)  # measured as the cell trains (its variables came with the worker)
        if rt.device == "cpu" and rt.threads:
            import torch

            torch.set_num_threads(rt.threads)
        result = benchmark_model(
            lambda: build_cell_model(cell, meta["num_classes"], meta["channels"]),
            batch_size=b.batch_size, img_size=b.img_size or meta["height"], in_channels=meta["channels"],
            num_classes=meta["num_classes"], device=rt.device, amp=rt.amp,
            channels_last=rt.channels_last, compile=rt.compile,
            warmup=b.warmup, repeats=b.repeats, steps_per_repeat=b.steps_per_repeat)
        out = {"status": "ok", "result": {**result, "node": node_info()}}
    except Exception as err:
        out = {"status": "failed", "error": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-6)}"}
    tune.report({"final": True, "bench_json": json.dumps(out, default=str)})
