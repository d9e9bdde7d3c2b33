"""`variant="paper"` equals the authors' own networks, logit for logit.

The references are line-by-line PyTorch translations of the Torch7 files (tests/reference_lua.py,
which cites repository, file and commit of each). Every weight, BN scale/shift and BN
running statistic is random and copied from the reference to ours, layer by layer in
construction order; both run in eval mode in float64 on the same input, and the largest
logit difference must be within 1e-9 of the largest logit magnitude.

The same comparison with `variant="modern"` must fail (a stand-in that always agrees would
not): that shows the tests can see each paper detail the issue names.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet_bench.models import build_model
import reference_lua as lua  # tests/ is on sys.path (pytest rootdir-less "prepend" import mode)

# The CIFAR-10 input the Lua models are written for: Avg(8, 8) after two stride-2 stages.
INPUT_SHAPE = (2, 3, 32, 32)
MAX_RELATIVE_DIFF = 1e-9  # float64 carries ~1e-16; summation order may differ (cuDNN vs CPU)


def relative_diffs(reference: nn.Module, candidates: list[nn.Module], seed: int, input_shape=INPUT_SHAPE) -> list[float]:
    """Randomise `reference`, copy it into each candidate, compare logits (float64, eval mode)."""
    generator = torch.Generator().manual_seed(seed)
    reference = reference.double()
    lua.randomize(reference, generator)
    x = torch.randn(input_shape, generator=generator, dtype=torch.float64)
    reference.eval()
    with torch.no_grad():
        expected = reference(x)
    # Logits far from zero: a test that compares two all-zero outputs would pass vacuously.
    assert expected.shape == (input_shape[0], 10) and expected.abs().max().item() > 1e-3
    out = []
    for ours in candidates:
        ours = ours.double()
        lua.copy_weights(reference, ours)
        ours.eval()
        with torch.no_grad():
            got = ours(x)
        assert got.shape == expected.shape
        out.append(((got - expected).abs().max() / expected.abs().max()).item())
    return out


def max_relative_diff(reference: nn.Module, ours: nn.Module, seed: int, input_shape=INPUT_SHAPE) -> float:
    return relative_diffs(reference, [ours], seed, input_shape)[0]


# ---------------------------------------------------------------- v1: fb.resnet.torch resnet.lua


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_v1_paper_equals_resnet_lua_option_a(depth):
    # facebookarchive/fb.resnet.torch models/resnet.lua @ 2fedffcb6f741b68eeca029928868cc8384ca369,
    # CIFAR-10 branch with shortcutType 'A' (He et al. 2015 Sec. 4.2: zero-padding shortcuts).
    reference = lua.resnet_lua_cifar(depth, shortcut_type="A")
    ours = build_model(f"resnet{depth}_v1", num_classes=10, variant="paper")
    assert max_relative_diff(reference, ours, seed=depth) <= MAX_RELATIVE_DIFF


def test_v1_paper_projection_equals_resnet_lua_option_b():
    # resnet.lua @ 2fedffcb6f741b68eeca029928868cc8384ca369, shortcutType 'B' (its default):
    # the shortcut ablation reaches the same network as the authors' option B.
    reference = lua.resnet_lua_cifar(20, shortcut_type="B")
    ours = build_model("resnet20_v1", num_classes=10, variant="paper", shortcut="projection")
    assert max_relative_diff(reference, ours, seed=1) <= MAX_RELATIVE_DIFF


def test_v1_modern_differs_from_resnet_lua_option_a():
    # The modern variant's projections cannot even take option A's weights (more layers).
    with pytest.raises(ValueError, match="weighted layers in the reference"):
        max_relative_diff(lua.resnet_lua_cifar(20, "A"), build_model("resnet20_v1", num_classes=10), seed=0)


# ------------------------------------------------------------- v2 basic: fb.resnet.torch preresnet.lua


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_v2_paper_equals_preresnet_lua(depth):
    # facebookarchive/fb.resnet.torch models/preresnet.lua @ 7ac4a9fba461456f270fceb88ba679369e81eb21,
    # CIFAR-10 branch, default shortcutType 'B'. Its first unit is 'both_preact': the BN-ReLU
    # after the bare conv stem feeds both the residual branch and the identity shortcut
    # (He et al. 2016 Sec. 4.1).
    reference = lua.preresnet_lua_cifar(depth, shortcut_type="B")
    ours = build_model(f"resnet{depth}_v2", num_classes=10, variant="paper")
    assert max_relative_diff(reference, ours, seed=depth) <= MAX_RELATIVE_DIFF


def test_v2_paper_zero_pad_equals_preresnet_lua_option_a():
    # preresnet.lua @ 7ac4a9fba461456f270fceb88ba679369e81eb21 with shortcutType 'A': the
    # zero-pad shortcut also takes the pre-activated input ('both_preact').
    reference = lua.preresnet_lua_cifar(20, shortcut_type="A")
    ours = build_model("resnet20_v2", num_classes=10, variant="paper", shortcut="zero_pad")
    assert max_relative_diff(reference, ours, seed=2) <= MAX_RELATIVE_DIFF


def test_v2_modern_differs_from_preresnet_lua():
    # Same layers, but the first identity shortcut carries the raw stem output (timm).
    diff = max_relative_diff(lua.preresnet_lua_cifar(20, "B"), build_model("resnet20_v2", num_classes=10), seed=0)
    assert diff > 1e-3


# --------------------------------------------------------- v2 bottleneck: resnet-1k-layers resnet-pre-act.lua


def test_v2_paper_164_equals_resnet_pre_act_lua():
    # KaimingHe/resnet-1k-layers resnet-pre-act.lua @ 8390a4a90719d089378aa6ab60472c6f7551076b:
    # stride on the first 1x1 conv, projection from the pre-activated input.
    reference = lua.resnet_pre_act_lua(164)
    ours = build_model("resnet164_v2", num_classes=10, variant="paper")
    assert max_relative_diff(reference, ours, seed=164) <= MAX_RELATIVE_DIFF


def test_v2_modern_164_differs_from_resnet_pre_act_lua():
    # Modern strides the 3x3 conv (torchvision V1.5 / timm): same weights, other logits.
    diff = max_relative_diff(lua.resnet_pre_act_lua(164), build_model("resnet164_v2", num_classes=10), seed=0)
    assert diff > 1e-3


def test_v2_bottleneck_stride_alone_fixes_164():
    # The single ablation switch: modern + bottleneck_stride="1x1" is the authors' ResNet-164
    # (its first unit changes shape, so the identity-split rule does not apply there).
    reference = lua.resnet_pre_act_lua(164)
    ours = build_model("resnet164_v2", num_classes=10, bottleneck_stride="1x1")
    assert max_relative_diff(reference, ours, seed=3) <= MAX_RELATIVE_DIFF


@pytest.mark.slow
def test_v2_paper_1001_equals_resnet_pre_act_lua():
    # resnet-pre-act.lua @ 8390a4a90719d089378aa6ab60472c6f7551076b at depth 1001
    # (111 units per stage); about 10 s on one CPU thread in float64.
    reference = lua.resnet_pre_act_lua(1001)
    ours = build_model("resnet1001_v2", num_classes=10, variant="paper")
    assert max_relative_diff(reference, ours, seed=1001) <= MAX_RELATIVE_DIFF


# ------------------------------------------- ImageNet bottlenecks: fb.resnet.torch resnet.lua / preresnet.lua
# The Lua ImageNet heads hard-code Avg(7, 7): a 193 x 193 input is the smallest that ends at 7 x 7
# (224 in the Lua's use); one image in float64 keeps it cheap.
IMAGENET_INPUT = (1, 3, 193, 193)


def test_v1_paper_3x3_equals_resnet_lua_imagenet():
    # resnet.lua @ 2fedffcb6f741b68eeca029928868cc8384ca369, ImageNet branch, ResNet-50, shortcutType 'B':
    # the stride on the 3x3 conv of a downsampling bottleneck (fb.resnet.torch's, torchvision's "V1.5").
    # The papers' stride on the first 1x1 (the paper variant's default) is another network.
    same, other = relative_diffs(lua.resnet_lua_imagenet_bottleneck(50, num_classes=10),
                                 [build_model("resnet50_v1", num_classes=10, variant="paper", bottleneck_stride="3x3"),
                                  build_model("resnet50_v1", num_classes=10, variant="paper")],
                                 seed=50, input_shape=IMAGENET_INPUT)
    assert same <= MAX_RELATIVE_DIFF and other > 1e-3


def test_v2_paper_3x3_equals_preresnet_lua_imagenet():
    # preresnet.lua @ 7ac4a9fba461456f270fceb88ba679369e81eb21, ImageNet branch, ResNet-50: conv-BN-ReLU
    # stem before the max-pool, a 'no_preact' first unit, 'both_preact' first units of stages 2-4
    # (projection of the pre-activated input, no BN), stride on the 3x3, final BN-ReLU. The modern
    # (timm) network has as many layers, but its BN-ReLU comes after the pool: other logits.
    same, modern = relative_diffs(lua.preresnet_lua_imagenet_bottleneck(50, num_classes=10),
                                  [build_model("resnet50_v2", num_classes=10, variant="paper", bottleneck_stride="3x3"),
                                   build_model("resnet50_v2", num_classes=10)],
                                  seed=51, input_shape=IMAGENET_INPUT)
    assert same <= MAX_RELATIVE_DIFF and modern > 1e-3


def test_resnet200_v2_paper_has_preresnet_lua_layers():
    # preresnet.lua's cfg[200] = {3, 24, 36, 3}: the same layers, in order, with the same shapes.
    with torch.device("meta"):
        reference = lua.preresnet_lua_imagenet_bottleneck(200, num_classes=1000)
        ours = build_model("resnet200_v2", num_classes=1000, variant="paper", bottleneck_stride="3x3")
    assert [type(m) for m in lua.weighted_layers(reference)] == [type(m) for m in lua.weighted_layers(ours)]
    assert [p.shape for p in reference.parameters()] == [p.shape for p in ours.parameters()]
