"""The `collect` stage: every cell result into tidy pandas tables.

Reads an experiment's results folder, `results/<experiment>/`: its
`cells/<cell_id>.json` (the cell-result contract of docs/ARCHITECTURE.md) and
the sweep's `expected_cells.json` (the current grid, code and data), and
writes there:

- `cells.csv`, `cells.parquet`: one row per cell of the current grid (config,
  final metrics, status and error, provenance). Failed, diverged and missing
  cells keep their row; nothing is dropped. Every result file is read through
  the typed record schema (`resnet_bench.sweep.records`): a file that does not
  follow it is refused with one line naming the file, the key and the value.
- `excluded.csv`: result files on disk that are not cells of the current grid
  and code (an earlier recipe, code or data version), with the reason; they
  stay on disk and out of every table, mean and figure.
- `epochs.csv`, `epochs.parquet`: one row per cell-epoch (learning curves of
  every cell that recorded epochs, whatever its status).
- `curves/<dataset>.csv`: per depth, v1 and v2 train/validation error (%)
  per epoch, mean over ok seeds, one row per (depth, version, split, epoch),
  drawn by dvc.yaml's top-level `plots:` with `.dvc/plots/v1v2_curves.json`.
- `metrics.json`: a handful of headline numbers per dataset, for `dvc metrics
  show` and `dvc exp show` (everything else is in the tables).

Every column is declared once in `CELL_COLUMNS` / `EPOCH_COLUMNS` / `CURVE_COLUMNS`
(name, dtype, unit, meaning; `resnet_bench.columns`): the tables' column order
and dtypes, docs/results_schema.md (`python -m resnet_bench.collect
--schema-doc`) and the checks of a table read back all come from there, so the
schema does not depend on which cells happened to finish. The folder is written
under the output policy (`resnet_bench.outputs`): collect owns only its tables,
curves and metrics.json there.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_bench.argparsing import Parser
from resnet_bench.columns import (CELL_COLUMNS, CELL_SORT, CURVE_COLUMNS, CURVE_VERSIONS, DTYPES,  # noqa: F401
                                  EPOCH_COLUMNS, EPOCH_FIELDS, EPOCH_KEY_COLUMNS, EPOCH_SORT, EXCLUDED_COLUMNS,
                                  NUMERIC_COLUMNS, TEXT_COLUMNS, TableError, check_frame, read_table, sort_rows,
                                  typed_frame)
from resnet_bench.config import Cell
from resnet_bench.inputs import InputError, user_path
from resnet_bench.outputs import OutputDir, OutputError, guard_frame
from resnet_bench.sweep import records as records_io
from resnet_bench.sweep.records import REQUIRED_OK_METRICS, CellRecord, Metrics, RecordError, parse_record, read_record
from resnet_bench.sweep.results_dir import COLLECT_LAYOUT, DVC_FILES, SWEEP_KEEP, SWEEP_LAYOUT
from resnet_bench.vocab import CELL_STATUSES as STATUSES
from resnet_bench.vocab import RECORD_STATUSES as RESULT_STATUSES  # noqa: F401  (what a result file may say)
from resnet_bench.vocab import UNITS as UNIT_ORDER  # noqa: F401  (He et al. 2016 Fig. 4 order (a)-(e); report uses it)
from resnet_bench.vocab import VERSION_UNIT


class CollectError(ValueError):
    """Result files that cannot be collected: one line per file."""


# ---- reading and validating ------------------------------------------------------------------------


def read_cells(cells_dir: str | Path) -> list[CellRecord]:
    """Every `*.json` under cells_dir as a typed record (resnet_bench.sweep.records), sorted by name.

    A file that is not a valid record named by its id is a CollectError line naming it and the
    fault (all such files are listed). A missing folder reads as no cells (the sweep may not have
    finished one). Other files (notes, temporary files) are not read.
    """
    cells_dir = Path(cells_dir)
    if (cells_dir.exists() or cells_dir.is_symlink()) and not cells_dir.is_dir():
        raise CollectError(f"--cells {cells_dir}: not a folder of <cell_id>.json results")
    records, errors = [], []
    for path in sorted(cells_dir.glob("*.json")) if cells_dir.is_dir() else []:
        try:
            records.append(read_record(path))
        except RecordError as err:
            errors.append(f"malformed cell result {err}")
    if errors:
        raise CollectError("\n".join(errors))
    return records


def read_expected(path: str | Path) -> list[Cell]:
    """The sweep's expected_cells.json (records.read_expected); a CollectError naming the file."""
    try:
        return records_io.read_expected(path)
    except RecordError as err:
        raise CollectError(f"malformed expected-cells file {err}") from None


