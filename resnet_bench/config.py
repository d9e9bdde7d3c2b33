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

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

# He et al. 2016 ("Identity Mappings in Deep Residual Networks"), Table 2 / Fig. 4:
# the five residual units; `original` is v1 (He et al. 2015), `full_preact` is v2.
# Only (e) is "v2", so the ablation's units (a)-(d) are labelled v1.
# He et al. 2016, Table 2 / Fig. 4: the five residual units (a)-(e). The schema is the one
# place these choices are written; resnet_bench.models builds them.
UNITS = ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")
VERSION_UNIT = {"v1": "original", "v2": "full_preact"}

UNIT_VERSION = {unit: ("v2" if unit == "full_preact" else "v1") for unit in UNITS}
SCHEDULES = ("step", "cosine", "onecycle", "constant")
OPTIMIZERS = ("sgd",)  # the only optimiser train.py builds; the schema lists nothing it cannot run
DATASET_FORMATS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder")
BUILTIN_DATASETS = ("digits",)
REPORT_FORMATS = ("png", "svg", "pdf")
REPORT_CONTEXTS = ("paper", "notebook", "talk", "poster")

# YAML bounds: a config file is small; more aliases or nodes than this is an attack
# (a "billion laughs" alias bomb), not a configuration.
MAX_YAML_ALIASES = 64
MAX_YAML_NODES = 100_000
MAX_EPOCHS = 10_000  # ~60x the longest schedule in the papers (He et al. 2016: 164 epochs)


