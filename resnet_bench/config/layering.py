"""Layering: defaults <- recipe <- experiment file <- params.yaml overrides <- flags, each
value's source recorded, the whole validated at once."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from resnet_bench.config.errors import ConfigError, _problems, validate
from resnet_bench.config.recipes import DEFAULT_RECIPE, RECIPES
from resnet_bench.config.schema import (GRID_AXES, SECTIONS, Arch, Bench, Experiment, ExperimentFile, Grid, Paper,
                                        Params, Recipe, RecipeSection, Resources, Runtime, SweepParams, Target)
from resnet_bench.config.yamlio import load_yaml

def resolve_recipe(section: dict) -> Recipe:
    """The named recipe with the section's overrides applied, validated as a whole."""
    sec = validate(RecipeSection, section, "recipe")
    given = sec.model_dump(exclude_none=True)
    name = given.pop("name")
    merged = deep_merge(RECIPES[name], given)
    return validate(Recipe, {"name": name, **merged}, "recipe")


# ---- layering and provenance ---------------------------------------------------------------------


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


def _leaves(d: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict to dotted paths (lists are leaves)."""
    if not isinstance(d, dict) or not d:
        return {prefix: d} if prefix else {}
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


class Layer:
    """One source of values: a label (file or flag set) and the keys it sets."""

    def __init__(self, label: str, values: dict):
        self.label, self.values = label, values


class Resolved:
    """A resolved, validated experiment and where each value came from."""

    def __init__(self, experiment: Experiment, sources: dict[str, str], params: Params):
        self.experiment, self.sources, self.params = experiment, sources, params

    def show(self) -> str:
        """YAML-ish listing: `key: value  # source`, like Hydra's `--cfg job`."""
        data = self.experiment.model_dump(mode="json")
        resolved = self.experiment.resolved_runtime().model_dump(mode="json")
        lines = []
        for path, value in _leaves(data).items():
            src = self.sources.get(path) or next(
                (s for k, s in self.sources.items() if path.startswith(k + ".")), "default")
            key = path.removeprefix("runtime.")
            if path.startswith("runtime.") and value is None and resolved.get(key) is not None:
                value, src = resolved[key], f"default on {resolved['device']}"  # the device's default
            lines.append(f"{path}: {json.dumps(value)}  # {src}")
        return "\n".join(lines)


def packaged(name: str) -> Path:
    """A file of the project template that ships inside the package (resnet_bench/project_template/: the
    repository's experiments/, params.yaml, dvc.yaml and plot template), on disk where the package is."""
    from importlib.resources import files

    return Path(str(files("resnet_bench") / "project_template" / name))


def experiment_file(name: str, experiments_dir: str | Path = "experiments") -> Path:
    """`<experiments_dir>/<name>.yaml` if the project has it, else the packaged experiment of that name."""
    own = Path(experiments_dir) / f"{name}.yaml"
    # the project's own, whatever it is (a FIFO there is refused as one, not replaced by the package's)
    return own if own.exists() or own.is_symlink() else packaged(f"experiments/{name}.yaml")


def available_experiments(experiments_dir: str | Path = "experiments") -> list[str]:
    """The project's experiments and the packaged ones (a project's file of the same name wins)."""
    return sorted({p.stem for d in (Path(experiments_dir), packaged("experiments")) for p in d.glob("*.yaml")})


def load_params_or_defaults(path: str | Path, *, default_path: str = "params.yaml", stream=None) -> Params:
    """params.yaml; outside a project (the default path absent) the schema's defaults, with a note."""
    import sys

    if str(path) == default_path and not Path(path).exists():
        print(f"note: no {default_path} here: using the schema's defaults and the packaged experiments "
              "(`resnet-bench init DIR` writes a project)", file=stream or sys.stderr)
        return Params()
    return load_params(path)


def load_params(path: str | Path) -> Params:
    return validate(Params, load_yaml(path), str(path))


def resolve_experiment(params: Params, experiments_dir: str | Path = "experiments", *,
                       params_label: str = "params.yaml", extra: list[Layer] | None = None,
                       check_datasets: bool = True) -> Resolved:
    """Defaults <- recipe <- experiment file <- params.yaml sweep overrides <- extra layers."""
    name = params.sweep.experiment
    valid = available_experiments(experiments_dir)
    if name not in valid:
        raise ConfigError(f"{params_label}: sweep.experiment: unknown experiment {name!r}; "
                          f"valid: {', '.join(valid) or '(none in ' + str(experiments_dir) + ')'}")
    path = experiment_file(name, experiments_dir)
    file_exp = validate(ExperimentFile, load_yaml(path), str(path))
    layers = [Layer(str(path), file_exp.model_dump(exclude_unset=True, exclude_none=True))]
    layers.append(Layer(f"{params_label} sweep", _sweep_overrides(params.sweep)))
    layers += extra or []
    return resolve_layers(name, layers, params, check_datasets=check_datasets)


def _sweep_overrides(sweep: SweepParams) -> dict:
    """params.yaml sweep section as an experiment layer: axes into `grid`, sections as they are."""
    given = sweep.model_dump(exclude_unset=True, exclude_none=True)
    grid = {k: given.pop(k) for k in GRID_AXES if k in given}
    layer = {k: given[k] for k in SECTIONS if k in given and given[k]}
    if grid:
        layer["grid"] = grid
    return layer


def resolve_layers(name: str, layers: list[Layer], params: Params, *, check_datasets: bool = True) -> Resolved:
    """Merge layers over the defaults, validate the whole, and record each value's source."""
    merged: dict = {"name": name, "description": "", "grid": {}, "arch": {}, "recipe": {},
                    "runtime": {}, "bench": {}, "resources": {}, "target": {}, "paper": None}
    sources: dict[str, str] = {}
    for layer in layers:
        vals = copy.deepcopy(layer.values)
        grid = vals.pop("grid", None) or {}
        # An axis replaces the axis; `models` replaces depths x versions/units; versions and
        # units are alternatives.
        for axis, value in grid.items():
            if value is None:
                continue
            merged["grid"][axis] = value
            sources[f"grid.{axis}"] = layer.label
            alternatives = {"units": ("versions", "models"), "versions": ("units", "models"),
                            "models": ("versions", "units", "depths"), "depths": ("models",)}
            for other in alternatives.get(axis, ()):
                if other not in grid:
                    merged["grid"].pop(other, None)
                    sources.pop(f"grid.{other}", None)
        merged = deep_merge(merged, vals)
        for path in _leaves(vals):
            sources[path] = layer.label
    recipe_name = merged["recipe"].get("name", DEFAULT_RECIPE)
    if recipe_name in RECIPES:
        for key in _leaves({k: v for k, v in RECIPES[recipe_name].items()}):
            sources.setdefault(f"recipe.{key}", f"recipe {recipe_name}")
    # Validate each section and the grid first, so an error names its own source.
    problems: list[str] = []
    sections: dict[str, Any] = {}
    every = " + ".join(layer.label for layer in layers) or "config"
    for key, model in (("grid", Grid), ("arch", Arch), ("runtime", Runtime), ("bench", Bench),
                       ("resources", Resources), ("target", Target)):
        try:
            sections[key] = validate(model, merged[key], every, key, sources)
        except ConfigError as err:
            problems += err.problems
    try:
        sections["recipe"] = _validate_recipe(merged["recipe"], sources, every)
    except ConfigError as err:
        problems += err.problems
    if merged.get("paper") is not None:
        try:
            sections["paper"] = validate(Paper, merged["paper"], every, "paper", sources)
        except ConfigError as err:
            problems += err.problems
    if not problems:
        try:
            exp = Experiment(name=name, description=merged.get("description") or "", paper=sections.get("paper"),
                             **{k: sections[k] for k in ("grid", "arch", "recipe", "runtime", "bench", "resources",
                                                          "target")})
        except ValidationError as err:
            problems += _problems(err, Experiment, " + ".join(layer.label for layer in layers))
    if not problems and check_datasets:
        valid = params.prepare.dataset_names()
        bad = [d for d in exp.grid.datasets if d not in valid]
        if bad:
            problems.append(f"{sources.get('grid.datasets', 'config')}: grid.datasets: unknown dataset(s) "
                            f"{', '.join(map(repr, bad))}; valid: {', '.join(valid)} "
                            "(the datasets in params.yaml prepare: builtin and files)")
    if problems:
        raise ConfigError(problems)
    return Resolved(exp, sources, params)


def _validate_recipe(section: dict, sources: dict[str, str], where: str) -> Recipe:
    sec = validate(RecipeSection, section, where, "recipe", sources)
    given = sec.model_dump(exclude_none=True)
    name = given.pop("name")
    return validate(Recipe, {"name": name, **deep_merge(RECIPES[name], given)}, where, "recipe", sources)
