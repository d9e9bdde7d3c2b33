"""The `sweep` stage: every cell of the experiment's grid as a Ray Tune trial.

Two phases:
1. train: each pending cell trains as one trial, concurrently as resources
   allow. The driver writes the cell's result file
   (`results/<experiment>/cells/<id>.json`)
   atomically the moment the trial ends, so a killed sweep loses no finished
   cell, and a rerun trains only cells without a result (failed ones again).
2. bench: throughput/memory of each distinct architecture x input shape,
   one measurement at a time (never two timing runs sharing a GPU or the
   CPUs), merged into the cells' records.

Local Ray by default; `RAY_ADDRESS` or `sweep.ray_address` joins a cluster.
Fault tolerance is Ray Tune's: every epoch's checkpoint is reported to Tune,
which persists it under `storage_path`; a trial whose worker or node dies is
retried up to `sweep.max_failures` times and resumes from its last checkpoint
on any node. A cell that exhausts its retries is recorded `failed`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path


from resnet_bench import config as cfg

# The train_cell checkpoint file inside each Tune checkpoint directory, and beside it its
# size in bytes (JSON), so that a copy to storage cut short by a kill is recognised as such.
CKPT_FILE, CKPT_META = "cell.pt", "cell.json"
# Retries of a trial whose worker/node died, when params.yaml has no sweep.max_failures.
DEFAULT_MAX_FAILURES = 2


def atomic_write_json(path: Path, obj) -> None:
    """Write JSON via a temp file + rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # absent or unreadable: the cell is pending


def plan(cells: list[cfg.Cell], cells_dir: Path) -> tuple[list[cfg.Cell], list[cfg.Cell]]:
    """Split cells into (done, pending). Done: a result for the same id with status ok or diverged.

    Diverged is a result (the same seed diverges again); failed cells are retried.
    """
    done, pending = [], []
    for cell in cells:
        rec = read_record(cells_dir / f"{cell.cell_id}.json")
        (done if rec and rec.get("status") in ("ok", "diverged") else pending).append(cell)
    return done, pending


def failure_record(cell: cfg.Cell | dict, error: str, epochs=None, provenance: dict | None = None) -> dict:
    from resnet_bench.env import environment
    from resnet_bench.train import utcnow

    cell = cell if isinstance(cell, cfg.Cell) else cfg.Cell.model_validate(cell)
    return {"cell_id": cell.cell_id, "status": "failed", "error": error, "config": cell.to_dict(),
            "metrics": {}, "epochs": epochs or [], "env": environment(cell.runtime.device),
            "provenance": dict(provenance or {}),
            "started_at": None, "finished_at": utcnow(), "wall_s": None}


def bench_key(cell: cfg.Cell, meta: dict) -> str:
    """Cells that share architecture, input shape and bench settings share one measurement."""
    payload = cell.model_dump(mode="json", include={"model", "unit", "arch", "bench"})
    payload["runtime"] = cell.runtime.model_dump(mode="json", include={"device", "amp", "channels_last", "compile"})
    payload["input"] = [meta["channels"], meta["height"], meta["width"], meta["num_classes"]]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# ---- trial functions: run in Ray worker processes -------------------------------------------


