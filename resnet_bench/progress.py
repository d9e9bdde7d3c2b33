"""Progress of a long loop on stderr: a tqdm bar on a terminal, plain periodic lines otherwise.

A log file or CI console gets no `\\r` frames, only lines such as
`[prepare] 12,000/50,000 images (24 %)`, at most one per `every_s` seconds, and one
at the end. Progress never goes to stdout, which belongs to a command's result
(a table, or the JSON document of `--json`).
"""

from __future__ import annotations

import sys
import time


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """`with Progress(label="prepare", total=50_000, unit="images") as bar: bar.update(n)`.

    `note` (e.g. `loss 0.412, val 91.3 %`) is the bar's postfix on a terminal and the
    end of the line otherwise. `clock` (seconds) is injectable so a test needs no sleep.
    """

    def __init__(self, *, label: str, total: int, unit: str, stream=None, every_s: float = 5.0,
                 clock=time.monotonic):
        self.label, self.total, self.unit = label, int(total), unit
        self.stream = sys.stderr if stream is None else stream
        self.every_s, self.clock = every_s, clock
        self.done, self.note = 0, ""
        self._last_line_s = clock()  # the first plain line comes after every_s, or at the end
        self._printed_done = -1
        self._bar = None
        if is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=label, unit=f" {unit}", file=self.stream)

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.note = note or self.note
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
            return
        now = self.clock()
        if now - self._last_line_s >= self.every_s:
            self._line()
            self._last_line_s = now

    def _line(self) -> None:
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total > 0 else ""
        note = f", {self.note}" if self.note else ""
        print(f"[{self.label}] {self.done:,}/{self.total:,} {self.unit}{pct}{note}", file=self.stream, flush=True)
        self._printed_done = self.done

    def close(self, *, failed: bool = False) -> None:
        """The last count, unless just printed; none when the loop failed (its error is the one line)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._printed_done != self.done and not failed:
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)
