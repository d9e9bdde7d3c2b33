"""What the numbers can resolve: statistical power of the accuracy comparison (resnet_bench.power) and the
bench's interleaved v2/v1 throughput ratios with their intervals and stability (resnet_bench.noise)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from resnet_bench import power
from resnet_bench.report.escape import md_text
from resnet_bench.report.stats import PANEL_KEYS, accuracy_by_depth, ok_cells, paired_values, version_cells

POWER_COLS = [*PANEL_KEYS, "depth", "n_seeds", "observed_pp", "paired_sd_pp", "planning_sd_pp", "sd_basis", "mde_pp",
              "mde_basis", "seeds_for_observed", "target_pp", "seeds_for_target", "alpha", "power"]


def target_of(experiment: dict | None):
    """The experiment's `target:` block (resnet_bench.config.Target, its defaults where absent)."""
    from resnet_bench import config as cfg

    return cfg.Target.model_validate((experiment or {}).get("target") or {})


def power_table(cells: pd.DataFrame, experiment: dict | None) -> pd.DataFrame:
    """Per experiment, dataset and depth with v1 and v2: the minimum detectable v2 - v1 difference at the
    seeds run and the seeds needed to resolve the observed difference and the target (resnet_bench.power)."""
    target = target_of(experiment)
    pairs = paired_values(cells)
    acc = accuracy_by_depth(cells)
    rows = []
    for (exp, ds, depth), g in acc.groupby([*PANEL_KEYS, "depth"], sort=True):
        if set(g["version"]) != {"v1", "v2"}:
            continue
        p = pairs[(pairs["experiment"] == exp) & (pairs["dataset"] == ds) & (pairs["depth"] == depth)]
        ok = ok_cells(version_cells(cells))
        n_test = ok.loc[(ok["dataset"] == ds), "n_test"].dropna() if "n_test" in ok else pd.Series(dtype=float)
        means = {v: float(g.loc[g["version"] == v, "test_acc_pct"].iloc[0]) / 100 for v in ("v1", "v2")}
        row = power.power_row(p["diff_pp"].astype(float).tolist(), acc_v1=means["v1"], acc_v2=means["v2"],
                              n_test=int(n_test.iloc[0]) if len(n_test) else None, target_pp=target.effect_pp,
                              seed_sd_pp=target.seed_sd_pp, alpha=target.alpha, power=target.power)
        rows.append({"experiment": exp, "dataset": ds, "depth": int(depth), **row})
    return pd.DataFrame(rows, columns=POWER_COLS)