def train_trial(trial_config: dict) -> None:
    """One cell. Reports the whole record as the final result; never raises for a cell error.

    Every epoch's checkpoint goes to Tune (`tune.report(..., checkpoint=...)`), which copies it
    to `storage_path`; when Tune retries the trial after its worker or node died, possibly on
    another node, `tune.get_checkpoint()` hands it back and training resumes after that epoch.
    A trial's process dying is left to Tune (not caught): that is what triggers the retry.
    """
    from ray import tune

    from resnet_bench.env import node_info
    from resnet_bench.train import train_cell

    cell = cfg.Cell.model_validate(trial_config["cell"])  # validated again on arrival
    config, paths = trial_config["cell"], trial_config["paths"]
    provenance = trial_config.get("provenance") or {}
    node = node_info()
    epochs: list[dict] = []
    # A private local directory: the checkpoint is written here, then Tune copies it to storage.
    work = Path(tempfile.mkdtemp(prefix=f"resnet-bench-{config['cell_id']}-"))
    try:
        restored = tune.get_checkpoint()
        if restored is None and trial_config.get("resume_from"):
            # Left by an earlier sweep that was killed mid-cell (see adopt_prior_checkpoint).
            restored = tune.Checkpoint(trial_config["resume_from"])
        if restored is not None:
            restored.to_directory(str(work))

        def on_checkpoint(path: Path, rec: dict) -> None:
            meta = {"cell_id": config["cell_id"], "epoch": rec["epoch"], "bytes": path.stat().st_size}
            (path.parent / CKPT_META).write_text(json.dumps(meta))
            tune.report({"final": False, "epoch": rec["epoch"], "epoch_json": json.dumps(rec), **node},
                        checkpoint=tune.Checkpoint.from_directory(str(path.parent)))

        try:
            record = train_cell(cell, paths["prepared_dir"], checkpoint_path=work / CKPT_FILE,
                                on_epoch=epochs.append, on_checkpoint=on_checkpoint, provenance=provenance)
        except Exception as err:  # recorded, never swallowed: the record carries the traceback
            tb = traceback.format_exc(limit=-8)
            record = failure_record(cell, f"{type(err).__name__}: {err}\n{tb}", epochs,
                                    {**provenance, "node": node})
        record["node"] = node
        tune.report({"final": True, "record_json": json.dumps(record, default=str), **node})
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_trial(trial_config: dict) -> None:
    from ray import tune

    from resnet_bench.bench import benchmark_model
    from resnet_bench.env import node_info
    from resnet_bench.train import build_cell_model

    cell, meta = cfg.Cell.model_validate(trial_config["cell"]), trial_config["meta"]
    b, rt = cell.bench, cell.runtime
    try:
        if rt.device == "cpu" and rt.threads:
            import torch

            torch.set_num_threads(rt.threads)
        result = benchmark_model(
            lambda: build_cell_model(cell, meta["num_classes"], meta["channels"]),
            batch_size=b.batch_size, img_size=b.img_size or meta["height"], in_channels=meta["channels"],
            num_classes=meta["num_classes"], device=rt.device, amp=rt.amp,
            channels_last=rt.channels_last, compile=rt.compile,
            warmup=b.warmup, repeats=b.repeats, steps_per_repeat=b.steps_per_repeat)
        out = {"status": "ok", "result": {**result, "node": node_info()}}
    except Exception as err:
        out = {"status": "failed", "error": f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-6)}"}
    tune.report({"final": True, "bench_json": json.dumps(out, default=str)})


# ---- driver --------------------------------------------------------------------------------


def _short(node_id: str | None) -> str:
    return (node_id or "?")[:8]


class Progress:
    """The `[sweep]` console lines: cells done/total, failures, time left, per-cell node and retries.

    The estimate of time left counts epochs, not cells: the median wall time of an epoch
    (between a cell's consecutive epoch reports; a cell's first epoch also holds its start-up)
    times the epochs the unfinished cells still have to train, divided by the trials that
    run at once (`concurrency`).
    """

    def __init__(self, total: int, already: int, pending: list[dict], stream=sys.stderr,
                 epoch_every_s: float = 30.0, concurrency: int = 1):
        self.total, self.done, self.failed = total, already, 0
        self.stream, self.epoch_every_s, self.concurrency = stream, epoch_every_s, max(1, concurrency)
        self.epochs_left = {c["cell_id"]: c["recipe"]["epochs"] for c in pending}
        self.epochs_total = dict(self.epochs_left)
        self.t_start = time.perf_counter()
        self.epoch_s: list[float] = []  # wall seconds of each reported epoch
        self._last_epoch: dict[str, float] = {}
        self._last_line: dict[str, float] = {}

    def started(self, cell_id: str) -> None:
        """A trial (re)started: its next epoch is timed from now, not from the phase start."""
        self._last_epoch[cell_id] = time.perf_counter()

    def eta_s(self) -> float:
        if not self.epoch_s:
            return float("nan")
        left = [n for n in self.epochs_left.values() if n > 0]
        at_once = max(1, min(self.concurrency, len(left)))
        return sum(left) * statistics.median(self.epoch_s) / at_once

    def _print(self, text: str) -> None:
        print(f"[sweep] {self.done}/{self.total} cells, {self.failed} failed, ~{_fmt_s(self.eta_s())} left"
              f" | {text}", file=self.stream, flush=True)

    def epoch(self, cell_id: str, label: str, epoch: int, node: dict, retries: int,
              first_of_attempt: bool) -> None:
        """One trained epoch; printed for an attempt's first epoch, then at most every epoch_every_s."""
        now = time.perf_counter()
        self.epoch_s.append(now - self._last_epoch.get(cell_id, self.t_start))
        self._last_epoch[cell_id] = now
        if cell_id in self.epochs_left:
            self.epochs_left[cell_id] = max(0, self.epochs_total[cell_id] - epoch)
        if first_of_attempt or now - self._last_line.get(cell_id, -math.inf) >= self.epoch_every_s:
            self._last_line[cell_id] = now
            retry = f", retry {retries}" if retries else ""
            self._print(f"{label}: epoch {epoch}/{self.epochs_total.get(cell_id, '?')} on "
                        f"{node.get('hostname')} (node {_short(node.get('node_id'))}){retry}")

    def note(self, text: str) -> None:
        self._print(text)

    def update(self, label: str, status: str, detail: str = "", cell_id: str | None = None) -> None:
        """A cell ended (ok, diverged or failed for good)."""
        self.done += 1
        self.failed += status == "failed"
        self.epochs_left.pop(cell_id, None)
        self._print(f"{label}: {status} {detail}")


