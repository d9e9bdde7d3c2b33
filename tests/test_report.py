"""report: pure table functions on hand-made numbers, a full report from fake results, byte-identical reruns."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_collect import make_config, make_record, run_collect  # noqa: E402  (the fake-cell generator)

from resnet_bench import collect, report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
T975 = {1: 12.706204736174706, 2: 4.302652729749464}  # Student-t 0.975 quantiles by degrees of freedom


def cells_of(specs):
    """A cells table (the real collect schema) from (experiment, dataset, version, unit, depth, seed, acc, status)."""
    recs = []
    for exp, ds, version, unit, depth, seed, acc, status in specs:
        c = make_config(exp, ds, version, unit, depth, seed)
        recs.append(make_record(c, acc=acc, status=status))
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


def test_paired_difference_pairs_same_seeds_only():
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
    assert diff.loc[18, "std_pp"] == pytest.approx(1.0)
    assert (diff.loc[18, "ci_low"], diff.loc[18, "ci_high"]) == pytest.approx((3.0 - half, 3.0 + half))
    assert diff.loc[50, "n_pairs"] == 1 and diff.loc[50, "diff_pp"] == pytest.approx(5.0)
    assert np.isnan(diff.loc[50, "ci_low"])

    # the v1/v2 table uses the same pairs: error difference = minus the accuracy difference
    t3 = report.table3(cells).set_index("depth")
    assert t3.loc[18, "v1_n"] == 3 and t3.loc[18, "v2_n"] == 5
    assert t3.loc[18, "v1_err_mean"] == pytest.approx(9.0) and t3.loc[18, "diff_err_pp"] == pytest.approx(-3.0)
    assert (t3.loc[18, "diff_ci_low"], t3.loc[18, "diff_ci_high"]) == pytest.approx((-3.0 - half, -3.0 + half))
    assert np.isnan(t3.loc[18, "paper_v1_err"])  # digits: no paper number


def test_paired_difference_needs_both_versions():
    cells = cells_of([v("v1", 18, 0, 0.9), v("v1", 18, 1, 0.8)])
    assert report.paired_difference(cells).empty
    plan = {name: reason for name, _, reason in report.figure_plan(cells, pd.DataFrame(
        columns=[c for c, *_ in collect.EPOCH_COLUMNS]))}
    assert plan["paired_difference"] == "only one version in the results (v1)"
    assert plan["accuracy_by_depth"] is None and plan["units"].startswith("no residual-unit ablation")


def test_accuracy_by_depth_mean_and_interval():
    cells = cells_of([v("v2", 34, 0, 0.90), v("v2", 34, 1, 0.92), v("v2", 34, 2, 0.94), v("v1", 34, 0, 0.7),
                      v("v1", 34, 1, 0.7, status="diverged")])
    acc = report.accuracy_by_depth(cells).set_index("version")
    assert acc.loc["v2", "n_seeds"] == 3 and acc.loc["v2", "test_acc_pct"] == pytest.approx(92.0)
    assert acc.loc["v2", "ci_high"] - acc.loc["v2", "test_acc_pct"] == pytest.approx(T975[2] * 2.0 / np.sqrt(3))
    assert acc.loc["v1", "n_seeds"] == 1 and np.isnan(acc.loc["v1", "ci_low"])


def test_pareto_front():
    pts = pd.DataFrame({"x": [1.0, 2.0, 3.0, 2.5, 2.0, 0.5, np.nan],
                        "y": [9.0, 8.0, 5.0, 4.0, 8.0, 9.0, 10.0]})
    front = report.pareto_front(pts, "x", "y")
    # (2.5, 4) is dominated by (3, 5); (0.5, 9) by (1, 9); the two (2, 8) tie and both stay; NaN is left out
    assert list(front.index) == [0, 1, 4, 2]
    assert list(front["x"]) == [1.0, 2.0, 2.0, 3.0]


def test_paper_constants_are_he_et_al_2016_table2():
    assert report.PAPER_TABLE2 == {
        110: {"original": 6.61, "bn_after_add": 8.17, "relu_before_add": 7.84, "relu_only_preact": 6.71,
              "full_preact": 6.37},
        164: {"original": 5.93, "bn_after_add": 6.50, "relu_before_add": 6.14, "relu_only_preact": 5.91,
              "full_preact": 5.46}}
    assert report.PAPER_TABLE3_CIFAR10 == {110: {"v1": 6.61, "v2": 6.37}, 164: {"v1": 5.93, "v2": 5.46}}


def test_table2_aligns_ours_with_the_paper():
    specs = []
    for unit, errs in {"original": (7.0, 7.2, 7.4), "bn_after_add": (8.0, 8.1, 7.9),
                       "full_preact": (6.5, 6.5, 6.5)}.items():
        version = "v2" if unit == "full_preact" else "v1"
        specs += [v(version, 110, s, 1 - e / 100, unit=unit, ds="cifar10") for s, e in enumerate(errs)]
    specs += [v("v1", 110, 0, 0.5, unit="relu_before_add", ds="cifar10", status="failed")]  # no ok seed
    specs += [v("v2", 164, 0, 1 - 0.0550, ds="cifar10_jpeg")]
    specs += [v("v1", 110, 0, 0.9, unit="bn_after_add", ds="digits"),   # not CIFAR-10: no paper column
              v("v1", 110, 0, 0.7, unit="bn_after_add", ds="cifar100"),  # CIFAR-100 is not Table 2
              v("v1", 56, 0, 0.9, unit="bn_after_add", ds="cifar10")]    # depth not in Table 2
    t2 = report.table2(cells_of(specs)).set_index(["dataset", "depth", "unit"])
    assert sorted(t2.index) == sorted([("cifar10", 110, u) for u in ("original", "bn_after_add", "relu_before_add",
                                                                     "full_preact")] + [("cifar10_jpeg", 164,
                                                                                         "full_preact")])
    row = t2.loc[("cifar10", 110, "original")]
    assert row["paper_err"] == 6.61 and row["n_seeds"] == 3
    assert (row["ours_err_mean"], row["ours_err_std"], row["ours_err_median"]) == pytest.approx((7.2, 0.2, 7.2))
    assert row["diff_vs_paper_pp"] == pytest.approx(7.2 - 6.61)
    assert t2.loc[("cifar10", 110, "bn_after_add"), "paper_err"] == 8.17
    assert t2.loc[("cifar10", 110, "bn_after_add"), "ours_err_mean"] == pytest.approx(8.0)
    failed = t2.loc[("cifar10", 110, "relu_before_add")]
    assert failed["n_cells"] == 1 and failed["n_seeds"] == 0 and np.isnan(failed["ours_err_mean"])
    assert failed["paper_err"] == 7.84
    assert t2.loc[("cifar10_jpeg", 164, "full_preact"), "paper_err"] == 5.46
    assert t2.loc[("cifar10_jpeg", 164, "full_preact"), "ours_err_mean"] == pytest.approx(5.5)

    shown = report.table2_display(report.table2(cells_of(specs)))[("e", "cifar10")].set_index("unit")
    assert list(shown.index) == ["(a) original", "(b) BN after addition", "(c) ReLU before addition",
                                 "(e) full pre-activation"]
    assert shown.loc["(a) original", "ResNet-110 ours"] == "7.20 ± 0.20 (n=3)"
    assert shown.loc["(a) original", "ResNet-110 He et al."] == "6.61"
    assert shown.loc["(c) ReLU before addition", "ResNet-110 ours"] == "- (n=0)"  # ran, no ok seed
    assert shown.loc["(e) full pre-activation", "ResNet-110 ours"] == "6.50 ± 0.00 (n=3)"


def test_model_summary_failures_and_bench_gaps():
    recs = [make_record(make_config("e", "digits", "v1", "original", 18, s, device="cpu"), acc=a)
            for s, a in ((0, 0.9), (1, 0.8))]
    recs.append(make_record(make_config("e", "digits", "v2", "full_preact", 18, 0, device="cpu"), acc=0.95,
                            bench=False))
    recs.append(make_record(make_config("e", "digits", "v2", "full_preact", 18, 1, device="cpu"), acc=0.95,
                            status="failed"))
    recs[2]["bench_error"] = "RuntimeError: bench OOM\nTraceback ..."
    cells = collect.cells_table(recs)
    s = report.model_summary(cells).set_index("model")
    assert (s.loc["resnet18_v1", "n_ok"], s.loc["resnet18_v1", "n_cells"]) == (2, 2)
    assert s.loc["resnet18_v1", "test_acc_pct"] == pytest.approx(85.0)
    assert s.loc["resnet18_v1", "train_img_per_s"] == pytest.approx(2.0e5 / 18)
    assert s.loc["resnet18_v1", "peak_mem_mib"] == pytest.approx(40 + 6 * 18)
    assert (s.loc["resnet18_v2", "n_ok"], s.loc["resnet18_v2", "n_cells"]) == (1, 2)
    assert np.isnan(s.loc["resnet18_v2", "train_img_per_s"])
    f = report.failures(cells)
    assert list(f["status"]) == ["failed"] and f["error"].iloc[0] == "RuntimeError: CUDA out of memory. Tried to " \
                                                                     "allocate 2.00 GiB"
    b = report.bench_failures(cells)
    assert list(b["seed"]) == [0] and b["bench_error"].iloc[0] == "RuntimeError: bench OOM"


def test_latex_and_markdown_escaping():
    df = pd.DataFrame({"unit_name": ["a_b & c", "50% | x"], "err": ["6.70 ± 0.15", "#1 {x}"]})
    tex = report.to_latex(df, "Error (%) of units_a", "tab:x")
    assert r"unit\_name & err \\" in tex and r"a\_b \& c & 6.70 $\pm$ 0.15 \\" in tex
    assert r"50\% | x & \#1 \{x\} \\" in tex and r"\caption{Error (\%) of units\_a}" in tex
    assert tex.count("{") == tex.count("}") and r"\toprule" in tex and r"\bottomrule" in tex
    md = report.to_markdown(df)
    assert md.splitlines()[3] == "| 50% \\| x | #1 {x} |"


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
    assert report.resolve_settings(None, {}) == {**report.DEFAULTS, "formats": ["png", "svg"]}
    # the repo's params.yaml report section is valid and uses only known keys
    assert set(report.load_settings(str(REPO / "params.yaml"))) == set(report.DEFAULTS)
    for bad, message in [("report: {colour: red}", "unknown report setting(s) colour; valid: formats, dpi"),
                         ("report: {formats: [png, gif]}", "unknown figure format(s) gif"),
                         ("report: {dpi: 0}", "dpi must be an integer"),
                         ("report: {context: huge}", "unknown context 'huge'"),
                         ("report: {allow_missing: maybe}", "allow_missing must be true or false")]:
        params.write_text(bad)
        with pytest.raises(report.SettingsError, match=re.escape(message)):
            report.load_settings(str(params))


def small_results(root: Path, *, with_failure: bool) -> Path:
    recs = [make_record(make_config("smoke", "digits", ver, unit, 18, s, device="cpu"), acc=a)
            for ver, unit, s, a in (("v1", "original", 0, 0.9), ("v2", "full_preact", 0, 0.93))]
    if with_failure:
        recs.append(make_record(make_config("smoke", "digits", "v1", "original", 18, 1, device="cpu"), acc=0.5,
                                status="failed"))
    collect.write_outputs(collect.cells_table(recs), collect.epochs_table(recs), root)
    return root


def test_main_params_flags_and_allow_missing(tmp_path, capsys):
    results = small_results(tmp_path / "r", with_failure=True)
    params = tmp_path / "params.yaml"
    params.write_text("report: {formats: [svg], dpi: 60, allow_missing: false}\n")
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--params", str(params)]) == 1
    assert "1 cell(s) missing or failed" in capsys.readouterr().err
    assert (tmp_path / "o" / "report.md").exists()  # written, with the gaps listed, before failing
    assert sorted(p.suffix for p in (tmp_path / "o" / "figures").iterdir()) == [".svg"] * 5
    # the flag overrides the params file
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--params", str(params),
                        "--allow-missing", "--formats", "png"]) == 0
    assert sorted(p.suffix for p in (tmp_path / "o" / "figures").iterdir()) == [".png"] * 5  # stale svg removed
    params.write_text("report: {colour: red}\n")
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--params", str(params)]) == 2
    assert "unknown report setting(s) colour" in capsys.readouterr().err
    assert report.main(["--results", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "cells.parquet not found" in capsys.readouterr().err


def test_report_without_ok_cells_explains_every_absent_figure(tmp_path):
    results = tmp_path / "r"
    assert collect.main(["--cells", str(tmp_path / "none"), "--out", str(results)]) == 0
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--formats", "svg"]) == 0
    md = (tmp_path / "o" / "report.md").read_text()
    assert "Cells: 0" in md and "No table: no ok cells." in md
    for name in ("accuracy_by_depth", "paired_difference", "throughput_memory", "pareto", "learning_curves",
                 "units"):
        assert f"- `{name}`: " in md
    assert not list((tmp_path / "o" / "figures").iterdir())


# ---- the full report from the fake grid ------------------------------------------------------------------------

FIGURES = ("accuracy_by_depth", "paired_difference", "throughput_memory", "pareto", "learning_curves", "units")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    results = run_collect(root)
    out = root / "a"
    assert report.main(["--results", str(results), "--out", str(out), "--pdf"]) == 0
    return results, out


def test_full_report_writes_every_file(full):
    _, out = full
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == sorted(["report.md"] + [f"figures/{f}.{ext}" for f in FIGURES for ext in ("png", "svg", "pdf")]
                           + [f"tables/{t}.{ext}" for t in ("table2_units", "table3_v1_vs_v2", "paired_difference",
                                                            "models") for ext in ("tex", "csv")])
    for f in FIGURES:  # real images of paper size, not empty files
        png = (out / "figures" / f"{f}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, f
        width_px = int.from_bytes(png[16:20], "big")
        assert 3.3 * 150 <= width_px <= 6.8 * 150, (f, width_px)  # one or two columns at 150 dpi


def test_report_md_content(full):
    results, out = full
    md = (out / "report.md").read_text()
    assert "Cells: 43 (ok 40, diverged 1, failed 1, missing 1)" in md
    assert "**Note on cifar10_jpeg**" in md and "lossy JPEG" in md
    for f in FIGURES:
        assert f"![{f}](figures/{f}.png)" in md
    assert "Figures not drawn" not in md
    # Table 2 rows: ours beside the paper's
    assert "| (b) BN after addition | 8.50 ± 0.20 (n=3) | 8.17 | 6.90 ± 0.20 (n=3) | 6.50 |" in md
    assert "| (c) ReLU before addition | 8.00 ± 0.20 (n=3) | 7.84 | 6.40 ± 0.14 (n=2) | 6.14 |" in md
    # Table 3: v1 vs v2 with the paired difference and the paper's numbers
    assert "| cifar10_jpeg (cifar10-units) | 110 | 7.00 ± 0.20 (n=3) | 6.80 ± 0.20 (n=3) | -0.20 [-0.20, -0.20] " \
           "| 6.61 | 6.37 |" in md
    # failures: every non-ok cell by id with its error's first line
    cells = pd.read_parquet(results / "cells.parquet")
    for _, r in cells[cells["status"] != "ok"].iterrows():
        assert f"| {r['cell_id']} | {r['status']} |" in md
    assert "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB |" in md and "Traceback" not in md
    assert "1 result(s) are not in the current grid" in md
    # environment block from the table
    env = md.split("## Environment")[1]
    assert "git_commit: 3f2c9a1d0b7e4c5a8f6e1d2c3b4a5f6e7d8c9b0a (42 cells)" in env
    assert "gpu_name: - (13 cells); NVIDIA H100 80GB HBM3 (29 cells)" in env and "torch_version: 2.14.1" in env
    assert "arXiv:1603.05027" in md and "Student-t" in md


def test_tables_tex_and_csv(full):
    _, out = full
    tex = (out / "tables" / "table2_units.tex").read_text()
    assert r"\begin{tabular}{lrrrr}" in tex and r"(b) BN after addition & 8.50 $\pm$ 0.20 (n=3) & 8.17" in tex
    assert r"cifar10\_jpeg" in tex and tex.count("{") == tex.count("}")
    t2 = pd.read_csv(out / "tables" / "table2_units.csv")
    assert len(t2) == 10 and set(t2["paper_err"]) == {x for d in report.PAPER_TABLE2.values() for x in d.values()}
    models = pd.read_csv(out / "tables" / "models.csv")
    assert list(models["model"].head(5)) == ["resnet110_v1"] * 4 + ["resnet110_v2"]  # units (a)-(e) at 110


def test_report_is_byte_identical_across_runs_and_processes(full, tmp_path):
    results, a = full
    b = tmp_path / "b"
    assert report.main(["--results", str(results), "--out", str(b), "--pdf"]) == 0
    c = tmp_path / "c"  # a fresh interpreter with another hash seed, through `python -m`
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-m", "resnet_bench.report", "--results", str(results), "--out", str(c),
                           "--formats", "png,svg,pdf"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 1 + 18 + 8
    for other in (b, c):
        assert sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file()) == files
        for f in files:
            assert (a / f).read_bytes() == (other / f).read_bytes(), f"{f} differs between runs"
    # and no timestamps or software stamps that would differ elsewhere
    png = (a / "figures" / "pareto.png").read_bytes()
    assert b"tEXtSoftware" not in png and b"Creation Time" not in png
    assert b"<dc:date>" not in (a / "figures" / "pareto.svg").read_bytes()
    pdf = (a / "figures" / "pareto.pdf").read_bytes()
    assert b"/CreationDate" not in pdf and b"/ModDate" not in pdf


def test_importing_draws_nothing():
    code = ("import sys, resnet_bench.collect, resnet_bench.report; "
            "assert 'matplotlib.pyplot' not in sys.modules and 'seaborn' not in sys.modules, 'imported at import'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
