"""The sweep's two phases on Ray Tune: train every pending cell, then bench every distinct
architecture one at a time and merge the measurement into its cells' records."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.sweep.callbacks import _record_writer
from resnet_bench.sweep.progress import _cause_line
from resnet_bench.sweep.records import RecordNotWritten, read_record_if_any, write_record
from resnet_bench.sweep.storage import adopt_prior_checkpoint
from resnet_bench.sweep.trials import bench_trial, train_trial

def bench_key(cell: cfg.Cell, meta: dict) -> str:
    """Cells that share architecture, input shape and bench settings share one measurement."""
    payload = cell.model_dump(mode="json", include={"model", "unit", "arch", "bench"})
    payload["runtime"] = cell.runtime.model_dump(mode="json", include={"device", "amp", "channels_last", "compile",
                                                                       "compile_mode", "tf32"})
    payload["input"] = [meta["channels"], meta["height"], meta["width"], meta["num_classes"]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _run_tuner(fn, configs: list[dict], *, resources: dict, max_concurrent, name: str,
               storage_path: str, callbacks, max_failures: int = 0, tune_loggers: bool = False) -> None:
    from ray import tune

    from resnet_bench.sweep.lifecycle import stop_check

    if tune_loggers:  # sweep.tune_loggers: Tune's own files in each trial folder (off: the records suffice)
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

        callbacks = [*callbacks, CSVLoggerCallback(), JsonLoggerCallback(), TBXLoggerCallback()]
    trainable = tune.with_resources(fn, resources)
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, num_samples=1, reuse_actors=True,
                                    trial_name_creator=lambda t: t.config["trial"]["cell"]["cell_id"],
                                    trial_dirname_creator=lambda t: t.config["trial"]["cell"]["cell_id"]),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, verbose=0, callbacks=[*callbacks, stop_check()], log_to_file=True,
            # A trial whose worker or node died is restarted from its latest checkpoint.
            failure_config=tune.FailureConfig(max_failures=max_failures),
            # Only the newest checkpoint is needed to resume (each is a whole model + optimiser).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    tuner.fit()


def _unwrap(fn):
    """Tune passes {'trial': {...}}; trial functions take the inner dict."""
    def trial(config):
        return fn(config["trial"])
    trial.__name__ = fn.__name__
    return trial


def run_train_phase(pending: list[cfg.Cell], *, paths, exp: cfg.Experiment, cells_dir, storage_path: str,
                    progress, max_failures: int, provenance: dict, keep_dirs=(), tune_loggers: bool = False,
                    keep_models: str = "none") -> None:
    res = exp.resources
    configs = []
    for c in pending:
        resume = adopt_prior_checkpoint(storage_path, c.cell_id)
        if resume:
            progress.note(f"{c.label()}: resuming from the checkpoint an interrupted sweep left")
        configs.append({"cell": c.to_dict(), "paths": paths, "resume_from": resume, "provenance": provenance,
                        "storage": storage_path, "keep_models": keep_models})
    # Tune reports per epoch (with the checkpoint) + the final record; the callback persists it.
    # Several workers per cell: the trial drives a Ray Train run (resnet_bench.sweep.distributed).
    if res.workers_per_trial > 1:
        from resnet_bench.sweep.distributed import drive_cell, trial_resources

        for c in configs:
            c.update(resources=res.model_dump(mode="json"), max_failures=max_failures)
        fn, resources = drive_cell, trial_resources(res)
    else:
        fn, resources = train_trial, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
    _run_tuner(_unwrap(fn), configs, resources=resources,
               max_concurrent=res.max_concurrent, name="train", storage_path=storage_path,
               callbacks=[_record_writer(cells_dir, storage_path, progress, max_failures, keep_dirs)],
               max_failures=max_failures, tune_loggers=tune_loggers)


def _bench_pass(configs: list[dict], *, exp, storage_path: str, name: str, on_result) -> dict[str, dict]:
    """One Tune run over bench configs; {key: {"status": ..., ...}} for those that reported.
    `on_result(key, out)` runs in the driver the moment each measurement reports."""
    from ray import tune

    results: dict[str, dict] = {}

    class Collect(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("final"):
                key = trial.config["trial"]["key"]
                results[key] = json.loads(result["bench_json"])
                on_result(key, results[key])

    gpus = exp.resources.gpus_per_trial
    # A timing run holds a whole GPU and runs alone (max_concurrent=1): on a node with several
    # GPUs, measurements side by side would share its host cores, PCIe and power, and on CPU
    # its cores.
    resources = {"cpu": exp.resources.cpus_per_trial, "gpu": 1 if gpus > 0 else 0}
    _run_tuner(_unwrap(bench_trial), configs, resources=resources, max_concurrent=1, name=name,
               storage_path=storage_path, callbacks=[Collect()])
    return results


def _merge_bench(group: list[cfg.Cell], out: dict, cells_dir: Path, keep_dirs=()) -> dict:
    """A measurement into the records of the cells it covers, written at once (a driver killed later
    keeps it). The measurement goes through the record schema (ranges included) first: returns `out`,
    or a failed one when it does not pass."""
    from resnet_bench.sweep.lifecycle import STOP

    if out.get("status") == "ok":
        try:
            merged = {c.cell_id: read_record_if_any(cells_dir / f"{c.cell_id}.json").with_bench(out["result"])
                      for c in group}
        except ValueError as err:
            out = {"status": "failed", "error": f"InvalidBenchResult: {err}"}
    for cell in group:
        rec = read_record_if_any(cells_dir / f"{cell.cell_id}.json")
        rec = merged[cell.cell_id] if out["status"] == "ok" else rec.with_updates(bench_error=str(out["error"]))
        try:
            write_record(cells_dir, rec, keep_dirs=keep_dirs)
        except RecordNotWritten as err:  # a full or read-only results disk: stop, naming it
            STOP.request("a write failed", 1, error=str(err))
            break
    return out


def bench_groups(cells: list[cfg.Cell], cells_dir: Path, metas: dict[str, dict]) -> dict[str, list[cfg.Cell]]:
    """Ok cells still lacking a bench measurement, grouped by what one measurement covers."""
    groups: dict[str, list[cfg.Cell]] = {}
    for cell in cells:
        rec = read_record_if_any(cells_dir / f"{cell.cell_id}.json")
        if not rec or rec.status != "ok" or not cell.bench.enabled:
            continue
        if rec.metrics.bench_train_img_per_s is not None:
            continue
        groups.setdefault(bench_key(cell, metas[cell.dataset]), []).append(cell)
    return groups


def run_bench_phase(groups: dict[str, list[cfg.Cell]], *, metas: dict[str, dict], cells_dir: Path,
                    exp: cfg.Experiment, storage_path: str, stream=sys.stderr, keep_dirs=()) -> int:
    """Bench every distinct architecture once, alone on its device; merge into cell records.

    A measurement that fails (an error, or its worker/node died) is retried once in a second
    pass. Returns the number of measurements that failed both times.
    """
    if not groups:
        return 0
    configs = {k: {"cell": g[0].to_dict(), "meta": metas[g[0].dataset], "key": k} for k, g in groups.items()}
    print(f"[sweep] bench: {len(configs)} distinct architecture(s), one at a time", file=stream, flush=True)

    merged: dict[str, dict] = {}  # what each measurement was merged as

    def merge_ok(key: str, out: dict) -> None:
        if out.get("status") == "ok":
            merged[key] = _merge_bench(groups[key], out, cells_dir, keep_dirs)

    results = _bench_pass(list(configs.values()), exp=exp, storage_path=storage_path, name="bench",
                          on_result=merge_ok)
    again = [k for k in configs if results.get(k, {}).get("status") != "ok"]
    if again:
        print(f"[sweep] bench: {len(again)} measurement(s) failed, retrying once", file=stream, flush=True)
        results.update(_bench_pass([configs[k] for k in again], exp=exp, storage_path=storage_path,
                                   name="bench-retry", on_result=merge_ok))
    failed = 0
    for key, group in groups.items():
        out = merged.get(key) or results.get(key, {"status": "failed",
                                                   "error": "bench trial did not report (its worker died)"})
        if out["status"] != "ok":
            if key not in merged:
                _merge_bench(group, out, cells_dir, keep_dirs)
            failed += 1
            print(f"[sweep] bench FAILED {group[0].label()}: {_cause_line(out['error'])}", file=stream,
                  flush=True)
    return failed
