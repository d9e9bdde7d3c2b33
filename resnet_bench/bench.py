"""Measurement of models, kept apart from training: throughput, memory, FLOPs.

Timed region, train: `runtime.train_step`, the training loop's own step (gradients dropped, forward
under autocast, float32 cross-entropy, backward with fp16 loss scaling, SGD step) on a batch that is
already on the device (no data loading, no host transfer).
Timed region, inference: forward under `torch.inference_mode`, eval mode.
Protocol, per model and in a fresh compile state: `warmup` untimed steps (at least one: the first
compiles, autotunes cuDNN and grows the allocator), then one memory step, then `repeats` timed
repeats of `steps_per_repeat` steps each, the device synchronised at both ends of a repeat (CUDA
events on GPU, perf_counter on CPU); median and spread over repeats. The memory step and the timed
steps call the same callable (the compiled model when compile is on).
FLOPs are counted on the meta device (shapes only), so counting never allocates a batch.
Inputs are random normal images (never zeros) with a fixed seed.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import sys
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from resnet_bench import noise
from resnet_bench import runtime as rt
from resnet_bench.env import environment, numeric_environment, pinned_env, set_torch_numeric_flags

TRAIN_REGION = ("runtime.train_step (zero grad, forward, float32 cross-entropy, backward with fp16 loss scaling, "
                "SGD step), batch already on the device; no data loading")
INFER_REGION = "forward under torch.inference_mode (eval mode), batch already on the device"
MEMORY_NOTE = {
    "cuda": ("peak_mem_bytes: torch.cuda.max_memory_allocated over one steady train step after the warm-up "
             "(parameters, gradients, momentum, activations, autocast weight copies, workspaces); "
             "first_step_peak_mem_bytes: the same over the first step (cuDNN autotuning, no momentum yet)"),
    "cpu": ("peak_mem_bytes: saved activations + parameters + gradients + optimiser state after the warm-up "
            "(analytic; no allocator peak on CPU); saved_param_copy_bytes: autocast's reduced-precision weight "
            "copies autograd saves, not counted as activations"),
}


TIMING_PROTOCOL = ("models of one bench interleaved (repeat r of each before repeat r + 1 of any); median, IQR "
                   "and CV (sd / mean) over repeats; re-measured while a CV exceeds cv_max; ratios: geometric "
                   "mean of paired repeats, 95 % t-interval of log-ratios")


def _inputs(batch: int, in_channels: int, img: int, num_classes: int, device, channels_last: bool):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_channels, img, img, generator=gen).to(device)
    y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _rates(name: str, secs: list[float], batch_size: int) -> dict:
    t = noise.spread(secs)
    rate = noise.spread([batch_size / s for s in secs])  # images/s of each repeat
    return {f"{name}_step_ms_median": t["median"] * 1e3, f"{name}_step_ms_iqr": t["iqr"] * 1e3,
            f"{name}_img_per_s": rate["median"], f"{name}_img_per_s_iqr": rate["iqr"],
            f"{name}_img_per_s_min": rate["min"], f"{name}_img_per_s_max": rate["max"]}


# ---- memory ---------------------------------------------------------------------------------------------

# Autograd nodes of a reshaped or cast view of one tensor (a saved `w.t()` of autocast's copy of w).
_COPY_OR_VIEW_NODES = {"ToCopyBackward0", "TBackward0", "ViewBackward0", "PermuteBackward0", "ExpandBackward0",
                       "UnsqueezeBackward0", "SqueezeBackward0", "TransposeBackward0", "AsStridedBackward0"}


def _is_param_copy(t: torch.Tensor, param_ids: set[int]) -> bool:
    """Autocast's reduced-precision copy of a parameter (or a view of one): its autograd history is
    copies and views back to that parameter's AccumulateGrad."""
    fn, cast = t.grad_fn, False
    while fn is not None:
        if hasattr(fn, "variable"):
            return cast and id(fn.variable) in param_ids
        name = type(fn).__name__
        parents = [f for f, _ in fn.next_functions if f is not None]
        if name not in _COPY_OR_VIEW_NODES or len(parents) != 1:
            return False
        cast = cast or name == "ToCopyBackward0"
        fn = parents[0]
    return False


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device, amp="none") -> dict:
    """Bytes autograd saves for backward in one eager training forward, each storage counted once.

    `saved_activation_bytes`: everything saved but parameters (counted as parameter bytes) and
    autocast's weight copies (`saved_param_copy_bytes`), which scale with the model, not the batch.
    """
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    param_ids = {id(p) for p in model.parameters()}
    acts: dict[int, int] = {}
    copies: dict[int, int] = {}
    # The storages stay alive until the count is done: one freed mid-forward could hand its address to
    # a later tensor, which would then pass for the same storage (an undercount that depends on the
    # allocator's state). A storage holds no grad_fn, so keeping it makes no cycle.
    alive: list = []

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        alive.append(st)
        ptr = st.data_ptr()
        if ptr not in param_ptrs and ptr not in acts and ptr not in copies:
            (copies if _is_param_copy(t, param_ids) else acts)[ptr] = st.nbytes()
        # Nothing is kept: this forward is never differentiated, and a saved output packed as itself
        # would hold its own grad_fn (a reference cycle no garbage collector sees: leaked activations).
        return None

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda packed: packed), rt.autocast(torch.device(device), amp):
        loss = F.cross_entropy(model(x).float(), y)
    del loss
    alive.clear()
    return {"saved_activation_bytes": sum(acts.values()), "saved_param_copy_bytes": sum(copies.values())}


