"""`resnet-bench verify`: retrain committed cells and say whether their numbers reproduce.

What is promised (README, "Reproducibility"): under the same numeric environment
(code, data, torch build, threads, and the numeric pin of deterministic CPU mode:
runtime.numeric_pin, resnet_bench.env.NUMERIC_PINS) a cell's numbers are
bit-identical; elsewhere they agree within seed noise. For each retrained cell this prints one verdict:

- `identical`: every recorded accuracy and loss equal to the last bit;
- `within seed spread`: test accuracy within 2 standard deviations of the
  cell's model over seeds (with one seed: 2 x the binomial sampling error of
  the test accuracy, sqrt(p (1 - p) / n_test));
- `outside`: further apart, which exits nonzero;
- `not verifiable`: the record's code or data differ from this checkout's.

Where the numeric environment differs from the record's, the parts that differ
are named. Inputs are the committed `results/<experiment>/expected_cells.json`
(full configs) and `cells.parquet` (numbers and environment), so a fresh clone
can verify without the cell records.

`--eval` retrains nothing: it re-evaluates the stored model files of every ok cell of the results
folder (`cells/<cell_id>.safetensors`, and `.best.safetensors` under sweep.keep_models: best; each
checked against the SHA-256 its record gives) in seconds per cell, and prints `identical` when the
model's test accuracy and loss equal the record's to the last bit, `differs` otherwise (with why), or
`missing` / `not verifiable` (a cell without its model file, data other than this checkout's).
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

# Numbers compared bit for bit (record column -> train_cell metric).
COMPARED = ("test_acc", "test_loss", "best_val_acc", "final_train_loss")
# Numeric-environment columns of cells.parquet compared with this process's.
ENV_COLUMNS = ("numeric_pin", "aten_cpu_capability", "mkl_cbwr_branch", "onednn_enabled", "numeric_pinned",
               "matmul_fp32_precision", "conv_fp32_precision",
               "torch_version", "torch_threads", "cpu_model", "gpu_name")


def load_committed(results: Path) -> tuple[list, "object"]:
    """(expected cells, cells table) of an experiment's results folder, both validated: every expected
    config a Cell whose id is its hash (resnet_bench.sweep.records), every table cell in its column's
    range (resnet_bench.columns). A problem is a ConfigError line naming the file."""
    from resnet_bench.columns import read_table
    from resnet_bench.config import ConfigError
    from resnet_bench.sweep.records import read_expected

    expected_path, table_path = results / "expected_cells.json", results / "cells.parquet"
    for p in (expected_path, table_path):
        if not p.exists() and not p.is_symlink():
            raise ConfigError(f"--results: {p} not found; give an experiment's results folder "
                              "(results/<experiment>) made by `dvc repro`")
    try:
        table = read_table(table_path, required=("cell_id", "status", "model", "unit", "dataset", *COMPARED,
                                                 "n_test"))
    except ValueError as err:  # InputError, TableError
        raise ConfigError(f"--results: {err}") from None
    try:
        return read_expected(expected_path), table
    except ConfigError as err:  # RecordError: e.g. a config of another schema version (a field added since)
        raise ConfigError(f"{err}; results written by another version of the code are regenerated with "
                          "`make repro` (or `dvc repro`)") from None


def tolerance(cells, row) -> tuple[float, str]:
    """Seed noise of a cell's test accuracy: 2 sd over its model's ok seeds, else 2 binomial sd."""
    same = cells[(cells["status"] == "ok") & (cells["model"] == row["model"]) & (cells["unit"] == row["unit"])
                 & (cells["dataset"] == row["dataset"])]
    if len(same) >= 2:
        return 2 * float(same["test_acc"].std(ddof=1)), f"2 sd over {len(same)} seeds"
    p, n = float(row["test_acc"]), int(row["n_test"])
    return 2 * math.sqrt(p * (1 - p) / n), f"2 x binomial sd of test accuracy (n_test {n}; 1 seed)"


def environment_now(device: str) -> dict:
    from resnet_bench.env import hardware, numeric_environment, package_versions

    num, hw = numeric_environment(device), hardware(device)
    return {**{k: num[k] for k in ("numeric_pin", "aten_cpu_capability", "mkl_cbwr_branch", "onednn_enabled")},
            "numeric_pinned": num["pinned"],
            "matmul_fp32_precision": num["matmul_fp32_precision"], "conv_fp32_precision": num["conv_fp32_precision"],
            "torch_version": package_versions(("torch",))["torch"], "torch_threads": hw["torch_threads"],
            "cpu_model": hw["cpu_model"], "gpu_name": hw["gpu_name"]}


def env_differences(row, now: dict) -> list[str]:
    out = []
    for key in ENV_COLUMNS:
        recorded = row.get(key)
        recorded = None if recorded is None or (isinstance(recorded, float) and math.isnan(recorded)) else recorded
        if recorded is not None and str(recorded) != str(now[key]):
            out.append(f"{key} {recorded} -> {now[key]}")
    return out


def verdict(row, record: dict, tol: float) -> str:
    m = record["metrics"]
    if all(m.get(k) == row[k] for k in COMPARED):
        return "identical"
    return "within seed spread" if abs(m["test_acc"] - row["test_acc"]) <= tol else "outside"


def _train_on_local_ranks(cell, prepared: Path) -> dict:
    """A multi-worker `Cell` retrained as its world_size processes of this machine (gloo on CPU, NCCL on
    GPUs), started with this process's (pinned) environment."""
    import os
    import shutil
    import tempfile

    from resnet_bench.parallel import launch_local

    work = Path(tempfile.mkdtemp(prefix="resnet-bench-verify-"))
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        return launch_local(cell.to_dict(), prepared, work, env=env,
                            backend="nccl" if cell.runtime.device == "cuda" else "gloo")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse_args(argv):
    from resnet_bench.argparsing import Parser

    p = Parser(prog="resnet-bench verify", description="Retrain committed cells; report whether they reproduce.")
    p.add_argument("--results", default="results/smoke", help="an experiment's results folder")
    p.add_argument("--prepared-dir", default="data/prepared", help="folder of prepared datasets")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--sample", type=int, default=2, help="retrain this many ok cells, chosen at random")
    group.add_argument("--all", action="store_true", help="retrain every ok cell")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    p.add_argument("--eval", action="store_true", help="retrain nothing: re-evaluate every ok cell's stored model "
                                                      "files (cells/*.safetensors) against its record")
    p.add_argument("--json", action="store_true", help="print the verdicts as one JSON document (full "
                                                       "precision) instead of one line per cell")
    return p.parse_args(argv)


