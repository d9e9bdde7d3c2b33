"""The `sweep` stage's entry point: validate everything, plan, run the phases, summarise."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.outputs import OutputDir, OutputError
from resnet_bench.inputs import NotRegularFileError
from resnet_bench.sweep import lifecycle
from resnet_bench.sweep.cluster import (RayUnavailable, check_address, check_dashboard, check_local_gpus,
                                        check_resources, ray_session)
from resnet_bench.sweep.estimate import DatasetSize, estimate_gpu_hours, format_estimate, reference_rate
from resnet_bench.sweep.phases import bench_groups, run_bench_phase, run_train_phase
from resnet_bench.sweep.progress import Progress, trial_slots
from resnet_bench.sweep.records import RecordError, experiment_summary, read_record_if_any
from resnet_bench.sweep.results_dir import (COLLECT_LAYOUT, DVC_FILES, STAGING, SWEEP_KEEP, SWEEP_LAYOUT,
                                            adopt_kept_records, keep_dirs_for, plan)
from resnet_bench.sweep.storage import storage_uri
from resnet_bench.sweep.trials import WORKDIR_PREFIX, remove_stale_workdirs

def parse_args(argv):
    from resnet_bench.argparsing import Parser

    p = Parser(prog="resnet-bench sweep", description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml", help="params file: the experiment and its overrides")
    p.add_argument("--experiments-dir", default="experiments", help="folder of experiment files")
    p.add_argument("--prepared-dir", default="data/prepared", help="folder of prepared datasets")
    p.add_argument("--results", help="this experiment's results folder (a folder; default: results/<experiment>)")
    p.add_argument("--storage-path", help="Ray Tune storage (shared path for multi-node runs; default: "
                                          "params.yaml sweep.storage_path, else scratch/ray_results)")
    p.add_argument("--ray-address", help="join this Ray cluster (default: RAY_ADDRESS, else local)")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even if cells failed, so the report goes ahead with the gaps shown")
    p.add_argument("--dry-run", action="store_true",
                   help="print the grid's estimated GPU-hours, validate everything, print the plan and exit")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as one JSON document")
    p.add_renamed("--results-dir", "--results")
    return p.parse_args(argv)


def check_prepared(params: cfg.Params, exp: cfg.Experiment, prepared_dir: Path) -> dict[str, cfg.DataIdentity]:
    """Every dataset of the grid prepared, with the split params.yaml asks for and a train store the recipe's
    augmentation can cut batches from; their identities."""
    from resnet_bench.data.augment import store_problems

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
        meta = json.loads((path / "meta.json").read_text())
        bad, _ = store_problems(meta, exp.recipe.augment.model_dump(), where=str(path))
        if bad:
            problems += bad
            continue
        data[ds] = ident
    if problems:
        raise cfg.ConfigError(problems)
    return data


def _models_line(cells: list[cfg.Cell], pending: list[cfg.Cell], prepared_dir: Path, keep: str) -> str:
    """The dry run's line on the disk the grid's model files take (resnet_bench.sweep.model_disk)."""
    from resnet_bench.inputs import read_json
    from resnet_bench.sweep.model_disk import mib, model_disk_bytes

    metas = {ds: read_json(prepared_dir / ds / "meta.json") for ds in {c.dataset for c in cells}}
    grid = model_disk_bytes(cells, metas=metas, keep_models=keep)
    todo = model_disk_bytes(pending, metas=metas, keep_models=keep)
    return (f"[sweep] model files (sweep.keep_models: {keep}): {grid['files']} for the grid, {mib(grid['bytes'])} "
            f"in cells/ (DVC-cached); {todo['files']} of them, {mib(todo['bytes'])}, from the cells to train")


def _final_record(path: Path):
    """The record a cell ended with, for the summary; one that cannot be read counts as not written."""
    try:
        return read_record_if_any(path)
    except RecordError:
        return None


def _print_cells(args, name: str, cells, done: int | None, results_dir) -> int:
    """The dry run's cells to train: `CELL_ID  LABEL` lines (no ids without prepared data), or --json."""
    if args.json:
        from resnet_bench.console import print_json

        print_json({"experiment": name, "results": str(results_dir) if results_dir else None, "done": done,
                    "to_train": [{"cell_id": c.cell_id if results_dir else None, "label": c.label(),
                                  "model": c.model, "dataset": c.dataset, "seed": c.seed} for c in cells]})
        return 0
    for c in cells:
        print(f"{c.cell_id}  {c.label()}" if results_dir else c.label())
    return 0


