"""Measurement: analytic FLOPs and saved-activation bytes, OOM retry, the record and the CLI."""

import math

import pandas as pd
import torch
import torch.nn as nn

from resnet_bench import bench
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
    assert got == expected  # weights are saved too but counted as parameter bytes


def test_summarize_times():
    s = bench.summarize_times([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s == {"median": 3.0, "iqr": 2.0, "min": 1.0, "max": 5.0, "n": 5}


def test_record_fields_have_units_and_sane_values():
    rec = bench.benchmark_model(lambda: build_model("resnet18_v2", 10, stem="cifar", width=4),
                                batch_size=4, img_size=16, warmup=1, repeats=2, steps_per_repeat=1)
    for key in ("train_img_per_s", "infer_img_per_s", "train_step_ms_median", "fwd_gflops",
                "train_step_gflops", "achieved_tflop_per_s", "peak_mem_bytes", "saved_activation_bytes",
                "param_bytes", "grad_bytes", "optimizer_state_bytes", "peak_rss_bytes"):
        assert math.isfinite(rec[key]) and rec[key] > 0, key
    assert rec["param_bytes"] == rec["grad_bytes"] == rec["optimizer_state_bytes"] == rec["params"] * 4
    assert rec["train_step_gflops"] > 4 * rec["fwd_gflops"]  # batch 4, forward + ~2x backward
    assert rec["batch_size"] == rec["batch_size_requested"] == 4 and rec["oom_retries"] == 0
    assert "no data loading" in rec["timed_region_train"]


class OOMAbove(nn.Module):
    """Wraps a model; raises CUDA-style OOM for batches larger than `limit`."""

    def __init__(self, limit):
        super().__init__()
        self.inner, self.limit = build_model("resnet18_v1", 10, stem="cifar", width=4), limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_oom_halves_the_batch_and_records_it(capsys):
    rec = bench.benchmark_model(lambda: OOMAbove(5), batch_size=16, img_size=16, warmup=1, repeats=2,
                                steps_per_repeat=1)
    assert rec["batch_size_requested"] == 16 and rec["batch_size"] == 4 and rec["oom_retries"] == 2
    assert "retrying at 8" in capsys.readouterr().err


def test_cli_writes_csv_and_rejects_unknown_models(tmp_path, capsys):
    out = tmp_path / "b.csv"
    rc = bench.main(["--models", "resnet20_v1,resnet20_v2", "--batch", "4", "--img", "16", "--width", "4",
                     "--warmup", "1", "--repeats", "2", "--steps-per-repeat", "1", "--out", str(out)])
    assert rc == 0
    df = pd.read_csv(out)
    assert list(df["model"]) == ["resnet20_v1", "resnet20_v2"]
    assert (df["train_img_per_s"] > 0).all() and df["git_commit"].notna().all()
    assert df["hw_cpu_model"].notna().all() and df["version_torch"].map(lambda v: torch.__version__.startswith(v)).all()
    rc = bench.main(["--models", "resnet18_v1,resnet19_v1", "--out", str(tmp_path / "x.csv")])
    assert rc == 2 and "resnet19_v1" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