class ConfigError(ValueError):
    """Bad configuration: one line per problem, all problems at once."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


# ---- YAML: duplicate keys, tags and alias bombs refused ----------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and explicit tags, and bounds aliases."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise ConfigError(f"{self.name}:{mark.line + 1}: more than {MAX_YAML_ALIASES} YAML aliases; "
                                  "a config file needs none (refused as a possible alias bomb)")
        else:
            event = self.peek_event()
            tag = getattr(event, "tag", None)
            if tag is not None and tag != "!":
                raise ConfigError(f"{self.name}:{event.start_mark.line + 1}: YAML tag {tag!r} is not allowed; "
                                  "write plain values (tags are refused: they can construct objects)")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"{self.name}:{key_node.start_mark.line + 1}: duplicate key {key!r} "
                                  f"(first at line {seen[key]}); YAML would silently keep the last one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _node_count(node, memo: dict[int, int], depth: int = 0) -> int:
    """Nodes after alias expansion: shared subtrees count once per reference."""
    if id(node) in memo:
        return memo[id(node)]
    if depth > 200:
        raise ConfigError("YAML nesting deeper than 200 levels")
    if isinstance(node, yaml.MappingNode):
        n = 1 + sum(_node_count(k, memo, depth + 1) + _node_count(v, memo, depth + 1) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_node_count(v, memo, depth + 1) for v in node.value)
    else:
        n = 1
    memo[id(node)] = n
    return n


def parse_yaml(text: str, name: str = "<string>") -> Any:
    """Parse one YAML document with the strict loader; ConfigError (one line) on any problem."""
    loader = _StrictLoader(text)
    loader.name = name
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _node_count(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"{name}: more than {MAX_YAML_NODES} YAML nodes after alias expansion "
                              "(refused as a possible alias bomb)")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        raise ConfigError(f"{where}: invalid YAML: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{name}: invalid YAML: {err}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict:
    """A YAML file whose top level is a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = parse_yaml(path.read_text(), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# ---- constrained value types (each used wherever that kind of value appears) ---------------------

PositiveInt = Annotated[int, Field(ge=1)]
Fraction01 = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
Version = Literal["v1", "v2"]
Unit = Literal[UNITS]  # type: ignore[valid-type]


class Strict(BaseModel):
    """Base: unknown keys refused, no type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)


def _unique(values: list | None, what: str) -> None:
    if values is not None and len(set(map(str, values))) != len(values):
        dup = sorted({str(v) for v in values if list(map(str, values)).count(str(v)) > 1})
        raise ValueError(f"duplicate {what}: {', '.join(dup)}")


# ---- recipe ------------------------------------------------------------------------------------


class Augment(Strict):
    """On-device augmentation: zero-pad `crop_pad` pixels then random-crop back (He et al. 2015,
    Sec. 4.2: 4), and random horizontal flip."""

    crop_pad: int = Field(0, ge=0, le=64)
    flip: bool = False


class Recipe(Strict):
    """A complete training recipe: every field required (recipes name all of them)."""

    name: str
    epochs: int = Field(ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(ge=1, le=65_536)
    optimizer: Literal[OPTIMIZERS]  # type: ignore[valid-type]
    lr: float = Field(gt=0, le=100, allow_inf_nan=False)
    momentum: float = Field(ge=0, lt=1, allow_inf_nan=False)
    nesterov: bool
    weight_decay: float = Field(ge=0, lt=1, allow_inf_nan=False)
    schedule: Literal[SCHEDULES]  # type: ignore[valid-type]
    milestones: list[Fraction01]  # fractions of training where `step` multiplies lr by gamma
    gamma: float = Field(gt=0, le=1, allow_inf_nan=False)
    warmup_iters: int = Field(ge=0, le=10_000_000)
    warmup_lr: NonNegFloat
    label_smoothing: float = Field(ge=0, lt=1, allow_inf_nan=False)
    augment: Augment

    @model_validator(mode="after")
    def _rules(self):
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError(f"milestones must increase strictly, got {self.milestones}")
        if self.schedule == "step" and not self.milestones:
            raise ValueError("schedule 'step' needs at least one milestone (fractions in (0, 1))")
        if self.schedule != "step" and self.milestones:
            raise ValueError(f"milestones {self.milestones} are only used by schedule 'step', "
                             f"not {self.schedule!r}: remove them")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        if self.warmup_iters > 0 and self.warmup_lr <= 0:
            raise ValueError("warmup_iters > 0 needs warmup_lr > 0")
        return self


# Named training recipes. An experiment picks one by name and may override any field.
RECIPES: dict[str, dict[str, Any]] = {
    # He et al. 2016, Sec. 4.1 (CIFAR): SGD momentum 0.9, weight decay 1e-4,
    # batch 128, lr 0.1 divided by 10 at 32k and 48k of 64k iterations (50% and
    # 75%), lr 0.01 warm-up for ~400 iterations for the deepest nets, 4-pixel
    # zero padding + 32x32 random crop + horizontal flip.
    "he2016_cifar": {
        "epochs": 164, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
        "nesterov": False, "weight_decay": 1e-4, "schedule": "step", "milestones": [0.5, 0.75],
        "gamma": 0.1, "warmup_iters": 400, "warmup_lr": 0.01, "label_smoothing": 0.0,
        "augment": {"crop_pad": 4, "flip": True},
    },
    # He et al. 2015, Sec. 4.2 (CIFAR-10, Table 6): batch 128, lr 0.1 divided by 10 at
    # 32k and 48k iterations, stopped at 64k (45k/5k train/val split: 64k iterations of
    # 128 = 182 epochs of 45k), weight decay 1e-4, momentum 0.9, 4-pixel pad + crop + flip.
    # ResNet-110 warms up at 0.01 "until the training error is below 80% (about 400
    # iterations)"; a fixed 400 iterations here (applied to every depth: harmless for
    # shallower nets, which the paper trained without it).
    "he2015_cifar": {
        "epochs": 182, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
        "nesterov": False, "weight_decay": 1e-4, "schedule": "step", "milestones": [0.5, 0.75],
        "gamma": 0.1, "warmup_iters": 400, "warmup_lr": 0.01, "label_smoothing": 0.0,
        "augment": {"crop_pad": 4, "flip": True},
    },
    # Short cosine schedule for quick experiments (smoke tests, digits).
    "quick": {
        "epochs": 3, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
        "nesterov": True, "weight_decay": 5e-4, "schedule": "cosine", "milestones": [],
        "gamma": 0.1, "warmup_iters": 0, "warmup_lr": 0.0, "label_smoothing": 0.0,
        "augment": {"crop_pad": 0, "flip": False},
    },
}
RecipeName = Literal[tuple(RECIPES)]  # type: ignore[valid-type]
DEFAULT_RECIPE = "quick"


def _partial(model: type[BaseModel], model_name: str, **extra) -> type[BaseModel]:
    """`model` with every field optional (None = not given), keeping each field's constraints."""
    fields: dict[str, Any] = {}
    for key, info in model.model_fields.items():
        if key in extra:
            continue
        ann = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[key] = (Optional[ann], None)
    fields.update(extra)
    return create_model(model_name, __base__=Strict, __doc__=f"{model.__name__}, every field optional.", **fields)


# The `recipe:` section of an experiment: a recipe name and any fields to override.
RecipeSection = _partial(Recipe, "RecipeSection", name=(RecipeName, DEFAULT_RECIPE),
                         augment=(Optional[_partial(Augment, "AugmentSection")], None))


def resolve_recipe(section: dict) -> Recipe:
    """The named recipe with the section's overrides applied, validated as a whole."""
    sec = validate(RecipeSection, section, "recipe")
    given = sec.model_dump(exclude_none=True)
    name = given.pop("name")
    merged = deep_merge(RECIPES[name], given)
    return validate(Recipe, {"name": name, **merged}, "recipe")


# ---- architecture, runtime, bench, resources, grid -----------------------------------------------


class Arch(Strict):
    """Architecture options (training options live in Recipe)."""

    stem: Literal["cifar", "imagenet"] = "cifar"  # cifar: 3x3 stride-1, no max-pool (He 2015 Sec. 4.2)
    width: Optional[int] = Field(None, ge=1, le=4096)  # base channels; None = the family's (64 / 16)
    zero_init_residual: bool = False
    # "modern": torchvision/timm networks; "paper": the networks of He et al. 2015 (v1) / 2016 (v2)
    # as their authors' code builds them (resnet_bench.models.resolve_arch).
    variant: Literal["modern", "paper"] = "modern"
    shortcut: Optional[Literal["zero_pad", "projection"]] = None  # None: the variant's default
    bottleneck_stride: Optional[Literal["1x1", "3x3"]] = None  # None: the variant's default


class Runtime(Strict):
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]{1,2})?)$")
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    threads: Optional[int] = Field(None, ge=1, le=1024)  # CPU threads; None = cpus_per_trial
    deterministic: bool = True


