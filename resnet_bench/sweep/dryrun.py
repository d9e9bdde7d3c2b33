"""What `sweep --dry-run` prints beyond the cell list: the compute plan (resnet_bench.sweep.costplan) and
the statistical power of the grid's seeds (resnet_bench.power) against the experiment's `target:`."""

from __future__ import annotations

from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench import power
from resnet_bench.sweep import costplan, estimate
from resnet_bench.sweep.records import RecordError, read_record_if_any

RECORD_BYTES_FALLBACK = 24 * 1024  # a cell record of a few epochs (env, provenance, epochs): ~10-30 KiB


def _records(cells_dir: Path | None) -> list:
    """Every readable record in cells/ (the current grid's and earlier ones: all are throughput evidence)."""
    out = []
    for path in sorted(cells_dir.glob("*.json")) if cells_dir and cells_dir.is_dir() else []:
        try:
            rec = read_record_if_any(path)
        except RecordError:
            continue
        if rec is not None:
            out.append(rec)
    return out


def _hardware(rec) -> str:
    """The record's device kind: its GPU on CUDA, else its CPU model."""
    env = rec.env.model_dump(mode="json") if rec.env is not None else {}
    hw = env.get("hardware") or {}
    return str((hw.get("gpu_name") if rec.config.runtime.device == "cuda" else hw.get("cpu_model")) or "")


def _checkpoint_bytes(sizes: dict):
    """Weights + SGD momentum in float32 (a checkpoint also holds the BN buffers and scaler: a few KiB)."""
    from resnet_bench.models import build_model

    cache: dict = {}

    def nbytes(cell) -> int:
        key = (cell.model, cell.unit, cell.dataset, cell.arch.model_dump_json())
        if key not in cache:
            import torch

            a, d = cell.arch, sizes[cell.dataset]
            opts = {"stem": a.stem, "unit": cell.unit, "variant": a.variant, "shortcut": a.shortcut,
                    "bottleneck_stride": a.bottleneck_stride, **({"width": a.width} if a.width else {})}
            with torch.device("meta"):
                net = build_model(cell.model, num_classes=d.num_classes, in_channels=d.channels, **opts)
            cache[key] = 2 * 4 * sum(p.numel() for p in net.parameters())
        return cache[key]
    return nbytes


def plan_lines(exp: cfg.Experiment, to_train: list[cfg.Cell], n_done: int, sizes: dict,
               cells_dir: Path | None, concurrency: int) -> list[str]:
    """The compute plan of the cells to train, from records in `cells_dir` where they match this machine."""
    from resnet_bench.env import hardware

    rt = exp.resolved_runtime()
    hw = hardware(rt.device if rt.device == "cpu" else None)
    here = str((hw.get("gpu_name") if rt.device == "cuda" else hw.get("cpu_model")) or "")
    records = _records(cells_dir)
    sizes_of = [p.stat().st_size for p in sorted(cells_dir.glob("*.json"))] if records else []
    record_bytes = sorted(sizes_of)[len(sizes_of) // 2] if sizes_of else RECORD_BYTES_FALLBACK
    res = exp.resources
    rate = (estimate.reference_rate() if res.gpus_per_trial > 0 else
            costplan.cpu_rate(rt.threads or max(1, int(res.cpus_per_trial)), rt.numeric_pin))
    plan = costplan.compute_plan(
        to_train, n_train={ds: s.train for ds, s in sizes.items()}, hardware=here,
        recorded=costplan.recorded_rates(records, _hardware), flops_of=lambda c: estimate.cell_flops(c, sizes[c.dataset]),
        rate=rate, concurrency=concurrency, cpus_per_trial=res.cpus_per_trial, gpus_per_trial=res.gpus_per_trial,
        record_bytes=record_bytes, checkpoint_bytes=_checkpoint_bytes(sizes))
    return costplan.format_plan(plan, n_done)


def power_lines(exp: cfg.Experiment, done: list[cfg.Cell], cells_dir: Path | None) -> list[str]:
    """Per depth and dataset of the grid: seeds in the grid, and the seeds needed to resolve the target
    (and the observed difference, once cells are done) with the experiment's alpha and power."""
    t = exp.target
    accs: dict[tuple, dict] = {}
    for c in done:
        rec = read_record_if_any(cells_dir / f"{c.cell_id}.json") if cells_dir else None
        if rec and rec.status == "ok" and rec.metrics.test_acc is not None and c.unit in ("original", "full_preact"):
            accs.setdefault((c.dataset, c.depth, c.seed), {})[c.version] = rec.metrics.test_acc
    lines = []
    versions = set(exp.grid.versions or [])
    if not {"v1", "v2"} <= versions:
        return lines
    n_grid = len(exp.grid.seeds)
    for ds in exp.grid.datasets:
        for depth in exp.grid.depths or []:
            pairs = [v for (d, dep, _), v in sorted(accs.items()) if d == ds and dep == depth and len(v) == 2]
            diffs = [100 * (v["v2"] - v["v1"]) for v in pairs]
            row = power.power_row(diffs, acc_v1=0.0, acc_v2=0.0, n_test=None, target_pp=t.effect_pp,
                                  seed_sd_pp=t.seed_sd_pp, alpha=t.alpha, power=t.power)
            if not t.effect_pp:
                need = "no target.effect_pp stated"
            elif row["planning_sd_pp"] is None:
                need = f"target {t.effect_pp:g} pp needs a paired sd: state target.seed_sd_pp or run two seeds first"
            else:
                need = (f"target {t.effect_pp:g} pp needs {row['seeds_for_target']} seed pairs"
                        if row["seeds_for_target"] else f"target {t.effect_pp:g} pp needs over 100,000 seed pairs")
            seen = (f"; {len(diffs)} pair(s) done, observed {row['observed_pp']:+.2f} pp"
                    + (f", paired sd {row['paired_sd_pp']:.2f} pp" if row["paired_sd_pp"] else "")
                    if diffs else "")
            plan = (f", planning sd {row['planning_sd_pp']:.2f} pp: {row['sd_basis']}" if row["planning_sd_pp"]
                    else "")
            lines.append(f"[sweep] power: {ds} depth {depth}: {n_grid} seed(s) in the grid; {need} (paired t, "
                         f"alpha {t.alpha:g}, power {t.power:g}{plan}){seen}")
    return lines
