"""Pure tables for the report: intervals, paired differences, per-model summaries, curves, provenance.

Every function takes the `collect` tables (docs/results_schema.md) and returns a
new DataFrame; nothing here draws or writes. Sign convention, used everywhere:
a difference is v2 - v1 in test accuracy, in percentage points (pp); positive
means v2 is more accurate.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_bench.collect import UNIT_ORDER, VERSION_UNIT
from resnet_bench.report.escape import md_text

CI_LEVEL = 0.95
PANEL_KEYS = ["experiment", "dataset"]
# Columns of `results/<experiment>/excluded.csv` (the lead's collect contract).
EXCLUDED_COLUMNS = ["cell_id", "experiment", "model", "version", "unit", "depth", "dataset", "seed", "reason"]
SIGN_CONVENTION = ("Sign convention: every difference is v2 − v1 in test accuracy, in percentage points (pp); "
                   "positive means v2 (pre-activation) is more accurate.")


# ---- selections -----------------------------------------------------------------------------------------------


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


def split_excluded(cells: pd.DataFrame, excluded: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells of the current grid, excluded cells with a reason).

    Excluded: every row of `excluded.csv`, plus old-layout rows with `in_grid == False`
    (a result from an earlier grid). They are listed in the report and kept out of
    every mean, interval and figure.
    """
    ex = [] if excluded is None or excluded.empty else [excluded.reindex(columns=EXCLUDED_COLUMNS)]
    keep = cells
    if "in_grid" in cells:
        stale = cells["in_grid"].fillna(True).astype(bool).eq(False)
        if stale.any():
            old = cells.loc[stale, [c for c in EXCLUDED_COLUMNS if c != "reason"]].copy()
            old["reason"] = "config not in current grid (in_grid false)"
            ex.append(old)
            keep = cells[~stale]
    if ex:
        ex_df = pd.concat(ex, ignore_index=True).drop_duplicates(subset=["cell_id"], keep="first")
        keep = keep[~keep["cell_id"].isin(set(ex_df["cell_id"]))]
        ex_df = ex_df.sort_values(["reason", "cell_id"], kind="mergesort").reset_index(drop=True)
    else:
        ex_df = pd.DataFrame(columns=EXCLUDED_COLUMNS)
    return keep.reset_index(drop=True), ex_df


# ---- intervals ------------------------------------------------------------------------------------------------


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


def std(v) -> float:
    """Sample standard deviation (ddof 1); NaN under 2 values."""
    v = np.asarray(v, dtype=float)
    return float(v.std(ddof=1)) if len(v) > 1 else np.nan


def test_sampling_se_pp(acc: float, n_test: int) -> float:
    """Binomial standard error (pp) of one test accuracy `acc` (0..1) measured on n_test images:
    100 sqrt(acc (1 - acc) / n_test). The noise of the test set alone, whatever the seed."""
    if not n_test or not np.isfinite(acc):
        return np.nan
    return 100.0 * math.sqrt(acc * (1 - acc) / n_test)


# ---- accuracy tables ------------------------------------------------------------------------------------------


