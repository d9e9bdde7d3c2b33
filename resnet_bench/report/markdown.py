"""Assembling `report.md`: findings, figures with captions, tables (Markdown + LaTeX + CSV), failures,
excluded cells, and the methods (recipe, hardware, versions, commit, compute, dates)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from resnet_bench.outputs import OutputDir, guard_frame
from resnet_bench.report import figures, findings, resolution, stats, tables
from resnet_bench.report.escape import md_text
from resnet_bench.report.stats import PANEL_KEYS

FIGURE_NAMES = ("accuracy_by_depth", "paired_difference", "accuracy_vs_cost", "throughput_memory", "pareto",
                "error_curves", "units")
# What the report writes under --out (outputs.OutputDir patterns); nothing else there is touched.
REPORT_LAYOUT = (r"report\.md", rf"figures/({'|'.join(FIGURE_NAMES)})\.({'|'.join(figures.FORMATS)})",
                 r"tables/(units(_[A-Za-z0-9_.-]{1,64}_[A-Za-z0-9_.-]{1,64})?|v1_vs_v2|models)\.(tex|csv)")

# Recipe / architecture / runtime columns of the cells table shown in Methods (docs/results_schema.md).
RECIPE_COLUMNS = ("recipe", "optimizer", "epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
                  "schedule", "milestones", "gamma", "warmup_iters", "warmup_lr", "label_smoothing", "crop_pad",
                  "flip", "stem", "width", "zero_init_residual", "amp", "channels_last", "compile", "deterministic")
ENV_COLUMNS = ("git_commit", "torch_version", "cuda_version", "python_version", "device", "gpu_name", "gpu_count",
               "cpu_model", "cpu_count", "torch_threads", "platform")


def values_line(cells: pd.DataFrame, col: str) -> str:
    """'0.1' when every cell agrees, else 'a (3 cells); b (2 cells)'."""
    if col not in cells:
        return "–"
    counts = cells[col].astype(object).where(cells[col].notna(), "–").astype(str).value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return "; ".join(f"{v} ({n} cells)" for v, n in sorted(counts.items()))


def figure_plan(cells: pd.DataFrame, epochs: pd.DataFrame, paper: dict) -> list[tuple[str, str, str | None]]:
    """(name, caption, reason it is absent or None) for every figure, decided from the data alone."""
    acc = stats.accuracy_by_depth(cells) if len(cells) else pd.DataFrame(columns=["n_seeds", "version"])
    has_acc = bool(len(acc) and acc["n_seeds"].gt(0).any())
    nmax = int(acc["n_seeds"].max()) if has_acc else 0
    one_seed = " With one seed there is no interval: the figure shows single runs." if nmax == 1 else ""
    plan = [("accuracy_by_depth",
             "Test accuracy against depth, v1 (circles) vs v2 (squares): mean over ok seeds with a 95% Student-t "
             "interval; faint marks are single seeds; cells that diverged (div.), failed (fail) or are missing (miss) "
             "are counted at the bottom of their depth, never averaged." + one_seed,
             None if has_acc else "no ok cells of unit (a) v1 or unit (e) v2")]
    diff = stats.paired_difference(cells) if len(cells) else pd.DataFrame(columns=["n_pairs"])
    versions = set(stats.version_cells(cells)["version"]) if len(cells) else set()
    if diff.empty:
        reason = ("only one version in the results ({})".format(", ".join(sorted(versions)) or "none")
                  if len(versions) < 2 else "no dataset, depth and seed has both v1 and v2 ok")
    elif diff["n_pairs"].max() < 2:
        reason = "one seed per pair: no interval; the single differences are in the Findings"
    else:
        reason = None
    plan.append(("paired_difference",
                 "Paired difference v2 − v1 in test accuracy (pp) per depth: each dot is one seed (v1 and v2 "
                 "trained with the same seed), the diamond the mean with a 95% Student-t interval over pairs.",
                 reason))
    has_cost = bool(has_acc and acc[["params", "fwd_gflops"]].notna().any().any())
    plan.append(("accuracy_vs_cost",
                 "Test accuracy against parameters (left) and forward GFLOPs per image (right), v1 and v2 as two "
                 "lines (mean, 95% CI), labels: depth; log x axis where the range is wide.",
                 None if has_cost else "no parameter or FLOP counts in the ok cells"))
    summary = stats.model_summary(cells) if len(cells) else pd.DataFrame()
    cols = figures.throughput_columns(summary) if len(summary) else []
    est = bool(len(summary) and summary["mem_is_estimate"].any())
    plan.append(("throughput_memory",
                 "Bench throughput, train step and inference (median over repeats; bars: interquartile range, drawn "
                 "centred on the median), and training memory against depth; log y axis where the range exceeds "
                 f"{figures.LOG_RANGE:g}x." + (" Memory on CPU is an estimate (saved activations + parameters + "
                                                "gradients + optimiser state), not a measured peak." if est else
                                                " Memory is CUDA max_memory_allocated."),
                 None if cols else "no throughput or memory measured (bench disabled or failed)"))
    spec = stats.speed_column(summary) if len(summary) else None
    n_pts = len(summary.dropna(subset=[spec[0], "test_acc_pct"])) if spec else 0
    plan.append(("pareto",
                 "Test accuracy (mean, 95% CI) against {} per model (labels: depth); the dashed line joins the "
                 "Pareto front (no other model is both faster and more accurate).".format(
                     spec[1] if spec else "throughput"),
                 None if n_pts >= 2 else "needs at least two models with both accuracy and throughput"))
    ok_epochs = epochs[epochs["status"] == "ok"] if len(epochs) else epochs
    split = "test" if "test_acc" in epochs and epochs["test_acc"].notna().any() else "val"
    plan.append(("error_curves",
                 "Error against iterations in the style of He et al. 2016 Fig. 1/6: train error dashed, "
                 f"{'test' if split == 'test' else 'validation'} error solid, v1 and v2 in their colours, mean over "
                 "ok seeds with the min-max band over seeds; x marks where a diverged cell stopped."
                 + ("" if split == "test" else " These results record no per-epoch test accuracy (older records), "
                                               "so the solid line is the validation split."),
                 None if len(ok_epochs) else "no epochs recorded by ok cells"))
    u = stats.units_error(cells, paper) if len(cells) else pd.DataFrame(columns=[*PANEL_KEYS, "depth", "n_seeds"])
    plan.append(("units",
                 "Residual units of He et al. 2016 (Fig. 4): test error (%) per unit, mean with a 95% Student-t "
                 "interval over seeds (faint: seeds); black x: the paper's number where comparable.",
                 None if stats.unit_ablation_groups(u) else
                 "no residual-unit ablation in the results (needs an ablation unit (b)-(d) beside another unit "
                 "at the same depth)"))
    return plan


def output_dir(out: str | Path) -> OutputDir:
    """The report's folder: it owns report.md and its figures and tables there, nothing else."""
    return OutputDir(out, writer="report", flag="--out", layout=REPORT_LAYOUT)


