"""The report's "Findings": sentences written from the numbers, each with its mean difference, 95% interval and n.

A claim is only made when the interval excludes 0; otherwise the two versions are
"not distinguishable". One seed gives no interval and is said to carry no
uncertainty estimate. Cells that did not finish ok are named, never averaged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resnet_bench.report.stats import SIGN_CONVENTION, test_sampling_se_pp
from resnet_bench.report.escape import md_text
from resnet_bench.report.tables import UNIT_LABELS, fmt_interval, fmt_num
from resnet_bench.report.tables import panel_title as _panel_title


def panel_title(exp: str, ds: str, multi: bool) -> str:
    """The panel's name as Markdown text (findings are Markdown)."""
    return md_text(_panel_title(exp, ds, multi))


def verdict(lo: float, hi: float) -> str:
    """Wording for a 95% interval of v2 - v1 accuracy (pp)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval"
    if lo <= 0 <= hi:
        return "not distinguishable (the interval contains 0)"
    return "v2 more accurate" if lo > 0 else "v1 more accurate"


def _not_ok(cells: pd.DataFrame, exp: str, ds: str, depth: int) -> str:
    """'v1 seed 1 diverged; v2 seed 3 failed' for the plain v1/v2 cells of one depth that are not ok."""
    plain = {"v1": "original", "v2": "full_preact"}
    g = cells[(cells["experiment"] == exp) & (cells["dataset"] == ds) & (cells["depth"] == depth)
              & (cells["status"] != "ok")]
    parts = [f"{r['version']} seed {r['seed']} {r['status']}" for _, r in g.iterrows()
             if plain.get(r["version"]) == r["unit"]]
    return "; ".join(parts)


def version_findings(vt: pd.DataFrame, cells: pd.DataFrame, multi: bool) -> list[str]:
    """One bullet per experiment, dataset and depth: the paired v2 - v1 accuracy difference and its verdict."""
    out = []
    for _, r in vt.iterrows():
        where = f"ResNet-{r['depth']} on {panel_title(r['experiment'], r['dataset'], multi)}"
        n = int(r["n_pairs"])
        if n >= 2:
            text = (f"{where}: v2 − v1 = {fmt_interval(r['diff_pp'], r['diff_ci_low'], r['diff_ci_high'])} pp "
                    f"(mean [95% CI]), n = {n} paired seeds: {verdict(r['diff_ci_low'], r['diff_ci_high'])}.")
        elif n == 1:
            text = (f"{where}: v2 − v1 = {fmt_num(r['diff_pp'], sign=True)} pp from a single seed: no interval; one "
                    "seed carries no uncertainty estimate, so this is not evidence either way.")
        else:
            text = (f"{where}: no seed has both v1 and v2 ok (ok seeds: v1 {int(r['v1_n'])}, v2 {int(r['v2_n'])}); "
                    "no paired difference.")
        gaps = _not_ok(cells, r["experiment"], r["dataset"], int(r["depth"]))
        if gaps:
            text += f" Not averaged: {gaps}."
        out.append(text)
    return out


def overall_finding(vt: pd.DataFrame) -> str | None:
    """How many depths favour each version, counting only intervals that exclude 0."""
    rows = vt[vt["n_pairs"] >= 2]
    if rows.empty:
        return None
    verdicts = [verdict(lo, hi) for lo, hi in zip(rows["diff_ci_low"], rows["diff_ci_high"])]
    n_v2, n_v1 = verdicts.count("v2 more accurate"), verdicts.count("v1 more accurate")
    n_same = len(verdicts) - n_v2 - n_v1
    return (f"Across {len(rows)} depth/dataset setting(s) with at least two paired seeds: v2 more accurate in "
            f"{n_v2}, v1 more accurate in {n_v1}, not distinguishable in {n_same}.")


def sampling_findings(cells: pd.DataFrame) -> list[str]:
    """Test-set sampling error per dataset: one image in pp, and the binomial standard error of one accuracy at the
    mean ok accuracy. A difference smaller than a few of these is within the noise of the test set alone."""
    out = []
    ok = cells[(cells["status"] == "ok") & cells["test_acc"].notna()]
    if "n_test" not in ok:
        return out
    for ds, g in ok.groupby("dataset", sort=True):
        n = g["n_test"].dropna()
        if n.empty:
            continue
        n_test = int(n.iloc[0])
        acc = float(g["test_acc"].mean())
        se = test_sampling_se_pp(acc, n_test)
        out.append(f"{md_text(ds)}: the test split has {n_test} images, so one image is {100 / n_test:.2f} pp; at the mean "
                   f"accuracy {100 * acc:.1f}% the binomial standard error of a single test accuracy is "
                   f"{se:.2f} pp (100 sqrt(p(1 − p)/n)).")
    return out


def paper_findings(units: pd.DataFrame, multi: bool) -> list[str]:
    """Ours beside the paper, only for rows with a comparable paper number."""
    rows = units[units["paper_err"].notna() & units["ours_err_mean"].notna()]
    out = []
    for _, r in rows.iterrows():
        out.append(f"ResNet-{r['depth']} {UNIT_LABELS[r['unit']]} on {panel_title(r['experiment'], r['dataset'], multi)}: "
                   f"ours {fmt_num(r['ours_err_mean'])}% test error (mean of {int(r['n_seeds'])} seeds, 95% CI "
                   f"[{fmt_num(r['ci_low'])}, {fmt_num(r['ci_high'])}]) against the paper's {fmt_num(r['paper_err'])}% "
                   f"({fmt_num(r['diff_vs_paper_pp'], sign=True)} pp error).")
    return out


def findings_section(vt: pd.DataFrame, cells: pd.DataFrame, units_cmp: pd.DataFrame, multi: bool,
                     n_excluded: int, paper_line: str) -> list[str]:
    """Markdown lines of the Findings section."""
    md = ["## Findings", "", SIGN_CONVENTION, ""]
    if vt.empty:
        md += ["No finding: no v1 or v2 cell finished ok.", ""]
    else:
        overall = overall_finding(vt)
        if overall:
            md += [overall, ""]
        md += [f"- {x}" for x in version_findings(vt, cells, multi)] + [""]
        if (vt["n_pairs"] < 2).all():
            md += ["**Warning: one seed per setting.** Nothing above has an interval; rerun with several seeds "
                   "before reading any difference as real.", ""]
    sampling = sampling_findings(cells)
    if sampling:
        md += ["Test-set sampling error:", ""] + [f"- {x}" for x in sampling] + [""]
    md += [paper_line, ""]
    md += [f"- {x}" for x in paper_findings(units_cmp, multi)]
    if n_excluded:
        md += [f"{n_excluded} cell(s) on disk are excluded from every number above (see *Excluded cells*).", ""]
    return md
