"""What the deterministic CPU pin costs: train-step throughput under each pin variant, interleaved.

Variants (each a fresh process: the pin's variables are read once per process, before computing):
  none      no pin: torch's defaults (native ISA, oneDNN convolutions, MKL outside its CNR mode)
  old       the former pin: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2
  portable  runtime.numeric_pin portable (resnet_bench.env.NUMERIC_PINS; the default)
  host      runtime.numeric_pin host
  portable+onednn  portable's variables with oneDNN left on (diagnostic: what the oneDNN switch costs)
Workloads: resnet20_v1 and resnet18_v1 at the smoke setting (digits: 1 x 8 x 8, width 8, CIFAR stem,
batch 64) and the cifar10-cpu setting (3 x 32 x 32, batch 128; ResNet-20 the paper variant, CIFAR stem;
ResNet-18 the ImageNet stem, as in the earlier measurement), 1 thread as those experiments' trials run.
Timed region: resnet_bench.bench.measure_throughput's train step (forward + cross-entropy + backward +
SGD step on a batch in memory), median of `--repeats` repeats of 2 steps after `--warmup` steps.
Rounds run every variant once, in an order rotated each round; a variant's ratio to `none` is taken
within each round (adjacent processes), so drift in machine load hits both; the table gives the median
and range over rounds.
`--paired` measures what turning oneDNN off costs on its own, in one process started with the portable
pin's variables: train steps alternate oneDNN on / off (the order flips every pair), and the ratio of
each adjacent pair is taken, so load drift cancels; median and inter-quartile range over the pairs.

    .venv/bin/python scripts/bench_numeric_pin.py --rounds 5 --out numeric_pin.json
    .venv/bin/python scripts/bench_numeric_pin.py --paired 20 --out numeric_pin_paired.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from resnet_bench.env import NUMERIC_ENV_VARS, pinned_env  # noqa: E402

OLD_PIN = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
VARIANTS = {"none": ({}, None), "old": (OLD_PIN, None), "portable": (pinned_env(1, "portable"), "portable"),
            "host": (pinned_env(1, "host"), "host"), "portable+onednn": (pinned_env(1, "portable"), None)}
# (label, model, arch, input channels, image px, batch)
WORKLOADS = [
    ("smoke", "resnet20_v1", {"stem": "cifar", "width": 8}, 1, 8, 64),
    ("smoke", "resnet18_v1", {"stem": "cifar", "width": 8}, 1, 8, 64),
    ("cifar10-cpu", "resnet20_v1", {"stem": "cifar", "variant": "paper"}, 3, 32, 128),
    ("cifar10-cpu", "resnet18_v1", {"stem": "imagenet"}, 3, 32, 128),
]


def child(variant: str, warmup: int, repeats: int) -> dict:
    """Measure every workload in this process under `variant` (its variables came with the process)."""
    import torch

    from resnet_bench import config as cfg
    from resnet_bench.bench import measure_throughput
    from resnet_bench.env import numeric_environment, set_torch_numeric_flags
    from resnet_bench.train import build_cell_model

    set_torch_numeric_flags(VARIANTS[variant][1])
    torch.set_num_threads(1)
    out = {}
    for label, model, arch, channels, px, batch in WORKLOADS:
        layer = cfg.Layer("bench", {"grid": {"models": [model]}, "arch": arch})
        (cell,) = cfg.expand_grid(cfg.resolve_layers("b", [layer], cfg.Params(), check_datasets=False).experiment)
        torch.manual_seed(0)
        net = build_cell_model(cell, num_classes=10, in_channels=channels)
        r = measure_throughput(net, batch_size=batch, img_size=px, in_channels=channels, num_classes=10,
                               device="cpu", warmup=warmup, repeats=repeats, steps_per_repeat=2)
        out[f"{label} {model}"] = {k: r[k] for k in ("train_img_per_s", "train_img_per_s_iqr", "infer_img_per_s")}
    num = numeric_environment()
    out["numeric"] = {k: num[k] for k in ("numeric_pin", "aten_cpu_capability", "mkl_cbwr_branch", "onednn_enabled")}
    return out


def child_paired(pairs: int, warmup: int) -> dict:
    """oneDNN on vs off, step by step, under the portable pin's variables (set on this process)."""
    import time

    import torch

    from resnet_bench import config as cfg
    from resnet_bench.bench import _inputs, _train_step
    from resnet_bench.env import numeric_environment, set_torch_numeric_flags
    from resnet_bench.train import build_cell_model

    torch.set_num_threads(1)
    out = {}
    for label, model, arch, channels, px, batch in WORKLOADS:
        layer = cfg.Layer("bench", {"grid": {"models": [model]}, "arch": arch})
        (cell,) = cfg.expand_grid(cfg.resolve_layers("b", [layer], cfg.Params(), check_datasets=False).experiment)
        torch.manual_seed(0)
        net = build_cell_model(cell, num_classes=10, in_channels=channels).train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        x, y = _inputs(batch, channels, px, 10, torch.device("cpu"), False)

        def step(onednn: bool) -> float:
            set_torch_numeric_flags(None if onednn else "portable")
            t0 = time.perf_counter()
            _train_step(net, opt, x, y, torch.device("cpu"), "none")
            return time.perf_counter() - t0

        for _ in range(warmup):
            step(True), step(False)
        ratios, on_s, off_s = [], [], []
        for i in range(pairs):
            first = i % 2 == 0  # oneDNN on first in even pairs, off first in odd ones
            a = step(first)
            b = step(not first)
            t_on, t_off = (a, b) if first else (b, a)
            on_s.append(t_on)
            off_s.append(t_off)
            ratios.append(t_on / t_off)  # throughput off / on
        q = statistics.quantiles(ratios, n=4)
        out[f"{label} {model}"] = {"off_over_on": statistics.median(ratios), "iqr": [q[0], q[2]],
                                   "on_img_per_s": batch / statistics.median(on_s),
                                   "off_img_per_s": batch / statistics.median(off_s), "pairs": pairs}
    num = numeric_environment()
    out["numeric"] = {k: num[k] for k in ("aten_cpu_capability", "mkl_cbwr_branch")}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default="numeric_pin.json")
    p.add_argument("--paired", type=int, help="pairs of oneDNN on/off steps per workload (see above)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = child_paired(args.paired, args.warmup) if args.child == "paired" else \
            child(args.child, args.warmup, args.repeats)
        print(json.dumps(result))
        return 0
    variants = args.variants.split(",")
    base = {k: v for k, v in os.environ.items() if k not in NUMERIC_ENV_VARS}
    base["OMP_NUM_THREADS"] = base["MKL_NUM_THREADS"] = "1"
    if args.paired:
        proc = subprocess.run([sys.executable, __file__, "--child", "paired", "--paired", str(args.paired),
                               "--warmup", str(args.warmup)], env={**base, **VARIANTS["portable"][0]},
                              capture_output=True, text=True, check=True)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        Path(args.out).write_text(json.dumps(got, indent=1))
        print("| workload | oneDNN on img/s | oneDNN off img/s | off / on, median of pairs (IQR) |")
        print("| --- | --- | --- | --- |")
        for key, r in got.items():
            if key != "numeric":
                print(f"| {key} | {r['on_img_per_s']:.0f} | {r['off_img_per_s']:.0f} | {r['off_over_on']:.2f} "
                      f"({r['iqr'][0]:.2f}-{r['iqr'][1]:.2f}) |")
        print(f"in effect: {got['numeric']}", file=sys.stderr)
        return 0
    rounds = []
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        got = {}
        for v in order:
            proc = subprocess.run([sys.executable, __file__, "--child", v, "--warmup", str(args.warmup),
                                   "--repeats", str(args.repeats)], env={**base, **VARIANTS[v][0]},
                                  capture_output=True, text=True, check=True)
            got[v] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"round {r + 1}: {v} " + ", ".join(f"{k} {m['train_img_per_s']:.0f}" for k, m in got[v].items()
                                                      if k != "numeric"), file=sys.stderr, flush=True)
        rounds.append(got)
    Path(args.out).write_text(json.dumps({"rounds": rounds, "workloads": WORKLOADS}, indent=1))
    print("| workload | " + " | ".join(f"{v} train img/s" for v in variants) + " | "
          + " | ".join(f"{v} / none" for v in variants if v != "none") + " |")
    print("| --- " * (1 + 2 * len(variants) - 1) + "|")
    for label, model, *_ in WORKLOADS:
        key = f"{label} {model}"
        cells = []
        for v in variants:
            xs = [rd[v][key]["train_img_per_s"] for rd in rounds]
            cells.append(f"{statistics.median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})")
        for v in variants:
            if v != "none":
                ratios = [rd[v][key]["train_img_per_s"] / rd["none"][key]["train_img_per_s"] for rd in rounds]
                cells.append(f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
        print(f"| {key} | " + " | ".join(cells) + " |")
    for v in variants:
        print(f"{v}: in effect {rounds[0][v]['numeric']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
