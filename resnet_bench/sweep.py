"""The `sweep` stage: every cell of the experiment's grid as a Ray Tune trial.

Two phases:
1. train: each pending cell trains as one trial, concurrently as resources
   allow. The driver writes the cell's result file (`results/cells/<id>.json`)
   atomically the moment the trial ends, so a killed sweep loses no finished
   cell, and a rerun trains only cells without a result (failed ones again).
2. bench: throughput/memory of each distinct architecture x input shape,
   one measurement at a time (never two timing runs sharing a GPU or the
   CPUs), merged into the cells' records.

Local Ray by default; `RAY_ADDRESS` or `sweep.ray_address` joins a cluster.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path


from resnet_bench import config as cfg


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


def failure_record(cell: cfg.Cell, error: str, epochs=None, provenance: dict | None = None) -> dict:
    from resnet_bench.env import environment, node_info
    from resnet_bench.train import utcnow

    return {"cell_id": cell.cell_id, "status": "failed", "error": error, "config": cell.to_dict(),
            "metrics": {}, "epochs": epochs or [], "env": environment(cell.runtime.device),
            "provenance": {**(provenance or {}), "node": node_info()},
            "started_at": None, "finished_at": utcnow(), "wall_s": None}


def bench_key(cell: cfg.Cell, meta: dict) -> str:
    """Cells that share architecture, input shape and bench settings share one measurement."""
    payload = cell.model_dump(mode="json", include={"model", "unit", "arch", "bench"})
    payload["runtime"] = cell.runtime.model_dump(mode="json", include={"device", "amp", "channels_last", "compile"})
    payload["input"] = [meta["channels"], meta["height"], meta["width"], meta["num_classes"]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# ---- trial functions: run in Ray worker processes -------------------------------------------


def train_trial(trial_config: dict) -> None:
    """One cell. Reports the whole record as the final result; never raises for a cell error."""
    from ray import tune

    from resnet_bench.train import train_cell

    cell = cfg.Cell.model_validate(trial_config["cell"])  # validated again on arrival
    paths, provenance = trial_config["paths"], trial_config.get("provenance") or {}
    epochs: list[dict] = []

    def on_epoch(rec):
        epochs.append(rec)
        tune.report({"epoch": rec["epoch"], "val_acc": rec["val_acc"], "train_loss": rec["train_loss"],
                     "final": False})

    try:
        record = train_cell(cell, paths["prepared_dir"],
                            checkpoint_path=Path(paths["checkpoint_dir"]) / f"{cell.cell_id}.pt",
                            on_epoch=on_epoch, provenance=provenance)
    except Exception as err:  # recorded, never swallowed: the record carries the traceback
        tb = traceback.format_exc(limit=-8)
        record = failure_record(cell, f"{type(err).__name__}: {err}\n{tb}", epochs, provenance)
    tune.report({"final": True, "record_json": json.dumps(record, default=str)})


def bench_trial(trial_config: dict) -> None:
    from ray import tune

    from resnet_bench.bench import benchmark_model
    from resnet_bench.train import build_cell_model

    cell, meta = cfg.Cell.model_validate(trial_config["cell"]), trial_config["meta"]
    b, rt = cell.bench, cell.runtime
    try:
        if rt.device == "cpu" and rt.threads:
            import torch

            torch.set_num_threads(rt.threads)
        result = benchmark_model(
            lambda: build_cell_model(cell, meta["num_classes"], meta["channels"]),
            batch_size=b.batch_size, img_size=b.img_size or meta["height"], in_channels=meta["channels"],
            num_classes=meta["num_classes"], device=rt.device, amp=rt.amp,
            channels_last=rt.channels_last, compile=rt.compile,
            warmup=b.warmup, repeats=b.repeats, steps_per_repeat=b.steps_per_repeat)
        out = {"status": "ok", "result": result}
    except Exception as err:
        out = {"status": "failed", "error": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-6)}"}
    tune.report({"final": True, "bench_json": json.dumps(out, default=str)})


# ---- driver --------------------------------------------------------------------------------


class Progress:
    """One line per finished cell: done/total, failures, estimated time left."""

    def __init__(self, total: int, already: int, concurrency: int, stream=sys.stderr):
        self.total, self.done, self.failed = total, already, 0
        self.concurrency, self.stream = max(1, concurrency), stream
        self.t0, self.finished_now = time.perf_counter(), 0

    def update(self, label: str, status: str, detail: str = "") -> None:
        self.done += 1
        self.finished_now += 1
        self.failed += status == "failed"
        elapsed = time.perf_counter() - self.t0
        left = self.total - self.done
        eta = elapsed / self.finished_now * left if self.finished_now else float("nan")
        print(f"[sweep] {self.done}/{self.total} cells, {self.failed} failed, ~{_fmt_s(eta)} left | "
              f"{label}: {status} {detail}", file=self.stream, flush=True)


def _fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _record_writer(cells_dir: Path, checkpoint_dir: Path, progress: Progress):
    from ray import tune

    class WriteRecord(tune.Callback):
        """Runs in the driver: persists each cell the moment its trial reports the final record."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if not result.get("final"):
                return
            record = json.loads(result["record_json"])
            atomic_write_json(cells_dir / f"{record['cell_id']}.json", record)
            if record["status"] != "failed":
                # Finished for good: its resume checkpoint is no longer needed (on a cluster it may
                # live on the worker's node, hence missing_ok).
                (checkpoint_dir / f"{record['cell_id']}.pt").unlink(missing_ok=True)
            m = record.get("metrics", {})
            detail = (f"test_acc={m['test_acc']:.4f}" if m.get("test_acc") is not None
                      else (record.get("error") or "").splitlines()[0][:200])
            progress.update(cfg.Cell.model_validate(record["config"]).label(), record["status"], detail)

        def on_trial_error(self, iteration, trials, trial, **info):
            # The worker process died (killed, segfault, lost node): record it as failed.
            cell = cfg.Cell.model_validate(trial.config["trial"]["cell"])
            path = cells_dir / f"{cell.cell_id}.json"
            rec = read_record(path)
            if rec and rec.get("status") in ("ok", "diverged"):
                return
            err = getattr(trial, "error_file", None) or "trial process failed"
            try:
                err = Path(err).read_text()[-2000:]
            except OSError:
                pass
            atomic_write_json(path, failure_record(cell, f"TrialError: {err}"))
            progress.update(cell.label(), "failed", "trial process failed")

    return WriteRecord()


