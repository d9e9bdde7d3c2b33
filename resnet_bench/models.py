"""The ResNet v1 / v2 model zoo: one trunk, four blocks, five residual units.

Sources cited in comments:

- [v1] He, Zhang, Ren, Sun 2015, "Deep Residual Learning for Image Recognition"
  (arXiv:1512.03385).
- [v2] He, Zhang, Ren, Sun 2016, "Identity Mappings in Deep Residual Networks"
  (arXiv:1603.05027), with its reference code KaimingHe/resnet-1k-layers
  (`resnet-pre-act.lua`).
- torchvision `models/resnet.py` (v1 module names, init, "V1.5" stride placement) and
  timm `models/resnetv2.py` (pre-activation blocks, shared block signature).

Every `_v1` model loads a torchvision `resnetX` state_dict as is; every `_v2` model loads
a timm `resnetv2_X` state_dict through `convert_timm_resnetv2`. Tensor shapes in comments
are N x C x H x W.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Union

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

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
    "parse_model_name",
    "count_params",
    "model_flops",
    "convert_timm_resnetv2",
    "models_main",
    "summary_main",
]

# [v2] Fig. 4 / Table 2, panels (a)-(e). (a) is the v1 unit, (e) the v2 unit.
UNITS = ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")
# Units whose activation sits at the start of the residual branch; the trunk then moves
# the stem's activation into the first unit and adds one after the last ([v2] Sec. 4.1).
PREACT_UNITS = ("relu_only_preact", "full_preact")
VERSION_UNIT = {"v1": "original", "v2": "full_preact"}
STEMS = ("imagenet", "cifar")


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
# All four blocks share one constructor signature, (inplanes, planes, stride, unit), in the
# spirit of timm's resnetv2 blocks, so one `_make_layer` serves v1 and v2. Each block
# builds its own projection shortcut when the shape changes ([v1] Sec. 3.3 option B) and
# exposes `expansion` (output channels = planes * expansion) as in torchvision.
#
# BasicBlock / Bottleneck keep the conv-BN pairs of [v1] and implement units (a)-(d):
# they differ only in where the ReLUs and the last BN sit relative to the addition.
# PreAct* implement unit (e), where BN-ReLU precede every conv.

# Units (a)-(d): the weight layers are conv-BN(-ReLU) as in [v1] Sec. 3.4.
_POSTACT_BODY_UNITS = ("original", "bn_after_add", "relu_before_add", "relu_only_preact")


class BasicBlock(nn.Module):
    """Two 3x3 convs, [v1] Fig. 2 / Fig. 5 left; module names match torchvision's."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, unit: str = "original") -> None:
        super().__init__()
        _check_unit(unit, _POSTACT_BODY_UNITS, type(self).__name__)
        self.unit = unit
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        # (b) applies this BN to the sum (same channel count), the others to conv2's output.
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(inplanes, planes * self.expansion, stride, with_bn=True)

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
        identity = x if self.downsample is None else self.downsample(out)
        out = self.relu(self.bn1(self.conv1(out)))
        return _merge(self.conv2(out), identity, self.bn2, self.relu, self.unit)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand ([v1] Fig. 5 right); module names match torchvision's.

    Deviation from [v1] (and from [v2]'s reference code): the stride of a downsampling
    unit sits on the 3x3 conv (conv2), not on the first 1x1 conv. This is torchvision's
    "ResNet V1.5", also timm's: a strided 1x1 conv reads only a quarter of its input
    positions. Same parameters; more FLOPs, since conv1 of each downsampling unit then runs
    at the input resolution (ResNet-50: 4.1 G multiply-adds instead of [v1] Table 1's 3.8).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, unit: str = "original") -> None:
        super().__init__()
        _check_unit(unit, _POSTACT_BODY_UNITS, type(self).__name__)
        self.unit = unit
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # V1.5: stride here, see the docstring
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(inplanes, planes * self.expansion, stride, with_bn=True)

    def zero_init_last(self) -> None:
        # See BasicBlock.zero_init_last.
        if self.unit == "bn_after_add":
            nn.init.zeros_(self.conv3.weight)
        else:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = _residual_input(x, self.unit)
        identity = x if self.downsample is None else self.downsample(out)
        out = self.relu(self.bn1(self.conv1(out)))
        out = self.relu(self.bn2(self.conv2(out)))
        return _merge(self.conv3(out), identity, self.bn3, self.relu, self.unit)


def _residual_input(x: Tensor, unit: str) -> Tensor:
    """Input of the residual branch and of a projection shortcut.

    (d) ReLU-only pre-activation: ReLU before the first conv. Not in place: `x` itself is
    the identity shortcut.
    """
    return torch.relu(x) if unit == "relu_only_preact" else x


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

    Same computation as timm's PreActBasic; module names follow this file's convention
    (bn1 is the BN *before* conv1), `convert_timm_resnetv2` maps timm's names.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, unit: str = "full_preact") -> None:
        super().__init__()
        _check_unit(unit, ("full_preact",), type(self).__name__)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = _projection(inplanes, planes * self.expansion, stride, with_bn=False)

    def zero_init_last(self) -> None:
        # No BN closes the residual branch in (e); zero its last conv (timm's zero_init_last).
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        # The projection shortcut sees the pre-activated input ([v2] reference code, timm);
        # an identity shortcut passes the raw sum of the previous unit (the clean path).
        # [v2] Sec. 4.1 also feeds the pre-activated input to the identity shortcut of the
        # network's first unit; here, as in timm, only projections see it (parity, and it
        # only concerns basic-block models, whose first unit keeps its shape).
        identity = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class PreActBottleneck(nn.Module):
    """Full pre-activation bottleneck unit (e), [v2] Fig. 4(e) with the [v1] bottleneck.

    Same computation as timm's PreActBottleneck. Like Bottleneck, the stride sits on the
    3x3 conv (V1.5, as in timm); [v2]'s reference code strides the first 1x1 conv.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, unit: str = "full_preact") -> None:
        super().__init__()
        _check_unit(unit, ("full_preact",), type(self).__name__)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # V1.5: stride here
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.downsample = _projection(inplanes, planes * self.expansion, stride, with_bn=False)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(out)  # see PreActBasicBlock
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + identity


Block = Union[BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck]


def _projection(inplanes: int, outplanes: int, stride: int, with_bn: bool) -> nn.Module | None:
    """Option B shortcut of [v1] Sec. 3.3: identity when the shape is kept, else a strided 1x1 conv.

    Post-activation units add a BN (torchvision's `downsample.0/1`); in (e) the conv
    takes the pre-activated input and has no BN ([v2] reference code, timm DownsampleConv).
    """
    if stride == 1 and inplanes == outplanes:
        return None
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
        for i, (name, blocks) in enumerate(zip(self.stage_names, layers)):
            stage = self._make_layer(block, width * 2**i, blocks, stride=1 if i == 0 else 2, unit=unit)
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

    def _make_layer(self, block: type[Block], planes: int, blocks: int, stride: int, unit: str) -> nn.Sequential:
        layers = [block(self.inplanes, planes, stride, unit)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, unit) for _ in range(1, blocks)]
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


def build_model(name: str, num_classes: int, in_channels: int = 3, **options: Any) -> ResNet:
    """Build a registered model; `options` are the builders' keyword arguments (stem, width, unit, ...)."""
    if name not in _MODELS:
        raise _unknown_model(name)
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, **options)


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
) -> ResNet:
    family = "imagenet" if depth in IMAGENET_LAYERS else "cifar"
    kind, layers = _LAYERS[depth]
    unit = VERSION_UNIT[version] if unit is None else unit
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; valid: {', '.join(UNITS)}")
    return ResNet(
        _BLOCKS[unit == "full_preact", kind],
        layers,
        unit=unit,
        num_classes=num_classes,
        in_channels=in_channels,
        stem=family if stem is None else stem,
        width=DEFAULT_WIDTH[family] if width is None else width,
        zero_init_residual=zero_init_residual,
    )


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


# CIFAR family, default stem 'cifar', width 16. Shortcuts are option B (1x1 projection
# when the shape changes) where [v1] Sec. 4.2 used option A (zero-padded identity, no
# parameters) for the basic-block models: this adds two 1x1 convs (+ BN in v1), 2,752
# parameters (2,560 in v2) at width 16. ResNet-110 has 1,730,714 (v1) / 1,730,522 (v2)
# and still rounds to [v1] Table 6's 1.7M, 1202 to 19.4M; at Table 6's 0.01M precision
# 32 and 56 read 0.47M / 0.86M instead of 0.46M / 0.85M. The bottleneck models of [v2]
# use projections too.


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


def models_main(argv: Sequence[str] | None = None) -> int:
    """`resnet-bench models`: parameters and forward GFLOPs of every registered model."""
    p = argparse.ArgumentParser(prog="resnet-bench models", description=models_main.__doc__)
    p.add_argument("names", nargs="*", metavar="NAME", help="models to list (default: all)")
    p.add_argument("--img", type=int, default=224, help="input height = width (default 224)")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    args = p.parse_args(argv)
    unknown = [name for name in args.names if name not in _MODELS]
    if unknown:
        print(f"error: {_unknown_model(unknown[0])}", file=sys.stderr)
        return 2

    rows = []
    for name in sorted(args.names or available_models(), key=_table_order):
        family, depth, version = parse_model_name(name)
        # Meta device: shapes only, no memory and no arithmetic, so ResNet-1202 at
        # 224x224 (about 280 GFLOPs a forward) takes seconds of Python, not minutes of CPU.
        with torch.device("meta"):
            model = build_model(name, args.num_classes, args.in_channels)
        kind, layers = _LAYERS[depth]
        flops = model_flops(model, (1, args.in_channels, args.img, args.img))
        rows.append({
            "model": name,
            "family": family,
            "block": kind,
            "units": "-".join(map(str, layers)),
            "unit": VERSION_UNIT[version],
            "params": count_params(model),
            "gflops": round(flops / 1e9, 3),
        })

    print(f"# input 1x{args.in_channels}x{args.img}x{args.img}, {args.num_classes} classes, default "
          "stem and width of each family; GFLOPs = forward conv+linear FLOPs per image "
          "(torch.utils.flop_counter.FlopCounterMode, FLOPs = 2 x MACs)")
    header = f"{'model':<15} {'family':<9} {'block':<11} {'units/stage':<12} {'unit':<12} {'params':>12} {'GFLOPs':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<15} {r['family']:<9} {r['block']:<11} {r['units']:<12} {r['unit']:<12} "
              f"{r['params']:>12,} {r['gflops']:>9.3f}")
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
    p = argparse.ArgumentParser(prog="resnet-bench summary", description=summary_main.__doc__)
    p.add_argument("name", help="registered model name, e.g. resnet50_v2")
    p.add_argument("--img", type=int, help="input height = width (default 224 ImageNet family, 32 CIFAR)")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, help="default 1000 ImageNet family, 10 CIFAR")
    p.add_argument("--unit", choices=UNITS, help="residual unit (default: by version)")
    p.add_argument("--stem", choices=STEMS, help="default: by family")
    p.add_argument("--width", type=int, help="base channels (default 64 ImageNet family, 16 CIFAR)")
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
    with torch.device("meta"):  # shapes only: any model, any size, no compute
        model = build_model(args.name, num_classes, args.in_channels, **options).eval()
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
    print(f"Forward GFLOPs: {model_flops(model, input_shape) / 1e9:.3f} (FLOPs = 2 x MACs)")
    print(rule)
    return 0
