"""report: pure tables on hand-made numbers, and a synthetic 5-seed result set (one failed, one diverged, one
missing cell, one excluded result, a comparable paper) through the real entry points: findings text, figure set,
LaTeX widths, sign convention, byte identity under two PYTHONHASHSEED values; `resnet-bench compare`."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_collect import make_config, make_record, run_collect  # noqa: E402  (the fake-cell generator)

from resnet_bench import collect, report  # noqa: E402
from resnet_bench.report import compare, stats, tables  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Student-t 0.975 quantiles by degrees of freedom (scipy.stats.t.ppf(0.975, df))
T975 = {1: 12.706204736174706, 2: 4.302652729749464, 4: 2.7764451051977987}


def cells_of(specs):
    """A cells table (the real collect schema) from (experiment, dataset, version, unit, depth, seed, acc, status)."""
    recs = []
    for exp, ds, version, unit, depth, seed, acc, status in specs:
        recs.append(make_record(make_config(exp, ds, version, unit, depth, seed), acc=acc, status=status))
    return collect.cells_table(recs)


def v(version, depth, seed, acc, *, status="ok", ds="digits", unit=None, exp="e"):
    return (exp, ds, version, unit or {"v1": "original", "v2": "full_preact"}[version], depth, seed, acc, status)


# ---- pure functions -----------------------------------------------------------------------------------------------


def test_t_interval_by_hand():
    mean, lo, hi = report.t_interval([1.0, 2.0, 3.0])  # sd 1, n 3
    half = T975[2] / np.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    mean, lo, hi = report.t_interval([5.0])
    assert mean == 5.0 and np.isnan(lo) and np.isnan(hi)  # one seed: no interval, not a zero-width one


def test_paired_difference_pairs_same_seeds_only_and_sign_is_v2_minus_v1():
    cells = cells_of([
        v("v1", 18, 0, 0.90), v("v1", 18, 1, 0.91), v("v1", 18, 2, 0.92),
        v("v2", 18, 0, 0.93), v("v2", 18, 1, 0.95), v("v2", 18, 2, 0.94),  # diffs +3, +4, +2 pp
        v("v2", 18, 3, 0.99),                                              # no v1 partner
        v("v1", 18, 4, 0.50, status="failed"), v("v2", 18, 4, 0.97),       # partner failed
        v("v1", 18, 0, 0.10, unit="bn_after_add"),                         # ablation unit: not "v1"
        v("v1", 50, 0, 0.80), v("v2", 50, 0, 0.85),                        # one pair: no interval
    ])
    pairs = report.paired_values(cells)
    assert list(zip(pairs["depth"], pairs["seed"])) == [(18, 0), (18, 1), (18, 2), (50, 0)]
    np.testing.assert_allclose(pairs["diff_pp"], [3.0, 4.0, 2.0, 5.0], atol=1e-9)
    diff = report.paired_difference(cells).set_index("depth")
    half = T975[2] * 1.0 / np.sqrt(3)  # sd of (3, 4, 2) is 1
    assert diff.loc[18, "n_pairs"] == 3 and diff.loc[18, "diff_pp"] == pytest.approx(3.0)
    assert (diff.loc[18, "ci_low"], diff.loc[18, "ci_high"]) == pytest.approx((3.0 - half, 3.0 + half))
    assert diff.loc[50, "n_pairs"] == 1 and np.isnan(diff.loc[50, "ci_low"])
    # the v1/v2 table uses the same pairs and the same sign (accuracy, v2 - v1): no error-vs-accuracy flip
    t = report.versions_table(cells).set_index("depth")
    assert t.loc[18, "v1_n"] == 3 and t.loc[18, "v2_n"] == 5 and t.loc[18, "v1_acc_mean"] == pytest.approx(91.0)
    assert t.loc[18, "diff_pp"] == pytest.approx(3.0) and t.loc[18, "diff_ci_low"] == pytest.approx(3.0 - half)
    assert np.isnan(t.loc[18, "paper_v1_err"])  # no experiment.json: no paper number


def test_accuracy_by_depth_counts_non_ok_cells_without_averaging_them():
    cells = cells_of([v("v2", 34, 0, 0.90), v("v2", 34, 1, 0.92), v("v2", 34, 2, 0.94), v("v1", 34, 0, 0.7),
                      v("v1", 34, 1, 0.7, status="diverged"), v("v1", 34, 2, 0.7, status="failed")])
    acc = report.accuracy_by_depth(cells).set_index("version")
    assert acc.loc["v2", "n_seeds"] == 3 and acc.loc["v2", "test_acc_pct"] == pytest.approx(92.0)
    assert acc.loc["v2", "ci_high"] - acc.loc["v2", "test_acc_pct"] == pytest.approx(T975[2] * 2.0 / np.sqrt(3))
    assert acc.loc["v1", "n_seeds"] == 1 and np.isnan(acc.loc["v1", "ci_low"])
    assert (acc.loc["v1", "n_diverged"], acc.loc["v1", "n_failed"]) == (1, 1)


def test_pareto_front():
    pts = pd.DataFrame({"x": [1.0, 2.0, 3.0, 2.5, 2.0, 0.5, np.nan], "y": [9.0, 8.0, 5.0, 4.0, 8.0, 9.0, 10.0]})
    front = report.pareto_front(pts, "x", "y")
    # (2.5, 4) is dominated by (3, 5); (0.5, 9) by (1, 9); the two (2, 8) tie and both stay; NaN is left out
    assert list(front.index) == [0, 1, 4, 2]


def test_number_formatting_uses_true_minus_signs():
    assert tables.fmt_interval(-0.2, -1.5, 1.1) == "\u22120.20 [\u22121.50, +1.10]"
    assert tables.fmt_mean_std(6.7, 0.15, 5) == "6.70 ± 0.15 (5)" and tables.fmt_mean_std(np.nan, np.nan, 0) == "– (0)"
    tex = tables.latex_escape("\u22120.20 ± 0.1 – x_y")
    assert tex == r"$-$0.20 $\pm$ 0.1 -- x\_y" and "-0" not in tex.replace("$-$", "")


def test_latex_and_markdown_escaping():
    df = pd.DataFrame({"unit_name": ["a_b & c", "50% | x"], "err": ["6.70 ± 0.15", "#1 {x}"]})
    tex = report.to_latex(df, "Error (%) of units_a", "tab:x")
    assert r"unit\_name & err \\" in tex and r"a\_b \& c & 6.70 $\pm$ 0.15 \\" in tex
    assert r"50\% | x & \#1 \{x\} \\" in tex and r"\caption{Error (\%) of units\_a}" in tex
    assert tex.count("{") == tex.count("}") and r"\toprule" in tex and r"\bottomrule" in tex
    assert report.to_markdown(df).splitlines()[3] == "| 50% \\| x | #1 {x} |"


def test_paper_numbers_only_when_comparable():
    exp = {"name": "x", "paper_comparable": True,
           "paper": {"citation": "He et al. 2016", "statistic": "median of 5 runs", "metric": "test_error_pct",
                     "dataset": "cifar10", "variant": "CIFAR", "recipe": "he2016_cifar",
                     "results": [{"model": "resnet110_v1", "unit": "original", "dataset": "cifar10", "value": 6.61}]}}
    assert stats.paper_lookup(exp) == {("cifar10", "resnet110_v1", "original"): 6.61}
    assert "median of 5 runs" in stats.paper_status(exp, "experiment.json")
    off = {**exp, "paper_comparable": False, "paper_mismatch": ["epochs 2 != 164", "width 8 != 16"]}
    assert stats.paper_lookup(off) == {}
    assert stats.paper_status(off, "experiment.json") == ("No comparison with He et al. 2016: this run is not "
                                                          "comparable (epochs 2 != 164; width 8 != 16).")
    assert "is absent" in stats.paper_status(None, "smoke/experiment.json")


# ---- settings ---------------------------------------------------------------------------------------------------


def test_settings_from_params_then_flags(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("sweep: {experiment: smoke}\nreport: {formats: [svg], dpi: 80, context: talk, "
                      "allow_missing: false}\n")
    s = report.resolve_settings(str(params), {})
    assert s == {"formats": ["svg"], "dpi": 80, "context": "talk", "pdf": False, "allow_missing": False}
    s = report.resolve_settings(str(params), {"formats": "png,svg", "dpi": 300, "pdf": True, "allow_missing": True,
                                              "context": None})
    assert s == {"formats": ["png", "svg", "pdf"], "dpi": 300, "context": "talk", "pdf": True, "allow_missing": True}
    assert report.resolve_settings(None, {})["formats"] == ["pdf", "png"]  # vector for papers by default
    assert report.load_settings(str(REPO / "params.yaml"))["formats"][0] == "pdf"
    for bad, message in [("report: {colour: red}", "report.colour: unknown key"),
                         ("report: {formats: [png, gif]}", "report.formats.1: 'gif' is invalid"),
                         ("report: {dpi: 0}", "report.dpi: 0 is invalid"),
                         ("report: {context: huge}", "report.context: 'huge' is invalid"),
                         ("report: {allow_missing: maybe}", "report.allow_missing: 'maybe' is invalid")]:
        params.write_text(bad)
        with pytest.raises(report.SettingsError, match=re.escape(message)):
            report.load_settings(str(params))


# ---- the synthetic 5-seed result set ------------------------------------------------------------------------------

SEEDS = range(5)
# test accuracy by (version, depth): one value per seed; None = the cell did not finish ok (status below)
ACC = {("v1", 18): [0.90, 0.91, 0.92, 0.93, 0.94], ("v2", 18): [0.93, 0.95, 0.94, 0.96, 0.97],  # +3 +4 +2 +3 +3
       ("v1", 50): [0.80, 0.82, 0.81, 0.83, None], ("v2", 50): [0.81, 0.81, 0.82, None, None]}  # +1 -1 +1
NOT_OK = {("v1", 50, 4): "diverged", ("v2", 50, 3): "failed", ("v2", 50, 4): "missing"}
PAPER = {"citation": "K. He et al., Identity Mappings in Deep Residual Networks, ECCV 2016", "statistic":
         "median of 5 runs", "metric": "test_error_pct", "dataset": "cifar10", "variant": "paper",
         "recipe": "he2016_cifar",
         "results": [{"model": "resnet18_v1", "unit": "original", "dataset": "cifar10", "value": 7.5},
                     {"model": "resnet18_v2", "unit": "full_preact", "dataset": "cifar10", "value": 6.0}]}


def write_five_seed_results(root: Path, *, comparable: bool = True, shift_v2: float = 0.0) -> Path:
    """results/<experiment>/ as collect writes it, plus excluded.csv and experiment.json (the lead's contracts)."""
    recs, expected = [], []
    for (version, depth), accs in ACC.items():
        unit = {"v1": "original", "v2": "full_preact"}[version]
        for seed, acc in zip(SEEDS, accs):
            config = make_config("five", "cifar10", version, unit, depth, seed)
            expected.append({"cell_id": config["cell_id"], "config": config})
            status = NOT_OK.get((version, depth, seed), "ok")
            if status != "missing":
                recs.append(make_record(config, acc=(acc or 0.5) + (shift_v2 if version == "v2" else 0.0),
                                        status=status))
    stale = make_config("five", "cifar10", "v1", "original", 18, 9)  # a result of an older grid: excluded
    recs.append(make_record(stale, acc=0.10))
    out = root / "five"
    cells, epochs = collect.cells_table(recs, expected), collect.epochs_table(recs)
    collect.write_outputs(cells, epochs, out)
    pd.DataFrame([{"cell_id": stale["cell_id"], "experiment": "five", "model": "resnet18_v1", "version": "v1",
                   "unit": "original", "depth": 18, "dataset": "cifar10", "seed": 9,
                   "reason": "config not in current grid"}]).to_csv(out / "excluded.csv", index=False)
    write_experiment(out, comparable=comparable)
    return out


def write_experiment(out: Path, *, comparable: bool, **claims) -> dict:
    """experiment.json as the sweep writes it (records.experiment_summary); comparable with the paper when
    the recipe is the paper's, else it differs in epochs. `claims` overwrite the written fields (a forged
    file); returns what was written."""
    from resnet_bench import config as cfg
    from resnet_bench.sweep.records import experiment_summary

    recipe = cfg.resolve_recipe({"name": "he2016_cifar", **({} if comparable else {"epochs": 3})})
    exp = cfg.Experiment(name="five", description="synthetic 5-seed set",
                         grid=cfg.Grid(versions=["v1", "v2"], depths=[18, 50], datasets=["cifar10"], seeds=list(SEEDS)),
                         arch=cfg.Arch(variant="paper"), recipe=recipe, runtime=cfg.Runtime(device="cpu"),
                         bench=cfg.Bench(), resources=cfg.Resources(), paper=cfg.Paper.model_validate(PAPER))
    doc = {**experiment_summary(exp), **claims}
    (out / "experiment.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
    return doc


FIGURES = ("accuracy_by_depth", "paired_difference", "accuracy_vs_cost", "throughput_memory", "pareto",
           "error_curves")


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    root = tmp_path_factory.mktemp("five")
    results = write_five_seed_results(root / "results")
    out = root / "reports" / "five"
    assert report.main(["--results", str(results), "--out", str(out), "--formats", "pdf,png,svg"]) == 0
    return results, out


def test_five_seeds_findings_numbers_and_wording(five):
    _, out = five
    md = (out / "report.md").read_text()
    findings = md.split("## Findings")[1].split("## Cells")[0]
    assert stats.SIGN_CONVENTION in findings
    half18 = T975[4] * np.sqrt(0.5) / np.sqrt(5)      # diffs 3, 4, 2, 3, 3: sd sqrt(0.5)
    half50 = T975[2] * np.sqrt(4 / 3) / np.sqrt(3)    # diffs 1, -1, 1: sd sqrt(4/3)
    assert (f"- ResNet-18 on cifar10: v2 − v1 = +3.00 [+{3 - half18:.2f}, +{3 + half18:.2f}] pp (mean [95% CI]), "
            "n = 5 paired seeds: v2 more accurate.") in findings
    assert (f"- ResNet-50 on cifar10: v2 − v1 = +0.33 [\u2212{half50 - 1 / 3:.2f}, +{half50 + 1 / 3:.2f}] pp "
            "(mean [95% CI]), n = 3 paired seeds: not distinguishable (the interval contains 0). Not averaged: "
            "v1 seed 4 diverged; v2 seed 3 failed; v2 seed 4 missing.") in findings
    assert ("Across 2 depth/dataset setting(s) with at least two paired seeds: v2 more accurate in 1, v1 more "
            "accurate in 0, not distinguishable in 1.") in findings
    assert "one image is 0.01 pp" in findings  # n_test 10000 in the generator
    assert "Warning: one seed" not in findings
    # the paper: named with its statistic, numbers beside ours (v1 at 18: 8.00% error over 5 seeds)
    assert "Paper numbers: K. He et al., Identity Mappings in Deep Residual Networks, ECCV 2016, median of 5 runs" \
           in findings
    assert "ResNet-18 (a) original on cifar10: ours 8.00% test error (mean of 5 seeds" in findings
    assert "against the paper's 7.50% (+0.50 pp error)" in findings
    # the excluded stale result (acc 0.10) is listed with its reason and in no mean (v1 at 18 stays 92.00%)
    assert "1 cell(s) on disk are excluded" in findings
    assert "1 result(s) on disk are not part of the current grid or code" in md and "1 config not in current grid" in md
    assert "| 18 | 92.0 ± 1.6 (5) | 95.0 ± 1.6 (5) | +3.00 [+2.12, +3.88] | 7.50/6.00 |" in md


def test_five_seeds_cells_failures_and_methods(five):
    _, out = five
    md = (out / "report.md").read_text()
    assert "Cells: 20 (ok 17, diverged 1, failed 1, missing 1); 1 excluded." in md
    fails = md.split("## Failures and gaps")[1].split("## Excluded cells")[0]
    assert "3 cell(s) did not finish ok" in fails
    for status in ("diverged", "failed", "missing"):
        assert f"| {status} | five | cifar10 |" in fails
    methods = md.split("## Methods")[1]
    assert "| lr | 0.1 |" in methods and "| epochs | 3 |" in methods and "| schedule | step |" in methods
    assert "| gpu_name | NVIDIA H100 80GB HBM3 |" in methods and "| torch_version | 2.14.1 |" in methods
    assert "| git_commit | 3f2c9a1d0b7e4c5a8f6e1d2c3b4a5f6e7d8c9b0a |" in methods
    # 19 cells ran on cuda; 17 ok + 1 diverged recorded 90 s of training each (the failed one none), 1 GPU each
    assert f"Total compute: {18 * 90 / 3600:.3f} GPU-hours (19 cells on cuda" in methods
    assert "first start 2026-11-20T10:00:00+00:00, last finish 2026-11-20T10:30:00+00:00" in methods


def test_five_seeds_figure_set(five):
    _, out = five
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == sorted(f"{f}.{ext}" for f in FIGURES for ext in ("pdf", "png", "svg"))
    md = (out / "report.md").read_text()
    assert "- `units`: no residual-unit ablation" in md
    for f in FIGURES:
        png = (out / "figures" / f"{f}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, f
        width_px = int.from_bytes(png[16:20], "big")
        assert 3.2 * 150 <= width_px <= 6.8 * 150, (f, width_px)  # one or two columns at 150 dpi
        assert (out / "figures" / f"{f}.pdf").read_bytes()[:5] == b"%PDF-"
    # the error curves come from the epochs' per-epoch test accuracy (train dashed, test solid)
    assert "train error dashed, test error solid" in md and "the solid line is the validation split" not in md


def test_five_seeds_latex_fits_the_column_by_construction(five):
    _, out = five
    texs = sorted((out / "tables").glob("*.tex"))
    assert [p.stem for p in texs] == ["models", "v1_vs_v2"]
    for p in texs:
        tex = p.read_text()
        body = tex.split(r"\begin{adjustbox}{max width=\columnwidth}")
        assert len(body) == 2 and r"\begin{tabular}" in body[1] and body[1].index(r"\end{tabular}") < \
            body[1].index(r"\end{adjustbox}"), p.name
        natural = float(re.search(r"natural width about (\d+) pt", tex).group(1))
        # readable: scaled to no less than 60% of \small (the tables are laid out narrow)
        assert tables.COLUMNWIDTH_PT / natural >= 0.6 or natural <= tables.COLUMNWIDTH_PT, (p.name, natural)
        assert tex.count("{") == tex.count("}")
        assert not re.search(r"(?<![$\w])-\d", tex), f"{p.name}: a hyphen used as a minus sign"
    v12 = (out / "tables" / "v1_vs_v2.tex").read_text()
    assert r"v2 $-$ v1 [95\% CI]" in v12 and "$-$2.54" in v12 and r"paper v1/v2" in v12


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX installed (widths are checked by construction)")
def test_latex_compiles_without_overfull_boxes_in_two_columns(five, tmp_path):
    _, out = five
    doc = [r"\documentclass[twocolumn]{article}", r"\usepackage{booktabs,adjustbox}", r"\begin{document}"]
    doc += [p.read_text() for p in sorted((out / "tables").glob("*.tex"))] + [r"\end{document}"]
    (tmp_path / "t.tex").write_text("\n".join(doc))
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Overfull \\hbox" not in proc.stdout, proc.stdout[-2000:]


def test_not_comparable_paper_is_explained_and_not_shown(tmp_path):
    results = write_five_seed_results(tmp_path / "results", comparable=False)
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--formats", "png"]) == 0
    md = (tmp_path / "o" / "report.md").read_text()
    assert "this run is not comparable (recipe: differs from the paper's 'he2016_cifar' in epochs)" in md
    assert "paper v1/v2" not in md and "against the paper's" not in md


def test_byte_identical_across_hash_seeds_and_folders(five, tmp_path):
    results, a = five
    copies = []
    for seed in ("1", "2"):  # fresh interpreters with different hash seeds, results copied to another folder
        where = tmp_path / f"h{seed}"
        shutil.copytree(results, where / "results" / "five")
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-m", "resnet_bench.report", "--results", "results/five", "--out",
                               "out", "--formats", "pdf,png,svg"], capture_output=True, text=True, env=env, cwd=where,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        copies.append(where / "out")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 1 + 3 * len(FIGURES) + 4 + 1  # report.md, figures, tables, the output manifest
    for other in copies:
        assert sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file()) == files
        for f in files:
            assert (a / f).read_bytes() == (other / f).read_bytes(), f"{f} differs"
    assert b"tEXtSoftware" not in (a / "figures" / "pareto.png").read_bytes()
    assert b"<dc:date>" not in (a / "figures" / "error_curves.svg").read_bytes()
    pdf = (a / "figures" / "pareto.pdf").read_bytes()
    assert b"/CreationDate" not in pdf and b"/ModDate" not in pdf


# ---- entry point: errors, gaps, old layouts -----------------------------------------------------------------------


def small_results(root: Path, *, with_failure: bool) -> Path:
    recs = [make_record(make_config("smoke", "digits", ver, unit, 18, s, device="cpu"), acc=a)
            for ver, unit, s, a in (("v1", "original", 0, 0.9), ("v2", "full_preact", 0, 0.93))]
    if with_failure:
        recs.append(make_record(make_config("smoke", "digits", "v1", "original", 18, 1, device="cpu"), acc=0.5,
                                status="failed"))
    collect.write_outputs(collect.cells_table(recs), collect.epochs_table(recs), root)
    return root


def test_one_seed_warns_and_draws_no_paired_plot(tmp_path, capsys):
    results = small_results(tmp_path / "r", with_failure=True)
    params = tmp_path / "params.yaml"
    params.write_text("report: {formats: [svg], dpi: 60, allow_missing: false}\n")
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--params", str(params)]) == 1
    assert "1 cell(s) missing or failed" in capsys.readouterr().err
    md = (tmp_path / "o" / "report.md").read_text()
    assert "**Warning: one seed per setting.**" in md and "from a single seed: no interval" in md
    assert "- `paired_difference`: one seed per pair: no interval" in md
    assert "results from before experiment.json existed" in md  # old layout: no experiment.json
    assert "CPU core-hours (3 cells on cpu" in md  # a CPU run counts core-hours, not GPU-hours
    figs = sorted(p.name for p in (tmp_path / "o" / "figures").iterdir())
    assert figs == ["accuracy_by_depth.svg", "accuracy_vs_cost.svg", "error_curves.svg", "pareto.svg",
                    "throughput_memory.svg"]
    # the flag overrides the params file; stale figures of another format are removed
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--params", str(params),
                        "--allow-missing", "--formats", "png"]) == 0
    assert sorted(p.suffix for p in (tmp_path / "o" / "figures").iterdir()) == [".png"] * 5


