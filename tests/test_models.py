"""The model zoo: every registered model runs and trains, v1 == torchvision and v2 == timm
by logits, parameter counts match the libraries and the papers, the unit ablation, errors,
FLOPs and the CLI tables. Real-size models only at 64x64 or on the meta device (CPU budget)."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from resnet_bench import models
from resnet_bench.models import (
    UNITS,
    available_models,
    build_model,
    convert_timm_resnetv2,
    count_params,
    model_flops,
    parse_model_name,
)

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

DEPTHS = (18, 34, 50, 101, 152)
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202, 164, 1001)


def meta(fn, *args, **kwargs):
    """Build on the meta device: shapes and parameter counts without memory or init cost."""
    with torch.device("meta"):
        return fn(*args, **kwargs)


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give every BN realistic running statistics (cumulative average over one batch), then eval.

    With the default statistics (mean 0, var 1) eval-mode BN is almost the identity and a
    misplaced BN would go unnoticed.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


# ----------------------------------------------------------------------- registry


def test_registry_lists_every_depth_and_version_sorted():
    names = available_models()
    assert names == sorted(names)
    assert set(names) == {f"resnet{d}_{v}" for d in DEPTHS + CIFAR_DEPTHS for v in ("v1", "v2")}


def test_parse_model_name():
    assert parse_model_name("resnet50_v1") == ("imagenet", 50, "v1")
    assert parse_model_name("resnet110_v2") == ("cifar", 110, "v2")
    assert parse_model_name("resnet1001_v2").family == "cifar"


@pytest.mark.parametrize("name", ["resnet19_v1", "resnet50_v3", "resnet50", "vgg16", "resnet164"])
def test_unknown_name_lists_valid_names(name):
    for fn in (lambda: build_model(name, 10), lambda: parse_model_name(name)):
        with pytest.raises(ValueError, match=f"unknown model '{name}'; valid: resnet1001_v1, ") as err:
            fn()
        assert all(n in str(err.value) for n in available_models())


def test_bad_unit_and_bad_stem_list_valid_ones():
    with pytest.raises(ValueError, match="unknown unit 'preact'; valid: " + ", ".join(UNITS)):
        build_model("resnet20_v1", 10, unit="preact")
    with pytest.raises(ValueError, match="unknown stem 'tiny'; valid: imagenet, cifar"):
        build_model("resnet18_v1", 10, stem="tiny")
    with pytest.raises(TypeError):  # builders are keyword-only
        models.resnet18_v1(10)


# ----------------------------------------------------------------------- every model


@pytest.mark.parametrize("name", available_models())
def test_every_model_trains_tiny(name):
    torch.manual_seed(0)
    # width 2 keeps ResNet-1202/1001 (600 / 333 units) to about a second.
    width = 2 if parse_model_name(name).depth >= 1001 else 4
    model = build_model(name, num_classes=5, width=width)
    x = torch.randn(2, 3, 16, 16)
    out = model(x)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_in_channels_and_stem_options():
    # A grayscale ImageNet-family model on 32x32 with the CIFAR stem: no downsampling in the stem.
    model = build_model("resnet18_v2", 7, in_channels=1, stem="cifar", width=4)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    # ...and a CIFAR depth with the ImageNet stem.
    model = build_model("resnet20_v1", 3, stem="imagenet", width=4)
    assert model.conv1.kernel_size == (7, 7) and isinstance(model.maxpool, nn.MaxPool2d)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


# ----------------------------------------------------------------------- parity


@pytest.mark.parametrize("depth", DEPTHS)
def test_v1_equals_torchvision(depth):
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")()
    calibrate_bn(reference, torch.randn(4, 3, 64, 64))
    ours = build_model(f"resnet{depth}_v1", 1000).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("depth", DEPTHS)
def test_v2_equals_timm_resnetv2(depth):
    # timm's resnetv2_{18..152} are the plain He et al. 2016 pre-activation ResNet:
    # stem_type='' (7x7 conv + symmetric-padded max-pool, no BN), create_conv2d (plain
    # Conv2d, symmetric padding), BatchNormAct2d (BN + ReLU), 1x1 projection without BN.
    torch.manual_seed(depth)
    reference = timm.create_model(f"resnetv2_{depth}", pretrained=False)
    calibrate_bn(reference, torch.randn(4, 3, 64, 64))
    ours = build_model(f"resnet{depth}_v2", 1000).eval()
    ours.load_state_dict(convert_timm_resnetv2(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() <= 1e-5


def test_convert_timm_rejects_other_resnetv2_variants():
    # The 'd' variant has a deep stem (stem.conv1..3) and avg-pool projections.
    state_dict = meta(timm.create_model, "resnetv2_50d", pretrained=False).state_dict()
    with pytest.raises(ValueError, match="unexpected key 'stem.conv1.weight'"):
        convert_timm_resnetv2(state_dict)


# ----------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("depth", DEPTHS)
def test_param_counts_equal_torchvision_and_timm(depth):
    tv = count_params(meta(getattr(torchvision.models, f"resnet{depth}")))
    tm = count_params(meta(timm.create_model, f"resnetv2_{depth}", pretrained=False))
    assert count_params(meta(build_model, f"resnet{depth}_v1", 1000)) == tv
    assert count_params(meta(build_model, f"resnet{depth}_v2", 1000)) == tm


def test_param_counts_resnet50_known_values():
    assert count_params(meta(build_model, "resnet50_v1", 1000)) == 25_557_032
    assert count_params(meta(build_model, "resnet50_v2", 1000)) == 25_549_352


def _projection_params(model: nn.Module) -> int:
    return sum(count_params(m.downsample) for m in model.modules() if getattr(m, "downsample", None) is not None)


# He et al. 2015 Table 6 (CIFAR-10, option A shortcuts), as printed (decimals matter).
PAPER_V1_CIFAR = {20: "0.27", 32: "0.46", 44: "0.66", 56: "0.85", 110: "1.7", 1202: "19.4"}


def within_rounding(count: int, printed: str) -> bool:
    """`count` rounds to `printed` (in millions): within half a unit of its last digit."""
    decimals = len(printed.split(".")[1])
    return abs(count / 1e6 - float(printed)) <= 0.5 * 10**-decimals


@pytest.mark.parametrize("depth", list(PAPER_V1_CIFAR))
def test_cifar_basic_param_counts_match_he_2015_table6(depth):
    model = meta(build_model, f"resnet{depth}_v1", 10)
    # To 0.1M as built (option B projections add 2,752 parameters)...
    assert abs(count_params(model) / 1e6 - float(PAPER_V1_CIFAR[depth])) <= 0.05
    # ...and to the printed digit once the projections are taken out (option A has none).
    assert within_rounding(count_params(model) - _projection_params(model), PAPER_V1_CIFAR[depth])


def _bn_params(model: nn.Module) -> int:
    return sum(count_params(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize(("depth", "paper"), [(110, "1.7"), (164, "1.7"), (1001, "10.2")])
def test_cifar_param_counts_match_he_2016(depth, paper):
    # He et al. 2016 Tables 3-4. ResNet-1001 has 10,327,706 parameters, 10.3M; the
    # printed 10.2M is its count without BN's affine parameters (149,216): 10,178,490.
    # (He et al. 2015's 19.4M for ResNet-1202 does include them.) 110 and 164 round to
    # 1.7M either way.
    model = meta(build_model, f"resnet{depth}_v2", 10)
    count = count_params(model) - (_bn_params(model) if depth == 1001 else 0)
    assert within_rounding(count, paper)
    if depth == 1001:
        assert count_params(model) == 10_327_706


# ----------------------------------------------------------------------- units


def _tiny(name: str, **options) -> nn.Module:
    return build_model(name, 4, width=4, **options)


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("name", ["resnet20_v1", "resnet50_v2"])
def test_every_unit_trains_one_step(name, unit):
    torch.manual_seed(0)
    model = _tiny(name, unit=unit)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert all(changed)


def test_unit_structure():
    # v1: conv-BN-ReLU stem, projection conv+BN, nothing before pooling.
    v1 = _tiny("resnet50_v1")
    assert isinstance(v1.bn1, nn.BatchNorm2d) and isinstance(v1.bn_final, nn.Identity)
    assert isinstance(v1.layer1[0].downsample[1], nn.BatchNorm2d)
    # v2: bare-conv stem, BN-ReLU before pooling, projection is a conv without BN.
    v2 = _tiny("resnet50_v2")
    assert isinstance(v2.bn1, nn.Identity) and isinstance(v2.relu, nn.Identity)
    assert isinstance(v2.bn_final, nn.BatchNorm2d) and isinstance(v2.relu_final, nn.ReLU)
    assert isinstance(v2.layer1[0].downsample, nn.Conv2d)
    # (d): conv-BN stem, ReLU (its activation) before pooling.
    d = _tiny("resnet20_v1", unit="relu_only_preact")
    assert isinstance(d.bn1, nn.BatchNorm2d) and isinstance(d.relu, nn.Identity)
    assert isinstance(d.bn_final, nn.Identity) and isinstance(d.relu_final, nn.ReLU)
    # a _v1 name with the v2 unit is the v2 model.
    assert count_params(_tiny("resnet110_v1", unit="full_preact")) == count_params(_tiny("resnet110_v2"))


@pytest.mark.parametrize("name", ["resnet18_v2", "resnet50_v2"])
def test_v2_projection_takes_the_preactivated_input(name):
    block = _tiny(name).layer2[0].eval()
    seen = []
    block.downsample.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    x = torch.randn(2, block.bn1.num_features, 8, 8)
    with torch.no_grad():
        block(x)
        assert torch.equal(seen[0], torch.relu(block.bn1(x)))


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("name", ["resnet20_v1", "resnet164_v1"])
def test_zero_init_residual_makes_units_start_as_shortcuts(name, unit):
    model = build_model(name, 4, width=4, unit=unit, zero_init_residual=True).eval()
    block = model.layer1[1]  # identity shortcut
    x = torch.rand(2, 4 * block.expansion, 8, 8)  # >= 0: ReLU after the add is the identity too
    with torch.no_grad():
        # eval BN with fresh statistics divides by sqrt(1 + eps)
        torch.testing.assert_close(block(x), x, atol=1e-4, rtol=1e-4)
    trained = build_model(name, 4, width=4, unit=unit).eval()
    with torch.no_grad():
        assert not torch.allclose(trained.layer1[1](x), x, atol=1e-2)


# ----------------------------------------------------------------------- execution modes


@pytest.mark.parametrize("name", ["resnet18_v1", "resnet50_v2", "resnet20_v2"])
def test_channels_last_gives_the_same_output(name):
    torch.manual_seed(0)
    model = calibrate_bn(build_model(name, 10, width=8), torch.randn(4, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _compile_supported() -> bool:
    # Inductor on CPU generates C++: it needs dynamo support and a C++ compiler.
    return torch._dynamo.is_dynamo_supported() and any(shutil.which(cc) for cc in ("g++", "clang++"))


@pytest.mark.skipif(not _compile_supported(), reason="torch.compile unsupported here (dynamo or C++ compiler)")
def test_torch_compile_matches_eager():
    # The smallest trunk (two one-unit stages) keeps inductor's C++ compilation to seconds.
    torch.manual_seed(0)
    model = models.ResNet(models.PreActBasicBlock, [1, 1], unit="full_preact", stem="cifar", width=4,
                          num_classes=3).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------- FLOPs and CLI


def test_model_flops_meta_equals_cpu_and_torchvision_figure():
    cpu = build_model("resnet20_v2", 10, width=8)
    assert model_flops(cpu, (1, 3, 32, 32)) == model_flops(meta(build_model, "resnet20_v2", 10, width=8),
                                                           (1, 3, 32, 32))
    assert cpu.training  # mode restored
    # torchvision documents ResNet-50 at 4.09 GFLOPS, counting multiply-adds; ours is 2 x MACs.
    flops = model_flops(meta(build_model, "resnet50_v1", 1000), (1, 3, 224, 224))
    assert round(flops / 2e9, 2) == 4.09


def test_models_main_table_and_csv(tmp_path, capsys):
    csv_path = tmp_path / "models.csv"
    argv = ["resnet110_v1", "resnet50_v2", "--img", "32", "--num-classes", "10", "--csv", str(csv_path)]
    assert models.models_main(argv) == 0
    out = capsys.readouterr().out
    assert "FLOPs = 2 x MACs" in out
    assert "1,730,714" in out  # resnet110_v1 with 10 classes
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "model,family,block,units,unit,params,gflops"
    assert [line.split(",")[0] for line in lines[1:]] == ["resnet50_v2", "resnet110_v1"]
    assert models.models_main(["resnet19_v1"]) == 2


def test_summary_main(capsys):
    assert models.summary_main(["resnet18_v2", "--img", "64"]) == 0
    out = capsys.readouterr().out
    assert "layer4.1.conv2" in out and "[1, 512, 2, 2]" in out and "bn_final" in out
    assert "Total params: 11,687,720" in out
    assert models.summary_main(["resnet19_v1"]) == 2