def init_ray(address: str | None, quiet: bool = True, env_vars: dict[str, str] | None = None) -> None:
    import logging

    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no per-trial CSV/TB files
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    kwargs = {"log_to_driver": not quiet, "logging_level": logging.WARNING, "include_dashboard": False}
    # Set in every worker before it starts, so before torch loads (numeric pins, see env.py).
    worker_env = dict(env_vars or {})
    if address:
        kwargs = {"address": address, "log_to_driver": not quiet, "logging_level": logging.WARNING}
    else:
        # Ray workers must import this package from the same place as the driver.
        worker_env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])
    if worker_env:
        kwargs["runtime_env"] = {"env_vars": worker_env}
    ray.init(**kwargs)
    # Tune's result-grid summary warns that per-trial result files are absent: they are
    # disabled on purpose (records are written by our callback), so keep that quiet.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def check_resources(resources: cfg.Resources) -> None:
    """A trial asking for more than the cluster has is an error up front, not a hang."""
    import ray

    have = ray.cluster_resources()
    for key, name in (("cpus_per_trial", "CPU"), ("gpus_per_trial", "GPU")):
        want = getattr(resources, key)
        if want > have.get(name, 0):
            raise cfg.ConfigError(
                f"resources.{key}={want} but the Ray cluster has {have.get(name, 0)} {name}(s); "
                f"lower it or join a cluster with {name}s (RAY_ADDRESS / sweep.ray_address)")


