"""PyTorch translations of the authors' Torch7 ResNet definitions, for parity tests.

Translated line by line from the Lua, keeping its structure (Sequential, ConcatTable,
CAddTable, Concat, MulConstant, SpatialAveragePooling) so that a reader can hold the two
side by side; nothing here imports resnet_bench. Sources (read with the search tool's
read_file; the commit is the stored version that was translated):

- facebookarchive/fb.resnet.torch `models/resnet.lua`,
  commit 2fedffcb6f741b68eeca029928868cc8384ca369 (v1; CIFAR-10 branch, shortcutType A/B/C; ImageNet
  branch, bottleneck with the stride on the 3x3)
- facebookarchive/fb.resnet.torch `models/preresnet.lua`,
  commit 7ac4a9fba461456f270fceb88ba679369e81eb21 (v2: basic blocks on CIFAR-10; ImageNet branch,
  bottleneck with the stride on the 3x3, conv-BN-ReLU stem, 'no_preact' first unit, depths to 200)
- KaimingHe/resnet-1k-layers `resnet-pre-act.lua`,
  commit 8390a4a90719d089378aa6ab60472c6f7551076b (v2 ResNet-164 / ResNet-1001)

Left out on purpose: `model:cuda()`, cuDNN modes, gradInput sharing (memory only) and the
random init (the tests copy every weight from one network to the other). The Lua files'
`nn.Linear(64, 10)` hard-codes CIFAR-10; `num_classes` stands for that 10.

Tensor shapes are N x C x H x W; Lua's dimension 2 of a batch is PyTorch's dimension 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# ----------------------------------------------------------------------------- Torch7 nn


class Sequential(nn.Sequential):
    """nn.Sequential with Torch7's chaining `:add(module)`."""

    def add(self, module: nn.Module) -> "Sequential":
        self.append(module)
        return self


class ConcatTable(nn.ModuleList):
    """Applies every child to the same input; returns the list of outputs."""

    def add(self, module: nn.Module) -> "ConcatTable":
        self.append(module)
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        return [m(x) for m in self]


class CAddTable(nn.Module):
    """Sum of a list of tensors."""

    def forward(self, xs: list[Tensor]) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Concat(nn.ModuleList):
    """nn.Concat(dim): applies every child to the input, concatenates along `dim` (1-based, Lua)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim - 1  # Lua 1-based -> PyTorch 0-based; 2 -> channels

    def add(self, module: nn.Module) -> "Concat":
        self.append(module)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([m(x) for m in self], dim=self.dim)


class MulConstant(nn.Module):
    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: Tensor) -> Tensor:
        return x * self.c


def Convolution(n_in: int, n_out: int, kw: int, kh: int, dw: int = 1, dh: int = 1,
                padw: int = 0, padh: int = 0) -> nn.Conv2d:
    """cudnn.SpatialConvolution(nIn, nOut, kW, kH, dW, dH, padW, padH); the bias is removed by
    the Lua ConvInit (`v.bias = nil` when cudnn.version >= 4000)."""
    return nn.Conv2d(n_in, n_out, (kh, kw), stride=(dh, dw), padding=(padh, padw), bias=False)


def SBatchNorm(n: int) -> nn.BatchNorm2d:
    # nn.SpatialBatchNormalization's default eps is 1e-5, as PyTorch's.
    return nn.BatchNorm2d(n, eps=1e-5)


def ReLU(inplace: bool = True) -> nn.ReLU:
    # Lua's in-place flag only saves memory (same values); out of place here, so that no
    # branch of a ConcatTable can see another branch's in-place change.
    del inplace
    return nn.ReLU(inplace=False)


def SpatialAveragePooling(kw: int, kh: int, dw: int, dh: int) -> nn.AvgPool2d:
    return nn.AvgPool2d((kh, kw), stride=(dh, dw))


Avg = SpatialAveragePooling


def Max(kw: int, kh: int, dw: int, dh: int, padw: int, padh: int) -> nn.MaxPool2d:
    """nn.SpatialMaxPooling(kW, kH, dW, dH, padW, padH); floor mode, as Torch7's default."""
    return nn.MaxPool2d((kh, kw), stride=(dh, dw), padding=(padh, padw))


