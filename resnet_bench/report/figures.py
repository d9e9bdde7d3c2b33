"""The report's figures (matplotlib + seaborn style), each a function of the tables that returns a Figure or None.

One colour and one marker per version (and per residual unit) in every figure:
v1 = unit (a) blue circles, v2 = unit (e) vermilion squares (Okabe & Ito
colour-blind-safe palette, https://jfly.uni-koeln.de/color/). Cells that did not
finish ok are never averaged; diverged and failed ones are marked where they
would have been. Drawing is deterministic: no shared axes, no sub-figures, sorted
inputs, a fixed SVG hash salt, fixed file metadata (bytes equal across runs,
folders and PYTHONHASHSEED).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from resnet_bench.collect import UNIT_ORDER, VERSION_UNIT
from resnet_bench.report import stats
from resnet_bench.report.escape import mpl_text
from resnet_bench.report.tables import UNIT_LABELS
from resnet_bench.report.tables import panel_title as _panel_title

VERSION_COLORS = {"v1": "#0072B2", "v2": "#D55E00"}
VERSION_MARKERS = {"v1": "o", "v2": "s"}
VERSION_LABELS = {"v1": "v1 (post-activation)", "v2": "v2 (pre-activation)"}
UNIT_COLORS = {"original": VERSION_COLORS["v1"], "bn_after_add": "#009E73", "relu_before_add": "#CC79A7",
               "relu_only_preact": "#E69F00", "full_preact": VERSION_COLORS["v2"]}
UNIT_MARKERS = {"original": "o", "bn_after_add": "^", "relu_before_add": "v", "relu_only_preact": "D",
                "full_preact": "s"}
DIFF_COLOR = "#333333"
FORMATS = ("pdf", "png", "svg")
SVG_HASHSALT = "resnet-bench"
PAPER_WIDTH_IN = 6.75   # two-column text width (inches), e.g. ICML / CVPR \textwidth
COLUMN_WIDTH_IN = 3.25  # one column of the same templates
LOG_RANGE = 5.0         # a positive axis spanning more than this ratio (max/min) is drawn on a log scale
NARROW_RANGE = 0.1      # values within 10 % of each other get an axis of +-10 % around them
# An accuracy axis spans at least this (pp): 4 binomial standard errors of one accuracy near 50 % on a
# 10,000-image test set (0.5 pp each); a smaller span would draw test-set noise as a slope.
MIN_ACC_SPAN_PP = 2.0
MIN_SEEDS_FOR_CI = 3    # under this many seeds the 95 % interval is not drawn (points + a note instead)
FILE_METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None}}


def pyplot():
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
               "grid.linewidth": 0.5, "lines.linewidth": 1.4, "errorbar.capsize": 2.5, "path.simplify": False})
    return rc


def save(fig, out, stem: str, formats, dpi: int) -> list[Path]:
    """Write `<stem>.<fmt>` for each format into `out` (an outputs.OutputDir: atomically, as its own), with
    fixed metadata: the same figure gives the same bytes."""
    paths = []
    for fmt in formats:
        with out.file(f"{stem}.{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=FILE_METADATA[fmt], bbox_inches="tight", pad_inches=0.03)
        paths.append(out.root / f"{stem}.{fmt}")
    return paths


def panel_title(exp: str, ds: str, multi: bool) -> str:
    """A panel's title; names are shown as text, never read as mathtext."""
    return mpl_text(_panel_title(exp, ds, multi))


# ---- layout helpers -------------------------------------------------------------------------------------------


