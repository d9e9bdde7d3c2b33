"""Measurement of models, kept apart from training: throughput, memory, FLOPs.

Timed region, train: forward + cross-entropy + backward + SGD step on a batch
that is already on the device (no data loading, no host transfer).
Timed region, inference: forward under `torch.inference_mode`, eval mode.
Protocol: `warmup` untimed steps, then `repeats` timed repeats of
`steps_per_repeat` steps each, the device synchronised at both ends of a repeat
(CUDA events on GPU, perf_counter on CPU); median and spread over repeats.
Memory is measured in a separate pass from timing. Inputs are random normal
images (never zeros) with a fixed seed.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from resnet_bench.env import environment, numeric_environment, pinned_env, set_torch_numeric_flags

TRAIN_REGION = "forward + cross-entropy + backward + SGD step, batch already on the device; no data loading"
INFER_REGION = "forward under torch.inference_mode (eval mode), batch already on the device"


def summarize_times(times: list[float]) -> dict:
    """Median, inter-quartile range, min and max of a list of durations (seconds)."""
    ts = sorted(times)
    q = statistics.quantiles(ts, n=4, method="inclusive") if len(ts) > 1 else [ts[0]] * 3
    return {"median": statistics.median(ts), "iqr": q[2] - q[0], "min": ts[0], "max": ts[-1], "n": len(ts)}


def _autocast(device: torch.device, amp: str):
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inputs(batch: int, in_channels: int, img: int, num_classes: int, device, channels_last: bool):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_channels, img, img, generator=gen).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _train_step(model, opt, x, y, device, amp):
    with _autocast(device, amp):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _time_repeats(step: Callable[[], None], device, *, warmup: int, repeats: int, steps: int) -> list[float]:
    """Seconds per step for each repeat; CUDA events on GPU, perf_counter on CPU."""
    for _ in range(warmup):
        step()
    _sync(device)
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                step()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1000.0 / steps)
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            out.append((time.perf_counter() - t0) / steps)
    return out


def measure_throughput(model: nn.Module, *, batch_size: int, img_size: int, in_channels: int, num_classes: int,
                       device, amp="none", channels_last=False, warmup=3, repeats=5, steps_per_repeat=2) -> dict:
    device = torch.device(device)
    x, y = _inputs(batch_size, in_channels, img_size, num_classes, device, channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    train_s = _time_repeats(lambda: _train_step(model, opt, x, y, device, amp), device,
                            warmup=warmup, repeats=repeats, steps=steps_per_repeat)
    model.eval()

    def infer():
        with torch.inference_mode(), _autocast(device, amp):
            model(x)

    infer_s = _time_repeats(infer, device, warmup=warmup, repeats=repeats, steps=steps_per_repeat)
    model.train()
    out = {}
    for name, secs in (("train", train_s), ("infer", infer_s)):
        t = summarize_times(secs)
        rate = summarize_times([batch_size / s for s in secs])  # images/s of each repeat
        out.update({f"{name}_step_ms_median": t["median"] * 1e3, f"{name}_step_ms_iqr": t["iqr"] * 1e3,
                    f"{name}_img_per_s": rate["median"], f"{name}_img_per_s_iqr": rate["iqr"],
                    f"{name}_img_per_s_min": rate["min"], f"{name}_img_per_s_max": rate["max"]})
    return {
        **out,
        "timed_repeats": repeats, "steps_per_repeat": steps_per_repeat, "warmup_steps": warmup,
    }


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, amp="none") -> int:
    """Bytes autograd saves for backward in one training forward, each storage counted once.

    Parameters are saved too (e.g. conv weights); they are excluded here because
    they are counted as parameter bytes.
    """
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in param_ptrs and ptr not in seen:
            seen[ptr] = st.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(device, amp):
        loss = F.cross_entropy(model(x).float(), y)
    del loss
    return sum(seen.values())


def measure_memory(model: nn.Module, *, batch_size: int, img_size: int, in_channels: int, num_classes: int,
                   device, amp="none", channels_last=False) -> dict:
    """A separate pass from timing: CUDA peaks, saved activations, param/grad/optimiser bytes, RSS."""
    device = torch.device(device)
    x, y = _inputs(batch_size, in_channels, img_size, num_classes, device, channels_last)
    act = saved_activation_bytes(model, x, y, device, amp)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    _train_step(model, opt, x, y, device, amp)
    _sync(device)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    opt_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                    if torch.is_tensor(t))
    out = {
        "saved_activation_bytes": act, "param_bytes": param_bytes, "grad_bytes": grad_bytes,
        "optimizer_state_bytes": opt_bytes,
        # ru_maxrss is KiB on Linux; a process-lifetime peak, not this model's alone.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if device.type == "cuda":
        out["peak_mem_bytes"] = torch.cuda.max_memory_allocated(device)
        out["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
        out["peak_mem_source"] = "torch.cuda.max_memory_allocated"
    else:
        out["peak_mem_bytes"] = act + param_bytes + grad_bytes + opt_bytes
        out["peak_reserved_bytes"] = None
        out["peak_mem_source"] = "saved activations + parameters + gradients + optimiser state"
    return out


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 x MACs, torch.utils.flop_counter) of one eval-mode forward."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was)
    return counter.get_total_flops()


def train_step_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one training forward + backward (the optimiser step's elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.train()
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    model.train(was)
    return counter.get_total_flops()


def count_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    return {"fwd_flops": forward_flops(model, x), "train_step_flops": train_step_flops(model, x, y)}


def benchmark_model(model_fn: Callable[[], nn.Module], *, batch_size: int, img_size: int, in_channels: int = 3,
                    num_classes: int = 10, device="cpu", amp="none", channels_last=False, compile=False,
                    warmup=3, repeats=5, steps_per_repeat=2, min_batch: int = 1) -> dict:
    """One record: throughput, memory and FLOPs of a fresh model; halves the batch on OOM (recorded)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    requested, batch, retries = batch_size, batch_size, 0
    while True:
        try:
            record = _benchmark_once(model_fn, batch, img_size, in_channels, num_classes, device, amp,
                                     channels_last, compile, warmup, repeats, steps_per_repeat)
            break
        except torch.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch // 2 < min_batch:
                raise
            print(f"[bench] out of memory at batch {batch}; retrying at {batch // 2}", file=sys.stderr)
            batch, retries = batch // 2, retries + 1
    record.update({"batch_size_requested": requested, "batch_size": batch, "oom_retries": retries})
    return record


