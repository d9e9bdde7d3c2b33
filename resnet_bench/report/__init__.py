"""The `report` stage: findings, figures, paper tables and `report.md` from one experiment's results folder.

Reads `<results>/cells.parquet` and `<results>/epochs.parquet` (written by
`collect`), and when present `<results>/excluded.csv` (cells on disk that are not
part of the current grid/code: listed, never averaged) and
`<results>/experiment.json` (the resolved experiment: recipe, and the paper's
numbers, shown only when `paper_comparable` is true). `resnet-bench report
--results DIR --out DIR` redraws everything without retraining. Writes under `--out`:

- `figures/<name>.{pdf,png[,svg]}` (params.yaml `report.formats`; PDF by default,
  PNG for report.md): accuracy vs depth, paired difference v2 - v1, accuracy vs
  parameters and FLOPs, throughput and memory (IQR bars), Pareto front, error vs
  iterations (He et al. 2016 Fig. 1/6 style), residual units;
- `tables/<name>.{tex,csv}`: LaTeX no wider than `\\columnwidth`, and full precision;
- `report.md`: findings, figures, tables, failures, excluded cells, methods.

Modules: `stats` (pure tables), `tables` (Markdown/LaTeX formatting), `findings`
(the written findings), `figures` (drawing), `markdown` (assembly), `compare`
(`resnet-bench compare A B`). Same inputs give byte-identical files across runs,
folders and PYTHONHASHSEED (see `figures`). Intervals are Student-t (exact).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from resnet_bench.report.figures import FORMATS, VERSION_COLORS, VERSION_MARKERS  # noqa: F401  (public names)
from resnet_bench.report.findings import verdict, version_findings  # noqa: F401
from resnet_bench.report.markdown import build_report, figure_plan  # noqa: F401
from resnet_bench.report.stats import (EXCLUDED_COLUMNS, SIGN_CONVENTION, accuracy_by_depth,  # noqa: F401
                                       bench_failures, failures, model_summary, paired_difference, paired_values,
                                       pareto_front, read_experiment, t_interval, units_error, units_table,
                                       versions_table)
from resnet_bench.report.tables import latex_natural_width_pt, to_latex, to_markdown  # noqa: F401
from resnet_bench.argparsing import Parser

CONTEXTS = ("paper", "notebook", "talk", "poster")
# report settings: CLI flags and params.yaml `report:` keys have the same names
REQUIRED_CELL_COLUMNS = ("cell_id", "status", "error", "experiment", "dataset", "model", "version", "unit", "depth",
                         "seed", "test_acc", "params", "fwd_gflops", "train_img_per_s", "bench_train_img_per_s",
                         "bench_infer_img_per_s", "peak_mem_mib", "bench_enabled", "bench_error")
REQUIRED_EPOCH_COLUMNS = ("cell_id", "status", "experiment", "dataset", "model", "version", "unit", "depth", "seed",
                          "epoch", "train_loss", "train_acc", "val_acc")


class SettingsError(ValueError):
    pass


SETTINGS_FLAGS = {"formats": "--formats", "dpi": "--dpi", "context": "--context", "pdf": "--pdf",
                  "allow_missing": "--allow-missing"}


def resolve_settings(params_path: str | None, cli: dict) -> dict:
    """Defaults, then the params file's `report:` section, then the command line (same names everywhere).

    Validated by the schema (resnet_bench.config.ReportParams), one line per problem.
    """
    from resnet_bench import config as cfg

    try:
        section = (cfg.load_yaml(params_path).get("report") or {}) if params_path else {}
        base = cfg.validate(cfg.ReportParams, section, str(params_path), "report")
        given = {k: v for k, v in cli.items() if v is not None}
        if isinstance(given.get("formats"), str):
            given["formats"] = [f.strip() for f in given["formats"].split(",") if f.strip()]
        merged = cfg.validate_flags(cfg.ReportParams, {**base.model_dump(), **given}, SETTINGS_FLAGS)
    except cfg.ConfigError as err:
        raise SettingsError(str(err)) from None
    s = merged.model_dump()
    s["formats"] = list(dict.fromkeys(s["formats"]))
    if s["pdf"] and "pdf" not in s["formats"]:
        s["formats"].append("pdf")
    return s


def load_settings(params_path: str | None) -> dict:
    """Settings from a params file alone (defaults for absent keys)."""
    return resolve_settings(params_path, {})


def parse_args(argv):
    from resnet_bench.config import ReportParams

    d = ReportParams()  # the defaults when no --params file sets them
    p = Parser(prog="resnet-bench report",
                                description="Findings, figures, LaTeX tables and report.md from one results folder "
                                            "(cells.parquet + epochs.parquet [+ excluded.csv, experiment.json]); "
                                            "no training.")
    p.add_argument("--results", help="folder with cells.parquet and epochs.parquet (default: results/<experiment> "
                                     "of --params' sweep.experiment, else results)")
    p.add_argument("--out", help="folder for figures/, tables/ and report.md (default: reports/<experiment> of "
                                 "--params, else reports)")
    p.add_argument("--params", help="take settings from this YAML file's `report:` section (flags override; "
                                    "default: none, the schema's defaults)")
    p.add_argument("--formats", help=f"comma-separated figure formats: {', '.join(FORMATS)} "
                                     f"(default: --params', else {','.join(d.formats)})")
    p.add_argument("--dpi", type=int, help=f"raster resolution for PNG (default: --params', else {d.dpi})")
    p.add_argument("--context", choices=CONTEXTS, help=f"seaborn context: font scale (default: --params', "
                                                       f"else {d.context})")
    p.add_argument("--pdf", action=argparse.BooleanOptionalAction, default=None,
                   help=f"also write PDF figures (default: --params', else {'on' if d.pdf else 'off'})")
    p.add_argument("--allow-missing", dest="allow_missing", action=argparse.BooleanOptionalAction, default=None,
                   help="with --no-allow-missing, exit 1 (after writing the report) when any cell is missing or "
                        "failed (default: allowed, the gaps are listed)")
    return p.parse_args(argv)


def read_excluded(results: Path) -> pd.DataFrame | None:
    """`<results>/excluded.csv` (may be absent), every cell checked (names, ids, vocabulary); a file without
    the contract's columns is a TableError naming them."""
    from resnet_bench.columns import EXCLUDED_COLUMNS as SPEC
    from resnet_bench.columns import read_table

    path = Path(results) / "excluded.csv"
    if not path.exists() and not path.is_symlink():
        return None
    spec = [c for c in SPEC if c[0] in EXCLUDED_COLUMNS]
    return read_table(path, spec=spec, required=tuple(EXCLUDED_COLUMNS))[EXCLUDED_COLUMNS]


