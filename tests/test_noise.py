"""Measurements that know their own noise: interleaved benches, instability, load, power."""

import math
import statistics
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn
from scipy import stats

from resnet_bench import bench, noise, power
from resnet_bench.models import build_model


def tiny():
    torch.manual_seed(0)
    return build_model("resnet20_v1", 10, width=4)


def test_spread_median_iqr_cv():
    s = noise.spread([4.0, 1.0, 3.0, 2.0, 5.0])
    assert s == {"median": 3.0, "iqr": 2.0, "cv": statistics.stdev([1, 2, 3, 4, 5]) / 3.0, "min": 1.0, "max": 5.0,
                 "n": 5}
    assert noise.spread([7.0])["cv"] == 0.0


def test_ratio_interval_is_the_t_interval_of_log_ratios():
    a, b = [100.0, 110.0, 90.0, 105.0], [120.0, 125.0, 112.0, 118.0]
    logs = [math.log(y / x) for x, y in zip(a, b)]
    mean, sem = statistics.fmean(logs), stats.sem(logs)
    lo, hi = stats.t.interval(0.95, len(logs) - 1, loc=mean, scale=sem)
    got = noise.ratio_interval(a, b)
    assert got["ratio"] == pytest.approx(math.exp(mean)) and got["n_pairs"] == 4
    assert (got["lo"], got["hi"]) == (pytest.approx(math.exp(lo)), pytest.approx(math.exp(hi)))
    with pytest.raises(ValueError, match="paired"):
        noise.ratio_interval([1.0], [1.0, 2.0])


def test_interleaved_bench_of_two_identical_models_has_a_ratio_interval_containing_one():
    """Same architecture, same weights: whatever the machine does, a paired ratio interval holds 1.
    The record's 95 % interval is recomputed from its own repeats; the check is at 99 % (and the record's
    interval at 95 % would make the test fail one run in twenty by chance alone)."""
    recs = bench.benchmark_models({"a": tiny, "b": tiny}, batch_size=4, img_size=8, warmup=2, repeats=10,
                                  steps_per_repeat=2, cv_max=10.0, remeasure=0)
    a, b = recs["a"], recs["b"]
    assert a["interleaved_with"] == ["b"] and b["ratio_reference"] == "a" and "train_ratio" not in a
    for kind in ("train", "infer"):
        ra, rb = a[f"{kind}_img_per_s_repeats"], b[f"{kind}_img_per_s_repeats"]
        assert len(ra) == len(rb) == 10
        same = noise.ratio_interval(ra, rb)
        assert (b[f"{kind}_ratio_lo"], b[f"{kind}_ratio"], b[f"{kind}_ratio_hi"]) == (same["lo"], same["ratio"],
                                                                                      same["hi"])
        wide = noise.ratio_interval(ra, rb, level=0.99)
        assert wide["lo"] <= 1.0 <= wide["hi"], (kind, wide)
    assert a["train_img_per_s_cv"] >= 0 and a["unstable"] is False  # cv_max 10: nothing is unstable


class Disturbed(nn.Module):
    """A model whose every other timed training step is preempted for 30 ms (a real pause in the timed
    region, as a competing process or a frequency drop makes one)."""

    def __init__(self):
        super().__init__()
        self.inner, self.calls = tiny(), 0

    def forward(self, x):
        if self.training and x.device.type != "meta":
            self.calls += 1
            if self.calls % 2:
                time.sleep(0.03)
        return self.inner(x)


def test_disturbed_measurement_is_remeasured_then_marked_unstable():
    recs = bench.benchmark_models({"calm": tiny, "disturbed": Disturbed}, batch_size=4, img_size=8, warmup=1,
                                  repeats=4, steps_per_repeat=1, cv_max=0.2, remeasure=2)
    d = recs["disturbed"]
    assert d["train_attempts"] == 3 and len(d["train_attempt_max_cv"]) == 3  # measured, then 2 re-measurements
    assert min(d["train_attempt_max_cv"]) > 0.2 and d["train_img_per_s_cv"] > 0.2
    assert d["train_unstable"] is True and d["unstable"] is True
    assert d["train_loadavg_1m_before"] is not None and d["train_competing_cpu_s"] is not None
    # The record schema carries it into metrics (and so into the cells table and the report).
    from resnet_bench.sweep.records import BenchResult

    assert BenchResult.model_validate(d).unstable is True


