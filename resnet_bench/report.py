"""The `report` stage: seaborn figures, paper tables and `report.md` from a results folder.

Reads only `<results>/cells.parquet` and `<results>/epochs.parquet` (written by
`collect`), so `resnet-bench report --results DIR --out DIR` redraws everything
from a cluster run's results without retraining. Writes under `--out`:

- `figures/<name>.{png,svg[,pdf]}`: accuracy vs depth, paired difference v2 - v1,
  throughput and memory vs depth, accuracy vs throughput (Pareto front),
  learning curves, residual units vs He et al. 2016 (each drawn only when the
  data has what it needs; `report.md` says why one is absent);
- `tables/<name>.{tex,csv}`: LaTeX (booktabs) for papers and the numbers at full precision;
- `report.md`: figures, tables, failures and gaps, environment, methods.

Same inputs give byte-identical files: fixed file metadata (no dates, no
software stamp in PNG), a fixed SVG hash salt, matplotlib defaults reset
before drawing, no random jitter, sorted inputs. Intervals are Student-t
intervals (exact, no bootstrap randomness).

Paper constants: K. He, X. Zhang, S. Ren, J. Sun, "Identity Mappings in Deep
Residual Networks", ECCV 2016, arXiv:1603.05027, Tables 2 and 3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_bench.collect import UNIT_ORDER, VERSION_UNIT

PAPER = ("K. He, X. Zhang, S. Ren, J. Sun. Identity Mappings in Deep Residual Networks. "
         "ECCV 2016 (arXiv:1603.05027)")
# He et al. 2016, Table 2: CIFAR-10 test error (%) of the residual units of Fig. 4.
PAPER_TABLE2 = {
    110: {"original": 6.61, "bn_after_add": 8.17, "relu_before_add": 7.84, "relu_only_preact": 6.71,
          "full_preact": 6.37},
    164: {"original": 5.93, "bn_after_add": 6.50, "relu_before_add": 6.14, "relu_only_preact": 5.91,
          "full_preact": 5.46},
}
# He et al. 2016, Table 3 (original vs pre-activation units, CIFAR-10): the same
# ResNet-110/164 numbers as units (a) and (e) of Table 2.
PAPER_TABLE3_CIFAR10 = {d: {"v1": PAPER_TABLE2[d]["original"], "v2": PAPER_TABLE2[d]["full_preact"]}
                        for d in PAPER_TABLE2}

# Okabe & Ito colour-blind-safe palette. One colour per version and per unit, the same
# in every figure: v1 is unit (a) original, v2 is unit (e) full pre-activation.
VERSION_COLORS = {"v1": "#0072B2", "v2": "#D55E00"}
UNIT_COLORS = {"original": VERSION_COLORS["v1"], "bn_after_add": "#009E73", "relu_before_add": "#CC79A7",
               "relu_only_preact": "#E69F00", "full_preact": VERSION_COLORS["v2"]}
UNIT_LABELS = {"original": "(a) original", "bn_after_add": "(b) BN after addition",
               "relu_before_add": "(c) ReLU before addition", "relu_only_preact": "(d) ReLU-only pre-activation",
               "full_preact": "(e) full pre-activation"}
VERSION_LABELS = {"v1": "v1 (post-activation)", "v2": "v2 (pre-activation)"}
DIFF_COLOR = "#333333"
CI_LEVEL = 0.95
FORMATS = ("png", "svg", "pdf")
CONTEXTS = ("paper", "notebook", "talk", "poster")
# report settings: CLI flags and params.yaml `report:` keys have the same names
DEFAULTS = {"formats": ["png", "svg"], "dpi": 150, "context": "paper", "pdf": False, "allow_missing": True}
PAPER_WIDTH_IN = 6.75   # two-column text width (inches)
COLUMN_WIDTH_IN = 3.4   # one column
PANEL_KEYS = ["experiment", "dataset"]
SVG_HASHSALT = "resnet-bench"


# ---- pure functions: tables from the cells/epochs tables ---------------------------------------------------


def is_cifar10(dataset: str) -> bool:
    """CIFAR-10 or a variant of it (`cifar10_jpeg`), not CIFAR-100."""
    name = str(dataset).lower()
    return name.startswith("cifar10") and not name.startswith("cifar100")


def ok_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells with status ok and a test accuracy."""
    return cells[(cells["status"] == "ok") & cells["test_acc"].notna()]


def is_version_unit(cells: pd.DataFrame) -> pd.Series:
    """True where the cell's unit is its version's own: (a) for v1, (e) for v2 (not an ablation unit)."""
    return pd.Series([VERSION_UNIT.get(v) == u for v, u in zip(cells["version"], cells["unit"])], index=cells.index,
                     dtype=bool)


def version_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Ok cells of the plain v1/v2 comparison: unit (a) for v1, unit (e) for v2 (ablation units excluded)."""
    df = ok_cells(cells)
    return df[is_version_unit(df)]


def t_interval(values, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean; under 2 values the bounds are NaN."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, np.nan, np.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return mean, mean - half, mean + half


def _std(v) -> float:
    v = np.asarray(v, dtype=float)
    return float(v.std(ddof=1)) if len(v) > 1 else np.nan


def accuracy_by_depth(cells: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (%) per experiment, dataset, version and depth: mean, std and 95% t-interval over seeds."""
    cols = [*PANEL_KEYS, "version", "depth", "n_seeds", "test_acc_pct", "std_pp", "ci_low", "ci_high"]
    rows = []
    for (exp, ds, version, depth), g in version_cells(cells).groupby([*PANEL_KEYS, "version", "depth"], sort=True):
        acc = 100 * g["test_acc"].to_numpy(dtype=float)
        mean, lo, hi = t_interval(acc)
        rows.append([exp, ds, version, int(depth), len(acc), mean, _std(acc), lo, hi])
    return pd.DataFrame(rows, columns=cols)


