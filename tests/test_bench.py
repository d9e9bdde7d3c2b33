"""Measurement: analytic FLOPs and saved-activation bytes, OOM retry, compile per model, the memory
protocol, the record and the CLI."""

import math

import pandas as pd
import pytest
import torch
import torch.nn as nn

from resnet_bench import bench
from resnet_bench import runtime as rt
from resnet_bench.models import build_model


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_flops_equal_two_macs_by_hand():
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    f = bench.count_flops(mlp(), x, y)
    macs_fwd = 5 * (4 * 8 + 8 * 3)
    assert f["fwd_flops"] == 2 * macs_fwd
    # backward: weight grads of both layers (= forward MACs) + input grad of layer 2 only
    # (the batch input needs no grad).
    assert f["train_step_flops"] == 2 * (macs_fwd + macs_fwd + 5 * 8 * 3)


def test_saved_activation_bytes_by_hand():
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    got = bench.saved_activation_bytes(mlp(), x, y, torch.device("cpu"))
    expected = (5 * 4 * 4      # layer-1 input (for its weight grad)
                + 5 * 8 * 4    # ReLU output, also layer-2's input: one storage, counted once
                + 5 * 3 * 4    # log-softmax output
                + 5 * 8        # int64 targets (nll_loss)
                + 4)           # nll_loss total_weight scalar
    # weights are saved too but counted as parameter bytes
    assert got == {"saved_activation_bytes": expected, "saved_param_copy_bytes": 0}


def test_autocast_weight_copies_are_not_counted_as_activations():
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    got = bench.saved_activation_bytes(mlp(), x, y, torch.device("cpu"), amp="bf16")
    assert got["saved_param_copy_bytes"] == 8 * 3 * 2  # layer 2's bf16 weight copy (layer 1's is not needed)
    assert got["saved_activation_bytes"] == (5 * 4 * 2      # the input's bf16 copy
                                             + 5 * 8 * 2    # bf16 ReLU output
                                             + 5 * 3 * 4 + 5 * 8 + 4)  # float32 log-softmax, targets, weight


def test_record_fields_have_units_and_sane_values():
    rec = bench.benchmark_model(lambda: build_model("resnet18_v2", 10, stem="cifar", width=4),
                                batch_size=4, img_size=16, warmup=1, repeats=2, steps_per_repeat=1)
    for key in ("train_img_per_s", "infer_img_per_s", "train_step_ms_median", "fwd_gflops",
                "train_step_gflops", "achieved_tflop_per_s", "peak_mem_bytes", "saved_activation_bytes",
                "param_bytes", "grad_bytes", "optimizer_state_bytes", "peak_rss_bytes"):
        assert math.isfinite(rec[key]) and rec[key] > 0, key
    # Measured after the warm-up: momentum buffers exist (SGD creates them at its first step).
    assert rec["param_bytes"] == rec["grad_bytes"] == rec["optimizer_state_bytes"] == rec["params"] * 4
    assert rec["peak_mem_bytes"] == (rec["saved_activation_bytes"] + rec["param_bytes"] + rec["grad_bytes"]
                                     + rec["optimizer_state_bytes"])
    assert rec["train_step_gflops"] > 4 * rec["fwd_gflops"]  # batch 4, forward + ~2x backward
    assert rec["batch_size"] == rec["batch_size_requested"] == 4 and rec["oom_retries"] == 0
    assert "no data loading" in rec["timed_region_train"] and "train_step" in rec["timed_region_train"]
    assert rec["compile"] is False and rec["compile_graphs"] == 0 and rec["grad_scaler"] is False
    assert rec["tf32"] is False and rec["matmul_fp32_precision"] == rec["conv_fp32_precision"] == "ieee"
    assert rec["first_step_peak_mem_bytes"] is None and "analytic" in rec["memory_note"]  # no allocator peak on CPU


def test_memory_is_measured_on_a_steady_step_of_the_timed_callable(monkeypatch):
    """The peak is reset after the warm-up steps and read after one more step of the same callable."""
    forwards, events = [0], []

    def counted(module, inputs, output):
        forwards[0] += inputs[0].device.type != "meta"  # FLOPs are counted on meta models, not timed

    def model_fn():
        model = build_model("resnet20_v1", 10, width=2)
        model.register_forward_hook(counted)
        return model

    real_step = rt.train_step

    def step(fn, *a, **k):
        assert isinstance(fn, rt.Compiled)  # the callable the repeats time, not the bare model
        return real_step(fn, *a, **k)

    monkeypatch.setattr(rt, "train_step", step)
    monkeypatch.setattr(bench, "_reset_peak", lambda device: events.append(("reset", forwards[0])))
    monkeypatch.setattr(bench, "_peak", lambda device: events.append(("read", forwards[0])))
    bench.benchmark_model(model_fn, batch_size=4, img_size=8, warmup=3, repeats=1, steps_per_repeat=1)
    # forward 1: the eager saved-activation count; 2: the first step; 3-4: warm-up; 5: the steady step.
    assert events == [("reset", 1), ("read", 2), ("reset", 4), ("read", 5)]


