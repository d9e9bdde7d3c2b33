"""Real faults of a running sweep: signals (Ctrl-C to the process group of `dvc repro`, SIGTERM
to DVC alone), a kill between a record's temp write and its rename, a full TMPDIR, a full results
disk, a driver killed during the bench pass, damaged checkpoints. Each must stop cleanly (no
process, temp file or work dir left), keep every finished cell and measurement, and let a rerun
finish with the numbers of an uninterrupted run.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from conftest import TINY_EXPERIMENT, make_project, strip_timing, train_in_fresh_process, venv_env
from test_sweep import records, trained_count
from resnet_bench.sweep import results_dir
from resnet_bench.sweep import storage as ckpt_storage
from resnet_bench.sweep import trials

pytestmark = pytest.mark.slow

EPOCHS = 20  # ~0.25 s each on one idle core: a signal lands mid-cell
EXPERIMENT = {**TINY_EXPERIMENT, "recipe": {**TINY_EXPERIMENT["recipe"], "epochs": EPOCHS},
              "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1}}
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


@pytest.fixture
def env(tmp_path):
    """The sweep's environment: a private TMPDIR (its work dirs are checked), Ray's files in a
    short private dir (Unix socket paths are limited to 107 bytes)."""
    ray_tmp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    (tmp_path / "tmp").mkdir()
    yield {**venv_env(), "TMPDIR": str(tmp_path / "tmp"), "RAY_TMPDIR": ray_tmp}
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A cell config's record trained start to end in a fresh process (cached per cell id)."""
    done = {}

    def record(config: dict, prepared: Path) -> dict:
        if config["cell_id"] not in done:
            done[config["cell_id"]] = train_in_fresh_process(config, prepared, tmp_path_factory.mktemp("fresh"))
        return done[config["cell_id"]]

    return record


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def wait_gone(procs: list[psutil.Process], timeout_s: float = 90) -> list[str]:
    """Poll until every process has exited (zombies count as exited); what is left after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} {p.name()}")
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def wait_for(ready, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, "the run ended before the fault could be injected"
        assert time.monotonic() < deadline, "the run never reached the moment of the fault"
        time.sleep(0.05)


def mid_second_cell(project: Path):
    """One cell finished, the next one past its second epoch checkpoint."""
    cells, trial_dirs = project / "results" / "tiny" / "cells", project / "scratch" / "ray_results" / "train"
    return lambda: (len(list(cells.glob("*.json"))) == 1
                    and any(d.name not in {p.stem for p in cells.glob("*.json")}
                            for d in trial_dirs.glob("*") if (d / "checkpoint_000001").exists()))


def listeners(procs: list[psutil.Process]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of `procs` (psutil reads
    /proc/net/tcp and tcp6, as `ss -ltn` does, and maps sockets to processes by inode)."""
    out = []
    for p in procs:
        try:
            out += [(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="tcp")
                    if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            pass
    return out


def leftovers(project: Path, env: dict) -> list[str]:
    """Temp files of record writes and trial work dirs: what a clean stop leaves none of."""
    results = project / "results"
    temps = [str(p) for p in results.rglob("*.tmp")] + [str(p) for p in (results / "tiny" / "cells").glob(".*")]
    work = [str(p) for p in Path(env["TMPDIR"]).glob(f"{trials.WORKDIR_PREFIX}*")]
    return temps + work


def dvc(project: Path, env: dict, *args) -> subprocess.Popen:
    log = open(project / f"dvc-{len(list(project.glob('dvc-*.log')))}.log", "w")
    return subprocess.Popen(["dvc", *args], cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def check_rerun_identical(project: Path, env: dict, kept: dict, prepared: Path, uninterrupted) -> None:
    """A rerun keeps the finished cells as they were and resumes the other one from its
    checkpoint, with the numbers of an uninterrupted run."""
    proc = subprocess.run([sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared)], cwd=project,
                          env=env, capture_output=True, text=True, timeout=600)
    log = proc.stderr
    assert proc.returncode == 0 and trained_count(log) == 2 - len(kept), log
    assert "resuming from the checkpoint an interrupted sweep left" in log, log
    final = records(project)
    assert len(final) == 2 and all(final[k] == v for k, v in kept.items())
    (resumed,) = [r for k, r in final.items() if k not in kept]
    assert resumed["status"] == "ok" and resumed["attempts"][0]["first_epoch"] > 1, resumed["attempts"]
    assert [e["epoch"] for e in resumed["epochs"]] == list(range(1, EPOCHS + 1))
    assert strip_timing(resumed) == strip_timing(uninterrupted(resumed["config"], prepared))


def test_ctrl_c_to_dvc_repro_stops_the_sweep_on_loopback_and_a_rerun_is_identical(tmp_path, env, prepared_digits,
                                                                                  uninterrupted):
    project = make_project(tmp_path / "p", EXPERIMENT, git=True)
    # DVC runs a stage as `$SHELL -c CMD`, or `/bin/sh -c CMD` where SHELL is unset (as under CI). bash
    # execs a lone command, so DVC sees the sweep's own exit status; dash (Debian's /bin/sh) stays
    # between, gets the same Ctrl-C and dies of it once the sweep has exited (DVC: "exited with -2").
    proc = dvc(project, {**env, "SHELL": shutil.which("bash")}, "repro", "sweep")
    wait_for(mid_second_cell(project), proc)
    procs = tree(proc.pid)
    # A local sweep's Ray (GCS, raylet, object manager, workers, driver) listens on 127.0.0.1 only.
    listening = listeners(procs)
    assert any(name == "gcs_server" for name, _, _ in listening), listening
    assert {ip for _, ip, _ in listening} <= LOOPBACK, listening

    os.killpg(proc.pid, signal.SIGINT)  # the whole process group, as Ctrl-C in a terminal
    rc = proc.wait(timeout=120)
    assert not wait_gone(procs), "sweep processes outlived Ctrl-C"
    log = (project / "dvc-0.log").read_text()
    assert rc != 0 and "exited with 130" in log, log  # 128 + SIGINT, from the sweep itself
    assert "[sweep] stopped (SIGINT): 1/2 cell(s) finished and kept" in log and "[sweep] bench:" not in log, log
    assert "FAILED" not in log and not leftovers(project, env), log
    kept = records(project)
    assert [r["status"] for r in kept.values()] == ["ok"]
    check_rerun_identical(project, env, kept, project / "data" / "prepared", uninterrupted)


def test_sigterm_to_dvc_alone_stops_the_orphaned_sweep(tmp_path, env, prepared_digits, uninterrupted):
    project = make_project(tmp_path / "p", EXPERIMENT, git=True)
    proc = dvc(project, env, "repro", "sweep")
    wait_for(mid_second_cell(project), proc)
    procs = tree(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)  # `kill <dvc pid>`: DVC dies at once, its command is orphaned
    proc.wait(timeout=60)
    assert not wait_gone(procs), "the orphaned sweep (or its Ray) outlived DVC"
    log = (project / "dvc-0.log").read_text()
    # Told by the kernel (PR_SET_PDEATHSIG) or seen by the driver's watch of its parent, whichever is first.
    assert "exited: stopping the sweep" in log and "[sweep] stopped (its parent process" in log, log
    assert "1/2 cell(s) finished and kept" in log, log
    assert "FAILED" not in log and not leftovers(project, env), log
    kept = records(project)
    assert [r["status"] for r in kept.values()] == ["ok"]
    check_rerun_identical(project, env, kept, project / "data" / "prepared", uninterrupted)


def test_kill_between_record_write_and_rename_leaves_no_temp_in_cells(tmp_path, env, prepared_digits):
    exp = {**TINY_EXPERIMENT, "grid": {**TINY_EXPERIMENT["grid"], "versions": ["v2"]}}
    project = make_project(tmp_path / "p", exp)
    cells, staging = project / "results" / "tiny" / "cells", project / "results" / "tiny" / results_dir.STAGING
    hooked = {**env, results_dir.STOP_BEFORE_RENAME: "/cells/"}  # the driver stops itself right there
    proc = subprocess.Popen([sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared_digits)],
                            cwd=project, env=hooked, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED, proc)
    (temp,) = staging.glob("*.tmp")  # written, not yet renamed
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not list(cells.glob("*")), list(cells.glob("*"))  # nothing half-done inside the DVC-cached folder
    assert temp.exists()  # the temp is beside it

    proc = subprocess.run([sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared_digits)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert not temp.exists() and not list(cells.glob(".*")), "a stale temp was kept"
    (rec,) = records(project).values()
    assert rec["status"] == "ok"


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size) -> a real tmpfs of that size (root only; skips otherwise)."""
    mounted = []

    def mount(name: str, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): the full-disk tests need root")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def one_error(log: str) -> str:
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in log and "TuneError" not in log, log
    return errors[0]


def test_full_tmpdir_is_one_line_naming_the_disk(tmp_path, env, tmpfs, prepared_digits):
    exp = {**TINY_EXPERIMENT, "grid": {**TINY_EXPERIMENT["grid"], "versions": ["v2"]}}
    project = make_project(tmp_path / "p", exp)
    full = tmpfs("tmpdir", "64k")  # a trial's epoch checkpoint is ~0.6 MB
    proc = subprocess.run([sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared_digits)],
                          cwd=project, env={**env, "TMPDIR": str(full)}, capture_output=True, text=True, timeout=600)
    line = one_error(proc.stderr)
    assert proc.returncode == 1, proc.stderr
    assert f"disk full: no space left on {full} (tmpfs" in line and "TMPDIR" in line, line
    assert not records(project)  # not a failed cell: it stays pending
    assert not list(full.glob(f"{trials.WORKDIR_PREFIX}*"))


def test_full_results_disk_is_one_line_and_the_rerun_finishes_the_cell(tmp_path, env, tmpfs, prepared_digits,
                                                                        uninterrupted):
    # 8 epochs: the disk is filled after the first checkpoint, the record is written after the last.
    exp = {**EXPERIMENT, "grid": {**TINY_EXPERIMENT["grid"], "versions": ["v2"]},
           "recipe": {**EXPERIMENT["recipe"], "epochs": 8}}
    project = make_project(tmp_path / "p", exp)
    disk = tmpfs("results", "1m")
    results = disk / "tiny"
    argv = [sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared_digits),
            "--results", str(results)]
    proc = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list((project / "scratch" / "ray_results" / "train").glob("*/checkpoint_000000")), proc)
    filler = disk / "filler"
    with open(filler, "wb") as f:  # fill the disk while the cell trains
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    _, err = proc.communicate(timeout=600)
    line = one_error(err)
    assert proc.returncode == 1, err
    assert f"disk full: no space left on {disk} (tmpfs" in line and str(results / "cells") in line, line
    assert not list((results / "cells").glob("*")) and not list(disk.rglob("*.tmp")), "a partial write was left"
    trial_dirs = project / "scratch" / "ray_results" / "train"
    assert list(trial_dirs.glob("*/checkpoint_*")), "the cell's checkpoint was lost"

    filler.unlink()
    proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (rec,) = [json.loads(p.read_text()) for p in (results / "cells").glob("*.json")]
    assert strip_timing(rec) == strip_timing(uninterrupted(rec["config"], prepared_digits))


def test_bench_measurements_are_kept_when_the_driver_is_killed(tmp_path, env, prepared_digits):
    # Two depths of v1: two interleaved sets (one per depth), measured one after the other, seconds each
    # (v1 and v2 of one depth would be one set, both measured at once).
    exp = {**TINY_EXPERIMENT, "grid": {**TINY_EXPERIMENT["grid"], "versions": ["v1"], "depths": [18, 34]},
           "bench": {"enabled": True, "batch_size": 32, "warmup": 1, "repeats": 10, "steps_per_repeat": 5,
                     "remeasure": 0}}
    project = make_project(tmp_path / "p", exp)

    def benched() -> list[dict]:
        return [r for r in records(project).values() if r["metrics"].get("bench_train_img_per_s") is not None]

    proc = subprocess.Popen([sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared_digits)],
                            cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for(benched, proc)  # the first of the two measurements (v1, v2) is in
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    (kept,) = benched()
    assert kept["bench"]["train_img_per_s"] > 0
    other = next(r for r in records(project).values() if r["cell_id"] != kept["cell_id"])
    assert other["metrics"].get("bench_train_img_per_s") is None


def _checkpoint(d: Path, cell_id: str, epoch: int, payload: bytes) -> Path:
    d.mkdir(parents=True)
    (d / ckpt_storage.CKPT_FILE).write_bytes(payload)
    meta = ckpt_storage.checkpoint_meta(d / ckpt_storage.CKPT_FILE, cell_id, epoch)
    (d / ckpt_storage.CKPT_META).write_text(json.dumps(meta))
    return d


def test_damaged_checkpoints_are_never_loaded_and_the_next_whole_one_is_used(tmp_path):
    from ray import tune

    cid = "0123456789ab"
    storage = tmp_path / "storage"
    old = _checkpoint(storage / "resume" / cid, cid, 3, b"epoch 3 state")
    latest = _checkpoint(storage / "train" / cid / "checkpoint_000004", cid, 4, b"epoch 4 state")
    assert ckpt_storage.checkpoint_problem(str(latest), cid) is None
    # Truncated, as a copy cut short; then same size, other bytes; then another cell's.
    (latest / ckpt_storage.CKPT_FILE).write_bytes(b"epoch 4")
    assert "truncated" in ckpt_storage.checkpoint_problem(str(latest), cid)
    (latest / ckpt_storage.CKPT_FILE).write_bytes(b"epoch 4 STATE")
    assert "corrupt" in ckpt_storage.checkpoint_problem(str(latest), cid)
    assert "not 999999999999" in ckpt_storage.checkpoint_problem(str(old), "999999999999")
    # A FIFO in the metadata's place is not read (it would block).
    fifo = tmp_path / "fifo_ckpt"
    fifo.mkdir()
    os.mkfifo(fifo / ckpt_storage.CKPT_META)
    (fifo / ckpt_storage.CKPT_FILE).write_bytes(b"x")
    assert "not a file" in ckpt_storage.checkpoint_problem(str(fifo), cid)

    # Tune's retry hands back its latest (damaged): the trial takes the adopted epoch-3 one instead.
    candidates = trials._candidates(tune.Checkpoint(str(latest)), None, str(storage), cid)
    assert [w for w, _ in candidates] == ["Tune's latest", "stored"]
    work, notes = tmp_path / "work", []
    work.mkdir()
    assert trials._restore(work, cid, candidates, notes)
    assert (work / ckpt_storage.CKPT_FILE).read_bytes() == b"epoch 3 state"
    assert len(notes) == 1 and "Tune's latest checkpoint unusable" in notes[0] and "corrupt" in notes[0]
    # Nothing whole: from scratch, an empty work dir.
    (old / ckpt_storage.CKPT_FILE).write_bytes(b"")
    notes.clear()
    assert not trials._restore(work, cid, candidates, notes) and not list(work.iterdir()) and len(notes) == 2
    # Adoption after an interrupted sweep takes only whole checkpoints either.
    assert ckpt_storage.adopt_prior_checkpoint(str(storage), cid) is None


def test_work_dirs_of_dead_trials_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{trials.WORKDIR_PREFIX}0123456789ab-{dead.pid}-x1"
    live = tmp_path / f"{trials.WORKDIR_PREFIX}0123456789ab-{os.getpid()}-x2"
    other = tmp_path / f"{trials.WORKDIR_PREFIX}notacellid-{dead.pid}-x3"  # not a name a trial gives
    for d in (stale, live, other):
        d.mkdir()
        (d / ckpt_storage.CKPT_FILE).write_bytes(b"a whole checkpoint")
    assert trials.remove_stale_workdirs(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_a_write_into_a_mount_point_keeps_its_temp_on_that_disk(tmpfs):
    disk = tmpfs("disk", "1m")  # `--results` a mount point: its parent is another disk
    assert results_dir.staging_dir(disk / "expected_cells.json") == disk
    results_dir.staged_write(disk / "expected_cells.json", b'{"cells": 2}')
    assert json.loads((disk / "expected_cells.json").read_text()) == {"cells": 2}
    assert not list(disk.glob(".*")) and not (disk.parent / results_dir.STAGING).exists()
    (disk / "cells").mkdir()
    assert results_dir.staging_dir(disk / "cells" / "x.json") == disk / results_dir.STAGING


def write_driver_like(path: Path, stopping_s: float = 0) -> None:
    """A script that runs as the sweep driver does (lifecycle.guarded) until a stop: prints `ready`, then
    `stopped: <reason> <exit code> <signals counted>` after `stopping_s` of simulated stopping."""
    path.write_text(f"import sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
                    "from resnet_bench.sweep import lifecycle\n"
                    "with lifecycle.guarded() as stop:\n"
                    "    print('ready', flush=True); t = time.time()\n"
                    "    while not stop and time.time() - t < 60: time.sleep(0.05)\n"
                    f"    time.sleep({stopping_s})\n"
                    "    print('stopped:', stop.reason, stop.exit_code, stop.signals, flush=True)\n")


def test_a_sweep_under_a_shell_stops_when_the_shell_s_parent_dies(tmp_path):
    """DVC runs `$SHELL -c CMD`; a shell that does not exec CMD stays between DVC and the driver,
    so the kernel's parent-death signal never comes (the shell lives on): the driver's watch of
    its parent chain sees DVC go."""
    out = tmp_path / "out"
    write_driver_like(tmp_path / "driver.py")
    # outer ("dvc") -> sh -c "python driver.py; true" (the `; true` keeps sh from exec-ing) -> driver
    outer = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])",
                              "sh", "-c", f"{sys.executable} {tmp_path / 'driver.py'} > {out}; true"])
    deadline = time.monotonic() + 60
    while not (out.exists() and "ready" in out.read_text()):
        assert time.monotonic() < deadline and outer.poll() is None, "the driver never started"
        time.sleep(0.05)
    os.kill(outer.pid, signal.SIGKILL)
    outer.wait()
    while "stopped:" not in out.read_text():
        assert time.monotonic() < deadline + 60, "the driver did not notice its parent's parent exit"
        time.sleep(0.05)
    assert f"stopped: its parent process {outer.pid} (python" in out.read_text() and out.read_text().endswith(" 143 0\n")


def test_parent_death_signals_from_each_exiting_thread_of_the_parent_are_one_parent_exit(tmp_path):
    """PR_SET_PDEATHSIG fires when the *thread* that forked the driver exits: the driver is handed to a
    sibling thread of the same process (getppid() unchanged) and signalled, and again when the last thread
    exits. DVC is multi-threaded, so a `kill <dvc pid>` can do that: the driver must read both SIGTERMs as
    its parent's exit, not as a user's SIGTERM and then a second one ("again: stopping at once")."""
    out = tmp_path / "out"
    # stopping takes a while (Tune, Ray): the second signal comes meanwhile
    write_driver_like(tmp_path / "driver.py", stopping_s=3)
    # The parent: its main thread forks the driver, then exits alone (pthread_exit; ctypes drops the GIL
    # for the call) while a second thread lives 1.5 s longer and ends the process.
    parent = ("import ctypes, os, subprocess, sys, threading, time\n"
              f"out = open({str(out)!r}, 'w')\n"
              f"subprocess.Popen([sys.executable, {str(tmp_path / 'driver.py')!r}], stdout=out)\n"
              f"while 'ready' not in open({str(out)!r}).read(): time.sleep(0.05)\n"
              "threading.Thread(target=lambda: (time.sleep(1.5), os._exit(0))).start()\n"
              "ctypes.CDLL(None).pthread_exit(None)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent])
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while not (out.exists() and "stopped:" in out.read_text()):
        assert time.monotonic() < deadline, f"the driver did not stop cleanly: {out.read_text()!r}"
        time.sleep(0.05)
    assert re.search(rf"stopped: its parent process {proc.pid} \(python[^)]*\) exited 143 0\n", out.read_text()), \
        out.read_text()
