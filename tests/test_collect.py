"""collect on realistic fake cell results: nothing dropped, numbers right, schema documented, CSV == parquet.

The generator below writes cell results exactly as docs/ARCHITECTURE.md ("Cell result")
defines them (and as the sweep writes them: NaN tokens for a diverged loss, atomic
`<cell_id>.json` names, provenance from the driver); tests/test_report.py reuses it.
"""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from resnet_bench import collect
from resnet_bench.outputs import MANIFEST
from resnet_bench.sweep.records import RecordError

REPO = Path(__file__).resolve().parents[1]
COMMIT = "3f2c9a1d0b7e4c5a8f6e1d2c3b4a5f6e7d8c9b0a"
CODE_FP = "5e1f0c2a9b3d4e6f"  # the training code's fingerprint (resnet_bench.env.code_fingerprint format)

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
VERSION_UNIT = {"v1": "original", "v2": "full_preact"}
N_EPOCHS = 3


def contract_cell_id(config: dict) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON of the config (experiment label excluded)."""
    payload = {k: v for k, v in config.items() if k not in ("experiment", "cell_id")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def data_identity(dataset: str, version: str = "1") -> dict:
    """config.data as the sweep resolves it: the prepared artifact's content hash and its split settings."""
    return {"content_sha256": hashlib.sha256(f"{dataset}:{version}".encode()).hexdigest(), "val_fraction": 0.1,
            "split_seed": 0}


def make_config(experiment, dataset, version, unit, depth, seed, *, recipe="he2016_cifar", device="cuda",
                epochs=N_EPOCHS, code_fingerprint=CODE_FP, data=None):
    config = {
        "experiment": experiment, "model": f"resnet{depth}_{version}", "version": version, "unit": unit,
        "depth": depth, "dataset": dataset, "seed": seed,
        "arch": {"stem": "cifar", "width": None if dataset.startswith("cifar") else 8, "zero_init_residual": False,
                 "variant": "modern", "shortcut": "projection", "bottleneck_stride": "3x3"},
        "recipe": {"name": recipe, "epochs": epochs, "batch_size": 128, "optimizer": "sgd", "lr": 0.1,
                   "lr_reference_batch": None, "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4,
                   "bn_weight_decay": True, "schedule": "step",
                   "milestones": [0.5, 0.75], "gamma": 0.1, "warmup_iters": 400, "warmup_lr": 0.01,
                   "label_smoothing": 0.0,
                   "augment": {"crop_pad": 4, "flip": True, "resized_crop": None, "scale_jitter": None,
                               "color_jitter": None, "lighting": None, "resolution_schedule": None}},
        "runtime": {"device": device, "amp": "bf16" if device == "cuda" else "none", "channels_last": device == "cuda",
                    "compile": False, "compile_mode": "default", "tf32": False,
                    "threads": None if device == "cuda" else 1, "deterministic": False, "numeric_pin": "portable"},
        "gpu_share": 1.0 if device == "cuda" else None,
        "bench": {"enabled": True, "batch_size": 128, "warmup": 2, "repeats": 5, "img_size": None,
                  "steps_per_repeat": 2},
        "data": data_identity(dataset) if data is None else data,
        "code_fingerprint": code_fingerprint,
    }
    config["cell_id"] = contract_cell_id(config)
    return config


def env_block(device):
    gpu = device == "cuda"
    # A trial runs outside the repository: its own git lookup finds nothing (the driver's provenance has the commit).
    return {"git_commit": "unknown",
            "versions": {"torch": "2.14.1", "torchvision": "0.29.1", "numpy": "2.4.6", "pandas": "3.1.1"},
            "hardware": {"cpu_model": "AMD EPYC 9654 96-Core Processor", "cpu_count": 16, "torch_threads": 4,
                         "platform": "Linux-6.8-x86_64", "python": "3.11.7",
                         "gpu_name": "NVIDIA H100 80GB HBM3" if gpu else None, "gpu_count": 1 if gpu else 0,
                         "cuda": "12.8" if gpu else None, "cudnn": 91000 if gpu else None}}


def provenance_block(config, *, numeric=True):
    """record.provenance: the driver's git/code capture plus the trial's node (and numeric environment)."""
    gpu = config["runtime"]["device"] == "cuda"
    prov = {"git": {"commit": COMMIT, "dirty": False, "diff_sha256": None},
            "code_fingerprint": config["code_fingerprint"],
            "node": {"hostname": "gpu-node-3" if gpu else "cpu-node-1", "node_id": None, "ip": None}}
    if numeric:  # a failure record written by the sweep has no numeric block
        prov["numeric"] = {"aten_cpu_capability": "AVX512" if gpu else "AVX2", "pinned": not gpu,
                           "torch_threads": 4 if gpu else 1}
    return prov


def bench_numbers(config):
    """One bench measurement per architecture (shared by its seeds), as the sweep merges it."""
    d, v = config["depth"], config["version"]
    train = 2.0e5 / d * (1.0 if v == "v1" else 0.95)
    return {"train_img_per_s": train, "train_img_per_s_iqr": 0.02 * train, "infer_img_per_s": 3 * train,
            "infer_img_per_s_iqr": 0.06 * train, "peak_mem_bytes": 2**20 * (40 + 6 * d),
            "saved_activation_bytes": 2**20 * 5 * d, "peak_rss_bytes": 2**30, "batch_size": 128,
            "peak_mem_source": "torch.cuda.max_memory_allocated", "params": 10_000 * d}