def _fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _trial_error(trial) -> str:
    """The last lines of the error Tune recorded for a trial (the driver keeps the error file)."""
    err = getattr(trial, "error_file", None)
    try:
        return Path(err).read_text()[-2000:] if err else "trial process failed"
    except OSError:
        return "trial process failed"


def _cause_line(text: str, limit: int = 160) -> str:
    """The line naming the cause: Tune's error file starts with 'Failure # n (occurred at ...)'."""
    lines = [l.strip() for l in (text or "").splitlines() if l.strip() and not l.startswith("Failure #")]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _record_writer(cells_dir: Path, storage: str, progress: Progress, max_failures: int):
    from ray import tune

    class WriteRecord(tune.Callback):
        """Runs in the driver: persists each cell the moment its trial reports the final record.

        It also keeps, per cell, the attempts Tune made (node, first and last epoch trained,
        why it ended), so a record shows where it was trained and that a retried trial resumed
        after its last checkpoint instead of starting over.
        """

        def __init__(self):
            self.attempts: dict[str, list[dict]] = {}
            self.retries: dict[str, int] = {}

        def _attempt(self, cell_id: str) -> dict | None:
            runs = self.attempts.get(cell_id) or []
            return runs[-1] if runs and runs[-1].get("open") else None

        def on_trial_start(self, iteration, trials, trial, **info):
            # Tune calls this for the first start and for each restart after on_trial_recover.
            cid = trial.config["trial"]["cell"]["cell_id"]
            progress.started(cid)
            if self._attempt(cid) is None:
                self.attempts.setdefault(cid, []).append(
                    {"open": True, "node": None, "first_epoch": None, "last_epoch": None, "error": None})

        def on_trial_result(self, iteration, trials, trial, result, **info):
            cell = trial.config["trial"]["cell"]
            cid = cell["cell_id"]
            run = self._attempt(cid)
            if run is None:  # a result without a start event: count it as a fresh attempt
                self.on_trial_start(iteration, trials, trial)
                run = self._attempt(cid)
            node = {k: result.get(k) for k in ("node_id", "hostname", "ip")}
            first = run["node"] is None
            run["node"] = node
            if not result.get("final"):
                run["first_epoch"] = run["first_epoch"] or result["epoch"]
                run["last_epoch"] = result["epoch"]
                run.setdefault("epochs", []).append(json.loads(result["epoch_json"]))
                progress.epoch(cid, _label(cell), result["epoch"], node, self.retries.get(cid, 0), first)
                return
            record = json.loads(result["record_json"])
            run["open"] = False
            record["retries"] = self.retries.get(cid, 0)
            record["attempts"] = self._public_attempts(cid)
            atomic_write_json(cells_dir / f"{record['cell_id']}.json", record)
            m = record.get("metrics", {})
            detail = (f"test_acc={m['test_acc']:.4f}" if m.get("test_acc") is not None
                      else _cause_line(record.get("error") or ""))
            detail += f" on {node['hostname']} (node {_short(node['node_id'])})"
            if record["retries"]:
                detail += f" after {record['retries']} retr{'y' if record['retries'] == 1 else 'ies'}"
            progress.update(_label(record["config"]), record["status"], detail, cid)

        def on_trial_complete(self, iteration, trials, trial, **info):
            cid = trial.config["trial"]["cell"]["cell_id"]
            rec = read_record(cells_dir / f"{cid}.json")
            if rec and rec.get("status") in ("ok", "diverged"):
                # Finished for good: its resume checkpoints are no longer needed.
                drop_checkpoints(storage, cid)

        def on_trial_recover(self, iteration, trials, trial, **info):
            # The trial's worker or node died; Tune restarts it from its last checkpoint.
            cell = trial.config["trial"]["cell"]
            cid = cell["cell_id"]
            self.retries[cid] = self.retries.get(cid, 0) + 1
            run = self._attempt(cid)
            cause = _cause_line(_trial_error(trial))
            last = run["last_epoch"] if run else None
            if run:
                run.update(open=False, error=cause)
            where = f" on {run['node']['hostname']} (node {_short(run['node']['node_id'])})" \
                if run and run["node"] else ""
            limit = "unlimited" if max_failures < 0 else str(max_failures)
            progress.note(f"{_label(cell)}: trial died{where}: {cause}; retry {self.retries[cid]}/{limit} "
                          f"from {'epoch ' + str(last) + ' checkpoint' if last else 'the start'}")

        def on_trial_error(self, iteration, trials, trial, **info):
            # Out of retries (or max_failures=0): recorded failed with the cause; the others go on.
            config = trial.config["trial"]["cell"]
            cid = config["cell_id"]
            path = cells_dir / f"{cid}.json"
            rec = read_record(path)
            if rec and rec.get("status") in ("ok", "diverged"):
                return
            err = _trial_error(trial)
            run = self._attempt(cid)
            cause = _cause_line(err)
            if run:
                run.update(open=False, error=cause)
            epochs = [e for a in self.attempts.get(cid, []) for e in a.get("epochs", [])]
            record = failure_record(config, f"TrialError after {self.retries.get(cid, 0)} retries: {cause}\n{err}",
                                    _dedupe_epochs(epochs))
            record["retries"] = self.retries.get(cid, 0)
            record["attempts"] = self._public_attempts(cid)
            record["node"] = (run or {}).get("node")
            atomic_write_json(path, record)
            progress.update(_label(config), "failed", cause, cid)

        def _public_attempts(self, cid: str) -> list[dict]:
            return [{k: a[k] for k in ("node", "first_epoch", "last_epoch", "error")}
                    for a in self.attempts.get(cid, [])]

    return WriteRecord()


