"""The `collect` stage: every cell result into tidy pandas tables.

Reads an experiment's results folder, `results/<experiment>/`: its
`cells/<cell_id>.json` (the cell-result contract of docs/ARCHITECTURE.md) and
the sweep's `expected_cells.json` (the current grid, code and data), and
writes there:

- `cells.csv`, `cells.parquet`: one row per cell of the current grid (config,
  final metrics, status and error, provenance). Failed, diverged and missing
  cells keep their row; nothing is dropped. An `ok` record whose headline
  metric is NaN or null becomes `failed`, with an error naming the metric.
- `excluded.csv`: result files on disk that are not cells of the current grid
  and code (an earlier recipe, code or data version), with the reason; they
  stay on disk and out of every table, mean and figure.
- `epochs.csv`, `epochs.parquet`: one row per cell-epoch (learning curves of
  every cell that recorded epochs, whatever its status).
- `curves/<experiment>__<dataset>__resnet<depth>.csv`: per depth, v1 and v2
  train/validation error (%) per epoch, mean over ok seeds, in fixed columns
  so that dvc.yaml's top-level `plots:` overlays v1 and v2 in one chart.
- `metrics.json`: headline numbers for `dvc metrics show`.

Every column is declared once in `CELL_COLUMNS` / `EPOCH_COLUMNS` / `CURVE_COLUMNS`
(name, dtype, unit, meaning): the tables' column order and dtypes and
docs/results_schema.md (`python -m resnet_bench.collect --schema-doc`) all come
from there, so the schema does not depend on which cells happened to finish.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from resnet_bench.argparsing import Parser
from resnet_bench.vocab import CELL_STATUSES as STATUSES
from resnet_bench.vocab import RECORD_STATUSES as RESULT_STATUSES  # what a result file may say
from resnet_bench.vocab import UNITS as UNIT_ORDER  # He et al. 2016 Fig. 4 order (a)-(e)
from resnet_bench.vocab import VERSION_UNIT
CONFIG_KEYS = ("experiment", "model", "version", "unit", "depth", "dataset", "seed")

# dtype names: "str" (text, null when absent), "int" (nullable Int64), "float" (float64,
# NaN when absent), "bool" (nullable boolean).
DTYPES = {"str": "str", "int": "Int64", "float": "float64", "bool": "boolean"}

# (column, dtype, unit, meaning). The order here is the column order of the table.
CELL_COLUMNS: list[tuple[str, str, str, str]] = [
    # identity and outcome
    ("cell_id", "str", "-", "stable id: first 12 hex digits of the SHA-256 of the resolved config "
                            "(experiment label excluded) and of its data and code identity; the result file is `results/<experiment>/cells/<cell_id>.json`"),
    ("status", "str", "-", "`ok` | `diverged` (non-finite training loss; a result, not retried) | "
                           "`failed` (exception, see `error`) | `missing` (in expected_cells.json, no result file)"),
    ("error", "str", "-", "error text (type, message, traceback tail) of a failed or diverged cell; "
                          "for a missing cell why it is missing; null for ok cells"),
    # config
    ("experiment", "str", "-", "experiment name (`experiments/<name>.yaml`)"),
    ("dataset", "str", "-", "prepared dataset name (`data/prepared/<name>`)"),
    ("model", "str", "-", "registered model name, e.g. `resnet50_v2`"),
    ("version", "str", "-", "`v1` (post-activation, He et al. 2015) or `v2` (full pre-activation, He et al. "
                            "2016); ablation units (b)-(d) are labelled v1"),
    ("unit", "str", "-", "residual unit of He et al. 2016 Fig. 4: `original` (a), `bn_after_add` (b), "
                         "`relu_before_add` (c), `relu_only_preact` (d), `full_preact` (e)"),
    ("depth", "int", "layers", "number of weighted layers (18, 50, 110, 164, ...)"),
    ("seed", "int", "-", "training seed (Python, NumPy, torch)"),
    ("stem", "str", "-", "`imagenet` (7x7/2 conv + max-pool) or `cifar` (3x3/1 conv)"),
    ("width", "int", "channels", "base channels; null = the family's default (64 ImageNet, 16 CIFAR)"),
    ("zero_init_residual", "bool", "-", "last BN of each residual branch initialised to zero"),
    ("variant", "str", "-", "`modern` (torchvision/timm networks) or `paper` (the networks of He et al. "
                            "2015/2016 as their authors' code builds them)"),
    ("shortcut", "str", "-", "`zero_pad` (option A identity) or `projection` (option B), as built"),
    ("bottleneck_stride", "str", "-", "conv carrying a bottleneck's stride: `1x1` (the papers') or `3x3` "
                                      "(torchvision V1.5)"),
    ("recipe", "str", "-", "named training recipe (`resnet_bench.config.RECIPES`)"),
    ("optimizer", "str", "-", "optimiser (`sgd`)"),
    ("epochs", "int", "epochs", "epochs requested"),
    ("batch_size", "int", "images", "training batch size"),
    ("lr", "float", "-", "peak learning rate"),
    ("momentum", "float", "-", "SGD momentum"),
    ("nesterov", "bool", "-", "Nesterov momentum"),
    ("weight_decay", "float", "-", "L2 weight decay (SGD)"),
    ("schedule", "str", "-", "learning-rate schedule: `step` | `cosine` | `onecycle` | `constant`"),
    ("milestones", "str", "fraction of training", "step-schedule milestones as JSON, e.g. `[0.5, 0.75]`"),
    ("gamma", "float", "-", "step-schedule decay factor"),
    ("warmup_iters", "int", "iterations", "warm-up iterations at `warmup_lr`"),
    ("warmup_lr", "float", "-", "warm-up learning rate"),
    ("label_smoothing", "float", "-", "cross-entropy label smoothing"),
    ("crop_pad", "int", "pixels", "zero padding before the random crop (0 = no crop augmentation)"),
    ("flip", "bool", "-", "random horizontal flip"),
    ("device", "str", "-", "`cpu` or `cuda`"),
    ("amp", "str", "-", "autocast dtype: `none` | `bf16` | `fp16` (CPU runs: `none`, float32)"),
    ("channels_last", "bool", "-", "NHWC memory format"),
    ("compile", "bool", "-", "`torch.compile` used"),
    ("threads", "int", "threads", "torch CPU threads requested by the config (CPU runs)"),
    ("deterministic", "bool", "-", "deterministic algorithms requested (cuDNN benchmark off)"),
    ("bench_enabled", "bool", "-", "the isolated bench pass was requested for this cell"),
    # dataset (from the record's dataset_meta, when present)
    ("num_classes", "int", "classes", "number of classes of the dataset"),
    ("n_train", "int", "images", "training images (after the validation hold-out)"),
    ("n_val", "int", "images", "validation images"),
    ("n_test", "int", "images", "test images"),
    # final metrics
    ("test_acc", "float", "fraction 0..1", "test top-1 accuracy of the final model"),
    ("test_error_pct", "float", "%", "test top-1 error, 100 x (1 - test_acc)"),
    ("test_top5_acc", "float", "fraction 0..1", "test top-5 accuracy (null under 100 classes)"),
    ("test_loss", "float", "nats", "test cross-entropy"),
    ("best_val_acc", "float", "fraction 0..1", "best validation top-1 accuracy over epochs"),
    ("best_val_epoch", "int", "epoch", "epoch of best_val_acc (1-based)"),
    ("final_val_acc", "float", "fraction 0..1", "validation top-1 accuracy after the last epoch"),
    ("final_train_loss", "float", "nats", "mean training loss of the last epoch"),
    ("epochs_completed", "int", "epochs", "epochs trained"),
    ("train_time_s", "float", "s", "wall time of training and evaluation"),
    ("wall_s", "float", "s", "wall time of the whole cell (data loading included)"),
    ("train_img_per_s", "float", "images/s", "training-loop throughput incl. on-device augmentation, mean over "
                                             "epochs (concurrent cells may share the device: compare models "
                                             "with bench_train_img_per_s)"),
    ("params", "int", "parameters", "trainable parameters"),
    ("fwd_gflops", "float", "GFLOP/image", "forward FLOPs per image at the dataset's input size, "
                                           "FLOPs = 2 x multiply-accumulates"),
    ("bench_train_img_per_s", "float", "images/s", "train-step throughput (forward + backward + SGD step) from "
                                                   "the isolated bench pass, median over repeats"),
    ("bench_train_img_per_s_iqr", "float", "images/s", "interquartile range of the bench train throughput"),
    ("bench_infer_img_per_s", "float", "images/s", "inference throughput (eval mode) from the isolated bench "
                                                   "pass, median over repeats"),
    ("bench_infer_img_per_s_iqr", "float", "images/s", "interquartile range of the bench inference throughput"),
    ("bench_batch_size", "int", "images", "batch the bench pass used (after any out-of-memory halving)"),
    ("peak_mem_bytes", "int", "bytes", "peak training memory: CUDA max_memory_allocated; on CPU saved "
                                       "activations + parameters + gradients + optimiser state"),
    ("peak_mem_mib", "float", "MiB", "peak_mem_bytes / 2^20"),
    ("peak_mem_source", "str", "-", "how peak_mem_bytes was measured (from the bench record)"),
    ("saved_activation_bytes", "int", "bytes", "bytes autograd saves for backward at the bench batch"),
    ("peak_rss_bytes", "int", "bytes", "peak resident set size of the bench process"),
    ("bench_error", "str", "-", "error of the bench pass, null when it succeeded or did not run"),
    # environment
    ("git_commit", "str", "-", "full commit of the code that produced the cell (null outside git)"),
    ("git_dirty", "bool", "-", "tracked files differed from git_commit when the sweep started"),
    ("code_fingerprint", "str", "-", "hash of the training code (resnet_bench.env.code_fingerprint); part of "
                                     "the cell id"),
    ("data_sha256", "str", "-", "content hash of the prepared dataset; part of the cell id"),
    ("node_hostname", "str", "-", "host that trained the cell"),
    ("aten_cpu_capability", "str", "-", "CPU kernel level torch dispatched to (e.g. AVX2, AVX512)"),
    ("numeric_pinned", "bool", "-", "a numeric pin was in effect (deterministic CPU; see numeric_pin)"),
    ("numeric_pin", "str", "-", "deterministic CPU pin level in effect: portable (same bits on any AVX2 x86-64 "
                                "CPU) or host (same CPU model only); null when none"),
    ("mkl_cbwr_branch", "str", "-", "oneMKL code branch in effect (mkl_cbwr_get: COMPATIBLE, AUTO, AVX2, OFF)"),
    ("onednn_enabled", "bool", "-", "torch.backends.mkldnn.enabled while training (oneDNN convolutions)"),
    ("torch_version", "str", "-", "torch version"),
    ("cuda_version", "str", "-", "CUDA version torch was built with; null on CPU-only machines"),
    ("python_version", "str", "-", "Python version"),
    ("platform", "str", "-", "operating system / kernel (`platform.platform()`)"),
    ("cpu_model", "str", "-", "CPU model name"),
    ("cpu_count", "int", "CPUs", "logical CPUs of the machine"),
    ("gpu_name", "str", "-", "GPU name; null on CPU"),
    ("gpu_count", "int", "GPUs", "GPUs visible to the process"),
    ("torch_threads", "int", "threads", "torch intra-op threads while training"),
    ("started_at", "str", "UTC, ISO-8601", "start time of the cell"),
    ("finished_at", "str", "UTC, ISO-8601", "end time of the cell"),
]
EPOCH_KEY_COLUMNS = ["cell_id", "status", "experiment", "dataset", "model", "version", "unit", "depth", "seed"]
EPOCH_FIELDS: list[tuple[str, str, str, str]] = [
    ("epoch", "int", "epoch", "epoch, 1-based"),
    ("train_loss", "float", "nats", "mean training cross-entropy over the epoch (NaN/inf when diverged)"),
    ("train_acc", "float", "fraction 0..1", "training top-1 accuracy over the epoch (augmented batches)"),
    ("val_loss", "float", "nats", "validation cross-entropy after the epoch"),
    ("val_acc", "float", "fraction 0..1", "validation top-1 accuracy after the epoch"),
    ("lr", "float", "-", "learning rate at the epoch's last step"),
    ("iteration", "int", "steps", "optimiser steps completed at the end of the epoch"),
    ("test_loss", "float", "nats", "test cross-entropy after the epoch (for curves only; never used to select)"),
    ("test_acc", "float", "fraction 0..1", "test top-1 accuracy after the epoch (for curves only)"),
    ("epoch_s", "float", "s", "wall time of the epoch's training loop"),
    ("train_img_per_s", "float", "images/s", "training-loop throughput of the epoch"),
]
_SPEC = {c: (d, u, m) for c, d, u, m in CELL_COLUMNS}
EPOCH_COLUMNS: list[tuple[str, str, str, str]] = [
    (c, _SPEC[c][0], _SPEC[c][1], "the cell's " + c + (" (join key to cells)" if c == "cell_id" else ""))
    for c in EPOCH_KEY_COLUMNS] + EPOCH_FIELDS
# results/curves: one file per experiment, dataset and depth with v1 and v2 side by side (fixed column names),
# so that dvc.yaml's top-level `plots:` overlays v1 and v2 in one chart per file (dvc plots show / diff).
CURVE_VERSIONS = ("v1", "v2")
CURVE_COLUMNS: list[tuple[str, str, str, str]] = [
    ("epoch", "int", "epoch", "epoch, 1-based"),
    *[(f"{v}_{split}_error", "float", "%", f"{v}: mean over ok seeds of 100 x (1 - {split}_acc) at the epoch; "
       f"empty when no {v} seed is ok") for split in ("train", "val") for v in CURVE_VERSIONS],
    *[(f"{v}_n_seeds", "int", "seeds", f"ok {v} seeds averaged at this epoch") for v in CURVE_VERSIONS],
]
CELL_SORT = ["experiment", "dataset", "version", "unit", "depth", "seed", "cell_id"]
EPOCH_SORT = [*CELL_SORT, "epoch"]

# kept for callers that want the column groups by kind
NUMERIC_COLUMNS = [c for c, d, _, _ in CELL_COLUMNS if d in ("int", "float")]
TEXT_COLUMNS = [c for c, d, _, _ in CELL_COLUMNS if d == "str"]


class CollectError(ValueError):
    """A result or expected-cells file that does not follow the contract."""


# ---- reading and validating ------------------------------------------------------------------------


def validate_config(config, where: str) -> None:
    if not isinstance(config, dict):
        raise CollectError(f"{where}: `config` must be an object, got {type(config).__name__}")
    absent = [k for k in CONFIG_KEYS if k not in config]
    if absent:
        raise CollectError(f"{where}: `config` lacks {', '.join(absent)}")
    for key in ("depth", "seed"):
        if isinstance(config[key], bool) or not isinstance(config[key], int):
            raise CollectError(f"{where}: config.{key} must be an integer, got {config[key]!r}")
    for key in ("experiment", "model", "version", "unit", "dataset"):
        if not isinstance(config[key], str):
            raise CollectError(f"{where}: config.{key} must be a string, got {config[key]!r}")
    if config["unit"] not in UNIT_ORDER:
        raise CollectError(f"{where}: unknown unit {config['unit']!r}; valid: {', '.join(UNIT_ORDER)}")


def validate_record(rec, path: Path) -> dict:
    """The record if it follows the cell-result contract, else a CollectError naming the file and the fault."""
    where = f"malformed cell result {path}"
    if not isinstance(rec, dict):
        raise CollectError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    absent = [k for k in ("cell_id", "status", "config") if k not in rec]
    if absent:
        raise CollectError(f"{where}: missing key(s) {', '.join(absent)}")
    if rec["status"] not in RESULT_STATUSES:
        raise CollectError(f"{where}: status {rec['status']!r} is not one of {', '.join(RESULT_STATUSES)}")
    if rec["cell_id"] != path.stem:
        raise CollectError(f"{where}: cell_id {rec['cell_id']!r} does not match the file name")
    validate_config(rec["config"], where)
    if not isinstance(rec.get("metrics") or {}, dict):
        raise CollectError(f"{where}: `metrics` must be an object")
    epochs = rec.get("epochs") or []
    if not isinstance(epochs, list) or not all(isinstance(e, dict) and isinstance(e.get("epoch"), int)
                                               for e in epochs):
        raise CollectError(f"{where}: `epochs` must be a list of objects with an integer `epoch`")
    return rec


def read_cells(cells_dir: str | Path) -> list[dict]:
    """Every `<cell_id>.json` under cells_dir, sorted by name.

    A malformed file is a CollectError naming it (all malformed files are listed).
    A missing folder reads as no cells (the sweep may not have finished one).
    """
    cells_dir = Path(cells_dir)
    records, errors = [], []
    for path in sorted(cells_dir.glob("*.json")) if cells_dir.is_dir() else []:
        try:
            rec = json.loads(path.read_text())
            records.append(validate_record(rec, path))
        except json.JSONDecodeError as err:
            errors.append(f"malformed cell result {path}: not valid JSON ({err})")
        except CollectError as err:
            errors.append(str(err))
    if errors:
        raise CollectError("\n".join(errors))
    return records


def read_expected(path: str | Path) -> list[dict]:
    """The sweep's list of `{cell_id, config}`; a malformed file is a CollectError naming it."""
    path = Path(path)
    try:
        items = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CollectError(f"malformed expected-cells file {path}: not valid JSON ({err})") from None
    if not isinstance(items, list):
        raise CollectError(f"malformed expected-cells file {path}: expected a list of {{cell_id, config}}")
    for i, item in enumerate(items):
        where = f"malformed expected-cells file {path}, item {i}"
        if not isinstance(item, dict) or not isinstance(item.get("cell_id"), str):
            raise CollectError(f"{where}: expected an object with a string `cell_id`")
        validate_config(item.get("config"), where)
    return items