def paired_values(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per seed that has both v1 and v2 ok at the same experiment, dataset and depth."""
    cols = [*PANEL_KEYS, "depth", "seed", "v1_acc_pct", "v2_acc_pct", "diff_pp"]
    df = version_cells(cells)
    if df.empty:
        return pd.DataFrame(columns=cols)
    wide = df.pivot_table(index=[*PANEL_KEYS, "depth", "seed"], columns="version", values="test_acc",
                          aggfunc="first")
    if not {"v1", "v2"} <= set(wide.columns):
        return pd.DataFrame(columns=cols)
    wide = wide.dropna(subset=["v1", "v2"]).reset_index().sort_values([*PANEL_KEYS, "depth", "seed"])
    out = pd.DataFrame({**{k: wide[k] for k in [*PANEL_KEYS, "depth", "seed"]},
                        "v1_acc_pct": 100 * wide["v1"], "v2_acc_pct": 100 * wide["v2"]})
    out["diff_pp"] = out["v2_acc_pct"] - out["v1_acc_pct"]
    out["depth"], out["seed"] = out["depth"].astype(int), out["seed"].astype(int)
    return out.reset_index(drop=True)[cols]


def paired_difference(cells: pd.DataFrame) -> pd.DataFrame:
    """v2 minus v1 test accuracy (percentage points) on the same seeds: mean, std, 95% t-interval, pairs."""
    cols = [*PANEL_KEYS, "depth", "n_pairs", "diff_pp", "std_pp", "ci_low", "ci_high"]
    pairs = paired_values(cells)
    rows = []
    for (exp, ds, depth), g in pairs.groupby([*PANEL_KEYS, "depth"], sort=True):
        d = g["diff_pp"].to_numpy(dtype=float)
        mean, lo, hi = t_interval(d)
        rows.append([exp, ds, int(depth), len(d), mean, _std(d), lo, hi])
    return pd.DataFrame(rows, columns=cols)


def model_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per model (experiment, dataset, model, unit): accuracy over ok seeds, size, speed, memory.

    Throughput and memory are the isolated bench pass's medians (one measurement per
    architecture, shared by its seeds); `loop_img_per_s` is the training loop's.
    """
    cols = [*PANEL_KEYS, "model", "version", "unit", "depth", "n_cells", "n_ok", "test_acc_pct", "std_pp",
            "params", "fwd_gflops", "train_img_per_s", "infer_img_per_s", "loop_img_per_s", "peak_mem_mib"]
    rows = []
    for (exp, ds, model, version, unit, depth), g in cells.groupby(
            [*PANEL_KEYS, "model", "version", "unit", "depth"], sort=True):
        ok = ok_cells(g)
        acc = 100 * ok["test_acc"].to_numpy(dtype=float)
        med = lambda c: float(np.nanmedian(ok[c].to_numpy(dtype=float))) if ok[c].notna().any() else np.nan
        params = ok["params"].dropna()
        rows.append([exp, ds, model, version, unit, int(depth), len(g), len(ok),
                     float(acc.mean()) if len(acc) else np.nan, _std(acc),
                     int(params.iloc[0]) if len(params) else np.nan, med("fwd_gflops"),
                     med("bench_train_img_per_s"), med("bench_infer_img_per_s"), med("train_img_per_s"),
                     med("peak_mem_mib")])
    df = pd.DataFrame(rows, columns=cols)
    order = {u: i for i, u in enumerate(UNIT_ORDER)}  # (a)-(d) are v1, (e) is v2: v1 before v2 at each depth
    return df.sort_values([*PANEL_KEYS, "depth", "unit"], key=lambda s: s.map(order) if s.name == "unit" else s,
                          kind="mergesort").reset_index(drop=True)


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows no other row dominates (another row with x and y both >= and one >), sorted by x.

    Both x (e.g. throughput) and y (e.g. accuracy) are better when higher; rows with NaN are left out.
    """
    p = points.dropna(subset=[x, y])
    xs, ys = p[x].to_numpy(dtype=float), p[y].to_numpy(dtype=float)
    keep = [not np.any((xs >= xi) & (ys >= yi) & ((xs > xi) | (ys > yi))) for xi, yi in zip(xs, ys)]
    return p[keep].sort_values([x, y], kind="mergesort")


def speed_column(summary: pd.DataFrame) -> tuple[str, str] | None:
    """(column, axis label) of the throughput the Pareto view uses: bench inference, else bench train, else loop."""
    for col, label in (("infer_img_per_s", "inference throughput (images/s)"),
                       ("train_img_per_s", "train-step throughput (images/s)"),
                       ("loop_img_per_s", "training-loop throughput (images/s)")):
        if col in summary and summary[col].notna().any():
            return col, label
    return None


def units_error(cells: pd.DataFrame) -> pd.DataFrame:
    """Test error (%) per experiment, dataset, depth and residual unit over ok seeds, with the paper's
    Table 2 number where it exists (CIFAR-10 at depth 110 / 164). Every unit with any cell keeps its row
    (n_seeds 0 when none finished ok)."""
    cols = [*PANEL_KEYS, "depth", "unit", "n_cells", "n_seeds", "ours_err_mean", "ours_err_std",
            "ours_err_median", "ci_low", "ci_high", "paper_err", "diff_vs_paper_pp"]
    rows = []
    for (exp, ds, depth, unit), g in cells.groupby([*PANEL_KEYS, "depth", "unit"], sort=True):
        err = 100 * (1 - ok_cells(g)["test_acc"].to_numpy(dtype=float))
        mean, lo, hi = t_interval(err)
        paper = PAPER_TABLE2.get(int(depth), {}).get(unit) if is_cifar10(ds) else None
        paper = np.nan if paper is None else paper
        rows.append([exp, ds, int(depth), unit, len(g), len(err), mean, _std(err),
                     float(np.median(err)) if len(err) else np.nan, lo, hi, paper, mean - paper])
    df = pd.DataFrame(rows, columns=cols)
    order = {u: i for i, u in enumerate(UNIT_ORDER)}
    return df.sort_values([*PANEL_KEYS, "depth", "unit"], key=lambda s: s.map(order) if s.name == "unit" else s,
                          kind="mergesort").reset_index(drop=True)


def unit_ablation_groups(units: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """(experiment, dataset, depth) groups of `units_error` that compare units: two or more units with ok
    seeds, at least one of them an ablation unit (b)-(d) (plain v1 vs v2 has its own figures)."""
    out = []
    for key, g in units.groupby([*PANEL_KEYS, "depth"], sort=True):
        ran = g[g["n_seeds"] > 0]
        if len(ran) >= 2 and (~ran["unit"].isin(list(VERSION_UNIT.values()))).any():
            out.append((key, g))
    return out


def table2(cells: pd.DataFrame) -> pd.DataFrame:
    """He et al. 2016 Table 2 beside ours: CIFAR-10 (and variants) at ResNet-110/164, one row per unit run."""
    u = units_error(cells)
    return u[u["dataset"].map(is_cifar10) & u["depth"].isin(list(PAPER_TABLE2))].reset_index(drop=True)


def table3(cells: pd.DataFrame) -> pd.DataFrame:
    """v1 vs v2 test error (%) per experiment, dataset and depth (He et al. 2016 Table 3 layout): mean and
    std over ok seeds, the paired v2 - v1 error difference on common seeds, and the paper's numbers
    (CIFAR-10, depth 110 / 164)."""
    cols = [*PANEL_KEYS, "depth", "v1_n", "v1_err_mean", "v1_err_std", "v2_n", "v2_err_mean", "v2_err_std",
            "n_pairs", "diff_err_pp", "diff_ci_low", "diff_ci_high", "paper_v1_err", "paper_v2_err"]
    df = version_cells(cells)
    pd_ = paired_difference(cells).set_index([*PANEL_KEYS, "depth"])
    rows = []
    for (exp, ds, depth), g in df.groupby([*PANEL_KEYS, "depth"], sort=True):
        row = [exp, ds, int(depth)]
        for v in ("v1", "v2"):
            err = 100 * (1 - g.loc[g["version"] == v, "test_acc"].to_numpy(dtype=float))
            row += [len(err), float(err.mean()) if len(err) else np.nan, _std(err)]
        key = (exp, ds, int(depth))
        if key in pd_.index:  # error difference = minus the accuracy difference
            p = pd_.loc[key]
            row += [int(p["n_pairs"]), -p["diff_pp"], -p["ci_high"], -p["ci_low"]]
        else:
            row += [0, np.nan, np.nan, np.nan]
        paper = PAPER_TABLE3_CIFAR10.get(int(depth), {}) if is_cifar10(ds) else {}
        row += [paper.get("v1", np.nan), paper.get("v2", np.nan)]
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def learning_curves(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per model and epoch, the mean over ok seeds of validation accuracy (%) and training loss."""
    cols = [*PANEL_KEYS, "model", "version", "unit", "depth", "epoch", "val_acc_pct", "train_loss", "n_seeds"]
    e = epochs[epochs["status"] == "ok"]
    if e.empty:
        return pd.DataFrame(columns=cols)
    g = e.groupby([*PANEL_KEYS, "model", "version", "unit", "depth", "epoch"], sort=True).agg(
        val_acc=("val_acc", "mean"), train_loss=("train_loss", "mean"), n_seeds=("seed", "nunique")).reset_index()
    g["val_acc_pct"] = 100 * g["val_acc"]
    return g[cols]


def first_line(text, limit: int = 160) -> str:
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def failures(cells: pd.DataFrame) -> pd.DataFrame:
    """Every cell that is not ok, with the first line of its error (cells are never dropped silently)."""
    cols = ["cell_id", "status", *PANEL_KEYS, "model", "unit", "depth", "seed", "error"]
    bad = cells[cells["status"] != "ok"]
    out = bad[cols[:-1]].copy()
    out["error"] = [first_line(e) for e in bad["error"]]
    return out.reset_index(drop=True)


def bench_failures(cells: pd.DataFrame) -> pd.DataFrame:
    """Ok cells whose bench pass was requested but gave no throughput (the error, when recorded)."""
    cols = ["cell_id", *PANEL_KEYS, "model", "seed", "bench_error"]
    ok = cells[(cells["status"] == "ok") & (cells["bench_enabled"].fillna(False).astype(bool))
               & cells["bench_train_img_per_s"].isna()]
    out = ok[cols].copy()
    out["bench_error"] = [first_line(e) or "no bench numbers recorded" for e in ok["bench_error"]]
    return out.reset_index(drop=True)


ENV_COLUMNS = ("git_commit", "torch_version", "cuda_version", "python_version", "device", "amp", "gpu_name",
               "cpu_model", "cpu_count", "threads", "torch_threads", "platform")


def environment_summary(cells: pd.DataFrame) -> dict[str, list[str]]:
    """Per environment column, each distinct value with the number of cells that ran with it (sorted)."""
    ran = cells[cells["status"] != "missing"]
    out = {}
    for col in ENV_COLUMNS:
        if col not in ran:
            continue
        counts = ran[col].astype(object).where(ran[col].notna(), "-").astype(str).value_counts()
        out[col] = [f"{v} ({n} cells)" for v, n in sorted(counts.items())]
    return out


def status_counts(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells by status per experiment and dataset."""
    cols = [*PANEL_KEYS, "cells", "ok", "diverged", "failed", "missing"]
    rows = []
    for (exp, ds), g in cells.groupby(PANEL_KEYS, sort=True):
        rows.append([exp, ds, len(g), *[int((g["status"] == s).sum()) for s in cols[3:]]])
    return pd.DataFrame(rows, columns=cols)


# ---- display formatting (pure) -------------------------------------------------------------------------------


def fmt_num(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v)) or v is pd.NA:
        return "-"
    return f"{v:.{digits}f}"


def fmt_mean_std(mean, std, n=None, digits: int = 2) -> str:
    """'6.70 ± 0.15' ('6.70' for one seed, '-' for none), with ' (n=5)' when n is given."""
    if mean is None or not np.isfinite(mean):
        return "-" if n is None else f"- (n={n})"
    s = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None and np.isfinite(std) else "")
    return s if n is None else f"{s} (n={n})"


def fmt_interval(mean, lo, hi, digits: int = 2) -> str:
    if mean is None or not np.isfinite(mean):
        return "-"
    if not np.isfinite(lo):
        return f"{mean:+.{digits}f}"
    return f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def fmt_count(v) -> str:
    """Large counts readably: 1.23M, 456k."""
    if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    v = float(v)
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def panel_title(exp: str, ds: str, multi_experiment: bool) -> str:
    return f"{ds} ({exp})" if multi_experiment else str(ds)


def table2_display(t2: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (experiment, dataset): rows = units (a)-(e), columns = ResNet-<depth> ours / He et al. 2016."""
    out = {}
    for (exp, ds), g in t2.groupby(PANEL_KEYS, sort=True):
        depths = sorted(g["depth"].unique())
        rows = []
        for unit in UNIT_ORDER:
            u = g[g["unit"] == unit]
            if u.empty:
                continue
            row = {"unit": UNIT_LABELS[unit]}
            for d in depths:
                r = u[u["depth"] == d]
                ours = fmt_mean_std(r["ours_err_mean"].iloc[0], r["ours_err_std"].iloc[0], int(r["n_seeds"].iloc[0])) \
                    if len(r) else "-"
                row[f"ResNet-{d} ours"] = ours
                row[f"ResNet-{d} He et al."] = fmt_num(PAPER_TABLE2[int(d)][unit])
            rows.append(row)
        out[(exp, ds)] = pd.DataFrame(rows)
    return out


def table3_display(t3: pd.DataFrame, multi_experiment: bool) -> pd.DataFrame:
    rows = []
    for _, r in t3.iterrows():
        rows.append({"dataset": panel_title(r["experiment"], r["dataset"], multi_experiment),
                     "depth": str(r["depth"]),
                     "v1 error (%)": fmt_mean_std(r["v1_err_mean"], r["v1_err_std"], int(r["v1_n"])),
                     "v2 error (%)": fmt_mean_std(r["v2_err_mean"], r["v2_err_std"], int(r["v2_n"])),
                     "v2 - v1 (pp, paired)": fmt_interval(r["diff_err_pp"], r["diff_ci_low"], r["diff_ci_high"]),
                     "He et al. v1": fmt_num(r["paper_v1_err"]), "He et al. v2": fmt_num(r["paper_v2_err"])})
    return pd.DataFrame(rows)


def models_display(summary: pd.DataFrame, multi_experiment: bool) -> pd.DataFrame:
    rows = []
    for _, r in summary.iterrows():
        rows.append({"dataset": panel_title(r["experiment"], r["dataset"], multi_experiment),
                     "model": r["model"] + ("" if VERSION_UNIT.get(r["version"]) == r["unit"]
                                            else f" {UNIT_LABELS[r['unit']].split()[0]}"),
                     "params": fmt_count(r["params"]), "GFLOPs": fmt_num(r["fwd_gflops"], 3),
                     "test acc (%)": fmt_mean_std(r["test_acc_pct"], r["std_pp"]),
                     "ok / cells": f"{r['n_ok']} / {r['n_cells']}",
                     "train (img/s)": fmt_num(r["train_img_per_s"], 0),
                     "inference (img/s)": fmt_num(r["infer_img_per_s"], 0),
                     "peak mem (MiB)": fmt_num(r["peak_mem_mib"], 1)})
    return pd.DataFrame(rows)


def paired_display(diff: pd.DataFrame, multi_experiment: bool) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": panel_title(r["experiment"], r["dataset"], multi_experiment),
                          "depth": str(r["depth"]), "pairs": str(r["n_pairs"]),
                          "v2 - v1 accuracy (pp) [95% CI]": fmt_interval(r["diff_pp"], r["ci_low"], r["ci_high"]),
                          "std (pp)": fmt_num(r["std_pp"])} for _, r in diff.iterrows()])


