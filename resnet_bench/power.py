"""Statistical power of a v1/v2 comparison: what the seeds run can resolve, and how many would resolve more.

Paired design: seed s of v1 and seed s of v2 form a pair; the test is a two-sided paired t-test at level
`alpha` of the mean v2 - v1 difference (percentage points). Its exact power with n pairs, a true
difference `delta` and a paired standard deviation `sd` (of the per-seed differences) is

    P(|T| > t_{1 - alpha/2, n-1}),  T ~ noncentral t(df = n - 1, nc = delta / (sd / sqrt(n))),

(scipy.stats.nct). The minimum detectable difference at n pairs is the `delta` with power `power`
(solved by bisection); the seeds needed for `delta` are the smallest n >= 2 with power >= `power`.

Planning with an estimated sd: the paired sd observed from n pairs has only n - 1 degrees of freedom
(one, with two seeds), and two close differences make it tiny by luck: planned on it, "2 seed pairs
resolve 0.24 pp". So the minimum detectable difference and the seeds needed use a planning sd, the
larger of the observed sd's one-sided 80 % upper confidence bound, sd x sqrt((n - 1) / chi2_{0.2, n-1})
(Browne 1995, "On the use of a pilot sample for sample size determination"; x 3.95 at one df, x 1.29
at nine), and sqrt(2) x the experiment's stated seed sd when it states one. Both are printed.

With one seed there is no paired standard deviation. The floor then is the test set's own sampling
error: each accuracy p measured on n_test images has binomial variance p (1 - p) / n_test, so the
difference of two has standard error sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n) and the normal-approximation
minimum detectable difference is (z_{1 - alpha/2} + z_{power}) x that standard error: a lower bound,
since seed-to-seed variation adds to it.
"""

from __future__ import annotations

import math

MAX_SEEDS = 100_000
# alpha and power have no defaults here: they come from the experiment's `target:` (resnet_bench.config.Target).


def paired_power(delta: float, sd: float, n: int, *, alpha: float) -> float:
    """Exact power of the two-sided paired t-test with n pairs (n >= 2), sd > 0."""
    from scipy import stats

    if n < 2 or sd <= 0:
        raise ValueError(f"paired_power needs n >= 2 pairs and sd > 0, got n={n}, sd={sd}")
    df, nc = n - 1, abs(delta) / (sd / math.sqrt(n))
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def paired_mde(sd: float, n: int, *, alpha: float, power: float) -> float:
    """The smallest true difference (in sd's units) the paired t-test detects with `power` at n pairs."""
    lo, hi = 0.0, sd
    while paired_power(hi, sd, n, alpha=alpha) < power:
        hi *= 2
    for _ in range(200):  # bisection to far below any printed precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if paired_power(mid, sd, n, alpha=alpha) < power else (lo, mid)
    return hi


def seeds_needed(delta: float, sd: float, *, alpha: float, power: float) -> int | None:
    """Smallest number of seed pairs (>= 2) whose paired t-test detects `delta` with `power`;
    None when delta is 0 or more than MAX_SEEDS would be needed."""
    if delta == 0:
        return None
    from scipy import stats

    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, math.floor((z * sd / abs(delta)) ** 2))  # the normal approximation: never above the t answer
    while paired_power(delta, sd, n, alpha=alpha) < power:
        n += 1
        if n > MAX_SEEDS:
            return None
    return n


def binomial_mde(acc1: float, acc2: float, n_test: int, *, alpha: float, power: float) -> float:
    """One seed: the minimum detectable difference (fraction) from the test set's sampling error alone."""
    from scipy import stats

    se = math.sqrt(acc1 * (1 - acc1) / n_test + acc2 * (1 - acc2) / n_test)
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se)


SD_UPPER_CONFIDENCE = 0.8  # the planning sd's one-sided confidence (Browne 1995 recommends 80 %)


def sd_upper_bound(sd: float, n: int, *, confidence: float = SD_UPPER_CONFIDENCE) -> float:
    """One-sided upper confidence bound of a standard deviation estimated from n values (n - 1 df)."""
    from scipy import stats

    if n < 2:
        raise ValueError(f"an sd needs n >= 2 values, got {n}")
    return float(sd * math.sqrt((n - 1) / stats.chi2.ppf(1 - confidence, n - 1)))


def power_row(diffs_pp: list[float], *, acc_v1: float, acc_v2: float, n_test: int | None,
              target_pp: float | None, seed_sd_pp: float | None, alpha: float, power: float) -> dict:
    """What one depth/dataset's seeds can resolve: paired v2 - v1 differences (pp) of its seeds in,
    the minimum detectable difference at these seeds, and the seeds needed for the observed difference
    and for `target_pp` (e.g. the paper's gap) out, all at the planning sd (the module docstring).
    `seed_sd_pp`, a stated seed-to-seed sd of one version's accuracy, enters as sqrt(2) x it (the
    paired difference of two independent runs)."""
    import statistics

    n = len(diffs_pp)
    observed = statistics.fmean(diffs_pp) if diffs_pp else None
    sd = statistics.stdev(diffs_pp) if n >= 2 else None
    candidates = []  # (planning sd, what it is)
    if sd:
        pct = f"{SD_UPPER_CONFIDENCE:.0%}".replace("%", " %")
        candidates.append((sd_upper_bound(sd, n), f"observed paired sd's {pct} upper bound, {n - 1} df"))
    if seed_sd_pp:
        candidates.append((math.sqrt(2) * seed_sd_pp, "stated seed sd x sqrt(2)"))
    plan, basis = max(candidates, key=lambda c: c[0]) if candidates else (None, None)
    row = {"n_seeds": n, "observed_pp": observed, "paired_sd_pp": sd, "planning_sd_pp": plan, "sd_basis": basis,
           "mde_pp": None, "mde_basis": None, "seeds_for_observed": None, "target_pp": target_pp,
           "seeds_for_target": None, "alpha": alpha, "power": power}
    if plan and n >= 2:
        row.update(mde_pp=paired_mde(plan, n, alpha=alpha, power=power), mde_basis=f"paired t, {n} seeds")
    elif n == 1 and n_test:
        row.update(mde_pp=100 * binomial_mde(acc_v1, acc_v2, n_test, alpha=alpha, power=power),
                   mde_basis=f"binomial test error, {n_test} test images, one seed (a lower bound)")
    if plan:
        if observed:
            row["seeds_for_observed"] = seeds_needed(observed, plan, alpha=alpha, power=power)
        if target_pp:
            row["seeds_for_target"] = seeds_needed(target_pp, plan, alpha=alpha, power=power)
    return row
