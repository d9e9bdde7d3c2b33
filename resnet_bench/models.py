"""The ResNet v1 / v2 model zoo: one trunk, four blocks, five residual units.

Sources cited in comments:

- [v1] He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image Recognition"
  (arXiv:1512.03385).
- [v2] He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual Networks"
  (arXiv:1603.05027), with its reference code KaimingHe/resnet-1k-layers
  (`resnet-pre-act.lua`).
- torchvision `models/resnet.py` (v1 module names, init, "V1.5" stride placement) and
  timm `models/resnetv2.py` (pre-activation blocks, shared block signature).
- The authors' Torch code: facebookarchive/fb.resnet.torch `models/resnet.lua` (v1,
  CIFAR option A) and `models/preresnet.lua` (v2), KaimingHe/resnet-1k-layers
  `resnet-pre-act.lua` (v2 ResNet-164/1001); translated in tests/reference_lua.py.

Two variants of every model (`build_model(..., variant=...)`):

- "modern" (default): with `variant="modern"` every `_v1` model loads a torchvision
  `resnetX` state_dict as is and every `_v2` model a timm `resnetv2_X` state_dict
  through `convert_timm_resnetv2` (projection shortcuts, stride on the bottleneck's 3x3).
- "paper": the network of the paper that defines the model, equal by logits to the
  authors' code (tests/test_paper_parity.py): see `resolve_arch`.

Tensor shapes in comments are N x C x H x W.
"""

from __future__ import annotations

import argparse
import csv
import numbers
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Union

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from resnet_bench.argparsing import Parser
from resnet_bench.config import UNITS, VERSION_UNIT

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "ModelName",
    "UNITS",
    "STEMS",
    "available_models",
    "build_model",
    "resolve_arch",
    "parse_model_name",
    "VARIANTS",
    "SHORTCUTS",
    "BOTTLENECK_STRIDES",
    "count_params",
    "model_flops",
    "convert_timm_resnetv2",
    "models_main",
    "summary_main",
]

# [v2] Fig. 4 / Table 2, panels (a)-(e): UNITS; (a) is the v1 unit, (e) the v2 unit
# (VERSION_UNIT). Both are written once, in the schema (resnet_bench.config).
# Units whose activation sits at the start of the residual branch; the trunk then moves
# the stem's activation into the first unit and adds one after the last ([v2] Sec. 4.1).
PREACT_UNITS = ("relu_only_preact", "full_preact")
# Units a name's version admits: the config labels (a)-(d) v1 and only (e) v2
# (resnet_bench.config.UNIT_VERSION), so resnet20_v2 with unit 'original' is a contradiction.
VERSION_UNITS = {"v1": UNITS[:4], "v2": UNITS[4:]}
STEMS = ("imagenet", "cifar")
VARIANTS = ("modern", "paper")
# [v1] Sec. 3.3: option A zero-padded identity shortcut, option B 1x1 projection when the
# shape changes (identity otherwise).
SHORTCUTS = ("zero_pad", "projection")
# Which conv of a downsampling bottleneck carries the stride: "1x1" the first 1x1 conv
# ([v1] and [v2] and the authors' code), "3x3" the 3x3 conv (torchvision's "V1.5", timm).
BOTTLENECK_STRIDES = ("1x1", "3x3")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    # No bias (as in both papers): the shift of a following BN makes it redundant.
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _check_unit(unit: str, allowed: Sequence[str], block: str) -> None:
    if unit not in allowed:
        raise ValueError(f"{block} does not implement unit {unit!r}; it implements: {', '.join(allowed)}")