def _benchmark_once(model_fn, batch, img, in_ch, ncls, device, amp, channels_last, compile_, warmup, repeats,
                    steps):
    model = model_fn().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    # Forward FLOPs on one image (eval mode); train-step FLOPs at the requested batch.
    fwd = forward_flops(model, _inputs(1, in_ch, img, ncls, device, channels_last)[0])
    step_flops = train_step_flops(model, *_inputs(batch, in_ch, img, ncls, device, channels_last))
    mem = measure_memory(model, batch_size=batch, img_size=img, in_channels=in_ch, num_classes=ncls,
                         device=device, amp=amp, channels_last=channels_last)
    run_model = torch.compile(model) if compile_ else model
    thr = measure_throughput(run_model, batch_size=batch, img_size=img, in_channels=in_ch, num_classes=ncls,
                             device=device, amp=amp, channels_last=channels_last, warmup=warmup,
                             repeats=repeats, steps_per_repeat=steps)
    return {
        "params": params, "fwd_gflops": fwd / 1e9, "train_step_gflops": step_flops / 1e9,
        "achieved_tflop_per_s": step_flops / (thr["train_step_ms_median"] / 1e3) / 1e12,
        **thr, **mem,
        "img_size": img, "in_channels": in_ch, "num_classes": ncls, "device": str(device), "amp": amp,
        "channels_last": channels_last, "compile": compile_,
        "timed_region_train": TRAIN_REGION, "timed_region_infer": INFER_REGION,
        "flops_note": "FLOPs = 2 x MACs (torch.utils.flop_counter)",
    }


def parse_args(argv):
    from resnet_bench.argparsing import Parser
    from resnet_bench.config import Bench

    d = Bench()  # the one place bench defaults live (resnet_bench.config)
    p = Parser(prog="resnet-bench bench", description="Throughput, memory and FLOPs of models.")
    p.add_argument("--models", required=True, help="comma-separated registered names, e.g. resnet18_v1,resnet18_v2")
    p.add_argument("--batch", type=int, default=d.batch_size)
    p.add_argument("--img", type=int, default=32, help="input height = width, pixels")
    p.add_argument("--stem", help="imagenet or cifar (default: the model family's own)")
    p.add_argument("--width", type=int, help="base channels (default: the family's)")
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", default="none", help="none, bf16, fp16 (CUDA only)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--steps-per-repeat", type=int, default=d.steps_per_repeat)
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads); recorded")
    p.add_argument("--numeric-pin", help="measure under this deterministic CPU pin, as such cells train: "
                   "portable or host (resnet_bench.env.NUMERIC_PINS; default: none); recorded")
    p.add_argument("--out", default="bench.csv", help="CSV written with one row per model")
    return p.parse_args(argv)


