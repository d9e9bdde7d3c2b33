"""The driver's Tune callback: a cell's record written the moment its trial ends, with every
attempt (node, epochs, cause) Tune made."""

from __future__ import annotations

import json
from pathlib import Path

from resnet_bench.sweep.lifecycle import STOP, save_or_stop
from resnet_bench.sweep.progress import Progress, _cause_line, _label, _short, _trial_error
from resnet_bench.sweep.records import failure_record, read_record
from resnet_bench.sweep.storage import drop_checkpoints

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
            if result.get("note"):  # a damaged checkpoint passed over
                progress.note(f"{_label(cell)}: {result['note']}")
            if result.get("disk_full"):  # not the cell's failure: the sweep stops, the cell stays pending
                run["open"] = False
                STOP.request("disk full", 1, error=result["disk_full"])
                return
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
            if not save_or_stop(cells_dir / f"{record['cell_id']}.json", record):
                return
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
            if save_or_stop(path, record):
                progress.update(_label(config), "failed", cause, cid)

        def _public_attempts(self, cid: str) -> list[dict]:
            return [{k: a[k] for k in ("node", "first_epoch", "last_epoch", "error")}
                    for a in self.attempts.get(cid, [])]

    return WriteRecord()


def _dedupe_epochs(epochs: list[dict]) -> list[dict]:
    """One record per epoch number, the latest attempt's (a retry re-trains after its checkpoint)."""
    by_epoch = {e["epoch"]: e for e in epochs}
    return [by_epoch[k] for k in sorted(by_epoch)]