# --------------------------------------------------------------------------- blocks
#
# All four blocks share one constructor signature, (inplanes, planes, stride, unit, *,
# shortcut, bottleneck_stride, preact_identity), in the spirit of timm's resnetv2 blocks,
# so one `_make_layer` serves v1 and v2. Each block builds its own shortcut when the shape
# changes ([v1] Sec. 3.3: option A zero-pad or option B projection) and exposes
# `expansion` (output channels = planes * expansion) as in torchvision.
#
# BasicBlock / Bottleneck keep the conv-BN pairs of [v1] and implement units (a)-(d):
# they differ only in where the ReLUs and the last BN sit relative to the addition.
# PreAct* implement unit (e), where BN-ReLU precede every conv.
#
# Which tensor the shortcut carries: a zero-pad or projection shortcut always takes the
# residual branch's input after its pre-activation (if any): [v2] reference code, timm
# DownsampleConv, fb.resnet.torch preresnet.lua 'both_preact'. An identity shortcut takes
# the raw unit input (the clean path), except with `preact_identity=True`: [v2] Sec. 4.1
# puts the network's first activation before the split, so the first unit's identity
# shortcut carries the pre-activated stem output too (preresnet.lua: the first unit of
# every stage is 'both_preact'; only the first stage's keeps its shape).

# Units (a)-(d): the weight layers are conv-BN(-ReLU) as in [v1] Sec. 3.4.
_POSTACT_BODY_UNITS = ("original", "bn_after_add", "relu_before_add", "relu_only_preact")


class BasicBlock(nn.Module):
    """Two 3x3 convs, [v1] Fig. 2 / Fig. 5 left; module names match torchvision's."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, unit: str = "original", *,
                 shortcut: str = "projection", bottleneck_stride: str = "3x3",
                 preact_identity: bool = False) -> None:
        super().__init__()
        _check_unit(unit, _POSTACT_BODY_UNITS, type(self).__name__)
        del bottleneck_stride  # no 1x1 conv here; accepted so every block has one signature
        self.unit = unit
        self.preact_identity = preact_identity
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        # (b) applies this BN to the sum (same channel count), the others to conv2's output.
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride, shortcut, with_bn=True)

    def zero_init_last(self) -> None:
        # Make the residual branch output zero so the unit starts as its shortcut
        # (Goyal et al. 2017). In (b) the last BN normalises the sum, zeroing it would also
        # kill the shortcut, so zero the last conv instead.
        if self.unit == "bn_after_add":
            nn.init.zeros_(self.conv2.weight)
        else:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = _residual_input(x, self.unit)
        identity = _split(x, out, self.downsample, self.preact_identity)
        out = self.relu(self.bn1(self.conv1(out)))
        return _merge(self.conv2(out), identity, self.bn2, self.relu, self.unit)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand ([v1] Fig. 5 right); module names match torchvision's.

    `bottleneck_stride` places the stride of a downsampling unit: "1x1" on the first 1x1
    conv as in [v1] (and its Caffe models) and [v2]'s reference code; "3x3" on the 3x3
    conv, torchvision's "ResNet V1.5" (also timm's), the modern variant's default. Same
    parameters; "3x3" costs more, since conv1 of each downsampling unit then runs at the
    input resolution (ResNet-50: 4.1 G multiply-adds instead of [v1] Table 1's 3.8).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, unit: str = "original", *,
                 shortcut: str = "projection", bottleneck_stride: str = "3x3",
                 preact_identity: bool = False) -> None:
        super().__init__()
        _check_unit(unit, _POSTACT_BODY_UNITS, type(self).__name__)
        self.unit = unit
        self.preact_identity = preact_identity
        stride1, stride3 = _bottleneck_strides(stride, bottleneck_stride)
        self.conv1 = conv1x1(inplanes, planes, stride1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride, shortcut, with_bn=True)

    def zero_init_last(self) -> None:
        # See BasicBlock.zero_init_last.
        if self.unit == "bn_after_add":
            nn.init.zeros_(self.conv3.weight)
        else:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = _residual_input(x, self.unit)
        identity = _split(x, out, self.downsample, self.preact_identity)
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.relu(self.bn2(self.conv2(out)))
        return _merge(self.conv3(out), identity, self.bn3, self.relu, self.unit)


def _bottleneck_strides(stride: int, bottleneck_stride: str) -> tuple[int, int]:
    """(stride of the first 1x1 conv, stride of the 3x3 conv) of a bottleneck unit."""
    if bottleneck_stride not in BOTTLENECK_STRIDES:
        raise ValueError(f"unknown bottleneck_stride {bottleneck_stride!r}; valid: {', '.join(BOTTLENECK_STRIDES)}")
    return (stride, 1) if bottleneck_stride == "1x1" else (1, stride)


def _residual_input(x: Tensor, unit: str) -> Tensor:
    """Input of the residual branch and of a zero-pad or projection shortcut.

    (d) ReLU-only pre-activation: ReLU before the first conv. Not in place: `x` itself is
    the identity shortcut.
    """
    return torch.relu(x) if unit == "relu_only_preact" else x


def _split(x: Tensor, branch_input: Tensor, downsample: nn.Module | None, preact_identity: bool) -> Tensor:
    """The shortcut's output; see the comment at the top of this section for which input."""
    if downsample is not None:
        return downsample(branch_input)
    return branch_input if preact_identity else x


