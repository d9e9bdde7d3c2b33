"""The trunk: stem, stages built by one `_make_layer`, head. One class for v1 and v2."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from resnet_bench.models.blocks import (PREACT_UNITS, BasicBlock, Block, Bottleneck, PreActBasicBlock,
                                        PreActBottleneck, conv3x3)
from resnet_bench.vocab import STEMS

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

    `activated_stem` (unit (e) only): the stem keeps its BN-ReLU before the max-pool and the first
    unit has no pre-activation, as fb.resnet.torch preresnet.lua builds its ImageNet networks.

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
        activated_stem: bool = False,
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
        if activated_stem and unit != "full_preact":
            raise ValueError(f"activated_stem is the stem of unit (e) full_preact networks, not of {unit!r}")
        # activated_stem: conv-BN-ReLU before the pool even in (e), whose first unit then has no
        # pre-activation (fb.resnet.torch preresnet.lua, ImageNet: stem, then a 'no_preact' unit).
        self.bn1 = nn.Identity() if unit == "full_preact" and not activated_stem else nn.BatchNorm2d(width)
        self.relu = nn.Identity() if preact and not activated_stem else nn.ReLU(inplace=True)

        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(layers)))
        block_options = {"shortcut": shortcut, "bottleneck_stride": bottleneck_stride}
        for i, (name, blocks) in enumerate(zip(self.stage_names, layers)):
            first = {"preact": False} if activated_stem and i == 0 else {}
            stage = self._make_layer(block, width * 2**i, blocks, stride=1 if i == 0 else 2, unit=unit,
                                     preact_identity=first_activation_before_split and i == 0,
                                     first_unit=first, **block_options)
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
                    preact_identity: bool, first_unit: dict, **block_options: str) -> nn.Sequential:
        # Only the stage's first unit can change the shape or be the network's first unit.
        layers = [block(self.inplanes, planes, stride, unit, preact_identity=preact_identity, **first_unit,
                        **block_options)]
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
