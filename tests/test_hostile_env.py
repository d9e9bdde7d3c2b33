"""Hostile inputs at the doors that reach a shell, the file system and the network: the
environment (RAY_ADDRESS), params.yaml values that DVC would once have run in a shell, files
that are not regular files, prepare's flags, a results folder another sweep holds.

Each row runs the real entry point (`resnet_bench.cli.main`, in this process, or as
`python -m resnet_bench.cli` where the environment of a fresh process matters) and must exit
nonzero with exactly one `error:` line naming the input, no traceback, within the row's timeout,
leaving a guard folder byte-identical and a canary file uncreated. The payloads end in `#` so
that, spliced into a shell command, they would run (`touch CANARY #` comments out the rest).
"""

import contextlib
import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import make_project, venv_env
from resnet_bench import cli
from resnet_bench.sweep import driver, lifecycle

INJECT = "; touch CANARY #"


@dataclass
class Row:
    id: str
    argv: list[str]
    needle: str  # must appear in the one error line
    params: dict = field(default_factory=dict)  # dotted key -> value, written into params.yaml
    env: dict = field(default_factory=dict)
    setup: str | None = None  # name of a special file or state the row needs (see `special`)
    fresh_process: bool = False


PREPARE = ["prepare", "--name", "digits", "--out", "{tmp}/out/digits"]
SWEEP = ["sweep", "--prepared-dir", "{prepared}"]
FILE = {"format": "cifar10", "source": "raw.tar.gz", "sha256": "", "image_size": 0, "max_aspect": 1.0, "eval_resize": 0,
        "eval_crop": 0}