# ---- rows ------------------------------------------------------------------------------------------------


def _config_row(c: Cell) -> dict:
    """The config columns of a cell (recipe, architecture, runtime, data and code identity)."""
    arch, r, rt = c.arch, c.recipe, c.runtime
    return {
        "experiment": c.experiment, "dataset": c.dataset, "model": c.model, "version": c.version,
        "unit": c.unit, "depth": c.depth, "seed": c.seed,
        "stem": arch.stem, "width": arch.width, "zero_init_residual": arch.zero_init_residual,
        "variant": arch.variant, "shortcut": arch.shortcut, "bottleneck_stride": arch.bottleneck_stride,
        "recipe": r.name, "optimizer": r.optimizer, "epochs": r.epochs, "batch_size": r.batch_size, "lr": r.lr,
        "momentum": r.momentum, "nesterov": r.nesterov, "weight_decay": r.weight_decay, "schedule": r.schedule,
        "milestones": json.dumps(list(r.milestones)), "gamma": r.gamma, "warmup_iters": r.warmup_iters,
        "warmup_lr": r.warmup_lr, "label_smoothing": r.label_smoothing,
        "crop_pad": r.augment.crop_pad, "flip": r.augment.flip,
        "device": rt.device, "amp": rt.amp, "channels_last": rt.channels_last, "compile": rt.compile,
        "compile_mode": rt.compile_mode, "tf32": rt.tf32,
        "threads": rt.threads, "deterministic": rt.deterministic, "bench_enabled": c.bench.enabled,
        "gpu_share": c.gpu_share, "world_size": c.world_size, "per_rank_batch": c.per_rank_batch,
        "bn_mode": c.bn_mode,
        "code_fingerprint": c.code_fingerprint or None,
        "data_sha256": c.data.content_sha256 if c.data else None,
    }


def _legacy_commit(text):
    """Records before provenance had `env.git_commit` ('<sha>[-dirty]' or 'unknown')."""
    return None if not text or text == "unknown" else str(text).removesuffix("-dirty")


def missing_row(cell: Cell) -> dict:
    """The row of an expected cell that has no result file."""
    return {"cell_id": cell.cell_id, "status": "missing", **_config_row(cell),
            "error": "no result file (not run yet, or the sweep was interrupted)"}


