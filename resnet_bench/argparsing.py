"""Command-line parsing shared by every entry point; imports nothing of the package.

`Parser` prints one error line (`error: PROG: MESSAGE (see PROG --help)`) and
exits 2, instead of argparse's usage block, so that a bad flag reads like every
other refused value. Its `--help` shows each flag's default (`(default: 256)`,
`(default: off)` for a switch) unless the help text already says what the default is,
so a default is written once, where the flag takes it (the typed schema for config-backed flags).
"""

from __future__ import annotations

import argparse
import sys


class _DefaultsFormatter(argparse.HelpFormatter):
    """Appends `(default: X)` to a flag's help when X is a value and the text does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if text is argparse.SUPPRESS or "%(default)" in text or "default" in text or not action.option_strings:
            return text
        default = action.default
        if action.nargs == 0 and isinstance(default, bool):  # a switch
            return f"{text} (default: {'on' if default else 'off'})"
        if default is None or default is argparse.SUPPRESS:
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Renamed(argparse.Action):
    """An old spelling of a renamed flag: accepted, hidden from --help, and names the new spelling once."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is now {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, exit status 2, and defaults shown in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    def add_renamed(self, old: str, new: str) -> None:
        """Keep `old`, the former spelling of the value flag `new`, working (hidden from --help)."""
        target = self._option_string_actions[new]
        self.add_argument(old, action=_Renamed, new=new, dest=target.dest, type=target.type,
                          choices=target.choices, metavar=target.metavar, default=argparse.SUPPRESS,
                          help=argparse.SUPPRESS)