def _dedupe_epochs(epochs: list[dict]) -> list[dict]:
    """One record per epoch number, the latest attempt's (a retry re-trains after its checkpoint)."""
    by_epoch = {e["epoch"]: e for e in epochs}
    return [by_epoch[k] for k in sorted(by_epoch)]


def _label(c: dict) -> str:
    unit = "" if c["unit"] in cfg.VERSION_UNIT.values() else f"[{c['unit']}]"
    return f"{c['model']}{unit}/{c['dataset']}/seed{c['seed']}"


# ---- checkpoints in storage ----------------------------------------------------------------
# Tune keeps a trial's checkpoints in <storage>/train/<cell_id>/checkpoint_NNNNNN/ (the trial
# directory is named by cell id, see _run_tuner). A checkpoint left there by a sweep that was
# killed is moved to <storage>/resume/<cell_id>/ before the next sweep, whose fresh trial
# would otherwise overwrite it with its own checkpoint_000000.


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def _join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def _checkpoint_dirs(storage: str, cell_id: str) -> list[str]:
    """URIs of the cell's Tune checkpoints in storage, oldest first (by Tune's index)."""
    import pyarrow.fs

    trial_uri = _join(storage, "train", cell_id)
    fs, path = _fs(trial_uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    names = sorted(info.base_name for info in fs.get_file_info(pyarrow.fs.FileSelector(path))
                   if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_"))
    return [_join(trial_uri, n) for n in names]


def _exists(uri: str) -> bool:
    import pyarrow.fs

    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def _delete_dir(uri: str) -> None:
    fs, path = _fs(uri)
    if _exists(uri):
        fs.delete_dir(path)


def is_complete_checkpoint(uri: str) -> bool:
    """Both files are there and the checkpoint has the size its metadata says (Tune's copy to
    storage is not atomic: a sweep killed mid-copy leaves a truncated file)."""
    fs, path = _fs(_join(uri, CKPT_FILE))
    info = fs.get_file_info(path)
    if not _exists(_join(uri, CKPT_META)) or info.size is None:
        return False
    meta_fs, meta_path = _fs(_join(uri, CKPT_META))
    try:
        with meta_fs.open_input_stream(meta_path) as f:
            meta = json.loads(f.readall())
    except (OSError, ValueError):
        return False
    return meta.get("bytes") == info.size


def adopt_prior_checkpoint(storage: str, cell_id: str) -> str | None:
    """The URI of the newest complete checkpoint an earlier, interrupted sweep left for this
    cell (moved to <storage>/resume/<cell_id>), or None."""
    import pyarrow.fs

    resume = _join(storage, "resume", cell_id)
    dirs = [d for d in _checkpoint_dirs(storage, cell_id) if is_complete_checkpoint(d)]
    if dirs:
        # The trial dir's checkpoints are newer than resume/: that run started from resume/.
        _delete_dir(resume)
        src_fs, src = _fs(dirs[-1])
        dst_fs, dst = _fs(resume)
        dst_fs.create_dir(dst)
        pyarrow.fs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)
    for d in _checkpoint_dirs(storage, cell_id):
        _delete_dir(d)
    return resume if is_complete_checkpoint(resume) else None


def drop_checkpoints(storage: str, cell_id: str) -> None:
    """A finished cell's checkpoints (Tune's and an adopted one) are no longer needed."""
    for d in _checkpoint_dirs(storage, cell_id):
        _delete_dir(d)
    _delete_dir(_join(storage, "resume", cell_id))


# ---- Ray -----------------------------------------------------------------------------------


def init_ray(address: str | None, quiet: bool = True, stream=sys.stderr,
             env_vars: dict[str, str] | None = None) -> Path:
    """Start or join Ray; print which cluster was joined and its nodes. Returns Ray's log dir.

    With `quiet`, Ray's own output goes to files in the Ray session's log directory, not the
    terminal: worker stdout/stderr stay there (log_to_driver=False), Ray's and Tune's Python
    loggers write to `sweep-driver.log`, and what Ray prints on the driver's stdout (a dead
    raylet's last log lines, hundreds of `[state-dump]` lines) to `sweep-driver.out`.
    The `[sweep]` lines go to stderr and stay on the terminal.
    """
    import logging

    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no per-trial CSV/TB files
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    kwargs = {"log_to_driver": not quiet, "logging_level": logging.WARNING, "include_dashboard": False}
    # Set in every worker before it starts, so before torch loads (the numeric pin, env.py).
    worker_env = dict(env_vars or {})
    if address:
        kwargs = {"address": address, "log_to_driver": not quiet, "logging_level": logging.WARNING}
    else:
        # Ray workers must import this package from the same place as the driver.
        worker_env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])
    if worker_env:
        kwargs["runtime_env"] = {"env_vars": worker_env}
    ctx = ray.init(**kwargs)
    log_dir = Path(ctx.address_info["session_dir"]) / "logs"
    if quiet:
        _route_ray_logging(log_dir / "sweep-driver.log")
    # Tune's result-grid summary warns that per-trial result files are absent: they are
    # disabled on purpose (records are written by our callback), so keep that quiet.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # ray.init() with no address joins a cluster started on this machine with `ray start`
    # (Ray's convention), so say which one this is.
    started = bool(getattr(ray._private.worker._global_node, "head", False))
    how = "started a local Ray instance" if started else "joined the Ray cluster"
    print(f"[sweep] {how} at {ctx.address_info['gcs_address']}; Ray logs in {log_dir}",
          file=stream, flush=True)
    for line in describe_nodes(ray.nodes()):
        print(f"[sweep]   {line}", file=stream, flush=True)
    return log_dir