def cell_row(rec: CellRecord) -> dict:
    """One flat row of the cells table from a typed result record."""
    m, bench, meta = rec.metrics, rec.bench, rec.dataset_meta
    counts = meta.counts if meta else None
    env, prov = rec.env, rec.provenance
    hw = env.hardware if env else None
    git, node, numeric = (prov.git, prov.node, prov.numeric) if prov else (None, None, None)
    commit, dirty = (git.commit, git.dirty) if git else (None, None)
    legacy = _legacy_commit(env.git_commit) if env else None
    if not commit and legacy:  # the legacy '<sha>-dirty' says dirty too
        commit, dirty = legacy, str(env.git_commit).endswith("-dirty")
    last = rec.epochs[-1] if rec.epochs else None
    metric_cols = {name: getattr(m, name) for name in Metrics.model_fields}
    return {
        **metric_cols,
        "cell_id": rec.cell_id, "status": rec.status, "error": rec.error, **_config_row(rec.config),
        "num_classes": meta.num_classes if meta else None,
        "n_train": counts.train if counts else None, "n_val": counts.val if counts else None,
        "n_test": counts.test if counts else None,
        "test_error_pct": None if m.test_acc is None else 100.0 * (1.0 - m.test_acc),
        # Older records lack these: the last epoch holds them.
        "final_val_acc": m.final_val_acc if m.final_val_acc is not None else (last.val_acc if last else None),
        "final_train_loss": m.final_train_loss if m.final_train_loss is not None else (
            last.train_loss if last else None),
        "epochs_completed": m.epochs_completed if m.epochs_completed is not None else len(rec.epochs),
        "wall_s": rec.wall_s,
        "bench_train_img_per_s_iqr": bench.train_img_per_s_iqr if bench else None,
        "bench_infer_img_per_s_iqr": bench.infer_img_per_s_iqr if bench else None,
        "peak_mem_mib": None if m.peak_mem_bytes is None else m.peak_mem_bytes / 2**20,
        "peak_mem_source": bench.peak_mem_source if bench else None,
        "bench_error": rec.bench_error,
        "git_commit": commit, "git_dirty": dirty,
        "node_hostname": node.hostname if node else None,
        "aten_cpu_capability": numeric.aten_cpu_capability if numeric else None,
        "numeric_pinned": numeric.pinned if numeric else None,
        **{k: getattr(numeric, k, None) if numeric else None for k in ("numeric_pin", "mkl_cbwr_branch",
                                                                       "onednn_enabled")},
        "matmul_fp32_precision": numeric.matmul_fp32_precision if numeric else None,
        "conv_fp32_precision": numeric.conv_fp32_precision if numeric else None,
        "cudnn_deterministic": numeric.cudnn_deterministic_effective if numeric else None,
        "torch_version": env.versions.get("torch") if env else None,
        **{col: getattr(hw, key) if hw else None for col, key in (
            ("cuda_version", "cuda"), ("python_version", "python"), ("platform", "platform"),
            ("cpu_model", "cpu_model"), ("cpu_count", "cpu_count"), ("gpu_name", "gpu_name"),
            ("gpu_count", "gpu_count"), ("torch_threads", "torch_threads"))},
        "started_at": rec.started_at, "finished_at": rec.finished_at,
    }


def _records(records) -> list[CellRecord]:
    """Typed records (plain dicts, e.g. from a test, go through the schema too)."""
    return [r if isinstance(r, CellRecord) else parse_record(r, f"record {r.get('cell_id') if isinstance(r, dict) else r!r}")
            for r in records]


def _cells(expected) -> list[Cell] | None:
    """Typed expected cells from Cells or `{cell_id, config}` items (as expected_cells.json holds them)."""
    if expected is None:
        return None
    return [e if isinstance(e, Cell) else Cell.model_validate({**e["config"], "cell_id": e["cell_id"]})
            for e in expected]


# Config parts whose change makes an old result a different cell, in the order a reason names them.
_IDENTITY_PARTS = ("code_fingerprint", "data", "recipe", "arch", "runtime", "bench")


def _key(c: Cell) -> tuple:
    return (c.experiment, c.dataset, c.model, c.unit, c.seed)


def exclusion_reason(config: Cell, expected: list[Cell]) -> str:
    """Why a result on disk is not a cell of the current grid: what differs from its counterpart."""
    twins = [e for e in expected if _key(e)[1:] == _key(config)[1:]]
    if not twins:
        return "model/dataset/seed not in the current grid"
    diff = [p for p in _IDENTITY_PARTS if getattr(config, p) != getattr(twins[0], p)]
    if not diff:
        return "config differs from the current grid's (other keys)"
    names = {"code_fingerprint": "training code changed", "data": "prepared data changed"}
    return "; ".join(names.get(p, f"{p} differs") for p in diff)


