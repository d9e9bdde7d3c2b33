"""Configuration: one typed schema for everything a user can set.

Where values come from, lowest precedence first:

1. the schema's defaults (this module, the only place defaults are written);
2. the named training recipe (`RECIPES`, for the `recipe` section);
3. the experiment file, `experiments/<name>.yaml`;
4. `params.yaml`'s `sweep` section (so `dvc exp run -S sweep.depths=[18,34]` works);
5. command-line flags (`resnet-bench train`), which default to "not given".

Every layer is validated by pydantic 2 models in strict mode: unknown keys are
refused with the closest valid key suggested, strings are never read as
booleans or numbers, scalars never as lists, floats must be finite, ranges and
choices are checked, and cross-field rules sit next to the fields they join.
All errors are collected and reported together, one line each, naming the
file, the key path, the bad value and what is allowed, before any worker or
Ray starts. Cells reach trials as `Cell` objects; training code reads
attributes, never nested string keys.
"""

from resnet_bench.config.cells import (Cell, DataIdentity, compute_cell_id, data_identity, expand_grid,
                                       paper_mismatches, resolved_arch)
from resnet_bench.config.errors import ConfigError, validate, validate_flags
from resnet_bench.config.layering import (Layer, Resolved, available_experiments, deep_merge, experiment_file,
                                          load_params, load_params_or_defaults, packaged, resolve_experiment,
                                          resolve_layers, resolve_recipe)
from resnet_bench.config.recipes import DEFAULT_RECIPE, RECIPES
from resnet_bench.config.schema import (COMPILE_MODES, DEVICE_RUNTIME_DEFAULTS, GRID_AXES, MAX_EPOCHS, SECTIONS,
                                        Arch, Augment, Bench, DatasetFile, Experiment, ExperimentFile, Grid, Paper,
                                        PaperResult, Params, PrepareParams, PrepareRun, Recipe, RecipeSection,
                                        ReportParams, Resources, Runtime, SweepParams, Target, experiment_json_schema,
                                        params_json_schema)
from resnet_bench.config.yamlio import MAX_YAML_ALIASES, MAX_YAML_NODES, load_yaml, parse_yaml
from resnet_bench.vocab import (BUILTIN_DATASETS, DATASET_FORMATS, OPTIMIZERS, REPORT_CONTEXTS, REPORT_FORMATS,
                                SCHEDULES, UNIT_VERSION, UNITS, VERSION_UNIT)

__all__ = [
    "Arch", "Augment", "Bench", "Cell", "ConfigError", "DataIdentity", "DatasetFile", "Experiment",
    "ExperimentFile", "Grid", "Layer", "Paper", "PaperResult", "Params", "PrepareParams", "PrepareRun", "Recipe",
    "RecipeSection", "ReportParams", "Resolved", "Resources", "Runtime", "SweepParams", "Target",
    "BUILTIN_DATASETS", "COMPILE_MODES", "DATASET_FORMATS", "DEVICE_RUNTIME_DEFAULTS", "DEFAULT_RECIPE", "GRID_AXES", "MAX_EPOCHS", "MAX_YAML_ALIASES",
    "MAX_YAML_NODES", "OPTIMIZERS", "RECIPES", "REPORT_CONTEXTS", "REPORT_FORMATS", "SCHEDULES", "SECTIONS",
    "UNITS", "UNIT_VERSION", "VERSION_UNIT",
    "available_experiments", "compute_cell_id", "data_identity", "deep_merge", "expand_grid", "experiment_file",
    "experiment_json_schema", "load_params", "load_params_or_defaults", "load_yaml", "packaged", "paper_mismatches",
    "params_json_schema", "parse_yaml", "resolve_experiment", "resolve_layers", "resolve_recipe", "resolved_arch", "validate",
    "validate_flags",
]