def make_record(config, *, acc, status="ok", n_epochs=None, bench=True):
    """A result record as the sweep writes it: ok, diverged (NaN loss, no test numbers) or failed; an ok
    record has every epoch of its recipe."""
    n_epochs = config["recipe"]["epochs"] if n_epochs is None else n_epochs
    epochs = []
    for e in range(1, n_epochs + 1):
        frac = e / N_EPOCHS
        epochs.append({"epoch": e, "iteration": 100 * e, "train_loss": 2.0 * (1 - frac) + 0.1,
                       "train_acc": acc * frac, "val_loss": 2.1 * (1 - frac) + 0.2, "val_acc": max(0.0, acc - 0.3 * (1 - frac)),
                       "test_loss": 2.2 * (1 - frac) + 0.3, "test_acc": max(0.0, acc - 0.31 * (1 - frac)),
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
              "provenance": provenance_block(config, numeric=status != "failed"),
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
    - one result file that is not a cell of the current grid (excluded, kept on disk): digits v2-18 seed 7.
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
        c = make_config("smoke", "digits", version, VERSION_UNIT[version], depth, seed, recipe="quick", device="cpu")
        expected.append(c)
        status = {("v1", 101, 0): "diverged", ("v1", 101, 1): "failed"}.get((version, depth, seed), "ok")
        records.append(make_record(c, acc=acc / 100, status=status, n_epochs={"failed": 1, "diverged": 2}.get(
            status, N_EPOCHS)))
    stale = make_config("smoke", "digits", "v2", "full_preact", 18, 7, recipe="quick", device="cpu")
    records.append(make_record(stale, acc=0.95))
    return [{"cell_id": c["cell_id"], "config": c} for c in expected], records


def write_cells(root: Path, records, expected=None) -> Path:
    """Result files under root/cells (and root/expected_cells.json), as the sweep leaves them; returns root."""
    cells = root / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    for rec in records:
        (cells / f"{rec['cell_id']}.json").write_text(json.dumps(rec, indent=1, sort_keys=True))
    if expected is not None:
        (root / "expected_cells.json").write_text(json.dumps(expected, indent=1, sort_keys=True))
    return root


def write_fake_cells(root: Path) -> tuple[Path, Path]:
    """Write the fake grid's result files and expected_cells.json under root; returns their paths."""
    expected, records = fake_grid()
    write_cells(root, records, expected)
    return root / "cells", root / "expected_cells.json"


def run_collect(root: Path) -> Path:
    """The fake grid collected as the pipeline does (`collect --results DIR`); returns DIR (results/<experiment>)."""
    results = root / "results"
    write_fake_cells(results)
    assert collect.main(["--results", str(results)]) == 0
    return results


OUTPUTS = ["cells.csv", "cells.parquet", "epochs.csv", "epochs.parquet", "excluded.csv", "metrics.json"]


def outputs_of(results: Path) -> list[Path]:
    """What collect wrote under a results folder (its inputs, cells/ and expected_cells.json, and the output
    manifest left out); the manifest lists exactly these files as collect's."""
    files = sorted(p.relative_to(results) for p in results.rglob("*")
                   if p.is_file() and p.relative_to(results).parts[0] not in ("cells", "expected_cells.json", MANIFEST))
    listed = json.loads((results / MANIFEST).read_text())["files"]
    assert sorted(k for k, w in listed.items() if w == "collect") == [f.as_posix() for f in files]
    return files


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return run_collect(tmp_path_factory.mktemp("collect"))


def metrics_of(path: Path) -> dict:
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in {path}"))


# ---- tests ---------------------------------------------------------------------------------------------------


def test_every_cell_keeps_a_row_with_its_status(results):
    cells = pd.read_parquet(results / "cells.parquet")
    expected = json.loads((results / "expected_cells.json").read_text())
    # exactly the current grid: 30 unit cells (one missing) + 12 digits cells; the leftover result is excluded
    assert len(cells) == 42 and cells["cell_id"].is_unique
    assert set(cells["cell_id"]) == {e["cell_id"] for e in expected}
    assert cells["status"].value_counts().to_dict() == {"ok": 39, "diverged": 1, "failed": 1, "missing": 1}
    assert "in_grid" not in cells.columns

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
    assert "no result file" in missing["error"]
    assert missing["recipe"] == "he2016_cifar" and missing["lr"] == 0.1  # config columns filled from expected
    assert missing["code_fingerprint"] == CODE_FP
    assert missing["data_sha256"] == data_identity("cifar10_jpeg")["content_sha256"]
    assert pd.isna(missing["test_acc"]) and pd.isna(missing["epochs_completed"]) and pd.isna(missing["git_commit"])
    assert pd.isna(missing["node_hostname"])

    # the leftover (a seed no longer in the grid) is in no row, but listed with its reason
    assert 7 not in set(cells["seed"])
    excluded = collect.read_table(results / "excluded.csv")
    assert list(excluded.columns) == [c for c, *_ in collect.EXCLUDED_COLUMNS]
    assert list(zip(excluded["model"], excluded["seed"], excluded["status"], excluded["reason"])) == [
        ("resnet18_v2", 7, "ok", "model/dataset/seed not in the current grid")]
    assert not set(excluded["cell_id"]) & set(cells["cell_id"])

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
    assert (r["torch_version"], r["cuda_version"], r["gpu_name"], r["torch_threads"]) == (
        "2.14.1", "12.8", "NVIDIA H100 80GB HBM3", 4)
    assert r["cpu_model"].startswith("AMD EPYC") and r["cpu_count"] == 16 and r["gpu_count"] == 1
    # provenance: the driver's full commit (the trial's own env.git_commit is "unknown"), code, data, node
    assert (r["git_commit"], r["git_dirty"], r["code_fingerprint"], r["data_sha256"]) == (
        COMMIT, False, CODE_FP, data_identity("cifar10_jpeg")["content_sha256"])
    assert (r["node_hostname"], r["aten_cpu_capability"], r["numeric_pinned"]) == ("gpu-node-3", "AVX512", False)
    # bench numbers, with the derived MiB column
    b = bench_numbers(make_config("x", "cifar10_jpeg", r["version"], r["unit"], int(r["depth"]), 0))
    assert r["bench_train_img_per_s"] == pytest.approx(b["train_img_per_s"])
    assert r["bench_infer_img_per_s_iqr"] == pytest.approx(b["infer_img_per_s_iqr"])
    assert r["peak_mem_bytes"] == b["peak_mem_bytes"] and r["peak_mem_mib"] == pytest.approx(40 + 6 * r["depth"])
    assert r["peak_mem_source"] == "torch.cuda.max_memory_allocated" and pd.isna(r["bench_error"])
    d = cells[(cells["dataset"] == "digits") & (cells["status"] == "ok")].iloc[0]
    assert (d["device"], d["amp"], d["threads"], d["width"]) == ("cpu", "none", 1, 8) and pd.isna(d["gpu_name"])
    assert (d["node_hostname"], d["aten_cpu_capability"], d["numeric_pinned"]) == ("cpu-node-1", "AVX2", True)
    assert d["data_sha256"] == data_identity("digits")["content_sha256"]
    # a failure record has git and node provenance but no numeric environment
    f = cells[cells["status"] == "failed"].iloc[0]
    assert (f["git_commit"], f["node_hostname"]) == (COMMIT, "cpu-node-1")
    assert pd.isna(f["aten_cpu_capability"]) and pd.isna(f["numeric_pinned"])
    # integers stay integers, the schema does not depend on which cells finished
    dtypes = {c: str(t) for c, t in cells.dtypes.items()}
    assert dtypes["params"] == dtypes["depth"] == dtypes["peak_mem_bytes"] == "Int64"
    assert dtypes["test_acc"] == "float64" and dtypes["nesterov"] == "boolean"
    assert dtypes["git_dirty"] == dtypes["numeric_pinned"] == "boolean"


def _with_git(rec, *, provenance_git="keep", env_commit="keep"):
    rec = json.loads(json.dumps(rec))
    if provenance_git is None:
        del rec["provenance"]
    elif provenance_git != "keep":
        rec["provenance"]["git"] = provenance_git
    if env_commit != "keep":
        rec["env"]["git_commit"] = env_commit
    return rec


@pytest.mark.parametrize("provenance_git, env_commit, commit, dirty", [
    # the driver's provenance wins over the trial's own lookup
    ("keep", "unknown", COMMIT, False),
    ("keep", "0" * 40 + "-dirty", COMMIT, False),
    ({"commit": COMMIT, "dirty": True, "diff_sha256": "ab" * 32}, "unknown", COMMIT, True),
    # records from before provenance: env.git_commit is '<sha>[-dirty]' or 'unknown'
    (None, COMMIT, COMMIT, False),
    (None, COMMIT + "-dirty", COMMIT, True),
    (None, "unknown", None, None),
    # a sweep outside git
    ({"commit": None, "dirty": None, "diff_sha256": None}, "unknown", None, None),
])
def test_git_commit_and_dirty_flag_from_provenance_or_legacy_env(provenance_git, env_commit, commit, dirty):
    rec = make_record(make_config("e", "digits", "v1", "original", 18, 0, device="cpu"), acc=0.9)
    row = collect.cells_table([_with_git(rec, provenance_git=provenance_git, env_commit=env_commit)]).iloc[0]
    assert (None if pd.isna(row["git_commit"]) else row["git_commit"]) == commit
    assert (None if pd.isna(row["git_dirty"]) else bool(row["git_dirty"])) == dirty


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

    excluded = collect.read_table(results / "excluded.csv")
    assert list(excluded["reason"]) == sorted(excluded["reason"])


def test_unit_order_is_the_model_zoo_order():
    from resnet_bench.vocab import UNITS, VERSION_UNIT

    assert collect.UNIT_ORDER == tuple(UNITS) and collect.VERSION_UNIT == VERSION_UNIT


def test_epochs_keep_partial_curves_and_curves_average_ok_seeds(results):
    epochs = pd.read_parquet(results / "epochs.parquet")
    # 41 current results: 39 ok with 3 epochs each, the failed one with 1, the diverged one with 2
    assert len(epochs) == 39 * 3 + 1 + 2
    assert epochs.groupby("status").size().to_dict() == {"diverged": 2, "failed": 1, "ok": 117}
    diverged = epochs[epochs["status"] == "diverged"].sort_values("epoch")
    assert list(diverged["epoch"]) == [1, 2] and np.isnan(diverged["train_loss"].iloc[-1])
    excluded = collect.read_table(results / "excluded.csv")
    assert not set(epochs["cell_id"]) & set(excluded["cell_id"])
    # per-epoch step count and test curve
    last = epochs[(epochs["status"] == "ok") & (epochs["epoch"] == 3)]
    cells = pd.read_parquet(results / "cells.parquet").set_index("cell_id")
    assert (last["iteration"] == 300).all() and str(epochs["iteration"].dtype) == "Int64"
    np.testing.assert_allclose(last["test_acc"], cells.loc[last["cell_id"], "test_acc"])
    np.testing.assert_allclose(last["test_loss"], 0.3)
    first = epochs[epochs["epoch"] == 1]
    np.testing.assert_allclose(first["test_loss"], 2.2 * 2 / 3 + 0.3)

    files = sorted(p.name for p in (results / "curves").glob("*.csv"))
    # one long-format file per dataset; depths where v1 (unit a) or v2 (unit e) is ok: 110, 164 and digits 18, 50, 101
    assert files == ["cifar10_jpeg.csv", "digits.csv"]
    curve = collect.read_table(results / "curves" / "cifar10_jpeg.csv")
    assert list(curve.columns) == [c for c, *_ in collect.CURVE_COLUMNS]
    assert sorted(set(curve["depth"])) == [110, 164] and set(curve["network"]) == {"ResNet-110", "ResNet-164"}
    d110 = curve[curve["depth"] == 110]
    assert len(d110) == 2 * 2 * 3 and set(d110["n_seeds"]) == {3}  # version x split x epoch, 3 seeds each
    last = d110[d110["epoch"] == 3].set_index(["version", "split"])["error_pct"]
    # val_acc at the last epoch equals the test accuracy in the generator: v1 (unit a) 7.0%, v2 (unit e) 6.8% error;
    # the ablation units (b)-(d) (8.5, 8.0, 7.1%) are in no curve
    assert last["v1", "validation"] == pytest.approx(7.0) and last["v2", "validation"] == pytest.approx(6.8)
    assert last["v1", "train"] == pytest.approx(7.0)  # train_acc = acc at the last epoch
    digits = collect.read_table(results / "curves" / "digits.csv")
    assert sorted(set(digits["depth"])) == [18, 50, 101]
    # v1 at depth 101 has no ok seed (one diverged, one failed): no v1 rows there, v2's are
    d101 = digits[digits["depth"] == 101]
    assert set(d101["version"]) == {"v2"} and set(d101["n_seeds"]) == {2}
    # the excluded seed 7 (acc 0.95) is in no curve: v2 at 18 averages seeds 0 and 1 (both 0.94)
    d18 = digits[(digits["depth"] == 18) & (digits["version"] == "v2") & (digits["split"] == "validation")]
    assert set(d18["n_seeds"]) == {2} and d18["error_pct"].iloc[-1] == pytest.approx(6.0)


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
    # excluded.csv reads back with its own documented types
    excluded = collect.read_table(results / "excluded.csv")
    assert list(excluded.columns) == [c for c, *_ in collect.EXCLUDED_COLUMNS]
    assert str(excluded["depth"].dtype) == "Int64" and excluded["reason"].notna().all()
    assert list(pd.read_csv(results / "excluded.csv")["cell_id"]) == list(excluded["cell_id"])


def _flat_keys(d: dict, prefix="") -> list[str]:
    out = []
    for k, v in d.items():
        out += _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def test_every_column_is_documented(results):
    doc = (REPO / "docs" / "results_schema.md").read_text()
    assert doc == collect.schema_doc(), "regenerate: python -m resnet_bench.collect --schema-doc > docs/results_schema.md"
    tables = [pd.read_parquet(results / "cells.parquet"), pd.read_parquet(results / "epochs.parquet"),
              pd.read_csv(results / "excluded.csv"), pd.read_csv(next((results / "curves").glob("*.csv")))]
    for df in tables:
        for col in df.columns:
            assert f"| `{col}` |" in doc, f"column {col} is not documented"
    assert "excluded.csv" in doc
    metrics = metrics_of(results / "metrics.json")
    # every key follows a documented pattern
    patterns = [r"[^.]+\.(v1_acc|v2_acc|v2-v1_pp|ci95_pp)", r"ok", r"not_ok"]
    for key in _flat_keys(metrics):
        assert any(re.fullmatch(p, key) for p in patterns), key
    for key in (*collect.HEADLINE_DATASET_KEYS, *collect.HEADLINE_COUNT_KEYS):
        assert f"`{key}`" in doc or f".{key}`" in doc, key
    # each documented column says its type and unit
    for col, dtype, unit, meaning in [*collect.CELL_COLUMNS, *collect.EPOCH_COLUMNS, *collect.EXCLUDED_COLUMNS]:
        assert dtype in collect.DTYPES and unit and meaning


def _t_interval(values):
    v = np.asarray(values, dtype=float)
    return stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))