def split_current(records, expected) -> tuple[list[CellRecord], pd.DataFrame]:
    """(records of the current grid, table of the others with the reason each is left out).

    Without the expected grid, two records of the same experiment, model, unit, dataset and seed
    (an earlier recipe's beside the current one, or a forged copy) are refused: both would be
    averaged as if they were two seeds.
    """
    records, expected = _records(records), _cells(expected)
    if expected is None:
        seen: dict[tuple, str] = {}
        for r in records:
            other = seen.setdefault(_key(r.config), r.cell_id)
            if other != r.cell_id:
                raise CollectError(f"cells {other} and {r.cell_id} are both {r.config.label()} with different "
                                   "configs; give the sweep's expected_cells.json (--expected) to pick the current "
                                   "grid, or move the stale one away")
        return records, typed_frame([], EXCLUDED_COLUMNS)
    grid = {e.cell_id for e in expected}
    current = [r for r in records if r.cell_id in grid]
    rows = [{"cell_id": r.cell_id, "status": r.status,
             **{k: getattr(r.config, k) for k in ("experiment", "dataset", "model", "version", "unit", "depth", "seed")},
             "reason": exclusion_reason(r.config, expected)}
            for r in records if r.cell_id not in grid]
    return current, sort_rows(typed_frame(rows, EXCLUDED_COLUMNS), ["reason", *CELL_SORT])


def cells_table(records, expected=None) -> pd.DataFrame:
    """One row per cell; an expected cell without a result file gets a row with status `missing`.

    `records` should be the current grid's (split_current).
    """
    records = _records(records)
    rows = [cell_row(r) for r in records]
    have = {r.cell_id for r in records}
    for cell in _cells(expected) or []:
        if cell.cell_id not in have:
            have.add(cell.cell_id)
            rows.append(missing_row(cell))
    return sort_rows(typed_frame(rows, CELL_COLUMNS), CELL_SORT)


def epochs_table(records) -> pd.DataFrame:
    """One row per recorded epoch of every cell (a failed cell keeps what it measured)."""
    rows = []
    for rec in _records(records):
        c = rec.config
        key = {"cell_id": rec.cell_id, "status": rec.status, **{k: getattr(c, k) for k in EPOCH_KEY_COLUMNS[2:]}}
        for e in rec.epochs:
            rows.append({**key, **{k: getattr(e, k) for k, *_ in EPOCH_FIELDS}})
    return sort_rows(typed_frame(rows, EPOCH_COLUMNS), EPOCH_SORT)


def curve_file_name(dataset: str) -> str:
    """File-name-safe name of one dataset's curve file (dataset names are already a safe charset)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", dataset)


def curves(epochs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per dataset: v1 (unit a) and v2 (unit e) train and validation error (%) per depth and epoch, mean over
    each version's ok seeds (ablation units (b)-(d) are in epochs.csv, not here)."""
    plain = np.array([VERSION_UNIT.get(v) == u for v, u in zip(epochs["version"], epochs["unit"])], dtype=bool)
    ok = epochs[(epochs["status"] == "ok").to_numpy(dtype=bool) & plain]
    out = {}
    for ds, g in ok.groupby("dataset", sort=True):
        rows = []
        for (exp, depth, version, epoch), e in g.groupby(["experiment", "depth", "version", "epoch"], sort=True):
            for split, col in (("validation", "val_acc"), ("train", "train_acc")):
                # rounded to 1e-6 pp so that the CSV reads 71.5, not 71.50000000000001
                rows.append({"experiment": exp, "dataset": ds, "network": f"ResNet-{int(depth)}",
                             "depth": int(depth), "version": version, "split": split, "epoch": int(epoch),
                             "error_pct": round(100 * (1 - float(e[col].mean())), 6),
                             "n_seeds": int(e["seed"].nunique())})
        out[curve_file_name(str(ds))] = typed_frame(rows, CURVE_COLUMNS)
    return dict(sorted(out.items()))


# ---- metrics.json ----------------------------------------------------------------------------------------


def _r(v, digits: int = 6) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


def paired_v2_minus_v1(cells: pd.DataFrame) -> pd.DataFrame:
    """v2 - v1 test accuracy (percentage points) per (dataset, depth, seed) where both are ok."""
    ok = cells[(cells["status"] == "ok") & cells["unit"].isin(list(VERSION_UNIT.values()))]
    wide = ok.pivot_table(index=["dataset", "depth", "seed"], columns="version", values="test_acc",
                          aggfunc="first")
    if not {"v1", "v2"} <= set(wide.columns):
        return pd.DataFrame(columns=["dataset", "depth", "seed", "diff_pp"])
    wide = wide.dropna(subset=["v1", "v2"])
    return pd.DataFrame({"diff_pp": 100.0 * (wide["v2"] - wide["v1"])}).reset_index()


