"""The disk a grid's model files take, from explicit inputs (no Ray, no training): `sweep --dry-run`
prints it, and a compute plan can call `model_disk_bytes` with the same inputs."""

from __future__ import annotations

from resnet_bench import config as cfg

# A model file's header (resnet_bench.models.files): per tensor its name, dtype, shape and offsets as JSON
# (about 100 bytes), plus the metadata (the cell's config, metrics and dataset: a few kB).
HEADER_BYTES_PER_TENSOR = 128
METADATA_BYTES = 16 * 1024


def files_per_cell(keep_models: str) -> int:
    """Model files an ok cell keeps under sweep.keep_models (final | best | none)."""
    return {"final": 1, "best": 2, "none": 0}[keep_models]


def model_file_bytes(cell: cfg.Cell, *, num_classes: int, in_channels: int) -> int:
    """Bytes of one model file of `cell`: every tensor of its state dict (parameters and BatchNorm buffers)
    x the bytes of its dtype (float32: 4, the int64 BatchNorm counters: 8), plus the header. The network is
    built on the meta device: shapes only, no memory."""
    import torch

    from resnet_bench.train import build_cell_model

    with torch.device("meta"):
        model = build_cell_model(cell, num_classes, in_channels)
    state = model.state_dict()
    data = sum(t.numel() * t.element_size() for t in state.values())
    return 8 + METADATA_BYTES + HEADER_BYTES_PER_TENSOR * len(state) + data


def model_disk_bytes(cells: list[cfg.Cell], *, metas: dict[str, dict], keep_models: str) -> dict:
    """The model files `cells` would keep: `{"files": n, "bytes": total}` (an upper bound: a diverged or
    failed cell keeps none). `metas`: each dataset's prepared meta.json (num_classes, channels)."""
    per_cell = files_per_cell(keep_models)
    if not per_cell:
        return {"files": 0, "bytes": 0}
    sizes: dict[tuple, int] = {}
    total = 0
    for cell in cells:
        meta = metas[cell.dataset]
        key = (cell.model, cell.unit, cell.arch.model_dump_json(), meta["num_classes"], meta["channels"])
        if key not in sizes:
            sizes[key] = model_file_bytes(cell, num_classes=meta["num_classes"], in_channels=meta["channels"])
        total += per_cell * sizes[key]
    return {"files": per_cell * len(cells), "bytes": total}


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"
