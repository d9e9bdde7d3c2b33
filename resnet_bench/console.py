"""Numbers as the console shows them, and `--json` documents.

Tables printed for a person round: throughputs to whole images per second with thousands
separators, accuracies to percent with one decimal, bytes to MiB/GiB, other numbers to
3 significant digits. Files (CSV, parquet, JSON records) and `--json` keep full precision.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Callable


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def img_per_s(value) -> str:
    return "-" if _missing(value) else f"{value:,.0f}"


def percent(fraction) -> str:
    """An accuracy in [0, 1] as percent: 0.9554317 -> '95.5 %'."""
    return "-" if _missing(fraction) else f"{100 * fraction:.1f} %"


def mib(n_bytes) -> str:
    """Bytes in binary units: MiB below 1 GiB, else GiB (3 significant digits)."""
    if _missing(n_bytes):
        return "-"
    return f"{n_bytes / 2**30:.3g} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.3g} MiB"


def sig(value, digits: int = 3) -> str:
    """3 significant digits, no exponent for ordinary magnitudes: 0.012345 -> '0.0123', 1234.5 -> '1,234'."""
    if _missing(value):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    return f"{value:.{decimals}f}" if decimals <= 8 else f"{value:.{digits}g}"


def count(value) -> str:
    return "-" if _missing(value) else f"{int(value):,}"


def table(rows: list[dict], columns: dict[str, Callable[[Any], str]]) -> str:
    """Left-aligned text columns, right-aligned numbers; `columns` maps a row key to its formatter."""
    cells = [[fmt(row.get(key)) for key, fmt in columns.items()] for row in rows]
    header = list(columns)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    numeric = [all(_looks_numeric(r[i]) for r in cells) and bool(cells) for i in range(len(header))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(header)] + [line(r) for r in cells])


def _looks_numeric(text: str) -> bool:
    head = text.split(" ")[0].replace(",", "").replace(".", "", 1).lstrip("-")
    return head.isdigit() or text == "-"


def _plain(value):
    """JSON has no NaN/inf (strict parsers refuse them) nor numpy scalars: null and Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_json(doc, stream=None) -> None:
    """One JSON document on stdout (full precision) and nothing else there."""
    stream = sys.stdout if stream is None else stream
    stream.write(json.dumps(_plain(doc), indent=2, allow_nan=False, default=str) + "\n")
