"""A sweep's result files, typed: the cell record (`cells/<cell_id>.json`), `expected_cells.json` and
`experiment.json`, and their readers (writing them into the results folder: resnet_bench.sweep.results_dir).

`CellRecord` is the one schema of the suite's most-travelled object (pydantic 2, strict: the same
library and rules as the configuration, `resnet_bench.config`). Everything that writes a record goes
through it (the trial's record, the driver's callback, the bench merge, the failure path,
`resnet-bench train --out`), and every reader (the sweep planner, collect, verify) gets a typed
record, read by attribute, or one line naming the file, the key and the bad value.

Beyond types (a result pulled from a remote is hostile): accuracies in [0, 1]; losses finite and
>= 0 (a diverged epoch's may be NaN or +inf); counts >= 0; throughputs > 0 or null; no bool for a
number, no string for a bool, no float for an int; epochs increasing. The record's `cell_id` is
recomputed from its config (`Cell`, whose id is the hash of that config) and must match, and so must
its file name. An `ok` record holds every headline metric and all its epochs; a failed or diverged
one says why.

Adding a field (other branches add GPU, data-shape, world-size, model-path fields in parallel): add
it once, to the block's model below, with its type, range and a default of None (so records written
before it still read). Writers need nothing else: the trainer's dict key of the same name is
validated and written, and readers get it as an attribute. A field of `Metrics` also declares
`unit` and `description`: it then becomes a column of collect's cells table by itself (appended
after the listed columns, documented by `--schema-doc`). Fields of the open blocks (`env`,
`provenance`, `bench`, `dataset_meta`, `node`) that no reader uses may stay untyped: they are kept
as written.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, model_validator

from resnet_bench import config as cfg
from resnet_bench.config.errors import _problems
from resnet_bench.config.schema import MAX_EPOCHS, DatasetName, Strict
from resnet_bench.inputs import InputError, read_json
from resnet_bench.sweep.kept_models import Models
from resnet_bench.vocab import NUMERIC_PIN_LEVELS, RECORD_STATUSES

# ---- value types ---------------------------------------------------------------------------------


def _loss_or_diverged(v: float) -> float:
    if math.isnan(v) or v == math.inf or v >= 0:
        return v
    raise ValueError("a loss must be >= 0 (NaN or +inf only where training diverged)")


def _iso_time(v: str) -> str:
    try:
        dt.datetime.fromisoformat(v)
    except ValueError:
        raise ValueError("not an ISO-8601 timestamp") from None
    return v


Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Loss = Annotated[float, Field(ge=0, allow_inf_nan=False)]
EpochLoss = Annotated[float, AfterValidator(_loss_or_diverged)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Rate = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Short = Annotated[str, Field(max_length=1000)]
TEXT_MAX = 200_000  # an error text: message and traceback tail
Text = Annotated[str, Field(max_length=TEXT_MAX)]
Timestamp = Annotated[str, Field(max_length=64), AfterValidator(_iso_time)]
CellId = Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

# What a finished cell must hold as finite numbers (else the record is refused).
REQUIRED_OK_METRICS = ("test_acc", "test_loss", "best_val_acc", "final_train_loss")
# Statuses that are a result: the planner does not train them again (diverged repeats with its seed).
DONE_STATUSES = ("ok", "diverged")


class Open(Strict):
    """A block whose typed keys are the ones readers use; other keys are kept as written."""

    model_config = ConfigDict(extra="allow")


def _metric(unit: str, description: str):
    return Field(None, description=description, json_schema_extra={"unit": unit})


# ---- the record's blocks -------------------------------------------------------------------------


class Epoch(Strict):
    """One trained epoch (resnet_bench.train.train_cell)."""

    epoch: int = Field(ge=1, le=MAX_EPOCHS)
    iteration: Optional[Count] = None  # optimiser steps at the epoch's end; absent in older records
    train_loss: EpochLoss
    train_acc: Fraction
    val_loss: EpochLoss
    val_acc: Fraction
    test_loss: Optional[EpochLoss] = None  # curves only, never used to select
    test_acc: Optional[Fraction] = None
    lr: NonNeg
    epoch_s: Seconds
    train_img_per_s: Rate
    # The epoch's steady window (resnet_bench.train.train_epoch): full batches after the warm-up steps,
    # timed on the device; absent in older records.
    steady_images: Optional[Count] = None
    steady_s: Optional[Seconds] = None
    steady_train_img_per_s: Optional[Rate] = None


# The per-epoch record of resnet_bench.train.train_cell, reported to Tune as top-level numbers (Tune's
# loggers, ExperimentAnalysis and TensorBoard read them) and rebuilt from them by the driver's callback.
EPOCH_KEYS = tuple(Epoch.model_fields)


class Metrics(Strict):
    """Final numbers of a cell; accuracies are fractions in 0..1."""

    test_acc: Optional[Fraction] = _metric("fraction 0..1", "test top-1 accuracy of the final model")
    test_top5_acc: Optional[Fraction] = _metric("fraction 0..1", "test top-5 accuracy (null under 100 classes)")
    test_loss: Optional[Loss] = _metric("nats", "test cross-entropy")
    best_val_acc: Optional[Fraction] = _metric("fraction 0..1", "best validation top-1 accuracy over epochs")
    best_val_epoch: Optional[Positive] = _metric("epoch", "epoch of best_val_acc (1-based)")
    final_val_acc: Optional[Fraction] = _metric("fraction 0..1", "validation accuracy after the last epoch")
    final_train_loss: Optional[EpochLoss] = _metric("nats", "mean training loss of the last epoch")
    epochs_completed: Optional[Count] = _metric("epochs", "epochs trained")
    train_time_s: Optional[Seconds] = _metric("s", "wall time of training and evaluation")
    train_img_per_s: Optional[Rate] = _metric("images/s", "steady training-loop throughput (after warm-up), "
                                                          "the whole cell's: all workers together")
    train_img_per_s_per_worker: Optional[Rate] = _metric("images/s", "train_img_per_s / world_size: per worker, "
                                                                     "per GPU on CUDA (one GPU per worker)")
    train_epoch_img_per_s: Optional[Rate] = _metric("images/s", "mean of the epochs' wall-clock rates")
    gpu_hours: Optional[NonNeg] = _metric("GPU-hours", "train_time_s / 3600 x gpu_share; null on CPU")
    gpu_memory_cap_bytes: Optional[Count] = _metric("bytes", "allocator cap of the trial's GPU share; null on "
                                                             "CPU or a whole GPU")
    train_peak_mem_bytes: Optional[Count] = _metric("bytes", "peak device memory of the training loop (CUDA)")
    amp_grad_scale: Optional[Rate] = _metric("-", "fp16 loss scale at the end of training; null without fp16")
    params: Optional[Count] = _metric("parameters", "trainable parameters")
    fwd_gflops: Optional[NonNeg] = _metric("GFLOP/image", "forward FLOPs per image")
    bench_train_img_per_s: Optional[Rate] = _metric("images/s", "bench pass train-step throughput")
    bench_infer_img_per_s: Optional[Rate] = _metric("images/s", "bench pass inference throughput")
    peak_mem_bytes: Optional[Count] = _metric("bytes", "peak training memory of the bench pass")
    saved_activation_bytes: Optional[Count] = _metric("bytes", "bytes autograd saves for backward")
    peak_rss_bytes: Optional[Count] = _metric("bytes", "peak resident set size of the bench process")
    bench_batch_size: Optional[Positive] = _metric("images", "batch the bench pass used")
    # resnet_bench.noise: a depth's versions timed interleaved; ratios over v1 of the depth (null for v1)
    bench_train_img_per_s_cv: Optional[NonNeg] = _metric("-", "bench train throughput CV (sd / mean, repeats)")
    bench_infer_img_per_s_cv: Optional[NonNeg] = _metric("-", "bench inference throughput CV (sd / mean, repeats)")
    bench_unstable: Optional[bool] = _metric("-", "a bench CV stayed above bench.cv_max after every re-measurement")
    bench_competing_cpu_frac: Optional[Fraction] = _metric("fraction 0..1", "other processes' share of the CPUs "
                                                                            "while the bench timed training")
    bench_train_ratio: Optional[Rate] = _metric("-", "bench train throughput / v1's of the depth (interleaved)")
    bench_train_ratio_lo: Optional[Rate] = _metric("-", "bench_train_ratio, 95 % interval low")
    bench_train_ratio_hi: Optional[Rate] = _metric("-", "bench_train_ratio, 95 % interval high")
    bench_infer_ratio: Optional[Rate] = _metric("-", "bench inference throughput / v1's of the depth (interleaved)")
    bench_infer_ratio_lo: Optional[Rate] = _metric("-", "bench_infer_ratio, 95 % interval low")
    bench_infer_ratio_hi: Optional[Rate] = _metric("-", "bench_infer_ratio, 95 % interval high")


class Node(Open):
    hostname: Optional[Short] = None
    node_id: Optional[Short] = None
    ip: Optional[Short] = None


class Git(Strict):
    commit: Optional[Annotated[str, Field(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")]] = None
    dirty: Optional[bool] = None
    diff_sha256: Optional[Sha256] = None


class Numeric(Open):
    aten_cpu_capability: Optional[Short] = None
    pinned: Optional[bool] = None
    numeric_pin: Optional[Literal[NUMERIC_PIN_LEVELS]] = None  # type: ignore[valid-type]
    mkl_cbwr_branch: Optional[Short] = None
    onednn_enabled: Optional[bool] = None
    torch_threads: Optional[Positive] = None
    matmul_fp32_precision: Optional[Literal["ieee", "tf32"]] = None
    conv_fp32_precision: Optional[Literal["ieee", "tf32"]] = None
    cudnn_deterministic_effective: Optional[bool] = None


class Provenance(Open):
    git: Optional[Git] = None
    code_fingerprint: Optional[Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]] = None
    node: Optional[Node] = None
    numeric: Optional[Numeric] = None


class Hardware(Open):
    cpu_model: Optional[Short] = None
    cpu_count: Optional[Positive] = None
    torch_threads: Optional[Positive] = None
    platform: Optional[Short] = None
    python: Optional[Short] = None
    gpu_name: Optional[Short] = None
    gpu_count: Optional[Count] = None
    cuda: Optional[Short] = None


class Env(Open):
    versions: dict[str, Optional[Short]] = Field(default_factory=dict)
    hardware: Optional[Hardware] = None
    git_commit: Optional[Short] = None  # records before provenance: '<sha>[-dirty]' or 'unknown'


class Counts(Strict):
    train: Count
    val: Count
    test: Count


class DatasetMeta(Open):
    name: Optional[DatasetName] = None
    num_classes: Optional[Positive] = None
    channels: Optional[Positive] = None
    height: Optional[Positive] = None
    width: Optional[Positive] = None
    counts: Optional[Counts] = None
    content_sha256: Optional[Sha256] = None
    # The last training batch held one image (BatchNorm cannot train on it) and was left out of each epoch.
    train_last_batch_dropped: Optional[bool] = None


class BenchResult(Open):
    """The bench pass's measurement (resnet_bench.bench.benchmark_model), shared by a model's seeds."""

    train_img_per_s: Rate
    train_img_per_s_iqr: NonNeg
    infer_img_per_s: Rate
    infer_img_per_s_iqr: NonNeg
    peak_mem_bytes: Count
    saved_activation_bytes: Count
    peak_rss_bytes: Count
    batch_size: Positive
    peak_mem_source: Optional[Short] = None
    # resnet_bench.noise: the stability of an interleaved measurement (absent in older records)
    train_img_per_s_cv: Optional[NonNeg] = None
    infer_img_per_s_cv: Optional[NonNeg] = None
    unstable: Optional[bool] = None
    train_competing_cpu_frac: Optional[Fraction] = None
    ratio_reference: Optional[Short] = None
    train_ratio: Optional[Rate] = None
    train_ratio_lo: Optional[Rate] = None
    train_ratio_hi: Optional[Rate] = None
    infer_ratio: Optional[Rate] = None
    infer_ratio_lo: Optional[Rate] = None
    infer_ratio_hi: Optional[Rate] = None


class CompileStats(Open):
    """How `torch.compile` ran (resnet_bench.runtime.Compiled.stats): every row that says compiled was."""

    enabled: bool
    mode: Optional[Short] = None
    backend: Optional[Short] = None
    graphs: Optional[Count] = None
    compile_s: Optional[Seconds] = None


class Worker(Strict):
    """One training process of a multi-worker cell: its rank in the process group and its node."""

    rank: Count
    node: Node


class Distributed(Strict):
    """How a cell's training was spread (the cell's own numbers depend on it: part of its id)."""

    world_size: Positive  # processes (Ray Train workers), one GPU each on CUDA
    per_rank_batch: Positive  # images of each global batch one rank trains on (batch_size / world_size)
    bn_mode: Literal["per_rank", "sync"]  # batch norm statistics over a rank's images or the global batch
    backend: Optional[Literal["gloo", "nccl"]] = None  # the process group's; null with one process
    workers: list[Worker] = Field(default_factory=list, max_length=1024)  # the last attempt's, by rank


class Attempt(Strict):
    """One start of a cell's trial (or of its worker group): where it ran, the epochs it trained, why it ended."""

    node: Optional[Node] = None
    workers: Optional[list[Worker]] = Field(None, max_length=1024)  # multi-worker cells: every rank's node
    first_epoch: Optional[Positive] = None
    last_epoch: Optional[Positive] = None
    error: Optional[Text] = None


