"""The `sweep` stage's entry point: validate everything, plan, run the phases, summarise."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.sweep.cluster import check_address, check_local_gpus, check_resources, ray_session
from resnet_bench.sweep.estimate import DatasetSize, estimate_gpu_hours, format_estimate, reference_rate
from resnet_bench.sweep.phases import bench_groups, run_bench_phase, run_train_phase
from resnet_bench.sweep.progress import Progress
from resnet_bench.sweep.records import atomic_write_json, plan, read_record
from resnet_bench.sweep.storage import storage_uri

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
    p.add_argument("--dry-run", action="store_true",
                   help="print the grid's estimated GPU-hours, validate everything, print the plan and exit")
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
        if args.dry_run:  # what the grid costs, before anything is checked against the prepared data
            est = estimate_gpu_hours(cfg.expand_grid(exp), dataset_sizes(params, exp, prepared_dir), reference_rate())
            print("\n".join(format_estimate(est)), file=sys.stderr)
        data = check_prepared(params, exp, prepared_dir)
        cells = cfg.expand_grid(exp, data=data, code_fingerprint=code_fingerprint())
        address = args.ray_address or params.sweep.ray_address or os.environ.get("RAY_ADDRESS")
        check_address(address)
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

    max_failures = params.sweep.max_failures
    allow_failures = args.allow_failures or params.sweep.allow_failures
    storage_path = storage_uri(args.storage_path or params.sweep.storage_path)
    paths = {"prepared_dir": str(prepared_dir)}
    # Captured once by the driver (trials run outside the repository, maybe on other nodes).
    provenance = {"git": git_info(), "code_fingerprint": code_fingerprint()}
    groups = bench_groups(done, cells_dir, metas)
    bench_failed = 0
    if pending or groups:  # nothing to train or measure: Ray is not started
        deterministic_cpu = exp.resolved_device() == "cpu" and exp.runtime.deterministic
        with ray_session(address, env_vars=pinned_env(cells[0].runtime.threads) if deterministic_cpu else None):
            try:
                check_resources(exp.resources)
            except cfg.ConfigError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            if pending:
                limit = "unlimited" if max_failures < 0 else max_failures
                print(f"[sweep] checkpoints in {storage_path}; a trial whose worker or node dies is "
                      f"retried up to {limit} time(s) from its last epoch", file=sys.stderr)
                import ray

                res = exp.resources
                slots = int(ray.cluster_resources().get("CPU", 1) // res.cpus_per_trial) or 1
                concurrency = min(len(pending), slots, res.max_concurrent or len(pending))
                progress = Progress(len(cells), len(done), [c.to_dict() for c in pending], concurrency=concurrency)
                run_train_phase(pending, paths=paths, exp=exp, cells_dir=cells_dir, storage_path=storage_path,
                                progress=progress, max_failures=max_failures, provenance=provenance)
                groups = bench_groups(cells, cells_dir, metas)
            bench_failed = run_bench_phase(groups, metas=metas, cells_dir=cells_dir, exp=exp,
                                           storage_path=storage_path)

    records = [read_record(cells_dir / f"{c.cell_id}.json") for c in cells]
    failed = [(c, r) for c, r in zip(cells, records) if not r or r.get("status") == "failed"]
    diverged = [c for c, r in zip(cells, records) if r and r.get("status") == "diverged"]
    print(f"[sweep] finished: {len(cells) - len(failed) - len(diverged)} ok, {len(diverged)} diverged, "
          f"{len(failed)} failed, {bench_failed} bench measurement(s) failed", file=sys.stderr)
    for c, r in failed:
        reason = ((r or {}).get("error") or "no result written").strip().splitlines()
        print(f"[sweep] FAILED {c.cell_id} {c.label()}: {reason[0] if reason else ''}", file=sys.stderr)
    if (failed or bench_failed) and not allow_failures:
        print("[sweep] rerun `dvc repro` to retry only the failed cells and measurements, or set "
              "sweep.allow_failures: true to report with the gaps shown", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
