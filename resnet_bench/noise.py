"""Measurements that know their own noise: interleaved repeats, spread, the machine's load, ratios.

A bench compares models (v1 and v2 of one depth) by timing them interleaved: repeat r of every model
runs before repeat r + 1 of any, in an order rotated each repeat (A B, B A, ...), so each repeat pair saw the same machine state and the
ratio of a pair cancels what the machine did to both. Each model's per-repeat rates give a median,
an inter-quartile range and a coefficient of variation (CV = sample standard deviation / mean). A
measurement whose largest CV exceeds `cv_max` is measured again, up to `remeasure` times; the least
noisy attempt is kept and, when none passed, marked unstable. The load average and the CPU time other
processes used (system-wide busy time from /proc/stat minus this process's own CPU time) are read
before and after each attempt.

The ratio B/A of throughputs: the geometric mean of the per-pair ratios with a t-interval of the
log-ratios over the repeat pairs (n - 1 degrees of freedom), exponentiated.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from typing import Callable

CI_LEVEL = 0.95


def spread(values: list[float]) -> dict:
    """Median, IQR (inclusive quartiles), CV (sample sd / mean; 0 for one value), min, max, n."""
    vs = sorted(values)
    q = statistics.quantiles(vs, n=4, method="inclusive") if len(vs) > 1 else [vs[0]] * 3
    cv = statistics.stdev(vs) / statistics.fmean(vs) if len(vs) > 1 else 0.0
    return {"median": statistics.median(vs), "iqr": q[2] - q[0], "cv": cv, "min": vs[0], "max": vs[-1],
            "n": len(vs)}


def _proc_stat_busy_s() -> float | None:
    """Seconds all CPUs spent not idle since boot (/proc/stat `cpu` line: every field but idle and iowait;
    guest time is already inside user)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    jiffies = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(jiffies) - jiffies[3] - jiffies[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return ru.ru_utime + ru.ru_stime


def load_snapshot() -> dict:
    """What the machine is doing now: 1-minute load average, system busy CPU-seconds, own CPU-seconds."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = None
    return {"loadavg_1m": load1, "busy_cpu_s": _proc_stat_busy_s(), "self_cpu_s": _self_cpu_s(),
            "wall": time.monotonic()}


def load_between(before: dict, after: dict) -> dict:
    """Load around a measurement: load averages at both ends, and the CPU-seconds other processes used
    during it (`competing_cpu_s`) with that as a fraction of the machine's CPUs over the wall time."""
    wall_s = after["wall"] - before["wall"]
    competing = None
    if before["busy_cpu_s"] is not None and after["busy_cpu_s"] is not None:
        # Clock-tick rounding of /proc/stat can make a quiet machine read slightly below zero.
        competing = max(0.0, (after["busy_cpu_s"] - before["busy_cpu_s"]) - (after["self_cpu_s"] - before["self_cpu_s"]))
    ncpu = os.cpu_count() or 1
    return {"loadavg_1m_before": before["loadavg_1m"], "loadavg_1m_after": after["loadavg_1m"],
            "competing_cpu_s": competing, "wall_s": wall_s,
            "competing_cpu_frac": None if competing is None or wall_s <= 0 else min(1.0, competing / (wall_s * ncpu))}


def time_interleaved(steps: list[Callable[[], None]], *, repeats: int, steps_per_repeat: int,
                     timer: Callable[[Callable[[], None], int], float]) -> list[list[float]]:
    """Seconds per step of each repeat of each callable, interleaved and counterbalanced (A B, B A,
    A B, ...: repeat r starts at callable r mod n), so that no callable always runs first or always
    after the same one: out[i][r] is callable i's repeat r. `timer(step, n)` times n calls of step,
    synchronised (runtime.DeviceTimer)."""
    out: list[list[float]] = [[] for _ in steps]
    for r in range(repeats):
        for k in range(len(steps)):
            i = (r + k) % len(steps)
            out[i].append(timer(steps[i], steps_per_repeat) / steps_per_repeat)
    return out


def stable_interleaved(steps: list[Callable[[], None]], *, batch_size: int, repeats: int, steps_per_repeat: int,
                       cv_max: float, remeasure: int, timer) -> dict:
    """`time_interleaved` re-run while any callable's throughput CV exceeds `cv_max`, at most `remeasure`
    more times. Returns the least noisy attempt's seconds per step (`secs`), each attempt's largest CV and
    load, the number of attempts and `unstable` (no attempt within `cv_max`)."""
    best, attempts = None, []
    for _ in range(remeasure + 1):
        before = load_snapshot()
        secs = time_interleaved(steps, repeats=repeats, steps_per_repeat=steps_per_repeat, timer=timer)
        load = load_between(before, load_snapshot())
        worst_cv = max(spread([batch_size / s for s in per])["cv"] for per in secs)
        attempts.append({"max_cv": worst_cv, **load})
        if best is None or worst_cv < best[0]:
            best = (worst_cv, secs, load)
        if worst_cv <= cv_max:
            break
    return {"secs": best[1], "max_cv": best[0], "load": best[2], "attempts": attempts,
            "n_attempts": len(attempts), "unstable": best[0] > cv_max, "cv_max": cv_max}


def ratio_interval(a: list[float], b: list[float], level: float = CI_LEVEL) -> dict:
    """b / a from paired positive values (repeat r of each): geometric mean of the pair ratios and a
    t-interval of the log-ratios (n - 1 degrees of freedom), exponentiated. One pair: no interval."""
    from scipy import stats

    if len(a) != len(b) or not a:
        raise ValueError(f"ratio_interval needs equally many paired values, got {len(a)} and {len(b)}")
    logs = [math.log(y / x) for x, y in zip(a, b)]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return {"ratio": math.exp(mean), "lo": None, "hi": None, "n_pairs": len(logs), "level": level}
    half = stats.t.ppf(0.5 + level / 2, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return {"ratio": math.exp(mean), "lo": math.exp(mean - half), "hi": math.exp(mean + half),
            "n_pairs": len(logs), "level": level}