class Bench(Strict):
    """The separate throughput/memory pass (resnet_bench.bench); defaults used by the CLI too."""

    enabled: bool = True
    batch_size: int = Field(64, ge=1, le=65_536)
    img_size: Optional[int] = Field(None, ge=1, le=4096)  # None = the dataset's size
    warmup: int = Field(3, ge=0, le=10_000)
    repeats: int = Field(5, ge=1, le=10_000)
    steps_per_repeat: int = Field(2, ge=1, le=10_000)


class Resources(Strict):
    cpus_per_trial: float = Field(1, gt=0, le=1024, allow_inf_nan=False)
    gpus_per_trial: float = Field(0, ge=0, le=64, allow_inf_nan=False)
    max_concurrent: Optional[int] = Field(None, ge=1, le=100_000)


def _registry() -> tuple[list[str], list[int]]:
    from resnet_bench.models import available_models

    names = available_models()
    return names, sorted({int(m.removeprefix("resnet").split("_")[0]) for m in names})


class Grid(Strict):
    """The axes; cells are their product. `models` replaces depths x versions/units."""

    versions: Optional[list[Version]] = None
    units: Optional[list[Unit]] = None
    depths: Optional[list[PositiveInt]] = None
    models: Optional[list[str]] = None
    datasets: list[DatasetName] = Field(default_factory=lambda: ["digits"])
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(default_factory=lambda: [0])

    @model_validator(mode="after")
    def _rules(self):
        for axis in ("versions", "units", "depths", "models", "datasets", "seeds"):
            _unique(getattr(self, axis), axis)
        names, depths = _registry()
        if self.models is not None:
            if self.depths or self.versions or self.units:
                raise ValueError("give either models, or depths with versions/units, not both")
            bad = [m for m in self.models if m not in names]
            if bad:
                raise ValueError(f"unknown model(s) {', '.join(map(repr, bad))}; valid: {', '.join(names)}")
            if not self.models:
                raise ValueError("models is empty")
        else:
            if self.versions is not None and self.units is not None:
                raise ValueError("give versions or units, not both (units (a)-(e) already fix the version)")
            if not self.depths:
                raise ValueError("depths is empty: give at least one depth (or a models list)")
            bad = [d for d in self.depths if d not in depths]
            if bad:
                raise ValueError(f"unknown depth(s) {', '.join(map(str, bad))}; valid: "
                                 f"{', '.join(map(str, depths))}")
            if not (self.versions or self.units):
                raise ValueError("versions (or units) is empty: give at least one")
        if not self.datasets:
            raise ValueError("datasets is empty: give at least one")
        if not self.seeds:
            raise ValueError("seeds is empty: give at least one")
        return self