def test_metrics_json_headline_numbers(results):
    metrics = metrics_of(results / "metrics.json")
    # per dataset, then the counts (39 ok; 1 diverged + 1 failed + 1 missing); key order is exp show's column order
    assert list(metrics) == ["cifar10_jpeg", "digits", "ok", "not_ok"]
    assert (metrics["ok"], metrics["not_ok"]) == (39, 3)
    assert all(list(metrics[ds]) == list(collect.HEADLINE_DATASET_KEYS) for ds in ("cifar10_jpeg", "digits"))
    approx2 = lambda x: pytest.approx(x, abs=0.005)  # noqa: E731  (written rounded to 2 decimals, pp)
    approx4 = lambda x: pytest.approx(x, abs=0.00005)  # noqa: E731  (4 decimals, fraction)
    # mean over depths of the mean test accuracy over ok seeds, units (a)/(e) only (the ablation units stay in
    # cells.csv); the excluded seed 7 (0.95) is not in digits v2 d18; v1-101 has no ok seed (one diverged, one
    # failed), so digits v1 is the mean of d18 and d50
    assert metrics["cifar10_jpeg"]["v1_acc"] == approx4(((1 - 0.070) + (1 - 0.063)) / 2)
    assert metrics["cifar10_jpeg"]["v2_acc"] == approx4(((1 - 0.068) + (1 - 0.059)) / 2)
    assert metrics["digits"]["v1_acc"] == approx4((0.905 + 0.86) / 2)
    assert metrics["digits"]["v2_acc"] == approx4((0.94 + 0.925 + 0.855) / 3)
    # paired over (depth, seed): cifar 0.2 pp at 110 and 0.4 pp at 164 (3 seeds each); digits 4, 3, 7, 6 pp
    for ds, values in (("cifar10_jpeg", [0.2] * 3 + [0.4] * 3), ("digits", [4.0, 3.0, 7.0, 6.0])):
        lo, hi = _t_interval(values)
        assert metrics[ds]["v2-v1_pp"] == approx2(np.mean(values)), ds
        assert metrics[ds]["ci95_pp"] == approx2((hi - lo) / 2), ds


