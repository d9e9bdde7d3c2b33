"""Cells: the grid expanded into typed `Cell`s, each with the id that names its numbers."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Optional

from pydantic import Field, ValidationError, model_validator

from resnet_bench.architectures import resolve_arch
from resnet_bench.config.errors import ConfigError, _problems
from resnet_bench.config.recipes import RECIPES
from resnet_bench.config.schema import (Arch, Bench, DatasetName, Experiment, Fraction01, Grid, ModelName, Name,
                                        PositiveInt, Recipe, Runtime, Strict, Unit, Version, _registry)
from resnet_bench.inputs import InputError, read_json
from resnet_bench.vocab import UNIT_VERSION, VERSION_UNIT, VERSION_UNITS

# ---- cells ----------------------------------------------------------------------------------------


class DataIdentity(Strict):
    """What determines a cell's data: the prepared artifact's content hash and its prepare settings."""

    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    val_fraction: Fraction01
    split_seed: int = Field(ge=0)


def data_identity(prepared: str | Path) -> DataIdentity:
    """Content hash and split settings of a prepared dataset folder (`data/prepared/<name>`).

    The hash is the one `prepare` computed and wrote to meta.json (resnet_bench.data.
    content_sha256); DVC keeps the folder and its meta consistent.
    """
    meta_path = Path(prepared) / "meta.json"
    if not meta_path.exists():
        raise ConfigError(f"{prepared}: not a prepared dataset (no meta.json); run `dvc repro` (prepare stages)")
    try:
        meta = read_json(meta_path)
    except InputError as err:
        raise ConfigError(f"{err}; rerun its prepare stage (`dvc repro`)") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    classes, train = meta.get("num_classes"), (meta.get("counts") or {}).get("train")
    if isinstance(classes, int) and classes < 2:
        raise ConfigError(f"{meta_path}: the dataset has {classes} class(es); a classifier needs at least 2 "
                          "(add a class folder, or use another dataset)")
    if isinstance(train, int) and isinstance(classes, int) and train < classes:
        raise ConfigError(f"{meta_path}: {train} training image(s) for {classes} classes; every class needs "
                          "training images (add images: at least 2 per class, one of each is held out for validation)")
    if not meta.get("content_sha256"):
        raise ConfigError(f"{meta_path}: no content_sha256 (prepared by an older version); rerun its prepare "
                          "stage (`dvc repro`)")
    split = meta.get("split") or {}
    try:
        return DataIdentity(content_sha256=meta["content_sha256"], val_fraction=split.get("val_fraction"),
                            split_seed=split.get("seed"))
    except ValidationError as err:
        raise ConfigError(_problems(err, DataIdentity, str(meta_path))) from None


class Cell(Strict):
    """One grid cell: everything that determines its numbers, plus the experiment label."""

    experiment: Name
    model: ModelName
    version: Version
    unit: Unit
    depth: PositiveInt
    dataset: DatasetName
    seed: int = Field(ge=0)
    arch: Arch
    recipe: Recipe
    runtime: Runtime
    bench: Bench
    # The fraction of one GPU the trial holds (resources.gpus_per_trial; 0.5 = two trials share a GPU):
    # it caps the trial's CUDA memory, and a half-GPU's loop throughput is not a GPU's. None on CPU.
    gpu_share: Optional[float] = Field(None, gt=0, le=1, allow_inf_nan=False)
    data: Optional[DataIdentity] = None
    # Processes that train the cell together (resources.workers_per_trial, DistributedDataParallel):
    # each takes recipe.batch_size / world_size images of every global batch (per_rank_batch).
    world_size: int = Field(1, ge=1, le=64)
    code_fingerprint: str = ""
    cell_id: str = ""

    @model_validator(mode="after")
    def _id(self):
        if self.model != f"resnet{self.depth}_{self.version}":
            raise ValueError(f"model {self.model!r} is not depth {self.depth}, version {self.version} "
                             f"(resnet{self.depth}_{self.version})")
        if self.unit not in VERSION_UNITS[self.version]:
            raise ValueError(f"unit {self.unit!r} is not a {self.version} unit; valid: "
                             f"{', '.join(VERSION_UNITS[self.version])}")
        if self.recipe.batch_size % self.world_size:
            raise ValueError(f"recipe.batch_size {self.recipe.batch_size} does not split over world_size "
                             f"{self.world_size}")
        want = compute_cell_id(self)
        if self.cell_id and self.cell_id != want:
            raise ValueError(f"cell_id {self.cell_id!r} does not match its config (expected {want!r})")
        object.__setattr__(self, "cell_id", want)
        return self

    @property
    def per_rank_batch(self) -> int:
        """Images of each global batch that one worker trains on."""
        return self.recipe.batch_size // self.world_size

    @property
    def bn_mode(self) -> str:
        """Batch norm statistics over each worker's images ("per_rank") or the global batch ("sync")."""
        return "sync" if self.arch.sync_bn else "per_rank"

    def label(self) -> str:
        unit = "" if self.unit in VERSION_UNIT.values() else f"[{self.unit}]"
        return f"{self.model}{unit}/{self.dataset}/seed{self.seed}"

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def compute_cell_id(cell: Cell) -> str:
    """First 12 hex digits of SHA-256 of the canonical config, experiment label excluded.

    The experiment name is only a label: the same cell in two experiments is the
    same computation and is trained once. The bench's re-measurement policy
    (`bench.cv_max`, `bench.remeasure`) decides how often a measurement is repeated,
    not what is trained or measured: it is left out too (records written before it
    existed keep their ids).
    """
    payload = cell.model_dump(mode="json", exclude={"experiment": True, "cell_id": True,
                                                    "bench": {"cv_max", "remeasure"}})
    # The keys added for multi-worker cells enter the hash only away from their defaults: every
    # one-process cell keeps the id it had before them. World size and BN mode fix the per-rank batch.
    if payload["world_size"] == 1:
        del payload["world_size"]
    if not payload["arch"]["sync_bn"]:
        del payload["arch"]["sync_bn"]
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _architectures(grid: Grid) -> list[tuple[str, str, str, int]]:
    """(model name, version, unit, depth) for every architecture in the grid."""
    if grid.models:
        out = []
        for name in grid.models:
            depth, version = name.removeprefix("resnet").split("_")
            out.append((name, version, VERSION_UNIT[version], int(depth)))
        return out
    pairs = ([(UNIT_VERSION[u], u) for u in grid.units] if grid.units
             else [(v, VERSION_UNIT[v]) for v in grid.versions or []])
    names, _ = _registry()
    archs = [(f"resnet{d}_{v}", v, u, d) for d in grid.depths or [] for v, u in pairs]
    bad = sorted({a[0] for a in archs if a[0] not in names})
    if bad:
        raise ConfigError(f"grid: no registered model {', '.join(bad)}; valid: {', '.join(names)}")
    return archs


