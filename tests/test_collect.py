"""collect on realistic fake cell results: nothing dropped, numbers right, schema documented, CSV == parquet.

The generator below writes cell results exactly as docs/ARCHITECTURE.md ("Cell result")
defines them (and as the sweep writes them: NaN tokens for a diverged loss, atomic
`<cell_id>.json` names); tests/test_report.py reuses it.
"""

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resnet_bench import collect

REPO = Path(__file__).resolve().parents[1]
COMMIT = "3f2c9a1d0b7e4c5a8f6e1d2c3b4a5f6e7d8c9b0a"

# ---- the fake-cell generator -----------------------------------------------------------------------------

# Residual-unit experiment on CIFAR-10 (JPEG variant): test error (%) per (depth, unit), seeds 0..2 at
# -0.2 / 0 / +0.2 pp around it, so the mean is the number below and the std is exactly 0.2 pp.
UNITS_ERR = {110: {"original": 7.0, "bn_after_add": 8.5, "relu_before_add": 8.0, "relu_only_preact": 7.1,
                   "full_preact": 6.8},
             164: {"original": 6.3, "bn_after_add": 6.9, "relu_before_add": 6.5, "relu_only_preact": 6.2,
                   "full_preact": 5.9}}
UNITS_SEED_OFFSET_PP = {0: -0.2, 1: 0.0, 2: 0.2}
# Depth experiment on digits: test accuracy (%) per (version, depth, seed).
DIGITS_ACC = {("v1", 18, 0): 90.0, ("v1", 18, 1): 91.0, ("v2", 18, 0): 94.0, ("v2", 18, 1): 94.0,
              ("v1", 50, 0): 85.0, ("v1", 50, 1): 87.0, ("v2", 50, 0): 92.0, ("v2", 50, 1): 93.0,
              ("v1", 101, 0): 40.0, ("v1", 101, 1): 42.0, ("v2", 101, 0): 85.0, ("v2", 101, 1): 86.0}
UNIT_VERSION = {"original": "v1", "bn_after_add": "v1", "relu_before_add": "v1", "relu_only_preact": "v1",
                "full_preact": "v2"}
N_EPOCHS = 3


