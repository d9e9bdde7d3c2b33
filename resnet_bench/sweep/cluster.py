"""Ray: started locally or joined, quiet on the terminal, its nodes and resources checked before
anything trains."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.sweep.progress import _short

# ---- Ray -----------------------------------------------------------------------------------


def init_ray(address: str | None, quiet: bool = True, stream=sys.stderr,
             env_vars: dict[str, str] | None = None, dashboard: bool = False) -> Path:
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
    kwargs = {"log_to_driver": not quiet, "logging_level": logging.WARNING, "include_dashboard": dashboard}
    if dashboard:  # sweep.dashboard: on this machine only, never on every interface
        kwargs["dashboard_host"] = "127.0.0.1"
    # Set in every worker before it starts, so before torch loads (the numeric pin, env.py).
    worker_env = dict(env_vars or {})
    if address:
        kwargs = {"address": address, "log_to_driver": not quiet, "logging_level": logging.WARNING}
    else:
        # Ray workers must import this package from the same place as the driver.
        worker_env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])
    if worker_env:
        kwargs["runtime_env"] = {"env_vars": worker_env}
    try:
        ctx = ray.init(**kwargs)
    except Exception as err:  # Ray gives its dashboard 20 s to start; a loaded machine can take longer
        if not dashboard or address:
            raise
        ray.shutdown()
        print(f"[sweep] Ray's dashboard did not start ({str(err).strip().splitlines()[0]}); going on without it",
              file=stream, flush=True)
        kwargs.update(include_dashboard=False)
        kwargs.pop("dashboard_host", None)
        ctx, dashboard = ray.init(**kwargs), False
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
    if dashboard:
        where = (f"http://{ctx.dashboard_url}" if started and ctx.dashboard_url else
                 "the joined cluster's own (started with its `ray start --head`)")
        print(f"[sweep] Ray dashboard: {where}", file=stream, flush=True)
    return log_dir


@contextlib.contextmanager
def ray_session(address: str | None, quiet: bool = True, stream=sys.stderr, env_vars: dict | None = None,
                dashboard: bool = False):
    """Ray from init to shutdown; with `quiet`, the driver's stdout goes to Ray's log dir meanwhile.

    Ray's driver thread that relays cluster errors (ray._private.worker.listen_error_messages)
    prints them to whatever `sys.stdout` is at that moment; the sweep itself prints only to stderr.
    """
    import ray

    saved = sys.stdout
    log_dir = init_ray(address, quiet=quiet, stream=stream, env_vars=env_vars, dashboard=dashboard)
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


def check_address(address: str | None) -> None:
    """Ray Client (`ray://`) is refused: under it Tune runs its driver loop as an actor on the
    head node (ray.tune.Tuner, client mode), so the result files would be written there."""
    if address and address.startswith("ray://"):
        raise cfg.ConfigError(
            f"Ray address {address!r} (RAY_ADDRESS / sweep.ray_address) uses Ray Client, which runs the "
            f"sweep's driver on the head node; valid: run the sweep on a node of the cluster with the "
            f"GCS address, e.g. <head-ip>:6379, or unset it for local Ray")


def check_dashboard(dashboard: bool, address: str | None) -> None:
    """sweep.dashboard on local Ray needs Ray's dashboard packages: refuse before Ray starts."""
    if not dashboard or address:
        return
    from ray._private.utils import get_dashboard_dependency_error

    err = get_dashboard_dependency_error()
    if err is not None:
        raise cfg.ConfigError(f"sweep.dashboard: true needs Ray's dashboard, which is not installed ({err}); "
                              "valid: `pip install 'resnet-bench[dashboard]'` (ray[default]) or sweep.dashboard: false")


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