def panels_of(df: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted({(str(e), str(d)) for e, d in zip(df["experiment"], df["dataset"])})


def grid(plt, n: int, *, panel_h: float = 2.3, ncols_max: int = 3, ncols: int | None = None):
    """A figure of n panels (at most ncols_max per row), paper or column width, constrained layout."""
    ncols = ncols or min(n, ncols_max)
    nrows = -(-n // ncols)
    width = COLUMN_WIDTH_IN if ncols == 1 else PAPER_WIDTH_IN
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_h * nrows + 0.45), squeeze=False,
                             layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def legend_below(fig, handles, labels, ncol_max: int = 4):
    """One legend under all panels, in as many columns as fit the figure's width."""
    if not handles:
        return
    longest = max(len(str(x)) for x in labels)
    fit = int((fig.get_figwidth() + 0.2) // (0.065 * longest + 0.55))  # ~0.065 in per character + handle
    fig.legend(handles, labels, loc="outside lower center", ncol=max(1, min(len(handles), ncol_max, fit)),
               fontsize="small")


def depth_axis(ax, depths):
    ax.set_xticks(range(len(depths)), [str(d) for d in depths])
    ax.set_xlim(-0.5, len(depths) - 0.5)
    ax.set_xlabel("depth (layers)")


def compact(v: float) -> str:
    """Tick text for positive numbers on a log axis: 500, 2k, 15k, 1.5M."""
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def log_axis(ax, axis: str, values) -> bool:
    """Log scale with compact tick labels when the positive values span more than LOG_RANGE; True if set."""
    import matplotlib.ticker as ticker

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) < 2 or v.max() / v.min() <= LOG_RANGE:
        return False
    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    a.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=6))
    a.set_major_formatter(ticker.FuncFormatter(lambda x, _: compact(x)))
    a.set_minor_locator(ticker.NullLocator())
    return True


def with_log(label: str, logged: bool) -> str:
    """An axis label, ', log' inside its unit's parentheses when it has them: 'x (img/s, log)', never '(..) (log)'."""
    if not logged:
        return label
    return label[:-1] + ", log)" if label.endswith(")") else label + " (log)"


def tick_text(v: float, _pos=None) -> str:
    """Linear tick text with at most 3 significant digits: 270k, 0.0812, 1.5M."""
    if v == 0:
        return "0"
    return compact(v) if abs(v) >= 1e3 else f"{v:.3g}"


def linear_axis(ax, axis: str, values) -> None:
    """A linear axis a reader can read: at most 4 ticks with short labels (no '269500270000...'), and where the
    values differ by under NARROW_RANGE of their size, a span of +-NARROW_RANGE around them, so that two
    points at 0.0811 and 0.0816 are seen to be nearly equal instead of filling the axis edge to edge."""
    import matplotlib.ticker as ticker

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(ticker.MaxNLocator(nbins=4, min_n_ticks=2))
    a.set_major_formatter(ticker.FuncFormatter(tick_text))
    if len(v) and v.min() > 0 and (v.max() - v.min()) < NARROW_RANGE * v.max():
        mid = (v.max() + v.min()) / 2
        (ax.set_xlim if axis == "x" else ax.set_ylim)(mid * (1 - NARROW_RANGE), mid * (1 + NARROW_RANGE))
    elif axis == "x":
        ax.margins(x=0.12)


def ci_yerr(g: pd.DataFrame, y: np.ndarray, n_col: str = "n_seeds") -> np.ndarray:
    """Error bars of the 95 % t-interval, zero where fewer than MIN_SEEDS_FOR_CI seeds ran: with two, the t
    quantile (12.7) makes a bar that swamps the panel; the seeds are drawn as points instead."""
    err = np.nan_to_num(np.vstack([y - g["ci_low"].to_numpy(dtype=float), g["ci_high"].to_numpy(dtype=float) - y]),
                        nan=0.0)
    err[:, g[n_col].to_numpy() < MIN_SEEDS_FOR_CI] = 0.0
    return err


