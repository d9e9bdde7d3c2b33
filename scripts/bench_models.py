"""Training-step time of our models against their references, on CPU.

Each `resnetX_v1` is timed against torchvision's `resnetX`, each `resnetX_v2` against timm's
`resnetv2_X`, with the same weights, input, batch and threads. One step is forward,
cross-entropy, backward (gradients set to None between steps). After warm-up the two
models alternate step by step (the order flips every repeat) so that drift in machine
load hits both alike. The table gives median and interquartile range (IQR) of the step
time per model, and the ratio ours / reference as the median over the repeats of the
ratio of the two adjacent steps (paired, so slow phases of the machine cancel), with
the IQR of those ratios as its spread. Target: ratio <= 1.02. The last column counts the
aten operators one step dispatches (ours / reference): equal counts mean the same kernels
run, so any timing difference is the machine's noise, not the model code.

    .venv/bin/python scripts/bench_models.py --batch-size 8 --image-size 64 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import timm
import torch
import torchvision
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from resnet_bench.models import build_model, convert_timm_resnetv2


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pair(depth: int, version: str) -> tuple[nn.Module, nn.Module, str]:
    """(ours, reference, reference name) with identical weights, in train mode."""
    ours = build_model(f"resnet{depth}_{version}", 1000)
    if version == "v1":
        ref_name = f"torchvision resnet{depth}"
        reference = getattr(torchvision.models, f"resnet{depth}")()
        ours.load_state_dict(reference.state_dict())
    else:
        ref_name = f"timm resnetv2_{depth}"
        reference = timm.create_model(f"resnetv2_{depth}", pretrained=False)
        ours.load_state_dict(convert_timm_resnetv2(reference.state_dict()))
    return ours.train(), reference.train(), ref_name


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def step_ops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """aten operators dispatched by one step (forward, loss, backward)."""
    with _OpCounter() as counter:
        step_seconds(model, x, y)
    return counter.count


def step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    return time.perf_counter() - start


def quartiles(values: list[float]) -> tuple[float, float]:
    """(median, interquartile range)."""
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q2, q3 - q1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=31)
    p.add_argument("--depths", type=int, nargs="+", default=[18, 34, 50, 101, 152])
    p.add_argument("--versions", nargs="+", default=["v1", "v2"], choices=["v1", "v2"])
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    y = torch.randint(0, 1000, (args.batch_size,))

    print(f"- command: `{' '.join(['.venv/bin/python', *sys.argv])}`")
    print(f"- CPU: {cpu_model()}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"timm {timm.__version__}; torch threads {torch.get_num_threads()}")
    print(f"- step = forward + cross-entropy + backward, train mode, batch {args.batch_size}, "
          f"{args.image_size}x{args.image_size}, fp32; {args.warmup} warm-up + {args.repeats} timed steps per model")
    print()
    print("| model | reference | ours ms: median (IQR) | reference ms: median (IQR) | ratio: median (IQR) "
          "| aten ops |")
    print("| --- | --- | --- | --- | --- | --- |")
    for depth in args.depths:
        for version in args.versions:
            ours, reference, ref_name = pair(depth, version)
            for _ in range(args.warmup):
                step_seconds(ours, x, y)
                step_seconds(reference, x, y)
            times: dict[str, list[float]] = {"ours": [], "ref": []}
            for r in range(args.repeats):
                order = ("ours", "ref") if r % 2 == 0 else ("ref", "ours")
                for who in order:
                    times[who].append(step_seconds(ours if who == "ours" else reference, x, y))
            (om, oi), (rm, ri) = quartiles(times["ours"]), quartiles(times["ref"])
            qm, qi = quartiles([o / r for o, r in zip(times["ours"], times["ref"])])
            print(f"| resnet{depth}_{version} | {ref_name} | {om * 1e3:.1f} ({oi * 1e3:.1f}) "
                  f"| {rm * 1e3:.1f} ({ri * 1e3:.1f}) | {qm:.3f} ({qi:.3f}) "
                  f"| {step_ops(ours, x, y)} / {step_ops(reference, x, y)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
