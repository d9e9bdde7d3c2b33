"""Experiment configuration: load, merge, validate, expand into grid cells.

An experiment (`experiments/<name>.yaml`) holds the grid axes, the architecture
options, the training recipe, the runtime and the per-trial resources.
`params.yaml`'s `sweep` section names the active experiment and may override
any key of it, so `dvc exp run -S sweep.depths=[18,34]` works.

Validation happens here, before any training: one `ConfigError` naming the bad
value and the valid choices.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import yaml

# He et al. 2016 ("Identity Mappings in Deep Residual Networks"), Table 2 / Fig. 4:
# the five residual units; `original` is v1 (He et al. 2015), `full_preact` is v2.
# The unit decides the trunk (resnet_bench.models.ResNet); only (e) is "v2", so
# the ablation's units (a)-(d) are labelled v1.
from resnet_bench.models import UNITS, VERSION_UNIT  # noqa: E402

UNIT_VERSION = {unit: ("v2" if unit == "full_preact" else "v1") for unit in UNITS}

# Named training recipes. Every field can be overridden by an experiment.
RECIPES: dict[str, dict[str, Any]] = {
    # He et al. 2016, Sec. 4.1 (CIFAR): SGD momentum 0.9, weight decay 1e-4,
    # batch 128, lr 0.1 divided by 10 at 32k and 48k of 64k iterations (50% and
    # 75%), lr 0.01 warm-up for ~400 iterations for the deepest nets, 4-pixel
    # zero padding + 32x32 random crop + horizontal flip.
    "he2016_cifar": {
        "epochs": 164,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,
        "schedule": "step",
        "milestones": [0.5, 0.75],
        "gamma": 0.1,
        "warmup_iters": 400,
        "warmup_lr": 0.01,
        "label_smoothing": 0.0,
        "augment": {"crop_pad": 4, "flip": True},
    },
    # Short cosine schedule for quick experiments (smoke tests, digits).
    "quick": {
        "epochs": 3,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "milestones": [],
        "gamma": 0.1,
        "warmup_iters": 0,
        "warmup_lr": 0.0,
        "label_smoothing": 0.0,
        "augment": {"crop_pad": 0, "flip": False},
    },
}
SCHEDULES = ("step", "cosine", "onecycle", "constant")

DEFAULT_EXPERIMENT: dict[str, Any] = {
    "description": "",
    "grid": {"versions": ["v1", "v2"], "units": None, "depths": [18], "models": None,
             "datasets": ["digits"], "seeds": [0]},
    "arch": {"stem": "cifar", "width": None, "zero_init_residual": False},
    "recipe": {"name": "quick"},
    "runtime": {"device": "auto", "amp": "none", "channels_last": False, "compile": False,
                "threads": None, "deterministic": True},
    "bench": {"enabled": True, "batch_size": 32, "img_size": None, "warmup": 2, "repeats": 5},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": None},
}
GRID_AXES = ("versions", "units", "depths", "models", "datasets", "seeds")
# Keys of params.yaml's `sweep` section that steer the sweep itself, not the cells.
SWEEP_KEYS = ("experiment", "experiments_dir", "ray_address", "storage_path",
              "allow_failures", "max_failures", "results_dir", "prepared_dir")


class ConfigError(ValueError):
    """A bad value in an experiment or params file."""


def _choices(values) -> str:
    return ", ".join(str(v) for v in values)


def deep_merge(base: dict, override: dict) -> dict:
    """Recursively merge `override` into a copy of `base`; None in override means 'keep base'."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def available_experiments(experiments_dir: str | Path = "experiments") -> list[str]:
    return sorted(p.stem for p in Path(experiments_dir).glob("*.yaml"))


def load_experiment(sweep_params: dict, experiments_dir: str | Path = "experiments") -> dict:
    """The active experiment with params.yaml's `sweep` overrides applied (not yet validated)."""
    name = sweep_params.get("experiment")
    valid = available_experiments(experiments_dir)
    if name not in valid:
        raise ConfigError(f"unknown experiment {name!r} in sweep.experiment; valid: {_choices(valid)}")
    exp = deep_merge(DEFAULT_EXPERIMENT, load_yaml(Path(experiments_dir) / f"{name}.yaml"))
    exp["name"] = name
    overrides = {k: v for k, v in sweep_params.items() if k not in SWEEP_KEYS}
    grid_overrides = {k: overrides.pop(k) for k in list(overrides) if k in GRID_AXES}
    unknown = sorted(set(overrides) - set(DEFAULT_EXPERIMENT))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {_choices(unknown)} in params.yaml sweep section; valid: "
            f"{_choices(sorted(set(SWEEP_KEYS) | set(GRID_AXES) | set(DEFAULT_EXPERIMENT)))}")
    exp = deep_merge(exp, overrides)
    # An axis override replaces the axis; `units` and `versions` are alternatives.
    for axis, value in grid_overrides.items():
        if value is None:
            continue
        exp["grid"][axis] = value
        if axis == "units":
            exp["grid"]["versions"] = None
        if axis == "versions":
            exp["grid"]["units"] = None
    return exp


def resolve_recipe(recipe: dict) -> dict:
    name = recipe.get("name", "quick")
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; valid: {_choices(RECIPES)}")
    resolved = deep_merge(RECIPES[name], {k: v for k, v in recipe.items() if k != "name"})
    resolved["name"] = name
    unknown = sorted(set(resolved) - set(RECIPES[name]) - {"name"})
    if unknown:
        raise ConfigError(f"unknown recipe key(s) {_choices(unknown)}; valid: {_choices(sorted(RECIPES[name]))}")
    if resolved["schedule"] not in SCHEDULES:
        raise ConfigError(f"unknown schedule {resolved['schedule']!r}; valid: {_choices(SCHEDULES)}")
    for key in ("epochs", "batch_size"):
        if not isinstance(resolved[key], int) or resolved[key] < 1:
            raise ConfigError(f"recipe.{key} must be a positive integer, got {resolved[key]!r}")
    return resolved