@contextlib.contextmanager
def ray_session(address: str | None, quiet: bool = True, stream=sys.stderr, env_vars: dict | None = None):
    """Ray from init to shutdown; with `quiet`, the driver's stdout goes to Ray's log dir meanwhile.

    Ray's driver thread that relays cluster errors (ray._private.worker.listen_error_messages)
    prints them to whatever `sys.stdout` is at that moment; the sweep itself prints only to stderr.
    """
    import ray

    saved = sys.stdout
    log_dir = init_ray(address, quiet=quiet, stream=stream, env_vars=env_vars)
    out = open(log_dir / "sweep-driver.out", "a", buffering=1) if quiet else None
    if out:
        sys.stdout = out
    try:
        yield log_dir
    finally:
        ray.shutdown()
        sys.stdout = saved
        if out:
            out.close()


def describe_nodes(nodes: list[dict]) -> list[str]:
    """One line per alive node of `ray.nodes()`: id, host, IP, CPUs/GPUs, head or worker."""
    out = []
    for n in nodes:
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        role = "head" if "node:__internal_head__" in res else "worker"
        out.append(f"node {_short(n.get('NodeID'))} {n.get('NodeManagerHostname')} {n.get('NodeManagerAddress')}"
                   f" ({role}): {res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU")
    return out


