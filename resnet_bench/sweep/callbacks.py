"""The driver's Tune callback: a cell's record written the moment its trial ends, with every
attempt (node, epochs, cause) Tune made."""

from __future__ import annotations

import json
from pathlib import Path

from resnet_bench.sweep.lifecycle import STOP
from resnet_bench.sweep.progress import Progress, _cause_line, _label, _short, _trial_error
from resnet_bench.sweep.records import DONE_STATUSES, EPOCH_KEYS, CellRecord, RecordError, failure_record, parse_record
from resnet_bench.sweep.results_dir import RecordNotWritten, write_record
from resnet_bench.sweep.storage import drop_checkpoints


def _driver_env(cell: dict) -> dict:
    """The environment of the driver, for a record the trial could not write (its own is lost)."""
    from resnet_bench.env import environment

    return environment(cell["runtime"]["device"] if isinstance(cell, dict) else cell.runtime.device)


def _record_writer(cells_dir: Path, storage: str, progress: Progress, max_failures: int, keep_dirs=()):
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
            self.finished: set[str] = set()  # cells whose ok/diverged record is in cells/

        def _write(self, record: CellRecord) -> bool:
            """Through the schema to cells/. A folder that stopped being writable (full, read-only)
            keeps the record elsewhere (and its checkpoints stay), never loses it; the sweep then stops
            with one line naming the disk and path: every later record would fail the same way."""
            try:
                _fetch_models(record, storage, cells_dir)
            except (OSError, ValueError) as err:
                # Not written: the record is not either (a record never names a model file that is not
                # there); its checkpoints stay, so a rerun redoes at most the final evaluation.
                from resnet_bench.outputs import disk_full_message, is_disk_full

                line = (disk_full_message(getattr(err, "filename", None) or cells_dir, "the cell's model file")
                        if is_disk_full(err) else f"cannot keep the model of cell {record.cell_id} in {cells_dir}: "
                                                  f"{getattr(err, 'strerror', None) or err}")
                progress.note(line)
                STOP.request("a model file could not be written", 1, error=line)
                return False
            try:
                write_record(cells_dir, record, keep_dirs=keep_dirs)
            except RecordNotWritten as err:
                from resnet_bench.outputs import disk_full_message, is_disk_full

                line = (f"{disk_full_message(err.path, 'the cell record')}; {err}" if is_disk_full(err)
                        else str(err))
                progress.note(str(err))
                STOP.request("a record could not be written", 1, error=line)
                return False
            if record.status in DONE_STATUSES:
                self.finished.add(record.cell_id)
            else:
                self.finished.discard(record.cell_id)
            return True

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
            if result.get("attempt") and run.get("attempt") not in (None, result["attempt"]):
                run = self._group_restarted(iteration, trials, trial, cell, run)
            if result.get("attempt"):  # a multi-worker cell: its worker group's start and ranks' nodes
                run["attempt"], run["workers"] = result["attempt"], json.loads(result["workers_json"])
            first = run["node"] is None
            run["node"] = node
            if result.get("note"):  # a damaged checkpoint passed over
                progress.note(f"{_label(cell)}: {result['note']}")
            if result.get("disk_full"):  # not the cell's failure: the sweep stops, the cell stays pending
                run["open"] = False
                STOP.request("disk full", 1, error=result["disk_full"])
                return
            if not result.get("final"):
                run["first_epoch"] = run["first_epoch"] or result["epoch"]
                run["last_epoch"] = result["epoch"]
                run.setdefault("epochs", []).append({k: result[k] for k in EPOCH_KEYS})
                progress.epoch(cid, _label(cell), result["epoch"], node, self.retries.get(cid, 0), first)
                return
            run["open"] = False
            try:
                record = parse_record(json.loads(result["record_json"]), f"the record of trial {cid}")
            except (RecordError, ValueError) as err:  # a trial bug: recorded failed, never written as is
                record = parse_record(failure_record(cell, f"InvalidRecord: {err}", env=_driver_env(cell)),
                                      f"trial {cid}")
            if record.status == "failed" and not record.epochs:  # what the attempts trained before
                epochs = [e for a in self.attempts.get(cid, []) for e in a.get("epochs", [])]
                record = record.with_updates(epochs=_dedupe_epochs(epochs))
            record = record.with_updates(retries=self.retries.get(cid, 0), attempts=self._public_attempts(cid))
            if not self._write(record):
                return
            m = record.metrics
            detail = f"test_acc={m.test_acc:.4f}" if m.test_acc is not None else _cause_line(record.error or "")
            detail += f" on {node['hostname']} (node {_short(node['node_id'])})"
            if record.retries:
                detail += f" after {record.retries} retr{'y' if record.retries == 1 else 'ies'}"
            progress.update(_label(cell), record.status, detail, cid)

        def on_trial_complete(self, iteration, trials, trial, **info):
            cid = trial.config["trial"]["cell"]["cell_id"]
            if cid in self.finished:
                # Finished for good and on disk: its resume checkpoints are no longer needed.
                drop_checkpoints(storage, cid)

        def on_trial_recover(self, iteration, trials, trial, **info):
            # The trial's worker or node died; Tune restarts it from its last checkpoint.
            if STOP:  # stopped by the stop itself (Ctrl-C reaches the workers too): not a failure
                return
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
            if STOP:  # a trial the stop ended is not failed: a rerun resumes it from its checkpoint
                return
            config = trial.config["trial"]["cell"]
            cid = config["cell_id"]
            if cid in self.finished:
                return
            err = _trial_error(trial)
            run = self._attempt(cid)
            cause = _cause_line(err)
            if run:
                run.update(open=False, error=cause)
            epochs = [e for a in self.attempts.get(cid, []) for e in a.get("epochs", [])]
            record = parse_record(failure_record(
                config, f"TrialError after {self.retries.get(cid, 0)} retries: {cause}\n{err}",
                _dedupe_epochs(epochs), env=_driver_env(config)), f"trial {cid}")
            if self._write(record.with_updates(retries=self.retries.get(cid, 0),
                                               attempts=self._public_attempts(cid), node=(run or {}).get("node"))):
                progress.update(_label(config), "failed", cause, cid)

        def _group_restarted(self, iteration, trials, trial, cell: dict, run: dict) -> dict:
            """Ray Train started a new worker group for the cell (a worker or its node was lost): the
            attempt ends, a new one begins, resumed from the last checkpoint; Tune saw no failure."""
            cid = cell["cell_id"]
            self.retries[cid] = self.retries.get(cid, 0) + 1
            lost = ", ".join(sorted({w["node"]["hostname"] + " (node " + _short(w["node"]["node_id"]) + ")"
                                     for w in run.get("workers") or []}))
            run.update(open=False, error=f"a worker of the group on {lost} was lost; Ray Train started a new "
                                         "group from the last checkpoint")
            last = run["last_epoch"]
            progress.note(f"{_label(cell)}: worker group lost a worker; retry {self.retries[cid]} from "
                          f"{'epoch ' + str(last) + ' checkpoint' if last else 'the start'}")
            self.on_trial_start(iteration, trials, trial)
            return self._attempt(cid)

        def _public_attempts(self, cid: str) -> list[dict]:
            keys = ("node", "first_epoch", "last_epoch", "error")
            return [{**{k: a[k] for k in keys}, **({"workers": a["workers"]} if a.get("workers") else {})}
                    for a in self.attempts.get(cid, [])]

    return WriteRecord()


def _fetch_models(record: CellRecord, storage: str, cells_dir: Path) -> None:
    """The model files the trial left in storage, into cells/ beside the record (checked as they copy)."""
    from resnet_bench.outputs import make_dirs
    from resnet_bench.sweep.storage import fetch_model

    for ref in (record.models.final, record.models.best) if record.models else ():
        if ref is not None:
            make_dirs(Path(cells_dir), "cells")
            fetch_model(storage, record.cell_id, ref.file, nbytes=ref.bytes, sha256=ref.sha256,
                        target=Path(cells_dir) / ref.file)


def _dedupe_epochs(epochs: list[dict]) -> list[dict]:
    """One record per epoch number, the latest attempt's (a retry re-trains after its checkpoint)."""
    by_epoch = {e["epoch"]: e for e in epochs}
    return [by_epoch[k] for k in sorted(by_epoch)]
