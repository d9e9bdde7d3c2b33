"""One grid cell: schedules, determinism, resume, divergence, the CLI."""

import json
import math

import pytest

from conftest import strip_timing
from resnet_bench import config as cfg
from resnet_bench import train


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
    rc = train.main(["--model", "resnet18_v2", "--dataset", "digits", "--epochs", "1", "--width", "4",
                     "--prepared-dir", str(prepared_digits), "--out", str(out)])
    assert rc == 0
    assert "test_acc=" in capsys.readouterr().out
    assert json.loads(out.read_text())["config"]["model"] == "resnet18_v2"


def test_train_cli_rejects_unknown_model(prepared_digits, capsys):
    rc = train.main(["--model", "resnet19_v2", "--prepared-dir", str(prepared_digits)])
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
        assert rec["provenance"]["numeric"]["deterministic_algorithms"] is False
        rec = train.train_cell(tiny_cell(epochs=1), prepared_digits)
        assert rec["provenance"]["numeric"]["deterministic_algorithms"] is True
    finally:
        torch.use_deterministic_algorithms(False)


def test_bench_settings_reach_the_measurement(monkeypatch):
    from resnet_bench import bench
    from resnet_bench.models import build_model

    timed = []
    real = bench._time_repeats

    def spy(step, device, *, warmup, repeats, steps):
        out = real(step, device, warmup=warmup, repeats=repeats, steps=steps)
        timed.append((warmup, len(out), steps))
        return out

    monkeypatch.setattr(bench, "_time_repeats", spy)
    settings = cfg.Bench(batch_size=4, warmup=1, repeats=3, steps_per_repeat=2)
    r = bench.benchmark_model(lambda: build_model("resnet20_v1", num_classes=10, width=2),
                              batch_size=settings.batch_size, img_size=8, warmup=settings.warmup,
                              repeats=settings.repeats, steps_per_repeat=settings.steps_per_repeat)
    assert timed == [(1, 3, 2), (1, 3, 2)]  # train and inference: 3 timed repeats of 2 steps each
    assert r["batch_size"] == 4
