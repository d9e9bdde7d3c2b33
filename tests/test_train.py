"""One grid cell: schedules, determinism, resume, divergence, the CLI."""

import json
import math
import re

import pytest

from conftest import strip_timing
from resnet_bench import config as cfg
from resnet_bench import train, train_cli


def tiny_cell(arch=None, runtime=None, **recipe) -> cfg.Cell:
    layer = cfg.Layer("test", {
        "grid": {"versions": ["v2"], "depths": [18], "datasets": ["digits"], "seeds": [3]},
        "arch": {"stem": "cifar", "width": 4, **(arch or {})},
        "recipe": {"name": "quick", "epochs": 2, "batch_size": 128, **recipe},
        "runtime": runtime or {},
    })
    exp = cfg.resolve_layers("t", [layer], cfg.Params(), check_datasets=False).experiment
    (cell,) = cfg.expand_grid(exp)
    return cell


def test_he2016_step_schedule_with_warmup():
    r = cfg.resolve_recipe({"name": "he2016_cifar"})
    assert r.epochs == 164
    total = 64_000  # He et al. 2016: 64k iterations, lr /10 at 32k and 48k
    assert train.lr_at(0, total, r) == 0.01 and train.lr_at(399, total, r) == 0.01
    assert train.lr_at(400, total, r) == 0.1
    assert train.lr_at(31_999, total, r) == pytest.approx(0.1)
    assert train.lr_at(32_000, total, r) == pytest.approx(0.01)
    assert train.lr_at(48_000, total, r) == pytest.approx(0.001)


def test_cosine_and_onecycle_shapes():
    cos = cfg.resolve_recipe({"name": "quick", "schedule": "cosine", "lr": 1.0})
    assert train.lr_at(0, 100, cos) == pytest.approx(1.0)
    assert train.lr_at(50, 100, cos) == pytest.approx(0.5)
    assert train.lr_at(100, 100, cos) == pytest.approx(0.0, abs=1e-12)
    one = cfg.resolve_recipe({"name": "quick", "schedule": "onecycle", "lr": 1.0})
    lrs = [train.lr_at(s, 100, one) for s in range(100)]
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 30
    assert lrs[0] < 0.1 and lrs[-1] < 0.01


def test_same_config_and_seed_gives_identical_numbers(prepared_digits):
    a = train.train_cell(tiny_cell(), prepared_digits)
    b = train.train_cell(tiny_cell(), prepared_digits)
    assert a["status"] == "ok"
    assert strip_timing(a) == strip_timing(b)
    m = a["metrics"]
    assert m["epochs_completed"] == 2 and 1 <= m["best_val_epoch"] <= 2
    assert 0.1 < m["test_acc"] <= 1.0 and m["params"] > 0 and m["fwd_gflops"] > 0
    assert a["env"]["hardware"]["torch_threads"] == 1 and a["env"]["versions"]["torch"]


