"""The sweep's two phases on Ray Tune: train every pending cell, then bench the distinct architectures,
one depth at a time (its versions or units timed interleaved in one trial, alone on the device), and merge
each measurement into its cells' records."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.sweep.callbacks import _record_writer
from resnet_bench.sweep.progress import _cause_line
from resnet_bench.sweep.records import read_record_if_any
from resnet_bench.sweep.results_dir import RecordNotWritten, write_record
from resnet_bench.sweep.storage import adopt_prior_checkpoint
from resnet_bench.sweep.trials import bench_trial, train_trial
from resnet_bench.vocab import UNITS

# Arch fields a network variant resolves per version (`arch.variant: paper`: v1 with option A zero-padding
# shortcuts, v2 with projections; resnet_bench.architectures.resolve_arch). The grid has no axis over
# them, so within one sweep they differ only between the versions of a depth, which a bench set compares.
VERSION_RESOLVED_ARCH = {"shortcut", "bottleneck_stride"}


def _key(cell: cfg.Cell, meta: dict, fields: set[str], *, set_of_versions: bool = False) -> str:
    payload = cell.model_dump(mode="json", include=fields | {"arch", "bench"})
    if set_of_versions:
        payload["arch"] = {k: v for k, v in payload["arch"].items() if k not in VERSION_RESOLVED_ARCH}
    payload["runtime"] = cell.runtime.model_dump(mode="json", include={"device", "amp", "channels_last", "compile",
                                                                       "compile_mode", "tf32"})
    payload["input"] = [meta["channels"], meta["height"], meta["width"], meta["num_classes"]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def bench_key(cell: cfg.Cell, meta: dict) -> str:
    """Cells that share architecture, input shape and bench settings share one measurement."""
    return _key(cell, meta, {"model", "unit"})


def bench_set_key(cell: cfg.Cell, meta: dict) -> str:
    """Architectures measured together, interleaved: the versions (or residual units) of one depth with
    the same other settings and input shape (the paper variants' v1 and v2 too, whose shortcuts differ)."""
    return _key(cell, meta, {"depth"}, set_of_versions=True)


def reference_first(cell: cfg.Cell) -> tuple:
    """Order within a bench set: v1's original unit first (the ratios' reference), then He et al. 2016's
    unit order (a)-(e), v2 last."""
    return (UNITS.index(cell.unit), cell.model)


def _trial_name(trial: dict) -> str:
    """A train trial is named by its cell id, a bench trial by its set key (both 12 hex digits)."""
    return trial["cell"]["cell_id"] if "cell" in trial else f"set-{trial['key']}"


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
                                    trial_name_creator=lambda t: _trial_name(t.config["trial"]),
                                    trial_dirname_creator=lambda t: _trial_name(t.config["trial"])),
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
    """One Tune run over bench configs (one per bench set); {arch key: {"status": ..., ...}} for the
    sets that reported. `on_result(arch_key, out)` runs in the driver the moment each set reports."""
    from ray import tune

    results: dict[str, dict] = {}

    class Collect(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("final"):
                out = json.loads(result["bench_json"])
                for key in trial.config["trial"]["keys"]:
                    results[key] = ({"status": "ok", "result": out["results"][key]} if out["status"] == "ok"
                                    else out)
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


BenchSets = dict[str, dict[str, list[cfg.Cell]]]  # {set key: {arch key: the cells one measurement covers}}


def bench_groups(cells: list[cfg.Cell], cells_dir: Path, metas: dict[str, dict]) -> BenchSets:
    """Bench sets with an ok cell still lacking a measurement of this set, i.e. none, or one timed
    interleaved with other models (an earlier version's sets); such a set is measured whole (its
    measured members again too), so that every ratio in it comes from one interleaved run."""
    sets: BenchSets = {}
    timed_with: dict[str, list[tuple[str, list[str] | None]]] = {}  # set key: (arch key, models it was timed with)
    for cell in sorted(cells, key=reference_first):
        rec = read_record_if_any(cells_dir / f"{cell.cell_id}.json")
        if not rec or rec.status != "ok" or not cell.bench.enabled:
            continue
        meta = metas[cell.dataset]
        skey, akey = bench_set_key(cell, meta), bench_key(cell, meta)
        sets.setdefault(skey, {}).setdefault(akey, []).append(cell)
        # None: not measured; records of earlier versions may lack interleaved_with (BenchResult is open)
        timed = sorted(getattr(rec.bench, "interleaved_with", None) or []) if rec.metrics.bench_train_img_per_s \
            else None
        timed_with.setdefault(skey, []).append((akey, timed))
    return {skey: arch for skey, arch in sets.items()
            if any(timed != sorted(group[0].model for k, group in arch.items() if k != akey)
                   for akey, timed in timed_with[skey])}


def run_bench_phase(sets: BenchSets, *, metas: dict[str, dict], cells_dir: Path,
                    exp: cfg.Experiment, storage_path: str, stream=sys.stderr, keep_dirs=()) -> int:
    """Bench every distinct architecture, a depth's versions interleaved, alone on the device; merge into
    cell records.

    A measurement that fails (an error, or its worker/node died) is retried once in a second
    pass. Returns the number of architectures whose measurement failed both times.
    """
    if not sets:
        return 0
    groups = {k: g for arch in sets.values() for k, g in arch.items()}
    configs = {skey: {"cells": [g[0].to_dict() for g in arch.values()], "keys": list(arch),
                      "meta": metas[next(iter(arch.values()))[0].dataset], "key": skey}
               for skey, arch in sets.items()}
    print(f"[sweep] bench: {len(groups)} distinct architecture(s) in {len(configs)} interleaved set(s), one set "
          "at a time", file=stream, flush=True)

    merged: dict[str, dict] = {}  # what each measurement was merged as

    def merge_ok(key: str, out: dict) -> None:
        if out.get("status") == "ok":
            merged[key] = _merge_bench(groups[key], out, cells_dir, keep_dirs)

    results = _bench_pass(list(configs.values()), exp=exp, storage_path=storage_path, name="bench",
                          on_result=merge_ok)
    again = [s for s, c in configs.items() if any(results.get(k, {}).get("status") != "ok" for k in c["keys"])]
    if again:
        print(f"[sweep] bench: {len(again)} measurement(s) failed, retrying once", file=stream, flush=True)
        results.update(_bench_pass([configs[s] for s in again], exp=exp, storage_path=storage_path,
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
        elif out["result"].get("unstable"):
            print(f"[sweep] bench UNSTABLE {group[0].label()}: throughput CV above {out['result'].get('cv_max')} "
                  f"after {out['result'].get('train_attempts')} attempt(s); marked in the record", file=stream,
                  flush=True)
    return failed