class PaperResult(Strict):
    model: str
    unit: Unit
    dataset: DatasetName
    value: float = Field(ge=0, le=100, allow_inf_nan=False)


class Paper(Strict):
    """A published table to compare with, only when dataset, variant and recipe match."""

    citation: str = Field(min_length=1)
    statistic: str = Field(min_length=1)  # what the printed number is, e.g. "median of 5 runs"
    metric: Literal["test_error_pct"]
    dataset: DatasetName
    variant: str = Field(min_length=1)
    recipe: RecipeName
    results: list[PaperResult] = Field(min_length=1)


# Sections as a file or override gives them: every key optional; the whole is checked once merged.
GridSection = _partial(Grid, "GridSection")
ArchSection = _partial(Arch, "ArchSection")
RuntimeSection = _partial(Runtime, "RuntimeSection")
BenchSection = _partial(Bench, "BenchSection")
ResourcesSection = _partial(Resources, "ResourcesSection")


class ExperimentFile(Strict):
    """What `experiments/<name>.yaml` may contain (JSON Schema: `resnet-bench config schema`)."""

    description: str = ""
    grid: Optional[GridSection] = None  # type: ignore[valid-type]
    arch: Optional[ArchSection] = None  # type: ignore[valid-type]
    recipe: Optional[RecipeSection] = None  # type: ignore[valid-type]
    runtime: Optional[RuntimeSection] = None  # type: ignore[valid-type]
    bench: Optional[BenchSection] = None  # type: ignore[valid-type]
    resources: Optional[ResourcesSection] = None  # type: ignore[valid-type]
    paper: Optional[Paper] = None


class Experiment(Strict):
    """A resolved experiment: recipe complete, device decided."""

    name: str
    description: str = ""
    grid: Grid
    arch: Arch
    recipe: Recipe
    runtime: Runtime
    bench: Bench
    resources: Resources
    paper: Optional[Paper] = None

    @model_validator(mode="after")
    def _rules(self):
        dev, gpus = self.runtime.device, self.resources.gpus_per_trial
        if dev.startswith("cuda") and gpus <= 0:
            raise ValueError(f"runtime.device {dev!r} needs resources.gpus_per_trial > 0 "
                             "(a trial holds no GPU otherwise)")
        if dev == "cpu" and gpus > 0:
            raise ValueError(f"runtime.device 'cpu' with resources.gpus_per_trial {gpus}: the GPU would sit "
                             "idle; set gpus_per_trial 0 or device auto/cuda")
        if self.resolved_device() == "cpu" and self.runtime.amp != "none":
            raise ValueError(f"runtime.amp {self.runtime.amp!r} needs a CUDA device; this experiment runs on "
                             "cpu (resources.gpus_per_trial 0): set amp none")
        return self

    def resolved_device(self) -> str:
        """`auto` means CUDA exactly when a trial holds a GPU (decided by resources, not the driver)."""
        if self.runtime.device == "auto":
            return "cuda" if self.resources.gpus_per_trial > 0 else "cpu"
        return self.runtime.device


# ---- params.yaml --------------------------------------------------------------------------------


class DatasetFile(Strict):
    format: Literal[DATASET_FORMATS]  # type: ignore[valid-type]
    source: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^([0-9a-f]{64})?$")  # "" = not checked
    # Shorter side resized to this, then centre-cropped square (resnet_bench.data); 0 = keep sizes.
    # Required, as are the others: dvc.yaml passes every key on the command line.
    image_size: int = Field(ge=0, le=4096)


class PrepareParams(Strict):
    builtin: list[Literal[BUILTIN_DATASETS]] = Field(default_factory=lambda: ["digits"])  # type: ignore
    files: dict[DatasetName, DatasetFile] = Field(default_factory=dict)
    val_fraction: Fraction01 = 0.1
    split_seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _rules(self):
        _unique(self.builtin, "builtin datasets")
        clash = sorted(set(self.builtin) & set(self.files))
        if clash:
            raise ValueError(f"dataset(s) {', '.join(clash)} listed both as builtin and in files")
        return self

    def dataset_names(self) -> list[str]:
        return sorted([*self.builtin, *self.files])