def test_resume_from_checkpoint_matches_uninterrupted_run(prepared_digits, tmp_path):
    full = train.train_cell(tiny_cell(epochs=3), prepared_digits)
    ckpt = tmp_path / "cell.pt"
    # An interrupted run: the same cell stopped after epoch 1 (its checkpoint is what a kill leaves).
    seen = []

    class Stop(Exception):
        pass

    def stop_after_one(rec):
        seen.append(rec["epoch"])
        if rec["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train.train_cell(tiny_cell(epochs=3), prepared_digits, checkpoint_path=ckpt, on_epoch=stop_after_one)
    resumed_epochs = []
    resumed = train.train_cell(tiny_cell(epochs=3), prepared_digits, checkpoint_path=ckpt,
                               on_epoch=lambda r: resumed_epochs.append(r["epoch"]))
    assert resumed_epochs == [2, 3]  # epoch 1 came from the checkpoint
    assert strip_timing(resumed) == strip_timing(full)


def test_nan_loss_marks_the_cell_diverged(prepared_digits):
    cell = tiny_cell(epochs=3)
    # The schema refuses lr=inf; bypass it (model_copy does not validate) to force a divergence:
    # the first step makes every weight non-finite.
    cell = cell.model_copy(update={"recipe": cell.recipe.model_copy(update={"lr": math.inf})})
    record = train.train_cell(cell, prepared_digits)
    assert record["status"] == "diverged"
    assert "train loss is nan" in record["error"] and record["metrics"]["epochs_completed"] == 1
    assert "test_acc" not in record["metrics"]


def test_train_cli_prints_and_writes_the_result(prepared_digits, tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = train_cli.main(["--model", "resnet18_v2", "--dataset", "digits", "--epochs", "1", "--width", "4",
                     "--prepared-dir", str(prepared_digits), "--out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    # rounded for a person (the record keeps full precision); progress on stderr, as plain lines off a terminal
    assert re.search(r"test acc \d{1,3}\.\d %, best val acc \d{1,3}\.\d % \(epoch 1\), [\d,]+ train img/s, "
                     r"[\d,]+ params", captured.out), captured.out
    assert re.search(r"^\[train resnet18_v2\] 1/1 epochs \(100 %\), loss [\d.]+, val [\d.]+ %", captured.err, re.M)
    assert "\r" not in captured.err
    record = json.loads(out.read_text())
    assert record["config"]["model"] == "resnet18_v2" and isinstance(record["metrics"]["test_acc"], float)


def test_train_flags_set_every_recipe_and_arch_key(prepared_digits):
    """Each recipe/arch flag reaches the validated cell; keys not given keep the recipe's values."""
    args = train_cli.parse_args([
        "--model", "resnet20_v1", "--prepared-dir", str(prepared_digits), "--recipe", "he2016_cifar",
        "--variant", "paper", "--shortcut", "projection", "--zero-init-residual", "--warmup-iters", "7",
        "--warmup-lr", "0.02", "--schedule", "step", "--milestones", "0.3,0.6", "--gamma", "0.2",
        "--momentum", "0.8", "--nesterov", "--weight-decay", "0.001", "--label-smoothing", "0.1",
        "--crop-pad", "2", "--no-flip", "--lr", "0.05", "--batch-size", "32", "--epochs", "2"])
    cell = train_cli.cell_from_args(args)
    r, a = cell.recipe, cell.arch
    assert (a.variant, a.shortcut, a.zero_init_residual) == ("paper", "projection", True)
    assert (r.warmup_iters, r.warmup_lr, r.schedule, r.milestones, r.gamma) == (7, 0.02, "step", [0.3, 0.6], 0.2)
    assert (r.momentum, r.nesterov, r.weight_decay, r.label_smoothing) == (0.8, True, 0.001, 0.1)
    assert (r.augment.crop_pad, r.augment.flip, r.lr, r.batch_size, r.epochs) == (2, False, 0.05, 32, 2)
    plain = train_cli.cell_from_args(train_cli.parse_args(["--model", "resnet20_v1", "--prepared-dir",
                                                           str(prepared_digits), "--recipe", "he2016_cifar"]))
    assert plain.arch.variant == "modern" and plain.recipe.warmup_iters == 400  # the recipe's
    # cosine needs the step milestones cleared: '' is none
    cosine = train_cli.cell_from_args(train_cli.parse_args([
        "--model", "resnet20_v1", "--prepared-dir", str(prepared_digits), "--recipe", "he2016_cifar",
        "--schedule", "cosine", "--milestones", ""]))
    assert (cosine.recipe.schedule, cosine.recipe.milestones) == ("cosine", [])


def test_train_cli_rejects_unknown_model(prepared_digits, capsys):
    rc = train_cli.main(["--model", "resnet19_v2", "--prepared-dir", str(prepared_digits)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "resnet19_v2" in err and "resnet18_v2" in err


# ---- every accepted field changes behaviour ------------------------------------------------------


def test_recipe_fields_reach_the_optimizer_and_schedule():
    import torch

    r = cfg.resolve_recipe({"name": "quick", "lr": 0.2, "momentum": 0.8, "weight_decay": 1e-3, "nesterov": False})
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    opt = train.make_optimizer(net, r)
    assert type(opt) is torch.optim.SGD and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.2, 0.8, 1e-3, False)
    assert cfg.OPTIMIZERS == ("sgd",)  # the schema lists only what make_optimizer builds
    # bn_weight_decay false: the BN scale and shift in a group of their own, without decay.
    opt = train.make_optimizer(net, cfg.resolve_recipe({"name": "quick", "bn_weight_decay": False}))
    decayed, free = opt.param_groups
    assert [p.shape for p in free["params"]] == [(2,), (2,)] and free["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [(2, 1, 1, 1), (2,)] and decayed["weight_decay"] == 5e-4
    # lr_reference_batch: the lr of that batch size, scaled linearly (fb.resnet.torch's 0.1 x batch/256).
    fb = cfg.resolve_recipe({"name": "fb_resnet_imagenet", "batch_size": 1024})
    assert train.lr_at(0, 90, fb) == pytest.approx(0.4) and train.lr_at(30, 90, fb) == pytest.approx(0.04)
    assert train.lr_at(29, 90, fb) == pytest.approx(0.4) and train.lr_at(60, 90, fb) == pytest.approx(0.004)


def test_width_reaches_the_model():
    narrow, wide = tiny_cell(arch={"width": 4}), tiny_cell(arch={"width": 8})
    n = sum(p.numel() for p in train.build_cell_model(narrow, 10, 1).parameters())
    w = sum(p.numel() for p in train.build_cell_model(wide, 10, 1).parameters())
    assert 3.5 < w / n < 4.1  # conv weights scale with width^2


def test_deterministic_flag_reaches_torch(prepared_digits):
    import torch

    try:
        rec = train.train_cell(tiny_cell(epochs=1, runtime={"deterministic": False}), prepared_digits)
        num = rec["provenance"]["numeric"]
        assert num["deterministic_algorithms"] is False and num["onednn_enabled"] and num["nnpack_enabled"]
        rec = train.train_cell(tiny_cell(epochs=1), prepared_digits)
        num = rec["provenance"]["numeric"]  # the portable pin's torch flags: no oneDNN, no NNPACK
        assert num["deterministic_algorithms"] is True and not num["onednn_enabled"] and not num["nnpack_enabled"]
        assert train.pin_numeric_environment(tiny_cell(runtime={"numeric_pin": "host"}), env=False) == "host"
        assert torch.backends.mkldnn.enabled and not torch._C._get_nnpack_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_bench_settings_reach_the_measurement(monkeypatch):
    from resnet_bench import bench
    from resnet_bench.models import build_model

    from resnet_bench import noise

    timed = []
    real = noise.time_interleaved

    def spy(steps, *, repeats, steps_per_repeat, timer):
        out = real(steps, repeats=repeats, steps_per_repeat=steps_per_repeat, timer=timer)
        timed.append((len(out[0]), steps_per_repeat))
        return out

    monkeypatch.setattr(noise, "time_interleaved", spy)
    settings = cfg.Bench(batch_size=4, warmup=2, repeats=3, steps_per_repeat=2)
    r = bench.benchmark_model(lambda: build_model("resnet20_v1", num_classes=10, width=2),
                              batch_size=settings.batch_size, img_size=8, warmup=settings.warmup,
                              repeats=settings.repeats, steps_per_repeat=settings.steps_per_repeat,
                              remeasure=0)
    assert timed == [(3, 2), (3, 2)]  # train and inference: 3 timed repeats of 2 steps each
    assert r["batch_size"] == 4 and r["warmup_steps"] == 2


# ---- GPU paths a CPU can show (issue 20) ----------------------------------------------------------------------


def _fp16_on_cpu(cell: cfg.Cell) -> cfg.Cell:
    """The schema keeps fp16 to CUDA; on CPU (model_copy does not validate) it still runs the GradScaler path."""
    return cell.model_copy(update={"runtime": cell.runtime.model_copy(update={"amp": "fp16"})})


def test_resume_keeps_the_fp16_loss_scale(prepared_digits, tmp_path):
    """The checkpoint carries the loss scale, and a resumed trial continues from it: here from 1024, as
    if earlier overflows had halved it six times; restarting at 2**16 would overflow and skip steps."""
    import torch

    class Stop(Exception):
        pass

    def stop(path, rec):  # killed right after epoch 1's checkpoint is on disk
        raise Stop

    ckpt = tmp_path / "cell.pt"
    with pytest.raises(Stop):
        train.train_cell(_fp16_on_cpu(tiny_cell(epochs=2)), prepared_digits, checkpoint_path=ckpt,
                         on_checkpoint=stop)
    state = torch.load(ckpt, weights_only=False)
    assert state["scaler"]["scale"] == 2.0**16 and state["scaler"]["_growth_tracker"] == 11  # 11 clean steps
    state["scaler"].update(scale=1024.0, _growth_tracker=5)
    torch.save(state, ckpt)
    resumed = train.train_cell(_fp16_on_cpu(tiny_cell(epochs=2)), prepared_digits, checkpoint_path=ckpt)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    assert resumed["metrics"]["amp_grad_scale"] <= 1024.0  # grows only after 2000 clean steps


def test_tf32_is_set_explicitly_and_recorded(prepared_digits):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # e.g. left by a build default
    rec = train.train_cell(tiny_cell(epochs=1), prepared_digits)
    num = rec["provenance"]["numeric"]
    assert rec["config"]["runtime"]["tf32"] is False
    assert num["matmul_fp32_precision"] == num["conv_fp32_precision"] == "ieee"
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert num["cudnn_deterministic_effective"] is True and num["autocast"] is None


def test_steady_loop_throughput_leaves_out_the_warm_up_and_the_partial_batch(prepared_digits):
    rec = train.train_cell(tiny_cell(epochs=2), prepared_digits)
    e1, e2 = rec["epochs"]
    # digits: 1295 training images = 10 full batches of 128 + 15; epoch 1 skips bench.warmup (3) steps
    assert (e1["steady_images"], e2["steady_images"]) == (7 * 128, 10 * 128)
    m = rec["metrics"]
    steady = (e1["steady_images"] + e2["steady_images"]) / (e1["steady_s"] + e2["steady_s"])
    assert m["train_img_per_s"] == pytest.approx(steady)
    assert m["train_epoch_img_per_s"] == pytest.approx((e1["train_img_per_s"] + e2["train_img_per_s"]) / 2)
    assert rec["compile"] == {"enabled": False, "mode": None, "backend": None, "graphs": 0, "compile_s": 0.0}


def test_compiled_cell_compiles_each_shape_once_and_times_the_steady_steps(prepared_digits):
    cell = tiny_cell(epochs=1, runtime={"compile": True})
    rec = train.train_cell(cell, prepared_digits, compile_backend="eager")
    c = rec["compile"]
    # Static shapes: a full and the partial training batch; evaluation pads its last batch to full size.
    assert c["enabled"] and c["backend"] == "eager" and c["mode"] == "default" and c["graphs"] == 3
    assert c["compile_s"] > 0 and rec["metrics"]["train_img_per_s"] is not None
    assert rec["status"] == "ok" and rec["metrics"]["test_acc"] > 0.1


def test_cpu_bf16_trains_outside_the_pin_and_is_recorded(prepared_digits, capsys):
    from resnet_bench import runtime as rt

    if rt.cpu_bf16_isa() is None:  # this CPU cannot: the CLI refuses it in one line
        assert train_cli.main(["--model", "resnet18_v2", "--prepared-dir", str(prepared_digits), "--device", "cpu",
                           "--amp", "bf16"]) == 2
        assert "neither AMX-BF16 nor AVX512-BF16" in capsys.readouterr().err
        return
    cell = tiny_cell(epochs=1, runtime={"amp": "bf16", "channels_last": True})
    assert cell.runtime.deterministic is False  # bf16 on CPU defaults out of the bit-identity pin
    rec = train.train_cell(cell, prepared_digits)
    num = rec["provenance"]["numeric"]
    assert rec["status"] == "ok" and rec["config"]["runtime"]["amp"] == "bf16"
    assert num["autocast"] == "bfloat16" and num["cpu_bf16_isa"] in ("AMX-BF16", "AVX512-BF16", "BF16")
    assert num["deterministic_algorithms"] is False
    assert cell.cell_id != tiny_cell(epochs=1, runtime={"channels_last": True}).cell_id


def test_cpu_bf16_is_refused_in_one_line_where_the_cpu_lacks_it(monkeypatch):
    from resnet_bench import runtime as rt

    assert rt.cpu_bf16_isa({"avx2", "fma"}) is None and rt.cpu_bf16_isa({"avx512_bf16"}) == "AVX512-BF16"
    assert rt.cpu_bf16_isa({"amx_bf16", "avx512_bf16"}) == "AMX-BF16"
    line = rt.cpu_bf16_problem("cpu", "bf16", {"avx2"})
    assert line and "\n" not in line and "valid here: amp none" in line
    assert rt.cpu_bf16_problem("cpu", "none", {"avx2"}) is None and rt.cpu_bf16_problem("cuda", "bf16", set()) is None
    monkeypatch.setattr(rt, "cpu_bf16_isa", lambda flags=None: None)
    with pytest.raises(cfg.ConfigError, match="neither AMX-BF16"):
        train.train_cell(tiny_cell(epochs=1, runtime={"amp": "bf16"}), "/nonexistent")  # before any data is read


def test_train_cli_gpu_defaults_are_an_experiments(monkeypatch, prepared_digits):
    """By hand on a GPU the cell is the one a GPU experiment (gpus_per_trial 1) has: same defaults, same id;
    `--device cuda:1` picks the machine's second GPU and the cell still says cuda."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    from resnet_bench.env import code_fingerprint

    layer = cfg.Layer("experiment", {"grid": {"models": ["resnet18_v2"], "datasets": ["digits"], "seeds": [0]},
                                     "resources": {"gpus_per_trial": 1}})
    exp = cfg.resolve_layers("e", [layer], cfg.Params(), check_datasets=False).experiment
    (want,) = cfg.expand_grid(exp, data={"digits": cfg.data_identity(prepared_digits / "digits")},
                              code_fingerprint=code_fingerprint())
    assert (want.runtime.amp, want.runtime.channels_last, want.runtime.deterministic) == ("bf16", True, False)
    for device in ("auto", "cuda", "cuda:1"):
        args = train_cli.parse_args(["--model", "resnet18_v2", "--prepared-dir", str(prepared_digits), "--device", device])
        assert train_cli.cell_from_args(args).cell_id == want.cell_id, device
    args = train_cli.parse_args(["--model", "resnet18_v2", "--prepared-dir", str(prepared_digits), "--device", "cuda:2"])
    with pytest.raises(cfg.ConfigError, match="has 2 GPU"):
        train_cli.cell_from_args(args)
