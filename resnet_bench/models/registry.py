"""The model registry: names -> builders (torchvision style, keyword-only), and parameter and FLOP
counts. The layer tables, names and variant defaults are resnet_bench.architectures (torch-free)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_bench.architectures import (CIFAR_LAYERS, DEFAULT_WIDTH, IMAGENET_LAYERS, LAYERS,  # noqa: F401
                                        MODEL_NAMES, ModelName, _check_choice, _unknown_model, available_models,
                                        parse_model_name, resolve_arch)
from resnet_bench.models.blocks import BasicBlock, Block, Bottleneck, PreActBasicBlock, PreActBottleneck
from resnet_bench.models.trunk import ResNet
from resnet_bench.vocab import STEMS

# --------------------------------------------------------------------------- registry

# Blocks by (pre-activation body?, kind). Only (e) has the pre-activation body.
_BLOCKS: dict[tuple[bool, str], type[Block]] = {
    (False, "basic"): BasicBlock,
    (False, "bottleneck"): Bottleneck,
    (True, "basic"): PreActBasicBlock,
    (True, "bottleneck"): PreActBottleneck,
}


_MODELS: dict[str, Callable[..., ResNet]] = {}


def _register(fn: Callable[..., ResNet]) -> Callable[..., ResNet]:
    assert fn.__name__ in MODEL_NAMES, fn.__name__  # resnet_bench.architectures names every model
    _MODELS[fn.__name__] = fn
    return fn


def _check_count(arg: str, value: Any, *, optional: bool = False) -> None:
    """A channel or class count: a positive integer (bool is not a count)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        default = " (or None: the family's default)" if optional else ""
        raise ValueError(f"{arg} must be a positive integer{default}, got {value!r}")


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
    kind, layers = LAYERS[depth]
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


assert set(_MODELS) == set(MODEL_NAMES), sorted(set(_MODELS) ^ set(MODEL_NAMES))