def _md_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A table of user data (ids, names, errors, reasons) with every cell as escaped Markdown text."""
    return df.astype(object).where(df.notna(), "–").map(md_text)


def methods_section(cells: pd.DataFrame, experiment: dict | None) -> list[str]:
    ran = cells[cells["status"] != "missing"]
    md = ["## Methods", ""]
    if experiment:
        md += [f"Experiment {md_text(experiment.get('name', '?'))}: {md_text(experiment.get('description', ''))}", "",
               "Resolved recipe (experiment.json): " + md_text(json.dumps(experiment.get("recipe"), sort_keys=True)),
               ""]
    md += ["Recipe, architecture and runtime of the cells that ran:", "", "| setting | value |", "| --- | --- |"]
    md += [f"| {c} | {md_text(values_line(ran, c))} |" for c in RECIPE_COLUMNS if c in ran]
    md += ["", "Hardware and software:", "", "| item | value |", "| --- | --- |"]
    md += [f"| {c} | {md_text(values_line(ran, c))} |" for c in ENV_COLUMNS if c in ran]
    tot = stats.compute_totals(cells)
    md += ["", f"Total compute: {tot['gpu_hours']:.3f} GPU-hours ({tot['n_cuda']} cells on cuda: train_time_s x "
               f"GPUs) and {tot['cpu_core_hours']:.4f} CPU core-hours ({tot['n_cpu']} cells on cpu: train_time_s "
               f"x torch threads); {tot['train_hours']:.4f} h of training wall time in all.",
           f"Run dates (UTC): first start {tot['first_start'] or '–'}, last finish {tot['last_finish'] or '–'}.", "",
           "- Accuracy is top-1 on the held-out test split of the final model; error (%) = 100 x (1 − accuracy).",
           "- Intervals: 95% Student-t intervals of the mean over seeds, mean ± t(0.975, n−1) s/sqrt(n) (exact, no "
           "bootstrap); no interval for a single seed.",
           "- Paired difference: v1 and v2 cells are paired on experiment, dataset, depth and seed; the interval is "
           "over the per-seed differences. " + stats.SIGN_CONVENTION,
           "- v1 is residual unit (a) `original`, v2 is unit (e) `full_preact`; ablation units (b)-(d) appear only "
           "in the units figure and table.",
           "- Throughput and memory come from the bench pass (one measurement per architecture, run alone on its "
           "device), not from the training loop.", ""]
    return md


def build_report(cells: pd.DataFrame, epochs: pd.DataFrame, out: str | Path | OutputDir, *, formats, dpi: int,
                 context: str, experiment: dict | None = None, excluded: pd.DataFrame | None = None,
                 experiment_source: str = "experiment.json") -> Path:
    """Every figure, table and report.md under `out` (written under the output policy: the report's own
    earlier files that it does not write again are removed, nothing else); returns the report.md path."""
    matplotlib, plt = figures.pyplot()
    out = out if isinstance(out, OutputDir) else output_dir(out).prepare()
    cells, excluded = stats.split_excluded(cells.reset_index(drop=True), excluded)
    epochs = epochs[~epochs["cell_id"].isin(set(excluded["cell_id"]))] if len(excluded) else epochs
    paper = stats.paper_lookup(experiment)
    multi = cells["experiment"].nunique() > 1
    link_fmt = next((f for f in ("png", "svg") if f in formats), None)

    exps, dss = stats.distinct(cells, "experiment"), stats.distinct(cells, "dataset")
    md = ["# resnet-bench report", "",
          "ResNet v1 (post-activation, He et al. 2015) against v2 (full pre-activation, He et al. 2016): test "
          "accuracy, throughput and memory by depth and dataset.", "",
          f"Experiments: {md_text(', '.join(exps)) or '–'}. Datasets: {md_text(', '.join(dss)) or '–'}. "
          f"Cells: {len(cells)} (" + ", ".join(f"{s} {int((cells['status'] == s).sum())}"
                                              for s in ("ok", "diverged", "failed", "missing")) + ")"
          + (f"; {len(excluded)} excluded." if len(excluded) else "."), ""]
    jpeg = [d for d in dss if "jpeg" in d.lower()]
    if jpeg:
        md += [f"> **Note on {md_text(', '.join(jpeg))}**: CIFAR-10 re-encoded as lossy JPEG; accuracies land a little below "
               "those on the original lossless CIFAR-10 batches.", ""]

    vt = stats.versions_table(cells, paper) if len(cells) else pd.DataFrame()
    units_cmp = stats.units_error(cells, paper) if len(cells) else pd.DataFrame(columns=["paper_err",
                                                                                         "ours_err_mean"])
    paper_line = stats.paper_status(experiment, experiment_source)
    md += findings.findings_section(vt, cells, units_cmp, multi, len(excluded), paper_line)
    md += resolution.section(cells, experiment) if len(cells) else []
    md += ["## Cells", "", tables.to_markdown(stats.status_counts(cells).astype(str)) if len(cells) else "No cells.",
           ""]

    md += ["## Figures", ""]
    absent = []
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(figures.style_rc(context))
        drawers = {"accuracy_by_depth": lambda: figures.fig_accuracy_by_depth(cells, plt),
                   "paired_difference": lambda: figures.fig_paired_difference(cells, plt),
                   "accuracy_vs_cost": lambda: figures.fig_accuracy_vs_cost(cells, plt),
                   "throughput_memory": lambda: figures.fig_throughput_memory(cells, plt),
                   "pareto": lambda: figures.fig_pareto(cells, plt),
                   "error_curves": lambda: figures.fig_error_curves(epochs, cells, plt)[0],
                   "units": lambda: figures.fig_units(cells, paper, plt)}
        number = 0
        for name, caption, reason in figure_plan(cells, epochs, paper):
            fig = drawers[name]() if reason is None else None
            if fig is None:
                absent.append(f"- `{name}`: {reason or 'nothing to draw'}")
                continue
            figures.save(fig, out, f"figures/{name}", formats, dpi)
            plt.close(fig)
            number += 1
            md += [f"**Figure {number}** (`figures/{name}.*`). {caption}", ""]
            md += [f"![{name}](figures/{name}.{link_fmt})", ""] if link_fmt else []
    if absent:
        md += ["Figures not drawn, and why:", "", *absent, ""]

    md += ["## Tables", "",
           "LaTeX (booktabs, at most `\\columnwidth` wide) in `tables/*.tex`, full precision in `tables/*.csv`. "
           "Accuracy and error in %, ± is the sample standard deviation over seeds, (n) the ok seeds, intervals are "
           "95% Student-t. " + stats.SIGN_CONVENTION, ""]
    out_tables = []
    ut = stats.units_table(cells, paper) if len(cells) else pd.DataFrame()
    for (exp, ds), disp in (tables.units_display(ut, multi).items() if len(ut) else []):
        one = ut[PANEL_KEYS].drop_duplicates().shape[0] == 1
        name = "units" if one else f"units_{exp}_{ds}"
        out_tables.append((name, disp, ut[(ut["experiment"] == exp) & (ut["dataset"] == ds)],
                           f"Residual units (He et al. 2016 Table 2 layout) on {tables.panel_title(exp, ds, multi)}: "
                           "test error (%) per unit and depth, ours mean ± std (seeds)"
                           + (", beside the paper's." if disp.columns.str.endswith("paper").any() else ".")))
    if len(vt):
        out_tables.append(("v1_vs_v2", tables.versions_display(vt, multi), vt,
                           "v1 (original unit) vs v2 (full pre-activation): test accuracy (%) mean ± std (seeds), "
                           "the paired v2 − v1 accuracy difference (pp) with its 95% interval, and the paper's test "
                           "error (%) where comparable."))
    summary = stats.model_summary(cells) if len(cells) else pd.DataFrame()
    if len(summary):
        out_tables.append(("models", tables.models_display(summary, multi), summary,
                           "Per model: parameters, forward GFLOPs per image, test accuracy (%, mean ± std over ok "
                           "seeds), ok/all cells, bench train-step and inference throughput (images/s, median over "
                           "interleaved repeats; * unstable: its CV stayed above bench.cv_max) and training memory "
                           "(MiB)."))
    for name, disp, raw, caption in out_tables:
        out.write_text(f"tables/{name}.tex", tables.to_latex(disp, caption, f"tab:{name}"))
        with out.file(f"tables/{name}.csv") as tmp:
            guard_frame(raw).to_csv(tmp, index=False, lineterminator="\n")
        md += [f"### {md_text(caption)}", "", tables.to_markdown(disp), "", f"`tables/{name}.tex`, `tables/{name}.csv`",
               ""]
    if not out_tables:
        md += ["No table: no ok cells.", ""]

    md += ["## Failures and gaps", ""]
    fails = stats.failures(cells)
    if fails.empty:
        md += ["None: every cell finished ok.", ""]
    else:
        md += [f"{len(fails)} cell(s) did not finish ok; they keep their row in the cells table, are counted in the "
               "tables and marked in the figures, and are never averaged.", "",
               tables.to_markdown(_md_frame(fails)), ""]
    bench = stats.bench_failures(cells)
    if len(bench):
        md += [f"{len(bench)} ok cell(s) have no bench numbers (their throughput and memory are absent):", "",
               tables.to_markdown(_md_frame(bench)), ""]
    md += ["## Excluded cells", ""]
    if excluded.empty:
        md += ["None: every result on disk belongs to the current grid and code.", ""]
    else:
        reasons = excluded["reason"].astype(str).value_counts()
        md += [f"{len(excluded)} result(s) on disk are not part of the current grid or code and are left out of "
               "every number and figure: " + "; ".join(f"{n} {md_text(r)}" for r, n in sorted(reasons.items())) + ".",
               "", tables.to_markdown(_md_frame(excluded)), ""]
    md += methods_section(cells, experiment)
    path = out.write_text("report.md", "\n".join(md))
    out.finish()
    return path