def _eval_cells(results: Path) -> list:
    """(cell, record) of every ok cell of the results folder's grid, records validated."""
    from resnet_bench import config as cfg
    from resnet_bench.sweep.records import read_expected, read_record_if_any

    expected_path = results / "expected_cells.json"
    if not expected_path.exists() and not expected_path.is_symlink():
        raise cfg.ConfigError(f"--results: {expected_path} not found; give an experiment's results folder "
                              "(results/<experiment>) made by `dvc repro` (or `dvc pull`)")
    out = []
    for cell in read_expected(expected_path):
        rec = read_record_if_any(results / "cells" / f"{cell.cell_id}.json")
        if rec is not None and rec.status == "ok":
            out.append((cell, rec))
    if not out:
        raise cfg.ConfigError(f"--results: {results} has no ok cell record in cells/ (run `dvc pull` or `dvc repro`)")
    return out


def eval_verdict(path: Path, ref, rec, prepared: Path) -> tuple[str, str]:
    """One stored model file against its record: (verdict, detail)."""
    import hashlib
    import time

    from resnet_bench.config import ConfigError
    from resnet_bench.evaluate import evaluate_model_file
    from resnet_bench.inputs import InputError, open_regular
    from resnet_bench.models.files import read_model_file

    if not path.exists() and not path.is_symlink():
        return "missing", f"{path} not found (`dvc pull` fetches it)"
    try:
        with open_regular(path) as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except (InputError, OSError) as err:
        return "differs", str(err)
    if digest != ref.sha256:
        return "differs", f"{path.name}: SHA-256 {digest[:12]}... is not the record's {ref.sha256[:12]}..."
    t0 = time.perf_counter()
    try:
        mf = read_model_file(path)
        if mf.cell.cell_id != rec.cell_id:
            return "differs", f"{path.name} holds cell {mf.cell.cell_id}, not {rec.cell_id}"
        got = evaluate_model_file(mf, prepared)
    except (InputError, ConfigError) as err:  # ModelFileError: a model file refused
        return "differs", str(err)
    epoch = rec.epochs[ref.epoch - 1] if mf.kind == "best" else None
    want_acc, want_loss = (epoch.test_acc, epoch.test_loss) if epoch else (rec.metrics.test_acc, rec.metrics.test_loss)
    same = got["acc"] == want_acc and got["loss"] == want_loss
    return ("identical" if same else "differs",
            f"{mf.kind} (epoch {mf.epoch}): test_acc {want_acc!r} -> {got['acc']!r}, test_loss {want_loss!r} -> "
            f"{got['loss']!r} ({time.perf_counter() - t0:.1f} s)")


def eval_main(args) -> int:
    """`verify --eval`: every ok cell's stored models re-evaluated (no training)."""
    from resnet_bench import config as cfg
    from resnet_bench.data.sources import DatasetError
    from resnet_bench.inputs import InputError, user_path
    from resnet_bench.train import pin_numeric_environment

    try:
        results = user_path(args.results, "--results")
        pairs = _eval_cells(results)
        prepared = user_path(args.prepared_dir, "--prepared-dir")
        data_now = {ds: cfg.data_identity(prepared / ds) for ds in sorted({c.dataset for c, _ in pairs})}
    except (cfg.ConfigError, InputError, DatasetError) as err:
        print("\n".join(f"error: {line}" for line in getattr(err, "problems", [str(err)])), file=sys.stderr)
        return 2
    pin_numeric_environment(pairs[0][0])  # before any tensor is computed; the same for every cell here
    print(f"[verify] re-evaluating the stored models of {len(pairs)} ok cells of {args.results}", file=sys.stderr)
    counts: dict[str, int] = {}
    for cell, rec in pairs:
        refs = [r for r in ((rec.models.final, rec.models.best) if rec.models else ()) if r is not None]
        if cell.data != data_now[cell.dataset]:
            verdicts = [("not verifiable", "the record's prepared data differs from this checkout's (`dvc pull`)")]
        elif not refs:
            verdicts = [("missing", "the record keeps no model file (trained under sweep.keep_models: none); "
                                    "`resnet-bench verify` retrains it")]
        else:
            verdicts = [eval_verdict(results / "cells" / r.file, r, rec, prepared) for r in refs]
        for result, detail in verdicts:
            counts[result] = counts.get(result, 0) + 1
            print(f"{cell.cell_id}  {cell.label():<40} {result}: {detail}", flush=True)
    print("[verify] " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=sys.stderr)
    return 0 if set(counts) == {"identical"} else 1


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"  # 4 significant digits: what a seed's difference moves


