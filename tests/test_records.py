"""The typed cell record (resnet_bench.sweep.records): what training writes validates and reads back as it
was; a results folder that stops being writable loses no finished training; the driver's callback writes
only valid records; a last training batch of one image is dropped and recorded."""

import json
import math
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from test_collect import make_config, make_record

from resnet_bench import config as cfg
from resnet_bench.sweep import records
from resnet_bench.sweep import results_dir
from resnet_bench.sweep.records import CellRecord, Metrics


def tiny_cell(prepared: Path, **recipe) -> cfg.Cell:
    exp = cfg.resolve_layers("t", [cfg.Layer("test", {
        "grid": {"models": ["resnet18_v2"], "datasets": ["digits"], "seeds": [0]}, "arch": {"width": 4},
        "recipe": {"name": "quick", "epochs": 1, **recipe}, "bench": {"enabled": False}})], cfg.Params(),
        check_datasets=False).experiment
    (cell,) = cfg.expand_grid(exp, data={"digits": cfg.data_identity(prepared / "digits")})
    return cell


@pytest.fixture(scope="module")
def last_batch_of_one(prepared_digits) -> tuple[cfg.Cell, dict]:
    """A cell whose batch size leaves one training image in the last batch (BatchNorm raises on it)."""
    from resnet_bench.train import train_cell

    n_train = json.loads((prepared_digits / "digits" / "meta.json").read_text())["counts"]["train"]
    cell = tiny_cell(prepared_digits, batch_size=n_train - 1)
    return cell, train_cell(cell, prepared_digits)


def test_a_last_batch_of_one_image_is_dropped_and_recorded(last_batch_of_one):
    cell, rec = last_batch_of_one
    assert rec["status"] == "ok" and rec["epochs"][0]["iteration"] == 1  # one step: the batch of one left out
    assert rec["dataset_meta"]["train_last_batch_dropped"] is True


def test_what_training_writes_is_a_valid_record_that_reads_back_the_same(last_batch_of_one, tmp_path):
    cell, rec = last_batch_of_one
    typed = records.parse_record(rec, "train_cell")
    assert typed.config == cell and typed.metrics.test_acc == rec["metrics"]["test_acc"]
    path = results_dir.write_record(tmp_path, typed)
    assert path.name == f"{cell.cell_id}.json" and records.read_record(path) == typed
    # A diverged loss stays the JSON token NaN, and reads back as NaN.
    raw = {**rec, "status": "diverged", "error": "train loss is nan at epoch 1"}
    raw["epochs"] = [{**rec["epochs"][0], "train_loss": float("nan")}]
    raw["metrics"] = {**rec["metrics"], "final_train_loss": float("nan")}
    diverged = records.parse_record(raw, "diverged")
    assert "NaN" in diverged.to_json()
    back = records.read_record(results_dir.write_record(tmp_path, diverged))
    assert math.isnan(back.epochs[0].train_loss) and back.status == "diverged"


def test_every_metric_is_a_documented_cells_column():
    from resnet_bench.collect import CELL_COLUMNS

    columns = {c: (d, u, m) for c, d, u, m in CELL_COLUMNS}
    for name, info in Metrics.model_fields.items():
        assert info.description and info.json_schema_extra["unit"], name
        assert name in columns, f"metric {name} has no column in cells.csv"


@pytest.fixture
def readonly(tmp_path):
    """A folder made read-only by a read-only bind mount (root) or permission bits (anyone else)."""
    folder = tmp_path / "cells"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (root without mount permission)")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode:
            pytest.skip("cannot remount read-only here")
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def _record(seed: int = 0) -> CellRecord:
    return records.parse_record(make_record(make_config("tiny", "digits", "v1", "original", 18, seed,
                                                        recipe="quick", device="cpu"), acc=0.9), "test")


def test_a_read_only_cells_folder_keeps_the_record_and_the_next_sweep_moves_it_in(readonly, tmp_path):
    rec, keep = _record(), tmp_path / "kept"
    with pytest.raises(results_dir.RecordNotWritten) as err:
        results_dir.write_record(readonly, rec, keep_dirs=[keep])
    assert err.value.kept == keep / f"{rec.cell_id}.json"
    assert "Read-only file system" in str(err.value) or "Permission denied" in str(err.value)
    assert records.read_record(err.value.kept) == rec and not list(readonly.iterdir())
    subprocess.run(["mount", "-o", "remount,bind,rw", str(readonly)], capture_output=True)
    if os.geteuid() != 0:
        readonly.chmod(0o755)
    (moved,) = results_dir.adopt_kept_records([keep], readonly, {rec.cell_id})
    assert records.read_record(moved) == rec and not list(keep.iterdir())
    done, pending = results_dir.plan([rec.config], readonly)
    assert done == [rec.config] and not pending


# ---- the driver's callback ----------------------------------------------------------------------


class FakeProgress:
    def __init__(self):
        self.notes, self.updates = [], []

    def started(self, cid):
        pass

    def epoch(self, *a):
        pass

    def note(self, text):
        self.notes.append(text)

    def update(self, label, status, detail="", cell_id=None):
        self.updates.append((status, detail))


def _finish(cells_dir: Path, storage: Path, record_json: str, keep_dirs=()):
    """Run the callback as Tune would for one trial: start, final result, complete."""
    from resnet_bench.sweep.callbacks import _record_writer

    cell = _record().config
    ckpt = storage / "train" / cell.cell_id / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    progress = FakeProgress()
    cb = _record_writer(cells_dir, str(storage), progress, 2, keep_dirs)
    trial = SimpleNamespace(config={"trial": {"cell": cell.to_dict()}}, error_file=None)
    node = {"node_id": "n1", "hostname": "h", "ip": "127.0.0.1"}
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, {"final": True, "record_json": record_json, **node})
    cb.on_trial_complete(0, [], trial)
    return cell, progress, ckpt


def test_the_callback_writes_a_valid_record_and_then_drops_its_checkpoints(tmp_path):
    cell, progress, ckpt = _finish(tmp_path / "cells", tmp_path / "s", _record().to_json())
    rec = records.read_record(tmp_path / "cells" / f"{cell.cell_id}.json")
    assert rec.status == "ok" and rec.retries == 0 and len(rec.attempts) == 1 and not ckpt.exists()


def test_the_callback_records_an_invalid_trial_record_as_failed(tmp_path):
    bad = json.loads(_record().to_json())
    bad["metrics"]["test_acc"] = 5.0
    cell, progress, ckpt = _finish(tmp_path / "cells", tmp_path / "s", json.dumps(bad))
    rec = records.read_record(tmp_path / "cells" / f"{cell.cell_id}.json")
    assert rec.status == "failed" and "InvalidRecord" in rec.error and "metrics.test_acc" in rec.error
    assert ckpt.exists()  # not finished: the checkpoint stays for the retry


def test_the_callback_keeps_a_finished_record_a_read_only_folder_refused(readonly, tmp_path):
    cell, progress, ckpt = _finish(readonly, tmp_path / "s", _record().to_json(), keep_dirs=[tmp_path / "kept"])
    assert not list(readonly.iterdir()) and ckpt.exists()  # nothing lost: the record kept, the checkpoint too
    (note,) = progress.notes
    assert f"cannot write {readonly / cell.cell_id}.json" in note and str(tmp_path / "kept") in note
    assert records.read_record(tmp_path / "kept" / f"{cell.cell_id}.json").status == "ok"