def _route_ray_logging(path: Path) -> None:
    """Ray's and Tune's Python loggers write to `path` instead of the terminal."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.addHandler(handler)
        logger.propagate = False


def check_resources(resources: cfg.Resources) -> None:
    """A trial asking for more than the cluster has is an error up front, not a hang."""
    import ray

    have = ray.cluster_resources()
    for key, name in (("cpus_per_trial", "CPU"), ("gpus_per_trial", "GPU")):
        want = getattr(resources, key)
        if want > have.get(name, 0):
            raise cfg.ConfigError(
                f"resources.{key}={want} but the Ray cluster has {have.get(name, 0)} {name}(s); "
                f"lower it or join a cluster with {name}s (RAY_ADDRESS / sweep.ray_address)")


def _run_tuner(fn, configs: list[dict], *, resources: dict, max_concurrent, name: str,
               storage_path: str, callbacks, max_failures: int = 0) -> None:
    from ray import tune

    trainable = tune.with_resources(fn, resources)
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, num_samples=1, reuse_actors=True,
                                    trial_name_creator=lambda t: t.config["trial"]["cell"]["cell_id"],
                                    trial_dirname_creator=lambda t: t.config["trial"]["cell"]["cell_id"]),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, verbose=0, callbacks=callbacks, log_to_file=True,
            # A trial whose worker or node died is restarted from its latest checkpoint.
            failure_config=tune.FailureConfig(max_failures=max_failures),
            # Only the newest checkpoint is needed to resume (each is a whole model + optimiser).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    tuner.fit()


def _unwrap(fn):
    """Tune passes {'trial': {...}}; trial functions take the inner dict."""
    def trial(config):
        return fn(config["trial"])
    trial.__name__ = fn.__name__
    return trial


def run_train_phase(pending: list[cfg.Cell], *, paths, exp: cfg.Experiment, cells_dir, storage_path: str,
                    progress, max_failures: int, provenance: dict) -> None:
    res = exp.resources
    configs = []
    for c in pending:
        resume = adopt_prior_checkpoint(storage_path, c.cell_id)
        if resume:
            progress.note(f"{c.label()}: resuming from the checkpoint an interrupted sweep left")
        configs.append({"cell": c.to_dict(), "paths": paths, "resume_from": resume, "provenance": provenance})
    # Tune reports per epoch (with the checkpoint) + the final record; the callback persists it.
    _run_tuner(_unwrap(train_trial), configs,
               resources={"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial},
               max_concurrent=res.max_concurrent, name="train", storage_path=storage_path,
               callbacks=[_record_writer(cells_dir, storage_path, progress, max_failures)],
               max_failures=max_failures)


def _bench_pass(configs: list[dict], *, exp, storage_path: str, name: str) -> dict[str, dict]:
    """One Tune run over bench configs; {key: {"status": ..., ...}} for those that reported."""
    from ray import tune

    results: dict[str, dict] = {}

    class Collect(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("final"):
                results[trial.config["trial"]["key"]] = json.loads(result["bench_json"])

    gpus = exp.resources.gpus_per_trial
    # A timing run holds a whole GPU, or, on CPU, runs alone (max_concurrent=1) so no
    # other trial shares the cores it is timed on.
    resources = {"cpu": exp.resources.cpus_per_trial, "gpu": 1 if gpus > 0 else 0}
    _run_tuner(_unwrap(bench_trial), configs, resources=resources,
               max_concurrent=None if gpus > 0 else 1, name=name,
               storage_path=storage_path, callbacks=[Collect()])
    return results


def bench_groups(cells: list[cfg.Cell], cells_dir: Path, metas: dict[str, dict]) -> dict[str, list[cfg.Cell]]:
    """Ok cells still lacking a bench measurement, grouped by what one measurement covers."""
    groups: dict[str, list[cfg.Cell]] = {}
    for cell in cells:
        rec = read_record(cells_dir / f"{cell.cell_id}.json")
        if not rec or rec["status"] != "ok" or not cell.bench.enabled:
            continue
        if rec["metrics"].get("bench_train_img_per_s") is not None:
            continue
        groups.setdefault(bench_key(cell, metas[cell.dataset]), []).append(cell)
    return groups


def run_bench_phase(groups: dict[str, list[cfg.Cell]], *, metas: dict[str, dict], cells_dir: Path,
                    exp: cfg.Experiment, storage_path: str, stream=sys.stderr) -> int:
    """Bench every distinct architecture once, alone on its device; merge into cell records.

    A measurement that fails (an error, or its worker/node died) is retried once in a second
    pass. Returns the number of measurements that failed both times.
    """
    if not groups:
        return 0
    configs = {k: {"cell": g[0].to_dict(), "meta": metas[g[0].dataset], "key": k} for k, g in groups.items()}
    print(f"[sweep] bench: {len(configs)} distinct architecture(s), one at a time", file=stream, flush=True)
    results = _bench_pass(list(configs.values()), exp=exp, storage_path=storage_path, name="bench")
    again = [k for k in configs if results.get(k, {}).get("status") != "ok"]
    if again:
        print(f"[sweep] bench: {len(again)} measurement(s) failed, retrying once", file=stream, flush=True)
        results.update(_bench_pass([configs[k] for k in again], exp=exp, storage_path=storage_path,
                                   name="bench-retry"))
    failed = 0
    for key, group in groups.items():
        out = results.get(key, {"status": "failed", "error": "bench trial did not report (its worker died)"})
        for cell in group:
            path = cells_dir / f"{cell.cell_id}.json"
            rec = read_record(path)
            if out["status"] == "ok":
                r = out["result"]
                rec["metrics"].update({
                    "bench_train_img_per_s": r.get("train_img_per_s"),
                    "bench_infer_img_per_s": r.get("infer_img_per_s"),
                    "peak_mem_bytes": r.get("peak_mem_bytes"),
                    "saved_activation_bytes": r.get("saved_activation_bytes"),
                    "peak_rss_bytes": r.get("peak_rss_bytes"),
                    "bench_batch_size": r.get("batch_size"),
                })
                rec["bench"] = r
                rec.pop("bench_error", None)  # an earlier failed measurement is superseded
            else:
                rec["bench_error"] = out["error"]
            atomic_write_json(path, rec)
        if out["status"] != "ok":
            failed += 1
            print(f"[sweep] bench FAILED {group[0].label()}: {_cause_line(out['error'])}", file=stream,
                  flush=True)
    return failed


def storage_uri(value: str | None) -> str:
    """Tune storage as a URI or absolute path: s3://, gs://... kept as is; local paths resolved."""
    value = value or "scratch/ray_results"
    return value if "://" in value else str(Path(value).resolve())