def _merge(out: Tensor, identity: Tensor, bn: nn.BatchNorm2d, relu: nn.ReLU, unit: str) -> Tensor:
    """Last BN, addition and ReLU of units (a)-(d), [v2] Fig. 4; `out` is the last conv's output."""
    if unit == "bn_after_add":  # (b): add, BN, ReLU
        return relu(bn(out + identity))
    out = bn(out)
    if unit == "relu_before_add":  # (c): BN, ReLU, add; no ReLU after the addition
        return relu(out) + identity
    out += identity  # in place like torchvision: BN's backward does not need its output
    # (a): ReLU after the addition; (d): none, the next unit (or the trunk) pre-activates.
    return relu(out) if unit == "original" else out


class PreActBasicBlock(nn.Module):
    """Full pre-activation unit (e) with two 3x3 convs: BN-ReLU-conv-BN-ReLU-conv, add.

    Same computation as timm's PreActBasic (modern variant) and as fb.resnet.torch
    preresnet.lua's basicblock (paper variant); module names follow this file's
    convention (bn1 is the BN *before* conv1), `convert_timm_resnetv2` maps timm's names.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, unit: str = "full_preact", *,
                 shortcut: str = "projection", bottleneck_stride: str = "3x3",
                 preact_identity: bool = False) -> None:
        super().__init__()
        _check_unit(unit, ("full_preact",), type(self).__name__)
        del bottleneck_stride  # no 1x1 conv here; accepted so every block has one signature
        self.preact_identity = preact_identity
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride, shortcut, with_bn=False)

    def zero_init_last(self) -> None:
        # No BN closes the residual branch in (e); zero its last conv (timm's zero_init_last).
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        identity = _split(x, out, self.downsample, self.preact_identity)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class PreActBottleneck(nn.Module):
    """Full pre-activation bottleneck unit (e), [v2] Fig. 4(e) with the [v1] bottleneck.

    Same computation as timm's PreActBottleneck (modern variant: stride on the 3x3, as in
    Bottleneck) and as resnet-pre-act.lua's bottleneck (paper variant: stride on the
    first 1x1 conv).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, unit: str = "full_preact", *,
                 shortcut: str = "projection", bottleneck_stride: str = "3x3",
                 preact_identity: bool = False) -> None:
        super().__init__()
        _check_unit(unit, ("full_preact",), type(self).__name__)
        self.preact_identity = preact_identity
        stride1, stride3 = _bottleneck_strides(stride, bottleneck_stride)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(inplanes, planes, stride1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride3)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride, shortcut, with_bn=False)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        identity = _split(x, out, self.downsample, self.preact_identity)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + identity


Block = Union[BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck]


class ZeroPadShortcut(nn.Module):
    """Option A shortcut of [v1] Sec. 3.3 / 4.2: strided identity, zero channels appended.

    As fb.resnet.torch resnet.lua's shortcut type 'A': SpatialAveragePooling(1, 1, s, s)
    (keeps every s-th row and column) then Concat of the input and MulConstant(0) (the
    new channels are zeros). No parameters. N x C_in x H x W -> N x C_out x ceil(H/s) x ceil(W/s).
    """

    def __init__(self, inplanes: int, outplanes: int, stride: int) -> None:
        super().__init__()
        if outplanes < inplanes:
            raise ValueError(f"a zero-pad shortcut cannot drop channels: {inplanes} -> {outplanes}")
        self.stride = stride
        self.extra = outplanes - inplanes  # zero channels appended after the input's

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dims first: (W left, W right, H top, H bottom, C front, C back).
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