class View(nn.Module):
    """nn.View(n):setNumInputDims(3): N x n x 1 x 1 -> N x n."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], self.n)


# ------------------------------------------------------------------ fb.resnet.torch resnet.lua


def resnet_lua_cifar(depth: int, shortcut_type: str = "A", num_classes: int = 10) -> Sequential:
    """models/resnet.lua, createModel with opt.dataset == 'cifar10' (He et al. 2015, Sec. 4.2)."""
    i_channels = 0

    def shortcut(n_input: int, n_output: int, stride: int) -> nn.Module:
        use_conv = shortcut_type == "C" or (shortcut_type == "B" and n_input != n_output)
        if use_conv:
            # 1x1 convolution
            return Sequential().add(Convolution(n_input, n_output, 1, 1, stride, stride)).add(SBatchNorm(n_output))
        elif n_input != n_output:
            # Strided, zero-padded identity shortcut
            return (Sequential()
                    .add(SpatialAveragePooling(1, 1, stride, stride))
                    .add(Concat(2).add(nn.Identity()).add(MulConstant(0))))
        return nn.Identity()

    def basicblock(n: int, stride: int) -> nn.Module:
        nonlocal i_channels
        n_input = i_channels
        i_channels = n
        s = Sequential()
        s.add(Convolution(n_input, n, 3, 3, stride, stride, 1, 1))
        s.add(SBatchNorm(n))
        s.add(ReLU(True))
        s.add(Convolution(n, n, 3, 3, 1, 1, 1, 1))
        s.add(SBatchNorm(n))
        return (Sequential()
                .add(ConcatTable().add(s).add(shortcut(n_input, n, stride)))
                .add(CAddTable())
                .add(ReLU(True)))

    def layer(block, features: int, count: int, stride: int = 1) -> Sequential:
        s = Sequential()
        for i in range(1, count + 1):
            s.add(block(features, stride if i == 1 else 1))
        return s

    assert (depth - 2) % 6 == 0, "depth should be one of 20, 32, 44, 56, 110, 1202"
    n = (depth - 2) // 6
    i_channels = 16
    model = Sequential()
    model.add(Convolution(3, 16, 3, 3, 1, 1, 1, 1))
    model.add(SBatchNorm(16))
    model.add(ReLU(True))
    model.add(layer(basicblock, 16, n))
    model.add(layer(basicblock, 32, n, 2))
    model.add(layer(basicblock, 64, n, 2))
    model.add(Avg(8, 8, 1, 1))
    model.add(View(64))
    model.add(nn.Linear(64, num_classes))
    return model


def resnet_lua_imagenet_bottleneck(depth: int, shortcut_type: str = "B", num_classes: int = 1000) -> Sequential:
    """models/resnet.lua, createModel with opt.dataset == 'imagenet', the bottleneck depths (50, 101, 152)."""
    i_channels = 0

    def shortcut(n_input: int, n_output: int, stride: int) -> nn.Module:
        use_conv = shortcut_type == "C" or (shortcut_type == "B" and n_input != n_output)
        if use_conv:
            return Sequential().add(Convolution(n_input, n_output, 1, 1, stride, stride)).add(SBatchNorm(n_output))
        elif n_input != n_output:
            return (Sequential()
                    .add(SpatialAveragePooling(1, 1, stride, stride))
                    .add(Concat(2).add(nn.Identity()).add(MulConstant(0))))
        return nn.Identity()

    def bottleneck(n: int, stride: int) -> nn.Module:
        nonlocal i_channels
        n_input = i_channels
        i_channels = n * 4
        s = Sequential()
        s.add(Convolution(n_input, n, 1, 1, 1, 1, 0, 0))
        s.add(SBatchNorm(n))
        s.add(ReLU(True))
        s.add(Convolution(n, n, 3, 3, stride, stride, 1, 1))
        s.add(SBatchNorm(n))
        s.add(ReLU(True))
        s.add(Convolution(n, n * 4, 1, 1, 1, 1, 0, 0))
        s.add(SBatchNorm(n * 4))
        return (Sequential()
                .add(ConcatTable().add(s).add(shortcut(n_input, n * 4, stride)))
                .add(CAddTable())
                .add(ReLU(True)))

    def layer(block, features: int, count: int, stride: int = 1) -> Sequential:
        s = Sequential()
        for i in range(1, count + 1):
            s.add(block(features, stride if i == 1 else 1))
        return s

    cfg = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
    assert depth in cfg, f"Invalid depth: {depth}"
    d = cfg[depth]
    i_channels = 64
    model = Sequential()
    model.add(Convolution(3, 64, 7, 7, 2, 2, 3, 3))
    model.add(SBatchNorm(64))
    model.add(ReLU(True))
    model.add(Max(3, 3, 2, 2, 1, 1))
    model.add(layer(bottleneck, 64, d[0]))
    model.add(layer(bottleneck, 128, d[1], 2))
    model.add(layer(bottleneck, 256, d[2], 2))
    model.add(layer(bottleneck, 512, d[3], 2))
    model.add(Avg(7, 7, 1, 1))
    model.add(View(2048))
    model.add(nn.Linear(2048, num_classes))
    return model


# --------------------------------------------------------------- fb.resnet.torch preresnet.lua


def preresnet_lua_cifar(depth: int, shortcut_type: str = "B", num_classes: int = 10) -> Sequential:
    """models/preresnet.lua, createModel with opt.dataset == 'cifar10' (He et al. 2016)."""
    i_channels = 0

    def shortcut(n_input: int, n_output: int, stride: int) -> nn.Module:
        use_conv = shortcut_type == "C" or (shortcut_type == "B" and n_input != n_output)
        if use_conv:
            # 1x1 convolution (no BN in the pre-activation file)
            return Sequential().add(Convolution(n_input, n_output, 1, 1, stride, stride))
        elif n_input != n_output:
            # Strided, zero-padded identity shortcut
            return (Sequential()
                    .add(SpatialAveragePooling(1, 1, stride, stride))
                    .add(Concat(2).add(nn.Identity()).add(MulConstant(0))))
        return nn.Identity()

    def basicblock(n: int, stride: int, type_: str | None = None) -> nn.Module:
        nonlocal i_channels
        n_input = i_channels
        i_channels = n
        block = Sequential()
        s = Sequential()
        if type_ == "both_preact":
            block.add(SBatchNorm(n_input))
            block.add(ReLU(True))
        elif type_ != "no_preact":
            s.add(SBatchNorm(n_input))
            s.add(ReLU(True))
        s.add(Convolution(n_input, n, 3, 3, stride, stride, 1, 1))
        s.add(SBatchNorm(n))
        s.add(ReLU(True))
        s.add(Convolution(n, n, 3, 3, 1, 1, 1, 1))
        return (block
                .add(ConcatTable().add(s).add(shortcut(n_input, n, stride)))
                .add(CAddTable()))

    def layer(block, features: int, count: int, stride: int, type_: str | None = None) -> Sequential:
        s = Sequential()
        if count < 1:
            return s
        s.add(block(features, stride, "no_preact" if type_ == "first" else "both_preact"))
        for _ in range(2, count + 1):
            s.add(block(features, 1))
        return s

    assert (depth - 2) % 6 == 0, "depth should be one of 20, 32, 44, 56, 110, 1202"
    n = (depth - 2) // 6
    i_channels = 16
    model = Sequential()
    model.add(Convolution(3, 16, 3, 3, 1, 1, 1, 1))
    model.add(layer(basicblock, 16, n, 1))
    model.add(layer(basicblock, 32, n, 2))
    model.add(layer(basicblock, 64, n, 2))
    model.add(SBatchNorm(i_channels))
    model.add(ReLU(True))
    model.add(Avg(8, 8, 1, 1))
    model.add(View(64))
    model.add(nn.Linear(64, num_classes))
    return model


def preresnet_lua_imagenet_bottleneck(depth: int, shortcut_type: str = "B", num_classes: int = 1000) -> Sequential:
    """models/preresnet.lua, createModel with opt.dataset == 'imagenet', the bottleneck depths (50 .. 200)."""
    i_channels = 0

    def shortcut(n_input: int, n_output: int, stride: int) -> nn.Module:
        use_conv = shortcut_type == "C" or (shortcut_type == "B" and n_input != n_output)
        if use_conv:
            return Sequential().add(Convolution(n_input, n_output, 1, 1, stride, stride))
        elif n_input != n_output:
            return (Sequential()
                    .add(SpatialAveragePooling(1, 1, stride, stride))
                    .add(Concat(2).add(nn.Identity()).add(MulConstant(0))))
        return nn.Identity()

    def bottleneck(n: int, stride: int, type_: str | None = None) -> nn.Module:
        nonlocal i_channels
        n_input = i_channels
        i_channels = n * 4
        block = Sequential()
        s = Sequential()
        if type_ == "both_preact":
            block.add(SBatchNorm(n_input))
            block.add(ReLU(True))
        elif type_ != "no_preact":
            s.add(SBatchNorm(n_input))
            s.add(ReLU(True))
        s.add(Convolution(n_input, n, 1, 1, 1, 1, 0, 0))
        s.add(SBatchNorm(n))
        s.add(ReLU(True))
        s.add(Convolution(n, n, 3, 3, stride, stride, 1, 1))
        s.add(SBatchNorm(n))
        s.add(ReLU(True))
        s.add(Convolution(n, n * 4, 1, 1, 1, 1, 0, 0))
        return (block
                .add(ConcatTable().add(s).add(shortcut(n_input, n * 4, stride)))
                .add(CAddTable()))

    def layer(block, features: int, count: int, stride: int, type_: str | None = None) -> Sequential:
        s = Sequential()
        if count < 1:
            return s
        s.add(block(features, stride, "no_preact" if type_ == "first" else "both_preact"))
        for _ in range(2, count + 1):
            s.add(block(features, 1))
        return s

    cfg = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}
    assert depth in cfg, f"Invalid depth: {depth}"
    d = cfg[depth]
    i_channels = 64
    model = Sequential()
    model.add(Convolution(3, 64, 7, 7, 2, 2, 3, 3))
    model.add(SBatchNorm(64))
    model.add(ReLU(True))
    model.add(Max(3, 3, 2, 2, 1, 1))
    model.add(layer(bottleneck, 64, d[0], 1, "first"))
    model.add(layer(bottleneck, 128, d[1], 2))
    model.add(layer(bottleneck, 256, d[2], 2))
    model.add(layer(bottleneck, 512, d[3], 2))
    model.add(SBatchNorm(i_channels))
    model.add(ReLU(True))
    model.add(Avg(7, 7, 1, 1))
    model.add(View(2048))
    model.add(nn.Linear(2048, num_classes))
    return model


# ------------------------------------------------------------ resnet-1k-layers resnet-pre-act.lua


def resnet_pre_act_lua(depth: int, num_classes: int = 10) -> Sequential:
    """resnet-pre-act.lua, createModel with opt.dataset == 'cifar10' (He et al. 2016, ResNet-164/1001)."""

    def bottleneck(n_input: int, n_output: int, stride: int) -> nn.Module:
        n_bottleneck = n_output // 4
        if n_input == n_output:  # most Residual Units have this shape
            convs = Sequential()
            # conv1x1
            convs.add(SBatchNorm(n_input))
            convs.add(ReLU(True))
            convs.add(Convolution(n_input, n_bottleneck, 1, 1, stride, stride, 0, 0))
            # conv3x3
            convs.add(SBatchNorm(n_bottleneck))
            convs.add(ReLU(True))
            convs.add(Convolution(n_bottleneck, n_bottleneck, 3, 3, 1, 1, 1, 1))
            # conv1x1
            convs.add(SBatchNorm(n_bottleneck))
            convs.add(ReLU(True))
            convs.add(Convolution(n_bottleneck, n_output, 1, 1, 1, 1, 0, 0))
            shortcut = nn.Identity()
            return Sequential().add(ConcatTable().add(convs).add(shortcut)).add(CAddTable())
        # Residual Units for increasing dimensions
        block = Sequential()
        # common BN, ReLU
        block.add(SBatchNorm(n_input))
        block.add(ReLU(True))
        convs = Sequential()
        # conv1x1
        convs.add(Convolution(n_input, n_bottleneck, 1, 1, stride, stride, 0, 0))
        # conv3x3
        convs.add(SBatchNorm(n_bottleneck))
        convs.add(ReLU(True))
        convs.add(Convolution(n_bottleneck, n_bottleneck, 3, 3, 1, 1, 1, 1))
        # conv1x1
        convs.add(SBatchNorm(n_bottleneck))
        convs.add(ReLU(True))
        convs.add(Convolution(n_bottleneck, n_output, 1, 1, 1, 1, 0, 0))
        shortcut = Sequential()
        shortcut.add(Convolution(n_input, n_output, 1, 1, stride, stride, 0, 0))
        return block.add(ConcatTable().add(convs).add(shortcut)).add(CAddTable())

    def layer(block, n_input: int, n_output: int, count: int, stride: int) -> Sequential:
        s = Sequential()
        s.add(block(n_input, n_output, stride))
        for _ in range(2, count + 1):
            s.add(block(n_output, n_output, 1))
        return s

    assert (depth - 2) % 9 == 0, "depth should be 9n+2 (e.g., 164 or 1001 in the paper)"
    n = (depth - 2) // 9
    n_stages = (16, 64, 128, 256)
    model = Sequential()
    model.add(Convolution(3, n_stages[0], 3, 3, 1, 1, 1, 1))  # one conv at the beginning (32x32)
    model.add(layer(bottleneck, n_stages[0], n_stages[1], n, 1))  # Stage 1 (32x32)
    model.add(layer(bottleneck, n_stages[1], n_stages[2], n, 2))  # Stage 2 (16x16)
    model.add(layer(bottleneck, n_stages[2], n_stages[3], n, 2))  # Stage 3 (8x8)
    model.add(SBatchNorm(n_stages[3]))
    model.add(ReLU(True))
    model.add(Avg(8, 8, 1, 1))
    model.add(View(n_stages[3]))
    model.add(nn.Linear(n_stages[3], num_classes))
    return model


# ----------------------------------------------------------------------------- weight copy


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    """Conv, BN and Linear modules in registration order (the Lua files' construction order)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]


def randomize(model: nn.Module, generator: torch.Generator) -> None:
    """Random weights and BN statistics, so that a misplaced BN or ReLU changes the logits.

    BN scale in [-1.5, -0.5] u [0.5, 1.5] (negative too: a BN that commutes with a ReLU or
    a max-pool only for positive scales is caught), shift and running mean N(0, 0.1^2),
    running variance in [0.5, 1.5]. Convs He-normal fan_out (the Lua ConvInit's
    std sqrt(2 / (k*k*C_out))) keep activations O(1) through 1001 layers.
    """
    for m in weighted_layers(model):
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
            m.weight.data = (sign * (0.5 + torch.rand(n, generator=generator))).to(m.weight)
            m.bias.data = (0.1 * torch.randn(n, generator=generator)).to(m.bias)
            m.running_mean = (0.1 * torch.randn(n, generator=generator)).to(m.running_mean)
            m.running_var = (0.5 + torch.rand(n, generator=generator)).to(m.running_var)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            m.weight.data = (torch.randn(m.weight.shape, generator=generator) * (2 / fan_out) ** 0.5).to(m.weight)
        else:
            m.weight.data = (torch.randn(m.weight.shape, generator=generator) / m.in_features**0.5).to(m.weight)
            m.bias.data = torch.randn(m.bias.shape, generator=generator).to(m.bias)


def copy_weights(src: nn.Module, dst: nn.Module) -> int:
    """Copy every conv / BN / linear tensor from `src` to `dst`, pairing the layers in order.

    Raises if the two networks do not have the same sequence of layer types and shapes.
    Returns the number of layers copied.
    """
    a, b = weighted_layers(src), weighted_layers(dst)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} weighted layers in the reference, {len(b)} in ours")
    for i, (x, y) in enumerate(zip(a, b)):
        sx, sy = x.state_dict(), y.state_dict()
        if type(x) is not type(y) or {k: v.shape for k, v in sx.items()} != {k: v.shape for k, v in sy.items()}:
            raise ValueError(f"layer {i}: reference {x} vs ours {y}")
        y.load_state_dict(sx)
    return len(a)
