"""Residual units: the four blocks (v1 conv-BN and v2 pre-activation, basic and bottleneck) and
their shortcuts. Sources ([v1], [v2], torchvision, timm, the authors' Torch code) are listed in
`resnet_bench.models`; tensor shapes in comments are N x C x H x W."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor, nn

from resnet_bench.vocab import BOTTLENECK_STRIDES, SHORTCUTS

# [v2] Fig. 4 / Table 2, panels (a)-(e): resnet_bench.vocab.UNITS; (a) is the v1 unit, (e) the v2 unit.
# Units whose activation sits at the start of the residual branch; the trunk then moves
# the stem's activation into the first unit and adds one after the last ([v2] Sec. 4.1).
PREACT_UNITS = ("relu_only_preact", "full_preact")

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
                 preact_identity: bool = False, preact: bool = True) -> None:
        super().__init__()
        _check_unit(unit, ("full_preact",), type(self).__name__)
        del bottleneck_stride  # no 1x1 conv here; accepted so every block has one signature
        self.preact_identity = preact_identity
        # preact False: the input is already activated (preresnet.lua's 'no_preact' first unit after
        # an activated ImageNet stem): no BN-ReLU before conv1.
        self.preact = preact
        self.bn1 = nn.BatchNorm2d(inplanes) if preact else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride, shortcut, with_bn=False)

    def zero_init_last(self) -> None:
        # No BN closes the residual branch in (e); zero its last conv (timm's zero_init_last).
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x)) if self.preact else x
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
                 preact_identity: bool = False, preact: bool = True) -> None:
        super().__init__()
        _check_unit(unit, ("full_preact",), type(self).__name__)
        self.preact_identity = preact_identity
        self.preact = preact  # see PreActBasicBlock
        stride1, stride3 = _bottleneck_strides(stride, bottleneck_stride)
        self.bn1 = nn.BatchNorm2d(inplanes) if preact else nn.Identity()
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
        out = self.relu(self.bn1(x)) if self.preact else x
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