def _unit_sort(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    order = {u: i for i, u in enumerate(UNIT_ORDER)}
    return df.sort_values(keys, key=lambda s: s.map(order) if s.name == "unit" else s,
                          kind="mergesort").reset_index(drop=True)


def accuracy_by_depth(cells: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (%) per experiment, dataset, version and depth: mean, std and 95% t-interval over ok seeds,
    with the counts of cells that did not finish ok (diverged / failed / missing), which are never averaged."""
    cols = [*PANEL_KEYS, "version", "depth", "model", "n_seeds", "test_acc_pct", "std_pp", "ci_low", "ci_high",
            "params", "fwd_gflops", "n_diverged", "n_failed", "n_missing"]
    plain = cells[is_version_unit(cells)]
    rows = []
    for (exp, ds, version, depth), g in plain.groupby([*PANEL_KEYS, "version", "depth"], sort=True):
        ok = ok_cells(g)
        acc = 100 * ok["test_acc"].to_numpy(dtype=float)
        mean, lo, hi = t_interval(acc)
        params = ok["params"].dropna() if "params" in ok else pd.Series(dtype=float)
        gfl = ok["fwd_gflops"].dropna() if "fwd_gflops" in ok else pd.Series(dtype=float)
        rows.append([exp, ds, version, int(depth), str(g["model"].iloc[0]), len(acc), mean, std(acc), lo, hi,
                     float(params.iloc[0]) if len(params) else np.nan, float(gfl.iloc[0]) if len(gfl) else np.nan,
                     *[int((g["status"] == s).sum()) for s in ("diverged", "failed", "missing")]])
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
    """v2 - v1 test accuracy (pp) on the same seeds, per experiment, dataset and depth: mean, std, 95% t-interval."""
    cols = [*PANEL_KEYS, "depth", "n_pairs", "diff_pp", "std_pp", "ci_low", "ci_high"]
    rows = []
    for (exp, ds, depth), g in paired_values(cells).groupby([*PANEL_KEYS, "depth"], sort=True):
        d = g["diff_pp"].to_numpy(dtype=float)
        mean, lo, hi = t_interval(d)
        rows.append([exp, ds, int(depth), len(d), mean, std(d), lo, hi])
    return pd.DataFrame(rows, columns=cols)


def _median(df: pd.DataFrame, col: str) -> float:
    if col not in df or not df[col].notna().any():
        return np.nan
    return float(np.nanmedian(df[col].to_numpy(dtype=float)))


def model_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per model (experiment, dataset, model, unit): accuracy over ok seeds with its interval, size,
    bench throughput with its interquartile range, memory.

    Throughput and memory are the isolated bench pass's medians (one measurement per
    architecture, shared by its seeds); `loop_img_per_s` is the training loop's.
    """
    cols = [*PANEL_KEYS, "model", "version", "unit", "depth", "n_cells", "n_ok", "n_diverged", "test_acc_pct",
            "std_pp", "ci_low", "ci_high", "params", "fwd_gflops", "train_img_per_s", "train_img_per_s_iqr",
            "infer_img_per_s", "infer_img_per_s_iqr", "loop_img_per_s", "peak_mem_mib", "mem_is_estimate",
            "bench_unstable", "train_img_per_s_cv", "infer_img_per_s_cv"]
    rows = []
    for (exp, ds, model, version, unit, depth), g in cells.groupby(
            [*PANEL_KEYS, "model", "version", "unit", "depth"], sort=True):
        ok = ok_cells(g)
        acc = 100 * ok["test_acc"].to_numpy(dtype=float)
        mean, lo, hi = t_interval(acc)
        params = ok["params"].dropna()
        rows.append([exp, ds, model, version, unit, int(depth), len(g), len(ok), int((g["status"] == "diverged").sum()),
                     mean, std(acc), lo, hi, int(params.iloc[0]) if len(params) else np.nan, _median(ok, "fwd_gflops"),
                     _median(ok, "bench_train_img_per_s"), _median(ok, "bench_train_img_per_s_iqr"),
                     _median(ok, "bench_infer_img_per_s"), _median(ok, "bench_infer_img_per_s_iqr"),
                     _median(ok, "train_img_per_s"), _median(ok, "peak_mem_mib"), memory_is_estimate(ok),
                     bool(ok["bench_unstable"].fillna(False).astype(bool).any()) if "bench_unstable" in ok else False,
                     _median(ok, "bench_train_img_per_s_cv"), _median(ok, "bench_infer_img_per_s_cv")])
    return _unit_sort(pd.DataFrame(rows, columns=cols), [*PANEL_KEYS, "depth", "unit"])


def memory_is_estimate(cells: pd.DataFrame) -> bool:
    """True when the memory numbers are a CPU estimate (saved activations + parameters + gradients + optimiser
    state, resnet_bench.bench), not a measured CUDA peak."""
    if "device" in cells and len(cells):
        return bool((cells["device"].astype(object) != "cuda").any())
    return False


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


# ---- the paper's numbers (from experiment.json) ---------------------------------------------------------------


def paper_lookup(experiment: dict | None) -> dict[tuple[str, str, str], float]:
    """{(dataset, model, unit): paper test error %} from experiment.json, only when `paper_comparable` is true."""
    if not experiment or not experiment.get("paper_comparable") or not experiment.get("paper"):
        return {}
    out = {}
    for r in experiment["paper"].get("results") or []:
        out[(str(r["dataset"]), str(r["model"]), str(r["unit"]))] = float(r["value"])
    return out


def paper_status(experiment: dict | None, source: str) -> str:
    """One Markdown sentence: whose numbers stand beside ours and which statistic they are, or why none do.
    The paper's strings come from a file: escaped as Markdown text."""
    if experiment is None:
        return (f"No comparison with a paper: {md_text(source)} is absent (results from before experiment.json "
                "existed), so whether the recipe matches a paper is unknown.")
    paper = experiment.get("paper")
    if not paper:
        return f"No comparison with a paper: experiment `{md_text(experiment.get('name', '?'))}` names no paper."
    if not experiment.get("paper_comparable"):
        reasons = "; ".join(str(r) for r in experiment.get("paper_mismatch") or []) or "no reason recorded"
        return (f"No comparison with {md_text(paper.get('citation', 'the paper'))}: this run is not comparable "
                f"({md_text(reasons)}).")
    p = {k: md_text(paper.get(k, "?")) for k in ("citation", "statistic", "metric", "dataset", "variant", "recipe")}
    return (f"Paper numbers: {p['citation']}, {p['statistic']} of {p['metric']} on {p['dataset']} "
            f"({p['variant']}, recipe {p['recipe']}).")


def units_error(cells: pd.DataFrame, paper: dict | None = None) -> pd.DataFrame:
    """Test error (%) per experiment, dataset, depth and residual unit over ok seeds, with the paper's number
    where experiment.json gives a comparable one. Every unit with any cell keeps its row (n_seeds 0 when none
    finished ok)."""
    paper = paper or {}
    cols = [*PANEL_KEYS, "depth", "unit", "model", "n_cells", "n_seeds", "ours_err_mean", "ours_err_std",
            "ours_err_median", "ci_low", "ci_high", "paper_err", "diff_vs_paper_pp"]
    rows = []
    for (exp, ds, depth, unit), g in cells.groupby([*PANEL_KEYS, "depth", "unit"], sort=True):
        err = 100 * (1 - ok_cells(g)["test_acc"].to_numpy(dtype=float))
        mean, lo, hi = t_interval(err)
        model = str(g["model"].iloc[0])
        p = paper.get((ds, model, unit), np.nan)
        rows.append([exp, ds, int(depth), unit, model, len(g), len(err), mean, std(err),
                     float(np.median(err)) if len(err) else np.nan, lo, hi, p, mean - p])
    return _unit_sort(pd.DataFrame(rows, columns=cols), [*PANEL_KEYS, "depth", "unit"])


def unit_ablation_groups(units: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """(experiment, dataset, depth) groups of `units_error` that compare units: two or more units with ok
    seeds, at least one of them an ablation unit (b)-(d) (plain v1 vs v2 has its own figures)."""
    out = []
    for key, g in units.groupby([*PANEL_KEYS, "depth"], sort=True):
        ran = g[g["n_seeds"] > 0]
        if len(ran) >= 2 and (~ran["unit"].isin(list(VERSION_UNIT.values()))).any():
            out.append((key, g))
    return out


def units_table(cells: pd.DataFrame, paper: dict | None = None) -> pd.DataFrame:
    """Rows of `units_error` in the groups that compare residual units (He et al. 2016 Table 2 layout)."""
    u = units_error(cells, paper)
    keys = [k for k, _ in unit_ablation_groups(u)]
    if not keys:
        return u.iloc[0:0]
    mask = [(e, d, int(dep)) in keys for e, d, dep in zip(u["experiment"], u["dataset"], u["depth"])]
    return u[mask].reset_index(drop=True)


def versions_table(cells: pd.DataFrame, paper: dict | None = None) -> pd.DataFrame:
    """v1 vs v2 test accuracy (%) per experiment, dataset and depth: mean and std over ok seeds, the paired
    v2 - v1 accuracy difference (pp) on common seeds with its 95% interval, and the paper's error (%) where
    comparable."""
    paper = paper or {}
    cols = [*PANEL_KEYS, "depth", "v1_n", "v1_acc_mean", "v1_acc_std", "v2_n", "v2_acc_mean", "v2_acc_std",
            "n_pairs", "diff_pp", "diff_ci_low", "diff_ci_high", "paper_v1_err", "paper_v2_err"]
    acc = accuracy_by_depth(cells)
    diff = paired_difference(cells).set_index([*PANEL_KEYS, "depth"])
    rows = []
    for (exp, ds, depth), g in acc.groupby([*PANEL_KEYS, "depth"], sort=True):
        row = [exp, ds, int(depth)]
        papers = []
        for v in ("v1", "v2"):
            r = g[g["version"] == v]
            row += [int(r["n_seeds"].iloc[0]), float(r["test_acc_pct"].iloc[0]), float(r["std_pp"].iloc[0])] \
                if len(r) else [0, np.nan, np.nan]
            model = r["model"].iloc[0] if len(r) else f"resnet{depth}_{v}"
            papers.append(paper.get((ds, model, VERSION_UNIT[v]), np.nan))
        key = (exp, ds, int(depth))
        if key in diff.index:
            p = diff.loc[key]
            row += [int(p["n_pairs"]), p["diff_pp"], p["ci_low"], p["ci_high"]]
        else:
            row += [0, np.nan, np.nan, np.nan]
        rows.append(row + papers)
    return pd.DataFrame(rows, columns=cols)


# ---- curves ---------------------------------------------------------------------------------------------------


def iterations_per_epoch(cells: pd.DataFrame) -> dict[str, float]:
    """cell_id -> optimizer steps per epoch, ceil(n_train / batch_size) (the loader keeps the last partial batch,
    resnet_bench.data.loader.DeviceLoader drop_last=False); for epochs recorded before the `iteration` column existed."""
    out = {}
    for cid, n, b in zip(cells["cell_id"], cells.get("n_train", pd.Series(dtype=float)),
                         cells.get("batch_size", pd.Series(dtype=float))):
        if pd.notna(n) and pd.notna(b) and b:
            out[cid] = float(-(-int(n) // int(b)))
    return out


def error_curves(epochs: pd.DataFrame, cells: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per cell and epoch: iteration, train error (%) and held-out error (%) for the He et al. 2016 Fig. 1/6-style
    plot; returns (table, which held-out split: 'test' when per-epoch test accuracy is recorded, else 'val').

    Iterations are the recorded `iteration` (optimizer steps at the end of the epoch) or, in older records,
    epoch x ceil(n_train / batch_size). Cells of every status are kept (`status` column): figures draw the ok
    seeds and mark where diverged ones stopped.
    """
    cols = ["cell_id", "status", *PANEL_KEYS, "model", "version", "unit", "depth", "seed", "epoch", "iteration",
            "train_err", "heldout_err"]
    if epochs.empty:
        return pd.DataFrame(columns=cols), "val"
    split = "test" if "test_acc" in epochs and epochs["test_acc"].notna().any() else "val"
    e = epochs.copy()
    steps = iterations_per_epoch(cells)
    fallback = e["cell_id"].map(steps) * e["epoch"].astype(float)
    rec = e["iteration"].astype(float) if "iteration" in e else pd.Series(np.nan, index=e.index)
    e["iteration"] = rec.where(rec.notna(), fallback)
    e["iteration"] = e["iteration"].where(e["iteration"].notna(), e["epoch"].astype(float))
    e["train_err"] = 100 * (1 - e["train_acc"].astype(float))
    e["heldout_err"] = 100 * (1 - e[f"{split}_acc"].astype(float))
    # a diverged epoch (non-finite loss) has no meaningful accuracy
    bad = ~np.isfinite(e["train_loss"].astype(float))
    e.loc[bad, ["train_err", "heldout_err"]] = np.nan
    return e[cols].reset_index(drop=True), split


def curve_bands(curves: pd.DataFrame) -> pd.DataFrame:
    """Per model and epoch over its ok seeds: mean, min and max of train and held-out error (the seed spread)."""
    ok = curves[curves["status"] == "ok"]
    keys = [*PANEL_KEYS, "model", "version", "unit", "depth", "epoch"]
    if ok.empty:
        return pd.DataFrame(columns=[*keys, "iteration", "n_seeds"])
    return ok.groupby(keys, sort=True).agg(
        iteration=("iteration", "median"), n_seeds=("seed", "nunique"),
        train_mean=("train_err", "mean"), train_min=("train_err", "min"), train_max=("train_err", "max"),
        held_mean=("heldout_err", "mean"), held_min=("heldout_err", "min"),
        held_max=("heldout_err", "max")).reset_index()


# ---- failures, provenance -------------------------------------------------------------------------------------


def first_line(text, limit: int = 160) -> str:
    if text is None or (isinstance(text, float) and np.isnan(text)) or text is pd.NA:
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


def status_counts(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells by status per experiment and dataset."""
    cols = [*PANEL_KEYS, "cells", "ok", "diverged", "failed", "missing"]
    rows = []
    for (exp, ds), g in cells.groupby(PANEL_KEYS, sort=True):
        rows.append([exp, ds, len(g), *[int((g["status"] == s).sum()) for s in cols[3:]]])
    return pd.DataFrame(rows, columns=cols)


def distinct(cells: pd.DataFrame, col: str) -> list[str]:
    """Distinct non-null values of a column as text, sorted; [] when the column is absent."""
    if col not in cells:
        return []
    return sorted({str(v) for v in cells[col].dropna()})


def compute_totals(cells: pd.DataFrame) -> dict:
    """Total training compute of the cells that ran: GPU-hours (cuda cells: train_time_s x GPUs visible, assuming
    each cell used its GPUs for its whole training time) and CPU core-hours (cpu cells: train_time_s x torch
    threads), plus the first start and last finish (UTC)."""
    ran = cells[cells["status"] != "missing"]
    t = ran["train_time_s"].astype(float).fillna(0.0) if "train_time_s" in ran else pd.Series(dtype=float)
    dev = ran["device"].astype(object) if "device" in ran else pd.Series("cpu", index=ran.index)
    gpus = ran["gpu_count"].astype(float).fillna(1).clip(lower=1) if "gpu_count" in ran else 1.0
    threads = ran["torch_threads"].astype(float).fillna(1).clip(lower=1) if "torch_threads" in ran else 1.0
    cuda = dev == "cuda"
    gpu_h = float((t * gpus)[cuda].sum() / 3600) if len(ran) else 0.0
    cpu_h = float((t * threads)[~cuda].sum() / 3600) if len(ran) else 0.0
    start = ran["started_at"].dropna() if "started_at" in ran else pd.Series(dtype=object)
    end = ran["finished_at"].dropna() if "finished_at" in ran else pd.Series(dtype=object)
    return {"gpu_hours": gpu_h, "cpu_core_hours": cpu_h, "n_cuda": int(cuda.sum()), "n_cpu": int((~cuda).sum()),
            "train_hours": float(t.sum() / 3600) if len(ran) else 0.0,
            "first_start": min(start) if len(start) else None, "last_finish": max(end) if len(end) else None}


def read_experiment(results: Path) -> dict | None:
    """`<results>/experiment.json` validated by the schema, its paper check re-derived from its own `paper`
    block (resnet_bench.sweep.records.read_experiment); None when the results predate it."""
    from resnet_bench.sweep.records import read_experiment as read

    return read(Path(results) / "experiment.json")
