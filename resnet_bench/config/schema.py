"""The typed schema: every section a user can write, strict, with its defaults (the only place
defaults are written) and the rules that join fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

import re

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, field_validator, model_validator

from resnet_bench.config.recipes import DEFAULT_RECIPE, RECIPES
from resnet_bench.vocab import (BUILTIN_DATASETS, DATASET_FORMATS, DATASET_NAME_PATTERN, IMAGE_FORMATS, MODEL_PATTERN,
                                NAME_PATTERN, NUMERIC_PIN_LEVELS, OPTIMIZERS, REPORT_CONTEXTS, REPORT_FORMATS,
                                SCHEDULES, UNITS)

MAX_EPOCHS = 10_000  # ~60x the longest schedule in the papers (He et al. 2016: 164 epochs)

# ---- constrained value types (each used wherever that kind of value appears) ---------------------

PositiveInt = Annotated[int, Field(ge=1)]
Fraction01 = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
# Dataset names are also DVC params paths (`prepare.files.<name>`): no dots (vocab.DATASET_NAME_PATTERN).
DatasetName = Annotated[str, Field(pattern=DATASET_NAME_PATTERN)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]  # experiment and recipe names
ModelName = Annotated[str, Field(pattern=MODEL_PATTERN)]
# Free text a user writes (descriptions, citations), bounded: it is printed into reports.
Prose = Annotated[str, Field(max_length=2000)]
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


def _off(value):
    """`false` switches an optional augmentation off (a recipe's section, overridden by an experiment)."""
    return None if value is False else value


Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ResizedCrop(Strict):
    """torchvision RandomResizedCrop(size, scale, ratio) (Szegedy et al. 2015), its defaults; the box is
    sampled inside each image's true extent (resnet_bench.data.augment)."""

    size: int = Field(ge=1, le=1024)
    scale: list[Positive] = Field(default_factory=lambda: [0.08, 1.0], min_length=2, max_length=2)
    ratio: list[Positive] = Field(default_factory=lambda: [3 / 4, 4 / 3], min_length=2, max_length=2)

    @model_validator(mode="after")
    def _rules(self):
        if not self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale {self.scale}: need 0 < low <= high <= 1 (fractions of the image area)")
        if self.ratio[0] > self.ratio[1]:
            raise ValueError(f"ratio {self.ratio}: need low <= high (width / height)")
        return self


class ScaleJitter(Strict):
    """He et al. 2015 Sec. 3.4: shorter side uniform in [256, 480], a random 224 x 224 crop."""

    min_size: int = Field(256, ge=1, le=4096)
    max_size: int = Field(480, ge=1, le=4096)
    crop: int = Field(224, ge=1, le=4096)

    @model_validator(mode="after")
    def _rules(self):
        if not self.crop <= self.min_size <= self.max_size:
            raise ValueError(f"need crop <= min_size <= max_size, got {self.crop}, {self.min_size}, {self.max_size}")
        return self


class ColorJitter(Strict):
    """torchvision ColorJitter(brightness, contrast, saturation); fb.resnet.torch's ImageNet values 0.4."""

    brightness: float = Field(0.4, ge=0, le=10, allow_inf_nan=False)
    contrast: float = Field(0.4, ge=0, le=10, allow_inf_nan=False)
    saturation: float = Field(0.4, ge=0, le=10, allow_inf_nan=False)


class Lighting(Strict):
    """AlexNet PCA lighting noise, fb.resnet.torch's Lighting(0.1, pca.eigval, pca.eigvec)."""

    alphastd: float = Field(0.1, ge=0, le=10, allow_inf_nan=False)


class ResolutionSchedule(Strict):
    """FFCV's progressive resizing (ffcv-imagenet rn50 configs: 160 -> 192 px, ramp over epochs 65-76 of
    88, multiples of 32): the train crop size per epoch; the ramp ends are fractions of training."""

    min_res: int = Field(160, ge=1, le=1024)
    max_res: int = Field(192, ge=1, le=1024)
    start_ramp: float = Field(65 / 88, ge=0, le=1, allow_inf_nan=False)
    end_ramp: float = Field(76 / 88, ge=0, le=1, allow_inf_nan=False)
    step: int = Field(32, ge=1, le=1024)

    @model_validator(mode="after")
    def _rules(self):
        if self.min_res > self.max_res or self.start_ramp >= self.end_ramp:
            raise ValueError("need min_res <= max_res and start_ramp < end_ramp")
        return self


_OPTIONAL_AUGMENTS = ("resized_crop", "scale_jitter", "color_jitter", "lighting", "resolution_schedule")


class Augment(Strict):
    """On-device augmentation (resnet_bench.data.augment): zero-pad `crop_pad` pixels then random-crop
    back (He et al. 2015, Sec. 4.2: 4), or a resizing crop (resized_crop, scale_jitter); flip; colour
    (color_jitter, lighting); the crop size per epoch (resolution_schedule). `false` or null: off."""

    crop_pad: int = Field(0, ge=0, le=64)
    flip: bool = False
    resized_crop: Optional[ResizedCrop] = None
    scale_jitter: Optional[ScaleJitter] = None
    color_jitter: Optional[ColorJitter] = None
    lighting: Optional[Lighting] = None
    resolution_schedule: Optional[ResolutionSchedule] = None

    @field_validator(*_OPTIONAL_AUGMENTS, mode="before")
    @classmethod
    def _false_is_off(cls, value):
        return _off(value)

    @model_validator(mode="after")
    def _rules(self):
        crops = [k for k in ("resized_crop", "scale_jitter") if getattr(self, k) is not None]
        if len(crops) > 1:
            raise ValueError("resized_crop and scale_jitter both crop: give one")
        if crops and self.crop_pad:
            raise ValueError(f"crop_pad {self.crop_pad} and {crops[0]} both crop: give one (crop_pad 0)")
        if self.resolution_schedule is not None and self.resized_crop is None:
            raise ValueError("resolution_schedule sets resized_crop's size per epoch: it needs resized_crop")
        return self


class Recipe(Strict):
    """A complete training recipe: every field required (recipes name all of them)."""

    name: Name
    epochs: int = Field(ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(ge=2, le=65_536)  # BatchNorm cannot train on a batch of one image
    optimizer: Literal[OPTIMIZERS]  # type: ignore[valid-type]
    lr: float = Field(gt=0, le=100, allow_inf_nan=False)
    # lr is for a batch of this many images and scales linearly with batch_size (Goyal et al. 2017:
    # "0.1 x batch/256" in fb.resnet.torch's ImageNet recipe); None: lr as given.
    lr_reference_batch: Optional[int] = Field(ge=1, le=65_536)
    momentum: float = Field(ge=0, lt=1, allow_inf_nan=False)
    nesterov: bool
    weight_decay: float = Field(ge=0, lt=1, allow_inf_nan=False)
    bn_weight_decay: bool  # false: no weight decay on BatchNorm scales and shifts
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


RecipeName = Literal[tuple(RECIPES)]  # type: ignore[valid-type]


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


def _augment_section() -> type[BaseModel]:
    """Augment with every field optional and each optional augmentation itself partial (or `false`)."""
    extra = {k: (Optional[Union[_partial(Augment.model_fields[k].annotation.__args__[0], f"{k}_section"),
                                Literal[False]]], None) for k in _OPTIONAL_AUGMENTS}
    return _partial(Augment, "AugmentSection", **extra)


# The `recipe:` section of an experiment: a recipe name and any fields to override.
RecipeSection = _partial(Recipe, "RecipeSection", name=(RecipeName, DEFAULT_RECIPE),
                         augment=(Optional[_augment_section()], None))

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


# What a runtime key left unset (null) means on each device. CUDA: what every GPU experiment here
# chooses (bf16 autocast, NHWC, cuDNN autotuning; GPU numbers are within seed noise, never
# bit-identical across GPU models). CPU: float32 under the bit-identity pin (env.PINNED_NUMERIC_ENV);
# CPU bf16 is an opt-in outside that promise, so there `deterministic` defaults to false.
DEVICE_RUNTIME_DEFAULTS = {
    "cpu": {"amp": "none", "channels_last": False, "deterministic": True},
    "cuda": {"amp": "bf16", "channels_last": True, "deterministic": False},
}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _no_gpu_index(v):
    if isinstance(v, str) and re.fullmatch(r"cuda:[0-9]+", v):
        raise ValueError(f"{v!r}: a cell runs on the GPU its Ray trial holds, which the trial sees as cuda:0 "
                         "(Ray sets CUDA_VISIBLE_DEVICES); valid: auto, cpu, cuda (to pick a GPU by hand: "
                         "`resnet-bench train --device cuda:N`)")
    return v


# An annotated type, so that the experiment-file sections (_partial) check it the same way.
Device = Annotated[Literal["auto", "cpu", "cuda"], BeforeValidator(_no_gpu_index)]


class Runtime(Strict):
    """How a cell computes. amp, channels_last and deterministic: null = the device's default
    (DEVICE_RUNTIME_DEFAULTS); a cell always carries them resolved."""

    device: Device = "auto"
    amp: Optional[Literal["none", "bf16", "fp16"]] = None
    channels_last: Optional[bool] = None
    compile: bool = False
    compile_mode: Literal[COMPILE_MODES] = "default"  # type: ignore[valid-type]  # torch.compile(mode=...)
    # TF32 tensor cores for float32 matmuls and cuDNN convolutions (CUDA, Ampere and newer); set
    # explicitly either way, since torch's own defaults differ between the two.
    tf32: bool = False
    threads: Optional[int] = Field(None, ge=1, le=1024)  # CPU threads; None = cpus_per_trial
    deterministic: Optional[bool] = None
    # With deterministic on CPU, how far bit identity reaches (resnet_bench.env.NUMERIC_PINS):
    # "portable": every x86-64 CPU with AVX2, Intel or AMD, any caches, with or without AVX-512;
    # convolutions leave oneDNN: a quarter to half the throughput. "host": one CPU model only, at oneDNN's
    # native speed. The default is portable so that committed results re-check on any CI machine.
    numeric_pin: Literal[NUMERIC_PIN_LEVELS] = "portable"  # type: ignore[valid-type]


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
    model: ModelName
    unit: Unit
    dataset: DatasetName
    value: float = Field(ge=0, le=100, allow_inf_nan=False)


class Paper(Strict):
    """A published table to compare with, only when dataset, variant and recipe match."""

    citation: str = Field(min_length=1, max_length=300)
    statistic: str = Field(min_length=1, max_length=300)  # what the printed number is, e.g. "median of 5 runs"
    metric: Literal["test_error_pct"]
    dataset: DatasetName
    variant: str = Field(min_length=1, max_length=300)
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

    description: Prose = ""
    grid: Optional[GridSection] = None  # type: ignore[valid-type]
    arch: Optional[ArchSection] = None  # type: ignore[valid-type]
    recipe: Optional[RecipeSection] = None  # type: ignore[valid-type]
    runtime: Optional[RuntimeSection] = None  # type: ignore[valid-type]
    bench: Optional[BenchSection] = None  # type: ignore[valid-type]
    resources: Optional[ResourcesSection] = None  # type: ignore[valid-type]
    paper: Optional[Paper] = None


class Experiment(Strict):
    """A resolved experiment: recipe complete, device decided."""

    name: Name
    description: Prose = ""
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
        if gpus > 1:
            raise ValueError(f"resources.gpus_per_trial {gpus}: a cell trains on one GPU (no data parallelism); "
                             "give 1, or a fraction to share one GPU between trials (0.5: two per GPU)")
        rt, given = self.resolved_runtime(), self.runtime
        if rt.device == "cpu":
            if rt.amp == "fp16":
                raise ValueError("runtime.amp 'fp16' needs a CUDA device (this experiment runs on cpu, "
                                 "resources.gpus_per_trial 0); valid on cpu: none, bf16")
            if rt.amp == "bf16" and given.deterministic:
                raise ValueError("runtime.amp 'bf16' on cpu is outside the bit-identity promise: "
                                 "deterministic true would pin the CPU kernels to AVX2, without bf16 "
                                 "instructions; set runtime.deterministic false (or leave it unset)")
            if rt.tf32:
                raise ValueError("runtime.tf32 true needs a CUDA device (TF32 is a GPU tensor-core format); "
                                 "this experiment runs on cpu: set tf32 false")
        if rt.compile_mode != "default" and not rt.compile:
            raise ValueError(f"runtime.compile_mode {rt.compile_mode!r} needs runtime.compile true")
        return self

    def resolved_device(self) -> str:
        """`auto` means CUDA exactly when a trial holds a GPU (decided by resources, not the driver)."""
        if self.runtime.device == "auto":
            return "cuda" if self.resources.gpus_per_trial > 0 else "cpu"
        return self.runtime.device

    def resolved_runtime(self) -> Runtime:
        """The runtime with the device decided and every unset key at that device's default."""
        device = self.resolved_device()
        defaults = dict(DEVICE_RUNTIME_DEFAULTS[device])
        if device == "cpu" and self.runtime.amp == "bf16":
            defaults["deterministic"] = False
        fill = {k: v for k, v in defaults.items() if getattr(self.runtime, k) is None}
        return self.runtime.model_copy(update={"device": device, **fill})

    def gpu_share(self) -> float | None:
        """The fraction of one GPU each trial holds (1.0 whole; 0.5 shared by two); None on CPU."""
        return float(self.resources.gpus_per_trial) if self.resolved_device() == "cuda" else None


# ---- params.yaml --------------------------------------------------------------------------------


class DatasetFile(Strict):
    """One raw dataset (params.yaml `prepare.files.<name>`). Every key is required: dvc.yaml passes each
    on prepare's command line. The four sizes apply to the image formats only (0 for the others); see
    resnet_bench.data.images.StorePolicy and docs/datasets.md."""

    format: Literal[DATASET_FORMATS]  # type: ignore[valid-type]
    source: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^([0-9a-f]{64})?$")  # "" = not checked
    # Train images: shorter side to this, aspect ratio kept up to max_aspect (longer / shorter side;
    # 1 = the centre square), the true extent recorded; 0 = keep the images' own (equal) size.
    image_size: int = Field(ge=0, le=4096)
    max_aspect: float = Field(ge=1, le=16, allow_inf_nan=False)
    # Validation and test images: shorter side to eval_resize (0 = image_size), then the centre
    # eval_crop square (0 = the resized square), as torchvision's Resize(256) + CenterCrop(224).
    eval_resize: int = Field(ge=0, le=4096)
    eval_crop: int = Field(ge=0, le=4096)

    @model_validator(mode="after")
    def _rules(self):
        if self.format not in IMAGE_FORMATS and (self.image_size or self.eval_resize or self.eval_crop):
            raise ValueError(f"image_size, eval_resize and eval_crop apply only to the image formats "
                             f"({', '.join(IMAGE_FORMATS)}); set them to 0 for {self.format!r}")
        resize = self.eval_resize or self.image_size
        if resize and self.eval_crop > resize:
            raise ValueError(f"eval_crop {self.eval_crop} is larger than the evaluation resize {resize}")
        return self


class PrepareRun(Strict):
    """How `prepare` runs (not in params.yaml: the prepared artifact does not depend on these)."""

    workers: int = Field(0, ge=0, le=4096)  # decode processes; 0 = one per available core
    # Largest raw member read into memory, MiB; None = the format's own cap
    # (resnet_bench.data.prepare.member_cap_mb: 256 MiB, which admits CIFAR-100's 155 MB `train` pickle
    # and refuses a 1 GiB member before it is read; 2048 MiB for Imagenet64's 1.57 GB batches).
    max_member_mb: Optional[float] = Field(None, gt=0, le=1_048_576, allow_inf_nan=False)


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

    experiment: str = Field("smoke", pattern=NAME_PATTERN)
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
    # Ray Tune's own CSV/JSON/TensorBoard loggers in every trial folder (<storage>/train/<cell_id>/), for
    # ExperimentAnalysis, TensorBoard and Tune's tools; the cell records do not need them.
    tune_loggers: bool = False
    # Ray's dashboard for a local Ray instance, bound to 127.0.0.1 (needs `ray[default]`).
    dashboard: bool = False


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
