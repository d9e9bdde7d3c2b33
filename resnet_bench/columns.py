"""The columns of collect's tables, declared once (name, dtype, unit, meaning), and the typed, checked
reading of those tables.

The tables' column order and dtypes, `docs/results_schema.md` (`python -m resnet_bench.collect
--schema-doc`) and the checks of a table read back (`read_table`: report, compare and verify read
tables that may have been copied from a cluster or pulled from a remote) all come from here. A
column's unit decides its range: `fraction 0..1` in [0, 1], `%` in [0, 100], throughputs
(`images/s`) > 0, counts, bytes, seconds and losses >= 0; a name column must match the name charset,
a vocabulary column its vocabulary. A metric added to the record schema (`resnet_bench.sweep.records.
Metrics`, with its unit and description) becomes a cells column here by itself.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pandas as pd

from resnet_bench.inputs import MAX_TABLE_BYTES, InputError, read_bytes, read_text
from resnet_bench.outputs import csv_unguard
from resnet_bench.sweep.records import Metrics
from resnet_bench.vocab import CELL_STATUSES, DATASET_NAME_PATTERN, MODEL_PATTERN, NAME_PATTERN, UNITS, VERSIONS
from resnet_bench.vocab import UNITS as UNIT_ORDER  # He et al. 2016 Fig. 4 order (a)-(e)

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
    ("batch_size", "int", "images", "training batch size (global: all workers together)"),
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
    ("amp", "str", "-", "autocast dtype: `none` | `bf16` | `fp16` (CPU: `none`, or `bf16` opted into, outside the "
                        "bit-identity promise)"),
    ("channels_last", "bool", "-", "NHWC memory format"),
    ("compile", "bool", "-", "`torch.compile` used"),
    ("compile_mode", "str", "-", "`torch.compile` mode (`default`, `reduce-overhead`, `max-autotune`, ...)"),
    ("tf32", "bool", "-", "TF32 tensor cores allowed for float32 matmuls and cuDNN convolutions (CUDA)"),
    ("threads", "int", "threads", "torch CPU threads requested by the config (CPU runs)"),
    ("deterministic", "bool", "-", "deterministic algorithms requested (cuDNN benchmark off)"),
    ("bench_enabled", "bool", "-", "the isolated bench pass was requested for this cell"),
    ("gpu_share", "float", "GPUs", "fraction of one GPU the trial held (`resources.gpus_per_trial`; 0.5 = two "
                                   "trials on one GPU, its loop throughput is not a whole GPU's); null on CPU"),
    ("world_size", "int", "workers", "processes that trained the cell together (`resources.workers_per_trial`, "
                                     "DistributedDataParallel; one GPU each on CUDA)"),
    ("per_rank_batch", "int", "images", "images of each global batch one worker trained on (batch_size / "
                                        "world_size)"),
    ("bn_mode", "str", "-", "batch norm statistics over each worker's images (`per_rank`, the papers') or the "
                            "global batch (`sync`, `arch.sync_bn`)"),
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
    ("gpu_hours", "float", "GPU-hours", "train_time_s / 3600 x gpu_share; null on CPU"),
    ("wall_s", "float", "s", "wall time of the whole cell (data loading included)"),
    ("train_img_per_s", "float", "images/s", "steady training-loop throughput incl. on-device loading and "
                                             "augmentation: full batches after the first epoch's warm-up steps "
                                             "(compilation, autotuning), timed on the device (concurrent cells "
                                             "may share it: compare models with bench_train_img_per_s)"),
    ("train_epoch_img_per_s", "float", "images/s", "mean over epochs of images / epoch wall time, the first "
                                                   "epoch's compilation and warm-up included"),
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
    ("matmul_fp32_precision", "str", "-", "effective float32 matmul precision while training: `ieee` or `tf32`"),
    ("conv_fp32_precision", "str", "-", "effective float32 cuDNN convolution precision: `ieee` or `tf32`"),
    ("cudnn_deterministic", "bool", "-", "cuDNN restricted to deterministic kernels (its flag or deterministic "
                                         "algorithms)"),
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


def _dtype_of(annotation) -> str:
    text = str(annotation)
    return "int" if "int" in text else "bool" if "bool" in text else "float" if "float" in text else "str"


# Metrics of the record schema not listed above: a column each, after the listed ones.
_LISTED = {c for c, *_ in CELL_COLUMNS}
CELL_COLUMNS += [(name, _dtype_of(info.annotation), info.json_schema_extra["unit"], info.description)
                 for name, info in Metrics.model_fields.items() if name not in _LISTED]


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
# results/<experiment>/curves/<dataset>.csv: long format, one row per (depth, version, split, epoch), so that
# one Vega-Lite template (.dvc/plots/v1v2_curves.json) draws v1/v2 by colour, train/validation by dash and one
# panel per depth in numeric order, whatever the grid (dvc plots show / diff).
CURVE_VERSIONS = ("v1", "v2")
CURVE_COLUMNS: list[tuple[str, str, str, str]] = [
    ("experiment", "str", "-", "experiment name"),
    ("dataset", "str", "-", "prepared dataset name"),
    ("network", "str", "-", "the network's name at this depth, e.g. `ResNet-18` (a panel title)"),
    ("depth", "int", "layers", "number of weighted layers; panels are ordered by it"),
    ("version", "str", "-", "`v1` (unit a, post-activation) or `v2` (unit e, pre-activation); ablation units "
                            "(b)-(d) are in epochs.csv, not here"),
    ("split", "str", "-", "`validation` (held out of train) or `train` (augmented training batches)"),
    ("epoch", "int", "epoch", "epoch, 1-based"),
    ("error_pct", "float", "%", "mean over the version's ok seeds of 100 x (1 - accuracy) on the split after "
                                "the epoch"),
    ("n_seeds", "int", "seeds", "ok seeds averaged at this epoch"),
]
CELL_SORT = ["experiment", "dataset", "version", "unit", "depth", "seed", "cell_id"]
EPOCH_SORT = [*CELL_SORT, "epoch"]

# kept for callers that want the column groups by kind
NUMERIC_COLUMNS = [c for c, d, _, _ in CELL_COLUMNS if d in ("int", "float")]
TEXT_COLUMNS = [c for c, d, _, _ in CELL_COLUMNS if d == "str"]


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


EXCLUDED_COLUMNS: list[tuple[str, str, str, str]] = [
    ("cell_id", "str", "-", "id of the result file left out"),
    *[(c, _SPEC[c][0], _SPEC[c][1], f"the cell's {c}")
      for c in ("experiment", "dataset", "model", "version", "unit", "depth", "seed", "status")],
    ("reason", "str", "-", "why it is not a cell of the current grid and code"),
]


class TableError(ValueError):
    """A table that does not follow its columns' contract: one line naming the file, column and row."""