ROWS = [
    # ---- the environment: RAY_ADDRESS / sweep.ray_address / --ray-address (a sweep with cells to train)
    Row("ray-address-garbage", SWEEP, "'garbage'", env={"RAY_ADDRESS": "garbage"}),
    Row("ray-address-refused", SWEEP, "127.0.0.1:1", env={"RAY_ADDRESS": "127.0.0.1:1"}),
    Row("ray-address-port-range", SWEEP, "127.0.0.1:99999", env={"RAY_ADDRESS": "127.0.0.1:99999"}),
    Row("ray-address-no-host", SWEEP, "':6379'", env={"RAY_ADDRESS": ":6379"}),
    Row("ray-address-port-word", SWEEP, "'head:port'", env={"RAY_ADDRESS": "head:port"}),
    Row("ray-address-injection", SWEEP, "10.0.0.1:6379;", env={"RAY_ADDRESS": "10.0.0.1:6379" + INJECT}),
    Row("ray-address-subshell", SWEEP, "$(touch CANARY)", env={"RAY_ADDRESS": "$(touch CANARY):6379"}),
    Row("ray-address-client", SWEEP, "ray://head:10001", env={"RAY_ADDRESS": "ray://head:10001"}),
    Row("ray-address-newline", SWEEP, "'10.0.0.1:6379\\ntouch CANARY'",
        env={"RAY_ADDRESS": "10.0.0.1:6379\ntouch CANARY"}),
    Row("ray-address-auto-none", SWEEP, "'auto'", env={"RAY_ADDRESS": "auto", "RAY_TMPDIR": "{tmp}/raytmp"}),
    Row("ray-address-not-gcs", SWEEP, "could not join the Ray cluster at '{listener}'",
        env={"RAY_ADDRESS": "{listener}"}, setup="listener", fresh_process=True),
    Row("params-ray-address", SWEEP, "'nowhere'", params={"sweep.ray_address": "nowhere"}),
    Row("flag-ray-address", [*SWEEP, "--ray-address", "x:y:z"], "'x:y:z'"),
    # ---- params.yaml values that dvc.yaml once spliced into shell commands
    Row("builtin-injection", ["prepare", "--params", "params.yaml", "--name", "digits"], "prepare.builtin.0",
        params={"prepare.builtin": ["digits" + INJECT]}),
    Row("file-key-injection", ["prepare", "--params", "params.yaml", "--name", "x"], "'x; touch CANARY #'",
        params={"prepare.files": {"x" + INJECT: FILE}}),
    Row("file-key-subshell", ["prepare", "--params", "params.yaml", "--name", "x"], "'$(touch CANARY)'",
        params={"prepare.files": {"$(touch CANARY)": FILE}}),
    Row("file-key-backticks", ["prepare", "--params", "params.yaml", "--name", "x"], "'`touch CANARY`'",
        params={"prepare.files": {"`touch CANARY`": FILE}}),
    Row("file-key-newline", ["prepare", "--params", "params.yaml", "--name", "x"], "'x\\ntouch CANARY'",
        params={"prepare.files": {"x\ntouch CANARY": FILE}}),
    Row("file-key-dotdot", ["prepare", "--params", "params.yaml", "--name", "x"], "'..'",
        params={"prepare.files": {"..": FILE}}),
    Row("file-key-dots", ["prepare", "--params", "params.yaml", "--name", "x"], "'...'",
        params={"prepare.files": {"...": FILE}}),
    Row("file-key-slash", ["prepare", "--params", "params.yaml", "--name", "x"], "'../../x'",
        params={"prepare.files": {"../../x": FILE}}),
    Row("file-source-injection", ["prepare", "--params", "params.yaml", "--name", "x"], "raw.tar.gz; touch CANARY",
        params={"prepare.files": {"x": {**FILE, "source": "raw.tar.gz" + INJECT}}}),
    Row("file-sha-subshell", ["prepare", "--params", "params.yaml", "--name", "x"], "prepare.files.x.sha256",
        params={"prepare.files": {"x": {**FILE, "sha256": "$(touch CANARY)"}}}),
    Row("file-size-injection", ["prepare", "--params", "params.yaml", "--name", "x"], "prepare.files.x.image_size",
        params={"prepare.files": {"x": {**FILE, "image_size": "0" + INJECT}}}),
    Row("file-format-injection", ["prepare", "--params", "params.yaml", "--name", "x"], "prepare.files.x.format",
        params={"prepare.files": {"x": {**FILE, "format": "cifar10" + INJECT}}}),
    Row("val-fraction-injection", ["prepare", "--params", "params.yaml"], "prepare.val_fraction",
        params={"prepare.val_fraction": "0.1" + INJECT}, env={"DVC_STAGE": "prepare@digits"}),
    Row("split-seed-backticks", ["prepare", "--params", "params.yaml"], "prepare.split_seed",
        params={"prepare.split_seed": "`touch CANARY`"}, env={"DVC_STAGE": "prepare@digits"}),
    Row("dvc-stage-forged", ["prepare", "--params", "params.yaml"], "$DVC_STAGE 'prepare@x; touch CANARY #'",
        env={"DVC_STAGE": "prepare@x" + INJECT}),
    Row("experiment-injection", SWEEP, "sweep.experiment", params={"sweep.experiment": "tiny" + INJECT}),
    Row("experiment-subshell", ["collect", "--params", "params.yaml"], "sweep.experiment",
        params={"sweep.experiment": "$(touch CANARY)"}),
    Row("experiment-traversal", ["report", "--params", "params.yaml"], "sweep.experiment",
        params={"sweep.experiment": "../../etc"}),
    # ---- files that are not regular files
    Row("source-dev-zero", ["prepare", "--name", "cifar10", "--source", "/dev/zero", "--out", "{tmp}/o"],
        "/dev/zero: is a character device"),
    Row("source-fifo", ["prepare", "--name", "cifar10", "--source", "{tmp}/fifo", "--out", "{tmp}/o"],
        "fifo: is a FIFO", setup="fifo"),
    Row("source-socket", ["prepare", "--name", "cifar10", "--source", "{tmp}/sock", "--out", "{tmp}/o"],
        "sock: is a socket", setup="socket"),
    Row("source-link-to-zero", ["prepare", "--name", "cifar10", "--source", "{tmp}/zero", "--out", "{tmp}/o"],
        "zero: is a character device", setup="zero-link"),
    Row("source-folder-with-fifo", ["prepare", "--name", "p", "--format", "imagefolder", "--source", "{tmp}/imgs",
                                    "--out", "{tmp}/o"], "'train/a/b.png' of", setup="folder-with-fifo"),
    Row("params-fifo", ["prepare", "--params", "{tmp}/fifo", "--name", "digits"], "fifo: is a FIFO", setup="fifo"),
    Row("params-dev-zero", [*SWEEP, "--params", "/dev/zero"], "/dev/zero: is a character device"),
    Row("experiment-file-fifo", SWEEP, "tiny.yaml: is a FIFO", setup="experiment-fifo"),
    Row("config-show-fifo", ["config", "show"], "tiny.yaml: is a FIFO", setup="experiment-fifo"),
    Row("result-file-fifo", SWEEP, ".json: is a FIFO", setup="record-fifo"),
    # ---- prepare's flags, through the schema's limits
    Row("split-seed-negative", [*PREPARE, "--split-seed", "-1"], "--split-seed: -1"),
    Row("max-member-nan", [*PREPARE, "--max-member-mb", "nan"], "--max-member-mb: nan"),
    Row("max-member-inf", [*PREPARE, "--max-member-mb", "inf"], "--max-member-mb: inf"),
    Row("val-fraction-two", [*PREPARE, "--val-fraction", "2"], "--val-fraction: 2.0"),
    Row("image-size-negative", [*PREPARE, "--image-size", "-1"], "--image-size: -1"),
    Row("workers-negative", [*PREPARE, "--workers", "-5"], "--workers: -5"),
    Row("name-traversal", ["prepare", "--name", "../x", "--format", "digits", "--out", "{tmp}/o"], "--name: '../x'"),
    Row("sha256-not-hex", [*PREPARE, "--sha256", "$(touch CANARY)"], "--sha256: '$(touch CANARY)'"),
    Row("params-and-flags", ["prepare", "--params", "params.yaml", "--name", "digits", "--split-seed", "3"],
        "drop --split-seed"),
    # ---- a results folder another sweep holds
    Row("results-locked", SWEEP, "is in use by another sweep (pid {pid}", setup="lock"),
]


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def special(kind: str | None, project: Path, tmp: Path):
    """The special file or state a row needs; yields the values its placeholders take."""
    values, closers = {}, []
    if kind == "fifo":
        os.mkfifo(tmp / "fifo")
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(tmp / "sock"))
        closers.append(sock.close)
    elif kind == "zero-link":
        (tmp / "zero").symlink_to("/dev/zero")
    elif kind == "folder-with-fifo":
        (tmp / "imgs" / "train" / "a").mkdir(parents=True)
        (tmp / "imgs" / "test" / "a").mkdir(parents=True)
        os.mkfifo(tmp / "imgs" / "train" / "a" / "b.png")
    elif kind == "experiment-fifo":
        (project / "experiments" / "tiny.yaml").unlink()
        os.mkfifo(project / "experiments" / "tiny.yaml")
    elif kind == "record-fifo":
        pending = driver_pending_ids(project)
        (project / "results" / "tiny" / "cells").mkdir(parents=True)
        os.mkfifo(project / "results" / "tiny" / "cells" / f"{pending[0]}.json")
    elif kind == "listener":  # a TCP service that is not a Ray GCS: accepts and never answers
        srv, held = socket.create_server(("0.0.0.0", 0)), []

        def serve():
            with contextlib.suppress(OSError):
                while True:
                    held.append(srv.accept()[0])

        threading.Thread(target=serve, daemon=True).start()
        values["listener"] = f"127.0.0.1:{srv.getsockname()[1]}"
        closers += [lambda: srv.shutdown(socket.SHUT_RDWR), srv.close, lambda: [c.close() for c in held]]
    elif kind == "lock":
        held = lifecycle.lock_results(project / "results" / "tiny")
        closers.append(held.close)
    try:
        yield values
    finally:
        for close in closers:
            close()


