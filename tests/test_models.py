"""The model zoo: every registered model runs and trains, v1 == torchvision and v2 == timm
by logits, parameter counts match the libraries and the papers, the unit ablation, errors,
FLOPs and the CLI tables. Real-size models only at 64x64 or on the meta device (CPU budget)."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from resnet_bench import models
from resnet_bench.models import cli as models_cli
from resnet_bench.models import registry
from resnet_bench.models import (
    UNITS,
    VERSION_UNITS,
    ZeroPadShortcut,
    available_models,
    build_model,
    convert_timm_resnetv2,
    count_params,
    model_flops,
    parse_model_name,
    resolve_arch,
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
    assert set(names) == {f"resnet{d}_{v}" for d in DEPTHS + (200,) + CIFAR_DEPTHS for v in ("v1", "v2")}


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
        registry.resnet18_v1(10)


@pytest.mark.parametrize(("options", "message"), [
    ({"num_classes": 0}, "num_classes must be a positive integer, got 0"),
    ({"num_classes": -1}, "num_classes must be a positive integer, got -1"),
    ({"num_classes": 2.5}, "num_classes must be a positive integer, got 2.5"),
    ({"num_classes": True}, "num_classes must be a positive integer, got True"),
    ({"in_channels": 0}, "in_channels must be a positive integer, got 0"),
    ({"width": 2.5}, r"width must be a positive integer \(or None: the family's default\), got 2.5"),
    ({"width": 0}, r"width must be a positive integer \(or None: the family's default\), got 0"),
    ({"variant": "v2"}, "unknown variant 'v2'; valid: modern, paper"),
    ({"shortcut": "A"}, r"unknown shortcut 'A'; valid: zero_pad, projection \(or None"),
    ({"bottleneck_stride": 2}, r"unknown bottleneck_stride 2; valid: 1x1, 3x3 \(or None"),
    ({"zero_init_residual": "yes"}, "zero_init_residual must be True or False, got 'yes'"),
])
def test_bad_arguments_give_one_line_errors(options, message):
    kwargs = {"num_classes": 10, **options}
    with pytest.raises(ValueError, match=message) as err:
        build_model("resnet20_v1", **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "unit"), [("resnet20_v2", "original"), ("resnet50_v2", "bn_after_add"),
                                            ("resnet20_v1", "full_preact"), ("resnet164_v1", "full_preact")])
def test_unit_contradicting_the_name_is_rejected(name, unit):
    version = name[-2:]
    valid = ", ".join(VERSION_UNITS[version])
    with pytest.raises(ValueError, match=f"unit '{unit}' contradicts model '{name}' \\(a {version} name\\); "
                                         f"valid units for {name}: {valid}$"):
        build_model(name, num_classes=10, unit=unit)


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


def test_resnet200_equals_timm_resnet200_and_resnetv2_layers():
    # He et al. 2016 Table 5's ResNet-200 ([3, 24, 36, 3] bottlenecks; fb.resnet.torch preresnet.lua's
    # cfg[200]). v1: timm `resnet200` (stride on the 3x3, as the modern variant), 64,673,832 parameters.
    # v2: timm registers no resnetv2_200; its ResNetV2 class with resnetv2_152's arguments and the
    # 200-layer counts is the reference. Counts at full size (meta device); v2 logits at width 8 (v1's
    # are those of the one trunk that equals torchvision's at 18-152; timm's v1 stem is fixed at 64).
    from timm.layers import BatchNormAct2d, create_conv2d
    from timm.models.resnetv2 import ResNetV2

    v2_args = {"layers": [3, 24, 36, 3], "conv_layer": create_conv2d, "norm_layer": BatchNormAct2d}
    assert count_params(meta(build_model, "resnet200_v1", 1000)) == 64_673_832 == \
        count_params(meta(timm.create_model, "resnet200", pretrained=False))
    assert count_params(meta(build_model, "resnet200_v2", 1000)) == count_params(meta(ResNetV2, **v2_args))
    torch.manual_seed(200)
    x = torch.randn(2, 3, 64, 64)
    reference = calibrate_bn(ResNetV2(channels=(32, 64, 128, 256), stem_chs=8, **v2_args), torch.randn(4, 3, 64, 64))
    ours = build_model("resnet200_v2", 1000, width=8).eval()
    ours.load_state_dict(convert_timm_resnetv2(reference.state_dict()), strict=True)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max().item() <= 1e-5


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
    # The paper variant (option A, no shortcut parameters) matches every printed digit.
    paper = meta(build_model, f"resnet{depth}_v1", 10, variant="paper")
    assert _projection_params(paper) == 0
    assert within_rounding(count_params(paper), PAPER_V1_CIFAR[depth])
    assert models_cli.params_millions(count_params(paper)) == PAPER_V1_CIFAR[depth]
    # The modern variant's option B projections add 2,752 parameters: within 0.1M, and
    # the printed digit once the projections are taken out.
    model = meta(build_model, f"resnet{depth}_v1", 10)
    assert count_params(model) - count_params(paper) == 2_752
    assert abs(count_params(model) / 1e6 - float(PAPER_V1_CIFAR[depth])) <= 0.05
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


def _named(unit: str, depth: int) -> str:
    """The model name whose version admits `unit`: (a)-(d) are v1, (e) v2."""
    return f"resnet{depth}_{'v2' if unit == 'full_preact' else 'v1'}"


@pytest.mark.parametrize("variant", ["modern", "paper"])
@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("depth", [20, 50])
def test_every_unit_trains_one_step(depth, unit, variant):
    name = _named(unit, depth)
    torch.manual_seed(0)
    model = _tiny(name, unit=unit, variant=variant)
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
    # a _v1 name admits units (a)-(d) only: the v2 unit is the _v2 model.
    with pytest.raises(ValueError, match="contradicts"):
        _tiny("resnet110_v1", unit="full_preact")


@pytest.mark.parametrize("name", ["resnet18_v2", "resnet50_v2"])
def test_v2_projection_takes_the_preactivated_input(name):
    block = _tiny(name).layer2[0].eval()
    seen = []
    block.downsample.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    x = torch.randn(2, block.bn1.num_features, 8, 8)
    with torch.no_grad():
        block(x)
        assert torch.equal(seen[0], torch.relu(block.bn1(x)))


@pytest.mark.parametrize("variant", ["modern", "paper"])
@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("depth", [20, 164])
def test_zero_init_residual_makes_units_start_as_shortcuts(depth, unit, variant):
    name = _named(unit, depth)
    model = build_model(name, 4, width=4, unit=unit, zero_init_residual=True, variant=variant).eval()
    block = model.layer1[1]  # identity shortcut
    x = torch.rand(2, 4 * block.expansion, 8, 8)  # >= 0: ReLU after the add is the identity too
    with torch.no_grad():
        # eval BN with fresh statistics divides by sqrt(1 + eps)
        torch.testing.assert_close(block(x), x, atol=1e-4, rtol=1e-4)
    trained = build_model(name, 4, width=4, unit=unit, variant=variant).eval()
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
    argv = ["resnet110_v1", "resnet50_v2", "--image-size", "32", "--num-classes", "10", "--csv", str(csv_path)]
    assert models_cli.models_main(argv) == 0
    out = capsys.readouterr().out
    assert "FLOPs = 2 x MACs" in out and "GMACs" in out and "GFLOPs" in out
    assert "1,730,714" in out  # resnet110_v1 with 10 classes
    lines = csv_path.read_text().splitlines()
    assert lines[0] == ("model,family,block,units,unit,variant,shortcut,bottleneck_stride,img,num_classes,"
                        "params,params_m,macs,flops")
    assert [line.split(",")[0] for line in lines[1:]] == ["resnet50_v2", "resnet110_v1"]
    row = dict(zip(lines[0].split(","), lines[2].split(",")))
    assert int(row["flops"]) == 2 * int(row["macs"])
    assert models_cli.models_main(["resnet19_v1"]) == 2


def test_models_main_uses_each_familys_input(tmp_path):
    # No --image-size / --num-classes: CIFAR models at 32 px and 10 classes, ImageNet at 224 / 1000.
    csv_path = tmp_path / "models.csv"
    assert models_cli.models_main(["resnet20_v1", "resnet50_v1", "--csv", str(csv_path)]) == 0
    rows = {r["model"]: r for r in _csv_rows(csv_path)}
    assert (rows["resnet20_v1"]["img"], rows["resnet20_v1"]["num_classes"]) == ("32", "10")
    assert rows["resnet20_v1"]["params"] == "272474"  # modern (projections), 10 classes
    assert (rows["resnet50_v1"]["img"], rows["resnet50_v1"]["num_classes"]) == ("224", "1000")
    # torchvision documents ResNet-50 at 4.09 GFLOPS, counting multiply-adds.
    assert round(int(rows["resnet50_v1"]["macs"]) / 1e9, 2) == 4.09


def _csv_rows(path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_models_main_paper_variant_prints_he_2015_table6(tmp_path, capsys):
    csv_path = tmp_path / "models.csv"
    names = ["resnet20_v1", "resnet32_v1", "resnet44_v1", "resnet56_v1", "resnet110_v1"]
    assert models_cli.models_main([*names, "--variant", "paper", "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    # He et al. 2015 Table 6, "# params" column.
    table6 = {"resnet20_v1": "0.27", "resnet32_v1": "0.46", "resnet44_v1": "0.66", "resnet56_v1": "0.85",
              "resnet110_v1": "1.7"}
    for line in out.splitlines():
        if line.split()[:1] and line.split()[0] in table6:
            assert table6[line.split()[0]] in line.split(), line
    rows = _csv_rows(csv_path)
    assert {r["model"]: r["params_m"] for r in rows} == table6
    assert {r["shortcut"] for r in rows} == {"zero_pad"}


@pytest.mark.parametrize("argv", [["--image-size", "0"], ["--num-classes", "-3"], ["--in-channels", "x"],
                                  ["--variant", "old"], ["--shortcut", "A"]])
def test_models_main_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        models_cli.models_main(["resnet20_v1", *argv])
    assert exit_.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_summary_main(capsys):
    assert models_cli.summary_main(["resnet18_v2", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "layer4.1.conv2" in out and "[1, 512, 2, 2]" in out and "bn_final" in out
    assert "Total params: 11,687,720" in out
    assert models_cli.summary_main(["resnet19_v1"]) == 2
    assert models_cli.summary_main(["resnet20_v2", "--unit", "original"]) == 2
    assert "contradicts model 'resnet20_v2'" in capsys.readouterr().err
    assert models_cli.summary_main(["resnet20_v1", "--variant", "paper"]) == 0
    out = capsys.readouterr().out
    assert "ZeroPadShortcut" in out and "Total params: 269,722" in out


# ----------------------------------------------------------------------- variants


def test_resolve_arch_defaults():
    def short(name, **kw):
        arch = resolve_arch(name, **kw)
        return arch["shortcut"], arch["bottleneck_stride"], arch["first_activation_before_split"]

    # modern: today's torchvision / timm networks, for every name
    for name in ("resnet20_v1", "resnet164_v2", "resnet50_v1", "resnet18_v2"):
        assert short(name) == ("projection", "3x3", False)
    # paper v1 (He et al. 2015): option A on the CIFAR basic-block models only
    assert short("resnet20_v1", variant="paper") == ("zero_pad", "1x1", False)
    assert short("resnet1202_v1", variant="paper") == ("zero_pad", "1x1", False)
    assert short("resnet164_v1", variant="paper") == ("projection", "1x1", False)
    assert short("resnet50_v1", variant="paper") == ("projection", "1x1", False)
    assert short("resnet20_v1", variant="paper", unit="relu_only_preact") == ("zero_pad", "1x1", True)
    # paper v2 (He et al. 2016)
    assert short("resnet20_v2", variant="paper") == ("projection", "1x1", True)
    assert short("resnet1001_v2", variant="paper") == ("projection", "1x1", True)
    # explicit choices win over the variant's default
    assert short("resnet20_v1", variant="paper", shortcut="projection") == ("projection", "1x1", False)
    assert short("resnet50_v2", bottleneck_stride="1x1") == ("projection", "1x1", False)
    assert resolve_arch("resnet20_v2")["unit"] == "full_preact"


def test_zero_pad_shortcut_subsamples_and_appends_zero_channels():
    shortcut = ZeroPadShortcut(2, 5, stride=2)
    x = torch.arange(2 * 2 * 5 * 5, dtype=torch.float32).reshape(2, 2, 5, 5)
    out = shortcut(x)
    assert out.shape == (2, 5, 3, 3)  # ceil(5 / 2) = 3, as a strided 3x3 conv with padding 1
    assert torch.equal(out[:, :2], x[:, :, ::2, ::2])
    assert torch.equal(out[:, 2:], torch.zeros(2, 3, 3, 3))
    assert count_params(shortcut) == 0
    with pytest.raises(ValueError, match="cannot drop channels: 4 -> 2"):
        ZeroPadShortcut(4, 2, stride=1)


@pytest.mark.parametrize(("name", "conv"), [("resnet50_v1", "conv1"), ("resnet164_v2", "conv1")])
def test_paper_bottleneck_strides_the_first_1x1(name, conv):
    paper = _tiny(name, variant="paper").layer2[0]
    modern = _tiny(name).layer2[0]
    assert getattr(paper, conv).stride == (2, 2) and paper.conv2.stride == (1, 1)
    assert modern.conv1.stride == (1, 1) and modern.conv2.stride == (2, 2)
    # same parameters, fewer MACs: conv1 of the downsampling units runs at the output size
    full_paper, full_modern = (meta(build_model, name, 10, variant=v) for v in ("paper", "modern"))
    assert count_params(full_paper) == count_params(full_modern)
    assert model_flops(full_paper, (1, 3, 32, 32)) < model_flops(full_modern, (1, 3, 32, 32))


def test_paper_v1_resnet50_has_he_2015_table1_multiply_adds():
    # He et al. 2015 Table 1: ResNet-50 "3.8 x 10^9" FLOPs (multiply-adds) at 224x224. The
    # paper variant counts 3.858 G (conv + linear), so the printed figure is truncated,
    # not rounded; the modern variant's strided 3x3 makes it 4.09 G (torchvision's figure).
    flops = model_flops(meta(build_model, "resnet50_v1", 1000, variant="paper"), (1, 3, 224, 224))
    assert int(flops / 2e8) == 38
    assert flops // 2 == 3_857_973_248


def test_paper_v2_first_unit_identity_carries_the_preactivated_stem():
    # He et al. 2016 Sec. 4.1: the first activation comes before the split. With the modern
    # variant the first unit's identity shortcut carries the raw stem output (timm).
    for variant, preactivated in (("paper", True), ("modern", False)):
        block = _tiny("resnet20_v2", variant=variant).layer1[0].eval()
        assert block.downsample is None
        x = torch.randn(2, 4, 8, 8)
        with torch.no_grad():
            branch = block.conv2(block.relu(block.bn2(block.conv1(torch.relu(block.bn1(x))))))
            shortcut = torch.relu(block.bn1(x)) if preactivated else x
            torch.testing.assert_close(block(x), branch + shortcut)
        # only the network's first unit: later identity shortcuts carry the raw sum
        assert not _tiny("resnet20_v2", variant=variant).layer1[1].preact_identity


def test_paper_variant_zeroes_the_classifier_bias():
    # fb.resnet.torch / resnet-1k-layers init: `v.bias:zero()` for nn.Linear.
    assert torch.count_nonzero(_tiny("resnet20_v1", variant="paper").fc.bias) == 0
    assert torch.count_nonzero(_tiny("resnet20_v1").fc.bias) > 0


@pytest.mark.parametrize("name", ["resnet20_v1", "resnet20_v2", "resnet164_v1", "resnet164_v2", "resnet18_v1",
                                  "resnet50_v2"])
@pytest.mark.parametrize("shortcut", ["zero_pad", "projection"])
def test_paper_variant_trains_with_either_shortcut(name, shortcut):
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, width=4, variant="paper", shortcut=shortcut)
    out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    has_zero_pad = any(isinstance(m, ZeroPadShortcut) for m in model.modules())
    assert has_zero_pad == (shortcut == "zero_pad")
