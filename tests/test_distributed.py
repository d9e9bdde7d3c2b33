"""One cell on two workers (DistributedDataParallel over gloo, on these CPUs).

- Two real local processes train a 2-worker cell; its parameters and BN buffers are bit-identical to a
  one-process emulation written with plain torch (tests/ddp_emulation.py: global batch split in two,
  BN per half, gradients averaged), and its numbers differ from the 1-worker cell's, whose id differs.
- The same cell as a sweep on a real two-node `ray.cluster_utils.Cluster` (Ray Train workers inside the
  Tune trial): its two workers run on two nodes; the worker node is killed mid-training and a new one
  joins; Ray Train restarts the group from rank 0's last checkpoint and the record ends bit-identical
  to the uninterrupted local run, listing every attempt with each rank's node.
"""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from conftest import REPO, TINY_EXPERIMENT, make_project, strip_timing, train_in_fresh_process, venv_env
from resnet_bench import config as cfg

pytestmark = pytest.mark.slow

EPOCHS = 6  # long enough that the cell still trains when the node dies after epoch 1's report
TWO_WORKERS = {**TINY_EXPERIMENT, "grid": {**TINY_EXPERIMENT["grid"], "versions": ["v1"]},
               "recipe": {**TINY_EXPERIMENT["recipe"], "epochs": EPOCHS},
               "resources": {**TINY_EXPERIMENT["resources"], "workers_per_trial": 2}}


def cells_of(experiment: dict, prepared: Path) -> list[cfg.Cell]:
    from resnet_bench.env import code_fingerprint

    exp = cfg.resolve_layers("tiny", [cfg.Layer("tiny.yaml", experiment)], cfg.Params(),
                             check_datasets=False).experiment
    return cfg.expand_grid(exp, data={"digits": cfg.data_identity(prepared / "digits")},
                           code_fingerprint=code_fingerprint())