def resolved_arch(arch: Arch, model: str, unit: str) -> Arch:
    """The arch with the variant's shortcut and bottleneck stride written out (what is built)."""
    try:
        choice = resolve_arch(model, variant=arch.variant, unit=unit, shortcut=arch.shortcut,
                              bottleneck_stride=arch.bottleneck_stride)
    except ValueError as err:
        raise ConfigError(f"arch: {err}") from None
    return arch.model_copy(update={"shortcut": choice["shortcut"], "bottleneck_stride": choice["bottleneck_stride"]})


def expand_grid(exp: Experiment, *, data: dict[str, DataIdentity] | None = None,
                code_fingerprint: str = "") -> list[Cell]:
    """Every cell of the experiment: architectures x datasets x seeds, device and threads resolved."""
    runtime = exp.resolved_runtime()
    if runtime.device == "cpu" and runtime.threads is None:
        # CPU runs with a fixed thread count: one per CPU the trial holds.
        runtime = runtime.model_copy(update={"threads": max(1, int(exp.resources.cpus_per_trial))})
    cells = []
    for (model, version, unit, depth), ds, seed in itertools.product(
            _architectures(exp.grid), exp.grid.datasets, exp.grid.seeds):
        cells.append(Cell(experiment=exp.name, model=model, version=version, unit=unit, depth=depth,
                          dataset=ds, seed=seed, arch=resolved_arch(exp.arch, model, unit),
                          recipe=exp.recipe, runtime=runtime, gpu_share=exp.gpu_share(),
                          world_size=exp.resources.workers_per_trial,
                          bench=exp.bench, data=(data or {}).get(ds), code_fingerprint=code_fingerprint))
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError("grid: duplicate cells (repeated axis values?)")
    return cells


def paper_mismatches(exp: Experiment) -> list[str]:
    """Why the experiment's cells are not the paper's setting (empty: comparable)."""
    paper = exp.paper
    if paper is None:
        return ["the experiment names no paper table"]
    out = []
    if paper.dataset not in exp.grid.datasets:
        out.append(f"dataset: the paper used {paper.dataset}, the grid has {', '.join(exp.grid.datasets)}")
    variant = exp.arch.variant
    if variant != paper.variant:
        out.append(f"model variant: the paper's is {paper.variant!r}, arch.variant is {variant!r}")
    want = Recipe.model_validate({"name": paper.recipe, **RECIPES[paper.recipe]})
    if exp.recipe != want:
        diff = [k for k in Recipe.model_fields if getattr(exp.recipe, k) != getattr(want, k)]
        out.append(f"recipe: differs from the paper's {paper.recipe!r} in {', '.join(diff)}")
    return out
