"""collect and report on hand-made cell records: nothing dropped, numbers right, files byte-identical."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resnet_bench import collect, report
from resnet_bench.sweep import atomic_write_json

# test accuracies by (version, depth, seed): v2 - v1 differences are known by construction
ACC = {("v1", 18, 0): 0.90, ("v1", 18, 1): 0.92, ("v2", 18, 0): 0.91, ("v2", 18, 1): 0.95,
       ("v1", 50, 0): 0.80, ("v1", 50, 1): 0.84, ("v2", 50, 0): 0.86, ("v2", 50, 1): 0.88}


def record(version, depth, seed, status="ok", unit=None, dataset="digits", acc=None):
    unit = unit or {"v1": "original", "v2": "full_preact"}[version]
    cid = f"{version}{depth}{unit[:4]}{seed}{dataset[:3]}"
    config = {"experiment": "t", "model": f"resnet{depth}_{version}", "version": version, "unit": unit,
              "depth": depth, "dataset": dataset, "seed": seed, "cell_id": cid,
              "arch": {"stem": "cifar", "width": 4, "zero_init_residual": False},
              "recipe": {"name": "quick", "epochs": 2, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4,
                         "schedule": "cosine", "label_smoothing": 0.0},
              "runtime": {"device": "cpu", "amp": "none", "channels_last": False, "compile": False, "threads": 1}}
    acc = ACC.get((version, depth, seed), 0.5) if acc is None else acc
    metrics = {} if status == "failed" else {
        "test_acc": acc, "best_val_acc": acc, "best_val_epoch": 2, "epochs_completed": 2,
        "train_img_per_s": 1000.0 / depth, "params": 1000 * depth, "fwd_gflops": 0.001 * depth,
        "bench_train_img_per_s": 2000.0 / depth, "bench_infer_img_per_s": 6000.0 / depth,
        "peak_mem_bytes": 2**20 * depth}
    epochs = [] if status == "failed" else [
        {"epoch": e, "train_loss": 1.0 / e, "train_acc": acc - 0.1 / e, "val_loss": 1.1 / e, "val_acc": acc - 0.05 / e,
         "lr": 0.01, "epoch_s": 1.0, "train_img_per_s": 1000.0} for e in (1, 2)]
    return {"cell_id": cid, "status": status, "error": "RuntimeError: boom" if status == "failed" else None,
            "config": config, "metrics": metrics, "epochs": epochs,
            "env": {"git_commit": "abc123", "versions": {"torch": "2.14.1"},
                    "hardware": {"cpu_model": "Test CPU", "gpu_name": None, "torch_threads": 1}},
            "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00"}


@pytest.fixture
def results(tmp_path):
    cells = tmp_path / "cells"
    recs = [record(v, d, s) for (v, d, s) in ACC]
    recs.append(record("v1", 101, 0, status="failed"))
    recs.append(record("v1", 34, 0, status="diverged", acc=0.1))
    for r in recs:
        atomic_write_json(cells / f"{r['cell_id']}.json", r)
    missing = record("v2", 101, 0)
    expected = [{"cell_id": r["cell_id"], "config": r["config"]} for r in recs + [missing]]
    atomic_write_json(tmp_path / "expected.json", expected)
    assert collect.main(["--cells", str(cells), "--expected", str(tmp_path / "expected.json"),
                         "--out", str(tmp_path / "results")]) == 0
    return tmp_path / "results"


def test_collect_keeps_every_cell_with_its_status(results):
    cells = pd.read_parquet(results / "cells.parquet")
    assert len(cells) == 11
    assert cells["status"].value_counts().to_dict() == {"ok": 8, "failed": 1, "diverged": 1, "missing": 1}
    failed = cells[cells["status"] == "failed"].iloc[0]
    assert failed["error"] == "RuntimeError: boom" and failed["depth"] == 101
    assert "no result file" in cells[cells["status"] == "missing"].iloc[0]["error"]
    ok = cells[cells["status"] == "ok"]
    assert np.allclose(ok["test_error_pct"], 100 * (1 - ok["test_acc"]))
    pd.testing.assert_frame_equal(pd.read_csv(results / "cells.csv", keep_default_na=False, na_values={c: [""] for c in collect.NUMERIC_COLUMNS}), cells, check_dtype=False)
    epochs = pd.read_parquet(results / "epochs.parquet")
    assert len(epochs) == 2 * 9 and list(epochs["epoch"].head(2)) == [1, 2]
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["cells"] == 11 and metrics["failed"] == 1 and metrics["missing"] == 1
    assert metrics["test_acc"]["digits/resnet18_v2"] == {"test_acc_mean": pytest.approx(0.93), "n_seeds": 2}


def test_every_column_is_documented(repo_root, results):
    doc = (repo_root / "docs" / "results_schema.md").read_text()
    assert doc.strip() == collect.schema_doc().strip(), "regenerate: python -m resnet_bench.collect --schema-doc"
    for name in ("cells", "epochs"):
        for col in pd.read_parquet(results / f"{name}.parquet").columns:
            assert f"`{col}`" in doc, col


def test_malformed_cell_is_an_error_naming_the_file(tmp_path, capsys):
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "bad.json").write_text('{"status": "ok"')
    assert collect.main(["--cells", str(tmp_path / "cells"), "--out", str(tmp_path / "r")]) == 1
    assert "bad.json" in capsys.readouterr().err


def test_paired_difference_and_interval_by_hand(results):
    cells = pd.read_parquet(results / "cells.parquet")
    diff = report.paired_difference(cells).set_index("depth")
    # depth 18: seed diffs +1, +3 pp -> mean 2, t(0.975, 1) = 12.706, sd = sqrt(2), n = 2
    assert diff.loc[18, "diff_pp"] == pytest.approx(2.0)
    half = 12.7062047 * np.sqrt(2) / np.sqrt(2)
    assert diff.loc[18, "ci_high"] == pytest.approx(2.0 + half, rel=1e-5)
    assert diff.loc[50, "diff_pp"] == pytest.approx(5.0) and diff.loc[50, "n_pairs"] == 2


def test_pareto_front():
    pts = pd.DataFrame({"x": [1, 2, 3, 2.5], "y": [9, 8, 5, 4]})
    assert list(report.pareto_front(pts, "x", "y").index) == [0, 1, 2]


def test_table2_aligns_with_the_paper():
    recs = [record("v1", 110, s, unit="bn_after_add", acc=a) for s, a in enumerate([0.92, 0.91, 0.93])]
    recs += [record("v2", 164, 0, acc=0.945)]
    cells = collect.cells_table(recs)
    t2 = report.table2(cells).set_index(["depth", "unit"])
    assert t2.loc[(110, "bn_after_add"), "paper_err"] == 8.17
    assert t2.loc[(110, "bn_after_add"), "ours_err_mean"] == pytest.approx(8.0)
    assert t2.loc[(110, "bn_after_add"), "n_seeds"] == 3
    assert t2.loc[(164, "full_preact"), "paper_err"] == 5.46
    assert t2.loc[(164, "full_preact"), "ours_err_mean"] == pytest.approx(5.5)


def test_report_writes_everything_and_is_byte_identical(results, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert report.main(["--results", str(results), "--out", str(out), "--pdf"]) == 0
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    names = {str(f) for f in files}
    for fig in ("accuracy_by_depth", "paired_difference", "throughput_memory", "pareto", "learning_curves"):
        for ext in ("png", "svg", "pdf"):
            assert f"figures/{fig}.{ext}" in names
    assert "tables/table3_v1_vs_v2.tex" in names and "report.md" in names
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    md = (outs[0] / "report.md").read_text()
    assert "failed 1" in md and "RuntimeError: boom" in md and "abc123" in md
    tex = (outs[0] / "tables" / "table3_v1_vs_v2.tex").read_text()
    assert tex.startswith(r"\begin{table}") and r"\toprule" in tex


def test_report_settings_from_params(tmp_path, results):
    params = tmp_path / "params.yaml"
    params.write_text("report: {formats: [svg], dpi: 80, colour: red}\n")
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--params", str(params)]) == 2
    params.write_text("report: {formats: [svg], dpi: 80}\n")
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--params", str(params)]) == 0
    assert not list((tmp_path / "o" / "figures").glob("*.png"))