def _run_tuner(fn, configs: list[dict], *, resources: dict, max_concurrent, name: str,
               storage_path: Path, callbacks) -> None:
    from ray import tune

    trainable = tune.with_resources(fn, resources)
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, num_samples=1, reuse_actors=True,
                                    trial_name_creator=lambda t: t.config["trial"]["cell"]["cell_id"],
                                    trial_dirname_creator=lambda t: t.config["trial"]["cell"]["cell_id"]),
        run_config=tune.RunConfig(name=name, storage_path=str(storage_path.resolve()), verbose=0,
                                  callbacks=callbacks, log_to_file=True),
    )
    tuner.fit()


def _unwrap(fn):
    """Tune passes {'trial': {...}}; trial functions take the inner dict."""
    def trial(config):
        return fn(config["trial"])
    trial.__name__ = fn.__name__
    return trial


def run_train_phase(pending, *, paths, exp: cfg.Experiment, cells_dir, storage_path, progress,
                    provenance: dict) -> None:
    res = exp.resources
    configs = [{"cell": c.to_dict(), "paths": paths, "provenance": provenance} for c in pending]
    # Tune reports per epoch + the final record; the callback persists it.
    _run_tuner(_unwrap(train_trial), configs,
               resources={"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial},
               max_concurrent=res.max_concurrent, name="train", storage_path=storage_path,
               callbacks=[_record_writer(cells_dir, Path(paths["checkpoint_dir"]), progress)])


def bench_groups(cells: list[cfg.Cell], cells_dir: Path, metas: dict[str, dict]) -> dict[str, list[cfg.Cell]]:
    """Ok cells still lacking a bench measurement, grouped by what one measurement covers."""
    groups: dict[str, list[cfg.Cell]] = {}
    for cell in cells:
        rec = read_record(cells_dir / f"{cell.cell_id}.json")
        if not rec or rec["status"] != "ok" or not cell.bench.enabled:
            continue
        if rec["metrics"].get("bench_train_img_per_s") is not None:
            continue
        groups.setdefault(bench_key(cell, metas[cell.dataset]), []).append(cell)
    return groups


def run_bench_phase(groups: dict[str, list[cfg.Cell]], *, metas: dict[str, dict], cells_dir: Path,
                    exp: cfg.Experiment, storage_path) -> int:
    """Bench every distinct architecture once, alone on its device; merge into cell records.

    Returns the number of measurements that failed.
    """
    from ray import tune

    if not groups:
        return 0
    results: dict[str, dict] = {}

    class Collect(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("final"):
                results[trial.config["trial"]["key"]] = json.loads(result["bench_json"])

    configs = [{"cell": g[0].to_dict(), "meta": metas[g[0].dataset], "key": k} for k, g in groups.items()]
    gpus = exp.resources.gpus_per_trial
    # A timing run holds a whole GPU, or, on CPU, runs alone (max_concurrent=1) so no
    # other trial shares the cores it is timed on.
    resources = {"cpu": exp.resources.cpus_per_trial, "gpu": 1 if gpus > 0 else 0}
    print(f"[sweep] bench: {len(configs)} distinct architecture(s), one at a time", file=sys.stderr)
    _run_tuner(_unwrap(bench_trial), configs, resources=resources,
               max_concurrent=None if gpus > 0 else 1, name="bench",
               storage_path=storage_path, callbacks=[Collect()])
    failed = 0
    for key, group in groups.items():
        out = results.get(key, {"status": "failed", "error": "bench trial did not report"})
        for cell in group:
            path = cells_dir / f"{cell.cell_id}.json"
            rec = read_record(path)
            if out["status"] == "ok":
                r = out["result"]
                rec["metrics"].update({
                    "bench_train_img_per_s": r.get("train_img_per_s"),
                    "bench_infer_img_per_s": r.get("infer_img_per_s"),
                    "peak_mem_bytes": r.get("peak_mem_bytes"),
                    "saved_activation_bytes": r.get("saved_activation_bytes"),
                    "peak_rss_bytes": r.get("peak_rss_bytes"),
                    "bench_batch_size": r.get("batch_size"),
                })
                rec["bench"] = r
                rec.pop("bench_error", None)  # an earlier failed measurement is superseded
            else:
                rec["bench_error"] = out["error"]
            atomic_write_json(path, rec)
        failed += out["status"] != "ok"
    return failed


def parse_args(argv):
    from resnet_bench.argparsing import Parser

    p = Parser(prog="resnet-bench sweep", description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--experiments-dir", default="experiments")
    p.add_argument("--prepared-dir", default="data/prepared")
    p.add_argument("--results-dir", help="this experiment's results folder (default: results/<experiment>)")
    p.add_argument("--storage-path", help="Ray Tune storage (shared path for multi-node runs)")
    p.add_argument("--ray-address", help="join this Ray cluster (default: RAY_ADDRESS, else local)")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even if cells failed, so the report goes ahead with the gaps shown")
    p.add_argument("--dry-run", action="store_true", help="validate everything, print the plan and exit")
    return p.parse_args(argv)


def check_prepared(params: cfg.Params, exp: cfg.Experiment, prepared_dir: Path) -> dict[str, cfg.DataIdentity]:
    """Every dataset of the grid prepared, with the split params.yaml asks for; their identities."""
    problems, data = [], {}
    for ds in exp.grid.datasets:
        path = prepared_dir / ds
        if not (path / "meta.json").is_file():
            problems.append(f"{path}: prepared dataset missing; run `dvc repro` (its prepare stage) first")
            continue
        try:
            ident = cfg.data_identity(path)
        except cfg.ConfigError as err:
            problems += err.problems
            continue
        want = (params.prepare.val_fraction, params.prepare.split_seed)
        if (ident.val_fraction, ident.split_seed) != want:
            problems.append(f"{path}: prepared with val_fraction {ident.val_fraction}, split_seed "
                            f"{ident.split_seed} but params.yaml prepare asks for {want[0]}, {want[1]}; "
                            "rerun its prepare stage (`dvc repro`)")
            continue
        data[ds] = ident
    if problems:
        raise cfg.ConfigError(problems)
    return data


def check_local_gpus(exp: cfg.Experiment, address: str | None) -> None:
    """Without a cluster, a GPU experiment needs this machine's GPUs: refuse before Ray starts."""
    if address or exp.resources.gpus_per_trial <= 0:
        return
    import torch

    have = torch.cuda.device_count()
    if exp.resources.gpus_per_trial > have:
        raise cfg.ConfigError(
            f"resources.gpus_per_trial: {exp.resources.gpus_per_trial} but this machine has {have} GPU(s) and no "
            "Ray cluster is given; set gpus_per_trial 0 (and device auto/cpu, amp none), or join a cluster "
            "with RAY_ADDRESS / sweep.ray_address")


def experiment_summary(exp: cfg.Experiment) -> dict:
    """What results/<experiment>/experiment.json holds: the resolved experiment and the paper check."""
    out = exp.model_dump(mode="json")
    mismatch = cfg.paper_mismatches(exp)
    out["paper_comparable"] = exp.paper is not None and not mismatch
    out["paper_mismatch"] = [] if out["paper_comparable"] else mismatch
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from resnet_bench.env import code_fingerprint, git_info, pinned_env

    # Validate everything before Ray starts or anything trains: the whole grid at once.
    try:
        params = cfg.load_params(args.params)
        resolved = cfg.resolve_experiment(params, args.experiments_dir, params_label=args.params)
        exp = resolved.experiment
        prepared_dir = Path(args.prepared_dir).resolve()
        data = check_prepared(params, exp, prepared_dir)
        cells = cfg.expand_grid(exp, data=data, code_fingerprint=code_fingerprint())
        address = args.ray_address or params.sweep.ray_address or os.environ.get("RAY_ADDRESS")
        check_local_gpus(exp, address)
    except cfg.ConfigError as err:
        print("\n".join(f"error: {line}" for line in err.problems), file=sys.stderr)
        return 2
    results_dir = Path(args.results_dir or Path("results") / exp.name)
    cells_dir = results_dir / "cells"
    metas = {ds: json.loads((prepared_dir / ds / "meta.json").read_text()) for ds in exp.grid.datasets}
    done, pending = plan(cells, cells_dir)
    print(f"[sweep] experiment {exp.name!r}: {len(cells)} cells, {len(done)} done, "
          f"{len(pending)} to train -> {results_dir}", file=sys.stderr)
    if args.dry_run:
        for c in pending:
            print(f"{c.cell_id}  {c.label()}")
        return 0
    atomic_write_json(results_dir / "expected_cells.json", [{"cell_id": c.cell_id, "config": c.to_dict()}
                                                             for c in cells])
    atomic_write_json(results_dir / "experiment.json", experiment_summary(exp))

    allow_failures = args.allow_failures or params.sweep.allow_failures
    storage_path = Path(args.storage_path or params.sweep.storage_path or "scratch/ray_results")
    paths = {"prepared_dir": str(prepared_dir),
             "checkpoint_dir": str((results_dir / "checkpoints").resolve())}
    # Captured once by the driver (trials run outside the repository, maybe on other nodes).
    provenance = {"git": git_info(), "code_fingerprint": code_fingerprint()}
    groups = bench_groups(done, cells_dir, metas)
    bench_failed = 0
    if pending or groups:  # nothing to train or measure: Ray is not started
        import ray

        worker_env = {}
        if exp.resolved_device() == "cpu" and exp.runtime.deterministic:
            threads = cells[0].runtime.threads
            worker_env = pinned_env(threads)
        init_ray(address, env_vars=worker_env)
        try:
            try:
                check_resources(exp.resources)
            except cfg.ConfigError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            if pending:
                res = exp.resources
                total_cpus = ray.cluster_resources().get("CPU", 1)
                concurrency = min(len(pending), int(total_cpus // max(res.cpus_per_trial, 1e-9)) or 1,
                                  res.max_concurrent or len(pending))
                progress = Progress(len(cells), len(done), concurrency)
                run_train_phase(pending, paths=paths, exp=exp, cells_dir=cells_dir,
                                storage_path=storage_path, progress=progress, provenance=provenance)
                groups = bench_groups(cells, cells_dir, metas)
            bench_failed = run_bench_phase(groups, metas=metas, cells_dir=cells_dir, exp=exp,
                                           storage_path=storage_path)
        finally:
            ray.shutdown()

    records = [read_record(cells_dir / f"{c.cell_id}.json") for c in cells]
    failed = [(c, r) for c, r in zip(cells, records) if not r or r.get("status") == "failed"]
    diverged = [c for c, r in zip(cells, records) if r and r.get("status") == "diverged"]
    print(f"[sweep] finished: {len(cells) - len(failed) - len(diverged)} ok, {len(diverged)} diverged, "
          f"{len(failed)} failed, {bench_failed} bench measurement(s) failed", file=sys.stderr)
    for c, r in failed:
        reason = ((r or {}).get("error") or "no result written").strip().splitlines()
        print(f"[sweep] FAILED {c.cell_id} {c.label()}: {reason[0] if reason else ''}", file=sys.stderr)
    if (failed or bench_failed) and not allow_failures:
        print("[sweep] rerun `dvc repro` to retry only the failed cells (and measurements), or set "
              "sweep.allow_failures: true to report with the gaps shown", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
