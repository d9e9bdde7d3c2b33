"""Trained models as result files: safetensors (tensors and a str -> str metadata map, no pickle), so
that loading a model never runs code.

A model file `<cell_id>.safetensors` (the final model) or `<cell_id>.best.safetensors` (the epoch of the
best validation accuracy) holds the network's state dict (parameters and BatchNorm buffers, float32
as trained, NCHW-contiguous) and in its metadata:

- `resnet_bench.format`: `MODEL_FORMAT`;
- `resnet_bench.cell_id`, `resnet_bench.config`: the cell id and its full config (JSON of
  `resnet_bench.config.Cell`), from which the network is rebuilt;
- `resnet_bench.kind` (`final` | `best`), `resnet_bench.epoch` (the epoch whose weights these are);
- `resnet_bench.metrics`: JSON of the numbers these weights scored when trained (final: the record's
  test_acc, test_loss, ...; best: its epoch's val_acc, test_acc, ...);
- `resnet_bench.dataset`: JSON of the prepared dataset's name, classes, channels, size, mean and std
  (inputs are normalised as (x / 255 - mean) / std per channel).

Reading one is hostile (a file pulled from a remote): the 8-byte header length is checked against
the file size and `HEADER_MAX_BYTES` before the header is parsed; the header is strict JSON
(no duplicate keys, bounded depth); the metadata is validated by the typed schema (config -> `Cell`,
whose id is recomputed); the network is built from that config and every tensor's name, shape and
dtype must be the built model's (no missing, no extra); NaN and infinite values are refused. Each
problem is a `ModelFileError`: one line naming the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_bench.inputs import InputError, open_regular, parse_json

MODEL_FORMAT = "resnet-bench-model/1"
KINDS = ("final", "best")
# The largest header this suite writes: ResNet-1202 has ~3,600 tensors at ~120 bytes each plus a
# config and metrics of a few kB: well under 1 MiB. A larger claim is not a model file of ours.
HEADER_MAX_BYTES = 16 * 2**20
# ResNet-152 at width 64 is 60.2M parameters = 241 MB in float32; 4 GiB is a wide margin.
FILE_MAX_BYTES = 4 * 2**30
# safetensors dtype name -> bytes per element; the only dtypes a model of ours holds (float32
# weights, int64 BatchNorm counters) plus the half types an exported or converted file may use.
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}
META = "resnet_bench."


class ModelFileError(InputError):
    """A model file that cannot be used: one line naming it and what is wrong."""


def model_file_name(cell_id: str, kind: str) -> str:
    return f"{cell_id}.safetensors" if kind == "final" else f"{cell_id}.{kind}.safetensors"


# ---- writing ---------------------------------------------------------------------------------------


def dataset_info(meta: dict) -> dict:
    """What a model file keeps of the prepared dataset's meta.json: enough to feed the network."""
    return {k: meta.get(k) for k in ("name", "classes", "num_classes", "channels", "height", "width", "mean",
                                     "std", "content_sha256")}


def model_bytes(state_dict: dict, *, cell_config: dict, kind: str, epoch: int, metrics: dict,
                dataset: dict) -> bytes:
    """A model file's bytes (safetensors) for a state dict and what it came from."""
    import torch
    from safetensors.torch import save

    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}; valid: {', '.join(KINDS)}")
    # channels_last weights are stored NCHW-contiguous (safetensors needs contiguous tensors); the
    # values are the same, and an evaluation converts them back as the cell's runtime says.
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    metadata = {f"{META}format": MODEL_FORMAT, f"{META}cell_id": cell_config["cell_id"],
                f"{META}config": json.dumps(cell_config, sort_keys=True), f"{META}kind": kind,
                f"{META}epoch": str(int(epoch)), f"{META}metrics": json.dumps(metrics, sort_keys=True),
                f"{META}dataset": json.dumps(dataset, sort_keys=True)}
    return save(tensors, metadata=metadata)


def write_cell_models(record: dict, states: dict, folder: Path, prepared_meta: dict) -> dict:
    """An ok cell's model files in `folder`, from train_cell's record and its `on_models` states
    (`{kind: (epoch, state_dict)}`); returns the record's `models` block (file, bytes, sha256, epoch)."""
    import hashlib

    m, refs = record["metrics"], {}
    dataset = dataset_info(prepared_meta)
    for kind, (epoch, state) in states.items():
        e = record["epochs"][epoch - 1]
        # What these weights scored: the final test pass, or the best epoch's validation and test curve.
        metrics = ({k: m.get(k) for k in ("test_acc", "test_top5_acc", "test_loss", "best_val_acc", "best_val_epoch",
                                          "final_val_acc", "epochs_completed", "params")} if kind == "final" else
                   {k: e.get(k) for k in ("val_acc", "val_loss", "test_acc", "test_loss")})
        data = model_bytes(state, cell_config=record["config"], kind=kind, epoch=epoch, metrics=metrics,
                           dataset=dataset)
        name = model_file_name(record["cell_id"], kind)
        (Path(folder) / name).write_bytes(data)
        refs[kind] = {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "epoch": epoch}
    return refs