# ---- rows ------------------------------------------------------------------------------------------------


def _finite_or_none(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _legacy_commit(text):
    """Records before provenance had `env.git_commit` ('<sha>[-dirty]' or 'unknown')."""
    return None if not text or text == "unknown" else str(text).removesuffix("-dirty")


def cell_row(rec: dict) -> dict:
    """One flat row of the cells table from a result record (or a missing cell's stand-in)."""
    c = rec["config"]
    arch, recipe, rt = c.get("arch") or {}, c.get("recipe") or {}, c.get("runtime") or {}
    aug, bench_cfg = recipe.get("augment") or {}, c.get("bench") or {}
    m, bench = rec.get("metrics") or {}, rec.get("bench") or {}
    meta = rec.get("dataset_meta") or {}
    counts = meta.get("counts") or {}
    env = rec.get("env") or {}
    hw, versions = env.get("hardware") or {}, env.get("versions") or {}
    prov = rec.get("provenance") or {}
    git, node, numeric = prov.get("git") or {}, prov.get("node") or {}, prov.get("numeric") or {}
    commit, dirty = git.get("commit"), git.get("dirty")
    if not commit and _legacy_commit(env.get("git_commit")):  # the legacy '<sha>-dirty' says dirty too
        commit, dirty = _legacy_commit(env.get("git_commit")), str(env["git_commit"]).endswith("-dirty")
    epochs = rec.get("epochs") or []
    last = epochs[-1] if epochs else {}
    test_acc = m.get("test_acc")
    peak = m.get("peak_mem_bytes")
    milestones = recipe.get("milestones")
    return {
        "cell_id": rec["cell_id"], "status": rec["status"], "error": rec.get("error"),
        **{k: c.get(k) for k in ("experiment", "dataset", "model", "version", "unit", "depth", "seed")},
        **{k: arch.get(k) for k in ("stem", "width", "zero_init_residual")},
        "variant": arch.get("variant", "modern"), "shortcut": arch.get("shortcut"),
        "bottleneck_stride": arch.get("bottleneck_stride"),
        "recipe": recipe.get("name"),
        **{k: recipe.get(k) for k in ("optimizer", "epochs", "batch_size", "lr", "momentum", "nesterov",
                                      "weight_decay", "schedule")},
        "milestones": None if milestones is None else json.dumps(milestones),
        **{k: recipe.get(k) for k in ("gamma", "warmup_iters", "warmup_lr", "label_smoothing")},
        "crop_pad": aug.get("crop_pad"), "flip": aug.get("flip"),
        **{k: rt.get(k) for k in ("device", "amp", "channels_last", "compile", "threads", "deterministic")},
        "bench_enabled": bench_cfg.get("enabled"),
        "num_classes": meta.get("num_classes"),
        "n_train": counts.get("train"), "n_val": counts.get("val"), "n_test": counts.get("test"),
        "test_acc": test_acc,
        "test_error_pct": None if test_acc is None else 100.0 * (1.0 - test_acc),
        **{k: m.get(k) for k in ("test_top5_acc", "test_loss", "best_val_acc", "best_val_epoch")},
        # Older records lack these two: the last epoch holds them.
        "final_val_acc": m.get("final_val_acc", last.get("val_acc")),
        "final_train_loss": m.get("final_train_loss", last.get("train_loss")),
        "epochs_completed": m.get("epochs_completed", len(epochs) if rec["status"] != "missing" else None),
        "train_time_s": m.get("train_time_s"), "wall_s": rec.get("wall_s"),
        **{k: m.get(k) for k in ("train_img_per_s", "params", "fwd_gflops", "bench_train_img_per_s")},
        "bench_train_img_per_s_iqr": bench.get("train_img_per_s_iqr"),
        "bench_infer_img_per_s": m.get("bench_infer_img_per_s"),
        "bench_infer_img_per_s_iqr": bench.get("infer_img_per_s_iqr"),
        "bench_batch_size": m.get("bench_batch_size"),
        "peak_mem_bytes": peak, "peak_mem_mib": None if peak is None else peak / 2**20,
        "peak_mem_source": bench.get("peak_mem_source"),
        "saved_activation_bytes": m.get("saved_activation_bytes"), "peak_rss_bytes": m.get("peak_rss_bytes"),
        "bench_error": rec.get("bench_error"),
        "git_commit": commit, "git_dirty": dirty,
        "code_fingerprint": c.get("code_fingerprint") or None, "data_sha256": (c.get("data") or {}).get("content_sha256"),
        "node_hostname": node.get("hostname"), "aten_cpu_capability": numeric.get("aten_cpu_capability"),
        "numeric_pinned": numeric.get("pinned"),
        **{k: numeric.get(k) for k in ("numeric_pin", "mkl_cbwr_branch", "onednn_enabled")},
        "torch_version": versions.get("torch"),
        "cuda_version": hw.get("cuda"), "python_version": hw.get("python"), "platform": hw.get("platform"),
        "cpu_model": hw.get("cpu_model"), "cpu_count": hw.get("cpu_count"), "gpu_name": hw.get("gpu_name"),
        "gpu_count": hw.get("gpu_count"), "torch_threads": hw.get("torch_threads"),
        "started_at": rec.get("started_at"), "finished_at": rec.get("finished_at"),
    }


def typed_frame(rows: list[dict], spec: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """A DataFrame with exactly the spec's columns, in its order, with its dtypes (also when empty)."""
    df = pd.DataFrame(rows, columns=[c for c, *_ in spec])
    for col, dtype, *_ in spec:
        s = df[col]
        if dtype == "float":
            df[col] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif dtype == "int":
            df[col] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)
                                for v in s], dtype="Int64")
        elif dtype == "bool":
            df[col] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v)
                                for v in s], dtype="boolean")
        else:
            df[col] = pd.Series([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                                 for v in s], dtype="str", index=df.index)
    return df