def place_labels(ax, points: list[tuple[float, float, str]], color="0.25") -> None:
    """Depth labels beside their points without collisions: each label takes the first of eight offsets
    (points) whose box overlaps no point and no label placed before it (display coordinates, fixed order)."""
    offsets = [(4, 3), (4, -9), (-5, 3), (-5, -9), (4, 10), (-5, 10), (4, -16), (-5, -16)]
    ax.get_xlim(), ax.get_ylim()  # autoscale now: the transform below uses the final limits
    to_px = ax.transData
    scale = ax.figure.dpi / 72.0
    xy = [to_px.transform((x, y)) for x, y, _ in points]
    boxes: list[tuple[float, float, float, float]] = []
    marks = [(px - 3 * scale, py - 3 * scale, px + 3 * scale, py + 3 * scale) for px, py in xy]

    def hits(b):
        return any(b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3] for o in [*boxes, *marks])

    for (x, y, text), (px, py) in zip(points, xy):
        w, h = 4.6 * len(text) * scale, 7 * scale  # x-small DejaVu Sans: ~4.6 pt per digit, 7 pt high
        chosen = offsets[0]
        for dx, dy in offsets:
            left = px + dx * scale if dx > 0 else px + dx * scale - w
            b = (left, py + dy * scale, left + w, py + dy * scale + h)
            if not hits(b):
                chosen = (dx, dy)
                boxes.append(b)
                break
        else:
            left = px + chosen[0] * scale
            boxes.append((left, py + chosen[1] * scale, left + w, py + chosen[1] * scale + h))
        ax.annotate(text, (x, y), xytext=chosen, textcoords="offset points", fontsize="x-small", color=color,
                    ha="left" if chosen[0] > 0 else "right", va="bottom")


STATUS_SHORT = {"diverged": "div.", "failed": "fail", "missing": "miss"}


def status_marks(ax, cells: pd.DataFrame, pos: dict, offset: dict) -> None:
    """Per version and depth, the cells that did not finish ok ('1 div., 1 fail'), written upwards from the bottom
    of the axes in the version's colour; the y range is extended downwards so the text clears the data."""
    import matplotlib.transforms as mtransforms

    plain = cells[stats.is_version_unit(cells) & (cells["status"] != "ok")]
    plain = plain[[int(d) in pos for d in plain["depth"]]]
    if plain.empty:
        return
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo - 0.8 * (hi - lo), hi)  # the bottom ~45% of the axes is left for the text
    trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    for (version, depth), g in plain.groupby(["version", "depth"], sort=True):
        counts = g["status"].value_counts()
        text = ", ".join(f"{int(counts[s])} {STATUS_SHORT[s]}" for s in STATUS_SHORT if s in counts)
        ax.text(pos[int(depth)] + offset[version], 0.02, text, rotation=90, fontsize="x-small",
                color=VERSION_COLORS[version], ha="center", va="bottom", transform=trans)


def hollow_handle():
    """The legend entry of an unstable bench measurement: a hollow grey marker."""
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="", marker="o", ms=4, mfc="white", mec="0.3", mew=1.0)


def _seed_range(acc: pd.DataFrame) -> tuple[int, int]:
    n = acc.loc[acc["n_seeds"] > 0, "n_seeds"]
    return (int(n.min()), int(n.max())) if len(n) else (0, 0)


def version_handles(versions, n_min: int, n_max: int):
    """Legend entries saying what the marker and its bars are, from the fewest and most seeds per point."""
    from matplotlib.lines import Line2D

    if n_max <= 1:
        suffix = ": one seed, no interval"
    elif n_min >= MIN_SEEDS_FOR_CI:
        suffix = ": mean, bars 95% t-interval"
    elif n_max < MIN_SEEDS_FOR_CI:
        suffix = f": mean of {n_max} seeds (dots: seeds; no interval under {MIN_SEEDS_FOR_CI})"
    else:
        suffix = f": mean, bars 95% t-interval ({MIN_SEEDS_FOR_CI}+ seeds)"
    return ([Line2D([], [], color=VERSION_COLORS[v], marker=VERSION_MARKERS[v], ms=4) for v in versions],
            [VERSION_LABELS[v] + suffix for v in versions])


# ---- figures --------------------------------------------------------------------------------------------------