def _model_axes(grid: dict, valid_models: list[str]) -> list[tuple[str, str, str, int]]:
    """(model name, version, unit, depth) for every architecture in the grid."""
    if grid.get("models"):
        out = []
        for name in grid["models"]:
            if name not in valid_models:
                raise ConfigError(f"unknown model {name!r}; valid: {_choices(valid_models)}")
            depth, version = name.removeprefix("resnet").split("_")
            out.append((name, version, VERSION_UNIT[version], int(depth)))
        return out
    depths = grid.get("depths") or []
    valid_depths = sorted({int(m.removeprefix("resnet").split("_")[0]) for m in valid_models})
    for depth in depths:
        if depth not in valid_depths:
            raise ConfigError(f"unknown depth {depth!r}; valid: {_choices(valid_depths)}")
    if grid.get("units"):
        for unit in grid["units"]:
            if unit not in UNITS:
                raise ConfigError(f"unknown unit {unit!r}; valid: {_choices(UNITS)}")
        pairs = [(UNIT_VERSION[u], u) for u in grid["units"]]
    else:
        versions = grid.get("versions") or []
        for version in versions:
            if version not in VERSION_UNIT:
                raise ConfigError(f"unknown version {version!r}; valid: {_choices(VERSION_UNIT)}")
        pairs = [(v, VERSION_UNIT[v]) for v in versions]
    return [(f"resnet{d}_{v}", v, u, d) for d in depths for v, u in pairs]


def cell_id(config: dict) -> str:
    """Stable id of a cell: SHA-256 of its canonical resolved config, experiment label excluded.

    The experiment name is only a label: the same cell in two experiments is
    the same computation and is trained once.
    """
    payload = {k: v for k, v in config.items() if k not in ("experiment", "cell_id")}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def resolve_device(device: str, gpus_per_trial: float = 0) -> str:
    """`auto` means CUDA exactly when the trial holds a GPU (decided by resources, not the driver)."""
    if device == "auto":
        return "cuda" if gpus_per_trial and gpus_per_trial > 0 else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; valid: auto, cpu, cuda")
    return device


def expand_grid(exp: dict, *, valid_datasets: list[str], valid_models: list[str],
                device: str | None = None) -> list[dict]:
    """Every cell of the experiment as a fully resolved config (validated first).

    valid_datasets: names that `prepare` provides (params.yaml prepare section).
    valid_models: `resnet_bench.models.available_models()`.
    """
    grid = exp["grid"]
    for axis in grid:
        if axis not in GRID_AXES:
            raise ConfigError(f"unknown grid axis {axis!r}; valid: {_choices(GRID_AXES)}")
    archs = _model_axes(grid, valid_models)
    for name, *_ in archs:
        if name not in valid_models:
            raise ConfigError(f"unknown model {name!r}; valid: {_choices(valid_models)}")
    datasets = grid.get("datasets") or []
    for ds in datasets:
        if ds not in valid_datasets:
            raise ConfigError(f"unknown dataset {ds!r}; valid: {_choices(valid_datasets)} "
                              "(datasets listed in params.yaml prepare section)")
    seeds = grid.get("seeds") or []
    for seed in seeds:
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seeds must be non-negative integers, got {seed!r}")
    if not (archs and datasets and seeds):
        raise ConfigError("the grid is empty: versions/units/models, depths, datasets and seeds "
                          "must each have at least one value")
    stem = exp["arch"].get("stem")
    if stem not in ("cifar", "imagenet"):
        raise ConfigError(f"unknown stem {stem!r}; valid: cifar, imagenet")
    recipe = resolve_recipe(exp["recipe"])
    runtime = dict(exp["runtime"])
    gpus = exp["resources"].get("gpus_per_trial") or 0
    if not isinstance(gpus, (int, float)) or gpus < 0:
        raise ConfigError(f"resources.gpus_per_trial must be a number >= 0, got {gpus!r}")
    runtime["device"] = resolve_device(device or runtime.get("device", "auto"), gpus)
    if runtime["amp"] not in ("none", "bf16", "fp16"):
        raise ConfigError(f"unknown amp {runtime['amp']!r}; valid: none, bf16, fp16")
    if runtime["device"] == "cpu":
        # CPU runs in float32 with a fixed thread count: one per CPU the trial holds.
        runtime["amp"] = "none"
        runtime["threads"] = runtime.get("threads") or int(max(1, exp["resources"]["cpus_per_trial"]))
    cells = []
    for (model, version, unit, depth), ds, seed in itertools.product(archs, datasets, seeds):
        config = {
            "experiment": exp["name"],
            "model": model,
            "version": version,
            "unit": unit,
            "depth": depth,
            "dataset": ds,
            "seed": seed,
            "arch": dict(exp["arch"]),
            "recipe": copy.deepcopy(recipe),
            "runtime": dict(runtime),
            "bench": dict(exp["bench"]),
        }
        config["cell_id"] = cell_id(config)
        cells.append(config)
    ids = [c["cell_id"] for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError("the grid has duplicate cells (repeated axis values?)")
    return cells


def prepared_datasets(params: dict) -> list[str]:
    """Dataset names the `prepare` stages produce (params.yaml `prepare` section)."""
    prep = params.get("prepare", {})
    return sorted(list(prep.get("builtin") or []) + list((prep.get("files") or {}).keys()))
