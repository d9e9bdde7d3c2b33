"""Trial functions: what runs in a Ray worker process for one cell (train) or one distinct
architecture (bench). They report to Tune; the driver writes the records."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import traceback
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.sweep.records import EPOCH_KEYS, failure_record
from resnet_bench.sweep.storage import CKPT_FILE, CKPT_META

# ---- trial functions: run in Ray worker processes -------------------------------------------


# A trial's private work dir in its node's TMPDIR: `resnet-bench-<cell_id>-<pid>-<random>`. The
# pid names its owner, so that one a killed worker left is removed by the next run on that node.
WORKDIR_PREFIX = "resnet-bench-"
_WORKDIR = re.compile(rf"^{WORKDIR_PREFIX}[0-9a-f]{{12}}-(\d+)-")


class DiskFull(Exception):
    """A write of the trial ran out of space: not the cell's failure, the sweep stops."""


def stale_workdirs(root: str | Path | None = None) -> list[Path]:
    """Work dirs under `root` (default TMPDIR) whose owning process is gone."""
    from resnet_bench.sweep.lifecycle import pid_alive

    root = Path(root or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    return [p for p in entries if (m := _WORKDIR.match(p.name)) and p.is_dir() and not p.is_symlink()
            and not pid_alive(int(m.group(1)))]


def remove_stale_workdirs(root: str | Path | None = None) -> list[Path]:
    gone = stale_workdirs(root)
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def _restore(work: Path, cell_id: str, candidates: list[tuple[str, object]], notes: list[str]) -> bool:
    """The newest whole checkpoint of `candidates` ((where, tune.Checkpoint or URI)) copied into
    `work`; a damaged one is noted and skipped. False: none is whole, the cell starts from scratch."""
    from ray import tune

    from resnet_bench.sweep.storage import checkpoint_problem

    for where, ckpt in candidates:
        ckpt = ckpt if hasattr(ckpt, "to_directory") else tune.Checkpoint(ckpt)  # Tune's, Ray Train's, or a URI
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            ckpt.to_directory(str(work))
            problem = checkpoint_problem(str(work), cell_id)
        except OSError as err:
            problem = f"{where}: {err}"
        if problem is None:
            return True
        notes.append(f"{where} checkpoint unusable ({problem})")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return False


def _candidates(latest, adopted: str | None, storage: str | None, cell_id: str) -> list[tuple[str, object]]:
    """Checkpoints to resume from, best first: Tune's latest (a retry) or the one an interrupted
    sweep left (adopt_prior_checkpoint); behind them, in case those are damaged, every other one
    of the cell in storage, newest first. None of them: the cell starts fresh."""
    from resnet_bench.sweep.storage import cell_checkpoints

    first = [(where, c) for where, c in (("Tune's latest", latest), ("adopted", adopted)) if c is not None]
    out, seen = [], set()
    for where, ckpt in first + [("stored", uri) for uri in (cell_checkpoints(storage, cell_id)
                                                            if first and storage else [])]:
        key = str(getattr(ckpt, "path", ckpt)).split("://", 1)[-1].rstrip("/")  # one per location
        if key not in seen:
            seen.add(key)
            out.append((where, ckpt))
    return out


def _keep_models(record: dict, states: dict, work: Path, storage: str | None, prepared_dir: str) -> None:
    """The ok cell's model files (train_cell's `on_models` states) written in the trial's work dir and
    uploaded to storage; `record["models"]` names them with size and SHA-256 for the driver, which
    copies them into cells/ (resnet_bench.sweep.storage.fetch_model)."""
    from resnet_bench.inputs import read_json
    from resnet_bench.models.files import write_cell_models
    from resnet_bench.sweep.storage import upload_models

    if record["status"] != "ok" or not states or not storage:
        return
    folder = work / "models"
    folder.mkdir()
    meta = read_json(Path(prepared_dir) / record["config"]["dataset"] / "meta.json")
    refs = write_cell_models(record, states, folder, meta)
    upload_models(storage, record["cell_id"], folder)
    record["models"] = refs


def train_trial(trial_config: dict) -> None:
    """One cell. Reports the whole record as the final result; never raises for a cell error.

    Every epoch's checkpoint goes to Tune (`tune.report(..., checkpoint=...)`), which copies it
    to `storage_path`; when Tune retries the trial after its worker or node died, possibly on
    another node, `tune.get_checkpoint()` hands it back and training resumes after that epoch.
    A checkpoint is validated (size and SHA-256 in its metadata) before it is loaded; a damaged
    one gives way to the next newest whole one of the cell in storage, or to a start from scratch,
    and the console says so. A trial's process dying is left to Tune (not caught): that is what
    triggers the retry. A full disk is reported as such (the driver stops the sweep).
    """
    from ray import tune

    from resnet_bench.env import environment, node_info
    from resnet_bench.outputs import disk_full_message, is_disk_full
    from resnet_bench.sweep.storage import checkpoint_meta
    from resnet_bench.train import train_cell

    cell = cfg.Cell.model_validate(trial_config["cell"])  # validated again on arrival
    config, paths = trial_config["cell"], trial_config["paths"]
    provenance = trial_config.get("provenance") or {}
    storage = trial_config.get("storage")
    node = node_info()
    epochs: list[dict] = []
    remove_stale_workdirs()
    # A private local directory: the checkpoint is written here, then Tune copies it to storage.
    work = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{config['cell_id']}-{os.getpid()}-"))
    notes: list[str] = []
    try:
        candidates = _candidates(tune.get_checkpoint(), trial_config.get("resume_from"), storage, cell.cell_id)
        if candidates and not _restore(work, cell.cell_id, candidates, notes):
            notes.append("training the cell from scratch")

        def on_checkpoint(path: Path, rec: dict) -> None:
            (path.parent / CKPT_META).write_text(json.dumps(checkpoint_meta(path, config["cell_id"], rec["epoch"])))
            # numbers, not a JSON string: Tune's loggers and ExperimentAnalysis see the curves
            result = {"final": False, **{k: rec.get(k) for k in EPOCH_KEYS}, **node}
            if notes:
                result["note"] = "; ".join(notes)
                notes.clear()
            try:
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(path.parent)))
            except Exception as err:
                if is_disk_full(err):
                    raise DiskFull(disk_full_message(storage or "?", "the epoch checkpoint to Tune storage")) from None
                raise

        states: dict = {}
        try:
            record = train_cell(cell, paths["prepared_dir"], checkpoint_path=work / CKPT_FILE,
                                on_epoch=epochs.append, on_checkpoint=on_checkpoint, provenance=provenance,
                                keep_models=trial_config.get("keep_models", "none"), on_models=states.update)
            try:
                _keep_models(record, states, work, storage, paths["prepared_dir"])
            except OSError as err:
                if is_disk_full(err):
                    raise DiskFull(disk_full_message(err.filename or storage or work, "the cell's model file")) \
                        from None
                raise
        except Exception as err:  # recorded, never swallowed: the record carries the traceback
            if isinstance(err, DiskFull) or is_disk_full(err):
                full = str(err) if isinstance(err, DiskFull) else disk_full_message(
                    work / CKPT_FILE, "the trial's epoch checkpoint in TMPDIR")
                tune.report({"final": True, "disk_full": full, **node})
                return
            tb = traceback.format_exc(limit=-8)
            record = failure_record(cell, f"{type(err).__name__}: {err}\n{tb}", epochs,
                                    {**provenance, "node": node}, env=environment(cell.runtime.device))
        record["node"] = node
        # the final numbers for Tune's tools; the whole record (nested, with strings) travels as JSON
        final = {k: v for k, v in (record.get("metrics") or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        tune.report({**final, "final": True, "record_json": json.dumps(record, default=str), **node,
                     **({"note": "; ".join(notes)} if notes else {})})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_trial(trial_config: dict) -> None:
    """One bench set: the architectures of one depth, timed interleaved (resnet_bench.bench.benchmark_models),
    the first (v1) the ratios' reference. Reports {"status", "results": {arch key: measurement}}."""
    from ray import tune

    from resnet_bench.bench import benchmark_models
    from resnet_bench.env import node_info
    from resnet_bench.train import build_cell_model, pin_numeric_environment

    cells = [cfg.Cell.model_validate(c) for c in trial_config["cells"]]
    meta, keys = trial_config["meta"], trial_config["keys"]
    b, rt = cells[0].bench, cells[0].runtime  # one set: one bench and runtime (resnet_bench.sweep.phases)

    def builder(cell):
        return lambda: build_cell_model(cell, meta["num_classes"], meta["channels"])

    try:
        pin_numeric_environment(cells[0])  # measured as the cells train (their variables came with the worker)
        if rt.device == "cpu" and rt.threads:
            import torch

            torch.set_num_threads(rt.threads)
        measured = benchmark_models(
            {key: builder(cell) for key, cell in zip(keys, cells)},
            batch_size=b.batch_size, img_size=b.img_size or meta["height"], in_channels=meta["channels"],
            num_classes=meta["num_classes"], device=rt.device, amp=rt.amp,
            channels_last=rt.channels_last, compile=rt.compile, compile_mode=rt.compile_mode, tf32=rt.tf32,
            warmup=b.warmup, repeats=b.repeats, steps_per_repeat=b.steps_per_repeat, cv_max=b.cv_max,
            remeasure=b.remeasure)
        node = node_info()
        names = dict(zip(keys, (c.model for c in cells)))
        out = {"status": "ok", "results": {
            key: {**rec, "node": node, "model": names[key],
                  "interleaved_with": [names[k] for k in keys if k != key],
                  "ratio_reference": names[rec["ratio_reference"]] if rec["ratio_reference"] else None}
            for key, rec in measured.items()}}
    except Exception as err:
        out = {"status": "failed", "error": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-6)}"}
    # the reference's numbers for Tune's tools; every measurement (nested, with strings) as JSON
    first = next(iter(out.get("results", {}).values()), {})
    numbers = {k: v for k, v in first.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tune.report({**numbers, "final": True, "bench_json": json.dumps(out, default=str)})