def contract_cell_id(config: dict) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON of the config (experiment label excluded)."""
    payload = {k: v for k, v in config.items() if k not in ("experiment", "cell_id")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def make_config(experiment, dataset, version, unit, depth, seed, *, recipe="he2016_cifar", device="cuda"):
    config = {
        "experiment": experiment, "model": f"resnet{depth}_{version}", "version": version, "unit": unit,
        "depth": depth, "dataset": dataset, "seed": seed,
        "arch": {"stem": "cifar", "width": None if dataset.startswith("cifar") else 8, "zero_init_residual": False},
        "recipe": {"name": recipe, "epochs": N_EPOCHS, "batch_size": 128, "optimizer": "sgd", "lr": 0.1,
                   "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "schedule": "step",
                   "milestones": [0.5, 0.75], "gamma": 0.1, "warmup_iters": 400, "warmup_lr": 0.01,
                   "label_smoothing": 0.0, "augment": {"crop_pad": 4, "flip": True}},
        "runtime": {"device": device, "amp": "bf16" if device == "cuda" else "none", "channels_last": device == "cuda",
                    "compile": False, "threads": None if device == "cuda" else 1, "deterministic": False},
        "bench": {"enabled": True, "batch_size": 128, "warmup": 2, "repeats": 5, "img_size": None},
    }
    config["cell_id"] = contract_cell_id(config)
    return config


def env_block(device):
    gpu = device == "cuda"
    return {"git_commit": COMMIT,
            "versions": {"torch": "2.14.1", "torchvision": "0.29.1", "numpy": "2.4.6", "pandas": "3.1.1"},
            "hardware": {"cpu_model": "AMD EPYC 9654 96-Core Processor", "cpu_count": 16, "torch_threads": 4,
                         "platform": "Linux-6.8-x86_64", "python": "3.11.7",
                         "gpu_name": "NVIDIA H100 80GB HBM3" if gpu else None, "gpu_count": 1 if gpu else 0,
                         "cuda": "12.8" if gpu else None, "cudnn": 91000 if gpu else None}}


def bench_numbers(config):
    """One bench measurement per architecture (shared by its seeds), as the sweep merges it."""
    d, v = config["depth"], config["version"]
    train = 2.0e5 / d * (1.0 if v == "v1" else 0.95)
    return {"train_img_per_s": train, "train_img_per_s_iqr": 0.02 * train, "infer_img_per_s": 3 * train,
            "infer_img_per_s_iqr": 0.06 * train, "peak_mem_bytes": 2**20 * (40 + 6 * d),
            "saved_activation_bytes": 2**20 * 5 * d, "peak_rss_bytes": 2**30, "batch_size": 128,
            "peak_mem_source": "torch.cuda.max_memory_allocated", "params": 10_000 * d}


def make_record(config, *, acc, status="ok", n_epochs=N_EPOCHS, bench=True):
    """A result record as the sweep writes it: ok, diverged (NaN loss, no test numbers) or failed."""
    epochs = []
    for e in range(1, n_epochs + 1):
        frac = e / N_EPOCHS
        epochs.append({"epoch": e, "train_loss": 2.0 * (1 - frac) + 0.1, "train_acc": acc * frac,
                       "val_loss": 2.1 * (1 - frac) + 0.2, "val_acc": acc - 0.3 * (1 - frac),
                       "lr": 0.1 * (0.1 if frac > 0.5 else 1.0), "epoch_s": 10.0 + config["depth"] / 10,
                       "train_img_per_s": 5000.0})
    error, metrics = None, {}
    if status == "diverged":
        epochs[-1]["train_loss"] = float("nan")
        error = f"train loss is nan at epoch {n_epochs}"
    if status == "failed":
        error = ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback (most recent call last):\n"
                 '  File "resnet_bench/train.py", line 180, in train_cell\n    logits = step_model(x)\n')
    if status in ("ok", "diverged"):
        metrics = {"best_val_acc": max(x["val_acc"] for x in epochs), "best_val_epoch": len(epochs),
                   "epochs_completed": len(epochs), "final_val_acc": epochs[-1]["val_acc"],
                   "final_train_loss": epochs[-1]["train_loss"], "train_img_per_s": 5000.0,
                   "params": 10_000 * config["depth"], "fwd_gflops": 0.0025 * config["depth"],
                   "train_time_s": 30.0 * n_epochs}
    if status == "ok":
        metrics.update({"test_acc": acc, "test_loss": 0.3, "test_top5_acc": None})
    record = {"cell_id": config["cell_id"], "status": status, "error": error, "config": config,
              "metrics": metrics, "epochs": epochs,
              "dataset_meta": {"name": config["dataset"], "num_classes": 10, "channels": 3, "height": 32,
                               "width": 32, "counts": {"train": 45000, "val": 5000, "test": 10000}},
              "env": env_block(config["runtime"]["device"]),
              "started_at": "2026-11-20T10:00:00+00:00", "finished_at": "2026-11-20T10:30:00+00:00",
              "wall_s": 1800.0}
    if status == "failed":
        record["started_at"], record["wall_s"] = None, None
    if status == "ok" and bench:
        b = bench_numbers(config)
        metrics.update({"bench_train_img_per_s": b["train_img_per_s"], "bench_infer_img_per_s": b["infer_img_per_s"],
                        "peak_mem_bytes": b["peak_mem_bytes"], "saved_activation_bytes": b["saved_activation_bytes"],
                        "peak_rss_bytes": b["peak_rss_bytes"], "bench_batch_size": b["batch_size"]})
        record["bench"] = b
    return record


def fake_grid():
    """(expected cells, result records) of two experiments with every status.

    - cifar10-units on cifar10_jpeg: 5 units x depths 110/164 x seeds 0-2; (c) at 164 seed 2 never ran (missing).
    - smoke on digits (CPU): v1/v2 x depths 18/50/101 x seeds 0/1; v1-101 seed 0 diverged, seed 1 failed.
    - one stale result outside the grid (digits v2-18 seed 7).
    """
    expected, records = [], []
    for depth in (110, 164):
        for unit, err in UNITS_ERR[depth].items():
            for seed, off in UNITS_SEED_OFFSET_PP.items():
                c = make_config("cifar10-units", "cifar10_jpeg", UNIT_VERSION[unit], unit, depth, seed)
                expected.append(c)
                if (depth, unit, seed) == (164, "relu_before_add", 2):
                    continue  # missing
                records.append(make_record(c, acc=1 - (err + off) / 100))
    for (version, depth, seed), acc in DIGITS_ACC.items():
        c = make_config("smoke", "digits", version, {"v1": "original", "v2": "full_preact"}[version], depth, seed,
                        recipe="quick", device="cpu")
        expected.append(c)
        status = {("v1", 101, 0): "diverged", ("v1", 101, 1): "failed"}.get((version, depth, seed), "ok")
        records.append(make_record(c, acc=acc / 100, status=status, n_epochs={"failed": 1, "diverged": 2}.get(
            status, N_EPOCHS)))
    stale = make_config("smoke", "digits", "v2", "full_preact", 18, 7, recipe="quick", device="cpu")
    records.append(make_record(stale, acc=0.95))
    return [{"cell_id": c["cell_id"], "config": c} for c in expected], records


def write_fake_cells(root: Path) -> tuple[Path, Path]:
    """Write the fake grid's result files and expected_cells.json under root; returns their paths."""
    expected, records = fake_grid()
    cells = root / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    for rec in records:
        (cells / f"{rec['cell_id']}.json").write_text(json.dumps(rec, indent=1, sort_keys=True))
    (root / "expected_cells.json").write_text(json.dumps(expected, indent=1, sort_keys=True))
    return cells, root / "expected_cells.json"


