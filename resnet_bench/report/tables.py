"""Display tables: number formatting, Markdown, and LaTeX that fits a two-column paper's `\\columnwidth`.

Numbers are formatted with a true minus sign (U+2212 in Markdown, `$-$` in LaTeX),
never a hyphen. Each LaTeX table is wrapped in `adjustbox` with
`max width=\\columnwidth`: a table whose natural width exceeds the column is
scaled down to it, a narrower one is left as is, so no table overflows by
construction (needs `\\usepackage{booktabs,adjustbox}`). The columns are kept
narrow so that the scale stays readable; `latex_natural_width_pt` estimates the
natural width and each .tex file states it in a comment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resnet_bench.collect import UNIT_ORDER, VERSION_UNIT
from resnet_bench.report.escape import MINUS, latex_escape, md_cell
from resnet_bench.report.stats import PANEL_KEYS

UNIT_LABELS = {"original": "(a) original", "bn_after_add": "(b) BN after addition",
               "relu_before_add": "(c) ReLU before addition", "relu_only_preact": "(d) ReLU-only pre-activation",
               "full_preact": "(e) full pre-activation"}
# Widths in TeX points (1/72.27 in). \columnwidth of two-column templates: ICML 2024 / CVPR 3.25 in = 234.9 pt,
# ACL 219.1 pt (7.7 cm); NeurIPS is one column, \textwidth 5.5 in = 397.5 pt. We size against the narrowest.
COLUMNWIDTH_PT = 219.1
# Natural-width estimate at \small (9 pt Computer Modern): digits are 0.5 em = 4.5 pt wide, text averages about
# 4.4 pt per character (cmr9 metrics); \tabcolsep is 6 pt on each side of a column (LaTeX default).
CHAR_PT = 4.5
TABCOLSEP_PT = 6.0


def fmt_num(v, digits: int = 2, *, sign: bool = False) -> str:
    """A number with a true minus sign; '-' (a dash) when absent."""
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and not np.isfinite(v)):
        return "–"
    s = f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"
    return s.replace("-", MINUS)


def fmt_sig(v, sig: int = 3) -> str:
    """Three significant digits (0.00124, 4.12, 11.6): FLOPs span 1e-3 (digits, 8x8) to 1e1 (ImageNet)."""
    if v is None or v is pd.NA or not np.isfinite(v):
        return "–"
    return f"{v:.{sig}g}"


def fmt_mean_std(mean, sd, n=None, digits: int = 2) -> str:
    """'6.70 ± 0.15' ('6.70' for one seed, '–' for none), with ' (5)' seeds when n is given."""
    if mean is None or not np.isfinite(mean):
        return "–" if n is None else f"– ({n})"
    s = fmt_num(mean, digits) + (f" ± {fmt_num(sd, digits)}" if sd is not None and np.isfinite(sd) else "")
    return s if n is None else f"{s} ({n})"


def fmt_interval(mean, lo, hi, digits: int = 2) -> str:
    """'+1.20 [−0.30, +2.70]'; the mean alone when there is no interval."""
    if mean is None or not np.isfinite(mean):
        return "–"
    if lo is None or not np.isfinite(lo):
        return fmt_num(mean, digits, sign=True)
    return f"{fmt_num(mean, digits, sign=True)} [{fmt_num(lo, digits, sign=True)}, {fmt_num(hi, digits, sign=True)}]"


def fmt_count(v) -> str:
    """Large counts readably: 1.23M, 456k."""
    if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    v = float(v)
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def panel_title(exp: str, ds: str, multi_experiment: bool) -> str:
    return f"{ds} ({exp})" if multi_experiment else str(ds)


def model_label(model: str, version: str, unit: str) -> str:
    """The model name, plus the unit letter for an ablation unit (b)-(d)."""
    return model + ("" if VERSION_UNIT.get(version) == unit else f" {UNIT_LABELS[unit].split()[0]}")


# ---- display tables (strings) ---------------------------------------------------------------------------------


def units_display(units: pd.DataFrame, multi: bool) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (experiment, dataset): rows = units (a)-(e), columns = test error (%) at each depth, ours (mean ± std
    (seeds)) and the paper's where experiment.json gives a comparable number."""
    out = {}
    for (exp, ds), g in units.groupby(PANEL_KEYS, sort=True):
        depths = sorted(g["depth"].unique())
        has_paper = bool(g["paper_err"].notna().any())
        rows = []
        for unit in UNIT_ORDER:
            u = g[g["unit"] == unit]
            if u.empty:
                continue
            row = {"unit": UNIT_LABELS[unit]}
            for d in depths:
                r = u[u["depth"] == d]
                row[f"{d} ours"] = fmt_mean_std(r["ours_err_mean"].iloc[0], r["ours_err_std"].iloc[0],
                                                int(r["n_seeds"].iloc[0])) if len(r) else "–"
                if has_paper:
                    row[f"{d} paper"] = fmt_num(r["paper_err"].iloc[0]) if len(r) else "–"
            rows.append(row)
        out[(exp, ds)] = pd.DataFrame(rows)
    return out


