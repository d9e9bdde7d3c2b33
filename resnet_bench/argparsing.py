"""Command-line parsing shared by every entry point; imports nothing of the package.

`Parser` prints one error line (`error: PROG: MESSAGE (see PROG --help)`) and
exits 2, instead of argparse's usage block, so that a bad flag reads like every
other refused value.
"""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")
