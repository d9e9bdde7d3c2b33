"""The `report` stage: seaborn figures, paper tables and reports/report.md from a results folder.

Reads only `cells.parquet` and `epochs.parquet`, so `resnet-bench report
--results DIR --out DIR` redraws everything from a cluster run's results
without retraining. Same inputs give byte-identical PNG/SVG/PDF files: fixed
metadata, a fixed SVG hash salt, seeded bootstrap intervals, sorted inputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# Okabe & Ito (2008) colour-blind-safe palette; one colour per version and per unit,
# the same in every figure. v1 = unit (a) original, v2 = unit (e) full pre-activation.
VERSION_COLORS = {"v1": "#0072B2", "v2": "#D55E00"}
UNIT_COLORS = {"original": "#0072B2", "bn_after_add": "#009E73", "relu_before_add": "#CC79A7",
               "relu_only_preact": "#E69F00", "full_preact": "#D55E00"}
UNIT_LABELS = {"original": "(a) original", "bn_after_add": "(b) BN after addition",
               "relu_before_add": "(c) ReLU before addition", "relu_only_preact": "(d) ReLU-only pre-act.",
               "full_preact": "(e) full pre-activation"}
# He et al. 2016, "Identity Mappings in Deep Residual Networks", Table 2: CIFAR-10 test error (%),
# median of 5 runs, for the units of Fig. 4 at ResNet-110 and ResNet-164.
PAPER_TABLE2 = {
    110: {"original": 6.61, "bn_after_add": 8.17, "relu_before_add": 7.84, "relu_only_preact": 6.71,
          "full_preact": 6.37},
    164: {"original": 5.93, "bn_after_add": 6.50, "relu_before_add": 6.14, "relu_only_preact": 5.91,
          "full_preact": 5.46},
}
CI_SEED = 0          # seaborn bootstrap seed: intervals are reproducible
DEFAULTS = {"formats": ["png", "svg"], "dpi": 150, "context": "paper", "pdf": False}
PAPER_WIDTH_IN = 6.75  # two-column paper text width, inches


# ---- pure table functions --------------------------------------------------------------------------


def ok_cells(cells: pd.DataFrame) -> pd.DataFrame:
    return cells[cells["status"] == "ok"].copy()


def version_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells of the plain v1/v2 comparison (units (a) and (e) only)."""
    df = ok_cells(cells)
    return df[df["unit"].isin(["original", "full_preact"])]


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) Student-t interval; a single value gives a zero-width interval."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