def versions_display(t: pd.DataFrame, multi: bool) -> pd.DataFrame:
    """Accuracy to 0.1 pp (mean ± std (seeds)), the paired difference to 0.01 pp; the data column only when the
    table has several datasets or experiments (the table must fit a column)."""
    has_paper = bool(t[["paper_v1_err", "paper_v2_err"]].notna().any().any())
    several = t[PANEL_KEYS].drop_duplicates().shape[0] > 1
    rows = []
    for _, r in t.iterrows():
        row = {"data": panel_title(r["experiment"], r["dataset"], multi)} if several else {}
        row.update({"depth": str(r["depth"]),
                    "v1 acc. (%)": fmt_mean_std(r["v1_acc_mean"], r["v1_acc_std"], int(r["v1_n"]), digits=1),
                    "v2 acc. (%)": fmt_mean_std(r["v2_acc_mean"], r["v2_acc_std"], int(r["v2_n"]), digits=1),
                    "v2 − v1 [95% CI]": fmt_interval(r["diff_pp"], r["diff_ci_low"], r["diff_ci_high"])})
        if has_paper:
            row["paper v1/v2"] = f"{fmt_num(r['paper_v1_err'])}/{fmt_num(r['paper_v2_err'])}"
        rows.append(row)
    return pd.DataFrame(rows)


def models_display(summary: pd.DataFrame, multi: bool) -> pd.DataFrame:
    """Per model, in short columns (the table must fit a column): accuracy to 0.1 pp, throughput in images/s."""
    rows = []
    for _, r in summary.iterrows():
        rows.append({"model": model_label(r["model"], r["version"], r["unit"]) + (
                         f" ({panel_title(r['experiment'], r['dataset'], multi)})" if multi else ""),
                     "params": fmt_count(r["params"]), "GFLOPs": fmt_sig(r["fwd_gflops"]),
                     "acc. (%)": fmt_mean_std(r["test_acc_pct"], r["std_pp"], digits=1),
                     "ok": f"{r['n_ok']}/{r['n_cells']}",
                     # * an unstable bench measurement (resnet_bench.noise): its CV stayed above bench.cv_max
                     "train/s": fmt_num(r["train_img_per_s"], 0) + ("*" if str(r.get("bench_unstable")) == "True" else ""),
                     "infer/s": fmt_num(r["infer_img_per_s"], 0) + ("*" if str(r.get("bench_unstable")) == "True" else ""),
                     "MiB": fmt_num(r["peak_mem_mib"], 0)})
    return pd.DataFrame(rows)


# ---- Markdown and LaTeX ---------------------------------------------------------------------------------------


def to_markdown(df: pd.DataFrame) -> str:
    """A Markdown table; every cell kept to one cell on one line (`escape.md_cell`). User text in `df`
    is escaped by the caller (`escape.md_text`)."""
    esc = md_cell
    cols = list(df.columns)
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(esc(r[c]) for c in cols) + " |" for _, r in df.iterrows()]
    return "\n".join(lines)


def latex_natural_width_pt(df: pd.DataFrame) -> float:
    """Estimated natural width (pt) of the tabular at \\small: per column the longest cell (header included) at
    CHAR_PT per character, plus 2 x TABCOLSEP_PT."""
    total = 0.0
    for c in df.columns:
        longest = max([len(str(c)), *[len(str(v)) for v in df[c]]])
        total += longest * CHAR_PT + 2 * TABCOLSEP_PT
    return total


def to_latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table no wider than \\columnwidth (adjustbox max width); text escaped, ± as $\\pm$, minus
    as $-$. Needs \\usepackage{booktabs,adjustbox}; no jinja2."""
    cols = list(df.columns)
    align = "".join("l" if i == 0 or not any(ch.isdigit() for ch in str(df[c].iloc[0] if len(df) else ""))
                    else "r" for i, c in enumerate(cols))
    width = latex_natural_width_pt(df)
    lines = [r"\begin{table}[t]",
             r"% generated by resnet_bench.report; needs \usepackage{booktabs,adjustbox}",
             f"% natural width about {width:.0f} pt; scaled down to \\columnwidth only if wider",
             r"\centering", r"\small", f"\\caption{{{latex_escape(caption)}}}", f"\\label{{{label}}}",
             r"\begin{adjustbox}{max width=\columnwidth}",
             f"\\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(latex_escape(c) for c in cols) + r" \\",
             r"\midrule"]
    lines += [" & ".join(latex_escape(r[c]) for c in cols) + r" \\" for _, r in df.iterrows()]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{adjustbox}", r"\end{table}", ""]
    return "\n".join(lines)
