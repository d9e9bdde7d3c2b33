"""The model registry: names -> builders (torchvision style, keyword-only), the layer tables of
both papers, the variant defaults (`resolve_arch`), and parameter and FLOP counts."""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_bench.models.blocks import (PREACT_UNITS, BasicBlock, Block, Bottleneck, PreActBasicBlock,
                                        PreActBottleneck)
from resnet_bench.models.trunk import ResNet
from resnet_bench.vocab import BOTTLENECK_STRIDES, SHORTCUTS, STEMS, UNITS, VARIANTS, VERSION_UNIT, VERSION_UNITS

# --------------------------------------------------------------------------- registry

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
_LAYERS = {**IMAGENET_LAYERS, **CIFAR_LAYERS}
DEFAULT_WIDTH = {"imagenet": 64, "cifar": 16}

# Blocks by (pre-activation body?, kind). Only (e) has the pre-activation body.
_BLOCKS: dict[tuple[bool, str], type[Block]] = {
    (False, "basic"): BasicBlock,
    (False, "bottleneck"): Bottleneck,
    (True, "basic"): PreActBasicBlock,
    (True, "bottleneck"): PreActBottleneck,
}


class ModelName(NamedTuple):
    family: str  # "imagenet" or "cifar": the layer table and the default stem and width
    depth: int
    version: str  # "v1" or "v2": the default unit


_MODELS: dict[str, Callable[..., ResNet]] = {}


def _register(fn: Callable[..., ResNet]) -> Callable[..., ResNet]:
    _MODELS[fn.__name__] = fn
    return fn


def available_models() -> list[str]:
    """Every registered name, sorted."""
    return sorted(_MODELS)


def _unknown_model(name: str) -> ValueError:
    return ValueError(f"unknown model {name!r}; valid: {', '.join(available_models())}")


def parse_model_name(name: str) -> ModelName:
    """'resnet110_v2' -> ModelName('cifar', 110, 'v2'); ValueError listing the valid names."""
    match = re.fullmatch(r"resnet(\d+)_(v[12])", name)
    if match is None or name not in _MODELS:
        raise _unknown_model(name)
    depth = int(match.group(1))
    return ModelName("imagenet" if depth in IMAGENET_LAYERS else "cifar", depth, match.group(2))


def _check_choice(arg: str, value: Any, choices: Sequence[str], none_means: str | None = None) -> None:
    if value is None and none_means is not None:
        return
    if not isinstance(value, str) or value not in choices:
        default = f" (or None: {none_means})" if none_means else ""
        raise ValueError(f"unknown {arg} {value!r}; valid: {', '.join(choices)}{default}")