def t_interval95(values) -> tuple[float | None, float | None]:
    """Two-sided 95% Student-t interval of the mean; (None, None) under two values."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return None, None
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


# metrics.json: per dataset these keys, then the experiment's cell counts (`make exp-show` keeps them visible).
HEADLINE_DATASET_KEYS = ("v1_acc", "v2_acc", "v2-v1_pp", "ci95_pp")
HEADLINE_COUNT_KEYS = ("ok", "not_ok")


def headline_metrics(cells: pd.DataFrame) -> dict:
    """The handful of numbers `dvc exp show` shows for an experiment (everything else is in the tables; units
    (b)-(d) of the ablation are in cells.csv only). Per dataset:

    - `v1_acc`, `v2_acc`: mean over depths of the mean test accuracy (fraction 0..1) over ok seeds;
    - `v2-v1_pp`: mean paired v2 - v1 test accuracy over (depth, seed) pairs where both are ok, in
      percentage points, and `ci95_pp` the half-width of its 95% Student-t interval (null under 2 pairs);

    and for the whole experiment `ok`, `not_ok`: cells with an ok result, and cells without one (failed,
    diverged or missing). Key order is the column order of `dvc exp show`.
    """
    out: dict = {}
    plain = cells[cells["unit"].isin(list(VERSION_UNIT.values()))]
    pairs = paired_v2_minus_v1(cells)
    for ds in sorted(set(cells["dataset"])):
        ok = plain[(plain["dataset"] == ds) & (plain["status"] == "ok")]
        row: dict = {}
        for version in CURVE_VERSIONS:
            per_depth = ok[ok["version"] == version].groupby("depth")["test_acc"].mean()
            row[f"{version}_acc"] = _r(per_depth.mean(), 4) if len(per_depth) else None
        diff = pairs.loc[pairs["dataset"] == ds, "diff_pp"]
        lo, hi = t_interval95(diff)
        row["v2-v1_pp"] = _r(diff.mean(), 2) if len(diff) else None
        row["ci95_pp"] = None if lo is None else _r((hi - lo) / 2, 2)
        # a dataset named like a count key keeps its numbers under `dataset_<name>` (documented)
        out[f"dataset_{ds}" if ds in HEADLINE_COUNT_KEYS else str(ds)] = row
    out["ok"] = int((cells["status"] == "ok").sum())
    out["not_ok"] = int((cells["status"] != "ok").sum())
    return out


# ---- writing -----------------------------------------------------------------------------------------------


def output_dir(out: str | Path, flag: str = "--out") -> OutputDir:
    """collect's outputs folder (results/<experiment>/ by default): it owns its tables, curves/ and
    metrics.json there, and leaves the sweep's cells/, expected_cells.json and experiment.json alone."""
    return OutputDir(out, writer="collect", flag=flag, layout=COLLECT_LAYOUT,
                     siblings=(*SWEEP_LAYOUT, *SWEEP_KEEP, *DVC_FILES))


def _write_csv(out: OutputDir, rel: str, df: pd.DataFrame) -> None:
    with out.file(rel) as tmp:
        guard_frame(df).to_csv(tmp, index=False, lineterminator="\n")


def write_outputs(cells: pd.DataFrame, epochs: pd.DataFrame, out: str | Path | OutputDir,
                  excluded: pd.DataFrame | None = None) -> dict[str, Path]:
    """The tables, curves and metrics.json, each written atomically; curves of models no longer in the
    results (collect's own earlier files) are removed, nothing else is."""
    out = out if isinstance(out, OutputDir) else output_dir(out).prepare()
    excluded = typed_frame([], EXCLUDED_COLUMNS) if excluded is None else excluded
    _write_csv(out, "excluded.csv", excluded)
    for name, df in (("cells", cells), ("epochs", epochs)):
        _write_csv(out, f"{name}.csv", df)
        with out.file(f"{name}.parquet") as tmp:
            df.to_parquet(tmp, index=False)
    for name, df in curves(epochs).items():
        _write_csv(out, f"curves/{name}.csv", df)
    # Key order is dvc exp show's column order (headline_metrics): not sorted.
    out.write_text("metrics.json", json.dumps(headline_metrics(cells), indent=1) + "\n")
    out.finish()
    return {rel: out.root / rel for rel in sorted(out.written)}