# ---- reading ---------------------------------------------------------------------------------------


@dataclass
class ModelFile:
    """A validated model file: its cell, what it scored, its dataset, and its tensors (CPU)."""

    path: Path
    cell: Any  # resnet_bench.config.Cell
    kind: str
    epoch: int
    metrics: dict
    dataset: dict
    tensors: dict = field(repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.dataset["num_classes"])

    @property
    def in_channels(self) -> int:
        return int(self.dataset["channels"])


def _header(path: Path, f, size: int) -> tuple[int, dict]:
    """The header's length and its JSON, checked before anything else is read."""
    head = f.read(8)
    if len(head) < 8:
        raise ModelFileError(f"{path}: {size} bytes: not a safetensors file (too short for its 8-byte header "
                             "length)")
    if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:4] == b"PK\x03\x04":
        what = "a pickle" if head[:1] == b"\x80" else "a zip archive (torch.save)"
        raise ModelFileError(f"{path}: {what}, not a safetensors file; refused unread (unpickling runs code)")
    (n,) = struct.unpack("<Q", head)
    if n > HEADER_MAX_BYTES or n + 8 > size:
        raise ModelFileError(f"{path}: header length {n} bytes exceeds "
                             f"{'the file (' + str(size) + ' bytes)' if n + 8 > size else 'the cap'} "
                             f"(at most {HEADER_MAX_BYTES} bytes): not a model file of resnet-bench")
    raw = f.read(n)
    if raw[:1] != b"{":
        raise ModelFileError(f"{path}: not a safetensors file (its header is not a JSON object)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(f"{path}: its header is not UTF-8") from None
    try:
        doc = parse_json(text, str(path))
    except InputError as err:
        raise ModelFileError(f"{err} (safetensors header)") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path}: its header is not a JSON object")
    return n, doc