def driver_pending_ids(project: Path) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        driver.main(["--params", str(project / "params.yaml"), "--experiments-dir", str(project / "experiments"),
                     "--prepared-dir", os.environ["_HOSTILE_PREPARED"], "--results",
                     str(project / "results" / "tiny"), "--dry-run"])
    return [line.split()[0] for line in out.getvalue().splitlines() if line.strip()]


def set_params(project: Path, values: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for dotted, value in values.items():
        section, key = dotted.split(".", 1)
        params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def world(tmp_path, prepared_digits, monkeypatch):
    project = make_project(tmp_path / "p")
    guard = tmp_path / "guard"  # files nothing may touch
    (guard / "paper" / "figures").mkdir(parents=True)
    (guard / "paper" / "figures" / "fig1.pdf").write_bytes(b"%PDF-1.4 mine")
    (guard / "notes.txt").write_text("keep me\n")
    monkeypatch.setenv("_HOSTILE_PREPARED", str(prepared_digits))
    (tmp_path / "raytmp").mkdir()
    return project, guard, tmp_path, prepared_digits


@pytest.mark.timeout(90)
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input_is_one_line_and_does_nothing(row, world, monkeypatch, capfd):
    project, guard, tmp, prepared = world
    set_params(project, row.params)
    before = {"guard": tree_digest(guard), "prepared": tree_digest(prepared)}
    with special(row.setup, project, tmp) as values:
        fill = {"tmp": str(tmp), "prepared": str(prepared), "pid": str(os.getpid()), **values}
        argv = [a.format(**fill) for a in row.argv]
        env = {k: v.format(**fill) for k, v in row.env.items()}
        if row.fresh_process:
            proc = subprocess.run([sys.executable, "-m", "resnet_bench.cli", *argv], cwd=project,
                                  env={**venv_env(), **env}, capture_output=True, text=True, timeout=80)
            rc, err = proc.returncode, proc.stderr
        else:
            monkeypatch.chdir(project)
            for k, v in env.items():
                monkeypatch.setenv(k, v)
            try:
                rc = cli.main(argv)
            except SystemExit as exit_:  # argparse's own refusals
                rc = exit_.code
            err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc not in (0, None), err
    assert len(errors) == 1 and row.needle.format(**fill) in errors[0], err
    assert "Traceback" not in err, err
    assert not list(tmp.rglob("CANARY")), "a payload ran"
    assert {"guard": tree_digest(guard), "prepared": tree_digest(prepared)} == before


# Under a real `dvc repro`: every key that reaches dvc.yaml (a foreach item or key, a value once
# spliced into `cmd:`). DVC runs the first prepare stage, whose module reads params.yaml through
# the schema and refuses the value; nothing reaches a shell.
DVC_ROWS = [
    ("builtin", {"prepare.builtin": ["digits" + INJECT]}, "prepare.builtin.0"),
    ("file-key", {"prepare.files": {"x" + INJECT: FILE}}, "'x; touch CANARY #'"),
    ("file-key-newline", {"prepare.files": {"x\ntouch CANARY #": FILE}}, "'x\\ntouch CANARY #'"),
    ("val-fraction", {"prepare.val_fraction": "$(touch CANARY)"}, "prepare.val_fraction"),
    ("experiment", {"sweep.experiment": "tiny" + INJECT}, "sweep.experiment"),
]


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("dvc") / "p", git=True)
    return project, (project / "params.yaml").read_text()


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name,values,needle", DVC_ROWS, ids=[r[0] for r in DVC_ROWS])
def test_params_values_reach_no_shell_under_dvc_repro(dvc_project, name, values, needle):
    project, params = dvc_project
    (project / "params.yaml").write_text(params)
    set_params(project, values)
    proc = subprocess.run(["dvc", "repro"], cwd=project, env=venv_env(), capture_output=True, text=True, timeout=110)
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0, out
    assert len(errors) == 1 and needle in errors[0], out
    assert not list(project.parent.rglob("CANARY")), f"a payload ran:\n{out}"