def check_address(address: str | None) -> None:
    """Ray Client (`ray://`) is refused: under it Tune runs its driver loop as an actor on the
    head node (ray.tune.Tuner, client mode), so the result files would be written there."""
    if address and address.startswith("ray://"):
        raise cfg.ConfigError(
            f"Ray address {address!r} (RAY_ADDRESS / sweep.ray_address) uses Ray Client, which runs the "
            f"sweep's driver on the head node; valid: run the sweep on a node of the cluster with the "
            f"GCS address, e.g. <head-ip>:6379, or unset it for local Ray")


def parse_args(argv):
    from resnet_bench.argparsing import Parser

    p = Parser(prog="resnet-bench sweep", description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--experiments-dir", default="experiments")
    p.add_argument("--prepared-dir", default="data/prepared")
    p.add_argument("--results-dir", help="this experiment's results folder (default: results/<experiment>)")
    p.add_argument("--storage-path", help="Ray Tune storage (shared path for multi-node runs)")
    p.add_argument("--ray-address", help="join this Ray cluster (default: RAY_ADDRESS, else local)")
    p.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even if cells failed, so the report goes ahead with the gaps shown")
    p.add_argument("--dry-run", action="store_true", help="validate everything, print the plan and exit")
    return p.parse_args(argv)


def check_prepared(params: cfg.Params, exp: cfg.Experiment, prepared_dir: Path) -> dict[str, cfg.DataIdentity]:
    """Every dataset of the grid prepared, with the split params.yaml asks for; their identities."""
    problems, data = [], {}
    for ds in exp.grid.datasets:
        path = prepared_dir / ds
        if not (path / "meta.json").is_file():
            problems.append(f"{path}: prepared dataset missing; run `dvc repro` (its prepare stage) first")
            continue
        try:
            ident = cfg.data_identity(path)
        except cfg.ConfigError as err:
            problems += err.problems
            continue
        want = (params.prepare.val_fraction, params.prepare.split_seed)
        if (ident.val_fraction, ident.split_seed) != want:
            problems.append(f"{path}: prepared with val_fraction {ident.val_fraction}, split_seed "
                            f"{ident.split_seed} but params.yaml prepare asks for {want[0]}, {want[1]}; "
                            "rerun its prepare stage (`dvc repro`)")
            continue
        data[ds] = ident
    if problems:
        raise cfg.ConfigError(problems)
    return data


def check_local_gpus(exp: cfg.Experiment, address: str | None) -> None:
    """Without a cluster, a GPU experiment needs this machine's GPUs: refuse before Ray starts."""
    if address or exp.resources.gpus_per_trial <= 0:
        return
    import torch

    have = torch.cuda.device_count()
    if exp.resources.gpus_per_trial > have:
        raise cfg.ConfigError(
            f"resources.gpus_per_trial: {exp.resources.gpus_per_trial} but this machine has {have} GPU(s) and no "
            "Ray cluster is given; set gpus_per_trial 0 (and device auto/cpu, amp none), or join a cluster "
            "with RAY_ADDRESS / sweep.ray_address")


def experiment_summary(exp: cfg.Experiment) -> dict:
    """What results/<experiment>/experiment.json holds: the resolved experiment and the paper check."""
    out = exp.model_dump(mode="json")
    mismatch = cfg.paper_mismatches(exp)
    out["paper_comparable"] = exp.paper is not None and not mismatch
    out["paper_mismatch"] = [] if out["paper_comparable"] else mismatch
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from resnet_bench.env import code_fingerprint, git_info, pinned_env

    # Validate everything before Ray starts or anything trains: the whole grid at once.
    try:
        params = cfg.load_params(args.params)
        resolved = cfg.resolve_experiment(params, args.experiments_dir, params_label=args.params)
        exp = resolved.experiment
        prepared_dir = Path(args.prepared_dir).resolve()
        data = check_prepared(params, exp, prepared_dir)
        cells = cfg.expand_grid(exp, data=data, code_fingerprint=code_fingerprint())
        address = args.ray_address or params.sweep.ray_address or os.environ.get("RAY_ADDRESS")
        check_address(address)
        check_local_gpus(exp, address)
    except cfg.ConfigError as err:
        print("\n".join(f"error: {line}" for line in err.problems), file=sys.stderr)
        return 2
    results_dir = Path(args.results_dir or Path("results") / exp.name)
    cells_dir = results_dir / "cells"
    metas = {ds: json.loads((prepared_dir / ds / "meta.json").read_text()) for ds in exp.grid.datasets}
    done, pending = plan(cells, cells_dir)
    print(f"[sweep] experiment {exp.name!r}: {len(cells)} cells, {len(done)} done, "
          f"{len(pending)} to train -> {results_dir}", file=sys.stderr)
    if args.dry_run:
        for c in pending:
            print(f"{c.cell_id}  {c.label()}")
        return 0
    atomic_write_json(results_dir / "expected_cells.json", [{"cell_id": c.cell_id, "config": c.to_dict()}
                                                             for c in cells])
    atomic_write_json(results_dir / "experiment.json", experiment_summary(exp))

    max_failures = params.sweep.max_failures
    allow_failures = args.allow_failures or params.sweep.allow_failures
    storage_path = storage_uri(args.storage_path or params.sweep.storage_path)
    paths = {"prepared_dir": str(prepared_dir)}
    # Captured once by the driver (trials run outside the repository, maybe on other nodes).
    provenance = {"git": git_info(), "code_fingerprint": code_fingerprint()}
    groups = bench_groups(done, cells_dir, metas)
    bench_failed = 0
    if pending or groups:  # nothing to train or measure: Ray is not started
        deterministic_cpu = exp.resolved_device() == "cpu" and exp.runtime.deterministic
        with ray_session(address, env_vars=pinned_env(cells[0].runtime.threads) if deterministic_cpu else None):
            try:
                check_resources(exp.resources)
            except cfg.ConfigError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            if pending:
                limit = "unlimited" if max_failures < 0 else max_failures
                print(f"[sweep] checkpoints in {storage_path}; a trial whose worker or node dies is "
                      f"retried up to {limit} time(s) from its last epoch", file=sys.stderr)
                import ray

                res = exp.resources
                slots = int(ray.cluster_resources().get("CPU", 1) // res.cpus_per_trial) or 1
                concurrency = min(len(pending), slots, res.max_concurrent or len(pending))
                progress = Progress(len(cells), len(done), [c.to_dict() for c in pending], concurrency=concurrency)
                run_train_phase(pending, paths=paths, exp=exp, cells_dir=cells_dir, storage_path=storage_path,
                                progress=progress, max_failures=max_failures, provenance=provenance)
                groups = bench_groups(cells, cells_dir, metas)
            bench_failed = run_bench_phase(groups, metas=metas, cells_dir=cells_dir, exp=exp,
                                           storage_path=storage_path)

    records = [read_record(cells_dir / f"{c.cell_id}.json") for c in cells]
    failed = [(c, r) for c, r in zip(cells, records) if not r or r.get("status") == "failed"]
    diverged = [c for c, r in zip(cells, records) if r and r.get("status") == "diverged"]
    print(f"[sweep] finished: {len(cells) - len(failed) - len(diverged)} ok, {len(diverged)} diverged, "
          f"{len(failed)} failed, {bench_failed} bench measurement(s) failed", file=sys.stderr)
    for c, r in failed:
        reason = ((r or {}).get("error") or "no result written").strip().splitlines()
        print(f"[sweep] FAILED {c.cell_id} {c.label()}: {reason[0] if reason else ''}", file=sys.stderr)
    if (failed or bench_failed) and not allow_failures:
        print("[sweep] rerun `dvc repro` to retry only the failed cells and measurements, or set "
              "sweep.allow_failures: true to report with the gaps shown", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