def _check_count(arg: str, value: Any, *, optional: bool = False) -> None:
    """A channel or class count: a positive integer (bool is not a count)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        default = " (or None: the family's default)" if optional else ""
        raise ValueError(f"{arg} must be a positive integer{default}, got {value!r}")


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
        basic_cifar = family == "cifar" and _LAYERS[depth][0] == "basic"
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


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    *,
    stem: str | None = None,
    width: int | None = None,
    unit: str | None = None,
    zero_init_residual: bool = False,
    variant: str = "modern",
    shortcut: str | None = None,
    bottleneck_stride: str | None = None,
) -> ResNet:
    """Build a registered model; ValueError (one line: argument, bad value, valid choices) on bad input.

    stem / width None: the family's default ("imagenet" / 64 for ResNet-18..152, "cifar" /
    16 for the CIFAR depths). unit, shortcut, bottleneck_stride None: see `resolve_arch`.
    """
    if name not in _MODELS:
        raise _unknown_model(name)
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, stem=stem, width=width, unit=unit,
                         zero_init_residual=zero_init_residual, variant=variant, shortcut=shortcut,
                         bottleneck_stride=bottleneck_stride)


def _resnet(
    depth: int,
    version: str,
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    stem: str | None = None,
    width: int | None = None,
    unit: str | None = None,
    zero_init_residual: bool = False,
    variant: str = "modern",
    shortcut: str | None = None,
    bottleneck_stride: str | None = None,
) -> ResNet:
    name = f"resnet{depth}_{version}"
    # Every check before any tensor is allocated (ResNet-1001 takes seconds to build).
    _check_count("num_classes", num_classes)
    _check_count("in_channels", in_channels)
    _check_count("width", width, optional=True)
    _check_choice("stem", stem, STEMS, none_means="the family's default")
    if not isinstance(zero_init_residual, bool):
        raise ValueError(f"zero_init_residual must be True or False, got {zero_init_residual!r}")
    arch = resolve_arch(name, variant=variant, unit=unit, shortcut=shortcut, bottleneck_stride=bottleneck_stride)
    family = parse_model_name(name).family
    kind, layers = _LAYERS[depth]
    model = ResNet(
        _BLOCKS[arch["unit"] == "full_preact", kind],
        layers,
        unit=arch["unit"],
        num_classes=int(num_classes),
        in_channels=int(in_channels),
        stem=family if stem is None else stem,
        width=DEFAULT_WIDTH[family] if width is None else int(width),
        zero_init_residual=zero_init_residual,
        shortcut=arch["shortcut"],
        bottleneck_stride=arch["bottleneck_stride"],
        first_activation_before_split=arch["first_activation_before_split"],
        # [v2]'s ImageNet networks as fb.resnet.torch preresnet.lua builds them (resnet-pre-act.lua is
        # CIFAR-only): conv-BN-ReLU stem before the pool, a first unit without pre-activation.
        activated_stem=variant == "paper" and arch["unit"] == "full_preact" and (stem or family) == "imagenet",
    )
    if variant == "paper":
        # The authors' init zeroes the classifier's bias (fb.resnet.torch resnet.lua /
        # preresnet.lua, resnet-pre-act.lua: `v.bias:zero()` for nn.Linear); their conv
        # init, normal(0, sqrt(2 / (k*k*C_out))), is the trunk's kaiming fan_out already.
        nn.init.zeros_(model.fc.bias)
    return model


# Builders, torchvision style: keyword-only arguments, those of `_resnet`. `_v1` defaults
# to unit 'original', `_v2` to 'full_preact'; any `unit=` may be given to any depth.
# ImageNet family ([v1] Table 1), default stem 'imagenet', width 64.


@_register
def resnet18_v1(**options: Any) -> ResNet:
    return _resnet(18, "v1", **options)


@_register
def resnet18_v2(**options: Any) -> ResNet:
    return _resnet(18, "v2", **options)


@_register
def resnet34_v1(**options: Any) -> ResNet:
    return _resnet(34, "v1", **options)


@_register
def resnet34_v2(**options: Any) -> ResNet:
    return _resnet(34, "v2", **options)


@_register
def resnet50_v1(**options: Any) -> ResNet:
    return _resnet(50, "v1", **options)


@_register
def resnet50_v2(**options: Any) -> ResNet:
    return _resnet(50, "v2", **options)


@_register
def resnet101_v1(**options: Any) -> ResNet:
    return _resnet(101, "v1", **options)


@_register
def resnet101_v2(**options: Any) -> ResNet:
    return _resnet(101, "v2", **options)


@_register
def resnet152_v1(**options: Any) -> ResNet:
    return _resnet(152, "v1", **options)


@_register
def resnet152_v2(**options: Any) -> ResNet:
    return _resnet(152, "v2", **options)


@_register
def resnet200_v1(**options: Any) -> ResNet:
    return _resnet(200, "v1", **options)


@_register
def resnet200_v2(**options: Any) -> ResNet:
    return _resnet(200, "v2", **options)


# CIFAR family, default stem 'cifar', width 16. The modern variant's projection shortcuts
# add two 1x1 convs (+ BN in v1) to the basic-block models, where [v1] Sec. 4.2 used
# option A (zero-padded identity, no parameters): 2,752 parameters (2,560 in v2) at
# width 16, so at Table 6's 0.01M precision ResNet-32 and -56 read 0.47M / 0.86M instead
# of 0.46M / 0.85M. `variant="paper"` builds option A and matches every count of Table 6.


@_register
def resnet20_v1(**options: Any) -> ResNet:
    return _resnet(20, "v1", **options)


@_register
def resnet20_v2(**options: Any) -> ResNet:
    return _resnet(20, "v2", **options)


@_register
def resnet32_v1(**options: Any) -> ResNet:
    return _resnet(32, "v1", **options)


@_register
def resnet32_v2(**options: Any) -> ResNet:
    return _resnet(32, "v2", **options)


@_register
def resnet44_v1(**options: Any) -> ResNet:
    return _resnet(44, "v1", **options)


@_register
def resnet44_v2(**options: Any) -> ResNet:
    return _resnet(44, "v2", **options)


@_register
def resnet56_v1(**options: Any) -> ResNet:
    return _resnet(56, "v1", **options)


@_register
def resnet56_v2(**options: Any) -> ResNet:
    return _resnet(56, "v2", **options)


@_register
def resnet110_v1(**options: Any) -> ResNet:
    return _resnet(110, "v1", **options)


@_register
def resnet110_v2(**options: Any) -> ResNet:
    return _resnet(110, "v2", **options)


@_register
def resnet1202_v1(**options: Any) -> ResNet:
    return _resnet(1202, "v1", **options)


@_register
def resnet1202_v2(**options: Any) -> ResNet:
    return _resnet(1202, "v2", **options)


@_register
def resnet164_v1(**options: Any) -> ResNet:
    return _resnet(164, "v1", **options)


@_register
def resnet164_v2(**options: Any) -> ResNet:
    return _resnet(164, "v2", **options)


@_register
def resnet1001_v1(**options: Any) -> ResNet:
    return _resnet(1001, "v1", **options)


@_register
def resnet1001_v2(**options: Any) -> ResNet:
    return _resnet(1001, "v2", **options)


# --------------------------------------------------------------------------- tools


def count_params(model: nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in model.parameters())


def model_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Forward FLOPs of one call on a zero input of `input_shape` (N x C x H x W).

    Counted by torch.utils.flop_counter.FlopCounterMode: conv and matmul only, FLOPs =
    2 x multiply-accumulates. The input goes to the model's device, so a model built under
    `torch.device("meta")` is counted without computing anything. Runs in eval mode (BN
    running statistics untouched) and restores the previous mode.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(*input_shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


# timm resnetv2 name -> ours, after `stages.{i}.blocks.{j}.` -> `layer{i+1}.{j}.`. The keys
# are those of `resnetv2_{18,34,50,101,152}` (stem_type='', create_conv2d, BatchNormAct2d):
# timm's norm{k} is the BN before conv{k}, as our bn{k} in PreAct*; BatchNormAct2d
