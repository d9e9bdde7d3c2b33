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


def test_prepare_shows_images_written_as_plain_lines(tmp_path, capsys):
    from hostile_world import image_folder

    src = image_folder(tmp_path, {"cat": 6, "dog": 6})  # 12 train + 12 test images
    assert cli.main(["prepare", "--name", "pets", "--format", "imagefolder", "--source", str(src), "--out",
                     str(tmp_path / "p"), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "[prepare] 24/24 images (100 %)" in err.splitlines() and "\r" not in err, err


# ---- --json: one document, all of stdout; progress on stderr ----------------------------------------


def _json_of(argv, capsys) -> tuple[dict, str]:
    import json

    assert cli.main(argv) == 0
    out = capsys.readouterr()
    return json.loads(out.out), out.err


def test_models_and_summary_json(capsys):
    doc, _ = _json_of(["models", "resnet20_v1", "resnet50_v2", "--json"], capsys)
    assert [r["model"] for r in doc["rows"]] == ["resnet50_v2", "resnet20_v1"]  # the table's order
    assert doc["rows"][1]["params"] == 272_474  # He et al. 2015 Table 6: 0.27M, full precision here
    doc, _ = _json_of(["summary", "resnet20_v1", "--json", "--depth", "1"], capsys)
    assert doc["params"] == 272_474 and doc["flops"] == 2 * doc["macs"]
    assert doc["layers"][-1]["output_shape"] == "[1, 10]"


def test_bench_json_full_precision_and_plain_progress(tmp_path, capsys):
    doc, err = _json_of(["bench", "--models", "resnet20_v1", "--width", "4", "--batch-size", "4", "--image-size",
                         "8", "--warmup", "1", "--repeats", "2", "--steps-per-repeat", "1", "--device", "cpu",
                         "--json", "--out", str(tmp_path / "b.csv")], capsys)
    (row,) = doc["rows"]
    assert row["model"] == "resnet20_v1" and row["batch_size"] == 4 and row["train_img_per_s"] > 0
    assert doc["csv"] == str(tmp_path / "b.csv")
    assert "[bench] 1/1 models (100 %)" in err and "\r" not in err


def test_bench_console_table_is_rounded(tmp_path, capsys):
    assert cli.main(["bench", "--models", "resnet20_v1", "--width", "4", "--batch-size", "4", "--image-size", "8",
                     "--warmup", "1", "--repeats", "2", "--steps-per-repeat", "1", "--device", "cpu",
                     "--out", str(tmp_path / "b.csv")]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    cells = dict(zip(header.split(), row.split()))
    assert re.fullmatch(r"[\d,]+", cells["train_img_per_s"]) and re.fullmatch(r"[\d,]+", cells["params"])
    assert re.search(r"resnet20_v1 .* \d+(\.\d+)? MiB", row), row
    import pandas as pd

    assert pd.read_csv(tmp_path / "b.csv")["train_img_per_s"].iloc[0] % 1 != 0  # the file keeps the decimals


def test_sweep_dry_run_json(tmp_path, prepared_digits, capsys):
    from conftest import TINY_EXPERIMENT, make_project

    project = make_project(tmp_path / "p", TINY_EXPERIMENT)
    doc, err = _json_of(["sweep", "--params", str(project / "params.yaml"), "--experiments-dir",
                         str(project / "experiments"), "--prepared-dir", str(prepared_digits), "--results",
                         str(tmp_path / "R"), "--dry-run", "--json"], capsys)
    assert doc["experiment"] == "tiny" and doc["done"] == 0 and len(doc["to_train"]) == 2
    assert all(len(c["cell_id"]) >= 12 for c in doc["to_train"]) and "[sweep]" in err


def test_collect_and_verify_json(reproduced_tiny, tmp_path, capsys):
    """On a real `dvc repro`'s results: collect's summary, and verify retraining one cell (epoch progress
    as plain lines on stderr, the verdicts as the only thing on stdout)."""
    import json
    import shutil

    project, _ = reproduced_tiny
    results = tmp_path / "tiny"
    shutil.copytree(project / "results" / "tiny", results)
    doc, _ = _json_of(["collect", "--results", str(results), "--json"], capsys)
    assert doc["cells"] == 2 and doc["status"]["ok"] == 2 and doc["metrics"] is not None
    doc, _ = _json_of(["compare", str(results), str(results), "--json"], capsys)  # a folder with itself
    assert doc["pairs"] == 2 and doc["rows"]
    # a fresh process, as verify is run: its numeric libraries read the pin at start-up
    run = dict(cwd=tmp_path, env=venv_env(), capture_output=True, text=True, timeout=300)
    proc = subprocess.run([sys.executable, "-m", "resnet_bench", "verify", "--results", str(results),
                           "--prepared-dir", str(project / "data" / "prepared"), "--sample", "1", "--json"], **run)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    (cell,) = doc["cells"]
    assert cell["verdict"] == "identical" and cell["retrained_test_acc"] == cell["recorded_test_acc"]
    assert re.search(r"^\[verify\] 1/1 epochs \(100 %\), ", proc.stderr, re.M), proc.stderr
