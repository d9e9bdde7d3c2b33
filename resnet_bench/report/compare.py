"""`resnet-bench compare A B`: paired differences between two results folders (two experiments, or a run and a
baseline) for the cells they share.

Cells are paired on (dataset, model, unit, seed) where both are ok; the difference
is B - A in test accuracy, percentage points, with a 95% Student-t interval over
the pairs of each model. Prints a table; with `--out DIR` also writes
`compare.md`, `compare.csv` and `figures/compare.{pdf,png}`.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from resnet_bench.collect import UNIT_ORDER
from resnet_bench.report import figures, findings, stats, tables
from resnet_bench.report.escape import md_text, mpl_text
from resnet_bench.argparsing import Parser

PAIR_KEYS = ["dataset", "model", "version", "unit", "depth", "seed"]


def paired_runs(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, unit, seed) ok in both: accuracies (%) and diff_pp = B - A."""
    cols = [*PAIR_KEYS, "a_acc_pct", "b_acc_pct", "diff_pp"]
    oa, ob = stats.ok_cells(a), stats.ok_cells(b)
    if oa.empty or ob.empty:
        return pd.DataFrame(columns=cols)
    left = oa[PAIR_KEYS + ["test_acc"]].drop_duplicates(PAIR_KEYS).rename(columns={"test_acc": "a"})
    right = ob[PAIR_KEYS + ["test_acc"]].drop_duplicates(PAIR_KEYS).rename(columns={"test_acc": "b"})
    m = left.merge(right, on=PAIR_KEYS, how="inner")
    m["a_acc_pct"], m["b_acc_pct"] = 100 * m["a"].astype(float), 100 * m["b"].astype(float)
    m["diff_pp"] = m["b_acc_pct"] - m["a_acc_pct"]
    m["depth"], m["seed"] = m["depth"].astype(int), m["seed"].astype(int)
    order = {u: i for i, u in enumerate(UNIT_ORDER)}
    return m.sort_values(["dataset", "depth", "unit", "seed"], key=lambda s: s.map(order) if s.name == "unit" else s,
                         kind="mergesort").reset_index(drop=True)[cols]