def _num(v, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def power_lines(table: pd.DataFrame, target) -> list[str]:
    """One line per depth/dataset: what its seeds resolve and what more seeds would."""
    out = []
    for r in table.itertuples(index=False):
        seeds = "" if r.seeds_for_observed is None or pd.isna(r.seeds_for_observed) else \
            f"; {int(r.seeds_for_observed)} seed pairs would resolve the observed {r.observed_pp:+.2f} pp"
        tgt = ""
        if r.target_pp is not None and not pd.isna(r.target_pp):
            tgt = (f"; the target {r.target_pp:.2f} pp{' (' + md_text(target.source) + ')' if target.source else ''} "
                   + (f"needs {int(r.seeds_for_target)} seed pairs" if not pd.isna(r.seeds_for_target)
                      else "needs a paired sd: run two seeds or state target.seed_sd_pp"))
        mde = (f"detects {_num(r.mde_pp, '.2f')} pp ({md_text(r.mde_basis)})" if not pd.isna(r.mde_pp)
               else "detects nothing yet (no paired sd)")
        sd = "" if r.planning_sd_pp is None or pd.isna(r.planning_sd_pp) else (
            f" at a planning sd of {r.planning_sd_pp:.2f} pp ({md_text(r.sd_basis)}"
            + (f"; observed paired sd {r.paired_sd_pp:.2f} pp" if not pd.isna(r.paired_sd_pp) else "") + ")")
        out.append(f"- {md_text(r.dataset)}, depth {r.depth}: {r.n_seeds} seed(s) {mde}{sd}{seeds}{tgt}.")
    return out


RATIO_COLS = [*PANEL_KEYS, "depth", "model", "unit", "reference", "train_ratio", "train_ratio_lo", "train_ratio_hi",
              "infer_ratio", "infer_ratio_lo", "infer_ratio_hi", "train_cv", "infer_cv", "unstable",
              "competing_cpu_frac"]


def ratio_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Per model with an interleaved reference (v2 against v1 of its depth): the bench's throughput ratios
    with their 95 % intervals, its CVs and whether the measurement stayed unstable."""
    if "bench_train_ratio" not in cells:
        return pd.DataFrame(columns=RATIO_COLS)
    ok = ok_cells(cells)
    ok = ok[ok["bench_train_ratio"].notna()]
    rows = []
    for (exp, ds, depth, model, unit), g in ok.groupby([*PANEL_KEYS, "depth", "model", "unit"], sort=True):
        r = g.iloc[0]  # one measurement per architecture, shared by its seeds
        # The reference of an interleaved set: v1's original unit at this depth (resnet_bench.sweep.phases).
        ref = cells[(cells["experiment"] == exp) & (cells["dataset"] == ds) & (cells["depth"] == depth)
                    & (cells["unit"] == "original")]
        ref_unstable = bool(ref["bench_unstable"].fillna(False).any()) if "bench_unstable" in ref else False
        ref_name = str(ref["model"].iloc[0]) if len(ref) else "v1 (original unit)"
        rows.append([exp, ds, int(depth), model, unit, ref_name, *(float(r[f"bench_{k}"]) for k in (
            "train_ratio", "train_ratio_lo", "train_ratio_hi", "infer_ratio", "infer_ratio_lo", "infer_ratio_hi")),
            float(r["bench_train_img_per_s_cv"]), float(r["bench_infer_img_per_s_cv"]),
            bool(r["bench_unstable"]) or ref_unstable, float(r["bench_competing_cpu_frac"])
            if pd.notna(r["bench_competing_cpu_frac"]) else np.nan])
    return pd.DataFrame(rows, columns=RATIO_COLS)


def ratio_lines(table: pd.DataFrame) -> list[str]:
    out = []
    for r in table.itertuples(index=False):
        verdict = ("indistinguishable from 1" if r.train_ratio_lo <= 1 <= r.train_ratio_hi else
                   "faster" if r.train_ratio_lo > 1 else "slower")
        out.append(f"- {md_text(r.dataset)}, depth {r.depth}: {md_text(r.model)} ({md_text(r.unit)}) / {md_text(r.reference)} train "
                   f"{r.train_ratio:.3f} [{r.train_ratio_lo:.3f}, {r.train_ratio_hi:.3f}] ({verdict}), inference "
                   f"{r.infer_ratio:.3f} [{r.infer_ratio_lo:.3f}, {r.infer_ratio_hi:.3f}]"
                   + ("; **unstable**: a throughput CV stayed above bench.cv_max after every re-measurement"
                      if r.unstable else "") + ".")
    return out


def unstable_models(cells: pd.DataFrame) -> list[str]:
    """Models whose bench measurement is marked unstable (resnet_bench.noise)."""
    if "bench_unstable" not in cells:
        return []
    ok = ok_cells(cells)
    return sorted(set(ok.loc[ok["bench_unstable"].fillna(False).astype(bool), "model"].astype(str)))


def section(cells: pd.DataFrame, experiment: dict | None) -> list[str]:
    """The report's "Resolution" section: power per depth, and the bench's ratios and unstable measurements."""
    target = target_of(experiment)
    md = ["## Resolution: what these numbers can tell apart", "",
          f"Accuracy: a two-sided paired t-test at {target.alpha:g} with power {target.power:g} (exact, noncentral "
          "t) on the per-seed v2 − v1 differences, planned at the larger of the observed paired sd's 80 % upper "
          "confidence bound (a few seeds estimate an sd poorly) and √2 × the experiment's stated seed sd; with one "
          "seed, the floor set by the test set's binomial sampling error alone.", ""]
    pt = power_table(cells, experiment)
    md += power_lines(pt, target) or ["No depth has both v1 and v2 ok."]
    md += [""]
    rt = ratio_table(cells)
    if len(rt):
        md += ["Throughput: v1 and v2 of a depth timed interleaved (repeat r of each before repeat r + 1 of "
               "either), ratio = geometric mean over repeat pairs, interval = 95 % t-interval of the log-ratios.",
               "", *ratio_lines(rt), ""]
    bad = unstable_models(cells)
    if bad:
        md += [f"Unstable bench measurements (hollow markers in the figures): {md_text(', '.join(bad))}. Their "
               "throughput CV exceeded bench.cv_max after every re-measurement: treat their differences as noise.", ""]
    return md