def load_results(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """cells.parquet and epochs.parquet, every cell checked against its column's contract (kind, range,
    names); a missing file, column or bad value is one line naming it."""
    from resnet_bench.columns import read_table

    out = []
    for name, required in (("cells", REQUIRED_CELL_COLUMNS), ("epochs", REQUIRED_EPOCH_COLUMNS)):
        path = Path(results) / f"{name}.parquet"
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(f"{path} not found; run `resnet-bench collect` (or `dvc repro collect`) first")
        out.append(read_table(path, required=required))
    return out[0], out[1]


def main(argv=None) -> int:
    from resnet_bench.config import ConfigError
    from resnet_bench.inputs import InputError
    from resnet_bench.inputs import user_path
    from resnet_bench.outputs import OutputError
    from resnet_bench.report.markdown import output_dir

    args = parse_args(argv)
    try:
        if args.params and (args.results is None or args.out is None):
            # The DVC stage's way: the experiment's folders from params.yaml, no path on its command line.
            from resnet_bench.config import ConfigError, load_params

            try:
                experiment = load_params(args.params).sweep.experiment
            except ConfigError as err:
                raise SettingsError(str(err)) from None
            args.results = str(Path("results") / experiment) if args.results is None else args.results
            args.out = str(Path("reports") / experiment) if args.out is None else args.out
        args.results = "results" if args.results is None else args.results
        args.out = "reports" if args.out is None else args.out
        settings = resolve_settings(args.params, {"formats": args.formats, "dpi": args.dpi, "context": args.context,
                                                  "pdf": args.pdf, "allow_missing": args.allow_missing})
        out = output_dir(args.out).prepare()  # before reading or drawing anything
        results = user_path(args.results, "--results")
        cells, epochs = load_results(results)
        excluded, experiment = read_excluded(results), read_experiment(results)
    except (SettingsError, FileNotFoundError, ValueError, InputError, OutputError, ConfigError) as err:
        for line in getattr(err, "problems", None) or str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    path = build_report(cells, epochs, out, formats=settings["formats"], dpi=settings["dpi"],
                        context=settings["context"], experiment=experiment, excluded=excluded,
                        experiment_source=f"{results.name}/experiment.json")
    gaps = cells[cells["status"].isin(["missing", "failed"])]
    if excluded is not None and len(excluded):
        gaps = gaps[~gaps["cell_id"].isin(set(excluded["cell_id"]))]
    print(f"report: {path} ({len(cells)} cells; figures as {', '.join(settings['formats'])})")
    if len(gaps) and not settings["allow_missing"]:
        print(f"error: {len(gaps)} cell(s) missing or failed (listed in {path}); allow_missing is false",
              file=sys.stderr)
        return 1
    return 0
