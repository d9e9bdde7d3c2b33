"""`dvc repro` on a two-node Ray cluster that loses its worker node mid-train.

Builds a throwaway copy of the project (git + DVC, a small experiment), starts a real
two-node cluster on this machine with `ray.cluster_utils.Cluster` (a head and a worker node,
separate raylets, `--cpus` CPUs each), runs the real `dvc repro` against it via RAY_ADDRESS,
and kills the worker node (`remove_node(..., allow_graceful=False)`) as soon as a cell reports
an epoch from it. Then checks that the one `dvc repro` finished the grid with every cell ok,
the lost cells resumed on the head node after their last checkpoint, and prints a summary.

    python scripts/cluster_node_loss.py [--epochs 12] [--seeds 2] [--keep DIR]

Exit status 0 when every check passes. Used for the recorded run in docs/cluster.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# `[sweep] ... | <label>: epoch 3/12 on <host> (node 1a2b3c4d)` (resnet_bench.sweep.progress.Progress.epoch)
EPOCH_LINE = re.compile(r"\| (?P<label>\S+): epoch (?P<epoch>\d+)/\d+ on \S+ \(node (?P<node>[0-9a-f]{8})\)")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12, help="epochs per cell (enough to be mid-train)")
    p.add_argument("--seeds", type=int, default=2, help="seeds: cells = 2 versions x seeds")
    p.add_argument("--cpus", type=int, default=1, help="CPUs of each of the two nodes")
    p.add_argument("--keep", help="build the project here and keep it (default: a temp dir, removed)")
    return p.parse_args(argv)


def make_project(root: Path, epochs: int, seeds: int) -> Path:
    """A git + DVC copy of the project whose active experiment is a small digits grid."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "resnet_bench", root / "resnet_bench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "experiments", root / "experiments")
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    exp = {"description": "two-node node-loss run",
           "grid": {"versions": ["v1", "v2"], "depths": [18], "datasets": ["digits"], "seeds": list(range(seeds))},
           "arch": {"stem": "cifar", "width": 4},
           "recipe": {"name": "quick", "epochs": epochs, "batch_size": 128},
           "bench": {"enabled": True, "batch_size": 16, "warmup": 1, "repeats": 3},
           "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0}}
    (root / "experiments" / "node-loss.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["sweep"]["experiment"] = "node-loss"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "run@resnet-bench.invalid"],
                ["git", "config", "user.name", "run"], ["dvc", "init", "-q"],
                ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "node-loss project"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root


def run(args) -> int:
    from ray.cluster_utils import Cluster

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rb-nodeloss-"))
    # Ray's files in a private, short dir: Cluster records its address in
    # <RAY_TMPDIR>/ray/ray_current_cluster, which a bare ray.init() elsewhere would join.
    ray_tmp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = ray_tmp
    project = make_project(work / "project", args.epochs, args.seeds)
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus})
    try:
        worker = cluster.add_node(num_cpus=args.cpus)
        head_id = cluster.head_node.node_id
        print(f"cluster: head {head_id[:8]}, worker {worker.node_id[:8]} at {cluster.address} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONUNBUFFERED": "1",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        proc = subprocess.Popen(["dvc", "repro"], cwd=project, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        watchdog = threading.Timer(1800, proc.kill)
        watchdog.start()
        killed, t_repro = None, time.perf_counter()
        try:
            for line in proc.stdout:
                print(f"{time.perf_counter() - t_repro:6.1f} s  {line}", end="", flush=True)
                m = EPOCH_LINE.search(line)
                if killed is None and m and worker.node_id.startswith(m["node"]):
                    cluster.remove_node(worker, allow_graceful=False)
                    killed = (m["label"], int(m["epoch"]))
                    print(f"{time.perf_counter() - t_repro:6.1f} s  >>> killed worker node "
                          f"{worker.node_id[:8]} after {m['label']} epoch {m['epoch']}", flush=True)
            rc = proc.wait()
        finally:
            watchdog.cancel()
        repro_s = time.perf_counter() - t_repro
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return report(project, rc, killed, head_id, args.epochs, repro_s, keep=bool(args.keep), work=work)


def report(project: Path, rc: int, killed, head_id: str, epochs: int, repro_s: float, *, keep, work) -> int:
    recs = [json.loads(p.read_text()) for p in sorted((project / "results" / "node-loss" / "cells").glob("*.json"))]
    problems = []
    if rc != 0:
        problems.append(f"dvc repro exited {rc}")
    if killed is None:
        problems.append("no cell reported an epoch from the worker node before the end")
    print(f"\ndvc repro: exit {rc} in {repro_s:.0f} s; {len(recs)} cell record(s)")
    for r in recs:
        tries = ", ".join(f"{a['node']['node_id'][:8] if a['node'] else '?'}: epochs {a['first_epoch']}-"
                          f"{a['last_epoch']}" + (f" ({a['error'][:60]})" if a["error"] else "")
                          for a in r.get("attempts", []))
        print(f"  {r['cell_id']} {r['config']['model']} seed{r['config']['seed']}: {r['status']}, "
              f"retries {r.get('retries')}, attempts [{tries}]")
        if r["status"] != "ok":
            problems.append(f"{r['cell_id']} is {r['status']}")
        if [e["epoch"] for e in r["epochs"]] != list(range(1, epochs + 1)):
            problems.append(f"{r['cell_id']}: epochs {[e['epoch'] for e in r['epochs']]}")
        att = r.get("attempts", [])
        for prev, nxt in zip(att, att[1:]):
            if prev["last_epoch"] is not None and nxt["first_epoch"] != prev["last_epoch"] + 1:
                problems.append(f"{r['cell_id']}: attempt resumed at epoch {nxt['first_epoch']} after "
                                f"{prev['last_epoch']}")
        if r["metrics"].get("bench_train_img_per_s") is None:
            problems.append(f"{r['cell_id']}: no bench measurement")
    if not any(r.get("retries") for r in recs):
        problems.append("no cell was retried")
    if not (project / "reports" / "node-loss" / "report.md").exists():
        problems.append("no reports/node-loss/report.md")
    for p in problems:
        print(f"CHECK FAILED: {p}")
    print("all checks passed" if not problems else f"{len(problems)} check(s) failed")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


def main(argv=None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