# ---- the record ------------------------------------------------------------------------------------


class CellRecord(Strict):
    """`results/<experiment>/cells/<cell_id>.json` (docs/ARCHITECTURE.md, "Cell result")."""

    cell_id: CellId
    status: Literal[RECORD_STATUSES]  # type: ignore[valid-type]
    error: Optional[Text] = None
    config: cfg.Cell
    metrics: Metrics = Field(default_factory=Metrics)
    epochs: list[Epoch] = Field(default_factory=list, max_length=MAX_EPOCHS)
    dataset_meta: Optional[DatasetMeta] = None
    # What the recipe's augmentation does on this store that a reader might not expect (data.augment.store_problems).
    augment_notes: list[Short] = Field(default_factory=list, max_length=100)
    env: Optional[Env] = None
    provenance: Optional[Provenance] = None
    started_at: Optional[Timestamp] = None
    finished_at: Optional[Timestamp] = None
    wall_s: Optional[Seconds] = None
    node: Optional[Node] = None  # the Ray node that finished it (or that it died on)
    retries: Count = 0
    attempts: list[Attempt] = Field(default_factory=list, max_length=100_000)
    bench: Optional[BenchResult] = None
    bench_error: Optional[Text] = None
    compile: Optional[CompileStats] = None
    models: Optional[Models] = None
    distributed: Optional[Distributed] = None  # null: a one-process cell (records before multi-worker cells)

    @model_validator(mode="after")
    def _rules(self):
        if self.cell_id != self.config.cell_id:
            raise ValueError(f"cell_id {self.cell_id!r} does not match its config, which hashes to "
                             f"{self.config.cell_id!r} (edited or forged)")
        d, c = self.distributed, self.config
        if d is not None and (d.world_size, d.per_rank_batch, d.bn_mode) != (c.world_size, c.per_rank_batch,
                                                                             c.bn_mode):
            raise ValueError(f"distributed: world_size {d.world_size}, per_rank_batch {d.per_rank_batch}, bn_mode "
                             f"{d.bn_mode} are not its config's ({c.world_size}, {c.per_rank_batch}, {c.bn_mode})")
        numbers = [e.epoch for e in self.epochs]
        if any(b <= a for a, b in zip(numbers, numbers[1:])):
            raise ValueError(f"epochs: epoch numbers must increase, got {numbers[:20]}")
        m, meta = self.metrics, self.dataset_meta
        if self.status == "ok":
            if self.error is not None:
                raise ValueError("status ok with an error: an ok cell has error null")
            bad = [k for k in REQUIRED_OK_METRICS if getattr(m, k) is None or not math.isfinite(getattr(m, k))]
            if bad:
                raise ValueError(f"status ok but metrics.{bad[0]} is {getattr(m, bad[0])}: a finished cell "
                                 f"has finite {', '.join(REQUIRED_OK_METRICS)}")
            want = self.config.recipe.epochs
            if len(self.epochs) != want or (m.epochs_completed is not None and m.epochs_completed != want):
                raise ValueError(f"status ok with {len(self.epochs)} epochs recorded and epochs_completed "
                                 f"{m.epochs_completed}, but the recipe trains {want}")
            if not all(math.isfinite(e.train_loss) for e in self.epochs):
                raise ValueError("status ok but an epoch's train_loss is not finite (that is status diverged)")
            if m.best_val_epoch is not None and m.best_val_epoch > want:
                raise ValueError(f"metrics.best_val_epoch {m.best_val_epoch} is after the last epoch {want}")
        elif not (self.error or "").strip():
            raise ValueError(f"status {self.status} needs an error saying why")
        for kind in ("final", "best"):
            ref = getattr(self.models, kind) if self.models else None
            want = f"{self.cell_id}.safetensors" if kind == "final" else f"{self.cell_id}.{kind}.safetensors"
            if ref is not None and (ref.file != want or self.status != "ok"):
                raise ValueError(f"models.{kind}.file {ref.file!r}: an ok cell's {kind} model is {want!r}")
        data = self.config.data
        if meta is not None and meta.content_sha256 and data and meta.content_sha256 != data.content_sha256:
            raise ValueError("dataset_meta.content_sha256 is not config.data.content_sha256")
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        # NaN stays the JSON token NaN (a diverged loss), as the record has always been written.
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    def with_bench(self, result: dict) -> "CellRecord":
        """The record with a bench measurement merged in (an earlier bench error superseded)."""
        bench = BenchResult.model_validate(result)
        metrics = self.metrics.model_copy(update={
            "bench_train_img_per_s": bench.train_img_per_s, "bench_infer_img_per_s": bench.infer_img_per_s,
            "peak_mem_bytes": bench.peak_mem_bytes, "saved_activation_bytes": bench.saved_activation_bytes,
            "peak_rss_bytes": bench.peak_rss_bytes, "bench_batch_size": bench.batch_size,
            "bench_train_img_per_s_cv": bench.train_img_per_s_cv, "bench_infer_img_per_s_cv": bench.infer_img_per_s_cv,
            "bench_unstable": bench.unstable, "bench_competing_cpu_frac": bench.train_competing_cpu_frac,
            **{f"bench_{k}": getattr(bench, k) for k in ("train_ratio", "train_ratio_lo", "train_ratio_hi",
                                                        "infer_ratio", "infer_ratio_lo", "infer_ratio_hi")}})
        return _revalidated(self, metrics=metrics.model_dump(mode="json"), bench=bench.model_dump(mode="json"),
                            bench_error=None)

    def with_updates(self, **fields) -> "CellRecord":
        """A copy with top-level fields replaced, validated as a whole."""
        return _revalidated(self, **fields)