def fig_accuracy_by_depth(cells: pd.DataFrame, plt):
    """Test accuracy vs depth, v1 vs v2: seeds as dots, mean with 95% t-interval, one panel per dataset; cells
    that did not finish ok are counted at the bottom of their depth."""
    acc, seeds = stats.accuracy_by_depth(cells), stats.version_cells(cells)
    if acc.empty or not acc["n_seeds"].gt(0).any():
        return None
    panels = panels_of(acc)
    multi = len({e for e, _ in panels}) > 1
    fig, axes = grid(plt, len(panels))
    offset = {"v1": -0.12, "v2": 0.12}
    for ax, (exp, ds) in zip(axes, panels):
        a = acc[(acc["experiment"] == exp) & (acc["dataset"] == ds)]
        s = seeds[(seeds["experiment"] == exp) & (seeds["dataset"] == ds)]
        depths = sorted(int(d) for d in a["depth"].unique())
        pos = {d: i for i, d in enumerate(depths)}
        for v in ("v1", "v2"):
            g, sv = a[(a["version"] == v) & (a["n_seeds"] > 0)], s[s["version"] == v]
            if g.empty:
                continue
            ax.scatter([pos[int(d)] + offset[v] for d in sv["depth"]], 100 * sv["test_acc"], s=9,
                       color=VERSION_COLORS[v], marker=VERSION_MARKERS[v], alpha=0.35, linewidths=0, zorder=2)
            y = g["test_acc_pct"].to_numpy(dtype=float)
            ax.errorbar([pos[int(d)] + offset[v] for d in g["depth"]], y, yerr=ci_yerr(g, y), color=VERSION_COLORS[v],
                        marker=VERSION_MARKERS[v], ms=4, lw=1.2, elinewidth=1.0, zorder=3)
        status_marks(ax, cells[(cells["experiment"] == exp) & (cells["dataset"] == ds)], pos, offset)
        depth_axis(ax, depths)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(panel_title(exp, ds, multi))
    legend_below(fig, *version_handles(sorted(set(acc["version"])), *_seed_range(acc)))
    return fig


def fig_paired_difference(cells: pd.DataFrame, plt):
    """v2 - v1 test accuracy (pp) on the same seeds, per depth: pairs as dots, mean with 95% t-interval.
    Only drawn when some depth has two or more pairs (with one pair it would repeat accuracy_by_depth)."""
    from matplotlib.lines import Line2D

    diff, pairs = stats.paired_difference(cells), stats.paired_values(cells)
    if diff.empty or diff["n_pairs"].max() < 2:
        return None
    panels = panels_of(diff)
    multi = len({e for e, _ in panels}) > 1
    fig, axes = grid(plt, len(panels))
    for ax, (exp, ds) in zip(axes, panels):
        d = diff[(diff["experiment"] == exp) & (diff["dataset"] == ds)]
        p = pairs[(pairs["experiment"] == exp) & (pairs["dataset"] == ds)]
        depths = sorted(int(x) for x in d["depth"].unique())
        pos = {dep: i for i, dep in enumerate(depths)}
        ax.axhline(0, color="0.45", lw=0.8, ls="--", zorder=1)
        ax.scatter([pos[int(x)] + 0.15 for x in p["depth"]], p["diff_pp"], s=9, color=DIFF_COLOR, alpha=0.4,
                   linewidths=0, zorder=2)
        y = d["diff_pp"].to_numpy(dtype=float)
        ax.errorbar([pos[int(x)] for x in d["depth"]], y, yerr=ci_yerr(d, y, "n_pairs"), color=DIFF_COLOR, marker="D", ms=4, lw=0,
                    elinewidth=1.2, zorder=3)
        depth_axis(ax, depths)
        ax.set_ylabel("v2 − v1 test accuracy (pp)")
        ax.set_title(panel_title(exp, ds, multi))
    legend_below(fig, [Line2D([], [], color=DIFF_COLOR, marker="D", ms=4, ls=""),
                       Line2D([], [], color=DIFF_COLOR, marker="o", ms=3, ls="", alpha=0.4)],
                 ["mean over pairs, bars 95% t-interval" if diff["n_pairs"].min() >= MIN_SEEDS_FOR_CI else
                  f"mean over pairs (no interval under {MIN_SEEDS_FOR_CI} pairs)", "one seed (v2 − v1)"])
    return fig