class SweepParams(Strict):
    """params.yaml `sweep`: the active experiment and overrides of it (null = the experiment's)."""

    experiment: str = Field("smoke", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    versions: Optional[list[Version]] = None
    units: Optional[list[Unit]] = None
    depths: Optional[list[PositiveInt]] = None
    models: Optional[list[str]] = None
    datasets: Optional[list[DatasetName]] = None
    seeds: Optional[list[Annotated[int, Field(ge=0, le=2**31 - 1)]]] = None
    arch: Optional[ArchSection] = None  # type: ignore[valid-type]
    recipe: Optional[RecipeSection] = None  # type: ignore[valid-type]
    runtime: Optional[RuntimeSection] = None  # type: ignore[valid-type]
    bench: Optional[BenchSection] = None  # type: ignore[valid-type]
    resources: Optional[ResourcesSection] = None  # type: ignore[valid-type]
    ray_address: Optional[str] = None  # or RAY_ADDRESS; None = start Ray locally
    storage_path: Optional[str] = None  # Ray Tune storage; shared storage for multi-node runs
    allow_failures: bool = False
    # Retries of a trial whose worker or node died, resumed from its last epoch checkpoint
    # (Ray Tune FailureConfig; -1 = unlimited).
    max_failures: int = Field(2, ge=-1, le=1000)


class ReportParams(Strict):
    """params.yaml `report` (the report stage; its flags of the same names override)."""

    # Vector PDF for papers, PNG to look at.
    formats: list[Literal[REPORT_FORMATS]] = Field(default_factory=lambda: ["pdf", "png"],  # type: ignore
                                                   min_length=1)
    dpi: int = Field(150, ge=20, le=1200)  # PNG resolution
    context: Literal[REPORT_CONTEXTS] = "paper"  # type: ignore[valid-type]  # seaborn font scale
    pdf: bool = False  # also write PDF figures (adds pdf to formats)
    allow_missing: bool = True  # false: exit 1 when any cell is missing or failed

    @model_validator(mode="after")
    def _rules(self):
        _unique(self.formats, "formats")
        return self


class Params(Strict):
    """The whole params.yaml: one section per stage."""

    prepare: PrepareParams = Field(default_factory=PrepareParams)
    sweep: SweepParams = Field(default_factory=SweepParams)
    report: ReportParams = Field(default_factory=ReportParams)


GRID_AXES = ("versions", "units", "depths", "models", "datasets", "seeds")
SECTIONS = ("arch", "recipe", "runtime", "bench", "resources")


# ---- validation errors as one line each -----------------------------------------------------------


def _fmt_value(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys at `loc` (the parent of an unknown key), following nested model fields."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(part)
        if info is None:
            return []
        current = _model_in(info.annotation)
    return sorted(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / Annotated[...] / dict[str, Model], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _problems(err: ValidationError, model: type[BaseModel], where: str, prefix: str = "",
              sources: dict[str, str] | None = None) -> list[str]:
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if p not in ("function-after",))
        path = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc) or "(top level)"
        origin = _origin(path, sources, where) if sources else where
        if e["type"] == "extra_forbidden":
            valid = _field_names(model, loc[:-1])
            hint = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            out.append(f"{origin}: {path}: unknown key{did}; valid: {', '.join(valid) or '(none)'}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("missing",):
            out.append(f"{origin}: {path}: missing (required)")
        elif loc or e["type"] != "value_error":
            out.append(f"{origin}: {path}: {_fmt_value(e.get('input'))} is invalid: {msg}"
                       if e["type"] not in ("value_error", "assertion_error")
                       else f"{origin}: {path}: {msg}")
        else:
            out.append(f"{origin}: {path or '(top level)'}: {msg}")
    return out


def _origin(path: str, sources: dict[str, str], fallback: str) -> str:
    """The layer(s) that set `path` or keys under it; recipe defaults only when nothing else did."""
    if path in sources:
        return sources[path]
    under = sorted({s for k, s in sources.items() if k.startswith(path + ".")})
    given = [s for s in under if not s.startswith("recipe ")]
    return " + ".join(given or under) or fallback


def validate(model: type[BaseModel], data: Any, where: str, prefix: str = "",
              sources: dict[str, str] | None = None):
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_problems(err, model, where, prefix, sources)) from None


def validate_flags(model: type[BaseModel], values: dict[str, Any], flags: dict[str, str]):
    """Command-line values into a schema model; errors name the flag (`--batch: 0 is invalid: ...`)."""
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return model.model_validate(given)
    except ValidationError as err:
        lines = []
        for e in err.errors(include_url=False):
            key = str(e["loc"][0]) if e["loc"] else ""
            flag = flags.get(key, key or model.__name__)
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{flag}: {_fmt_value(e.get('input'))} is invalid: {msg}" if e["loc"] else f"{flag}: {msg}")
        raise ConfigError(lines) from None


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
        lines = []
        for path, value in _leaves(data).items():
            src = self.sources.get(path) or next(
                (s for k, s in self.sources.items() if path.startswith(k + ".")), "default")
            lines.append(f"{path}: {json.dumps(value)}  # {src}")
        return "\n".join(lines)


def available_experiments(experiments_dir: str | Path = "experiments") -> list[str]:
    return sorted(p.stem for p in Path(experiments_dir).glob("*.yaml"))


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
    path = Path(experiments_dir) / f"{name}.yaml"
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
                    "runtime": {}, "bench": {}, "resources": {}, "paper": None}
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
                       ("resources", Resources)):
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
                             **{k: sections[k] for k in ("grid", "arch", "recipe", "runtime", "bench", "resources")})
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
    if not meta_path.is_file():
        raise ConfigError(f"{prepared}: not a prepared dataset (no meta.json); run `dvc repro` (prepare stages)")
    meta = json.loads(meta_path.read_text())
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

    experiment: str
    model: str
    version: Version
    unit: Unit
    depth: PositiveInt
    dataset: DatasetName
    seed: int = Field(ge=0)
    arch: Arch
    recipe: Recipe
    runtime: Runtime
    bench: Bench
    data: Optional[DataIdentity] = None
    code_fingerprint: str = ""
    cell_id: str = ""

    @model_validator(mode="after")
    def _id(self):
        want = compute_cell_id(self)
        if self.cell_id and self.cell_id != want:
            raise ValueError(f"cell_id {self.cell_id!r} does not match its config (expected {want!r})")
        object.__setattr__(self, "cell_id", want)
        return self

    def label(self) -> str:
        unit = "" if self.unit in VERSION_UNIT.values() else f"[{self.unit}]"
        return f"{self.model}{unit}/{self.dataset}/seed{self.seed}"

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def compute_cell_id(cell: Cell) -> str:
    """First 12 hex digits of SHA-256 of the canonical config, experiment label excluded.

    The experiment name is only a label: the same cell in two experiments is the
    same computation and is trained once.
    """
    payload = cell.model_dump(mode="json", exclude={"experiment", "cell_id"})
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
    from resnet_bench.models import resolve_arch

    try:
        choice = resolve_arch(model, variant=arch.variant, unit=unit, shortcut=arch.shortcut,
                              bottleneck_stride=arch.bottleneck_stride)
    except ValueError as err:
        raise ConfigError(f"arch: {err}") from None
    return arch.model_copy(update={"shortcut": choice["shortcut"], "bottleneck_stride": choice["bottleneck_stride"]})