def dataset_sizes(params: cfg.Params, exp: cfg.Experiment, prepared_dir: Path) -> dict[str, DatasetSize]:
    """Image counts and sides of the grid's datasets: from meta.json when prepared, else the nominal sizes of
    the format's release (params.yaml prepare.files) with the store policy's sides."""
    from resnet_bench.vocab import NOMINAL_CLASSES, NOMINAL_COUNTS, NOMINAL_SHAPE

    out = {}
    for ds in exp.grid.datasets:
        meta_path = prepared_dir / ds / "meta.json"
        if meta_path.is_file():
            m = json.loads(meta_path.read_text())
            shapes = m.get("shapes") or {s: [m["channels"], m["height"], m["width"]] for s in ("train", "test")}
            out[ds] = DatasetSize(m["counts"]["train"], m["counts"]["val"], m["counts"]["test"], m["channels"],
                                  m["num_classes"], min(shapes["train"][1:]), min(shapes["test"][1:]), "prepared")
            continue
        entry = params.prepare.files.get(ds)
        fmt = entry.format if entry else ds
        if fmt not in NOMINAL_COUNTS:
            continue
        n_train, n_test = NOMINAL_COUNTS[fmt]
        channels, side = NOMINAL_SHAPE.get(fmt, (3, 0))
        train_side = entry.image_size if entry and entry.image_size else side
        eval_side = (entry.eval_crop or entry.eval_resize or entry.image_size) if entry else 0
        val = round(n_train * params.prepare.val_fraction)
        out[ds] = DatasetSize(n_train - val, val, n_test, channels, NOMINAL_CLASSES[fmt], train_side,
                              eval_side or side, f"nominal {fmt} release")
    return out