def _revalidated(rec: CellRecord, **fields) -> CellRecord:
    return CellRecord.model_validate({**rec.to_dict(), **fields})


class RecordError(cfg.ConfigError):
    """A result file that does not follow its schema: one line naming the file, the key and the value."""


def _one_line(err: ValidationError, model, where: str, prefix: str = "") -> str:
    lines = _problems(err, model, where, prefix)
    more = f" (and {len(lines) - 1} more problem{'s' * (len(lines) > 2)})" if len(lines) > 1 else ""
    return lines[0] + more


def parse_record(doc: Any, where: str) -> CellRecord:
    try:
        return CellRecord.model_validate(doc)
    except ValidationError as err:
        raise RecordError(_one_line(err, CellRecord, where)) from None


def read_record(path: str | Path) -> CellRecord:
    """A cell record file: `<cell_id>.json`, a regular file, valid JSON, valid record, named by its id."""
    path = Path(path)
    if not re.fullmatch(r"[0-9a-f]{12}\.json", path.name):
        raise RecordError(f"{path}: not a cell record name (<12 hex digits>.json); move it out of the folder")
    try:
        rec = parse_record(read_json(path), str(path))
    except InputError as err:
        raise RecordError(str(err)) from None
    if rec.cell_id != path.stem:
        raise RecordError(f"{path}: holds cell {rec.cell_id}, not {path.stem} (a copy under another cell's name)")
    return rec