def fig_accuracy_vs_cost(cells: pd.DataFrame, plt):
    """Test accuracy against parameters and against forward FLOPs, v1 and v2 as two lines (mean, 95% CI),
    log x axes; one row per dataset."""
    acc, seeds = stats.accuracy_by_depth(cells), stats.version_cells(cells)
    seeds = seeds[seeds["status"] == "ok"]
    acc = acc[acc["n_seeds"] > 0].dropna(subset=["params", "fwd_gflops"], how="all")
    if acc.empty:
        return None
    panels = panels_of(acc)
    multi = len({e for e, _ in panels}) > 1
    fig, axes = grid(plt, 2 * len(panels), ncols=2, panel_h=2.2)
    for i, (exp, ds) in enumerate(panels):
        a = acc[(acc["experiment"] == exp) & (acc["dataset"] == ds)]
        for ax, col, label in ((axes[2 * i], "params", "parameters"),
                               (axes[2 * i + 1], "fwd_gflops", "forward GFLOPs per image")):
            for v in ("v1", "v2"):
                g = a[(a["version"] == v) & a[col].notna()].sort_values(col)
                if g.empty:
                    continue
                y = g["test_acc_pct"].to_numpy(dtype=float)
                ax.errorbar(g[col], y, yerr=ci_yerr(g, y), color=VERSION_COLORS[v], marker=VERSION_MARKERS[v], ms=4,
                            lw=1.2, elinewidth=1.0)
                sv = seeds[(seeds["dataset"] == ds) & (seeds["experiment"] == exp) & (seeds["version"] == v)]
                xs = dict(zip(g["depth"], g[col]))
                sv = sv[sv["depth"].isin(list(xs))]
                ax.scatter([xs[d] for d in sv["depth"]], 100 * sv["test_acc"], s=9, color=VERSION_COLORS[v],
                           marker=VERSION_MARKERS[v], alpha=0.35, linewidths=0, zorder=2)
            if not log_axis(ax, "x", a[col]):
                linear_axis(ax, "x", a[col])
            place_labels(ax, [(float(r[col]), float(r["test_acc_pct"]), str(r["depth"]))
                              for _, r in a[a[col].notna()].sort_values(["version", "depth"]).iterrows()])
            ax.set_xlabel(with_log(label, ax.get_xscale() == "log"))
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(panel_title(exp, ds, multi), fontsize="small")
    legend_below(fig, *version_handles(sorted(set(acc["version"])), *_seed_range(acc)))
    return fig