def compare_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and model: pairs, mean B - A (pp), std, 95% t-interval."""
    cols = ["dataset", "model", "version", "unit", "depth", "n_pairs", "diff_pp", "std_pp", "ci_low", "ci_high"]
    rows = []
    for (ds, model, version, unit, depth), g in pairs.groupby(["dataset", "model", "version", "unit", "depth"],
                                                               sort=False):
        d = g["diff_pp"].to_numpy(dtype=float)
        mean, lo, hi = stats.t_interval(d)
        rows.append([ds, model, version, unit, int(depth), len(d), mean, stats.std(d), lo, hi])
    return pd.DataFrame(rows, columns=cols)


def display(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": r["dataset"], "model": tables.model_label(r["model"], r["version"], r["unit"]),
                          "pairs": str(r["n_pairs"]),
                          "B − A (pp) [95% CI]": tables.fmt_interval(r["diff_pp"], r["ci_low"], r["ci_high"]),
                          "verdict": findings.verdict(r["ci_low"], r["ci_high"]).replace(
                              "v2 more accurate", "B more accurate").replace("v1 more accurate", "A more accurate")
                          if r["n_pairs"] >= 2 else "one pair: no interval"} for _, r in table.iterrows()])


def fig_compare(table: pd.DataFrame, pairs: pd.DataFrame, plt):
    """B - A per model: pairs as dots, mean with 95% CI; v1 circles, v2 squares in their colours."""
    datasets = sorted(set(table["dataset"]))
    fig, axes = figures.grid(plt, len(datasets), panel_h=2.4, ncols_max=2)
    for ax, ds in zip(axes, datasets):
        t = table[table["dataset"] == ds].reset_index(drop=True)
        ax.axhline(0, color="0.45", lw=0.8, ls="--")
        for i, r in t.iterrows():
            c, mk = figures.VERSION_COLORS.get(r["version"], "0.3"), figures.VERSION_MARKERS.get(r["version"], "o")
            p = pairs[(pairs["dataset"] == ds) & (pairs["model"] == r["model"]) & (pairs["unit"] == r["unit"])]
            ax.scatter([i + 0.15] * len(p), p["diff_pp"], s=9, color=c, marker=mk, alpha=0.4, linewidths=0)
            yerr = None if not np.isfinite(r["ci_low"]) else [[r["diff_pp"] - r["ci_low"]], [r["ci_high"] - r["diff_pp"]]]
            ax.errorbar([i], [r["diff_pp"]], yerr=yerr, color=c, marker=mk, ms=5, elinewidth=1.2)
        ax.set_xticks(range(len(t)), [mpl_text(tables.model_label(m, v, u)) for m, v, u in zip(t["model"], t["version"],
                                                                                              t["unit"])],
                      rotation=45, ha="right", fontsize="x-small")
        ax.set_ylabel("B − A test accuracy (pp)")
        ax.set_title(mpl_text(ds))
    return fig


def parse_args(argv):
    p = Parser(prog="resnet-bench compare",
                                description="Paired differences B - A in test accuracy (pp) for the cells two results "
                                            "folders share (same dataset, model, unit and seed, both ok).")
    p.add_argument("a", help="results folder A (the baseline), e.g. results/smoke")
    p.add_argument("b", help="results folder B, e.g. results/smoke-bf16")
    p.add_argument("--out", help="a folder: also write compare.md, compare.csv and figures/compare.* there "
                                 "(default: print only)")
    p.add_argument("--formats", default="pdf,png", help="figure formats with --out (pdf, png, svg)")
    p.add_argument("--json", action="store_true", help="print the table as one JSON document (full precision) "
                                                       "instead of markdown")
    return p.parse_args(argv)


# What `compare --out DIR` writes there (outputs.OutputDir patterns); nothing else in DIR is touched.
COMPARE_LAYOUT = (r"compare\.md", r"compare\.csv", rf"figures/compare\.({'|'.join(figures.FORMATS)})")


def main(argv=None) -> int:
    from resnet_bench.columns import read_table
    from resnet_bench.inputs import InputError, user_path
    from resnet_bench.outputs import OutputDir, OutputError, guard_frame
    from resnet_bench.report import read_excluded

    args = parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in figures.FORMATS]
    if bad or not formats:
        print(f"error: --formats: unknown figure format(s) {', '.join(map(repr, bad)) or '(none)'}; valid: "
              f"{', '.join(figures.FORMATS)}", file=sys.stderr)
        return 2
    frames = []
    try:
        out = OutputDir(args.out, writer="compare", flag="--out", layout=COMPARE_LAYOUT).prepare() \
            if args.out else None
        for folder in (args.a, args.b):
            path = user_path(folder, "results folder") / "cells.parquet"
            if not path.exists() and not path.is_symlink():
                raise InputError(f"{path} not found; give a results folder written by `resnet-bench collect`")
            cells, _ = stats.split_excluded(read_table(path, required=("cell_id", "status", *PAIR_KEYS, "test_acc")),
                                            read_excluded(path.parent))
            frames.append(cells)
    except (ValueError, OutputError) as err:  # InputError, TableError and OutputError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    pairs = paired_runs(*frames)
    if pairs.empty:
        print(f"error: {args.a} and {args.b} share no cell that is ok in both (paired on dataset, model, unit, seed)",
              file=sys.stderr)
        return 1
    table = compare_table(pairs)
    shown = display(table)
    head = [f"A = {md_text(args.a)}, B = {md_text(args.b)}: B − A in test accuracy (pp), paired on dataset, model, "
            f"unit and seed; {len(pairs)} pairs.", ""]
    if args.json:
        from resnet_bench.console import print_json

        print_json({"a": str(args.a), "b": str(args.b), "pairs": len(pairs), "rows": table.to_dict(orient="records")})
    else:
        print("\n".join(head + [tables.to_markdown(shown)]))
    if out is not None:
        matplotlib, plt = figures.pyplot()
        with matplotlib.rc_context():
            matplotlib.rcdefaults()
            matplotlib.rcParams.update(figures.style_rc("paper"))
            fig = fig_compare(table, pairs, plt)
            figures.save(fig, out, "figures/compare", formats, 150)
            plt.close(fig)
        with out.file("compare.csv") as tmp:
            guard_frame(table).to_csv(tmp, index=False, lineterminator="\n")
        link = next((f for f in ("png", "svg") if f in formats), None)
        md = ["# compare", "", *head, tables.to_markdown(shown), ""]
        md += [f"![compare](figures/compare.{link})", ""] if link else []
        out.write_text("compare.md", "\n".join(md))
        out.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
