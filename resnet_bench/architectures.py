"""The architectures, without torch: the layer tables of both papers, the model names, and the
variant defaults (`resolve_arch`). The config validates against these and the registry
(resnet_bench.models) builds them; neither needs the other."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from resnet_bench.vocab import BOTTLENECK_STRIDES, PREACT_UNITS, SHORTCUTS, UNITS, VARIANTS, VERSION_UNIT, VERSION_UNITS

# [v1] Table 1: units per stage of the ImageNet models.
IMAGENET_LAYERS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),  # [v2] Sec. 5 / Table 5; fb.resnet.torch preresnet.lua, timm resnet200
}
# CIFAR models, n units per stage in 3 stages. Basic: depth 6n+2, [v1] Sec. 4.2 / Table 6.
# Bottleneck: depth 9n+2, [v2] Tables 3-4 and resnet-pre-act.lua. Listed explicitly
# because the formulas overlap (20, 56, 110 and 164 are both 6n+2 and 9n+2).
CIFAR_LAYERS: dict[int, tuple[str, tuple[int, ...]]] = {
    20: ("basic", (3,) * 3),
    32: ("basic", (5,) * 3),
    44: ("basic", (7,) * 3),
    56: ("basic", (9,) * 3),
    110: ("basic", (18,) * 3),
    1202: ("basic", (200,) * 3),
    164: ("bottleneck", (18,) * 3),
    1001: ("bottleneck", (111,) * 3),
}
LAYERS = {**IMAGENET_LAYERS, **CIFAR_LAYERS}
DEFAULT_WIDTH = {"imagenet": 64, "cifar": 16}

# Every model name: each depth of both tables in both versions (resnet_bench.models registers one
# builder per name and checks it builds exactly these).
MODEL_NAMES: tuple[str, ...] = tuple(sorted(f"resnet{d}_{v}" for d in LAYERS for v in ("v1", "v2")))


class ModelName(NamedTuple):
    family: str  # "imagenet" or "cifar": the layer table and the default stem and width
    depth: int
    version: str  # "v1" or "v2": the default unit


def available_models() -> list[str]:
    """Every model name, sorted."""
    return list(MODEL_NAMES)


def _unknown_model(name: str) -> ValueError:
    return ValueError(f"unknown model {name!r}; valid: {', '.join(available_models())}")


def parse_model_name(name: str) -> ModelName:
    """'resnet110_v2' -> ModelName('cifar', 110, 'v2'); ValueError listing the valid names."""
    match = re.fullmatch(r"resnet(\d+)_(v[12])", name)
    if match is None or name not in MODEL_NAMES:
        raise _unknown_model(name)
    depth = int(match.group(1))
    return ModelName("imagenet" if depth in IMAGENET_LAYERS else "cifar", depth, match.group(2))


def _check_choice(arg: str, value: Any, choices: Sequence[str], none_means: str | None = None) -> None:
    if value is None and none_means is not None:
        return
    if not isinstance(value, str) or value not in choices:
        default = f" (or None: {none_means})" if none_means else ""
        raise ValueError(f"unknown {arg} {value!r}; valid: {', '.join(choices)}{default}")


def resolve_arch(name: str, *, variant: str = "modern", unit: str | None = None,
                 shortcut: str | None = None, bottleneck_stride: str | None = None) -> dict[str, Any]:
    """The architecture choices `build_model` makes for `name`, defaults filled in and validated.

    Returns {"variant", "unit", "shortcut", "bottleneck_stride", "first_activation_before_split"},
    plain strings and a bool, for configs and tables. None means the variant's default:

    - "modern": projection shortcuts, stride on the bottleneck's 3x3 conv (torchvision /
      timm parity), identity shortcuts carry the raw unit input.
    - "paper", `_v1` names ([v1] He et al. 2015): option A zero-pad shortcuts for the CIFAR
      basic-block models ([v1] Sec. 4.2, Table 6; fb.resnet.torch resnet.lua with
      shortcutType 'A'), option B projections for the others (the ImageNet models,
      [v1] Sec. 3.3 / Table 3 and fb.resnet.torch's default; ResNet-164/1001, which [v1]
      does not define, as [v2]'s code); stride on the first 1x1 conv of a bottleneck.
    - "paper", `_v2` names ([v2] He et al. 2016): projections from the pre-activated input
      (resnet-pre-act.lua, preresnet.lua's default 'B'), stride on the first 1x1 conv
      (resnet-pre-act.lua), and the first activation before the split ([v2] Sec. 4.1). With the
      ImageNet stem, fb.resnet.torch preresnet.lua's network (the public code of [v2]'s ImageNet
      models): the stem keeps conv-BN-ReLU before the pool and the first unit has no pre-activation.
      preresnet.lua puts the bottleneck stride on the 3x3: set bottleneck_stride "3x3" to build it.
      The latter also applies to unit (d) under a `_v1` name, the other pre-activation unit.

    A unit must agree with the name's version: (a)-(d) for `_v1`, (e) for `_v2`.
    """
    family, depth, version = parse_model_name(name)
    _check_choice("variant", variant, VARIANTS)
    _check_choice("unit", unit, UNITS, none_means=f"{VERSION_UNIT[version]} for a {version} name")
    _check_choice("shortcut", shortcut, SHORTCUTS, none_means="the variant's default")
    _check_choice("bottleneck_stride", bottleneck_stride, BOTTLENECK_STRIDES, none_means="the variant's default")
    unit = VERSION_UNIT[version] if unit is None else unit
    if unit not in VERSION_UNITS[version]:
        raise ValueError(f"unit {unit!r} contradicts model {name!r} (a {version} name); "
                         f"valid units for {name}: {', '.join(VERSION_UNITS[version])}")
    if variant == "modern":
        defaults = ("projection", "3x3", False)
    elif version == "v1":
        basic_cifar = family == "cifar" and LAYERS[depth][0] == "basic"
        defaults = ("zero_pad" if basic_cifar else "projection", "1x1", unit in PREACT_UNITS)
    else:
        defaults = ("projection", "1x1", True)
    return {
        "variant": variant,
        "unit": unit,
        "shortcut": defaults[0] if shortcut is None else shortcut,
        "bottleneck_stride": defaults[1] if bottleneck_stride is None else bottleneck_stride,
        "first_activation_before_split": defaults[2],
    }
