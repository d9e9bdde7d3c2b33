"""How a sweep run starts and ends: one sweep per results folder (a lock), a stop on the first
Ctrl-C or SIGTERM or when the process that started it exits (DVC killed), and what the run
leaves behind cleaned up.

A stop is cooperative, so that no record is cut in half: the signal handler only records the
reason; Tune's control loop raises `StopRequested` at its next step (`StopCheck`, every ~0.1 s),
Tune stops the running trials (a few seconds at most, then it kills them), `ray.shutdown()`
ends Ray's processes, and the driver says which cells are kept. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

# Shells DVC runs a stage's command with (`$SHELL -c CMD`); one may stand between DVC and the driver.
SHELLS = {"sh", "bash", "dash", "zsh", "fish", "ksh"}
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2  # <linux/prctl.h>


class StopRequested(Exception):
    """Raised in Tune's control loop once a stop is requested (Tune then stops its trials)."""


class Stop:
    """Why this sweep stops early, if it does: set once (the first reason wins)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.reason: str | None = None
        self.error: str | None = None  # an `error:` line (a full disk), or None for a signal
        self.exit_code = 0
        self.signals = 0
        self.parent: tuple[int, str] | None = None  # (pid, name) of the process that started the sweep

    def request(self, reason: str, exit_code: int, error: str | None = None) -> bool:
        if self.reason is not None:
            return False
        self.reason, self.exit_code, self.error = reason, exit_code, error
        return True

    def __bool__(self) -> bool:
        return self.reason is not None


STOP = Stop()


def _on_signal(signum, frame) -> None:
    name = signal.Signals(signum).name
    parent = STOP.parent
    if signum == signal.SIGTERM and parent and _parent_gone(parent[0]):
        # The kernel's parent-death signal (PR_SET_PDEATHSIG). It comes once per exiting thread of the
        # parent: a thread that dies hands us to a sibling thread (same pid) and signals us, the last one to
        # init. So it is not a user's second request, and while the parent is still dying getppid() can
        # still be its pid: ask whether the parent is gone or a zombie instead.
        _parent_exited(*parent)
        return
    STOP.signals += 1
    if STOP.signals > 1:
        raise KeyboardInterrupt(f"{name} again: stopping at once")
    if STOP.request(name, 128 + signum):
        print(f"[sweep] {name}: stopping the sweep (no new trials, no bench pass; running trials are stopped); "
              f"{'Ctrl-C' if signum == signal.SIGINT else name} again stops at once", file=sys.stderr, flush=True)


def _parent_gone(pid: int) -> bool:
    """The process that started the sweep has exited or is exiting (its leader thread a zombie)."""
    import psutil

    if os.getppid() != pid:
        return True
    try:
        return _gone(psutil.Process(pid))
    except psutil.Error:
        return True


def _parent_exited(pid: int, name: str) -> None:
    who = f"parent process {pid} ({name})"
    if STOP.request(f"its {who} exited", 128 + signal.SIGTERM):
        print(f"[sweep] {who} exited: stopping the sweep", file=sys.stderr, flush=True)


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM stop the sweep (call again after ray.init, which sets its own SIGTERM
    handler). Tune's own SIGINT handler is off (TUNE_DISABLE_SIGINT_HANDLER, set by `guarded`):
    it would swallow the first Ctrl-C and let the driver go on to the bench pass."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _on_signal)


@contextlib.contextmanager
def guarded():
    """The sweep's run: stopped by SIGINT, SIGTERM or its parent's exit; the caller's handlers,
    parent-death signal and environment restored afterwards (the driver may run in-process)."""
    STOP.reset()
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    saved_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    install_signal_handlers()
    done, saved_pdeathsig = threading.Event(), _parent_death_signal()
    watch_parent(done)
    try:
        yield STOP
    finally:
        done.set()
        _parent_death_signal(saved_pdeathsig)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if saved_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = saved_env


def stop_check():
    """A Tune callback that ends Tune's loop at its next step once a stop is requested."""
    from ray import tune

    class StopCheck(tune.Callback):
        def on_step_begin(self, iteration, trials, **info):
            if STOP:
                raise StopRequested(STOP.reason)

    return StopCheck()


# ---- the parent's exit ---------------------------------------------------------------------------


def _watched_parents() -> list[tuple]:
    """(process, name) of the parent, and above it every shell that only runs a `-c` command
    (DVC's `$SHELL -c CMD` when the shell does not exec it): if any of them exits, whoever
    started the sweep is gone."""
    import psutil

    chain, proc = [], psutil.Process(os.getppid())
    while proc is not None and len(chain) < 4:
        try:
            name = proc.name()
            chain.append((proc, name))
            proc = proc.parent() if name in SHELLS and "-c" in proc.cmdline()[1:] else None
        except psutil.Error:
            break
    return chain


def _gone(proc) -> bool:
    import psutil

    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE  # is_running checks pid reuse
    except psutil.Error:
        return True


def _parent_death_signal(sig: int | None = None) -> int:
    """The signal the kernel sends this process when its parent dies (0: none); set it to `sig`
    first if given. Linux only (elsewhere 0, and the polling thread alone watches the parent)."""
    if not sys.platform.startswith("linux"):
        return 0
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if sig is not None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    current = ctypes.c_int(0)
    prctl(PR_GET_PDEATHSIG, ctypes.byref(current), 0, 0, 0)
    return current.value


def watch_parent(done: threading.Event, poll_s: float = 0.5) -> None:
    """Stop when the process that started the sweep exits (`kill <dvc pid>`): the kernel sends
    SIGTERM when the parent dies (PR_SET_PDEATHSIG, Linux), and a thread polls the parent chain
    for the case a shell stands between (its parent, DVC, is then the one that dies). Until
    `done` is set."""
    _parent_death_signal(signal.SIGTERM)
    chain = _watched_parents()
    STOP.parent = (chain[0][0].pid, chain[0][1]) if chain else None

    def poll():
        while not (STOP or done.is_set()):
            gone = next(((p, name) for p, name in chain if _gone(p)), None)
            if gone is not None:
                _parent_exited(gone[0].pid, gone[1])
                return
            done.wait(poll_s)

    threading.Thread(target=poll, name="sweep-parent-watch", daemon=True).start()


# ---- one sweep per results folder ----------------------------------------------------------------


class LockedError(RuntimeError):
    """The results folder cannot be locked: another sweep holds it, or it cannot be written."""


LOCK_FILE = ".sweep.lock"


def lock_results(results_dir: Path):
    """An exclusive lock on `results_dir` for this process's life (flock: released by the kernel
    however the process ends). LockedError, naming the holder, when another sweep has it."""
    path = results_dir / LOCK_FILE
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except OSError as err:
        raise LockedError(f"cannot create {path}: {err.strerror or err}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown pid"
        f.close()
        raise LockedError(f"{results_dir} is in use by another sweep ({holder}); wait for it to finish, or stop "
                          "it, then rerun") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    return f  # keep it open: closing it releases the lock


# ---- leftovers of killed runs --------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


# A record's temp file: `.<name>.<pid>.tmp` (resnet_bench.sweep.results_dir.staged_write).
_TEMP = re.compile(r"^\.[^/]+\.(\d+)\.tmp$")


def clean_stale_temps(folders: list[Path]) -> list[Path]:
    """Remove record temp files whose writer is dead (a kill between write and rename)."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = _TEMP.match(p.name)
            if m and p.is_file() and not pid_alive(int(m.group(1))):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
