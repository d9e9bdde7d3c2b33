"""The sweep on a tiny grid with real Ray Tune: incremental, resumable, failures recorded."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import TINY_EXPERIMENT, make_project, venv_env
from resnet_bench import sweep

pytestmark = pytest.mark.slow


def run_sweep(project: Path, prepared: Path, *extra) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared), *extra],
        cwd=project, env=venv_env(), capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr + proc.stdout


def records(project: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (project / "results" / "tiny" / "cells").glob("*.json")}


def trained_count(log: str) -> int:
    """Cells the sweep said it would train ('... N to train')."""
    line = next(l for l in log.splitlines() if "to train" in l)
    return int(line.split(" done, ")[1].split(" to train")[0])


def set_params(project: Path, **sweep_overrides):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sweep"].update(sweep_overrides)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_rerun_trains_nothing_and_growing_grid_trains_only_new_cells(tmp_path, prepared_digits):
    project = make_project(tmp_path / "p")
    rc, log = run_sweep(project, prepared_digits)
    assert rc == 0, log
    first = records(project)
    assert len(first) == 2 and {r["status"] for r in first.values()} == {"ok"}
    for r in first.values():
        assert 0.0 <= r["metrics"]["test_acc"] <= 1.0 and r["epochs"][0]["epoch"] == 1
        assert r["provenance"]["code_fingerprint"] == r["config"]["code_fingerprint"]
        assert r["config"]["cell_id"] == r["cell_id"] and r["provenance"]["node"]["hostname"]
    assert not list((project / "results" / "tiny" / "checkpoints").glob("*.pt"))  # finished cells need no resume point

    rc, log = run_sweep(project, prepared_digits)
    assert rc == 0 and trained_count(log) == 0, log
    assert records(project) == first  # untouched

    set_params(project, depths=[18, 34])
    rc, log = run_sweep(project, prepared_digits)
    assert rc == 0 and trained_count(log) == 2, log
    grown = records(project)
    assert len(grown) == 4
    assert all(grown[k] == v for k, v in first.items())
    assert {r["config"]["depth"] for r in grown.values()} == {18, 34}


def test_failed_cells_are_recorded_do_not_stop_others_and_are_retried(tmp_path, prepared_digits):
    prepared = tmp_path / "prepared"
    shutil.copytree(prepared_digits, prepared)
    shutil.copytree(prepared / "digits", prepared / "broken")
    (prepared / "broken" / "train_x.npy").unlink()
    project = make_project(tmp_path / "p")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["prepare"]["files"] = {"broken": {"format": "digits", "source": "x", "sha256": "", "image_size": 0}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    set_params(project, datasets=["digits", "broken"])

    rc, log = run_sweep(project, prepared)
    assert rc == 1, log
    recs = records(project)
    assert len(recs) == 4
    by_ds = {(r["config"]["dataset"], r["config"]["version"]): r for r in recs.values()}
    assert by_ds[("digits", "v1")]["status"] == "ok" and by_ds[("digits", "v2")]["status"] == "ok"
    for v in ("v1", "v2"):
        failed = by_ds[("broken", v)]
        assert failed["status"] == "failed" and "train_x" in failed["error"]
        assert f"FAILED {failed['cell_id']}" in log

    # The report can go ahead with the gaps shown.
    rc, log = run_sweep(project, prepared, "--allow-failures")
    assert rc == 0 and trained_count(log) == 2, log

    # Mend the dataset: the next run retrains only the two failed cells.
    shutil.copy(prepared / "digits" / "train_x.npy", prepared / "broken" / "train_x.npy")
    ok_before = {k: v for k, v in records(project).items() if v["status"] == "ok"}
    rc, log = run_sweep(project, prepared)
    assert rc == 0 and trained_count(log) == 2, log
    after = records(project)
    # The mended files are new data (another content hash): new cell ids, all ok; the failed
    # records of the broken data stay on disk, outside the current grid.
    current = {e["cell_id"] for e in json.loads((project / "results" / "tiny" / "expected_cells.json").read_text())}
    assert {after[k]["status"] for k in current} == {"ok"}
    assert all(after[k] == v for k, v in ok_before.items())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_sweep_loses_no_finished_cell_and_rerun_finishes(tmp_path, prepared_digits, sig):
    exp = {**TINY_EXPERIMENT, "grid": {**TINY_EXPERIMENT["grid"], "seeds": [0, 1, 2]},
           "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1}}
    project = make_project(tmp_path / "p", exp)
    proc = subprocess.Popen(
        [sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared_digits)],
        cwd=project, env=venv_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    cells = project / "results" / "tiny" / "cells"
    deadline = time.time() + 300
    while time.time() < deadline and not list(cells.glob("*.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, sig)  # the whole process group, as Ctrl-C in a terminal does
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"sweep did not exit within 120 s of {sig.name}")
    survived = records(project)
    assert 1 <= len(survived) < 6, "kill should land mid-sweep"
    assert all(r["status"] == "ok" for r in survived.values())

    rc, log = run_sweep(project, prepared_digits)
    assert rc == 0, log
    assert trained_count(log) == 6 - len(survived)
    final = records(project)
    assert len(final) == 6 and all(final[k] == v for k, v in survived.items())


def test_plan_splits_done_and_pending(tmp_path):
    from types import SimpleNamespace

    cells = [SimpleNamespace(cell_id=i) for i in ("a", "b", "c", "d")]
    sweep.atomic_write_json(tmp_path / "a.json", {"status": "ok"})
    sweep.atomic_write_json(tmp_path / "b.json", {"status": "failed"})
    sweep.atomic_write_json(tmp_path / "c.json", {"status": "diverged"})
    (tmp_path / "d.json").write_text("{truncated")
    done, pending = sweep.plan(cells, tmp_path)
    assert [c.cell_id for c in done] == ["a", "c"]
    assert [c.cell_id for c in pending] == ["b", "d"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_gpu_trial_on_a_cluster_without_gpus_fails_up_front(tmp_path, prepared_digits):
    exp = {**TINY_EXPERIMENT, "resources": {"cpus_per_trial": 1, "gpus_per_trial": 1}}
    project = make_project(tmp_path / "p", exp)
    rc, log = run_sweep(project, prepared_digits)  # no cluster given: refused before Ray starts
    assert rc == 2 and "resources.gpus_per_trial: 1.0 but this machine has 0 GPU(s)" in log, log
    assert not (project / "results" / "tiny" / "cells").exists()
    # Joining a (local, GPU-less) cluster: Ray's view of resources refuses it up front, not a hang.
    rc, log = run_sweep(project, prepared_digits, "--ray-address", "local")
    assert rc == 2 and "gpus_per_trial=1" in log and "0 GPU" in log, log
    assert not (project / "results" / "tiny" / "cells").exists()
