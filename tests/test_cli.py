"""The command line's conventions, checked on every subcommand of `resnet_bench.cli.COMMANDS`.

The parsers are collected by running each entry point with `--help` while `Parser.parse_args`
hands back the parser instead of parsing, so a subcommand added to the table is covered
without listing its flags here.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

from resnet_bench import cli
from resnet_bench.argparsing import Parser
from resnet_bench.progress import Progress

from conftest import REPO, venv_env

# Passes every option to another tool, which documents its own (`dvc exp show --help`).
DELEGATES = {"exp-show"}


class _Built(Exception):
    def __init__(self, parser):
        self.parser = parser


def _parser_of(name: str, monkeypatch) -> argparse.ArgumentParser:
    import importlib

    def capture(self, *args, **kwargs):
        raise _Built(self)

    monkeypatch.setattr(Parser, "parse_args", capture)
    module, func, _ = cli.COMMANDS[name]
    with pytest.raises(_Built) as built:
        getattr(importlib.import_module(module), func)(["--help"])
    return built.value.parser


def _walk(parser):
    """(prog, action) of a parser and of its subcommands' parsers."""
    for action in parser._actions:
        yield parser.prog, action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _walk(sub)


@pytest.mark.parametrize("name", sorted(set(cli.COMMANDS) - DELEGATES))
def test_every_flag_has_help_that_states_its_default(name, monkeypatch):
    parser = _parser_of(name, monkeypatch)
    problems = []
    visible_dests = {(prog, a.dest) for prog, a in _walk(parser) if a.help is not argparse.SUPPRESS}
    for prog, action in _walk(parser):
        flag = "/".join(action.option_strings) or action.dest
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction._ChoicesPseudoAction)):
            continue
        if action.help is argparse.SUPPRESS:  # only a renamed flag's old spelling hides
            if (prog, action.dest) not in visible_dests:
                problems.append(f"{prog} {flag}: hidden and no visible flag sets {action.dest}")
            continue
        if not (action.help or "").strip():
            problems.append(f"{prog} {flag}: no help")
            continue
        sub = next(p for pr, a in _walk(parser) if isinstance(a, argparse._SubParsersAction)
                   for p in a.choices.values() if p.prog == prog) if prog != parser.prog else parser
        shown = sub._get_formatter()._expand_help(action)  # what --help prints, with %(default)s filled in
        if action.option_strings and not action.required and "default" not in shown:
            problems.append(f"{prog} {flag}: help does not say the default: {shown!r}")
    assert not problems, "\n".join(problems)
    parser.format_help()  # renders: no stray % in any help text


def test_every_command_builds_the_shared_parser(monkeypatch):
    """A subcommand's --help comes from `Parser` (one-line errors, defaults shown), or it delegates."""
    for name in sorted(set(cli.COMMANDS) - DELEGATES):
        assert isinstance(_parser_of(name, monkeypatch), Parser), name


def test_defaults_are_shown_in_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    from resnet_bench.config import Bench

    assert re.search(rf"--batch-size BATCH_SIZE\s+.*\(default: {Bench().batch_size}\)", " ".join(out.split()))
    assert "(default: off)" in out  # a switch


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_installed_version_and_exits_0(flag, capsys):
    assert cli.main([flag]) == 0
    assert capsys.readouterr().out == f"resnet-bench {version('resnet-bench')}\n"


def test_version_of_the_console_command():
    out = subprocess.run([sys.executable, "-m", "resnet_bench", "--version"], capture_output=True, text=True,
                         cwd=REPO, env=venv_env(), timeout=120)
    assert (out.returncode, out.stdout, out.stderr) == (0, f"resnet-bench {version('resnet-bench')}\n", "")


def test_a_closed_pipe_is_no_traceback(tmp_path):
    """`resnet-bench config show | head -1`: the reader is gone before the command writes."""
    proc = subprocess.Popen([sys.executable, "-m", "resnet_bench", "config", "show"], cwd=REPO, env=venv_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # every write the command makes now fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_renamed_flag_still_works_and_says_the_new_name(capsys):
    p = Parser(prog="t")
    p.add_argument("--batch-size", type=int, default=8, help="images per step")
    p.add_renamed("--batch", "--batch-size")
    assert p.parse_args(["--batch", "3"]).batch_size == 3
    assert capsys.readouterr().err == "note: --batch is now --batch-size\n"
    assert p.parse_args([]).batch_size == 8
    assert "--batch " not in p.format_help()


# ---- progress ---------------------------------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self):
        return self.now_s


def test_progress_off_a_terminal_is_plain_periodic_lines():
    stream, clock = io.StringIO(), _Clock()
    with Progress(label="prepare", total=50_000, unit="images", stream=stream, every_s=5.0, clock=clock) as bar:
        for _ in range(10):  # 10 updates of 1,200 images within one 5 s period: no line
            bar.update(1_200)
            clock.now_s += 0.4
        clock.now_s += 2.0
        bar.update(1_000)  # 5.0 s after the start: the first line
        for _ in range(3):
            bar.update(100)  # same instant: nothing more
        clock.now_s += 5.0
        bar.update(10_000)
    assert stream.getvalue().splitlines() == [
        "[prepare] 13,000/50,000 images (26 %)",
        "[prepare] 23,300/50,000 images (47 %)",
    ]
    assert "\r" not in stream.getvalue()


def test_progress_prints_the_last_count_once_at_the_end():
    stream, clock = io.StringIO(), _Clock()
    with Progress(label="verify", total=2, unit="cells", stream=stream, clock=clock) as bar:
        bar.update(1, note="a: identical")
        bar.update(1, note="b: within seed spread")
    assert stream.getvalue() == "[verify] 2/2 cells (100 %), b: within seed spread\n"


def test_progress_on_a_terminal_is_a_bar():
    import fcntl
    import struct
    import termios

    primary, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows x 100 columns
    with os.fdopen(secondary, "w", closefd=True) as tty:
        assert tty.isatty()
        with Progress(label="bench", total=4, unit="models", stream=tty) as bar:
            for _ in range(4):
                bar.update(1, note="resnet18_v1")
        tty.flush()
    written = b""
    while True:  # what the terminal received; EIO once the writer's end is closed and all is read
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        written += chunk
    os.close(primary)
    text = written.decode()
    assert "\r" in text and "bench: 100%" in text and "4/4" in text and "[bench]" not in text, text