def test_a_dataset_named_like_a_count_keeps_its_numbers_apart():
    cells = collect.cells_table([make_record(make_config("smoke", "ok", v, VERSION_UNIT[v], 18, 0, recipe="quick",
                                                         device="cpu"), acc=0.9) for v in ("v1", "v2")])
    metrics = collect.headline_metrics(cells)
    assert metrics["ok"] == 2 and metrics["dataset_ok"]["v1_acc"] == pytest.approx(0.9)


def test_collect_is_deterministic(tmp_path):
    a, b = run_collect(tmp_path / "a"), run_collect(tmp_path / "b")
    files = outputs_of(a)
    assert [str(f) for f in files if f.parts[0] != "curves"] == OUTPUTS and len(files) == len(OUTPUTS) + 2
    assert outputs_of(b) == files
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_stale_curves_are_removed_and_no_expected_file_is_fine(tmp_path, capsys):
    cells, _ = write_fake_cells(tmp_path)
    out = tmp_path / "results"
    assert collect.main(["--cells", str(cells), "--out", str(out), "--expected", str(tmp_path / "nope.json")]) == 0
    assert "nope.json not found" in capsys.readouterr().err
    # without the grid, every result file is a row (the 41 current ones and the leftover) and none is missing
    table = pd.read_parquet(out / "cells.parquet")
    assert len(table) == 42 and "missing" not in set(table["status"]) and 7 in set(table["seed"])
    excluded = collect.read_table(out / "excluded.csv")
    assert len(excluded) == 0 and list(excluded.columns) == [c for c, *_ in collect.EXCLUDED_COLUMNS]
    assert metrics_of(out / "metrics.json")["not_ok"] == 2  # 1 diverged + 1 failed; no grid, so nothing missing
    # a dataset no longer in the results leaves no stale curve (collect's own earlier file)
    gone = out / "curves" / "cifar10_jpeg.csv"
    assert gone.exists()
    for path in cells.glob("*.json"):
        if json.loads(path.read_text())["config"]["dataset"] == "cifar10_jpeg":
            path.unlink()
    assert collect.main(["--cells", str(cells), "--out", str(out), "--expected", str(tmp_path / "nope.json")]) == 0
    capsys.readouterr()
    assert not gone.exists() and (out / "curves" / "digits.csv").exists()
    # a file collect did not write refuses the folder before anything is read or written
    (out / "curves" / "my_notes.csv").write_text("epoch,val_acc\n1,0.5\n")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert collect.main(["--cells", str(cells), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds curves/my_notes.csv, which resnet-bench collect did not write" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_empty_cells_folder_gives_empty_tables_with_the_schema(tmp_path):
    assert collect.main(["--cells", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 0
    cells = pd.read_parquet(tmp_path / "r" / "cells.parquet")
    assert len(cells) == 0 and list(cells.columns) == [c for c, *_ in collect.CELL_COLUMNS]
    assert str(cells["depth"].dtype) == "Int64"
    metrics = metrics_of(tmp_path / "r" / "metrics.json")
    assert metrics == {"ok": 0, "not_ok": 0}
    assert len(collect.read_table(tmp_path / "r" / "excluded.csv")) == 0


def _edited(mutate) -> str:
    rec = make_record(make_config("e", "digits", "v1", "original", 18, 0, device="cpu"), acc=0.9)
    mutate(rec)
    return json.dumps(rec)


# A few representative faults (tests/test_hostile_inputs.py has the full table, through every reader).
@pytest.mark.parametrize("content, fault", [
    ('{"status": "ok", "cell_id": "bad"', "not valid JSON (Expecting"),
    ("[1, 2]", "(top level): [1, 2] is invalid: Input should be a valid dictionary"),
    ('{"cell_id": "0123456789ab", "status": "ok"}', "config: missing (required)"),
    (_edited(lambda r: r.update(status="done")), "status: 'done' is invalid"),
    (_edited(lambda r: r["config"].update(depth="18")), "config.depth: '18' is invalid: Input should be a valid "
                                                        "integer"),
    (_edited(lambda r: r["metrics"].update(test_acc=5.0)), "metrics.test_acc: 5.0 is invalid: Input should be less "
                                                           "than or equal to 1"),
    (_edited(lambda r: r["epochs"].append({"loss": 1})), "epochs.3.epoch: missing (required)"),
])
def test_malformed_cell_result_is_an_error_naming_the_file(tmp_path, capsys, content, fault):
    cells, _ = write_fake_cells(tmp_path)
    bad = cells / "0123456789ab.json"
    bad.write_text(content)
    assert collect.main(["--cells", str(cells), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: malformed cell result {bad}: " in err and fault in err, err
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
    assert collect.main(["--results", str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    assert f"malformed expected-cells file {expected}: item 0: config" in capsys.readouterr().err
    assert not (tmp_path / "r" / "cells.csv").exists()


def test_python_dash_m_entry_point(tmp_path):
    results = tmp_path / "results" / "smoke"
    write_fake_cells(results)
    proc = subprocess.run([sys.executable, "-m", "resnet_bench.collect", "--results", str(results)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"collected 42 cells (ok 39, diverged 1, failed 1, missing 1), 120 epoch rows, 1 excluded -> {results}",
        "  excluded 1: model/dataset/seed not in the current grid"]
    assert metrics_of(results / "metrics.json")["ok"] == 39


# ---- issue 10: only the current grid and code is aggregated; NaN, null and diverged cells are counted ---------


def digits_config(version, depth, seed, **kw):
    return make_config("smoke", "digits", version, VERSION_UNIT[version], depth, seed, recipe="quick", device="cpu",
                       **kw)


# The stale-recipe scenario: v2 is truly +0.5 pp better than v1 in the current (3-epoch) recipe, paired over
# (depth, seed) with some spread; the leftovers of an older 1-epoch recipe (different cell ids, not in
# expected_cells.json) have v1 far ahead.
STALE_V1 = {(18, 0): 0.800, (18, 1): 0.812, (18, 2): 0.795, (50, 0): 0.830, (50, 1): 0.821, (50, 2): 0.840}
STALE_DIFF_PP = {(18, 0): 0.3, (18, 1): 0.5, (18, 2): 0.7, (50, 0): 0.2, (50, 1): 0.5, (50, 2): 0.8}


def test_stale_recipe_cells_are_excluded_and_the_true_difference_is_reported(tmp_path, capsys):
    current, old = [], []
    for (depth, seed), v1 in STALE_V1.items():
        for version, acc in (("v1", v1), ("v2", v1 + STALE_DIFF_PP[depth, seed] / 100)):
            current.append(make_record(digits_config(version, depth, seed), acc=acc))
        for version, acc in (("v1", 0.90 + seed / 1000), ("v2", 0.40 - seed / 100)):
            old.append(make_record(digits_config(version, depth, seed, epochs=1), acc=acc, n_epochs=1))
    assert not {r["cell_id"] for r in current} & {r["cell_id"] for r in old}
    # the trap is real: averaging every file on disk puts v1 far ahead
    everything = current + old
    naive = 100 * (np.mean([r["metrics"]["test_acc"] for r in everything if r["config"]["version"] == "v2"])
                   - np.mean([r["metrics"]["test_acc"] for r in everything if r["config"]["version"] == "v1"]))
    assert naive < -20
    results = write_cells(tmp_path / "results" / "smoke", everything,
                          [{"cell_id": r["cell_id"], "config": r["config"]} for r in current])
    assert collect.main(["--results", str(results)]) == 0
    assert "12 excluded" in capsys.readouterr().out

    cells = pd.read_parquet(results / "cells.parquet")
    assert sorted(cells["cell_id"]) == sorted(r["cell_id"] for r in current)
    assert (cells["status"] == "ok").all() and (cells["epochs"] == N_EPOCHS).all()
    excluded = collect.read_table(results / "excluded.csv")
    assert sorted(excluded["cell_id"]) == sorted(r["cell_id"] for r in old)
    assert (excluded["reason"] == "recipe differs").all() and (excluded["status"] == "ok").all()
    epochs = pd.read_parquet(results / "epochs.parquet")
    assert set(epochs["cell_id"]) == set(cells["cell_id"]) and len(epochs) == 12 * N_EPOCHS

    metrics = metrics_of(results / "metrics.json")
    assert (metrics["ok"], metrics["not_ok"]) == (12, 0)
    diff = metrics["digits"]
    assert diff["v2-v1_pp"] == pytest.approx(0.5, abs=0.005)
    lo, hi = _t_interval(list(STALE_DIFF_PP.values()))
    assert diff["ci95_pp"] == pytest.approx((hi - lo) / 2, abs=0.005) and 0 < 0.5 - diff["ci95_pp"]
    v1 = np.mean([STALE_V1[d, s] for d in (18, 50) for s in range(3)])
    assert diff["v1_acc"] == pytest.approx(v1, abs=5e-5)
    assert diff["v2_acc"] == pytest.approx(v1 + np.mean(list(STALE_DIFF_PP.values())) / 100, abs=5e-5)
    assert sorted(p.name for p in (results / "curves").glob("*.csv")) == ["digits.csv"]
    curve = collect.read_table(results / "curves" / "digits.csv")
    for (depth, version, split), t in curve.groupby(["depth", "version", "split"]):
        assert list(t["epoch"]) == [1, 2, 3], (depth, version, split)  # no 1-epoch cell of the old recipe
        assert set(t["n_seeds"]) == {3}


@pytest.mark.parametrize("metric", collect.REQUIRED_OK_METRICS)
@pytest.mark.parametrize("bad", [float("nan"), None, float("inf"), "absent"])
def test_an_ok_record_with_a_non_finite_metric_is_refused_naming_it(metric, bad):
    rec = make_record(digits_config("v1", 18, 0), acc=0.9)
    good = collect.cells_table([rec]).iloc[0]
    assert good["status"] == "ok" and pd.isna(good["error"])  # the control: the unmodified record is ok
    if bad == "absent":
        del rec["metrics"][metric]
    else:
        rec["metrics"][metric] = bad
    with pytest.raises(RecordError, match=rf"metrics\.{metric}") as err:
        collect.cells_table([rec])
    assert len(err.value.problems) == 1


def test_nan_and_null_test_acc_are_refused_naming_the_file_and_nothing_is_written(tmp_path, capsys):
    accs = {("v1", 0): 0.90, ("v1", 1): 0.91, ("v2", 0): 0.93, ("v2", 1): 0.95}
    records = [make_record(digits_config(v, 18, s), acc=a) for (v, s), a in accs.items()]
    by_key = {(r["config"]["version"], r["config"]["seed"]): r for r in records}
    by_key["v2", 1]["metrics"]["test_acc"] = float("nan")  # written as a NaN token, as json.dumps does
    by_key["v1", 1]["metrics"]["test_acc"] = None
    results = write_cells(tmp_path / "r", records, [{"cell_id": r["cell_id"], "config": r["config"]} for r in records])
    assert "NaN" in (results / "cells" / f"{by_key['v2', 1]['cell_id']}.json").read_text()
    assert collect.main(["--results", str(results)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(": metrics.test_acc" in line or "but metrics.test_acc is None" in line
                                 for line in err), err
    assert {by_key["v2", 1]["cell_id"], by_key["v1", 1]["cell_id"]} == {
        Path(line.split("malformed cell result ")[1].split(":")[0]).stem for line in err}
    assert not (results / "cells.parquet").exists() and not (results / "metrics.json").exists()


def test_a_diverged_cell_keeps_its_row_and_is_counted(tmp_path):
    records = [make_record(digits_config("v1", 18, 0), acc=0.90), make_record(digits_config("v2", 18, 0), acc=0.93),
               make_record(digits_config("v1", 18, 1), acc=0.91, status="diverged", n_epochs=2),
               make_record(digits_config("v2", 18, 1), acc=0.94)]
    results = write_cells(tmp_path / "r", records, [{"cell_id": r["cell_id"], "config": r["config"]} for r in records])
    assert collect.main(["--results", str(results)]) == 0
    cells = pd.read_parquet(results / "cells.parquet")
    assert len(cells) == 4
    d = cells[cells["status"] == "diverged"]
    assert len(d) == 1 and (d["version"].iloc[0], d["seed"].iloc[0]) == ("v1", 1)
    assert d["error"].iloc[0] == "train loss is nan at epoch 2" and d["epochs_completed"].iloc[0] == 2
    assert np.isnan(d["final_train_loss"].iloc[0])  # a diverged cell is not turned into a failed one
    metrics = metrics_of(results / "metrics.json")
    assert (metrics["ok"], metrics["not_ok"]) == (3, 1)
    assert metrics["digits"]["v1_acc"] == pytest.approx(0.90, abs=5e-5) and metrics["digits"]["ci95_pp"] is None
    epochs = pd.read_parquet(results / "epochs.parquet")
    de = epochs[epochs["status"] == "diverged"]
    assert list(de["epoch"]) == [1, 2] and np.isnan(de["train_loss"].iloc[-1])
    curve = collect.read_table(results / "curves" / "digits.csv").set_index(["version", "split", "epoch"]).sort_index()
    assert set(curve.loc["v1", "n_seeds"]) == {1} and set(curve.loc["v2", "n_seeds"]) == {2}
    assert curve.loc[("v1", "validation", 3), "error_pct"] == pytest.approx(10.0)  # seed 0 only


def test_exclusion_reason_names_what_changed():
    base = digits_config("v1", 18, 0)
    expected = [{"cell_id": c["cell_id"], "config": c} for c in (base, digits_config("v2", 18, 0))]
    code = digits_config("v1", 18, 0, code_fingerprint="0123456789abcdef")
    data = digits_config("v1", 18, 0, data=data_identity("digits", version="2"))
    split = digits_config("v1", 18, 0, data={**data_identity("digits"), "val_fraction": 0.2})
    recipe = digits_config("v1", 18, 0, epochs=1)
    both = digits_config("v1", 18, 0, epochs=1, code_fingerprint="0123456789abcdef")
    seed = digits_config("v1", 18, 5)
    model = digits_config("v1", 34, 0)
    # each differs from its expected twin in exactly what its name says
    for c, part in ((code, "code_fingerprint"), (data, "data"), (split, "data"), (recipe, "recipe")):
        assert [k for k in base if base[k] != c[k] and k != "cell_id"] == [part]
    want = {code["cell_id"]: "training code changed", data["cell_id"]: "prepared data changed",
            split["cell_id"]: "prepared data changed", recipe["cell_id"]: "recipe differs",
            both["cell_id"]: "training code changed; recipe differs",
            seed["cell_id"]: "model/dataset/seed not in the current grid",
            model["cell_id"]: "model/dataset/seed not in the current grid"}
    assert len(want) == 7
    records = [make_record(c, acc=0.9) for c in (base, code, data, split, recipe, both, seed, model)]
    current, excluded = collect.split_current(records, expected)
    assert [r.cell_id for r in current] == [base["cell_id"]]
    assert dict(zip(excluded["cell_id"], excluded["reason"])) == want
    assert list(excluded.columns) == [c for c, *_ in collect.EXCLUDED_COLUMNS]
    # without the grid nothing is excluded, and two results of one model, dataset and seed are refused:
    # both would be averaged as two seeds
    current, excluded = collect.split_current([records[i] for i in (0, 6, 7)], None)
    assert len(current) == 3 and len(excluded) == 0
    with pytest.raises(collect.CollectError, match=rf"cells {base['cell_id']} and {code['cell_id']} are both "
                                                   r"resnet18_v1/digits/seed0 with different configs"):
        collect.split_current(records, None)


def test_main_with_a_results_folder_end_to_end(tmp_path, capsys):
    results = tmp_path / "results" / "smoke"
    grid = [digits_config(v, 18, s) for v in ("v1", "v2") for s in (0, 1)]
    accs = {("v1", 0): 0.90, ("v1", 1): 0.91, ("v2", 0): 0.93, ("v2", 1): 0.95}
    current = [make_record(c, acc=accs[c["version"], c["seed"]]) for c in grid[:-1]]  # v2 seed 1: not run yet
    leftovers = [make_record(digits_config("v1", 18, 0, code_fingerprint="0123456789abcdef"), acc=0.5),
                 make_record(digits_config("v2", 18, 0, data=data_identity("digits", version="2")), acc=0.5),
                 make_record(digits_config("v1", 18, 1, epochs=1), acc=0.5, n_epochs=1)]
    write_cells(results, current + leftovers, [{"cell_id": c["cell_id"], "config": c} for c in grid])
    inputs = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    assert len(inputs) == 7

    assert collect.main(["--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"collected 4 cells (ok 3, diverged 0, failed 0, missing 1), 9 epoch rows, 3 excluded -> {results}",
        "  excluded 1: prepared data changed", "  excluded 1: recipe differs", "  excluded 1: training code changed"]
    # the tables are written into the results folder, next to the untouched inputs
    assert [str(p) for p in outputs_of(results)] == ["cells.csv", "cells.parquet", "curves/digits.csv",
                                                     "epochs.csv", "epochs.parquet", "excluded.csv", "metrics.json"]
    assert {p: p.read_bytes() for p in inputs} == inputs
    cells = collect.read_table(results / "cells.csv")
    assert list(cells["status"]) == ["ok", "ok", "ok", "missing"] and sorted(cells["cell_id"]) == sorted(
        c["cell_id"] for c in grid)
    excluded = pd.read_csv(results / "excluded.csv")
    assert list(excluded.columns) == [c for c, *_ in collect.EXCLUDED_COLUMNS]
    assert dict(zip(excluded["cell_id"], excluded["reason"])) == {
        leftovers[0]["cell_id"]: "training code changed", leftovers[1]["cell_id"]: "prepared data changed",
        leftovers[2]["cell_id"]: "recipe differs"}
    assert list(excluded["reason"]) == sorted(excluded["reason"])
    assert len(pd.read_parquet(results / "epochs.parquet")) == 3 * N_EPOCHS
    metrics = metrics_of(results / "metrics.json")
    assert (metrics["ok"], metrics["not_ok"]) == (3, 1)
    assert metrics["digits"]["v2-v1_pp"] == pytest.approx(3.0, abs=0.005)

    # --cells/--expected/--out override the folder's defaults; the same inputs give the same bytes
    other = tmp_path / "other"
    assert collect.main(["--results", str(tmp_path / "nowhere"), "--cells", str(results / "cells"),
                         "--expected", str(results / "expected_cells.json"), "--out", str(other)]) == 0
    assert outputs_of(other) == outputs_of(results)
    for f in outputs_of(results):
        assert (other / f).read_bytes() == (results / f).read_bytes(), f
    assert not (tmp_path / "nowhere").exists()
    # nothing to read: a usage error, nothing written
    capsys.readouterr()
    assert collect.main([]) == 2 and collect.main(["--cells", str(results / "cells")]) == 2
    assert "give --results DIR" in capsys.readouterr().err