def test_bad_inputs_fail_with_one_line(tmp_path, capsys):
    results = small_results(tmp_path / "r", with_failure=False)
    (tmp_path / "params.yaml").write_text("report: {colour: red}\n")
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--params",
                        str(tmp_path / "params.yaml")]) == 2
    assert "report.colour: unknown key; valid: allow_missing, context" in capsys.readouterr().err
    assert report.main(["--results", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "cells.parquet not found" in capsys.readouterr().err
    (results / "excluded.csv").write_text("cell_id,why\nabc,old\n")  # a malformed excluded.csv
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "excluded.csv lacks column(s) experiment" in err
    (results / "excluded.csv").unlink()
    (results / "experiment.json").write_text("{not json")
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o")]) == 2
    assert "experiment.json: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # failed before any drawing


def test_report_without_ok_cells_explains_every_absent_figure(tmp_path):
    results = tmp_path / "r"
    assert collect.main(["--cells", str(tmp_path / "none"), "--out", str(results)]) == 0
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--formats", "svg"]) == 0
    md = (tmp_path / "o" / "report.md").read_text()
    assert "Cells: 0" in md and "No table: no ok cells." in md
    for name in (*FIGURES, "units"):
        assert f"- `{name}`: " in md
    assert not (tmp_path / "o" / "figures").exists()  # no figure, no folder for figures


def test_units_ablation_and_old_layout_with_stale_cells(tmp_path):
    """collect's fake grid: two experiments, residual units (a)-(e), in_grid false for one stale result."""
    results = run_collect(tmp_path)
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--formats", "png"]) == 0
    md = (tmp_path / "o" / "report.md").read_text()
    assert "Cells: 42 (ok 39, diverged 1, failed 1, missing 1); 1 excluded." in md
    assert "model/dataset/seed not in the current grid" in md  # collect's excluded.csv reason
    assert "![units](figures/units.png)" in md and "### Residual units" in md
    assert "| (b) BN after addition | 8.50 ± 0.20 (3) |" in md


# ---- compare ----------------------------------------------------------------------------------------------------------


def test_compare_two_experiments(tmp_path, capsys):
    a = write_five_seed_results(tmp_path / "a")
    b = write_five_seed_results(tmp_path / "b", shift_v2=0.01)  # v2 one point better in B, v1 the same
    assert compare.main([str(a), str(b), "--out", str(tmp_path / "c"), "--formats", "png"]) == 0
    text = capsys.readouterr().out
    assert "B − A in test accuracy (pp), paired on dataset, model, unit and seed; 17 pairs." in text
    assert "| cifar10 | resnet18_v1 | 5 | +0.00 [+0.00, +0.00] | not distinguishable (the interval contains 0) |" \
        in text
    t = pd.read_csv(tmp_path / "c" / "compare.csv").set_index("model")
    assert t.loc["resnet18_v2", "diff_pp"] == pytest.approx(1.0) and t.loc["resnet50_v2", "n_pairs"] == 3
    assert (tmp_path / "c" / "figures" / "compare.png").stat().st_size > 10_000
    # through the `resnet-bench` dispatcher, with a folder that is not a results folder
    from resnet_bench import cli

    assert cli.main(["compare", str(a), str(tmp_path / "nowhere")]) == 2
    assert "nowhere/cells.parquet not found" in capsys.readouterr().err


def test_importing_draws_nothing():
    code = ("import sys, resnet_bench.collect, resnet_bench.report, resnet_bench.report.compare; "
            "assert 'matplotlib.pyplot' not in sys.modules and 'seaborn' not in sys.modules, 'imported at import'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