def run_collect(root: Path) -> Path:
    cells, expected = write_fake_cells(root)
    out = root / "results"
    assert collect.main(["--cells", str(cells), "--expected", str(expected), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return run_collect(tmp_path_factory.mktemp("collect"))


# ---- tests ---------------------------------------------------------------------------------------------------


def test_every_cell_keeps_a_row_with_its_status(results):
    cells = pd.read_parquet(results / "cells.parquet")
    # 30 unit cells (one missing) + 12 digits cells + 1 stale result
    assert len(cells) == 43 and cells["cell_id"].is_unique
    assert cells["status"].value_counts().to_dict() == {"ok": 40, "diverged": 1, "failed": 1, "missing": 1}

    failed = cells[cells["status"] == "failed"].iloc[0]
    assert (failed["dataset"], failed["version"], failed["depth"], failed["seed"]) == ("digits", "v1", 101, 1)
    assert failed["error"].startswith("RuntimeError: CUDA out of memory") and "Traceback" in failed["error"]
    assert pd.isna(failed["test_acc"]) and failed["epochs_completed"] == 1 and pd.isna(failed["started_at"])

    diverged = cells[cells["status"] == "diverged"].iloc[0]
    assert diverged["seed"] == 0 and diverged["error"] == "train loss is nan at epoch 2"
    assert pd.isna(diverged["test_acc"]) and diverged["epochs_completed"] == 2 and np.isnan(diverged["final_train_loss"])

    missing = cells[cells["status"] == "missing"].iloc[0]
    assert (missing["unit"], missing["depth"], missing["seed"], missing["model"]) == ("relu_before_add", 164, 2,
                                                                                      "resnet164_v1")
    assert "no result file" in missing["error"] and missing["in_grid"]
    assert missing["recipe"] == "he2016_cifar" and missing["lr"] == 0.1  # config columns filled from expected
    assert pd.isna(missing["test_acc"]) and pd.isna(missing["epochs_completed"]) and pd.isna(missing["git_commit"])

    stale = cells[cells["in_grid"] == False]  # noqa: E712 (nullable boolean)
    assert list(stale["seed"]) == [7] and stale["status"].iloc[0] == "ok"
    assert cells["in_grid"].notna().all()

    ok = cells[cells["status"] == "ok"]
    assert ok["error"].isna().all()
    np.testing.assert_allclose(ok["test_error_pct"], 100 * (1 - ok["test_acc"]))
    one = ok[(ok["unit"] == "bn_after_add") & (ok["depth"] == 110) & (ok["seed"] == 2)].iloc[0]
    assert one["test_error_pct"] == pytest.approx(8.7)


def test_config_recipe_runtime_and_environment_are_flattened(results):
    cells = pd.read_parquet(results / "cells.parquet")
    r = cells[(cells["experiment"] == "cifar10-units") & (cells["status"] == "ok")].iloc[0]
    assert (r["stem"], r["zero_init_residual"], r["recipe"], r["optimizer"], r["epochs"]) == (
        "cifar", False, "he2016_cifar", "sgd", 3)
    assert (r["momentum"], r["nesterov"], r["weight_decay"], r["schedule"], json.loads(r["milestones"])) == (
        0.9, False, 1e-4, "step", [0.5, 0.75])
    assert (r["warmup_iters"], r["warmup_lr"], r["crop_pad"], r["flip"]) == (400, 0.01, 4, True)
    assert (r["device"], r["amp"], r["channels_last"], r["compile"], r["deterministic"]) == (
        "cuda", "bf16", True, False, False)
    assert pd.isna(r["width"]) and pd.isna(r["threads"]) and r["bench_enabled"]
    assert (r["num_classes"], r["n_train"], r["n_val"], r["n_test"]) == (10, 45000, 5000, 10000)
    assert (r["git_commit"], r["torch_version"], r["cuda_version"], r["gpu_name"], r["torch_threads"]) == (
        COMMIT, "2.14.1", "12.8", "NVIDIA H100 80GB HBM3", 4)
    assert r["cpu_model"].startswith("AMD EPYC") and r["cpu_count"] == 16 and r["gpu_count"] == 1
    # bench numbers, with the derived MiB column
    b = bench_numbers(make_config("x", "cifar10_jpeg", r["version"], r["unit"], int(r["depth"]), 0))
    assert r["bench_train_img_per_s"] == pytest.approx(b["train_img_per_s"])
    assert r["bench_infer_img_per_s_iqr"] == pytest.approx(b["infer_img_per_s_iqr"])
    assert r["peak_mem_bytes"] == b["peak_mem_bytes"] and r["peak_mem_mib"] == pytest.approx(40 + 6 * r["depth"])
    assert r["peak_mem_source"] == "torch.cuda.max_memory_allocated" and pd.isna(r["bench_error"])
    d = cells[cells["dataset"] == "digits"].iloc[0]
    assert (d["device"], d["amp"], d["threads"], d["width"]) == ("cpu", "none", 1, 8) and pd.isna(d["gpu_name"])
    # integers stay integers, the schema does not depend on which cells finished
    dtypes = {c: str(t) for c, t in cells.dtypes.items()}
    assert dtypes["params"] == dtypes["depth"] == dtypes["peak_mem_bytes"] == "Int64"
    assert dtypes["test_acc"] == "float64" and dtypes["nesterov"] == "boolean"


def test_row_and_column_order_are_fixed(results):
    cells = pd.read_parquet(results / "cells.parquet")
    assert list(cells.columns) == [c for c, *_ in collect.CELL_COLUMNS]
    unit_rank = cells["unit"].map({u: i for i, u in enumerate(collect.UNIT_ORDER)})
    keys = list(zip(cells["experiment"], cells["dataset"], cells["version"], unit_rank, cells["depth"],
                    cells["seed"], cells["cell_id"]))
    assert keys == sorted(keys)
    first = cells.iloc[0]
    assert (first["experiment"], first["unit"], first["depth"], first["seed"]) == ("cifar10-units", "original", 110, 0)
    # units in He et al. Fig. 4 order within v1, not alphabetical
    v1_110 = cells[(cells["experiment"] == "cifar10-units") & (cells["version"] == "v1") & (cells["depth"] == 110)]
    assert list(dict.fromkeys(v1_110["unit"])) == ["original", "bn_after_add", "relu_before_add", "relu_only_preact"]

    epochs = pd.read_parquet(results / "epochs.parquet")
    assert list(epochs.columns) == [c for c, *_ in collect.EPOCH_COLUMNS]
    e_keys = list(zip(epochs["experiment"], epochs["dataset"], epochs["version"],
                      epochs["unit"].map({u: i for i, u in enumerate(collect.UNIT_ORDER)}), epochs["depth"],
                      epochs["seed"], epochs["cell_id"], epochs["epoch"]))
    assert e_keys == sorted(e_keys)


def test_unit_order_is_the_model_zoo_order():
    from resnet_bench.models import UNITS, VERSION_UNIT

    assert collect.UNIT_ORDER == tuple(UNITS) and collect.VERSION_UNIT == VERSION_UNIT


def test_epochs_keep_partial_curves_and_curves_average_ok_seeds(results):
    epochs = pd.read_parquet(results / "epochs.parquet")
    # 42 results: 40 ok with 3 epochs each, the failed one with 1, the diverged one with 2
    assert len(epochs) == 40 * 3 + 1 + 2
    assert epochs.groupby("status").size().to_dict() == {"diverged": 2, "failed": 1, "ok": 120}
    diverged = epochs[epochs["status"] == "diverged"].sort_values("epoch")
    assert list(diverged["epoch"]) == [1, 2] and np.isnan(diverged["train_loss"].iloc[-1])

    files = sorted(p.name for p in (results / "curves").glob("*.csv"))
    # one file per experiment, dataset and depth with v1 (unit a) or v2 (unit e) ok: 110, 164 and digits 18, 50, 101
    assert files == ["cifar10-units__cifar10_jpeg__resnet110.csv", "cifar10-units__cifar10_jpeg__resnet164.csv",
                     "smoke__digits__resnet101.csv", "smoke__digits__resnet18.csv", "smoke__digits__resnet50.csv"]
    curve = collect.read_table(results / "curves" / "cifar10-units__cifar10_jpeg__resnet110.csv")
    assert list(curve.columns) == [c for c, *_ in collect.CURVE_COLUMNS]
    assert list(curve["epoch"]) == [1, 2, 3] and list(curve["v1_n_seeds"]) == [3, 3, 3]
    # val_acc at the last epoch equals the test accuracy in the generator: v1 (unit a) 7.0% error over seeds
    assert curve["v1_val_error"].iloc[-1] == pytest.approx(7.0)
    # v1 at depth 101 has no ok seed: its columns are empty, v2's are there
    d101 = collect.read_table(results / "curves" / "smoke__digits__resnet101.csv")
    assert d101["v1_val_error"].isna().all() and d101["v2_n_seeds"].notna().all()
    # the stale seed 7 is an ok result: averaged with seeds 0 and 1
    d18 = collect.read_table(results / "curves" / "smoke__digits__resnet18.csv")
    assert list(d18["v2_n_seeds"]) == [3, 3, 3]
    assert d18["v2_val_error"].iloc[-1] == pytest.approx(100 * (1 - (0.94 + 0.94 + 0.95) / 3))


def test_csv_and_parquet_hold_the_same_table(results):
    for name in ("cells", "epochs"):
        parquet = pd.read_parquet(results / f"{name}.parquet")
        pd.testing.assert_frame_equal(collect.read_table(results / f"{name}.csv"), parquet)
        pd.testing.assert_frame_equal(collect.read_table(results / f"{name}.parquet"), parquet)
        raw = pd.read_csv(results / f"{name}.csv")  # a plain reader sees the same values
        assert list(raw.columns) == list(parquet.columns) and len(raw) == len(parquet)
        np.testing.assert_allclose(raw["depth"], parquet["depth"].astype(float))
    raw = pd.read_csv(results / "cells.csv")
    np.testing.assert_array_equal(raw["test_acc"].to_numpy(), pd.read_parquet(results / "cells.parquet")[
        "test_acc"].to_numpy())


def test_every_column_is_documented(results):
    doc = (REPO / "docs" / "results_schema.md").read_text()
    assert doc == collect.schema_doc(), "regenerate: python -m resnet_bench.collect --schema-doc > docs/results_schema.md"
    tables = [pd.read_parquet(results / "cells.parquet"), pd.read_parquet(results / "epochs.parquet"),
              pd.read_csv(next((results / "curves").glob("*.csv")))]
    for df in tables:
        for col in df.columns:
            assert f"| `{col}` |" in doc, f"column {col} is not documented"
    for key, value in json.loads((results / "metrics.json").read_text()).items():
        assert f"`{key}`" in doc or f"`{key}." in doc, key
    # each documented column says its type and unit
    for col, dtype, unit, meaning in [*collect.CELL_COLUMNS, *collect.EPOCH_COLUMNS]:
        assert dtype in collect.DTYPES and unit and meaning


def test_metrics_json_headline_numbers(results):
    text = (results / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in metrics.json"))
    assert {k: metrics[k] for k in ("cells", "ok", "diverged", "failed", "missing")} == {
        "cells": 43, "ok": 40, "diverged": 1, "failed": 1, "missing": 1}
    models = metrics["models"]
    assert len(models) == 16 and list(models) == sorted(models)
    # units (a) and (e) are the plain v1/v2 models; (b)-(d) carry the unit in the key
    assert models["cifar10_jpeg/resnet110_v1"]["test_acc_mean"] == pytest.approx(1 - 0.070)
    assert models["cifar10_jpeg/resnet110_v1"]["test_acc_std"] == pytest.approx(0.002)
    assert models["cifar10_jpeg/resnet164_v2"]["test_acc_mean"] == pytest.approx(1 - 0.059)
    assert models["cifar10_jpeg/resnet164_v1/relu_before_add"] == {
        "test_acc_mean": pytest.approx(1 - (6.5 - 0.1) / 100), "test_acc_std": pytest.approx(0.0014142, abs=1e-6),
        "n_ok": 2, "n_failed": 0, "n_missing": 1}
    assert models["digits/resnet101_v1"] == {"test_acc_mean": None, "test_acc_std": None, "n_ok": 0, "n_failed": 2,
                                             "n_missing": 0}
    assert models["digits/resnet18_v2"]["n_ok"] == 3  # seeds 0, 1 and the stale seed 7
    assert metrics["test_acc_mean"] == pytest.approx(
        pd.read_parquet(results / "cells.parquet").query("status == 'ok'")["test_acc"].mean(), abs=1e-6)


def test_collect_is_deterministic(tmp_path):
    a, b = run_collect(tmp_path / "a"), run_collect(tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 5 + 5  # tables, metrics.json + one curve file per experiment, dataset and depth
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_stale_curves_are_removed_and_no_expected_file_is_fine(tmp_path, capsys):
    cells, _ = write_fake_cells(tmp_path)
    out = tmp_path / "results"
    (out / "curves").mkdir(parents=True)
    (out / "curves" / "old__model.csv").write_text("epoch,val_acc\n1,0.5\n")
    assert collect.main(["--cells", str(cells), "--out", str(out), "--expected", str(tmp_path / "nope.json")]) == 0
    assert "nope.json not found" in capsys.readouterr().err
    assert not (out / "curves" / "old__model.csv").exists()
    table = pd.read_parquet(out / "cells.parquet")
    assert len(table) == 42 and "missing" not in set(table["status"]) and table["in_grid"].isna().all()


def test_empty_cells_folder_gives_empty_tables_with_the_schema(tmp_path):
    assert collect.main(["--cells", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 0
    cells = pd.read_parquet(tmp_path / "r" / "cells.parquet")
    assert len(cells) == 0 and list(cells.columns) == [c for c, *_ in collect.CELL_COLUMNS]
    assert str(cells["depth"].dtype) == "Int64"
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["cells"] == 0


@pytest.mark.parametrize("content, fault", [
    ('{"status": "ok", "cell_id": "bad"', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"cell_id": "bad", "status": "ok"}', "missing key(s) config"),
    ('{"cell_id": "bad", "status": "done", "config": {}}', "status 'done' is not one of"),
    ('{"cell_id": "other", "status": "ok", "config": {}}', "does not match the file name"),
    ('{"cell_id": "bad", "status": "ok", "config": {"experiment": "e", "model": "m", "version": "v1"}}',
     "lacks unit, depth, dataset, seed"),
    ('{"cell_id": "bad", "status": "ok", "config": {"experiment": "e", "model": "m", "version": "v1", '
     '"unit": "original", "depth": "18", "dataset": "d", "seed": 0}}', "config.depth must be an integer"),
    ('{"cell_id": "bad", "status": "ok", "epochs": [{"loss": 1}], "config": {"experiment": "e", "model": "m", '
     '"version": "v1", "unit": "original", "depth": 18, "dataset": "d", "seed": 0}}', "`epochs` must be a list"),
])
def test_malformed_cell_result_is_an_error_naming_the_file(tmp_path, capsys, content, fault):
    cells, _ = write_fake_cells(tmp_path)
    (cells / "bad.json").write_text(content)
    assert collect.main(["--cells", str(cells), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"malformed cell result {cells / 'bad.json'}" in err and fault in err, err
    assert not (tmp_path / "r" / "cells.csv").exists()


def test_every_malformed_file_is_listed_and_a_bad_expected_file_too(tmp_path, capsys):
    cells, expected = write_fake_cells(tmp_path)
    (cells / "bad1.json").write_text("{")
    (cells / "bad2.json").write_text("null")
    assert collect.main(["--cells", str(cells), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "bad1.json" in err and "bad2.json" in err
    (cells / "bad1.json").unlink()
    (cells / "bad2.json").unlink()
    expected.write_text('[{"cell_id": "x", "config": {"experiment": "e"}}]')
    assert collect.main(["--cells", str(cells), "--expected", str(expected), "--out", str(tmp_path / "r")]) == 1
    assert f"malformed expected-cells file {expected}, item 0" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
    cells, expected = write_fake_cells(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "resnet_bench.collect", "--cells", str(cells), "--expected",
                           str(expected), "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "collected 43 cells (ok 40, diverged 1, failed 1, missing 1)" in proc.stdout
    assert math.isclose(json.loads((tmp_path / "r" / "metrics.json").read_text())["cells"], 43)