class BenchInput(BaseModel):
    """Input shape flags of `resnet-bench bench`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    img: int = Field(ge=1, le=4096)
    in_channels: int = Field(ge=1, le=64)
    num_classes: int = Field(ge=1, le=1_000_000)


def check_args(args) -> list[str]:
    """Every flag through the schema (resnet_bench.config); all problems, one line each."""
    from resnet_bench import config as cfg
    from resnet_bench.argparsing import output_file_problem
    from resnet_bench.models import available_models

    problems: list[str] = []
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    valid = available_models()
    bad = [n for n in names if n not in valid]
    if bad or not names:
        problems.append(f"--models: unknown model(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                        f"valid: {', '.join(valid)}")
    checks = [
        (cfg.Bench, {"batch_size": args.batch, "warmup": args.warmup, "repeats": args.repeats,
                     "steps_per_repeat": args.steps_per_repeat},
         {"batch_size": "--batch", "warmup": "--warmup", "repeats": "--repeats",
          "steps_per_repeat": "--steps-per-repeat"}),
        (cfg.Arch, {"stem": args.stem, "width": args.width}, {"stem": "--stem", "width": "--width"}),
        (cfg.Runtime, {"device": args.device, "amp": args.amp, "threads": args.threads,
                       "numeric_pin": args.numeric_pin},
         {"device": "--device", "amp": "--amp", "threads": "--threads", "numeric_pin": "--numeric-pin"}),
        (BenchInput, {"img": args.img, "in_channels": args.in_channels, "num_classes": args.num_classes},
         {"img": "--img", "in_channels": "--in-channels", "num_classes": "--num-classes"}),
    ]
    for model, values, flags in checks:
        try:
            cfg.validate_flags(model, values, flags)
        except cfg.ConfigError as err:
            problems += err.problems
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        problems.append(f"--device: {args.device!r} but this machine has no CUDA GPU; valid here: cpu")
    if args.amp != "none" and not args.device.startswith("cuda"):
        problems.append(f"--amp: {args.amp!r} needs --device cuda (CPU runs float32)")
    if args.numeric_pin and args.device != "cpu":
        problems.append(f"--numeric-pin: {args.numeric_pin!r} pins CPU kernels; it needs --device cpu")
    if output_file_problem(args.out):
        problems.append(output_file_problem(args.out))
    return problems


def main(argv=None) -> int:
    import pandas as pd

    from resnet_bench.models import build_model

    args = parse_args(argv)
    problems = check_args(args)
    if problems:  # before any work
        print("\n".join(f"error: {line}" for line in problems), file=sys.stderr)
        return 2
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if args.numeric_pin:  # before any computation: each library reads its variable once
        os.environ.update(pinned_env(args.threads, args.numeric_pin))
    set_torch_numeric_flags(args.numeric_pin)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {k: v for k, v in (("stem", args.stem), ("width", args.width)) if v}
    env = environment(args.device, git=True)
    rows = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        rec = benchmark_model(
            lambda: build_model(name, num_classes=args.num_classes, in_channels=args.in_channels, **options),
            batch_size=args.batch, img_size=args.img, in_channels=args.in_channels,
            num_classes=args.num_classes, device=args.device, amp=args.amp, channels_last=args.channels_last,
            compile=args.compile, warmup=args.warmup, repeats=args.repeats,
            steps_per_repeat=args.steps_per_repeat)
        rows.append({"model": name, **options, **rec, "git_commit": env["git_commit"],
                     **{f"hw_{k}": v for k, v in env["hardware"].items()},
                     **{f"version_{k}": v for k, v in env["versions"].items()}})
    numeric = numeric_environment()  # after computing: the settings that were in effect
    for row in rows:
        row.update({k: numeric[k] for k in ("numeric_pin", "aten_cpu_capability", "mkl_cbwr_branch",
                                            "onednn_enabled")})
    df = pd.DataFrame(rows)
    df.to_csv(args.out, index=False)
    cols = ["model", "batch_size", "params", "fwd_gflops", "train_img_per_s", "train_img_per_s_iqr",
            "infer_img_per_s", "achieved_tflop_per_s", "peak_mem_bytes", "saved_activation_bytes"]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:,.3f}"))
    hw = env["hardware"]
    print(f"\n{hw['gpu_name'] or hw['cpu_model']}, torch threads {hw['torch_threads']}, "
          f"torch {env['versions']['torch']}, numeric pin {numeric['numeric_pin']}, "
          f"commit {env['git_commit'][:12]}; "
          f"train region: {TRAIN_REGION}; CSV: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