def test_flops_are_counted_on_the_meta_device(monkeypatch):
    devices = []
    real = bench.train_step_flops
    monkeypatch.setattr(bench, "train_step_flops", lambda m, x, y: devices.append(x.device.type) or real(m, x, y))
    rec = bench.benchmark_model(lambda: build_model("resnet20_v1", 10, width=2), batch_size=8, img_size=8,
                                warmup=1, repeats=1, steps_per_repeat=1)
    assert devices == ["meta"]
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    eager = bench.count_flops(build_model("resnet20_v1", 10, width=2), x, y)
    assert round(rec["train_step_gflops"] * 1e9) == eager["train_step_flops"]
    assert round(rec["fwd_gflops"] * 1e9 * 8) == eager["fwd_flops"]


def test_fp16_bench_step_is_the_training_step_with_its_loss_scaler():
    rec = bench.benchmark_model(lambda: build_model("resnet20_v1", 10, width=2), batch_size=4, img_size=8,
                                amp="fp16", warmup=1, repeats=1, steps_per_repeat=1)
    assert rec["grad_scaler"] is True and rec["amp"] == "fp16"


def test_models_benched_in_one_process_each_compile(monkeypatch):
    """Every ResNet shares `ResNet.forward`, and dynamo keeps `recompile_limit` graphs per code object.
    Here the limit is 2 (one model's train and eval graphs), as 8 is for four models: without a fresh
    compile state per model the second would run eager while its row says compiled."""
    import torch._dynamo

    names = ["resnet20_v1", "resnet20_v2", "resnet18_v1"]
    with torch._dynamo.config.patch(recompile_limit=2):
        rows = [bench.benchmark_model(lambda n=n: build_model(n, 10, stem="cifar", width=2), batch_size=2,
                                      img_size=8, compile=True, compile_backend="eager", warmup=1, repeats=1,
                                      steps_per_repeat=1, label=n) for n in names]
    assert [r["compile_graphs"] for r in rows] == [2, 2, 2]  # train step and inference, each compiled
    assert all(r["compile"] and r["compile_backend"] == "eager" and r["compile_s"] > 0 for r in rows)


class OOMAbove(nn.Module):
    """Wraps a model; above `limit` images its forward fails to allocate as `fail` does."""

    def __init__(self, limit, fail):
        super().__init__()
        self.inner, self.limit, self.fail = build_model("resnet18_v1", 10, stem="cifar", width=4), limit, fail

    def forward(self, x):
        if x.shape[0] > self.limit and x.device.type != "meta":
            self.fail()
        return self.inner(x)


def _cuda_oom():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _cudnn_alloc_failed():  # the text cuDNN's failures carry; torch raises them as plain RuntimeErrors
    raise RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")


def _cpu_allocator():  # a real allocation failure: 32 TiB is refused at once by the host allocator
    torch.empty(2**45, dtype=torch.uint8)


@pytest.mark.parametrize("fail", [_cuda_oom, _cudnn_alloc_failed, _cpu_allocator])
def test_oom_halves_the_batch_and_records_it(capsys, fail):
    rec = bench.benchmark_model(lambda: OOMAbove(5, fail), batch_size=16, img_size=16, warmup=1, repeats=2,
                                steps_per_repeat=1, label="big")
    assert rec["batch_size_requested"] == 16 and rec["batch_size"] == 4 and rec["oom_retries"] == 2
    assert len(rec["oom_errors"]) == 2 and all("\n" not in e for e in rec["oom_errors"])
    assert "big: out of memory at batch 16" in capsys.readouterr().err and "retrying at 8"


def test_oom_below_min_batch_is_one_line_and_other_errors_propagate():
    with pytest.raises(rt.DoesNotFit) as err:
        bench.benchmark_model(lambda: OOMAbove(0, _cpu_allocator), batch_size=4, img_size=8, warmup=1, repeats=1,
                              steps_per_repeat=1, min_batch=2, label="resnet18_v1")
    text = str(err.value)
    assert "\n" not in text and text.startswith("resnet18_v1 at batch 2 does not fit on cpu (")
    assert "can't allocate memory" in text

    def broken():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory access"):
        bench.benchmark_model(lambda: OOMAbove(0, broken), batch_size=4, img_size=8, warmup=1, repeats=1,
                              steps_per_repeat=1)


def test_cli_writes_csv_and_rejects_unknown_models(tmp_path, capsys):
    out = tmp_path / "b.csv"
    rc = bench.main(["--models", "resnet20_v1,resnet20_v2", "--batch-size", "4", "--image-size", "16", "--width", "4",
                     "--warmup", "1", "--repeats", "2", "--steps-per-repeat", "1", "--out", str(out)])
    assert rc == 0
    df = pd.read_csv(out)
    assert list(df["model"]) == ["resnet20_v1", "resnet20_v2"]
    assert (df["train_img_per_s"] > 0).all() and df["git_commit"].notna().all()
    assert df["hw_cpu_model"].notna().all() and df["version_torch"].map(lambda v: torch.__version__.startswith(v)).all()
    rc = bench.main(["--models", "resnet18_v1,resnet19_v1", "--out", str(tmp_path / "x.csv")])
    assert rc == 2 and "resnet19_v1" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