def accuracy_by_depth(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy (%) with 95% t-interval over seeds per dataset, depth, version."""
    rows = []
    for (ds, depth, version), g in version_cells(cells).groupby(["dataset", "depth", "version"], sort=True):
        mean, lo, hi = t_interval(100 * g["test_acc"].to_numpy())
        rows.append({"dataset": ds, "depth": int(depth), "version": version, "test_acc_pct": mean,
                     "ci_low": lo, "ci_high": hi, "n_seeds": len(g)})
    return pd.DataFrame(rows, columns=["dataset", "depth", "version", "test_acc_pct", "ci_low", "ci_high",
                                       "n_seeds"])


def paired_difference(cells: pd.DataFrame) -> pd.DataFrame:
    """v2 minus v1 test accuracy (percentage points) on the same (dataset, depth, seed), with 95% t-interval."""
    df = version_cells(cells)
    wide = df.pivot_table(index=["dataset", "depth", "seed"], columns="version", values="test_acc",
                          aggfunc="first")
    if not {"v1", "v2"} <= set(wide.columns):
        return pd.DataFrame(columns=["dataset", "depth", "diff_pp", "ci_low", "ci_high", "n_pairs"])
    wide = wide.dropna(subset=["v1", "v2"])
    rows = []
    for (ds, depth), g in wide.groupby(level=["dataset", "depth"], sort=True):
        mean, lo, hi = t_interval(100 * (g["v2"] - g["v1"]).to_numpy())
        rows.append({"dataset": ds, "depth": int(depth), "diff_pp": mean, "ci_low": lo, "ci_high": hi,
                     "n_pairs": len(g)})
    return pd.DataFrame(rows, columns=["dataset", "depth", "diff_pp", "ci_low", "ci_high", "n_pairs"])


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another row (higher-or-equal x and y, one strictly higher)."""
    keep = []
    for i, r in points.iterrows():
        dominated = ((points[x] >= r[x]) & (points[y] >= r[y]) & ((points[x] > r[x]) | (points[y] > r[y]))).any()
        if not dominated:
            keep.append(i)
    return points.loc[keep].sort_values(x)


def model_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, unit): mean accuracy, throughput, memory over ok seeds."""
    df = ok_cells(cells)
    if df.empty:
        return pd.DataFrame()
    agg = df.groupby(["dataset", "depth", "version", "unit", "model"], sort=True).agg(
        test_acc_pct=("test_acc", lambda s: 100 * s.mean()), n_seeds=("seed", "count"),
        params=("params", "first"), fwd_gflops=("fwd_gflops", "first"),
        train_img_per_s=("bench_train_img_per_s", "median"), infer_img_per_s=("bench_infer_img_per_s", "median"),
        loop_img_per_s=("train_img_per_s", "median"), peak_mem_mib=("peak_mem_bytes", lambda s: s.median() / 2**20),
    ).reset_index()
    return agg


def table2(cells: pd.DataFrame) -> pd.DataFrame:
    """He et al. 2016 Table 2 beside ours: test error (%) per unit at depths 110 and 164."""
    df = ok_cells(cells)
    df = df[df["depth"].isin(PAPER_TABLE2)]
    rows = []
    for depth, paper in PAPER_TABLE2.items():
        for unit, paper_err in paper.items():
            g = df[(df["depth"] == depth) & (df["unit"] == unit)]
            if g.empty:
                continue
            err = 100 * (1 - g["test_acc"].to_numpy())
            rows.append({"depth": depth, "unit": unit, "ours_err_mean": float(err.mean()),
                         "ours_err_std": float(err.std(ddof=1)) if len(err) > 1 else 0.0,
                         "ours_err_median": float(np.median(err)), "n_seeds": len(err),
                         "paper_err": paper_err, "dataset": ",".join(sorted(g["dataset"].unique()))})
    return pd.DataFrame(rows, columns=["depth", "unit", "ours_err_mean", "ours_err_std", "ours_err_median",
                                       "n_seeds", "paper_err", "dataset"])


def table3(cells: pd.DataFrame) -> pd.DataFrame:
    """v1 vs v2 test error (%) per dataset and depth (He et al. 2016 Table 3 layout), mean ± std."""
    df = version_cells(cells).assign(err=lambda d: 100 * (1 - d["test_acc"]))
    if df.empty:
        return pd.DataFrame()
    g = df.groupby(["dataset", "depth", "version"])["err"].agg(["mean", "std", "count"]).unstack("version")
    out = pd.DataFrame(index=g.index)
    for v in ("v1", "v2"):
        if ("mean", v) in g.columns:
            out[f"{v}_err_mean"] = g[("mean", v)]
            out[f"{v}_err_std"] = g[("std", v)].fillna(0.0)
            out[f"{v}_n"] = g[("count", v)].fillna(0).astype(int)
    return out.reset_index()


# ---- drawing ----------------------------------------------------------------------------------------


def _setup(context: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context=context, style="whitegrid", font="DejaVu Sans")
    plt.rcParams.update({"svg.hashsalt": "resnet-bench", "svg.fonttype": "path", "figure.dpi": 100,
                         "axes.titlesize": "medium", "legend.frameon": False})
    return plt, sns


def save(fig, stem: Path, formats, dpi) -> list[Path]:
    """Write each format with fixed metadata so the same figure gives the same bytes."""
    metadata = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
                "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None}}
    out = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, format=fmt, dpi=dpi, metadata=metadata[fmt], bbox_inches="tight")
        out.append(path)
    return out


def _depth_axis(ax, depths):
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlabel("depth (weighted layers)")


def fig_accuracy_by_depth(acc: pd.DataFrame, plt):
    datasets = sorted(acc["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(PAPER_WIDTH_IN / 2 * min(len(datasets), 2) + 0.5, 2.8),
                             squeeze=False, sharey=False)
    for ax, ds in zip(axes[0], datasets):
        d = acc[acc["dataset"] == ds]
        depths = sorted(d["depth"].unique())
        pos = {dep: i for i, dep in enumerate(depths)}
        for k, (v, g) in enumerate(d.groupby("version", sort=True)):
            x = np.array([pos[dep] for dep in g["depth"]]) + (k - 0.5) * 0.12
            ax.errorbar(x, g["test_acc_pct"], yerr=[g["test_acc_pct"] - g["ci_low"], g["ci_high"] - g["test_acc_pct"]],
                        color=VERSION_COLORS[v], marker="o", ms=4, capsize=2, lw=1.2, label=v)
        _depth_axis(ax, depths)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(ds)
    axes[0][0].legend(title="version")
    n = int(acc["n_seeds"].max()) if len(acc) else 0
    fig.suptitle(f"Test accuracy vs depth (mean, 95% t-interval over seeds, n<={n})", fontsize="medium")
    fig.tight_layout()
    return fig


def fig_paired_difference(diff: pd.DataFrame, plt):
    datasets = sorted(diff["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(PAPER_WIDTH_IN / 2 * min(len(datasets), 2) + 0.5, 2.6),
                             squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        d = diff[diff["dataset"] == ds].sort_values("depth")
        x = np.arange(len(d))
        ax.axhline(0, color="0.3", lw=0.8)
        ax.errorbar(x, d["diff_pp"], yerr=[d["diff_pp"] - d["ci_low"], d["ci_high"] - d["diff_pp"]],
                    color=VERSION_COLORS["v2"], marker="o", ms=4, capsize=2, lw=0, elinewidth=1.2)
        _depth_axis(ax, list(d["depth"]))
        ax.set_ylabel("v2 - v1 test accuracy (pp)")
        ax.set_title(ds)
    fig.suptitle("Paired difference v2 - v1 (same seeds; mean, 95% t-interval)", fontsize="medium")
    fig.tight_layout()
    return fig


def fig_throughput_memory(summary: pd.DataFrame, plt):
    """Train and inference images/s and peak memory against depth, v1 vs v2 (plain versions only)."""
    s = summary[summary["unit"].isin(["original", "full_preact"])]
    panels = [("train_img_per_s", "train step (images/s)"),
              ("infer_img_per_s", "inference (images/s)"),
              ("peak_mem_mib", "peak train memory (MiB)")]
    panels = [(c, l) for c, l in panels if s[c].notna().any()]
    if not panels:
        return None
    datasets = sorted(s["dataset"].unique())
    fig, axes = plt.subplots(len(datasets), len(panels), figsize=(PAPER_WIDTH_IN, 2.4 * len(datasets)),
                             squeeze=False)
    for row, ds in zip(axes, datasets):
        d = s[s["dataset"] == ds]
        depths = sorted(d["depth"].unique())
        pos = {dep: i for i, dep in enumerate(depths)}
        for ax, (col, label) in zip(row, panels):
            for v, g in d.groupby("version", sort=True):
                g = g.sort_values("depth")
                ax.plot([pos[x] for x in g["depth"]], g[col], marker="o", ms=4, color=VERSION_COLORS[v], label=v)
            _depth_axis(ax, depths)
            ax.set_ylabel(label)
            ax.set_title(ds, fontsize="small")
    axes[0][0].legend(title="version")
    fig.suptitle("Throughput and memory vs depth (isolated bench pass, median)", fontsize="medium", y=1.02)
    fig.tight_layout()
    return fig


def fig_pareto(summary: pd.DataFrame, plt):
    col = "train_img_per_s" if summary["train_img_per_s"].notna().any() else "loop_img_per_s"
    s = summary.dropna(subset=[col, "test_acc_pct"])
    if s.empty:
        return None
    datasets = sorted(s["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(PAPER_WIDTH_IN / 2 * min(len(datasets), 2) + 0.5, 2.8),
                             squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        d = s[s["dataset"] == ds]
        for unit, g in d.groupby("unit", sort=True):
            label = g["version"].iloc[0] if unit in ("original", "full_preact") else UNIT_LABELS[unit]
            ax.scatter(g[col], g["test_acc_pct"], color=UNIT_COLORS[unit], s=18, label=label, zorder=3)
        for _, r in d.iterrows():
            ax.annotate(str(r["depth"]), (r[col], r["test_acc_pct"]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
        front = pareto_front(d, col, "test_acc_pct")
        ax.plot(front[col], front["test_acc_pct"], color="0.4", lw=0.8, ls="--", zorder=2, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("train throughput (images/s, log)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(ds)
    axes[0][0].legend(fontsize="x-small")
    fig.suptitle("Accuracy vs throughput (labels: depth)", fontsize="medium")
    fig.tight_layout()
    return fig


def fig_learning_curves(epochs: pd.DataFrame, plt):
    e = epochs[epochs["unit"].isin(["original", "full_preact"])]
    if e.empty:
        return None
    datasets = sorted(e["dataset"].unique())
    fig, axes = plt.subplots(len(datasets), 2, figsize=(PAPER_WIDTH_IN, 2.5 * len(datasets)), squeeze=False)
    depths = sorted(e["depth"].unique())
    styles = dict(zip(depths, ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1)), (0, (3, 1, 1, 1))] * 3))
    for row, ds in zip(axes, datasets):
        d = e[e["dataset"] == ds]
        mean = d.groupby(["version", "depth", "epoch"], sort=True)[["val_acc", "train_loss"]].mean().reset_index()
        for (v, dep), g in mean.groupby(["version", "depth"], sort=True):
            row[0].plot(g["epoch"], 100 * g["val_acc"], color=VERSION_COLORS[v], ls=styles[dep], lw=1,
                        label=f"{v} d{dep}")
            row[1].plot(g["epoch"], g["train_loss"], color=VERSION_COLORS[v], ls=styles[dep], lw=1)
        row[0].set_ylabel("validation accuracy (%)")
        row[1].set_ylabel("train loss (nats)")
        for ax in row:
            ax.set_xlabel("epoch")
            ax.set_title(ds, fontsize="small")
    axes[0][0].legend(fontsize="xx-small", ncol=2)
    fig.suptitle("Learning curves (mean over seeds)", fontsize="medium")
    fig.tight_layout()
    return fig


# ---- tables as markdown and LaTeX ---------------------------------------------------------------------


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c], floatfmt) for c in cols) + " |")
    return "\n".join(lines)


def to_latex(df: pd.DataFrame, caption: str, label: str, floatfmt: str = ".4g") -> str:
    esc = lambda s: str(s).replace("_", r"\_").replace("%", r"\%")
    cols = list(df.columns)
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{esc(caption)}}}", f"\\label{{{label}}}",
             r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
             " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(_fmt(r[c], floatfmt)) for c in cols) + r" \\" for _, r in df.iterrows()]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _fmt(v, floatfmt):
    if isinstance(v, (float, np.floating)):
        return "" if pd.isna(v) else format(v, floatfmt)
    return str(v)


# ---- the report -------------------------------------------------------------------------------------


def build_report(cells: pd.DataFrame, epochs: pd.DataFrame, out: Path, *, formats, dpi, context) -> Path:
    plt, _ = _setup(context)
    figdir, tabdir = out / "figures", out / "tables"
    for d in (figdir, tabdir):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():  # stale outputs of an earlier report never linger
            old.unlink()
    md = ["# resnet-bench report", "",
          "ResNet v1 (post-activation, He et al. 2015) vs v2 (pre-activation, He et al. 2016): "
          "test accuracy, throughput and memory by depth and dataset.", ""]
    jpeg = [d for d in sorted(cells["dataset"].dropna().unique()) if "jpeg" in d]
    if jpeg:
        md += [f"Note: {', '.join(jpeg)} is CIFAR-10 re-encoded as lossy JPEG; accuracies land a little below "
               "those on the original lossless batches, so compare published CIFAR-10 numbers with that in mind.", ""]
    counts = cells["status"].value_counts()
    md += ["## Cells", "", f"{len(cells)} cells: " + ", ".join(f"{k} {int(counts.get(k, 0))}"
                                                            for k in ("ok", "diverged", "failed", "missing")), ""]
    absent = []

    def figure(name, fig, caption):
        if fig is None:
            absent.append(f"- `{name}`: {caption}")
            return
        save(fig, figdir / name, formats, dpi)
        plt.close(fig)
        md.extend([f"### {caption}", "", f"![{caption}](figures/{name}.{formats[0]})", ""])

    acc, diff, summary = accuracy_by_depth(cells), paired_difference(cells), model_summary(cells)
    md += ["## Figures", ""]
    figure("accuracy_by_depth", fig_accuracy_by_depth(acc, plt) if len(acc) else None,
           "Test accuracy vs depth, v1 vs v2" if len(acc) else "no ok v1/v2 cells")
    figure("paired_difference", fig_paired_difference(diff, plt) if len(diff) else None,
           "Paired difference v2 - v1" if len(diff) else "needs both v1 and v2 cells with the same seeds")
    figure("throughput_memory", fig_throughput_memory(summary, plt) if len(summary) else None,
           "Throughput and memory vs depth" if len(summary) else "no ok cells")
    figure("pareto", fig_pareto(summary, plt) if len(summary) else None,
           "Accuracy vs throughput" if len(summary) else "no ok cells")
    figure("learning_curves", fig_learning_curves(epochs, plt) if len(epochs) else None,
           "Learning curves" if len(epochs) else "no epoch rows")
    if absent:
        md += ["Figures not drawn:", "", *absent, ""]

    md += ["## Tables", ""]
    tables = [("models", summary, "Per model: mean test accuracy over seeds, isolated-bench throughput (images/s) "
                                  "and peak memory (MiB)"),
              ("table3_v1_vs_v2", table3(cells), "v1 vs v2 test error (%), mean and std over seeds"),
              ("table2_units", table2(cells), "He et al. 2016 Table 2 reproduction: test error (%) per residual "
                                              "unit, ours (mean, std, median over seeds) beside the paper's"),
              ("paired_difference", diff, "v2 - v1 test accuracy (pp) on the same seeds, 95% t-interval")]
    for name, df, caption in tables:
        if df is None or df.empty:
            continue
        (tabdir / f"{name}.tex").write_text(to_latex(df, caption, f"tab:{name}"))
        md += [f"### {caption}", "", to_markdown(df), "", f"LaTeX: `tables/{name}.tex`", ""]

    bad = cells[cells["status"] != "ok"]
    md += ["## Failures and gaps", ""]
    if bad.empty:
        md += ["None: every cell finished ok.", ""]
    else:
        md += [to_markdown(bad[["cell_id", "status", "dataset", "model", "unit", "seed"]].assign(
            error=bad["error"].fillna("").str.split("\n").str[0].str.slice(0, 120))), ""]

    env = cells.dropna(subset=["git_commit"])
    md += ["## Environment", "", "```"]
    for col in ("git_commit", "torch_version", "cpu_model", "gpu_name", "torch_threads", "device"):
        vals = sorted({str(v) for v in env[col].dropna().unique()}) if col in env else []
        md.append(f"{col}: {', '.join(vals) or '-'}")
    md += ["```", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def load_settings(params_path: str | None) -> dict:
    settings = dict(DEFAULTS)
    if params_path:
        import yaml

        section = (yaml.safe_load(Path(params_path).read_text()) or {}).get("report") or {}
        unknown = sorted(set(section) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown report setting(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
        settings.update(section)
    return settings


def parse_args(argv):
    p = argparse.ArgumentParser(prog="resnet-bench report", description="Figures and report.md from results.")
    p.add_argument("--results", default="results", help="folder with cells.parquet and epochs.parquet")
    p.add_argument("--out", default="reports")
    p.add_argument("--params", help="take settings from this file's `report:` section")
    p.add_argument("--formats", help="comma-separated: png,svg,pdf")
    p.add_argument("--dpi", type=int)
    p.add_argument("--context", choices=["paper", "notebook", "talk", "poster"])
    p.add_argument("--pdf", action="store_true", help="also write PDF figures")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.params)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.formats:
        settings["formats"] = args.formats.split(",")
    for key in ("dpi", "context"):
        if getattr(args, key):
            settings[key] = getattr(args, key)
    formats = list(settings["formats"]) + (["pdf"] if (args.pdf or settings["pdf"]) and "pdf" not in
                                          settings["formats"] else [])
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad:
        print(f"error: unknown figure format(s) {', '.join(bad)}; valid: png, svg, pdf", file=sys.stderr)
        return 2
    results = Path(args.results)
    missing = [f for f in ("cells.parquet", "epochs.parquet") if not (results / f).exists()]
    if missing:
        print(f"error: {', '.join(str(results / f) for f in missing)} not found; run `dvc repro collect` "
              "(or `resnet-bench collect`) first", file=sys.stderr)
        return 2
    cells = pd.read_parquet(results / "cells.parquet")
    epochs = pd.read_parquet(results / "epochs.parquet")
    path = build_report(cells, epochs, Path(args.out), formats=formats, dpi=settings["dpi"],
                        context=settings["context"])
    print(f"report: {path} ({len(cells)} cells; figures as {', '.join(formats)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