def sort_rows(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Deterministic order: units in He et al. Fig. 4 order (a)-(e), everything else ascending."""
    key = lambda s: s.map({u: i for i, u in enumerate(UNIT_ORDER)}) if s.name == "unit" else s
    return df.sort_values(keys, key=key, kind="mergesort", na_position="last").reset_index(drop=True)


# Metrics an `ok` record must hold as finite numbers; otherwise it is counted as failed.
REQUIRED_OK_METRICS = ("test_acc", "test_loss", "best_val_acc", "final_train_loss")


def check_ok_metrics(rec: dict) -> dict:
    """An ok record with a NaN/null headline metric becomes failed, its error naming the metric."""
    if rec["status"] != "ok":
        return rec
    m = rec.get("metrics") or {}
    bad = [k for k in REQUIRED_OK_METRICS if _finite_or_none(m.get(k)) is None]
    if not bad:
        return rec
    what = ", ".join(f"{k}={m.get(k)!r}" for k in bad)
    return {**rec, "status": "failed", "error": f"status ok but metric(s) not finite: {what}"}


# Config parts whose change makes an old result a different cell, in the order a reason names them.
_IDENTITY_PARTS = ("code_fingerprint", "data", "recipe", "arch", "runtime", "bench")


def exclusion_reason(config: dict, expected: list[dict]) -> str:
    """Why a result on disk is not a cell of the current grid: what differs from its counterpart."""
    key = lambda c: tuple(c.get(k) for k in ("model", "unit", "dataset", "seed"))
    twins = [e["config"] for e in expected if key(e["config"]) == key(config)]
    if not twins:
        return "model/dataset/seed not in the current grid"
    twin = twins[0]
    diff = [p for p in _IDENTITY_PARTS if config.get(p) != twin.get(p)]
    if not diff:
        return "config differs from the current grid's (other keys)"
    names = {"code_fingerprint": "training code changed", "data": "prepared data changed"}
    return "; ".join(names.get(p, f"{p} differs") for p in diff)


EXCLUDED_COLUMNS: list[tuple[str, str, str, str]] = [
    ("cell_id", "str", "-", "id of the result file left out"),
    *[(c, _SPEC[c][0], _SPEC[c][1], f"the cell's {c}")
      for c in ("experiment", "dataset", "model", "version", "unit", "depth", "seed", "status")],
    ("reason", "str", "-", "why it is not a cell of the current grid and code"),
]


def split_current(records: list[dict], expected: list[dict] | None) -> tuple[list[dict], pd.DataFrame]:
    """(records of the current grid, table of the others with the reason each is left out)."""
    if expected is None:
        return records, typed_frame([], EXCLUDED_COLUMNS)
    grid = {e["cell_id"] for e in expected}
    current = [r for r in records if r["cell_id"] in grid]
    rows = [{"cell_id": r["cell_id"], "status": r["status"],
             **{k: r["config"].get(k) for k in ("experiment", "dataset", "model", "version", "unit", "depth", "seed")},
             "reason": exclusion_reason(r["config"], expected)}
            for r in records if r["cell_id"] not in grid]
    return current, sort_rows(typed_frame(rows, EXCLUDED_COLUMNS), ["reason", *CELL_SORT])


def cells_table(records: list[dict], expected: list[dict] | None = None) -> pd.DataFrame:
    """One row per cell; an expected cell without a result file gets a row with status `missing`.

    `records` should be the current grid's (split_current); NaN/null metrics of an ok
    record make it failed.
    """
    rows = [cell_row(check_ok_metrics(r)) for r in records]
    have = {r["cell_id"] for r in records}
    seen = set()
    for e in expected or []:
        if e["cell_id"] in have or e["cell_id"] in seen:
            continue
        seen.add(e["cell_id"])
        rows.append(cell_row({"cell_id": e["cell_id"], "status": "missing", "config": e["config"],
                              "error": "no result file (not run yet, or the sweep was interrupted)"}))
    return sort_rows(typed_frame(rows, CELL_COLUMNS), CELL_SORT)


def epochs_table(records: list[dict]) -> pd.DataFrame:
    """One row per recorded epoch of every cell (a failed cell keeps what it measured)."""
    rows = []
    for rec in map(check_ok_metrics, records):
        c = rec["config"]
        key = {"cell_id": rec["cell_id"], "status": rec["status"], **{k: c.get(k) for k in EPOCH_KEY_COLUMNS[2:]}}
        for e in rec.get("epochs") or []:
            rows.append({**key, **{k: e.get(k) for k, *_ in EPOCH_FIELDS}})
    return sort_rows(typed_frame(rows, EPOCH_COLUMNS), EPOCH_SORT)


def series_name(experiment: str, dataset: str, depth: int) -> str:
    """File-name-safe name of one curve file: `<experiment>__<dataset>__resnet<depth>`."""
    return "__".join(re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)) for p in (experiment, dataset, f"resnet{depth}"))


def curves(epochs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per experiment, dataset and depth: v1 (unit a) and v2 (unit e) train and validation error (%) per epoch,
    mean over each version's ok seeds (ablation units (b)-(d) are in epochs.csv, not here)."""
    plain = np.array([VERSION_UNIT.get(v) == u for v, u in zip(epochs["version"], epochs["unit"])], dtype=bool)
    ok = epochs[(epochs["status"] == "ok").to_numpy(dtype=bool) & plain]
    out = {}
    for (exp, ds, depth), g in ok.groupby(["experiment", "dataset", "depth"], sort=True):
        rows = {}
        for (version, epoch), e in g.groupby(["version", "epoch"], sort=True):
            row = rows.setdefault(int(epoch), {"epoch": int(epoch)})
            # rounded to 1e-6 pp so that the CSV reads 71.5, not 71.50000000000001
            row[f"{version}_train_error"] = round(100 * (1 - float(e["train_acc"].mean())), 6)
            row[f"{version}_val_error"] = round(100 * (1 - float(e["val_acc"].mean())), 6)
            row[f"{version}_n_seeds"] = int(e["seed"].nunique())
        out[series_name(exp, ds, int(depth))] = typed_frame([rows[k] for k in sorted(rows)], CURVE_COLUMNS)
    return dict(sorted(out.items()))


# ---- metrics.json ----------------------------------------------------------------------------------------


def metric_key(dataset: str, model: str, version: str, unit: str) -> str:
    """`<dataset>/<model>`, plus `/<unit>` for an ablation unit that is not its version's own."""
    return f"{dataset}/{model}" if VERSION_UNIT.get(version) == unit else f"{dataset}/{model}/{unit}"


def _r(v) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def paired_v2_minus_v1(cells: pd.DataFrame) -> pd.DataFrame:
    """v2 - v1 test accuracy (percentage points) per (dataset, depth, seed) where both are ok."""
    ok = cells[(cells["status"] == "ok") & cells["unit"].isin(list(VERSION_UNIT.values()))]
    wide = ok.pivot_table(index=["dataset", "depth", "seed"], columns="version", values="test_acc",
                          aggfunc="first")
    if not {"v1", "v2"} <= set(wide.columns):
        return pd.DataFrame(columns=["dataset", "depth", "seed", "diff_pp"])
    wide = wide.dropna(subset=["v1", "v2"])
    return pd.DataFrame({"diff_pp": 100.0 * (wide["v2"] - wide["v1"])}).reset_index()


def t_interval95(values) -> tuple[float | None, float | None]:
    """Two-sided 95% Student-t interval of the mean; (None, None) under two values."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return None, None
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def headline_metrics(cells: pd.DataFrame, n_excluded: int = 0) -> dict:
    """The numbers a reader of `dvc metrics show` / `dvc exp show` wants, compactly.

    - counts by status (and cells excluded as not of the current grid/code);
    - `test_acc.<dataset>.<version>.d<depth>`: mean test accuracy over ok seeds;
    - `v2_minus_v1_pp.<dataset>`: mean paired difference over (depth, seed) pairs, in
      percentage points, with its 95% t-interval and the number of pairs;
    - `bench_train_img_per_s.<dataset>.<version>`: median isolated-bench training
      throughput over the version's depths.
    Ablation units other than (a)/(e) stay in cells.csv.
    """
    out: dict = {"cells": int(len(cells)), "excluded": int(n_excluded)}
    for status in STATUSES:
        out[status] = int((cells["status"] == status).sum())
    plain = cells[cells["unit"].isin(list(VERSION_UNIT.values()))]
    ok = plain[plain["status"] == "ok"]
    acc: dict = {}
    for (ds, version, depth), g in ok.groupby(["dataset", "version", "depth"], sort=True):
        acc.setdefault(ds, {}).setdefault(version, {})[f"d{int(depth)}"] = _r(g["test_acc"].mean())
    out["test_acc"] = acc
    pairs = paired_v2_minus_v1(cells)
    diff = {}
    for ds, g in pairs.groupby("dataset", sort=True):
        lo, hi = t_interval95(g["diff_pp"])
        diff[ds] = {"mean": _r(g["diff_pp"].mean()), "ci95_lo": _r(lo), "ci95_hi": _r(hi), "n_pairs": int(len(g))}
    out["v2_minus_v1_pp"] = diff
    thr: dict = {}
    for (ds, version), g in ok.groupby(["dataset", "version"], sort=True):
        v = g.groupby("depth")["bench_train_img_per_s"].median().dropna()  # median over depths, not cells
        if len(v):
            thr.setdefault(ds, {})[version] = _r(v.median())
    out["bench_train_img_per_s"] = thr
    return out


# ---- writing -----------------------------------------------------------------------------------------------


def read_table(path: str | Path) -> pd.DataFrame:
    """Read back cells/epochs/excluded/curves CSV or parquet with the documented dtypes (CSV == parquet)."""
    path = Path(path)
    name = path.stem
    spec = {"cells": CELL_COLUMNS, "epochs": EPOCH_COLUMNS, "excluded": EXCLUDED_COLUMNS}.get(name, CURVE_COLUMNS)
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        dtypes = {c: DTYPES[d] for c, d, *_ in spec}
        df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])
    return typed_frame(df.astype(object).where(df.notna(), None).to_dict("records"), spec)


def write_outputs(cells: pd.DataFrame, epochs: pd.DataFrame, out: Path,
                  excluded: pd.DataFrame | None = None) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    excluded = typed_frame([], EXCLUDED_COLUMNS) if excluded is None else excluded
    excluded.to_csv(out / "excluded.csv", index=False, lineterminator="\n")
    written = {"excluded.csv": out / "excluded.csv"}
    for name, df in (("cells", cells), ("epochs", epochs)):
        df.to_csv(out / f"{name}.csv", index=False, lineterminator="\n")
        df.to_parquet(out / f"{name}.parquet", index=False)
        written[f"{name}.csv"], written[f"{name}.parquet"] = out / f"{name}.csv", out / f"{name}.parquet"
    cdir = out / "curves"
    cdir.mkdir(exist_ok=True)
    for old in cdir.glob("*.csv"):  # a model no longer in the results leaves no stale curve
        old.unlink()
    for name, df in curves(epochs).items():
        df.to_csv(cdir / f"{name}.csv", index=False, lineterminator="\n")
    (out / "metrics.json").write_text(json.dumps(headline_metrics(cells, len(excluded)), indent=1,
                                                 sort_keys=True) + "\n")
    written["metrics.json"], written["curves"] = out / "metrics.json", cdir
    return written


def _table_doc(spec) -> list[str]:
    lines = ["| column | type | unit | meaning |", "| --- | --- | --- | --- |"]
    return lines + [f"| `{c}` | {d} | {u} | {m} |" for c, d, u, m in spec]


def schema_doc() -> str:
    lines = [
        "# Results schema", "",
        "Generated from `resnet_bench/collect.py` by `python -m resnet_bench.collect --schema-doc > "
        "docs/results_schema.md`; a test checks that the two agree and that every column of the tables is "
        "listed here.", "",
        "`resnet-bench collect --cells results/cells --out results [--expected results/expected_cells.json]` "
        "reads the cell results (docs/ARCHITECTURE.md, *Cell result*) and writes the files below. Types: "
        "`str` text, `int` integer (nullable), `float` (NaN when absent), `bool` (nullable); an empty CSV field "
        "is a null. Accuracies are fractions in 0..1, errors are percent. "
        "`resnet_bench.collect.read_table(path)` reads a CSV or parquet back with these types.", "",
        "Each experiment has its own folder, `results/<experiment>/`.", "",
        "## results/<experiment>/cells.csv, cells.parquet", "",
        "One row per cell of the current grid and code (`expected_cells.json`): its result, or a row with status "
        "`missing` when it has no result file. Nothing is dropped: failed and diverged cells keep their "
        "row with whatever they measured; an `ok` record with a NaN/null "
        f"{'/'.join(REQUIRED_OK_METRICS)} is counted `failed`. Rows sorted by experiment, dataset, version, "
        "unit (He et al. Fig. 4 order), depth, seed, cell_id.", "",
        *_table_doc(CELL_COLUMNS), "",
        "## results/<experiment>/excluded.csv", "",
        "Result files on disk that are not cells of the current grid and code (an earlier recipe, training code "
        "or prepared data): kept on disk, out of every table, mean and figure; the report lists them.", "",
        *_table_doc(EXCLUDED_COLUMNS), "",
        "## results/<experiment>/epochs.csv, epochs.parquet", "",
        "One row per recorded epoch of every current cell, whatever its status (filter on `status == \"ok\"` "
        "for clean curves). Sorted like the cells, then by epoch.", "",
        *_table_doc(EPOCH_COLUMNS), "",
        "## results/<experiment>/curves/<experiment>\\_\\_<dataset>\\_\\_resnet<depth>.csv", "",
        "One file per experiment, dataset and depth: v1 (unit a) and v2 (unit e) side by side, mean over ok "
        "seeds at each epoch. dvc.yaml's top-level `plots:` draws one chart per file with v1 and v2 overlaid "
        "(x = `epoch`).", "",
        *_table_doc(CURVE_COLUMNS), "",
        "## results/<experiment>/metrics.json", "",
        "| key | type | unit | meaning |", "| --- | --- | --- | --- |",
        "| `cells` | int | cells | cells in the table (results + missing) |",
        "| `excluded` | int | cells | result files left out (excluded.csv) |",
        *[f"| `{s}` | int | cells | cells with status `{s}` |" for s in STATUSES],
        "| `test_acc.<dataset>.<version>.d<depth>` | float | fraction 0..1 | mean test accuracy over the ok seeds "
        "(units (a)/(e) only) |",
        "| `v2_minus_v1_pp.<dataset>.mean` | float | percentage points | mean of v2 - v1 test accuracy over "
        "(depth, seed) pairs where both are ok |",
        "| `v2_minus_v1_pp.<dataset>.ci95_lo`, `ci95_hi` | float | percentage points | 95% Student-t interval "
        "of that mean (null under 2 pairs) |",
        "| `v2_minus_v1_pp.<dataset>.n_pairs` | int | pairs | pairs averaged |",
        "| `bench_train_img_per_s.<dataset>.<version>` | float | images/s | median over depths of the isolated "
        "bench training throughput |",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv):
    p = Parser(prog="resnet-bench collect", description="Tidy tables of every cell result.")
    p.add_argument("--results", help="the experiment's results folder (results/<experiment>): reads cells/ and "
                                     "expected_cells.json there and writes the tables there")
    p.add_argument("--cells", help="folder of <cell_id>.json results (default: RESULTS/cells)")
    p.add_argument("--expected", help="expected_cells.json (default: RESULTS/expected_cells.json): cells of the "
                                      "current grid; others are excluded, expected ones without a file are missing")
    p.add_argument("--out", help="folder for the tables, curves/ and metrics.json (default: RESULTS)")
    p.add_argument("--schema-doc", action="store_true", help="print the column documentation (markdown) and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.schema_doc:
        sys.stdout.write(schema_doc())
        return 0
    if not (args.results or (args.cells and args.out)):
        print("error: resnet-bench collect: give --results DIR (or --cells and --out)", file=sys.stderr)
        return 2
    root = Path(args.results) if args.results else None
    cells_dir = Path(args.cells) if args.cells else root / "cells"
    expected_path = Path(args.expected) if args.expected else (root / "expected_cells.json" if root else None)
    out = Path(args.out) if args.out else root
    try:
        records = read_cells(cells_dir)
        expected = None
        if expected_path is not None:
            if expected_path.exists():
                expected = read_expected(expected_path)
            else:
                print(f"note: {expected_path} not found; every result file counts, and cells not yet run "
                      "cannot be listed as missing", file=sys.stderr)
    except CollectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    current, excluded = split_current(records, expected)
    cells, epochs = cells_table(current, expected), epochs_table(current)
    write_outputs(cells, epochs, out, excluded)
    counts = ", ".join(f"{s} {int((cells['status'] == s).sum())}" for s in STATUSES)
    print(f"collected {len(cells)} cells ({counts}), {len(epochs)} epoch rows, {len(excluded)} excluded "
          f"-> {out}")
    for reason, n in excluded["reason"].value_counts(sort=False).sort_index().items():
        print(f"  excluded {n}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