def pinned(cell: cfg.Cell) -> dict:
    from resnet_bench.env import pinned_env

    return {**venv_env(), **pinned_env(1, cell.runtime.numeric_pin), "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def local_two_workers(prepared_digits, tmp_path_factory):
    """The 2-worker cell trained by two local processes (gloo): (cell, rank 0's record, final state)."""
    from resnet_bench.parallel import launch_local

    (cell,) = cells_of(TWO_WORKERS, prepared_digits)
    out = tmp_path_factory.mktemp("ddp")
    record = launch_local(cell.to_dict(), prepared_digits, out, backend="gloo", env=pinned(cell))
    state = torch.load(out / "cell.pt", weights_only=True)["model"]
    return cell, record, state


def test_two_workers_are_bit_identical_to_the_one_process_emulation(local_two_workers, prepared_digits, tmp_path):
    cell, record, state = local_two_workers
    (tmp_path / "cell.json").write_text(json.dumps(cell.to_dict()))
    subprocess.run([sys.executable, str(REPO / "tests" / "ddp_emulation.py"), str(tmp_path / "cell.json"),
                    str(prepared_digits), str(tmp_path / "emulated.pt")], env=pinned(cell), check=True, timeout=600)
    emulated = torch.load(tmp_path / "emulated.pt", weights_only=True)
    assert set(state) == set(emulated)
    buffers = [k for k in state if "running_" in k]
    assert buffers, "no BN buffers compared"
    differ = [k for k in state if not torch.equal(state[k], emulated[k])]
    assert not differ, f"differ from the emulation: {differ[:5]}"
    assert record["status"] == "ok" and len(record["epochs"]) == EPOCHS
    assert record["distributed"] == {"world_size": 2, "per_rank_batch": 64, "bn_mode": "per_rank", "backend": "gloo"}
    m = record["metrics"]
    assert m["train_img_per_s_per_worker"] == pytest.approx(m["train_img_per_s"] / 2)


def test_one_and_two_workers_train_different_numbers(local_two_workers, prepared_digits, tmp_path):
    """What the emulation pins down is not the one-process cell: BN over 64 images is not BN over 128."""
    cell, record, _ = local_two_workers
    one = cfg.Cell.model_validate({**cell.to_dict(), "world_size": 1, "cell_id": ""})
    single = train_in_fresh_process(one.to_dict(), prepared_digits, tmp_path / "one")
    assert single["cell_id"] != record["cell_id"]
    assert [e["train_loss"] for e in single["epochs"]] != [e["train_loss"] for e in record["epochs"]]


def test_one_and_two_worker_cells_of_one_config_have_different_ids(prepared_digits):
    one_worker = {**TWO_WORKERS, "resources": TINY_EXPERIMENT["resources"]}
    (one,), (two,) = cells_of(one_worker, prepared_digits), cells_of(TWO_WORKERS, prepared_digits)
    assert one.world_size == 1 and two.world_size == 2 and one.cell_id != two.cell_id


def test_two_idle_gpus_are_refused_before_ray_starts(tmp_path, prepared_digits, capsys):
    import ray

    from resnet_bench.sweep import driver

    exp = {**TINY_EXPERIMENT, "resources": {"cpus_per_trial": 1, "gpus_per_trial": 2}}
    project = make_project(tmp_path / "p", exp)
    cwd = os.getcwd()
    os.chdir(project)
    try:
        rc = driver.main(["--prepared-dir", str(prepared_digits)])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert rc == 2 and not ray.is_initialized()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "gpus_per_trial 2 with workers_per_trial 1" in lines[0], err
    assert "sit idle" in lines[0] and "Traceback" not in err


def test_two_workers_span_two_nodes_and_a_lost_node_resumes_bit_identical(tmp_path, prepared_digits, ray_head,
                                                                         local_two_workers):
    """Each Cluster node has 1 CPU and each worker needs 1: rank 0 and rank 1 run on different nodes.
    After epoch 1's report the worker node is killed (no graceful exit) and a fresh node joins."""
    import re

    cluster = ray_head
    worker = cluster.add_node(num_cpus=1)
    project = make_project(tmp_path / "p", TWO_WORKERS)
    env = {**venv_env(), "RAY_ADDRESS": cluster.address}
    proc = subprocess.Popen([sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared_digits)],
                            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(400, proc.kill)  # a hung sweep fails the test instead of hanging it
    watchdog.start()
    lines, fresh = [], None
    try:
        for line in proc.stdout:
            lines.append(line)
            if fresh is None and re.search(r"\| \S+: epoch 1/\d+ on ", line):
                cluster.remove_node(worker, allow_graceful=False)
                fresh = cluster.add_node(num_cpus=1)
        rc = proc.wait()
    finally:
        watchdog.cancel()
        for node in list(cluster.worker_nodes):
            cluster.remove_node(node)
    log = "".join(lines)
    assert fresh is not None and rc == 0, log
    assert "worker group lost a worker; retry 1 from epoch" in log, log
    (path,) = (project / "results" / "tiny" / "cells").glob("*.json")
    rec = json.loads(path.read_text())
    cell, uninterrupted, _ = local_two_workers
    assert rec["cell_id"] == cell.cell_id and rec["status"] == "ok"
    head = cluster.head_node.node_id
    first, last = rec["attempts"][0], rec["attempts"][-1]
    assert len(rec["attempts"]) == 2 and rec["retries"] == 1 and first["error"], rec["attempts"]
    assert {w["node"]["node_id"] for w in first["workers"]} == {head, worker.node_id}
    assert {w["node"]["node_id"] for w in last["workers"]} == {head, fresh.node_id}
    assert last["first_epoch"] == first["last_epoch"] + 1 and last["last_epoch"] == EPOCHS
    d = rec["distributed"]
    assert (d["world_size"], d["per_rank_batch"], d["bn_mode"], d["backend"]) == (2, 64, "per_rank", "gloo")
    assert [w["rank"] for w in d["workers"]] == [0, 1] and d["workers"] == last["workers"]
    # Resumed from rank 0's checkpoint on other nodes: the numbers of the uninterrupted local run.
    assert strip_timing(rec) == strip_timing(uninterrupted)
    storage = project / "scratch" / "ray_results"
    assert not list(storage.glob("train/*/workers/checkpoint_*"))  # finished: no checkpoints left