def _state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    return {
        "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "grad_bytes": sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None),
        "optimizer_state_bytes": sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                                     if torch.is_tensor(t)),
    }


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        rt.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    rt.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


# ---- FLOPs ----------------------------------------------------------------------------------------------


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


def meta_flops(model_fn: Callable[[], nn.Module], *, batch: int, img: int, in_channels: int, num_classes: int,
               channels_last: bool) -> dict:
    """`count_flops` of a fresh model on the meta device: forward at one image, train step at `batch`.
    FLOP counts depend on shapes only (not dtype), and the meta device allocates nothing."""
    with torch.device("meta"):
        model = model_fn()
        one = torch.randn(1, in_channels, img, img)
        x = torch.randn(batch, in_channels, img, img)
        y = torch.randint(0, num_classes, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        one, x = (t.contiguous(memory_format=torch.channels_last) for t in (one, x))
    return {"fwd_flops": forward_flops(model, one), "train_step_flops": train_step_flops(model, x, y)}


# ---- models, interleaved ------------------------------------------------------------------------------


def benchmark_model(model_fn: Callable[[], nn.Module], *, label: str = "model", **kwargs) -> dict:
    """`benchmark_models` of one model: its record."""
    return benchmark_models({label: model_fn}, **kwargs)[label]


def benchmark_models(model_fns: dict[str, Callable[[], nn.Module]], *, batch_size: int, img_size: int,
                     in_channels: int = 3, num_classes: int = 10, device="cpu", amp="none", channels_last=False,
                     compile=False, compile_mode: str = "default", compile_backend: str = "inductor",
                     tf32: bool = False, warmup=3, repeats=5, steps_per_repeat=2, cv_max: float = 0.1,
                     remeasure: int = 2, min_batch: int = 1,
                     timer: Callable[[Callable[[], None], int], float] | None = None) -> dict[str, dict]:
    """One record per model (keyed as `model_fns`): throughput, memory and FLOPs of fresh models timed
    interleaved (resnet_bench.noise: repeat r of every model before repeat r + 1 of any, re-measured
    while a throughput CV exceeds `cv_max`, at most `remeasure` times). The first model is the reference:
    every other one's record has its train and inference throughput ratio to it, with a 95 % interval.

    All models run at one batch, halved for all on out-of-memory (any allocation failure:
    runtime.is_out_of_memory; cuDNN and cuBLAS report theirs as plain RuntimeErrors). The failed
    attempt's memory is released after its `except` block ends (its traceback holds the attempt's
    frames until then). Below `min_batch` it raises runtime.DoesNotFit: one line naming the models,
    the batch and the device's memory.

    `timer(step, n)` returns the seconds of n calls of step; by default the device's clock, synchronised
    at both ends (as timeit takes a timer: a caller with its own clock, or a test of the protocol on a
    machine whose drift it controls).
    """
    device = torch.device(device)
    rt.set_tf32(tf32)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    label = ", ".join(model_fns)
    requested, batch, errors = batch_size, batch_size, []
    # Events, allocations and peaks on `device`, also when it is not the current GPU (cuda:N).
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        while True:
            oom = None
            try:
                records = _benchmark_once(model_fns, batch, img_size, in_channels, num_classes, device, amp,
                                          channels_last, compile, compile_mode, compile_backend, warmup, repeats,
                                          steps_per_repeat, cv_max, remeasure, timer or _time(device))
                break
            except Exception as err:
                if not rt.is_out_of_memory(err):
                    raise
                oom = rt.first_line(err)
            rt.release_memory(device)  # outside the except: the failed attempt's tensors are unreachable now
            errors.append(oom)
            if batch // 2 < min_batch:
                raise rt.DoesNotFit(f"{label} at batch {batch} does not fit on {rt.memory_where(device)}: {oom}")
            print(f"[bench] {label}: out of memory at batch {batch} ({oom}); retrying at {batch // 2}",
                  file=sys.stderr)
            batch //= 2
    num = numeric_environment(device, amp=amp)
    for record in records.values():
        record.update({"batch_size_requested": requested, "batch_size": batch, "oom_retries": len(errors),
                       "oom_errors": errors, "tf32": tf32, "matmul_fp32_precision": num["matmul_fp32_precision"],
                       "conv_fp32_precision": num["conv_fp32_precision"]})
    return records


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def _prepare(model_fn, batch, img, in_ch, ncls, device, amp, channels_last, compile_, compile_mode,
             compile_backend, warmup, fresh: bool) -> dict:
    """A model built, counted and warmed up for timing: its static record and its two timed callables.
    GPU memory is counted above what the models prepared before it hold (`base`)."""
    flops = meta_flops(model_fn, batch=batch, img=img, in_channels=in_ch, num_classes=ncls,
                       channels_last=channels_last)
    base = _allocated(device)
    model = model_fn().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    x, y = _inputs(batch, in_ch, img, ncls, device, channels_last)
    saved = saved_activation_bytes(model, x, y, device, amp)  # eager, before any step: no gradients yet
    model.zero_grad(set_to_none=True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = rt.grad_scaler(device, amp)
    compiled = rt.Compiled(model, enabled=compile_, mode=compile_mode, backend=compile_backend, fresh=fresh)

    def train_step():
        with compiled.timing(device):
            rt.train_step(compiled, opt, scaler, x, y, device=device, amp=amp)

    def infer():
        with compiled.timing(device), torch.inference_mode(), rt.autocast(device, amp):
            compiled(x)

    model.train()
    _reset_peak(device)
    train_step()
    first_peak = _peak(device)
    for _ in range(warmup - 1):
        train_step()
    # Steady state: momentum buffers exist, cuDNN has chosen its algorithms, the graph is compiled.
    _reset_peak(device)
    train_step()
    peak = _peak(device)
    state = _state_bytes(model, opt)
    static = {
        "params": params, "fwd_gflops": flops["fwd_flops"] / 1e9, "train_step_gflops": flops["train_step_flops"] / 1e9,
        **saved, **state,
        "peak_mem_bytes": peak - base if peak is not None else saved["saved_activation_bytes"] + sum(state.values()),
        "first_step_peak_mem_bytes": first_peak - base if first_peak is not None else None,
        "steady_allocated_bytes": _allocated(device) - base if device.type == "cuda" else None,
        # The allocator's reserve is shared by the models prepared so far: an upper bound of this one's.
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None,
    }
    return {"static": static, "train": train_step, "infer": infer, "compiled": compiled, "model": model}


def _time(device):
    def timer(step, n: int) -> float:
        """Seconds of n calls of step, the device synchronised at both ends (runtime.DeviceTimer)."""
        rt.synchronize(device)
        clock = rt.DeviceTimer(device)
        clock.start()
        for _ in range(n):
            step()
        clock.stop()
        rt.synchronize(device)
        return clock.seconds()
    return timer


def _phase(subjects: list[dict], kind: str, batch: int, repeats, steps, cv_max, remeasure, timer) -> dict:
    return noise.stable_interleaved([s[kind] for s in subjects], batch_size=batch, repeats=repeats,
                                    steps_per_repeat=steps, cv_max=cv_max, remeasure=remeasure, timer=timer)


def _stability(kind: str, phase: dict, secs: list[float], batch: int) -> dict:
    rates = [batch / s for s in secs]
    cv = noise.spread(rates)["cv"]
    load = phase["load"]
    # Unstable: this model's CV in the kept (least noisy) attempt is still above cv_max.
    return {f"{kind}_img_per_s_cv": cv, f"{kind}_unstable": cv > phase["cv_max"],
            f"{kind}_img_per_s_repeats": rates,
            f"{kind}_attempts": phase["n_attempts"], f"{kind}_attempt_max_cv": [a["max_cv"] for a in phase["attempts"]],
            f"{kind}_loadavg_1m_before": load["loadavg_1m_before"], f"{kind}_loadavg_1m_after": load["loadavg_1m_after"],
            f"{kind}_competing_cpu_s": load["competing_cpu_s"], f"{kind}_competing_cpu_frac": load["competing_cpu_frac"]}


def _ratios(kind: str, ref: list[float], secs: list[float], batch: int) -> dict:
    r = noise.ratio_interval([batch / s for s in ref], [batch / s for s in secs])
    return {f"{kind}_ratio": r["ratio"], f"{kind}_ratio_lo": r["lo"], f"{kind}_ratio_hi": r["hi"],
            "ratio_pairs": r["n_pairs"], "ratio_level": r["level"]}


def _benchmark_once(model_fns, batch, img, in_ch, ncls, device, amp, channels_last, compile_, compile_mode,
                    compile_backend, warmup, repeats, steps, cv_max, remeasure, timer) -> dict[str, dict]:
    warmup = max(1, warmup)
    labels = list(model_fns)
    # Compiled together, the models' train and eval graphs all count against dynamo's per-code-object
    # limit (every ResNet shares ResNet.forward): raise it to hold them all.
    limit = contextlib.nullcontext()
    if compile_:
        import torch._dynamo

        limit = torch._dynamo.config.patch(recompile_limit=max(8, 2 * len(labels) + 2))
    with limit:
        subjects = [_prepare(model_fns[name], batch, img, in_ch, ncls, device, amp, channels_last, compile_,
                             compile_mode, compile_backend, warmup, fresh=i == 0) for i, name in enumerate(labels)]
        train = _phase(subjects, "train", batch, repeats, steps, cv_max, remeasure, timer)
        for s in subjects:
            s["model"].eval()
            for _ in range(warmup):
                s["infer"]()
        infer = _phase(subjects, "infer", batch, repeats, steps, cv_max, remeasure, timer)
        for s in subjects:
            s["model"].train()
            s["compiled"].check()
    records = {}
    for i, (name, s) in enumerate(zip(labels, subjects)):
        train_s, infer_s = train["secs"][i], infer["secs"][i]
        thr = {**_rates("train", train_s, batch), **_rates("infer", infer_s, batch)}
        rec = {**s["static"],
               "achieved_tflop_per_s": s["static"]["train_step_gflops"] / (thr["train_step_ms_median"] / 1e3) / 1e3,
               **thr, **_stability("train", train, train_s, batch), **_stability("infer", infer, infer_s, batch),
               "cv_max": cv_max, "remeasure": remeasure,
               "interleaved_with": [n for n in labels if n != name], "ratio_reference": labels[0] if i else None,
               **(_ratios("train", train["secs"][0], train_s, batch) | _ratios("infer", infer["secs"][0], infer_s, batch)
                  if i else {}),
               "timed_repeats": repeats, "steps_per_repeat": steps, "warmup_steps": warmup,
               "peak_mem_source": ("torch.cuda.max_memory_allocated, steady step" if device.type == "cuda" else
                                   "saved activations + parameters + gradients + optimiser state"),
               "memory_note": MEMORY_NOTE[device.type],
               # ru_maxrss is KiB on Linux; a process-lifetime peak, not this model's alone.
               "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               "img_size": img, "in_channels": in_ch, "num_classes": ncls, "device": str(device), "amp": amp,
               "grad_scaler": rt.grad_scaler(device, amp).is_enabled(), "channels_last": channels_last,
               "compile": compile_, "compile_mode": s["compiled"].stats()["mode"],
               "compile_backend": s["compiled"].stats()["backend"], "compile_graphs": s["compiled"].graphs,
               "compile_s": s["compiled"].compile_s,
               "timed_region_train": TRAIN_REGION, "timed_region_infer": INFER_REGION,
               "timing_protocol": TIMING_PROTOCOL,
               "flops_note": "FLOPs = 2 x MACs (torch.utils.flop_counter, on the meta device)"}
        rec["unstable"] = rec["train_unstable"] or rec["infer_unstable"]
        records[name] = rec
    return records


# ---- command line ---------------------------------------------------------------------------------------------


def parse_args(argv):
    from resnet_bench.argparsing import Parser
    from resnet_bench.config import COMPILE_MODES, Bench

    d, shape = Bench(), BenchInput()  # the one place bench defaults live (resnet_bench.config, BenchInput)
    p = Parser(prog="resnet-bench bench", description="Throughput, memory and FLOPs of models, timed "
               "interleaved (repeat r of each before repeat r + 1 of any); the first is the ratios' reference.")
    p.add_argument("--models", required=True, help="comma-separated registered names, e.g. resnet18_v1,resnet18_v2")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per timed step")
    p.add_argument("--image-size", type=int, default=shape.image_size, help="input height = width, pixels")
    p.add_argument("--stem", help="imagenet or cifar (default: the model family's own)")
    p.add_argument("--width", type=int, help="base channels (default: the family's)")
    p.add_argument("--in-channels", type=int, default=shape.in_channels, help="input image channels")
    p.add_argument("--num-classes", type=int, default=shape.num_classes, help="classifier outputs")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda, cuda:N (default: cuda when this machine has a GPU, else cpu)")
    p.add_argument("--amp", default="none", help="none, bf16, fp16 (fp16: CUDA only; bf16 on CPU needs AMX-BF16 "
                                                 "or AVX512-BF16)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for inputs and weights")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compile time is recorded "
                                                          "apart, not timed)")
    p.add_argument("--compile-mode", default="default", help=f"torch.compile mode ({', '.join(COMPILE_MODES)})")
    p.add_argument("--tf32", action="store_true", help="TF32 float32 matmuls and convolutions (CUDA)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed steps before measuring (at least 1 runs)")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed repeats; the median and IQR are over these")
    p.add_argument("--steps-per-repeat", type=int, default=d.steps_per_repeat, help="steps timed together per repeat")
    p.add_argument("--cv-max", type=float, default=d.cv_max,
                   help="re-measure while a model's throughput CV (sd / mean over repeats) exceeds this")
    p.add_argument("--remeasure", type=int, default=d.remeasure,
                   help="at most this many re-measurements; still above --cv-max: marked unstable")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads; default: torch's); recorded")
    p.add_argument("--numeric-pin", help="measure under this deterministic CPU pin, as such cells train: "
                   "portable or host (resnet_bench.env.NUMERIC_PINS; default: none); recorded")
    p.add_argument("--out", default="bench.csv", help="CSV file written with one row per model (a file, "
                   "replaced only if an earlier bench wrote it)")
    p.add_argument("--json", action="store_true", help="print the table as one JSON document (full precision) "
                   "instead of text; progress stays on stderr")
    p.add_renamed("--batch", "--batch-size")
    p.add_renamed("--img", "--image-size")
    return p.parse_args(argv)


class BenchInput(BaseModel):
    """Input shape flags of `resnet-bench bench`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    image_size: int = Field(32, ge=1, le=4096)  # pixels, height = width
    in_channels: int = Field(3, ge=1, le=64)
    num_classes: int = Field(10, ge=1, le=1_000_000)


def check_args(args) -> list[str]:
    """Every flag through the schema (resnet_bench.config); all problems, one line each."""
    from resnet_bench import config as cfg
    from resnet_bench.models import available_models
    from resnet_bench.outputs import OutputError

    problems: list[str] = []
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    valid = available_models()
    bad = [n for n in names if n not in valid]
    if bad or not names:
        problems.append(f"--models: unknown model(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                        f"valid: {', '.join(valid)}")
    kind = "cuda" if re.fullmatch(r"cuda(:[0-9]+)?", args.device) else args.device  # cuda:N: a GPU of this machine
    checks = [
        (cfg.Bench, {"batch_size": args.batch_size, "warmup": args.warmup, "repeats": args.repeats,
                     "steps_per_repeat": args.steps_per_repeat, "cv_max": args.cv_max, "remeasure": args.remeasure},
         {"batch_size": "--batch-size", "warmup": "--warmup", "repeats": "--repeats",
          "steps_per_repeat": "--steps-per-repeat", "cv_max": "--cv-max", "remeasure": "--remeasure"}),
        (cfg.Arch, {"stem": args.stem, "width": args.width}, {"stem": "--stem", "width": "--width"}),
        (cfg.Runtime, {"device": kind, "amp": args.amp, "threads": args.threads, "compile_mode": args.compile_mode,
                       "numeric_pin": args.numeric_pin},
         {"device": "--device", "amp": "--amp", "threads": "--threads", "compile_mode": "--compile-mode",
          "numeric_pin": "--numeric-pin"}),
        (BenchInput, {"image_size": args.image_size, "in_channels": args.in_channels, "num_classes": args.num_classes},
         {"image_size": "--image-size", "in_channels": "--in-channels", "num_classes": "--num-classes"}),
    ]
    for model, values, flags in checks:
        try:
            cfg.validate_flags(model, values, flags)
        except cfg.ConfigError as err:
            problems += err.problems
    if kind == "cuda":
        problem = rt.local_device_problem(args.device)
        if problem:
            problems.append(f"--device: {problem}; valid here: cpu")
    elif kind == "cpu":
        if args.amp == "fp16":
            problems.append("--amp: 'fp16' needs --device cuda; valid on cpu: none, bf16")
        elif rt.cpu_bf16_problem("cpu", args.amp):
            problems.append(f"--amp: {rt.cpu_bf16_problem('cpu', args.amp)}")
        if args.tf32:
            problems.append("--tf32 needs --device cuda (TF32 is a GPU tensor-core format)")
    if args.numeric_pin and kind != "cpu":
        problems.append(f"--numeric-pin: {args.numeric_pin!r} pins CPU kernels; it needs --device cpu")
    if args.compile_mode != "default" and not args.compile:
        problems.append(f"--compile-mode: {args.compile_mode!r} needs --compile")
    try:
        args.out_file = output_file(args.out).prepare()  # a file; writable before any measurement
    except OutputError as err:
        problems.append(str(err))
    return problems


def output_file(path):
    """`--out`: a CSV file; an existing one is replaced only if it is a bench CSV (its header says so)."""
    from resnet_bench.outputs import OutputFile, csv_header_is

    return OutputFile(path, writer="bench", flag="--out", ours=lambda p: csv_header_is(
        p, lambda cols: cols[:1] == ["model"] and "timed_region_train" in cols))


def _bench_all(names: list[str], args, options: dict) -> dict[str, dict]:
    from resnet_bench.models import build_model

    def builder(name):
        return lambda: build_model(name, num_classes=args.num_classes, in_channels=args.in_channels, **options)

    return benchmark_models(
        {name: builder(name) for name in names}, batch_size=args.batch_size, img_size=args.image_size,
        in_channels=args.in_channels, num_classes=args.num_classes, device=args.device, amp=args.amp,
        channels_last=args.channels_last, compile=args.compile, compile_mode=args.compile_mode, tf32=args.tf32,
        warmup=args.warmup, repeats=args.repeats, steps_per_repeat=args.steps_per_repeat, cv_max=args.cv_max,
        remeasure=args.remeasure)


def main(argv=None) -> int:
    import pandas as pd

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
    from resnet_bench.progress import Progress

    print(f"[bench] {', '.join(names)}, interleaved ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        # measured together (interleaved): the count moves once, when the set is done
        with Progress(label="bench", total=len(names), unit="models") as bar:
            recs = _bench_all(names, args, options)
            bar.update(len(names), note="interleaved set measured")
    except (RuntimeError, ValueError) as err:  # e.g. BatchNorm on one value per channel (--batch-size 1 --image-size 1)
        print(f"error: --models {args.models}: {type(err).__name__}: {str(err).splitlines()[0][:300]}",
              file=sys.stderr)
        return 1
    wall_s = time.perf_counter() - t0
    rows = [{"model": name, **options, **rec, "wall_s": wall_s, "git_commit": env["git_commit"],
             **{f"hw_{k}": v for k, v in env["hardware"].items()},
             **{f"version_{k}": v for k, v in env["versions"].items()}} for name, rec in recs.items()]

    numeric = numeric_environment()  # after computing: the settings that were in effect
    for row in rows:
        row.update({k: numeric[k] for k in ("numeric_pin", "aten_cpu_capability", "mkl_cbwr_branch",
                                            "onednn_enabled")})
    df = pd.DataFrame(rows)
    from resnet_bench.outputs import guard_frame

    with args.out_file.file() as tmp:
        guard_frame(df).to_csv(tmp, index=False)
    for row in rows:
        load = (f"load average {row['train_loadavg_1m_before']:.2f} -> {row['train_loadavg_1m_after']:.2f}"
                if row["train_loadavg_1m_before"] is not None else "load average unknown")
        competing = row["train_competing_cpu_frac"]
        print(f"[bench] {row['model']}: train CV {row['train_img_per_s_cv']:.3f}, inference CV "
              f"{row['infer_img_per_s_cv']:.3f} ({row['train_attempts']} + {row['infer_attempts']} attempt(s)); "
              f"{load}, other processes {'?' if competing is None else f'{100 * competing:.0f} %'} of the CPUs"
              + (f"; UNSTABLE: a CV stayed above --cv-max {args.cv_max}" if row["unstable"] else ""),
              file=sys.stderr)
    if args.json:  # every column of the CSV, full precision
        from resnet_bench.console import print_json

        print_json({"csv": str(args.out_file.path), "rows": df.to_dict(orient="records")})
        return 0
    from resnet_bench import console as c

    ratios = {col: c.sig for col in ("train_ratio", "train_ratio_lo", "train_ratio_hi", "infer_ratio") if col in df}
    print(c.table(df.to_dict(orient="records"), {
        "model": str, "batch_size": c.count, "params": c.count, "fwd_gflops": c.sig,
        "train_img_per_s": c.img_per_s, "train_img_per_s_iqr": c.img_per_s, "train_img_per_s_cv": c.sig,
        "infer_img_per_s": c.img_per_s, "infer_img_per_s_cv": c.sig, "unstable": str,
        "achieved_tflop_per_s": c.sig, "peak_mem_bytes": c.mib, "saved_activation_bytes": c.mib,
        "compile_graphs": c.count, **ratios}))
    hw = env["hardware"]
    print(f"\n{hw['gpu_name'] or hw['cpu_model']} ({args.device}), torch threads {hw['torch_threads']}, "
          f"torch {env['versions']['torch']}, numeric pin {numeric['numeric_pin']}, commit {env['git_commit'][:12]}; "
          f"train region: {TRAIN_REGION}; CSV (full precision): {args.out_file.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
