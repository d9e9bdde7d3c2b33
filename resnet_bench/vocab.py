"""The suite's vocabulary: the names every layer shares, with no dependencies.

Written once here and read by the schema (`resnet_bench.config`), the networks
(`resnet_bench.models`), the data layer, the tables (`resnet_bench.collect`) and the
report. This module imports nothing, so any stage may depend on it without pulling in
torch, pydantic or another stage's code.
"""

VERSIONS = ("v1", "v2")

# He et al. 2016 ("Identity Mappings in Deep Residual Networks"), Table 2 / Fig. 4: the five
# residual units (a)-(e). (a) `original` is v1 (He et al. 2015), (e) `full_preact` is v2;
# only (e) is "v2", so the ablation's units (a)-(d) are labelled v1.
UNITS = ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")
VERSION_UNIT = {"v1": "original", "v2": "full_preact"}
UNIT_VERSION = {unit: ("v2" if unit == "full_preact" else "v1") for unit in UNITS}
# Units a model name's version admits: resnet20_v2 with unit 'original' is a contradiction.
VERSION_UNITS = {"v1": UNITS[:4], "v2": UNITS[4:]}

STEMS = ("imagenet", "cifar")
VARIANTS = ("modern", "paper")
# He et al. 2015 Sec. 3.3: option A zero-padded identity shortcut, option B 1x1 projection
# when the shape changes (identity otherwise).
SHORTCUTS = ("zero_pad", "projection")
# Which conv of a downsampling bottleneck carries the stride: "1x1" the first 1x1 conv
# (both papers and the authors' code), "3x3" the 3x3 conv (torchvision's "V1.5", timm).
BOTTLENECK_STRIDES = ("1x1", "3x3")

SCHEDULES = ("step", "cosine", "onecycle", "constant")
OPTIMIZERS = ("sgd",)  # the only optimiser training builds; the schema lists nothing it cannot run

DATASET_FORMATS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder", "imagenet",
                   "tinyimagenet", "imagenet_downsampled")
# Formats of image files (decoded, resized by the store policy: image_size, max_aspect, eval_resize, eval_crop).
IMAGE_FORMATS = ("imagefolder", "imagenet", "tinyimagenet")
BUILTIN_DATASETS = ("digits",)
# (train, test) images of each format's official release, for compute estimates of a grid whose data is
# not prepared yet (image folders have none). Sources: the releases (Krizhevsky 2009; LeCun et al. 1998;
# Xiao et al. 2017; ILSVRC2012 / torchvision ImageNet; Tiny ImageNet's 500 + 50 per class of 200;
# Chrabaszcz et al. 2017: the ImageNet train and validation sets downsampled); digits: 1,797, 20% test.
NOMINAL_COUNTS = {"digits": (1438, 359), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000),
                  "mnist": (60_000, 10_000), "fashion_mnist": (60_000, 10_000), "imagenet": (1_281_167, 50_000),
                  "tinyimagenet": (100_000, 10_000), "imagenet_downsampled": (1_281_167, 50_000)}
# Image side and channels of the formats whose size is fixed by the release.
NOMINAL_SHAPE = {"digits": (1, 8), "cifar10": (3, 32), "cifar100": (3, 32), "mnist": (1, 28),
                 "fashion_mnist": (1, 28), "tinyimagenet": (3, 64)}
NOMINAL_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "mnist": 10, "fashion_mnist": 10,
                   "imagenet": 1000, "tinyimagenet": 200, "imagenet_downsampled": 1000}

# What a cell's result file may say, and what a table row may say (a cell with no file: missing).
RECORD_STATUSES = ("ok", "diverged", "failed")
CELL_STATUSES = (*RECORD_STATUSES, "missing")

# Deterministic CPU pin levels (runtime.numeric_pin; what each sets: resnet_bench.env.NUMERIC_PINS).
NUMERIC_PIN_LEVELS = ("portable", "host")

REPORT_FORMATS = ("png", "svg", "pdf")
REPORT_CONTEXTS = ("paper", "notebook", "talk", "poster")

# Names a user gives (experiments, datasets): a safe charset, bounded length. They become
# file and folder names, DVC stage names and table labels.
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
# Registered model names: resnet<depth>_<version> (resnet_bench.models).
MODEL_PATTERN = r"^resnet[0-9]{1,5}_v[12]$"
# Dataset names also become DVC params paths (`prepare.files.<name>` in dvc.yaml), where a dot
# would read as one more level of nesting: no dots.
DATASET_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