# Columns whose text is a name or a word of the vocabulary.
_TEXT_RULES = {"experiment": re.compile(NAME_PATTERN), "dataset": re.compile(DATASET_NAME_PATTERN),
               "model": re.compile(MODEL_PATTERN), "cell_id": re.compile(r"^[0-9a-f]{12}$"),
               "status": CELL_STATUSES, "version": VERSIONS, "unit": UNITS}
_COUNT_UNITS = {"layers", "channels", "epochs", "epoch", "images", "iterations", "parameters", "bytes", "classes",
                "CPUs", "GPUs", "threads", "seeds", "pixels", "steps", "cells", "pairs"}


def _value_problem(col: str, dtype: str, unit: str, v) -> str | None:
    """Why `v` cannot stand in column `col`, or None. `v` is a Python value (None = null)."""
    if v is None:
        return None
    if dtype == "str":
        if not isinstance(v, str):
            return f"{v!r} is not text"
        rule = _TEXT_RULES.get(col)
        if rule is not None and not (rule.fullmatch(v) if hasattr(rule, "fullmatch") else v in rule):
            return f"{v[:80]!r} is not a valid {col}"
        return None
    if dtype == "bool":
        return None if isinstance(v, bool) else f"{v!r} is not true/false"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{v!r} is not a number"
    if dtype == "int" and not isinstance(v, int):
        return f"{v!r} is not an integer"
    if isinstance(v, float) and math.isnan(v):
        return None
    if math.isinf(v) and unit != "nats":
        return f"{v!r} is not finite"
    rate = unit == "images/s" and not col.endswith("_iqr")  # a throughput is > 0; its spread may be 0
    lo, lo_open, hi = {"fraction 0..1": (0, False, 1), "%": (0, False, 100)}.get(
        unit, (0, rate, None) if rate or unit in _COUNT_UNITS or unit in ("images/s", "s", "MiB", "GFLOP/image",
                                                                         "nats") else (None, False, None))
    if lo is not None and (v < lo or (lo_open and v == lo)):
        return f"{v!r} is out of range ({'>' if lo_open else '>='} {lo} for {unit})"
    if hi is not None and v > hi:
        return f"{v!r} is out of range (<= {hi} for {unit})"
    return None


