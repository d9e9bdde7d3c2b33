"""The `[sweep]` console lines and the short causes they quote."""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

from resnet_bench import config as cfg

def trial_slots(resources: cfg.Resources, cluster: dict) -> int:
    """Trials the cluster runs at once: its CPUs and, for GPU trials, its GPUs divided by each trial's
    share (4 GPUs at gpus_per_trial 0.5: 8 trials; 8 GPUs at workers_per_trial 4: 2). At least 1."""
    per = [(cluster.get("CPU", 1), resources.cpus_per_trial * resources.workers_per_trial)]
    if resources.gpus_per_trial > 0:
        per.append((cluster.get("GPU", 0), resources.gpus_per_trial))
    # The epsilon keeps 1.0 / 0.1 from flooring to 9 (Ray admits 10 trials of 0.1 GPU).
    return max(1, min(int(have / want + 1e-9) for have, want in per))


def _short(node_id: str | None) -> str:
    return (node_id or "?")[:8]


class Progress:
    """The `[sweep]` console lines: cells done/total, failures, time left, per-cell node and retries.

    The estimate of time left counts epochs, not cells: the median wall time of an epoch
    (between a cell's consecutive epoch reports; a cell's first epoch also holds its start-up)
    times the epochs the unfinished cells still have to train, divided by the trials that
    run at once (`concurrency`).
    """

    def __init__(self, total: int, already: int, pending: list[dict], stream=sys.stderr,
                 epoch_every_s: float = 30.0, concurrency: int = 1):
        self.total, self.done, self.failed = total, already, 0
        self.stream, self.epoch_every_s, self.concurrency = stream, epoch_every_s, max(1, concurrency)
        self.epochs_left = {c["cell_id"]: c["recipe"]["epochs"] for c in pending}
        self.epochs_total = dict(self.epochs_left)
        self.t_start = time.perf_counter()
        self.epoch_s: list[float] = []  # wall seconds of each reported epoch
        self._last_epoch: dict[str, float] = {}
        self._last_line: dict[str, float] = {}

    def started(self, cell_id: str) -> None:
        """A trial (re)started: its next epoch is timed from now, not from the phase start."""
        self._last_epoch[cell_id] = time.perf_counter()

    def eta_s(self) -> float:
        if not self.epoch_s:
            return float("nan")
        left = [n for n in self.epochs_left.values() if n > 0]
        at_once = max(1, min(self.concurrency, len(left)))
        return sum(left) * statistics.median(self.epoch_s) / at_once

    def _print(self, text: str) -> None:
        print(f"[sweep] {self.done}/{self.total} cells, {self.failed} failed, ~{_fmt_s(self.eta_s())} left"
              f" | {text}", file=self.stream, flush=True)

    def epoch(self, cell_id: str, label: str, epoch: int, node: dict, retries: int,
              first_of_attempt: bool) -> None:
        """One trained epoch; printed for an attempt's first epoch, then at most every epoch_every_s."""
        now = time.perf_counter()
        self.epoch_s.append(now - self._last_epoch.get(cell_id, self.t_start))
        self._last_epoch[cell_id] = now
        if cell_id in self.epochs_left:
            self.epochs_left[cell_id] = max(0, self.epochs_total[cell_id] - epoch)
        if first_of_attempt or now - self._last_line.get(cell_id, -math.inf) >= self.epoch_every_s:
            self._last_line[cell_id] = now
            retry = f", retry {retries}" if retries else ""
            self._print(f"{label}: epoch {epoch}/{self.epochs_total.get(cell_id, '?')} on "
                        f"{node.get('hostname')} (node {_short(node.get('node_id'))}){retry}")

    def note(self, text: str) -> None:
        self._print(text)

    def update(self, label: str, status: str, detail: str = "", cell_id: str | None = None) -> None:
        """A cell ended (ok, diverged or failed for good)."""
        self.done += 1
        self.failed += status == "failed"
        self.epochs_left.pop(cell_id, None)
        self._print(f"{label}: {status} {detail}")


def _fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _trial_error(trial) -> str:
    """The last lines of the error Tune recorded for a trial (the driver keeps the error file)."""
    err = getattr(trial, "error_file", None)
    try:
        return Path(err).read_text()[-2000:] if err else "trial process failed"
    except OSError:
        return "trial process failed"


def _cause_line(text: str, limit: int = 160) -> str:
    """The line naming the cause: Tune's error file starts with 'Failure # n (occurred at ...)'."""
    lines = [l.strip() for l in (text or "").splitlines() if l.strip() and not l.startswith("Failure #")]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _label(c: dict) -> str:
    unit = "" if c["unit"] in cfg.VERSION_UNIT.values() else f"[{c['unit']}]"
    return f"{c['model']}{unit}/{c['dataset']}/seed{c['seed']}"
