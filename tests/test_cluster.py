"""The sweep on a real two-node Ray cluster survives losing the worker node mid-training.

`ray.cluster_utils.Cluster` starts a real head node and a real worker node (separate raylet
processes, 1 CPU each) on this machine; the sweep joins it through RAY_ADDRESS, as it would a
remote cluster. When a cell reports its first epoch from the worker node, the test kills that
node's processes (`remove_node(..., allow_graceful=False)`: what a crashed or preempted machine
looks like to Ray), and checks that Tune retried the trial on the head node from its checkpoint.
"""

import json
import re
import subprocess
import sys
import threading

import pytest
import yaml

from conftest import TINY_EXPERIMENT, make_project, strip_timing, train_in_fresh_process, venv_env
from resnet_bench.sweep import progress

pytestmark = pytest.mark.slow

# Enough epochs that a cell is still training when its node is killed right after its first
# epoch (one epoch of the width-4 net on digits takes ~0.25 s on one core; the kill ~0.1 s).
EPOCHS = 12
EPOCH_LINE = re.compile(r"\| (?P<label>\S+): epoch (?P<epoch>\d+)/\d+ on \S+ \(node (?P<node>[0-9a-f]{8})\)")


@pytest.fixture
def two_node_cluster(ray_head):
    """The head plus a fresh worker node with 1 CPU (each test kills its worker)."""
    worker = ray_head.add_node(num_cpus=1)
    try:
        yield ray_head, worker
    finally:
        if worker in ray_head.worker_nodes:
            ray_head.remove_node(worker)


def records(project) -> list[dict]:
    return [json.loads(p.read_text()) for p in (project / "results" / "tiny" / "cells").glob("*.json")]


def run_and_kill_worker(project, prepared, cluster, worker) -> tuple[int, str, dict]:
    """Run the sweep against the cluster; kill the worker node at its first reported epoch."""
    env = {**venv_env(), "RAY_ADDRESS": cluster.address}
    proc = subprocess.Popen([sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared)],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(400, proc.kill)  # a hung sweep fails the test instead of hanging it
    watchdog.start()
    lines, killed = [], {}
    try:
        for line in proc.stdout:
            lines.append(line)
            m = EPOCH_LINE.search(line)
            if not killed and m and worker.node_id.startswith(m["node"]):
                cluster.remove_node(worker, allow_graceful=False)
                killed = {"label": m["label"], "epoch": int(m["epoch"])}
        rc = proc.wait()
    finally:
        watchdog.cancel()
    return rc, "".join(lines), killed


def test_worker_node_lost_mid_training_cells_resume_on_head(tmp_path, prepared_digits, two_node_cluster):
    cluster, worker = two_node_cluster
    head_id = cluster.head_node.node_id
    exp = {**TINY_EXPERIMENT, "recipe": {**TINY_EXPERIMENT["recipe"], "epochs": EPOCHS}}
    project = make_project(tmp_path / "p", exp)

    rc, log, killed = run_and_kill_worker(project, prepared_digits, cluster, worker)

    assert killed, f"no cell reported an epoch from the worker node:\n{log}"
    assert rc == 0, log
    # The console: which cluster, its nodes, per-cell progress; Ray's own output is in its log dir.
    assert "[sweep] joined the Ray cluster at" in log, log
    assert re.search(rf"node {worker.node_id[:8]} .*\(worker\): 1 CPU, 0 GPU", log), log
    assert re.search(rf"node {head_id[:8]} .*\(head\): 1 CPU, 0 GPU", log), log
    assert "[state-dump]" not in log and "(raylet)" not in log, log
    assert re.search(r"trial died on .*retry 1/2 from epoch \d+ checkpoint", log), log

    recs = records(project)
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs), log
    for r in recs:
        assert set(r["node"]) == {"node_id", "hostname", "ip"} and r["node"]["hostname"] and r["node"]["ip"]
        assert r["node"]["node_id"] == head_id  # the worker is gone: every cell ended on the head
        assert [e["epoch"] for e in r["epochs"]] == list(range(1, EPOCHS + 1))
        assert r["metrics"]["epochs_completed"] == EPOCHS and 0.0 <= r["metrics"]["test_acc"] <= 1.0
        assert isinstance(r["retries"], int)

    moved = next(r for r in recs if r["attempts"][0]["node"]["node_id"] == worker.node_id)
    first, last = moved["attempts"][0], moved["attempts"][-1]
    assert moved["retries"] == 1 and len(moved["attempts"]) == 2, moved["attempts"]
    assert killed["epoch"] <= first["last_epoch"] < EPOCHS and first["error"]
    # Resumed after the last checkpointed epoch: no epoch trained twice, none skipped.
    assert last["node"]["node_id"] == head_id and last["first_epoch"] == first["last_epoch"] + 1
    assert last["last_epoch"] == EPOCHS
    stayed = next(r for r in recs if r is not moved)
    assert stayed["retries"] == 0 and len(stayed["attempts"]) == 1

    # Finished cells leave no checkpoints behind in storage.
    storage = project / "scratch" / "ray_results"
    assert not list(storage.glob("train/*/checkpoint_*")) and not list(storage.glob("resume/*"))

    # Resuming on another node gives the numbers of an uninterrupted run (a fresh process
    # started as the workers are: pinned numeric environment, 1 thread).
    uninterrupted = train_in_fresh_process(moved["config"], prepared_digits, tmp_path / "fresh")
    assert strip_timing(moved) == strip_timing(uninterrupted)


def test_cell_out_of_retries_is_recorded_failed_and_the_sweep_goes_on(tmp_path, prepared_digits, two_node_cluster):
    cluster, worker = two_node_cluster
    exp = {**TINY_EXPERIMENT, "recipe": {**TINY_EXPERIMENT["recipe"], "epochs": EPOCHS}}
    project = make_project(tmp_path / "p", exp)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sweep"]["max_failures"] = 0  # the first node loss is final
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    rc, log, killed = run_and_kill_worker(project, prepared_digits, cluster, worker)

    assert killed, f"no cell reported an epoch from the worker node:\n{log}"
    assert rc == 1, log
    recs = {r["status"]: r for r in records(project)}
    assert set(recs) == {"ok", "failed"}, log
    lost, other = recs["failed"], recs["ok"]
    assert progress._label(lost["config"]) == killed["label"]
    # The cause, where it ran, and what it trained before the node died.
    assert lost["error"].startswith("TrialError after 0 retries") and lost["retries"] == 0
    assert lost["node"]["node_id"] == worker.node_id and lost["attempts"][0]["error"]
    assert [e["epoch"] for e in lost["epochs"]] == list(range(1, lost["attempts"][0]["last_epoch"] + 1))
    assert other["node"]["node_id"] == cluster.head_node.node_id and other["metrics"]["test_acc"] >= 0
    assert f"[sweep] FAILED {lost['cell_id']}" in log and "1 failed" in log, log