def to_markdown(df: pd.DataFrame) -> str:
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    cols = list(df.columns)
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(esc(r[c]) for c in cols) + " |" for _, r in df.iterrows()]
    return "\n".join(lines)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text) -> str:
    s = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))
    return s.replace("±", r"$\pm$").replace("−", "-")


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); text escaped, ± as $\\pm$. No jinja2 needed."""
    cols = list(df.columns)
    align = "".join("l" if i == 0 or not any(ch.isdigit() for ch in str(df[c].iloc[0] if len(df) else ""))
                    else "r" for i, c in enumerate(cols))
    lines = [r"\begin{table}[t]", r"% generated by resnet_bench.report; needs \usepackage{booktabs}",
             r"\centering", r"\small", f"\\caption{{{latex_escape(caption)}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(latex_escape(c) for c in cols) + r" \\",
             r"\midrule"]
    lines += [" & ".join(latex_escape(r[c]) for c in cols) + r" \\" for _, r in df.iterrows()]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


# ---- drawing ------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return matplotlib, plt


def style_rc(context: str) -> dict:
    """All rcParams the figures depend on: seaborn's whitegrid style and `context` scaling, fixed fonts,
    a fixed SVG hash salt (deterministic ids), TrueType fonts in PDF."""
    import seaborn as sns

    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context(context)}
    rc.update({"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "svg.hashsalt": SVG_HASHSALT,
               "svg.fonttype": "path", "pdf.fonttype": 42, "ps.fonttype": 42, "axes.titlesize": rc["axes.labelsize"],
               "legend.frameon": False, "figure.dpi": 100, "axes.spines.right": False, "axes.spines.top": False,
               "grid.linewidth": 0.5, "lines.linewidth": 1.4, "errorbar.capsize": 2.5})
    return rc


FILE_METADATA = {"png": {"Software": None},
                 "svg": {"Date": None},
                 "pdf": {"CreationDate": None, "ModDate": None}}


def save(fig, stem: Path, formats, dpi: int) -> list[Path]:
    """Write each format with fixed metadata: the same figure gives the same bytes."""
    out = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, format=fmt, dpi=dpi, metadata=FILE_METADATA[fmt], bbox_inches="tight", pad_inches=0.03)
        out.append(path)
    return out


def _panels(df: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted({(e, d) for e, d in zip(df["experiment"], df["dataset"])})


def _grid(plt, n: int, *, panel_h: float = 2.4, ncols_max: int = 3):
    """A figure of n panels (at most ncols_max per row), paper width, constrained layout."""
    ncols = min(n, ncols_max)
    nrows = -(-n // ncols)
    width = COLUMN_WIDTH_IN if ncols == 1 else PAPER_WIDTH_IN
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_h * nrows + 0.35), squeeze=False,
                             layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _rows_of_panels(plt, panels, ncols: int, *, row_h: float, nrows_each: int = 1, multi: bool,
                    sharey: bool | str = False):
    """One sub-figure per (experiment, dataset), titled with it, holding nrows_each x ncols axes."""
    width = COLUMN_WIDTH_IN if ncols == 1 else PAPER_WIDTH_IN
    fig = plt.figure(figsize=(width, row_h * nrows_each * len(panels) + 0.35), layout="constrained")
    subfigs = fig.subfigures(len(panels), 1, squeeze=False)[:, 0]
    out = []
    for sf, (exp, ds) in zip(subfigs, panels):
        axes = sf.subplots(nrows_each, ncols, squeeze=False, sharey=sharey)
        sf.suptitle(panel_title(exp, ds, multi), fontsize="medium")
        out.append(axes)
    return fig, out


def _legend_below(fig, handles, labels, ncol_max: int = 5):
    """One legend under all panels, in as many columns as fit the figure's width."""
    if not handles:
        return
    longest = max(len(str(x)) for x in labels)
    fit = int((fig.get_figwidth() + 0.2) // (0.06 * longest + 0.55))  # ~0.06 in per character + handle
    fig.legend(handles, labels, loc="outside lower center", ncol=max(1, min(len(handles), ncol_max, fit)),
               fontsize="small")


def _depth_axis(ax, depths):
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlim(-0.5, len(depths) - 0.5)
    ax.set_xlabel("depth (layers)")


def _series_label(unit: str, ablation: bool) -> str:
    if not ablation and unit in VERSION_UNIT.values():
        return VERSION_LABELS["v1" if unit == "original" else "v2"]
    return UNIT_LABELS[unit]


def _plain_units(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of units (a)/(e) when a panel has them (plain v1 vs v2), else every unit."""
    plain = df[df["unit"].isin(list(VERSION_UNIT.values()))]
    return plain if len(plain) else df


def fig_accuracy_by_depth(cells: pd.DataFrame, plt):
    """Test accuracy vs depth, v1 vs v2: seeds as dots, mean with 95% t-interval, one panel per dataset.
    A depth where a version ran but no seed finished ok is marked 'no ok seed'."""
    acc, seeds = accuracy_by_depth(cells), version_cells(cells)
    if acc.empty:
        return None
    import matplotlib.transforms as mtransforms

    panels = _panels(acc)
    multi = len({e for e, _ in panels}) > 1
    fig, axes = _grid(plt, len(panels))
    offset = {"v1": -0.1, "v2": 0.1}
    ran = cells[is_version_unit(cells)]
    handles = {}
    for ax, (exp, ds) in zip(axes, panels):
        a = acc[(acc["experiment"] == exp) & (acc["dataset"] == ds)]
        s = seeds[(seeds["experiment"] == exp) & (seeds["dataset"] == ds)]
        r = ran[(ran["experiment"] == exp) & (ran["dataset"] == ds)]
        depths = sorted(set(a["depth"]) | set(int(d) for d in r["depth"]))
        pos = {d: i for i, d in enumerate(depths)}
        for v in ("v1", "v2"):
            g, sv = a[a["version"] == v], s[s["version"] == v]
            for depth in sorted(set(int(d) for d in r.loc[r["version"] == v, "depth"]) - set(g["depth"])):
                ax.text(pos[depth] + offset[v], 0.03, f"{v}: no ok seed", rotation=90, fontsize="x-small",
                        color=VERSION_COLORS[v], ha="center", va="bottom",
                        transform=mtransforms.blended_transform_factory(ax.transData, ax.transAxes))
            if g.empty:
                continue
            ax.scatter([pos[d] + offset[v] for d in sv["depth"]], 100 * sv["test_acc"], s=9,
                       color=VERSION_COLORS[v], alpha=0.4, linewidths=0, zorder=2)
            y = g["test_acc_pct"].to_numpy()
            yerr = np.nan_to_num(np.vstack([y - g["ci_low"].to_numpy(), g["ci_high"].to_numpy() - y]), nan=0.0)
            h = ax.errorbar([pos[d] + offset[v] for d in g["depth"]], y, yerr=yerr, color=VERSION_COLORS[v],
                            marker="o", ms=4, lw=1.2, elinewidth=1.0, zorder=3)
            handles.setdefault(VERSION_LABELS[v], h)
        _depth_axis(ax, depths)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(panel_title(exp, ds, multi))
    _legend_below(fig, list(handles.values()), list(handles))
    return fig


def fig_paired_difference(cells: pd.DataFrame, plt):
    """v2 - v1 test accuracy on the same seeds, per depth: pairs as dots, mean with 95% t-interval."""
    diff, pairs = paired_difference(cells), paired_values(cells)
    if diff.empty:
        return None
    panels = _panels(diff)
    multi = len({e for e, _ in panels}) > 1
    fig, axes = _grid(plt, len(panels))
    handles = {}
    for ax, (exp, ds) in zip(axes, panels):
        d = diff[(diff["experiment"] == exp) & (diff["dataset"] == ds)]
        p = pairs[(pairs["experiment"] == exp) & (pairs["dataset"] == ds)]
        depths = sorted(d["depth"].unique())
        pos = {dep: i for i, dep in enumerate(depths)}
        ax.axhline(0, color="0.45", lw=0.8, ls="--", zorder=1)
        h1 = ax.scatter([pos[x] + 0.15 for x in p["depth"]], p["diff_pp"], s=9, color=DIFF_COLOR, alpha=0.4,
                        linewidths=0, zorder=2)
        y = d["diff_pp"].to_numpy()
        yerr = np.nan_to_num(np.vstack([y - d["ci_low"].to_numpy(), d["ci_high"].to_numpy() - y]), nan=0.0)
        h2 = ax.errorbar([pos[x] for x in d["depth"]], y, yerr=yerr, color=DIFF_COLOR, marker="o", ms=4, lw=0,
                         elinewidth=1.2, zorder=3)
        handles.setdefault("mean over seeds, 95% CI", h2)
        handles.setdefault("one seed (v2 − v1)", h1)
        _depth_axis(ax, depths)
        ax.set_ylabel("v2 − v1 test accuracy (pp)")
        ax.set_title(panel_title(exp, ds, multi))
    _legend_below(fig, list(handles.values()), list(handles))
    return fig


def fig_throughput_memory(cells: pd.DataFrame, plt):
    """Train-step and inference throughput (images/s) and peak training memory (MiB) against depth; one row
    per dataset, v1 (unit a) and v2 (unit e) in their colours (ablation units only where a and e are absent)."""
    summary = model_summary(cells)
    cols = [(c, title, unit) for c, title, unit in (("train_img_per_s", "train step", "images/s"),
                                                    ("infer_img_per_s", "inference", "images/s"),
                                                    ("peak_mem_mib", "peak train memory", "MiB"))
            if summary[c].notna().any()]
    if not cols and summary["loop_img_per_s"].notna().any():
        cols = [("loop_img_per_s", "training loop", "images/s")]
    if not cols:
        return None
    summary = summary.dropna(subset=[c for c, *_ in cols], how="all")
    panels = _panels(summary)
    multi = len({e for e, _ in panels}) > 1
    fig, rows = _rows_of_panels(plt, panels, len(cols), row_h=2.1, multi=multi)
    handles = {}
    for axes, (exp, ds) in zip(rows, panels):
        s = _plain_units(summary[(summary["experiment"] == exp) & (summary["dataset"] == ds)])
        ablation = bool((~s["unit"].isin(list(VERSION_UNIT.values()))).any())
        depths = sorted(s["depth"].unique())
        pos = {d: i for i, d in enumerate(depths)}
        for ax, (col, title, unit_label) in zip(axes[0], cols):
            for unit in UNIT_ORDER:
                g = s[(s["unit"] == unit) & s[col].notna()].sort_values("depth")
                if g.empty:
                    continue
                (h,) = ax.plot([pos[d] for d in g["depth"]], g[col], marker="o", ms=4, color=UNIT_COLORS[unit])
                handles.setdefault(_series_label(unit, ablation), h)
            _depth_axis(ax, depths)
            ax.set_ylim(bottom=0)
            ax.set_ylabel(f"{title} ({unit_label})")
    _legend_below(fig, list(handles.values()), list(handles))
    return fig


def fig_pareto(cells: pd.DataFrame, plt):
    """Test accuracy against throughput per model (mean over seeds), the Pareto front dashed and ringed."""
    import matplotlib.ticker as ticker

    summary = model_summary(cells)
    spec = speed_column(summary)
    if spec is None:
        return None
    col, xlabel = spec
    s = summary.dropna(subset=[col, "test_acc_pct"])
    if len(s) < 2:
        return None
    panels = _panels(s)
    multi = len({e for e, _ in panels}) > 1
    ablation = bool((~s["unit"].isin(list(VERSION_UNIT.values()))).any())
    fig, axes = _grid(plt, len(panels), panel_h=2.6)
    handles = {}
    for ax, (exp, ds) in zip(axes, panels):
        d = s[(s["experiment"] == exp) & (s["dataset"] == ds)]
        front = pareto_front(d, col, "test_acc_pct")
        (h,) = ax.plot(front[col], front["test_acc_pct"], color="0.35", lw=0.9, ls="--", marker="o", ms=9,
                       mfc="none", mew=0.9, zorder=1)
        handles["Pareto front"] = h
        for unit in UNIT_ORDER:
            g = d[d["unit"] == unit]
            if g.empty:
                continue
            h = ax.scatter(g[col], g["test_acc_pct"], color=UNIT_COLORS[unit], s=22, zorder=3)
            handles.setdefault(_series_label(unit, ablation), h)
            for _, r in g.iterrows():
                ax.annotate(str(r["depth"]), (r[col], r["test_acc_pct"]), fontsize="x-small", xytext=(4, 3),
                            textcoords="offset points", color="0.25")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.margins(x=0.1, y=0.1)
        ax.set_xlabel(xlabel.replace("(images/s)", "(images/s, log scale)"))
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(panel_title(exp, ds, multi))
    front_handle = handles.pop("Pareto front")
    _legend_below(fig, [*handles.values(), front_handle], [*handles, "Pareto front"], ncol_max=3)
    return fig


def fig_learning_curves(epochs: pd.DataFrame, plt):
    """Validation accuracy (top row) and training loss (bottom row) per epoch, mean over ok seeds; one column
    per depth with v1 and v2 (or the residual units) in their colours; one block per dataset."""
    lc = learning_curves(epochs)
    if lc.empty:
        return None
    panels = _panels(lc)
    multi = len({e for e, _ in panels}) > 1
    ablation = bool((~lc["unit"].isin(list(VERSION_UNIT.values()))).any())
    ncols = max(lc[(lc["experiment"] == e) & (lc["dataset"] == d)]["depth"].nunique() for e, d in panels)
    fig, blocks = _rows_of_panels(plt, panels, ncols, row_h=1.6, nrows_each=2, multi=multi, sharey="row")
    handles = {}
    for axes, (exp, ds) in zip(blocks, panels):
        d = lc[(lc["experiment"] == exp) & (lc["dataset"] == ds)]
        depths = sorted(d["depth"].unique())
        loss = d["train_loss"].to_numpy(dtype=float)
        loss = loss[np.isfinite(loss) & (loss > 0)]
        log_loss = bool(len(loss) and loss.max() / loss.min() > 20)
        for j in range(ncols):
            acc_ax, loss_ax = axes[0][j], axes[1][j]
            if j >= len(depths):
                acc_ax.set_visible(False)
                loss_ax.set_visible(False)
                continue
            loss_ax.sharex(acc_ax)
            g = d[d["depth"] == depths[j]]
            for unit in UNIT_ORDER:
                u = g[g["unit"] == unit]
                if u.empty:
                    continue
                (h,) = acc_ax.plot(u["epoch"], u["val_acc_pct"], color=UNIT_COLORS[unit], lw=1.2)
                loss_ax.plot(u["epoch"], u["train_loss"], color=UNIT_COLORS[unit], lw=1.2)
                handles.setdefault(_series_label(unit, ablation), h)
            acc_ax.set_title(f"depth {depths[j]}", fontsize="small")
            acc_ax.tick_params(labelbottom=False)
            loss_ax.set_xlabel("epoch")
            if log_loss:
                loss_ax.set_yscale("log")
            if d["epoch"].max() <= 10:
                loss_ax.set_xticks(sorted(int(e) for e in d["epoch"].unique()))
        axes[0][0].set_ylabel("val. acc. (%)")
        axes[1][0].set_ylabel("train loss (nats)")
    _legend_below(fig, list(handles.values()), list(handles))
    return fig


def fig_units(cells: pd.DataFrame, plt):
    """Test error (%) per residual unit (mean, 95% t-interval, seeds as dots); He et al. 2016 Table 2 as x."""
    from matplotlib.lines import Line2D

    u = units_error(cells)
    groups = unit_ablation_groups(u)
    if not groups:
        return None
    ok = ok_cells(cells)
    multi = len({k[0] for k, _ in groups}) > 1
    fig, axes = _grid(plt, len(groups), panel_h=2.6, ncols_max=2)
    has_paper = False
    for ax, ((exp, ds, depth), g) in zip(axes, groups):
        units = [x for x in UNIT_ORDER if x in set(g["unit"])]
        for i, unit in enumerate(units):
            r = g[g["unit"] == unit].iloc[0]
            color = UNIT_COLORS[unit]
            seeds = ok[(ok["experiment"] == exp) & (ok["dataset"] == ds) & (ok["depth"] == depth)
                       & (ok["unit"] == unit)]
            ax.scatter([i - 0.15] * len(seeds), 100 * (1 - seeds["test_acc"]), s=9, color=color, alpha=0.4,
                       linewidths=0, zorder=2)
            if np.isfinite(r["ours_err_mean"]):
                lo, hi = r["ci_low"], r["ci_high"]
                yerr = [[r["ours_err_mean"] - lo], [hi - r["ours_err_mean"]]] if np.isfinite(lo) else None
                ax.errorbar([i], [r["ours_err_mean"]], yerr=yerr, color=color, marker="o", ms=5, elinewidth=1.2,
                            zorder=3)
            if np.isfinite(r["paper_err"]):
                has_paper = True
                ax.scatter([i + 0.2], [r["paper_err"]], marker="x", s=30, color="black", lw=1.2, zorder=4)
        ax.set_xticks(range(len(units)), [UNIT_LABELS[x].split()[0] for x in units])
        ax.set_xlim(-0.6, len(units) - 0.4)
        ax.set_xlabel("residual unit (He et al. 2016, Fig. 4)")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{panel_title(exp, ds, multi)}, ResNet-{depth}")
    handles = [Line2D([], [], color="0.3", marker="o", ls="", ms=5),
               Line2D([], [], color="0.3", marker="o", ls="", ms=3, alpha=0.4)]
    labels = ["ours: mean, 95% CI", "ours: one seed"]
    if has_paper:
        handles.append(Line2D([], [], color="black", marker="x", ls="", ms=6, mew=1.2))
        labels.append("He et al. 2016, Table 2")
    units_seen = [x for x in UNIT_ORDER if x in set(u["unit"])]
    handles += [Line2D([], [], color=UNIT_COLORS[x], marker="o", ls="", ms=5) for x in units_seen]
    labels += [UNIT_LABELS[x] for x in units_seen]
    _legend_below(fig, handles, labels, ncol_max=3)
    return fig


# ---- the report ----------------------------------------------------------------------------------------------


def figure_plan(cells: pd.DataFrame, epochs: pd.DataFrame) -> list[tuple[str, str, str | None]]:
    """(name, caption, reason it is absent or None) for every figure, decided from the data alone."""
    vc = version_cells(cells)
    versions = set(vc["version"])
    summary = model_summary(cells) if len(cells) else pd.DataFrame()
    plan = []
    n = accuracy_by_depth(cells)["n_seeds"] if len(vc) else pd.Series(dtype=int)
    seeds = f"{n.min()}" if len(n) and n.min() == n.max() else f"{n.min()}-{n.max()}" if len(n) else "0"
    plan.append(("accuracy_by_depth",
                 f"Test accuracy against depth, v1 vs v2, one panel per dataset: mean over seeds (n = {seeds}) with "
                 "a 95% Student-t interval (none for a single seed); dots are single seeds.",
                 None if len(vc) else "no ok cells of unit (a) v1 or unit (e) v2"))
    diff = paired_difference(cells)
    reason = None
    if diff.empty:
        reason = ("only one version in the results ({})".format(", ".join(sorted(versions)) or "none")
                  if len(versions) < 2 else "no dataset, depth and seed has both v1 and v2 ok")
    plan.append(("paired_difference",
                 "Paired difference v2 − v1 in test accuracy (percentage points) per depth: each dot is one seed "
                 "(v1 and v2 trained with the same seed), the mean with a 95% Student-t interval over pairs.", reason))
    has_speed = len(summary) and summary[["train_img_per_s", "infer_img_per_s", "peak_mem_mib",
                                          "loop_img_per_s"]].notna().any().any()
    plan.append(("throughput_memory",
                 "Train-step and inference throughput (images/s) and peak training memory (MiB) against depth, "
                 "from the isolated bench pass (median over repeats; on CPU memory counts saved activations, "
                 "parameters, gradients and optimiser state).",
                 None if has_speed else "no throughput or memory measured (bench disabled or failed)"))
    spec = speed_column(summary) if len(summary) else None
    n_pts = len(summary.dropna(subset=[spec[0], "test_acc_pct"])) if spec else 0
    plan.append(("pareto",
                 "Test accuracy against {} per model (mean over seeds; labels: depth); the dashed line joins the "
                 "Pareto front (no other model is both faster and more accurate).".format(
                     spec[1] if spec else "throughput"),
                 None if n_pts >= 2 else "needs at least two models with both accuracy and throughput"))
    ok_epochs = epochs[epochs["status"] == "ok"] if len(epochs) else epochs
    plan.append(("learning_curves",
                 "Learning curves: validation accuracy and training loss per epoch, mean over ok seeds; one "
                 "colour per version (unit), darker for deeper models.",
                 None if len(ok_epochs) else "no epochs recorded by ok cells"))
    u = units_error(cells) if len(cells) else pd.DataFrame(columns=[*PANEL_KEYS, "depth", "n_seeds"])
    multi_unit = bool(unit_ablation_groups(u))
    plan.append(("units",
                 "Residual units of He et al. 2016 (Fig. 4): test error (%) per unit, mean with a 95% Student-t "
                 "interval over seeds (dots: seeds); crosses: the paper's Table 2 (CIFAR-10, ResNet-110/164).",
                 None if multi_unit else "no residual-unit ablation in the results (needs an ablation unit "
                                         "(b)-(d) beside another unit at the same depth)"))
    return plan


def clean_outputs(out: Path) -> None:
    """Remove figures and tables an earlier report wrote (only our own file types)."""
    for sub, exts in (("figures", FORMATS), ("tables", ("tex", "csv"))):
        d = out / sub
        if d.is_dir():
            for ext in exts:
                for old in sorted(d.glob(f"*.{ext}")):
                    old.unlink()


def build_report(cells: pd.DataFrame, epochs: pd.DataFrame, out: Path, *, formats, dpi: int,
                 context: str) -> Path:
    """Every figure, table and report.md under `out`; returns the report.md path."""
    matplotlib, plt = _pyplot()
    out = Path(out)
    figdir, tabdir = out / "figures", out / "tables"
    figdir.mkdir(parents=True, exist_ok=True)
    tabdir.mkdir(parents=True, exist_ok=True)
    clean_outputs(out)
    cells = cells.reset_index(drop=True)
    multi = cells["experiment"].nunique() > 1
    link_fmt = next((f for f in ("png", "svg", "pdf") if f in formats), formats[0])

    exps, dss = sorted(cells["experiment"].dropna().unique()), sorted(cells["dataset"].dropna().unique())
    md = ["# resnet-bench report", "",
          "ResNet v1 (post-activation, He et al. 2015) against v2 (full pre-activation, He et al. 2016): test "
          "accuracy, throughput and memory by depth and dataset.", "",
          f"Experiments: {', '.join(exps) or '-'}. Datasets: {', '.join(dss) or '-'}. "
          f"Cells: {len(cells)} (" + ", ".join(f"{s} {int((cells['status'] == s).sum())}"
                                              for s in ("ok", "diverged", "failed", "missing")) + ").", ""]
    jpeg = [d for d in dss if "jpeg" in d.lower()]
    if jpeg:
        md += [f"> **Note on {', '.join(jpeg)}**: CIFAR-10 re-encoded as lossy JPEG. The re-encoding loses "
               "detail, so accuracies land a little below those on the original lossless CIFAR-10 batches; read the "
               "comparison with He et al. 2016 with that in mind.", ""]
    md += ["## Cells", "", to_markdown(status_counts(cells).astype(str)) if len(cells) else "No cells.", ""]

    md += ["## Figures", ""]
    absent = []
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(style_rc(context))
        drawers = {"accuracy_by_depth": lambda: fig_accuracy_by_depth(cells, plt),
                   "paired_difference": lambda: fig_paired_difference(cells, plt),
                   "throughput_memory": lambda: fig_throughput_memory(cells, plt),
                   "pareto": lambda: fig_pareto(cells, plt),
                   "learning_curves": lambda: fig_learning_curves(epochs, plt),
                   "units": lambda: fig_units(cells, plt)}
        number = 0
        for name, caption, reason in figure_plan(cells, epochs):
            fig = drawers[name]() if reason is None else None
            if fig is None:
                absent.append(f"- `{name}`: {reason or 'nothing to draw'}")
                continue
            save(fig, figdir / name, formats, dpi)
            plt.close(fig)
            number += 1
            md += [f"**Figure {number}** (`figures/{name}.*`). {caption}", "",
                   f"![{name}](figures/{name}.{link_fmt})", ""]
    if absent:
        md += ["Figures not drawn, and why:", "", *absent, ""]

    md += ["## Tables", "",
           "LaTeX versions (booktabs) are in `tables/*.tex`, the numbers at full precision in `tables/*.csv`. "
           "Errors are 100 x (1 - test accuracy); ± is the sample standard deviation over seeds; intervals are "
           "95% Student-t intervals.", ""]
    tables = []
    t2 = table2(cells)
    for (exp, ds), disp in table2_display(t2).items():
        name = "table2_units" if t2[PANEL_KEYS].drop_duplicates().shape[0] == 1 else f"table2_units_{exp}_{ds}"
        tables.append((name, disp, t2[(t2["experiment"] == exp) & (t2["dataset"] == ds)],
                       f"He et al. 2016 Table 2 reproduction on {panel_title(exp, ds, multi)}: CIFAR-10 test error (%) "
                       "per residual unit, ours (mean ± std over seeds, n seeds) beside the paper's."))
    t3 = table3(cells)
    if len(t3):
        tables.append(("table3_v1_vs_v2", table3_display(t3, multi), t3,
                       "v1 (original unit) vs v2 (full pre-activation) test error (%): mean ± std over seeds; "
                       "v2 − v1 is the paired difference on common seeds with its 95% interval; He et al. 2016 "
                       "Table 3 where it has the setting (CIFAR-10, ResNet-110/164)."))
    diff = paired_difference(cells)
    if len(diff):
        tables.append(("paired_difference", paired_display(diff, multi), diff,
                       "Paired difference v2 − v1 in test accuracy (percentage points), same seeds, 95% interval."))
    summary = model_summary(cells)
    if len(summary):
        tables.append(("models", models_display(summary, multi), summary,
                       "Per model: size, test accuracy (mean ± std over ok seeds), bench throughput (images/s, "
                       "median) and peak training memory (MiB)."))
    for name, disp, raw, caption in tables:
        (tabdir / f"{name}.tex").write_text(to_latex(disp, caption, f"tab:{name}"))
        raw.to_csv(tabdir / f"{name}.csv", index=False, lineterminator="\n")
        md += [f"### {caption}", "", to_markdown(disp), "", f"`tables/{name}.tex`, `tables/{name}.csv`", ""]
    if not tables:
        md += ["No table: no ok cells.", ""]
    if len(t2) and jpeg and any(is_cifar10(d) for d in jpeg):
        md += ["The paper's numbers are on the original CIFAR-10; see the JPEG note above.", ""]

    md += ["## Failures and gaps", ""]
    fails = failures(cells)
    if fails.empty:
        md += ["None: every cell finished ok.", ""]
    else:
        md += [f"{len(fails)} cell(s) did not finish ok; they stay in `results/cells.*` with their status.", "",
               to_markdown(fails.astype(object).where(fails.notna(), "-")), ""]
    bench = bench_failures(cells)
    if len(bench):
        md += [f"{len(bench)} ok cell(s) have no bench numbers (their throughput and memory are absent):", "",
               to_markdown(bench), ""]
    if "in_grid" in cells and (cells["in_grid"] == False).any():  # noqa: E712 (nullable boolean)
        n = int((cells["in_grid"] == False).sum())  # noqa: E712
        md += [f"{n} result(s) are not in the current grid (expected_cells.json): kept, from an earlier grid.", ""]

    md += ["## Environment", "", "```"]
    for col, vals in environment_summary(cells).items():
        md.append(f"{col}: {'; '.join(vals)}")
    md += ["```", ""]
    md += ["## Methods", "",
           "- Accuracy is top-1 on the held-out test split of the final model; error (%) = 100 x (1 - accuracy).",
           "- Intervals: 95% Student-t intervals of the mean over seeds, mean ± t(0.975, n-1) s / sqrt(n) "
           "(exact, no bootstrap); no interval for a single seed.",
           "- Paired difference: v1 and v2 cells are paired on experiment, dataset, depth and seed; the interval "
           "is over the per-seed differences.",
           "- v1 is residual unit (a) `original`, v2 is unit (e) `full_preact`; ablation units (b)-(d) appear only "
           "in the units figure and Table 2.",
           "- Throughput and memory come from the bench pass (one measurement per architecture, run alone on its "
           "device), not from the training loop.",
           f"- Paper numbers: {PAPER}, Table 2 (residual units, CIFAR-10 test error %) and Table 3 (original vs "
           "pre-activation units).", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


# ---- entry point ----------------------------------------------------------------------------------------------


class SettingsError(ValueError):
    pass


def _validate(settings: dict) -> dict:
    s = dict(settings)
    formats = s["formats"]
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    if not isinstance(formats, (list, tuple)) or not formats:
        raise SettingsError(f"formats must be a list of {', '.join(FORMATS)}, got {s['formats']!r}")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise SettingsError(f"unknown figure format(s) {', '.join(map(str, bad))}; valid: {', '.join(FORMATS)}")
    s["formats"] = list(dict.fromkeys(formats))
    if isinstance(s["dpi"], bool) or not isinstance(s["dpi"], int) or not 20 <= s["dpi"] <= 1200:
        raise SettingsError(f"dpi must be an integer in 20..1200, got {s['dpi']!r}")
    if s["context"] not in CONTEXTS:
        raise SettingsError(f"unknown context {s['context']!r}; valid: {', '.join(CONTEXTS)}")
    for key in ("pdf", "allow_missing"):
        if not isinstance(s[key], bool):
            raise SettingsError(f"{key} must be true or false, got {s[key]!r}")
    if s["pdf"] and "pdf" not in s["formats"]:
        s["formats"].append("pdf")
    return s


def resolve_settings(params_path: str | None, cli: dict) -> dict:
    """Defaults, then the params file's `report:` section, then the command line (same names everywhere)."""
    settings = dict(DEFAULTS)
    if params_path:
        import yaml

        try:
            doc = yaml.safe_load(Path(params_path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise SettingsError(f"cannot read {params_path}: {err}") from None
        section = doc.get("report") or {}
        if not isinstance(section, dict):
            raise SettingsError(f"{params_path}: `report` must be a mapping")
        unknown = sorted(set(section) - set(DEFAULTS))
        if unknown:
            raise SettingsError(f"{params_path}: unknown report setting(s) {', '.join(unknown)}; valid: "
                                f"{', '.join(DEFAULTS)}")
        settings.update(section)
    settings.update({k: v for k, v in cli.items() if v is not None})
    return _validate(settings)


def load_settings(params_path: str | None) -> dict:
    """Settings from a params file alone (defaults for absent keys)."""
    return resolve_settings(params_path, {})


def parse_args(argv):
    p = argparse.ArgumentParser(prog="resnet-bench report",
                                description="Figures, LaTeX tables and report.md from a results folder "
                                            "(cells.parquet + epochs.parquet); no training.")
    p.add_argument("--results", default="results", help="folder with cells.parquet and epochs.parquet")
    p.add_argument("--out", default="reports", help="folder for figures/, tables/ and report.md")
    p.add_argument("--params", help="take settings from this YAML file's `report:` section (flags override)")
    p.add_argument("--formats", help=f"comma-separated figure formats: {', '.join(FORMATS)} (default png,svg)")
    p.add_argument("--dpi", type=int, help=f"raster resolution for PNG (default {DEFAULTS['dpi']})")
    p.add_argument("--context", choices=CONTEXTS, help="seaborn context: font scale (default paper)")
    p.add_argument("--pdf", action=argparse.BooleanOptionalAction, default=None, help="also write PDF figures")
    p.add_argument("--allow-missing", dest="allow_missing", action=argparse.BooleanOptionalAction, default=None,
                   help="with --no-allow-missing, exit 1 (after writing the report) when any cell is missing or "
                        "failed (default: allowed, the gaps are listed)")
    return p.parse_args(argv)


REQUIRED_CELL_COLUMNS = ("cell_id", "status", "error", "experiment", "dataset", "model", "version", "unit", "depth",
                         "seed", "test_acc", "params", "fwd_gflops", "train_img_per_s", "bench_train_img_per_s",
                         "bench_infer_img_per_s", "peak_mem_mib", "bench_enabled", "bench_error")
REQUIRED_EPOCH_COLUMNS = ("cell_id", "status", "experiment", "dataset", "model", "version", "unit", "depth", "seed",
                          "epoch", "train_loss", "val_acc")


def load_results(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """cells.parquet and epochs.parquet; a missing file or column is a ValueError naming it."""
    out = []
    for name, required in (("cells", REQUIRED_CELL_COLUMNS), ("epochs", REQUIRED_EPOCH_COLUMNS)):
        path = Path(results) / f"{name}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; run `resnet-bench collect` (or `dvc repro collect`) first")
        df = pd.read_parquet(path)
        absent = [c for c in required if c not in df.columns]
        if absent:
            raise ValueError(f"{path} lacks column(s) {', '.join(absent)}; re-run `resnet-bench collect`")
        out.append(df)
    return out[0], out[1]


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        settings = resolve_settings(args.params, {"formats": args.formats, "dpi": args.dpi, "context": args.context,
                                                  "pdf": args.pdf, "allow_missing": args.allow_missing})
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        cells, epochs = load_results(Path(args.results))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = build_report(cells, epochs, Path(args.out), formats=settings["formats"], dpi=settings["dpi"],
                        context=settings["context"])
    gaps = cells[cells["status"].isin(["missing", "failed"])]
    print(f"report: {path} ({len(cells)} cells; figures as {', '.join(settings['formats'])})")
    if len(gaps) and not settings["allow_missing"]:
        print(f"error: {len(gaps)} cell(s) missing or failed (listed in {path}); allow_missing is false",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