def _shortcut(inplanes: int, outplanes: int, stride: int, kind: str, with_bn: bool) -> nn.Module | None:
    """Identity (None) when the shape is kept, else option A ("zero_pad") or B ("projection").

    A projection in post-activation units adds a BN (torchvision's `downsample.0/1`,
    resnet.lua); in (e) the conv takes the pre-activated input and has no BN ([v2]
    reference code, preresnet.lua, timm DownsampleConv).
    """
    if kind not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {kind!r}; valid: {', '.join(SHORTCUTS)}")
    if stride == 1 and inplanes == outplanes:
        return None
    if kind == "zero_pad":
        return ZeroPadShortcut(inplanes, outplanes, stride)
    if not with_bn:
        return conv1x1(inplanes, outplanes, stride)
    return nn.Sequential(conv1x1(inplanes, outplanes, stride), nn.BatchNorm2d(outplanes))


# --------------------------------------------------------------------------- trunk


class ResNet(nn.Module):
    """Stem, `len(layers)` stages of `block`, global average pool, linear classifier.

    ImageNet family: 4 stages of widths w, 2w, 4w, 8w ([v1] Table 1, w = 64); CIFAR family:
    3 stages of widths w, 2w, 4w ([v1] Sec. 4.2, w = 16). Every stage but the first halves
    H and W with stride 2 in its first unit.

    The unit decides stem and head ([v2] Sec. 4.1, Fig. 5: pre-activation moves each
    activation into the next unit, so the stem's activation moves into the first unit
    and the last unit gets an extra one after its addition):
      (a)-(c) conv-BN-ReLU stem, nothing before pooling (v1);
      (d)     conv-BN stem, ReLU before pooling (its activation is ReLU alone);
      (e)     bare conv stem, BN-ReLU before pooling (v2, as timm's resnetv2).

    `shortcut` and `bottleneck_stride` are passed to every unit (see the blocks);
    `first_activation_before_split` makes the network's first unit feed its identity
    shortcut the pre-activated input ([v2] Sec. 4.1, preresnet.lua). With the pre-activation
    units that is the stem's activation moved before the split; with (a)-(c) it changes
    nothing (their branch input is the unit input).
    """

    def __init__(
        self,
        block: type[Block],
        layers: Sequence[int],
        *,
        unit: str,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: str = "imagenet",
        width: int = 64,
        zero_init_residual: bool = False,
        shortcut: str = "projection",
        bottleneck_stride: str = "3x3",
        first_activation_before_split: bool = False,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; valid: {', '.join(STEMS)}")
        if width < 1:
            raise ValueError(f"width must be a positive number of channels, got {width}")
        preact = unit in PREACT_UNITS
        self.inplanes = width
        if stem == "imagenet":
            # [v1] Table 1 conv1 + pool: 3x224x224 -> 64x112x112 -> 64x56x56.
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            # [v1] Sec. 4.2: one 3x3 conv, no pooling: 3x32x32 -> 16x32x32.
            self.conv1 = conv3x3(in_channels, width)
            self.maxpool = nn.Identity()
        self.bn1 = nn.Identity() if unit == "full_preact" else nn.BatchNorm2d(width)
        self.relu = nn.Identity() if preact else nn.ReLU(inplace=True)

        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(layers)))
        block_options = {"shortcut": shortcut, "bottleneck_stride": bottleneck_stride}
        for i, (name, blocks) in enumerate(zip(self.stage_names, layers)):
            stage = self._make_layer(block, width * 2**i, blocks, stride=1 if i == 0 else 2, unit=unit,
                                     preact_identity=first_activation_before_split and i == 0,
                                     **block_options)
            self.add_module(name, stage)
        channels = self.inplanes  # e.g. 2048 for ResNet-50, 64 for ResNet-110

        self.bn_final = nn.BatchNorm2d(channels) if unit == "full_preact" else nn.Identity()
        self.relu_final = nn.ReLU(inplace=True) if preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)

        # torchvision's init: He et al. 2015b (Delving Deep into Rectifiers) normal with
        # fan_out for convs, BN as identity, default init for the linear layer.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck)):
                    m.zero_init_last()

    def _make_layer(self, block: type[Block], planes: int, blocks: int, stride: int, unit: str, *,
                    preact_identity: bool, **block_options: str) -> nn.Sequential:
        # Only the stage's first unit can change the shape or be the network's first unit.
        layers = [block(self.inplanes, planes, stride, unit, preact_identity=preact_identity, **block_options)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, unit, **block_options) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = self.relu_final(self.bn_final(x))
        x = torch.flatten(self.avgpool(x), 1)  # N x C x h x w -> N x C
        return self.fc(x)


