"""The record's `models` block: the model files an ok cell keeps beside its record (sweep.keep_models;
resnet_bench.models.files), and what the planner asks of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from pydantic import Field

from resnet_bench.config.schema import Strict


class ModelRef(Strict):
    """A model file kept beside the record: its name in cells/, size, hash, and the epoch of its weights."""

    file: Annotated[str, Field(pattern=r"^[0-9a-f]{12}(\.best)?\.safetensors$")]
    bytes: Annotated[int, Field(ge=1)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    epoch: Annotated[int, Field(ge=1)]


class Models(Strict):
    """`models`: the model files of an ok cell; null when it keeps none."""

    final: Optional[ModelRef] = None
    best: Optional[ModelRef] = None


def models_missing(rec, cells_dir: Path, keep_models: str) -> list[str]:
    """The model files an ok record should have beside it under `keep_models` (sweep.keep_models) but
    does not (not in the record, or the file is gone)."""
    if keep_models == "none" or rec.status != "ok":
        return []
    kinds = ("final", "best") if keep_models == "best" else ("final",)
    refs = {k: getattr(rec.models, k) if rec.models else None for k in kinds}
    return [k for k, ref in refs.items() if ref is None or not (Path(cells_dir) / ref.file).is_file()]
