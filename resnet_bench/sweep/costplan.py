"""A compute plan before anything trains (`sweep --dry-run`): device-hours per model and in total, the
disk for results and models, and the wall time at the configured concurrency.

One function, `compute_plan`, with every input explicit. A cell's duration comes, in this order, from

1. recorded throughput on this kind of device: earlier records of the same architecture, dataset,
   batch, device, threads, numeric pin and hardware (CPU model or GPU name), as seconds per train
   image per epoch (`train_time_s / (epochs_completed x n_train)`, evaluation included), times the
   new cell's epochs x train images;
2. else its FLOPs (`flops_of(cell)`: training and evaluation) at a stated device rate (FLOP/s).

Device-hours are wall hours x the CPUs (CPU runs) or GPUs a trial holds. The wall time schedules the
cells longest first onto `concurrency` slots (a list-scheduling makespan; Ray Tune starts trials in grid
order, so the real one can be longer by up to one cell). Disk: one record per cell (`record_bytes`)
and, while training, the newest checkpoint of each running trial (`checkpoint_bytes`, written beside the
previous one before it is dropped: twice per slot); the models' own disk estimate can be joined here.
"""

from __future__ import annotations

import heapq
import json
import statistics
from typing import Callable


# The stated CPU rate: the committed cifar10-cpu run (AMD EPYC / Xeon VM, one thread per trial, host-speed
# pin) trained ResNet-20 (0.081 GFLOP forward per image) at 141 images/s in its steady loop, i.e.
# 141 x 3 x 0.081 = 34 GFLOP/s of training work per thread; the `portable` pin takes about 3x as long
# (docs/benchmarks/numeric_pin.md).
CPU_THREAD_FLOPS_PER_S = 34e9
PORTABLE_PIN_SLOWDOWN = 3.0


def cpu_rate(threads: int, numeric_pin: str | None):
    """The stated CPU training rate for `threads` threads under a numeric pin (estimate.DeviceRate)."""
    from resnet_bench.sweep.estimate import DeviceRate

    slow = PORTABLE_PIN_SLOWDOWN if numeric_pin == "portable" else 1.0
    return DeviceRate(f"{threads} CPU thread(s), numeric pin {numeric_pin}",
                      CPU_THREAD_FLOPS_PER_S * threads / slow,
                      "34 GFLOP/s per thread: ResNet-20 at 141 img/s in the committed cifar10-cpu run"
                      + ("; / 3 under the portable pin" if slow > 1 else ""))


def match_key(cell, hardware: str) -> str:
    """What makes recorded throughput comparable: architecture, dataset, batch, runtime and hardware."""
    rt = cell.runtime
    return json.dumps([cell.model, cell.unit, cell.arch.model_dump(mode="json"), cell.dataset, cell.recipe.batch_size,
                       rt.device, rt.threads, rt.numeric_pin, rt.amp, rt.compile, rt.channels_last, hardware])


def recorded_rates(records, hardware_of: Callable[[object], str]) -> dict[str, dict]:
    """{match key: {"s_per_image_epoch": median over records, "n": records}} from ok records with a
    training time (`records`: resnet_bench.sweep.records.CellRecord)."""
    per: dict[str, list[float]] = {}
    for rec in records:
        m, counts = rec.metrics, rec.dataset_meta.counts if rec.dataset_meta else None
        if rec.status != "ok" or not m.train_time_s or not m.epochs_completed or not counts or not counts.train:
            continue
        from resnet_bench import config as cfg

        cell = cfg.Cell.model_validate(rec.config.model_dump(mode="json"))
        per.setdefault(match_key(cell, hardware_of(rec)), []).append(
            m.train_time_s / (m.epochs_completed * counts.train))
    return {k: {"s_per_image_epoch": statistics.median(v), "n": len(v)} for k, v in per.items()}