def _print_plan(exp: cfg.Experiment, to_train: list[cfg.Cell], done: list[cfg.Cell], sizes: dict,
                cells_dir: Path | None) -> None:
    """The dry run's compute plan and power lines (resnet_bench.sweep.dryrun), after the cell list. The
    concurrency is the configured one, else the trials this machine's CPUs (or GPUs) hold at once."""
    from resnet_bench.sweep import dryrun

    res = exp.resources
    slots = (int((torch_gpus() or 1) // res.gpus_per_trial) if res.gpus_per_trial > 0
             else int((os.cpu_count() or 1) // (res.cpus_per_trial * res.workers_per_trial)))
    concurrency = min(res.max_concurrent or slots, max(1, slots), max(1, len(to_train)))
    lines = dryrun.plan_lines(exp, to_train, len(done), sizes, cells_dir, concurrency)
    lines += dryrun.power_lines(exp, done, cells_dir)
    print("\n".join(lines), file=sys.stderr)


def torch_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.json and not args.dry_run:
        print("error: --json: only with --dry-run (a sweep's results are the cell records; "
              "`resnet-bench collect --json` summarises them)", file=sys.stderr)
        return 2
    from resnet_bench.env import code_fingerprint

    # Validate everything before Ray starts or anything trains: the whole grid at once.
    try:
        params = cfg.load_params_or_defaults(args.params)
        resolved = cfg.resolve_experiment(params, args.experiments_dir, params_label=args.params)
        exp = resolved.experiment
        prepared_dir = Path(args.prepared_dir).resolve()
        unprepared: list[str] = []
        if args.dry_run:  # what the grid costs, before anything is checked against the prepared data
            est = estimate_gpu_hours(cfg.expand_grid(exp), dataset_sizes(params, exp, prepared_dir), reference_rate())
            print("\n".join(format_estimate(est)), file=sys.stderr)
        try:
            data = check_prepared(params, exp, prepared_dir)
        except cfg.ConfigError as err:
            if not args.dry_run:
                raise
            data, unprepared = {}, err.problems  # a dry run still shows the grid; ids need the data
        cells = cfg.expand_grid(exp, data=data, code_fingerprint=code_fingerprint())
        address = args.ray_address or params.sweep.ray_address or os.environ.get("RAY_ADDRESS")
        check_address(address)
        check_local_gpus(exp, address)
        check_dashboard(params.sweep.dashboard, address)
        if not address:  # local trials run on this CPU: one that cannot do bf16 fast is refused now
            from resnet_bench.runtime import cpu_bf16_problem

            problem = cpu_bf16_problem(cells[0].runtime.device, cells[0].runtime.amp)
            if problem:
                raise cfg.ConfigError(problem)
        if unprepared:
            for line in unprepared:
                print(f"note: {line}", file=sys.stderr)
            print(f"[sweep] dry run of experiment {exp.name!r}: {len(cells)} cells (their ids, and which are "
                  "done, need the prepared data)", file=sys.stderr)
            _print_cells(args, exp.name, cells, None, None)
            _print_plan(exp, cells, [], dataset_sizes(params, exp, prepared_dir), None)
            return 0
        # The results folder and its cells/ are writable, and hold only what a sweep and collect
        # wrote, before Ray starts or anything trains.
        out = OutputDir(args.results or Path("results") / exp.name, writer="sweep", flag="--results",
                        layout=SWEEP_LAYOUT, keep=SWEEP_KEEP, siblings=(*COLLECT_LAYOUT, *DVC_FILES),
                        subdirs=["cells"])
        results_dir = out.prepare().root
        if args.dry_run:
            keep = params.sweep.keep_models
            done, pending = plan(cells, results_dir / "cells", keep)
            print(f"[sweep] experiment {exp.name!r}: {len(cells)} cells, {len(done)} done, "
                  f"{len(pending)} to train -> {results_dir}", file=sys.stderr)
            print(_models_line(cells, pending, prepared_dir, keep), file=sys.stderr)
            _print_cells(args, exp.name, pending, len(done), results_dir)
            _print_plan(exp, pending, done, dataset_sizes(params, exp, prepared_dir), results_dir / "cells")
            return 0
    except (cfg.ConfigError, OutputError) as err:
        for line in getattr(err, "problems", [str(err)]):
            print(f"error: {line}", file=sys.stderr)
        return 2
    try:
        with lifecycle.guarded() as stop, lifecycle.lock_results(results_dir):
            try:
                code = run(args, params, exp, cells, out=out, prepared_dir=prepared_dir, address=address)
            except KeyboardInterrupt:  # a second Ctrl-C: Ray was shut down on the way out
                code = None
            return stopped(stop, cells, results_dir / "cells", args, params) if stop else code
    except (lifecycle.LockedError, RayUnavailable, NotRegularFileError, RecordError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args, params: cfg.Params, exp: cfg.Experiment, cells: list[cfg.Cell], *, out: OutputDir,
        prepared_dir: Path, address: str | None) -> int:
    """The sweep proper, once everything is valid; returns the exit code (a stop is the caller's)."""
    from resnet_bench.env import code_fingerprint, git_info, pinned_env

    results_dir = out.root
    cells_dir = results_dir / "cells"
    # What killed runs left (the results folder is locked: no other sweep writes here): record
    # temps (results_dir.staging_dir; in cells/ too, where older versions wrote them); trial work
    # dirs in this machine's TMPDIR (each trial does the same on its own node).
    lifecycle.clean_stale_temps([results_dir / STAGING, results_dir, cells_dir])
    remove_stale_workdirs()
    storage_path = storage_uri(args.storage_path or params.sweep.storage_path)
    keep_dirs = keep_dirs_for(storage_path, results_dir)
    for path in adopt_kept_records(keep_dirs, cells_dir, {c.cell_id for c in cells}):
        print(f"[sweep] moved in the record an earlier sweep could not write: {path}", file=sys.stderr)
    metas = {ds: json.loads((prepared_dir / ds / "meta.json").read_text()) for ds in exp.grid.datasets}
    done, pending = plan(cells, cells_dir, params.sweep.keep_models)
    print(f"[sweep] experiment {exp.name!r}: {len(cells)} cells, {len(done)} done, "
          f"{len(pending)} to train -> {results_dir}", file=sys.stderr)
    try:
        out.write_text("expected_cells.json", json.dumps([{"cell_id": c.cell_id, "config": c.to_dict()}
                                                          for c in cells], indent=1, sort_keys=True))
        out.write_text("experiment.json", json.dumps(experiment_summary(exp), indent=1, sort_keys=True))
        out.finish()
    except OSError as err:
        from resnet_bench.outputs import disk_full_message, is_disk_full

        line = (disk_full_message(err.filename or results_dir, "the cell list") if is_disk_full(err)
                else f"cannot write the cell list in {results_dir}: {err.strerror or err}")
        lifecycle.STOP.request("a write failed", 1, error=line)
        return 1

    max_failures = params.sweep.max_failures
    allow_failures = args.allow_failures or params.sweep.allow_failures
    paths = {"prepared_dir": str(prepared_dir)}
    # Captured once by the driver (trials run outside the repository, maybe on other nodes).
    provenance = {"git": git_info(), "code_fingerprint": code_fingerprint()}
    groups = bench_groups(done, cells_dir, metas)
    bench_failed = 0
    if (pending or groups) and not lifecycle.STOP:  # nothing to train or measure: Ray is not started
        rt = exp.resolved_runtime()
        deterministic_cpu = rt.device == "cpu" and rt.deterministic
        with ray_session(address, env_vars=pinned_env(rt.threads, rt.numeric_pin) if deterministic_cpu else None,
                         dashboard=params.sweep.dashboard):
            lifecycle.install_signal_handlers()  # ray.init set its own SIGTERM handler (sys.exit)
            try:
                check_resources(exp.resources)
            except cfg.ConfigError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            try:
                if pending and not lifecycle.STOP:
                    limit = "unlimited" if max_failures < 0 else max_failures
                    print(f"[sweep] checkpoints in {storage_path}; a trial whose worker or node dies is "
                          f"retried up to {limit} time(s) from its last epoch", file=sys.stderr)
                    import ray

                    res = exp.resources
                    slots = trial_slots(res, ray.cluster_resources())
                    concurrency = min(len(pending), slots, res.max_concurrent or len(pending))
                    progress = Progress(len(cells), len(done), [c.to_dict() for c in pending],
                                        concurrency=concurrency)
                    run_train_phase(pending, paths=paths, exp=exp, cells_dir=cells_dir, storage_path=storage_path,
                                    progress=progress, max_failures=max_failures, provenance=provenance,
                                    keep_dirs=keep_dirs, tune_loggers=params.sweep.tune_loggers,
                                    keep_models=params.sweep.keep_models)
                    groups = bench_groups(cells, cells_dir, metas)
                if not lifecycle.STOP:
                    bench_failed = run_bench_phase(groups, metas=metas, cells_dir=cells_dir, exp=exp,
                                                   storage_path=storage_path, keep_dirs=keep_dirs)
            except lifecycle.StopRequested:
                pass
    if lifecycle.STOP:
        return 1
    remove_stale_workdirs()

    records = [_final_record(cells_dir / f"{c.cell_id}.json") for c in cells]
    failed = [(c, r) for c, r in zip(cells, records) if not r or r.status == "failed"]
    diverged = [c for c, r in zip(cells, records) if r and r.status == "diverged"]
    print(f"[sweep] finished: {len(cells) - len(failed) - len(diverged)} ok, {len(diverged)} diverged, "
          f"{len(failed)} failed, {bench_failed} bench measurement(s) failed", file=sys.stderr)
    for c, r in failed:
        reason = ((r.error if r else None) or "no result written").strip().splitlines()
        print(f"[sweep] FAILED {c.cell_id} {c.label()}: {reason[0] if reason else ''}", file=sys.stderr)
    if (failed or bench_failed) and not allow_failures:
        print("[sweep] rerun `dvc repro` to retry only the failed cells and measurements, or set "
              "sweep.allow_failures: true to report with the gaps shown", file=sys.stderr)
        return 1
    return 0


def stopped(stop: lifecycle.Stop, cells: list[cfg.Cell], cells_dir: Path, args, params: cfg.Params) -> int:
    """The sweep stopped early: what is kept, what a rerun does, and the stop's exit code
    (128 + the signal; 1 for a failed write)."""
    # Trials the stop killed leave their work dirs, removed once their processes are gone.
    deadline = time.monotonic() + 10
    while True:
        remove_stale_workdirs()
        if not _live_workdirs(cells) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if stop.error:
        print(f"error: {stop.error}", file=sys.stderr)
    statuses = [getattr(_final_record(cells_dir / f"{c.cell_id}.json"), "status", None) for c in cells]
    kept = sum(s in ("ok", "diverged") for s in statuses)
    rest = len(cells) - kept
    storage = storage_uri(args.storage_path or params.sweep.storage_path)
    print(f"[sweep] stopped ({stop.reason}): {kept}/{len(cells)} cell(s) finished and kept in {cells_dir}"
          + (f"; {rest} not finished: a rerun (`dvc repro`) trains {'it' if rest == 1 else 'them'}, resuming "
             f"from the last epoch checkpoint in {storage}" if rest else ""), file=sys.stderr)
    return stop.exit_code


def _live_workdirs(cells: list[cfg.Cell]) -> bool:
    """A trial work dir of this grid still in TMPDIR (its worker still exiting)."""
    ids = {c.cell_id for c in cells}
    return any(p.name.split("-")[2] in ids for p in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*-*-*"))


if __name__ == "__main__":
    raise SystemExit(main())