# --------------------------------------------------------------------------- registry

# [v1] Table 1: units per stage of the ImageNet models.
IMAGENET_LAYERS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
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
      (resnet-pre-act.lua), and the first activation before the split ([v2] Sec. 4.1).
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
# subclasses BatchNorm2d, so the tensors are the same.
_TIMM_V2_KEYS = (
    (r"stem\.conv\.weight", r"conv1.weight"),
    (r"(layer\d+\.\d+)\.norm(\d)\.(\w+)", r"\1.bn\2.\3"),
    (r"(layer\d+\.\d+)\.conv(\d)\.weight", r"\1.conv\2.weight"),
    (r"(layer\d+\.\d+)\.downsample\.conv\.weight", r"\1.downsample.weight"),
    (r"norm\.(\w+)", r"bn_final.\1"),
    (r"head\.fc\.(weight|bias)", r"fc.\1"),
)


def convert_timm_resnetv2(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a timm `resnetv2_{18,34,50,101,152}` state_dict onto the matching `_v2` model.

    timm's classifier is a 1x1 conv on the pooled features (C_out x C_in x 1 x 1); ours
    is a Linear (C_out x C_in). Other resnetv2 variants (deep stem 'd', BiT with StdConv
    and GroupNorm) have keys or layers we do not have: ValueError.
    """
    out = {}
    for key, value in state_dict.items():
        # timm counts stages from 0, torchvision's layer names from 1.
        renamed = re.sub(r"^stages\.(\d+)\.blocks\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)
        for pattern, template in _TIMM_V2_KEYS:
            match = re.fullmatch(pattern, renamed)
            if match:
                new_key = match.expand(template)
                break
        else:
            raise ValueError(f"unexpected key {key!r}: not a timm resnetv2_{{18,34,50,101,152}} state_dict")
        out[new_key] = value.flatten(1) if new_key == "fc.weight" else value
    return out


# --------------------------------------------------------------------------- CLI


def _table_order(name: str) -> tuple:
    # ImageNet family, then CIFAR basic, then CIFAR bottleneck; by depth within each.
    family, depth, version = parse_model_name(name)
    return (family != "imagenet", _LAYERS[depth][0], depth, version)


# Each family's own input: [v1] Table 1 (ImageNet, 224x224 crops, 1000 classes) and
# [v1] Sec. 4.2 (CIFAR-10, 32x32, 10 classes).
FAMILY_INPUT = {"imagenet": (224, 1000), "cifar": (32, 10)}


def _positive_int(text: str) -> int:
    """argparse type: a positive integer, with argparse's one-line error otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def params_millions(count: int) -> str:
    """Parameters in millions at the papers' printed precision: 0.01M below 1M, 0.1M above.

    [v1] Table 6 prints 0.27M ... 0.85M, 1.7M, 19.4M; [v2] Table 4 1.7M and 10.2M.
    """
    return f"{count / 1e6:.2f}" if count < 1_000_000 else f"{count / 1e6:.1f}"


def model_row(name: str, *, img: int | None = None, num_classes: int | None = None, in_channels: int = 3,
              variant: str = "modern", shortcut: str | None = None,
              bottleneck_stride: str | None = None) -> dict[str, Any]:
    """One line of `resnet-bench models`: architecture, parameters, MACs and FLOPs of one model.

    img / num_classes None: the family's own (FAMILY_INPUT). MACs = multiply-accumulates
    of the conv and linear layers (what [v1] Table 1 calls "FLOPs"); FLOPs = 2 x MACs.
    """
    family, depth, _ = parse_model_name(name)
    arch = resolve_arch(name, variant=variant, shortcut=shortcut, bottleneck_stride=bottleneck_stride)
    img = FAMILY_INPUT[family][0] if img is None else img
    num_classes = FAMILY_INPUT[family][1] if num_classes is None else num_classes
    # Meta device: shapes only, no memory and no arithmetic, so ResNet-1202 at 224x224
    # (about 140 G multiply-adds a forward) takes seconds of Python, not minutes of CPU.
    with torch.device("meta"):
        model = build_model(name, num_classes, in_channels, variant=variant, shortcut=shortcut,
                            bottleneck_stride=bottleneck_stride)
    kind, layers = _LAYERS[depth]
    flops = model_flops(model, (1, in_channels, img, img))
    params = count_params(model)
    return {
        "model": name,
        "family": family,
        "block": kind,
        "units": "-".join(map(str, layers)),
        "unit": arch["unit"],
        "variant": variant,
        "shortcut": arch["shortcut"],
        # Where a downsampling bottleneck strides; basic blocks have no 1x1 conv to choose.
        "bottleneck_stride": arch["bottleneck_stride"] if kind == "bottleneck" else "",
        "img": img,
        "num_classes": num_classes,
        "params": params,
        "params_m": params_millions(params),
        "macs": flops // 2,  # FlopCounterMode counts 2 FLOPs per multiply-accumulate
        "flops": flops,
    }


def models_main(argv: Sequence[str] | None = None) -> int:
    """`resnet-bench models`: parameters, MACs and FLOPs of registered models, each at its family's input."""
    p = Parser(prog="resnet-bench models", description=models_main.__doc__)
    p.add_argument("names", nargs="*", metavar="NAME", help="models to list (default: all)")
    p.add_argument("--img", type=_positive_int,
                   help="input height = width for every model (default: 224 ImageNet family, 32 CIFAR)")
    p.add_argument("--in-channels", type=_positive_int, default=3)
    p.add_argument("--num-classes", type=_positive_int,
                   help="classes for every model (default: 1000 ImageNet family, 10 CIFAR)")
    p.add_argument("--variant", choices=VARIANTS, default="modern",
                   help="modern (torchvision/timm) or paper (the defining paper's network)")
    p.add_argument("--shortcut", choices=SHORTCUTS, help="default: the variant's")
    p.add_argument("--bottleneck-stride", choices=BOTTLENECK_STRIDES, help="default: the variant's")
    p.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    args = p.parse_args(argv)
    unknown = [name for name in args.names if name not in _MODELS]
    if unknown:
        print(f"error: {_unknown_model(unknown[0])}", file=sys.stderr)
        return 2

    rows = [model_row(name, img=args.img, num_classes=args.num_classes, in_channels=args.in_channels,
                      variant=args.variant, shortcut=args.shortcut, bottleneck_stride=args.bottleneck_stride)
            for name in sorted(args.names or available_models(), key=_table_order)]

    print(f"# variant {args.variant}; input 1x{args.in_channels}xIMGxIMG; default stem and width of each family; "
          "params (M) at the papers' precision; MACs = multiply-accumulates of conv and linear layers per "
          "image (what He et al. call FLOPs), FLOPs = 2 x MACs "
          "(torch.utils.flop_counter.FlopCounterMode)")
    header = (f"{'model':<14} {'block':<10} {'units/stage':<12} {'unit':<16} {'shortcut':<10} {'stride':<6} "
              f"{'img':>4} {'classes':>7} {'params':>11} {'params (M)':>10} {'GMACs':>8} {'GFLOPs':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<14} {r['block']:<10} {r['units']:<12} {r['unit']:<16} {r['shortcut']:<10} "
              f"{r['bottleneck_stride'] or '-':<6} {r['img']:>4} {r['num_classes']:>7} {r['params']:>11,} "
              f"{r['params_m']:>10} {r['macs'] / 1e9:>8.3f} {r['flops'] / 1e9:>8.3f}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


def _layer_rows(model: nn.Module, x: Tensor, max_depth: int) -> list[tuple[str, str, str, int, int]]:
    """(name, type, output shape, params incl. children, depth) per module call, in call order."""
    rows: list[list] = []
    open_rows: list[int] = []  # indices of rows whose module is running; calls nest
    handles = []

    def pre_hook(module: nn.Module, _inputs: Any, name: str, depth: int) -> None:
        open_rows.append(len(rows))
        rows.append([name, type(module).__name__, "", count_params(module), depth])

    def post_hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        row = rows[open_rows.pop()]
        row[2] = str(list(output.shape)) if isinstance(output, Tensor) else type(output).__name__

    for name, module in model.named_modules():
        depth = 0 if not name else name.count(".") + 1
        # nn.Identity stands for a layer the unit leaves out (e.g. v2's stem BN): not shown.
        if depth > max_depth or isinstance(module, nn.Identity):
            continue
        handles.append(module.register_forward_pre_hook(
            lambda m, i, name=name or type(model).__name__, depth=depth: pre_hook(m, i, name, depth)))
        handles.append(module.register_forward_hook(post_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [tuple(r) for r in rows]


def summary_main(argv: Sequence[str] | None = None) -> int:
    """`resnet-bench summary NAME`: layer-by-layer output shapes and parameters of one model."""
    p = Parser(prog="resnet-bench summary", description=summary_main.__doc__)
    p.add_argument("name", help="registered model name, e.g. resnet50_v2")
    p.add_argument("--img", type=int, help="input height = width (default 224 ImageNet family, 32 CIFAR)")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, help="default 1000 ImageNet family, 10 CIFAR")
    p.add_argument("--unit", choices=UNITS, help="residual unit (default: by version)")
    p.add_argument("--stem", choices=STEMS, help="default: by family")
    p.add_argument("--width", type=_positive_int, help="base channels (default 64 ImageNet family, 16 CIFAR)")
    p.add_argument("--variant", choices=VARIANTS, default="modern", help="modern (default) or paper")
    p.add_argument("--depth", type=int, default=3, help="deepest module level shown (default 3)")
    args = p.parse_args(argv)
    try:
        family = parse_model_name(args.name).family
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    imagenet = family == "imagenet" if args.stem is None else args.stem == "imagenet"
    img = args.img or (224 if imagenet else 32)
    num_classes = args.num_classes or (1000 if family == "imagenet" else 10)
    options = {k: v for k, v in (("unit", args.unit), ("stem", args.stem), ("width", args.width)) if v is not None}
    try:  # a unit that contradicts the name: one line, before building anything
        resolve_arch(args.name, variant=args.variant, unit=args.unit)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with torch.device("meta"):  # shapes only: any model, any size, no compute
        model = build_model(args.name, num_classes, args.in_channels, variant=args.variant, **options).eval()
    input_shape = (1, args.in_channels, img, img)
    rows = _layer_rows(model, torch.zeros(input_shape, device="meta"), args.depth)

    name_w = max(len("  " * d + n) for n, _, _, _, d in rows) + 2
    type_w = max(len(t) for _, t, _, _, _ in rows) + 2
    header = f"{'Layer':<{name_w}}{'Type':<{type_w}}{'Output shape':<22}{'Param #':>12}"
    rule = "=" * len(header)
    print(rule)
    print(header)
    print(rule)
    for name, typ, shape, params, depth in rows:
        print(f"{'  ' * depth + name:<{name_w}}{typ:<{type_w}}{shape:<22}{params:>12,}")
    print(rule)
    total = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"Input shape: {list(input_shape)}")
    print(f"Total params: {total:,}  (trainable {trainable:,}, non-trainable {total - trainable:,})")
    flops = model_flops(model, input_shape)
    print(f"Forward: {flops / 2e9:.3f} GMACs, {flops / 1e9:.3f} GFLOPs (FLOPs = 2 x MACs)")
    print(rule)
    return 0