def read_record_if_any(path: Path) -> CellRecord | None:
    return read_record(path) if path.exists() or path.is_symlink() else None


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def failure_record(cell: cfg.Cell | dict, error: str, epochs=None, provenance: dict | None = None, *,
                   env: dict) -> dict:
    """The record of a cell that failed, with what it measured before; validated, as a plain dict.

    `env`: `resnet_bench.env.environment(...)` of the process that saw the failure (passed in, so that
    reading records, as collect and report do, never imports torch)."""
    cell = cell if isinstance(cell, cfg.Cell) else cfg.Cell.model_validate(cell)
    error = error or "failed (no error text)"
    if len(error) > TEXT_MAX - 1000:  # head and tail of an enormous message (room for the note below)
        error = error[:TEXT_MAX // 2 - 1000] + "\n[...]\n" + error[-(TEXT_MAX // 2 - 1000):]
    fields = dict(cell_id=cell.cell_id, status="failed", error=error, config=cell,
                  env=env, finished_at=utcnow())
    try:
        rec = CellRecord(**fields, epochs=list(epochs or []), provenance=dict(provenance or {}))
    except ValidationError as err:  # the failure path must not fail: keep the cause, drop what is invalid
        why = _one_line(err, CellRecord, "its epochs/provenance")
        rec = CellRecord(**{**fields, "error": f"{fields['error']}\n(epochs and provenance not kept: {why})"})
    return rec.to_dict()


# ---- expected_cells.json, experiment.json ------------------------------------------------------------


def read_expected(path: str | Path) -> list[cfg.Cell]:
    """The sweep's list of `{cell_id, config}`: each config a valid Cell whose id is its hash; no
    duplicate id and no two cells of the same model, dataset and seed (they would be averaged)."""
    where = str(path)
    try:
        items = read_json(path)
    except InputError as err:
        raise RecordError(str(err)) from None
    if not isinstance(items, list):
        raise RecordError(f"{where}: expected a JSON list of {{cell_id, config}}, got {type(items).__name__}")
    cells, seen, keys = [], {}, {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"cell_id", "config"}:
            raise RecordError(f"{where}: item {i}: expected an object with exactly cell_id and config")
        try:
            cell = cfg.Cell.model_validate({**item["config"], "cell_id": item["cell_id"]}
                                           if isinstance(item["config"], dict) else item["config"])
        except ValidationError as err:
            raise RecordError(_one_line(err, cfg.Cell, f"{where}: item {i}", "config")) from None
        key = (cell.experiment, cell.dataset, cell.model, cell.unit, cell.seed)
        if cell.cell_id in seen or key in keys:
            other = seen.get(cell.cell_id, keys.get(key))
            raise RecordError(f"{where}: items {other} and {i} are the same cell ({cell.label()}); "
                              "each cell is listed once")
        seen[cell.cell_id], keys[key] = i, i
        cells.append(cell)
    return cells


def experiment_summary(exp: cfg.Experiment) -> dict:
    """What results/<experiment>/experiment.json holds: the resolved experiment and the paper check,
    derived from the experiment itself (dataset, network variant and recipe against its `paper`)."""
    out = exp.model_dump(mode="json")
    mismatch = cfg.paper_mismatches(exp)
    out["paper_comparable"] = exp.paper is not None and not mismatch
    out["paper_mismatch"] = [] if out["paper_comparable"] else mismatch
    return out


def read_experiment(path: str | Path) -> dict | None:
    """`experiment.json` validated by the schema; `paper_comparable`, `paper_mismatch` and the paper's
    numbers re-derived from the experiment's own `paper` block, never believed as written. None when
    the results predate the file."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    try:
        doc = read_json(path)
    except InputError as err:
        raise RecordError(str(err)) from None
    if not isinstance(doc, dict):
        raise RecordError(f"{path}: expected a JSON object (the resolved experiment), got {type(doc).__name__}")
    derived = {k: doc.pop(k) for k in ("paper_comparable", "paper_mismatch") if k in doc}
    if not isinstance(derived.get("paper_comparable", False), bool) or not (
            isinstance(derived.get("paper_mismatch", []), list)):
        raise RecordError(f"{path}: paper_comparable must be true/false and paper_mismatch a list")
    try:
        exp = cfg.Experiment.model_validate(doc)
    except ValidationError as err:
        raise RecordError(_one_line(err, cfg.Experiment, str(path))) from None
    return experiment_summary(exp)
