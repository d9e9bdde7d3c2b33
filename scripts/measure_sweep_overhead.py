"""Cost of the sweep harness itself: the tiny grid via Ray Tune vs a plain Python loop.

Both run the same cells (same configs, same prepared data). The plain loop
calls `train_cell` in one process, one cell after another, and writes the
same result files. The sweep is `python -m resnet_bench.sweep` as `dvc repro`
runs it: Ray start, worker processes, per-epoch reports, atomic result writes,
Ray shutdown. Per-cell overhead = (sweep wall - loop wall) / cells, with the
sweep at max_concurrent=1 so both run cells serially on one core.

    python scripts/measure_sweep_overhead.py --cells 6 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from conftest import TINY_EXPERIMENT, make_project, venv_env  # noqa: E402
from resnet_bench import config as cfg  # noqa: E402
from resnet_bench.data import prepare as data  # noqa: E402
from resnet_bench.env import hardware  # noqa: E402
from resnet_bench.env import code_fingerprint  # noqa: E402
from resnet_bench.sweep.records import parse_record  # noqa: E402
from resnet_bench.sweep.results_dir import write_record  # noqa: E402
from resnet_bench.train import train_cell  # noqa: E402


def loop_run(cells, prepared: Path, out: Path) -> float:
    t0 = time.perf_counter()
    for cell in cells:
        record = train_cell(cell, prepared)
        write_record(out, parse_record(record, "train_cell"))  # as the sweep's driver writes it
    return time.perf_counter() - t0


def sweep_run(project: Path, prepared: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared)],
                          cwd=project, env=venv_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return wall


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=6, help="seeds x {v1, v2}; must be even")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    seeds = list(range(args.cells // 2))
    exp = {**TINY_EXPERIMENT, "grid": {**TINY_EXPERIMENT["grid"], "seeds": seeds},
           "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data.main(["--name", "digits", "--out", str(tmp / "prepared" / "digits")])
        resolved = cfg.resolve_layers("tiny", [cfg.Layer("tiny", exp)], cfg.Params())
        digits = cfg.data_identity(tmp / "prepared" / "digits")
        cells = cfg.expand_grid(resolved.experiment, data={"digits": digits}, code_fingerprint=code_fingerprint())
        loops, sweeps = [], []
        for r in range(args.repeats):
            out = tmp / f"loop{r}"
            out.mkdir()
            loops.append(loop_run(cells, tmp / "prepared", out))
            project = make_project(tmp / f"sweep{r}", exp)
            sweeps.append(sweep_run(project, tmp / "prepared"))
    n = len(cells)
    loop_med, sweep_med = statistics.median(loops), statistics.median(sweeps)
    per_cell = (sweep_med - loop_med) / n
    hw = hardware()
    print(json.dumps({"cells": n, "loop_s": loops, "sweep_s": sweeps}, indent=1))
    print(f"\n| cells | plain loop, s (median of {args.repeats}) | sweep, s (median) | overhead per cell, s |")
    print("| --- | --- | --- | --- |")
    print(f"| {n} | {loop_med:.1f} (min {min(loops):.1f}, max {max(loops):.1f}) "
          f"| {sweep_med:.1f} (min {min(sweeps):.1f}, max {max(sweeps):.1f}) | {per_cell:.2f} |")
    print(f"\nCPU: {hw['cpu_model']}, {hw['cpu_count']} cores; torch threads per cell: 1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