def _plain_units(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of units (a)/(e) when a panel has them (plain v1 vs v2), else every unit."""
    plain = df[df["unit"].isin(list(VERSION_UNIT.values()))]
    return plain if len(plain) else df


def series_label(unit: str, ablation: bool) -> str:
    if not ablation and unit in VERSION_UNIT.values():
        return VERSION_LABELS["v1" if unit == "original" else "v2"]
    return UNIT_LABELS[unit]


def throughput_columns(summary: pd.DataFrame) -> list[tuple[str, str | None, str]]:
    """(column, IQR column, axis label) of the bench numbers present."""
    est = bool(summary["mem_is_estimate"].any()) if "mem_is_estimate" in summary else False
    mem_label = "est. train memory (MiB)" if est else "peak train memory (MiB)"
    cols = [(c, iqr, lab) for c, iqr, lab in (("train_img_per_s", "train_img_per_s_iqr", "train step (img/s)"),
                                              ("infer_img_per_s", "infer_img_per_s_iqr", "inference (img/s)"),
                                              ("peak_mem_mib", None, mem_label))
            if summary[c].notna().any()]
    if not cols and summary["loop_img_per_s"].notna().any():
        cols = [("loop_img_per_s", None, "training loop (img/s)")]
    return cols


def fig_throughput_memory(cells: pd.DataFrame, plt):
    """Bench train-step and inference throughput (median, bars: interquartile range) and training memory against
    depth; one row per dataset; log y where the range exceeds LOG_RANGE."""
    summary = stats.model_summary(cells)
    cols = throughput_columns(summary)
    if not cols:
        return None
    summary = summary.dropna(subset=[c for c, *_ in cols], how="all")
    panels = panels_of(summary)
    multi = len({e for e, _ in panels}) > 1
    fig, axes = grid(plt, len(cols) * len(panels), ncols=len(cols), panel_h=2.0)
    handles, unstable = {}, False
    for i, (exp, ds) in enumerate(panels):
        s = _plain_units(summary[(summary["experiment"] == exp) & (summary["dataset"] == ds)])
        ablation = bool((~s["unit"].isin(list(VERSION_UNIT.values()))).any())
        depths = sorted(int(d) for d in s["depth"].unique())
        pos = {d: k for k, d in enumerate(depths)}
        for j, (col, iqr, label) in enumerate(cols):
            ax = axes[i * len(cols) + j]
            for unit in UNIT_ORDER:
                g = s[(s["unit"] == unit) & s[col].notna()].sort_values("depth")
                if g.empty:
                    continue
                y = g[col].to_numpy(dtype=float)
                half = np.nan_to_num(g[iqr].to_numpy(dtype=float) / 2, nan=0.0) if iqr else np.zeros_like(y)
                xs = [pos[int(d)] for d in g["depth"]]
                h = ax.errorbar(xs, y, yerr=np.vstack([np.minimum(half, 0.95 * y), half]),
                                color=UNIT_COLORS[unit], marker=UNIT_MARKERS[unit], ms=4, lw=1.2, elinewidth=1.0)
                handles.setdefault(series_label(unit, ablation), h)
                shaky = g["bench_unstable"].fillna(False).to_numpy(dtype=bool) if iqr else np.zeros(len(g), bool)
                if shaky.any():  # hollow: the measurement stayed above bench.cv_max (resnet_bench.noise)
                    ax.plot(np.asarray(xs)[shaky], y[shaky], ls="", marker=UNIT_MARKERS[unit], ms=4, mfc="white",
                            mec=UNIT_COLORS[unit], mew=1.0, zorder=4)
                    unstable = True
            depth_axis(ax, depths)
            if not log_axis(ax, "y", s[col]):
                top = float(np.nanmax(s[col].to_numpy(dtype=float)))
                ax.set_ylim(0, 1.12 * top if top > 0 else None)  # room above the highest point and its bar
            ax.set_ylabel(with_log(label, ax.get_yscale() == "log"), fontsize="small")
            if j == 0:
                ax.set_title(panel_title(exp, ds, multi), loc="left", fontsize="small")
    labels = [k + ": median, bars IQR over repeats" for k in handles]
    if unstable:
        handles["unstable"] = hollow_handle()
        labels.append("hollow: unstable (CV > bench.cv_max)")
    legend_below(fig, list(handles.values()), labels, ncol_max=2)
    return fig


def fig_pareto(cells: pd.DataFrame, plt):
    """Test accuracy (mean, 95% CI) against throughput per model, log x with compact ticks; the Pareto front
    dashed and ringed."""
    summary = stats.model_summary(cells)
    spec = stats.speed_column(summary)
    if spec is None:
        return None
    col, xlabel = spec
    s = summary.dropna(subset=[col, "test_acc_pct"])
    if len(s) < 2:
        return None
    panels = panels_of(s)
    multi = len({e for e, _ in panels}) > 1
    ablation = bool((~s["unit"].isin(list(VERSION_UNIT.values()))).any())
    fig, axes = grid(plt, len(panels), panel_h=2.6, ncols_max=2)
    handles, unstable = {}, False
    for ax, (exp, ds) in zip(axes, panels):
        d = s[(s["experiment"] == exp) & (s["dataset"] == ds)]
        front = stats.pareto_front(d, col, "test_acc_pct")
        (h,) = ax.plot(front[col], front["test_acc_pct"], color="0.35", lw=0.9, ls="--", marker="o", ms=9,
                       mfc="none", mew=0.9, zorder=1)
        handles["Pareto front"] = h
        for unit in UNIT_ORDER:
            g = d[d["unit"] == unit]
            if g.empty:
                continue
            y = g["test_acc_pct"].to_numpy(dtype=float)
            h = ax.errorbar(g[col], y, yerr=ci_yerr(g.rename(columns={"n_ok": "n_seeds"}), y), color=UNIT_COLORS[unit],
                            marker=UNIT_MARKERS[unit], ms=4, ls="", elinewidth=0.9, zorder=3)
            handles.setdefault(series_label(unit, ablation), h)
            shaky = g["bench_unstable"].fillna(False).to_numpy(dtype=bool)
            if shaky.any():  # hollow: the throughput measurement stayed above bench.cv_max
                ax.plot(g[col].to_numpy(dtype=float)[shaky], y[shaky], ls="", marker=UNIT_MARKERS[unit], ms=4,
                        mfc="white", mec=UNIT_COLORS[unit], mew=1.0, zorder=4)
                unstable = True
        logged = log_axis(ax, "x", d[col])
        if not logged:
            linear_axis(ax, "x", d[col])
        ax.margins(x=0.12, y=0.12)
        lo, hi = ax.get_ylim()
        if hi - lo < MIN_ACC_SPAN_PP:  # two means 0.2 pp apart do not fill the panel
            mid = (hi + lo) / 2
            ax.set_ylim(mid - MIN_ACC_SPAN_PP / 2, mid + MIN_ACC_SPAN_PP / 2)
        place_labels(ax, [(float(r[col]), float(r["test_acc_pct"]), str(r["depth"]))
                          for _, r in d.sort_values(["unit", "depth"]).iterrows()])
        ax.set_xlabel(with_log(xlabel, logged), fontsize="small")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(panel_title(exp, ds, multi))
    front_handle = handles.pop("Pareto front")
    n = s["n_ok"]
    what = (": one seed" if n.max() <= 1 else ": mean, bars 95% t-interval" if n.min() >= MIN_SEEDS_FOR_CI
            else f": mean (no interval under {MIN_SEEDS_FOR_CI} seeds)")
    extra = ([hollow_handle()], ["hollow: unstable throughput (CV > bench.cv_max)"]) if unstable else ([], [])
    legend_below(fig, [*handles.values(), front_handle, *extra[0]], [*(k + what for k in handles), "Pareto front",
                                                                     *extra[1]], ncol_max=2)
    return fig


def fig_error_curves(epochs: pd.DataFrame, cells: pd.DataFrame, plt):
    """He et al. 2016 Fig. 1/6 style: error (%) against iterations, train dashed, held-out solid, v1 and v2 in
    their colours; the band is the min-max over ok seeds; an x marks where a diverged cell stopped. One panel per
    dataset and depth."""
    from matplotlib.lines import Line2D

    curves, split = stats.error_curves(epochs, cells)
    curves = curves[curves["unit"].isin(list(VERSION_UNIT.values()))]
    bands = stats.curve_bands(curves)
    if bands.empty:
        return None, split
    keys = sorted({(str(e), str(d), int(dep)) for e, d, dep in zip(bands["experiment"], bands["dataset"],
                                                                   bands["depth"])})
    multi = len({k[0] for k in keys}) > 1
    fig, axes = grid(plt, len(keys), panel_h=2.1)
    diverged_any = False
    for ax, (exp, ds, depth) in zip(axes, keys):
        b = bands[(bands["experiment"] == exp) & (bands["dataset"] == ds) & (bands["depth"] == depth)]
        for v in ("v1", "v2"):
            g = b[b["version"] == v].sort_values("iteration")
            if g.empty:
                continue
            x, c = g["iteration"].to_numpy(dtype=float), VERSION_COLORS[v]
            for kind, ls in (("train", "--"), ("held", "-")):
                ax.plot(x, g[f"{kind}_mean"], color=c, ls=ls, lw=1.2 if kind == "held" else 1.0)
                if g["n_seeds"].max() >= 2:
                    ax.fill_between(x, g[f"{kind}_min"], g[f"{kind}_max"], color=c, alpha=0.15, lw=0)
        div = curves[(curves["experiment"] == exp) & (curves["dataset"] == ds) & (curves["depth"] == depth)
                     & (curves["status"] == "diverged")]
        for cid, g in div.groupby("cell_id", sort=True):
            fin = g.dropna(subset=["train_err"]).sort_values("iteration")
            last = fin.iloc[-1] if len(fin) else g.sort_values("iteration").iloc[0]
            y = last["train_err"] if len(fin) else 100.0
            ax.scatter([last["iteration"]], [y], marker="x", s=30, color=VERSION_COLORS[last["version"]], lw=1.3,
                       zorder=4)
            diverged_any = True
        ax.set_xlabel("iterations (optimizer steps)")
        ax.set_ylabel("error (%)")
        ax.set_title(f"ResNet-{depth}, {panel_title(exp, ds, multi)}", fontsize="small")
        ax.set_ylim(bottom=0)
    versions = sorted(set(bands["version"]))
    handles = [Line2D([], [], color=VERSION_COLORS[v], lw=1.2) for v in versions]
    labels = [VERSION_LABELS[v] for v in versions]
    handles += [Line2D([], [], color="0.3", ls="-"), Line2D([], [], color="0.3", ls="--")]
    labels += [f"{'test' if split == 'test' else 'validation'} error", "train error"]
    if diverged_any:
        handles.append(Line2D([], [], color="0.3", marker="x", ls=""))
        labels.append("diverged (last finite)")
    legend_below(fig, handles, labels, ncol_max=3)
    return fig, split


def fig_units(cells: pd.DataFrame, paper: dict, plt):
    """Test error (%) per residual unit (mean, 95% t-interval, seeds as dots); the paper's numbers as x."""
    from matplotlib.lines import Line2D

    u = stats.units_error(cells, paper)
    groups = stats.unit_ablation_groups(u)
    if not groups:
        return None
    ok = stats.ok_cells(cells)
    multi = len({k[0] for k, _ in groups}) > 1
    fig, axes = grid(plt, len(groups), panel_h=2.6, ncols_max=2)
    has_paper = False
    for ax, ((exp, ds, depth), g) in zip(axes, groups):
        units = [x for x in UNIT_ORDER if x in set(g["unit"])]
        for i, unit in enumerate(units):
            r = g[g["unit"] == unit].iloc[0]
            color, marker = UNIT_COLORS[unit], UNIT_MARKERS[unit]
            seeds = ok[(ok["experiment"] == exp) & (ok["dataset"] == ds) & (ok["depth"] == depth)
                       & (ok["unit"] == unit)]
            ax.scatter([i - 0.15] * len(seeds), 100 * (1 - seeds["test_acc"]), s=9, color=color, marker=marker,
                       alpha=0.4, linewidths=0, zorder=2)
            if np.isfinite(r["ours_err_mean"]):
                lo, hi = r["ci_low"], r["ci_high"]
                yerr = [[r["ours_err_mean"] - lo], [hi - r["ours_err_mean"]]] if np.isfinite(lo) else None
                ax.errorbar([i], [r["ours_err_mean"]], yerr=yerr, color=color, marker=marker, ms=5, elinewidth=1.2,
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
        labels.append("paper (experiment.json)")
    units_seen = [x for x in UNIT_ORDER if x in set(u["unit"])]
    handles += [Line2D([], [], color=UNIT_COLORS[x], marker=UNIT_MARKERS[x], ls="", ms=5) for x in units_seen]
    labels += [UNIT_LABELS[x] for x in units_seen]
    legend_below(fig, handles, labels, ncol_max=3)
    return fig