def main(argv=None) -> int:
    from resnet_bench import config as cfg
    from resnet_bench.env import code_fingerprint
    from resnet_bench.inputs import InputError, user_path
    from resnet_bench.train import pin_numeric_environment, train_cell

    args = parse_args(argv)
    if args.eval:
        return eval_main(args)
    try:
        if args.sample < 1:
            raise cfg.ConfigError(f"--sample: {args.sample} is invalid: give at least 1 (or --all)")
        if args.seed < 0:
            raise cfg.ConfigError(f"--seed: {args.seed} is invalid: give a seed >= 0")
        expected, cells = load_committed(user_path(args.results, "--results"))
        by_id = {c.cell_id: c for c in expected}
        ok = cells[cells["status"] == "ok"].set_index("cell_id", drop=False)
        ids = sorted(set(ok.index) & set(by_id))
        if not ids:
            raise cfg.ConfigError(f"--results: {args.results} has no ok cell to verify")
        chosen = ids if args.all else sorted(random.Random(args.seed).sample(ids, min(args.sample, len(ids))))
        prepared = user_path(args.prepared_dir, "--prepared-dir")
        datasets = {by_id[i].dataset for i in chosen}
        data_now = {ds: cfg.data_identity(prepared / ds) for ds in sorted(datasets)}
    except (cfg.ConfigError, InputError) as err:
        print("\n".join(f"error: {line}" for line in getattr(err, "problems", [str(err)])), file=sys.stderr)
        return 2
    code_now = code_fingerprint()
    pin_numeric_environment(by_id[chosen[0]])  # before any computation; the same for every cell here
    from resnet_bench.progress import Progress

    print(f"[verify] {len(chosen)} of {len(ids)} ok cells of {args.results}", file=sys.stderr)
    counts: dict[str, int] = {}
    verdicts = []
    # Progress in epochs retrained (a cell can take minutes), named by the cell being trained.
    with Progress(label="verify", total=sum(by_id[i].recipe.epochs for i in chosen), unit="epochs") as bar:
        for cid in chosen:
            cell, row = by_id[cid], ok.loc[cid]
            entry = {"cell_id": cid, "label": cell.label(), "recorded_test_acc": float(row["test_acc"])}
            if cell.code_fingerprint != code_now or cell.data != data_now[cell.dataset]:
                why = "code" if cell.code_fingerprint != code_now else "prepared data"
                result, detail = "not verifiable", f"the record's {why} differs from this checkout's (run `make repro`)"
                bar.update(cell.recipe.epochs, note=f"{cell.label()}: {result}")
            else:
                if cell.world_size == 1:
                    record = train_cell(cell, prepared,
                                        on_epoch=lambda r, label=cell.label(): bar.update(1, note=label))
                else:  # a multi-worker cell on local ranks: its epochs counted when it is done
                    record = _train_on_local_ranks(cell, prepared)
                    bar.update(cell.recipe.epochs, note=cell.label())
                tol, how = tolerance(cells, row)
                result = verdict(row, record, tol)
                got = record["metrics"]["test_acc"]
                env = env_differences(row, environment_now(cell.runtime.device))
                entry.update(retrained_test_acc=got, diff_test_acc=got - row["test_acc"], tolerance=tol,
                             tolerance_basis=how, numeric_env_differences=env)
                detail = (f"test acc {_pct(row['test_acc'])} -> {_pct(got)} (diff {100 * (got - row['test_acc']):+.2f}"
                          f" pp, tolerance {100 * tol:.2f} pp: {how})"
                          + (f"; numeric environment differs: {', '.join(env)}" if env else
                             "; same numeric environment"))
            counts[result] = counts.get(result, 0) + 1
            verdicts.append({**entry, "verdict": result, "detail": detail})
            if not args.json:
                print(f"{cid}  {cell.label():<40} {result}: {detail}", flush=True)
    if args.json:
        from resnet_bench.console import print_json

        print_json({"results": str(args.results), "ok_cells": len(ids), "counts": counts, "cells": verdicts})
    print("[verify] " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), file=sys.stderr)
    return 1 if counts.get("outside") or counts.get("not verifiable") else 0


if __name__ == "__main__":
    raise SystemExit(main())