def expand_grid(exp: Experiment, *, data: dict[str, DataIdentity] | None = None,
                code_fingerprint: str = "") -> list[Cell]:
    """Every cell of the experiment: architectures x datasets x seeds, device and threads resolved."""
    runtime = exp.runtime.model_copy(update={"device": exp.resolved_device()})
    if runtime.device == "cpu" and runtime.threads is None:
        # CPU runs with a fixed thread count: one per CPU the trial holds.
        runtime = runtime.model_copy(update={"threads": max(1, int(exp.resources.cpus_per_trial))})
    cells = []
    for (model, version, unit, depth), ds, seed in itertools.product(
            _architectures(exp.grid), exp.grid.datasets, exp.grid.seeds):
        cells.append(Cell(experiment=exp.name, model=model, version=version, unit=unit, depth=depth,
                          dataset=ds, seed=seed, arch=resolved_arch(exp.arch, model, unit),
                          recipe=exp.recipe, runtime=runtime,
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


# ---- JSON Schema ----------------------------------------------------------------------------------


def experiment_json_schema() -> dict:
    """JSON Schema of an experiment file (editors: `# yaml-language-server: $schema=...`)."""
    schema = ExperimentFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "resnet-bench experiment"
    return schema


def params_json_schema() -> dict:
    schema = Params.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "resnet-bench params.yaml"
    return schema