def _py(v, dtype: str, from_csv: bool):
    """A cell as a Python value of its column's kind (None for null); a wrong kind is kept for the check."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v) and dtype != "float"):
        return None
    if from_csv:
        if dtype == "int":
            return int(v) if re.fullmatch(r"-?[0-9]{1,19}", v) else v
        if dtype == "float":
            try:
                return float(v)
            except ValueError:
                return v
        if dtype == "bool":
            return {"True": True, "False": False, "true": True, "false": False}.get(v, v)
        return csv_unguard(v)
    if hasattr(v, "item") and not isinstance(v, str):
        v = v.item()  # numpy scalar -> Python
    if dtype == "float" and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    return v


def check_frame(df: pd.DataFrame, spec, where: str, *, from_csv: bool = False,
                required: tuple[str, ...] = ()) -> pd.DataFrame:
    """Every column of `df` that `spec` declares, checked cell by cell (kind, range, names, vocabulary)
    and typed; other columns are kept as they are. A TableError names the first bad cell."""
    absent = [c for c in required if c not in df.columns]
    if absent:
        raise TableError(f"{where} lacks column(s) {', '.join(absent)}; re-run `resnet-bench collect`")
    if len(set(df.columns)) != len(df.columns):
        raise TableError(f"{where}: duplicate column names")
    out = df.reset_index(drop=True)
    declared = [(c, d, u, m) for c, d, u, m in spec if c in df.columns]
    rows: list[dict] = [{} for _ in range(len(out))]
    for col, dtype, unit, _ in declared:
        for row, v in enumerate(out[col].astype(object)):
            v = _py(v, dtype, from_csv)
            problem = _value_problem(col, dtype, unit, v)
            if problem:
                raise TableError(f"{where}: row {row + 1}, column {col}: {problem}")
            rows[row][col] = v
    typed = typed_frame(rows, declared)
    for col, *_ in declared:
        out[col] = typed[col]
    if "cell_id" in df.columns and where.endswith(("cells.parquet", "cells.csv")):
        dup = df["cell_id"][df["cell_id"].duplicated()]
        if len(dup):
            raise TableError(f"{where}: cell {dup.iloc[0]} has two rows (a cell is listed once)")
    return out


def _spec_for(path: Path):
    name = path.stem
    return {"cells": CELL_COLUMNS, "epochs": EPOCH_COLUMNS, "excluded": EXCLUDED_COLUMNS}.get(name, CURVE_COLUMNS)


def read_table(path: str | Path, *, spec=None, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """A cells/epochs/excluded/curves CSV or parquet read back with the documented dtypes (CSV ==
    parquet), every declared column checked (`check_frame`); InputError / TableError, one line."""
    path = Path(path)
    spec = spec or _spec_for(path)
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(io.BytesIO(read_bytes(path, max_bytes=MAX_TABLE_BYTES)))
        else:
            df = pd.read_csv(io.StringIO(read_text(path, max_bytes=MAX_TABLE_BYTES)), dtype=str,
                             keep_default_na=False, na_values=[""])
    except InputError:
        raise
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise TableError(f"{path}: not a readable {path.suffix.lstrip('.')} table ({str(err).splitlines()[0][:160]})") \
            from None
    df = check_frame(df, spec, str(path), from_csv=path.suffix != ".parquet", required=required)
    known = [c for c, *_ in spec if c in df.columns]
    return df[known + [c for c in df.columns if c not in known]]
