"""Escaping per output: every string a user or a result file supplies (names, error messages, reasons, host
names, citations, descriptions) is escaped for the output it lands in, so that it reads as the same text
and nothing more.

- Markdown (`report.md`, `compare.md`, and the HTML a Markdown renderer lets through): `md_text` for
  user text in prose, headings and table cells: no heading, list, link, image, HTML tag, code span or
  table cell can start inside it; `md_cell` for any table cell (keeps a cell one cell on one line).
- LaTeX tables and captions: `latex_escape` (every special character, `±` and the true minus).
- matplotlib titles, labels and ticks: `mpl_text` (a `$` would start mathtext, which can fail to parse
  and abort the figure).
- File names and CSV: names are bounded to a safe charset by the schema (`resnet_bench.vocab.
  NAME_PATTERN`); CSV cells a spreadsheet would run as a formula are guarded by
  `resnet_bench.outputs.csv_guard`.
"""

from __future__ import annotations

import re

MINUS = "\u2212"

# Characters that end a line, or are invisible controls: never inside one rendered line of output.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
# Markdown punctuation that can start a construct inline (CommonMark 2.4: any ASCII punctuation may be
# backslash-escaped). `_` is left alone (names use it; intraword `_` starts no emphasis), and so is `!`
# (it makes an image only before a `[`, which is escaped).
_MD_PUNCT = re.compile(r"([\\`*\[\]|#~])")


def md_text(text) -> str:
    """User text as inline Markdown that renders exactly as the text: `<`, `>`, `&` as entities, Markdown
    punctuation backslash-escaped, line breaks and control characters as spaces."""
    s = _CONTROL.sub(" ", str(text))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_PUNCT.sub(r"\\\1", s)


def md_cell(text) -> str:
    """Any Markdown table cell (ours or a user's): one line, one cell, no HTML tag."""
    s = _CONTROL.sub(" ", str(text))
    return s.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def mpl_text(text) -> str:
    """Text for a matplotlib title, label or tick: a `$` is shown as a dollar, never starts mathtext."""
    return _CONTROL.sub(" ", str(text)).replace("$", r"\$")


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", MINUS: "$-$", "–": "--"}


def latex_escape(text) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in _CONTROL.sub(" ", str(text)))