def test_stable_measurement_is_not_remeasured():
    calls = []

    def timer(step, n):
        calls.append(1)
        return 0.01 * n  # the same time every repeat: CV 0

    out = noise.stable_interleaved([lambda: None, lambda: None], batch_size=4, repeats=3, steps_per_repeat=2,
                                   cv_max=0.05, remeasure=3, timer=timer)
    assert out["n_attempts"] == 1 and out["unstable"] is False and len(calls) == 6  # A B A B A B


def test_competing_cpu_time_of_another_process_is_seen():
    """A child process burning 0.5 CPU-seconds between two snapshots is other processes' CPU time."""
    before = noise.load_snapshot()
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\n"
                    "while time.process_time() - t < 0.5: pass"], check=True)
    got = noise.load_between(before, noise.load_snapshot())
    assert got["competing_cpu_s"] >= 0.4 and 0 < got["competing_cpu_frac"] <= 1
    assert got["loadavg_1m_before"] >= 0 and got["wall_s"] >= 0.5


# ---- power ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d,n", [(0.5, 34), (0.8, 15), (1.0, 10)])
def test_seeds_needed_match_the_textbook_paired_t_sample_sizes(d, n):
    """Cohen's d = delta / sd of the paired differences, alpha 0.05 two-sided, power 0.8: the sample sizes
    of the one-sample/paired t-test (G*Power and statsmodels TTestPower give 34, 15, 10)."""
    assert power.seeds_needed(d, 1.0, alpha=0.05, power=0.8) == n
    assert power.seeds_needed(-d * 0.3, 0.3, alpha=0.05, power=0.8) == n  # sign and scale free


def test_paired_power_is_scipys_noncentral_t_and_mde_inverts_it():
    sd, n, delta = 0.3, 6, 0.4
    crit = stats.t.ppf(0.975, n - 1)
    nc = delta / (sd / math.sqrt(n))
    want = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
    assert power.paired_power(delta, sd, n, alpha=0.05) == pytest.approx(want, rel=1e-12)
    mde = power.paired_mde(sd, n, alpha=0.05, power=0.8)
    assert power.paired_power(mde, sd, n, alpha=0.05) == pytest.approx(0.8, abs=1e-9)
    # The closed-form normal approximation is a lower bound of the exact t answer at small n.
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert z * sd / math.sqrt(n) < mde < 1.5 * z * sd / math.sqrt(n)


def test_he2016_gap_needs_about_ten_seeds_at_a_seed_sd_of_017_pp():
    """The issue's arithmetic: ResNet-110's 0.24 pp gap, seed sd 0.17 pp (paired sd sqrt(2) x 0.17)."""
    row = power.power_row([0.3], acc_v1=0.935, acc_v2=0.9376, n_test=10_000, target_pp=0.24, seed_sd_pp=0.17,
                          alpha=0.05, power=0.8)
    assert row["seeds_for_target"] == 10 and row["sd_basis"] == "stated seed sd x sqrt(2)"
    # One seed: the minimum detectable difference is the binomial floor, in pp.
    se = math.sqrt(0.935 * 0.065 / 10_000 + 0.9376 * 0.0624 / 10_000)
    assert row["mde_pp"] == pytest.approx(100 * (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * se)
    assert "binomial" in row["mde_basis"]


def test_power_row_from_observed_paired_differences():
    diffs = [0.5, -0.1, 0.3, 0.2]
    row = power.power_row(diffs, acc_v1=0.9, acc_v2=0.9, n_test=10_000, target_pp=None, seed_sd_pp=None,
                          alpha=0.05, power=0.8)
    sd = statistics.stdev(diffs)
    assert row["paired_sd_pp"] == pytest.approx(sd) and row["n_seeds"] == 4
    assert row["mde_pp"] == pytest.approx(power.paired_mde(sd, 4, alpha=0.05, power=0.8))
    assert row["seeds_for_observed"] == power.seeds_needed(statistics.fmean(diffs), sd, alpha=0.05, power=0.8)
    assert row["seeds_for_target"] is None