def _table_doc(spec) -> list[str]:
    lines = ["| column | type | unit | meaning |", "| --- | --- | --- | --- |"]
    return lines + [f"| `{c}` | {d} | {u} | {m} |" for c, d, u, m in spec]


def schema_doc() -> str:
    lines = [
        "# Results schema", "",
        "Generated from `resnet_bench/collect.py` by `python -m resnet_bench.collect --schema-doc > "
        "docs/results_schema.md`; a test checks that the two agree and that every column of the tables is "
        "listed here.", "",
        "`resnet-bench collect --cells results/cells --out results [--expected results/expected_cells.json]` "
        "reads the cell results (docs/ARCHITECTURE.md, *Cell result*) and writes the files below. Types: "
        "`str` text, `int` integer (nullable), `float` (NaN when absent), `bool` (nullable); an empty CSV field "
        "is a null. Accuracies are fractions in 0..1, errors are percent. "
        "`resnet_bench.collect.read_table(path)` reads a CSV or parquet back with these types.", "",
        "Each experiment has its own folder, `results/<experiment>/`.", "",
        "## results/<experiment>/cells.csv, cells.parquet", "",
        "One row per cell of the current grid and code (`expected_cells.json`): its result, or a row with status "
        "`missing` when it has no result file. Nothing is dropped: failed and diverged cells keep their "
        "row with whatever they measured. Every result file is validated by the record schema "
        "(`resnet_bench.sweep.records`) first: a file that does not follow it (a value out of range, an id that "
        "is not its config's hash, an `ok` record without a finite "
        f"{'/'.join(REQUIRED_OK_METRICS)}) is refused with one line naming it, never counted. Text cells of the "
        "CSV files that a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`) are written "
        "with a leading `'`; `read_table` removes it. Rows sorted by experiment, dataset, version, "
        "unit (He et al. Fig. 4 order), depth, seed, cell_id.", "",
        *_table_doc(CELL_COLUMNS), "",
        "## results/<experiment>/excluded.csv", "",
        "Result files on disk that are not cells of the current grid and code (an earlier recipe, training code "
        "or prepared data): kept on disk, out of every table, mean and figure; the report lists them.", "",
        *_table_doc(EXCLUDED_COLUMNS), "",
        "## results/<experiment>/epochs.csv, epochs.parquet", "",
        "One row per recorded epoch of every current cell, whatever its status (filter on `status == \"ok\"` "
        "for clean curves). Sorted like the cells, then by epoch.", "",
        *_table_doc(EPOCH_COLUMNS), "",
        "## results/<experiment>/curves/<dataset>.csv", "",
        "One file per dataset: v1 (unit a) and v2 (unit e), mean over ok seeds at each epoch, one row per (depth, "
        "version, split, epoch). dvc.yaml's top-level `plots:` draws each file with the template "
        "`.dvc/plots/v1v2_curves.json`: one panel per depth (numeric order), v1/v2 by colour, train/validation "
        "by dash, one row of panels per revision in `dvc plots diff`.", "",
        *_table_doc(CURVE_COLUMNS), "",
        "## results/<experiment>/metrics.json", "",
        "A handful of headline numbers per dataset, then the experiment's cell counts, for `dvc metrics show` and "
        "`dvc exp show` (`resnet-bench exp-show`); everything else is in the tables. Units (b)-(d) of the ablation "
        "are in cells.csv only.", "",
        "| key | type | unit | meaning |", "| --- | --- | --- | --- |",
        "| `<dataset>.v1_acc`, `<dataset>.v2_acc` | float | fraction 0..1 | mean over depths of the mean test "
        "accuracy over ok seeds (units (a)/(e)); null when the version has no ok cell |",
        "| `<dataset>.v2-v1_pp` | float | percentage points | mean of v2 - v1 test accuracy over (depth, seed) "
        "pairs where both are ok |",
        "| `<dataset>.ci95_pp` | float | percentage points | half-width of the 95% Student-t interval of that "
        "mean (null under 2 pairs) |",
        "| `ok` | int | cells | cells with status `ok` |",
        "| `not_ok` | int | cells | cells without an ok result (`failed`, `diverged` or `missing`: see cells.csv) |",
        "", "A dataset named `ok` or `not_ok` has its numbers under `dataset_ok` / `dataset_not_ok`.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv):
    p = Parser(prog="resnet-bench collect", description="Tidy tables of every cell result.")
    p.add_argument("--results", help="the experiment's results folder (results/<experiment>): reads cells/ and "
                                     "expected_cells.json there and writes the tables there (default: the one "
                                     "--params names)")
    p.add_argument("--params", help="params file whose sweep.experiment names the results folder "
                                    "(results/<experiment>; the DVC stage's way, no path on its command line; "
                                    "default: none, --results is needed)")
    p.add_argument("--cells", help="folder of <cell_id>.json results (default: RESULTS/cells)")
    p.add_argument("--expected", help="expected_cells.json (default: RESULTS/expected_cells.json): cells of the "
                                      "current grid; others are excluded, expected ones without a file are missing")
    p.add_argument("--out", help="a folder for the tables, curves/ and metrics.json (default: RESULTS)")
    p.add_argument("--schema-doc", action="store_true", help="print the column documentation (markdown) and exit")
    p.add_argument("--json", action="store_true", help="print the summary (counts, exclusions, the headline "
                                                       "metrics of metrics.json) as one JSON document")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.schema_doc:
        sys.stdout.write(schema_doc())
        return 0
    if args.params and args.results is None:
        from resnet_bench.config import ConfigError, load_params

        try:
            args.results = str(Path("results") / load_params(args.params).sweep.experiment)
        except ConfigError as err:
            print("\n".join(f"error: {line}" for line in err.problems), file=sys.stderr)
            return 2
    if args.results is None and (args.cells is None or args.out is None):
        print("error: resnet-bench collect: give --results DIR (or --params, or --cells and --out)", file=sys.stderr)
        return 2
    try:
        # An empty value is a given value (refused by user_path as an empty path), not an absent one.
        root = user_path(args.results, "--results") if args.results is not None else None
        cells_dir = user_path(args.cells, "--cells") if args.cells is not None else root / "cells"
        expected_path = (user_path(args.expected, "--expected") if args.expected is not None else
                         (root / "expected_cells.json" if root else None))
        # before reading: a folder it may not write fails first
        out = output_dir(root if args.out is None else args.out, "--results" if args.out is None else "--out").prepare()
        records = read_cells(cells_dir)
        expected = None
        if expected_path is not None:
            if expected_path.exists():
                expected = read_expected(expected_path)
            else:
                print(f"note: {expected_path} not found; every result file counts, and cells not yet run "
                      "cannot be listed as missing", file=sys.stderr)
        current, excluded = split_current(records, expected)
    except (CollectError, OutputError, InputError) as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 1 if isinstance(err, CollectError) else 2
    cells, epochs = cells_table(current, expected), epochs_table(current)
    write_outputs(cells, epochs, out, excluded)
    by_status = {s: int((cells["status"] == s).sum()) for s in STATUSES}
    by_reason = {str(r): int(n) for r, n in excluded["reason"].value_counts(sort=False).sort_index().items()}
    if args.json:
        import json

        from resnet_bench.console import print_json

        metrics = out.root / "metrics.json"
        print_json({"out": str(out.root), "cells": len(cells), "status": by_status, "epoch_rows": len(epochs),
                    "excluded": by_reason, "metrics": json.loads(metrics.read_text()) if metrics.exists() else None})
        return 0
    counts = ", ".join(f"{s} {n}" for s, n in by_status.items())
    print(f"collected {len(cells)} cells ({counts}), {len(epochs)} epoch rows, {len(excluded)} excluded "
          f"-> {out.root}")
    for reason, n in by_reason.items():
        print(f"  excluded {n}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