def _check_entries(path: Path, header: dict, data_bytes: int) -> dict[str, str]:
    """Every tensor entry well formed and inside the data; returns the metadata map."""
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise ModelFileError(f"{path}: no resnet-bench metadata (a safetensors file, but not a model file of "
                             "resnet-bench: its __metadata__ must map strings to strings)")
    for name, entry in header.items():
        ok = (isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}
              and entry["dtype"] in DTYPE_BYTES and isinstance(entry["shape"], list)
              and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in entry["shape"])
              and isinstance(entry["data_offsets"], list) and len(entry["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) for o in entry["data_offsets"]))
        if not ok:
            raise ModelFileError(f"{path}: tensor {name[:80]!r}: malformed entry (dtype one of "
                                 f"{', '.join(DTYPE_BYTES)}, shape a list of ints, data_offsets [begin, end])")
        begin, end = entry["data_offsets"]
        want = math.prod(entry["shape"]) * DTYPE_BYTES[entry["dtype"]]
        if not 0 <= begin <= end <= data_bytes or end - begin != want:
            raise ModelFileError(f"{path}: tensor {name[:80]!r}: data_offsets {[begin, end]} do not hold its "
                                 f"shape {entry['shape']} ({want} bytes) inside the file's {data_bytes} data bytes")
    return metadata


def _metadata_json(path: Path, metadata: dict, key: str, kind: type):
    try:
        value = parse_json(metadata[f"{META}{key}"], f"{path}: metadata {key}")
    except KeyError:
        raise ModelFileError(f"{path}: metadata {META}{key} missing (not a model file of resnet-bench, or "
                             "written by another version)") from None
    except InputError as err:
        raise ModelFileError(str(err)) from None
    if not isinstance(value, kind):
        raise ModelFileError(f"{path}: metadata {META}{key} is not a JSON {kind.__name__}")
    return value


def _cell(path: Path, metadata: dict):
    from pydantic import ValidationError

    from resnet_bench import config as cfg
    from resnet_bench.config.errors import _problems

    if metadata.get(f"{META}format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: metadata {META}format is {str(metadata.get(f'{META}format'))[:60]!r}, "
                             f"not {MODEL_FORMAT!r} (not a model file of this version of resnet-bench)")
    config = _metadata_json(path, metadata, "config", dict)
    try:
        cell = cfg.Cell.model_validate(config)
    except ValidationError as err:
        raise ModelFileError(_problems(err, cfg.Cell, f"{path}: metadata", "config")[0]) from None
    claimed = metadata.get(f"{META}cell_id")
    if claimed != cell.cell_id:
        raise ModelFileError(f"{path}: metadata cell_id {str(claimed)[:20]!r} is not its config's "
                             f"{cell.cell_id} (edited or forged)")
    return cell


def read_model_file(path: str | os.PathLike, *, before_tensors=None) -> ModelFile:
    """A model file validated as far as the file goes (header, metadata, finite tensors). The tensors
    are checked against the network in `build_network`. `before_tensors(cell)` runs once the metadata is
    valid and before torch touches a tensor (an evaluation pins the cell's numeric environment there:
    ATen, MKL and oneDNN fix their kernels at their first computation)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > FILE_MAX_BYTES:
                raise ModelFileError(f"{path}: {size} bytes, larger than {FILE_MAX_BYTES // 2**30} GiB: not a "
                                     "model file of resnet-bench")
            n, header = _header(path, f, size)
            metadata = _check_entries(path, header, size - 8 - n)
            f.seek(0)
            data = f.read(size + 1)
    except OSError as err:
        raise ModelFileError(f"{path}: {err.strerror or err}") from None
    if len(data) != size:
        raise ModelFileError(f"{path}: changed while it was read")
    cell = _cell(path, metadata)
    kind = metadata.get(f"{META}kind")
    if kind not in KINDS:
        raise ModelFileError(f"{path}: metadata kind {str(kind)[:20]!r}; valid: {', '.join(KINDS)}")
    try:
        epoch = int(metadata.get(f"{META}epoch", ""))
    except ValueError:
        raise ModelFileError(f"{path}: metadata epoch is not an integer") from None
    if not 1 <= epoch <= cell.recipe.epochs:
        raise ModelFileError(f"{path}: metadata epoch {epoch} is outside the cell's 1..{cell.recipe.epochs}")
    metrics = _metadata_json(path, metadata, "metrics", dict)
    dataset = _metadata_json(path, metadata, "dataset", dict)
    for key in ("num_classes", "channels"):
        if not isinstance(dataset.get(key), int) or isinstance(dataset.get(key), bool) or dataset[key] < 1:
            raise ModelFileError(f"{path}: metadata dataset.{key} must be a positive integer")
    if before_tensors:
        before_tensors(cell)
    try:
        tensors = load(data)
    except SafetensorError as err:
        raise ModelFileError(f"{path}: not a valid safetensors file ({str(err).splitlines()[0][:200]})") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(t.isfinite().all()):
            bad = "NaN" if bool(t.isnan().any()) else "infinite"
            raise ModelFileError(f"{path}: tensor {name[:80]!r} holds {bad} values: refused")
    return ModelFile(path=path, cell=cell, kind=kind, epoch=epoch, metrics=metrics, dataset=dataset,
                     tensors=tensors)


def build_network(mf: ModelFile):
    """The cell's network with the file's weights: built from the metadata config, every tensor's name,
    shape and dtype checked against it, then loaded strictly. Returns the module (CPU, eval mode)."""
    from resnet_bench.train import build_cell_model

    try:
        model = build_cell_model(mf.cell, mf.num_classes, mf.in_channels)
    except (ValueError, KeyError) as err:
        raise ModelFileError(f"{mf.path}: its config does not build a network ({err})") from None
    want = model.state_dict()
    missing = [k for k in want if k not in mf.tensors]
    extra = [k for k in mf.tensors if k not in want]
    if missing or extra:
        detail = (f"missing {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                  if missing else "")
        detail += ("; " if missing and extra else "") + (
            f"unexpected {extra[0][:80]!r}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
            if extra else "")
        raise ModelFileError(f"{mf.path}: its tensors do not match the network its config builds "
                             f"({mf.cell.model}, width {mf.cell.arch.width}): {detail}")
    for name, ref in want.items():
        got = mf.tensors[name]
        if tuple(got.shape) != tuple(ref.shape) or got.dtype != ref.dtype:
            raise ModelFileError(f"{mf.path}: tensor {name!r} is {got.dtype} {list(got.shape)} but the network "
                                 f"its config builds ({mf.cell.model}) has {ref.dtype} {list(ref.shape)}")
    model.load_state_dict(mf.tensors, strict=True)
    return model.eval()


def load_model(path: str | os.PathLike, *, device: str = "cpu"):
    """A trained model from its file, in eval mode on `device`: `resnet_bench.load_model(path)`.

    The module's `model_file` attribute is the validated `ModelFile` (cell, kind, epoch, metrics,
    dataset with its mean and std).
    """
    mf = read_model_file(path)
    model = build_network(mf)
    model.model_file = mf
    return model.to(device)