def makespan_s(durations: list[float], slots: int) -> float:
    """Longest-first list scheduling of `durations` onto `slots` parallel slots: the finishing time."""
    heap = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(heap, heap[0] + d)
    return max(heap)


def compute_plan(cells, *, n_train: dict[str, int], hardware: str, recorded: dict[str, dict],
                 flops_of: Callable[[object], float], rate, concurrency: int, cpus_per_trial: float,
                 gpus_per_trial: float, record_bytes: int, checkpoint_bytes: Callable[[object], int]) -> dict:
    """The plan of `cells` (those to train). `n_train`: train images per dataset (a dataset absent is
    left out, and named). `rate`: resnet_bench.sweep.estimate.DeviceRate. Returns {"rows": per model and dataset, "total_h", "device_hours", "unit",
    "wall_h", "results_bytes", "models_peak_bytes", "missing", "rate", "concurrency"}."""
    on_gpu = gpus_per_trial > 0
    unit, per_trial = ("GPU-hours", gpus_per_trial) if on_gpu else ("CPU-hours", cpus_per_trial)
    rows: dict[str, dict] = {}
    durations, ckpt, missing = [], [], sorted({c.dataset for c in cells if c.dataset not in n_train})
    for c in cells:
        if c.dataset not in n_train:
            continue
        seen = recorded.get(match_key(c, hardware))
        if seen:
            secs = seen["s_per_image_epoch"] * c.recipe.epochs * n_train[c.dataset]
            source = f"recorded here ({seen['n']} record(s))"
        else:
            secs = flops_of(c) / rate.train_flops_per_s
            source = f"FLOPs at {rate.train_flops_per_s / 1e9:,.0f} GFLOP/s"
        durations.append(secs)
        ckpt.append(checkpoint_bytes(c))
        row = rows.setdefault(f"{c.model}/{c.unit}/{c.dataset}", {"label": f"{c.model} ({c.unit}) on {c.dataset}",
                                                                   "cells": 0, "wall_h": 0.0, "source": source})
        row["cells"] += 1
        row["wall_h"] += secs / 3600
    for row in rows.values():
        row["device_hours"] = row["wall_h"] * per_trial
    total_h = sum(durations) / 3600
    slots = max(1, concurrency)
    return {"rows": list(rows.values()), "total_h": total_h, "device_hours": total_h * per_trial, "unit": unit,
            "wall_h": makespan_s(durations, slots) / 3600, "concurrency": slots,
            "results_bytes": record_bytes * len(durations),
            "models_peak_bytes": 2 * sum(sorted(ckpt, reverse=True)[:slots]), "missing": missing, "rate": rate}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""


def _hours(h: float) -> str:
    return f"{h:,.2f}" if h >= 1 else f"{h:.3f} ({h * 60:,.1f} min)"


def format_plan(plan: dict, n_done: int) -> list[str]:
    """Console lines: per model, then the totals, the wall time at the concurrency and the disk."""
    unit = plan["unit"]
    lines = [f"[sweep] compute plan ({n_done} cell(s) already done are not counted):"]
    for r in plan["rows"]:
        lines.append(f"[sweep]   {r['label']}: {r['cells']} cell(s), {_hours(r['device_hours'])} {unit} "
                     f"({r['source']})")
    rate = plan["rate"]
    lines.append(f"[sweep]   total: {_hours(plan['device_hours'])} {unit}; wall {_hours(plan['wall_h'])} h at "
                 f"{plan['concurrency']} trial(s) at a time; disk: results {_size(plan['results_bytes'])}, "
                 f"models up to {_size(plan['models_peak_bytes'])} of checkpoints while training")
    if any("FLOPs" in r["source"] for r in plan["rows"]):
        lines.append(f"[sweep]   stated rate: {rate.name} ({rate.source}); throughput assumed to follow FLOPs")
    if plan["missing"]:
        lines.append(f"[sweep]   no size known for {', '.join(plan['missing'])} (not prepared yet): left out")
    return lines
