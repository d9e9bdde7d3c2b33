"""Ray: started locally or joined, quiet on the terminal, its nodes and resources checked before
anything trains."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.sweep.progress import _short

# ---- Ray -----------------------------------------------------------------------------------

# Joining a cluster: how long the GCS may take to answer (each of Ray's connect steps; Ray's own
# default is minutes of retries), and the TCP probe before ray.init.
JOIN_TIMEOUT_S = 3
LOCAL_ADDRESSES = (None, "", "local")
LOOPBACK = "127.0.0.1"


class RayUnavailable(RuntimeError):
    """Ray could not be started or joined: one line naming the address."""


@contextlib.contextmanager
def _stderr_to(sink):
    """File descriptor 2 into `sink` meanwhile: what Ray's C++ core prints while it connects
    (`rpc_client.h:153: Failed to connect to GCS ...`) goes to a file, not the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _env(**values: str):
    """os.environ with `values` meanwhile."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _loopback_only():
    """A local Ray instance whose every server (GCS, raylet, object manager, workers, driver,
    runtime-env agent) listens on 127.0.0.1 only.

    Ray takes the node IP for every server's address, and turns a loopback `_node_ip_address`
    into this machine's external IP (services.resolve_ip_for_localhost) unless clusters are
    disabled (ray_constants.ENABLE_RAY_CLUSTER, from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, read at
    import; what a macOS or Windows laptop gets): then the node IP is 127.0.0.1. The module
    constant is set too, for a process that imported ray before.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with _env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"):
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def probe_address(address: str, timeout_s: float = JOIN_TIMEOUT_S) -> None:
    """A TCP connect to host:port before ray.init (which waits minutes on a dead address), where
    Ray will connect: Ray replaces a loopback host by this machine's IP
    (services.canonicalize_bootstrap_address)."""
    from ray._private.services import canonicalize_bootstrap_address

    target = canonicalize_bootstrap_address(address)
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    shown = repr(address) + (f" (Ray connects to {target})" if target != address else "")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except socket.gaierror:
        raise RayUnavailable(f"Ray address {shown}: host {host!r} not found") from None
    except ConnectionRefusedError:
        raise RayUnavailable(f"Ray address {shown}: nothing listens there (connection refused); start the head "
                             "with `ray start --head --port=PORT`, or unset it for local Ray") from None
    except OSError as err:  # timeout, unreachable network
        why = f"no answer within {timeout_s:g} s" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise RayUnavailable(f"Ray address {shown}: {why}; is the cluster up and reachable from here?") from None


def init_ray(address: str | None, quiet: bool = True, stream=sys.stderr,
             env_vars: dict[str, str] | None = None, dashboard: bool = False) -> Path:
    """Start or join Ray; print which cluster was joined and its nodes. Returns Ray's log dir.

    No address (or `local`): a new local instance, listening on 127.0.0.1 only. `auto`: the
    cluster started on this machine with `ray start`. host:port: that cluster, probed first and
    given seconds, not minutes, to answer (RayUnavailable otherwise).

    With `quiet`, Ray's own output goes to files in the Ray session's log directory, not the
    terminal: worker stdout/stderr stay there (log_to_driver=False), Ray's and Tune's Python
    loggers write to `sweep-driver.log`, and what Ray prints on the driver's stdout (a dead
    raylet's last log lines, hundreds of `[state-dump]` lines) to `sweep-driver.out`; what it
    prints while connecting goes to `sweep-driver.log` too.
    The `[sweep]` lines go to stderr and stay on the terminal.
    """
    import logging
    import tempfile

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no per-trial CSV/TB files
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    local = address in LOCAL_ADDRESSES
    kwargs = {"address": "local" if local else address, "log_to_driver": not quiet,
              "logging_level": logging.WARNING}
    # Set in every worker before it starts, so before torch loads (the numeric pin, env.py).
    worker_env = dict(env_vars or {})
    if local:
        kwargs["include_dashboard"] = dashboard
        if dashboard:  # sweep.dashboard: on this machine only, never on every interface
            kwargs["dashboard_host"] = LOOPBACK
        # Ray workers must import this package from the same place as the driver.
        worker_env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])
    if worker_env:
        kwargs["runtime_env"] = {"env_vars": worker_env}
    # Joining: each of Ray's connect steps waits JOIN_TIMEOUT_S, and once (Ray retries for minutes).
    # Ray's C++ side reads these when ray is first imported: set before any import of it (a
    # process that imported ray before keeps Ray's defaults: tens of seconds).
    timeouts = {} if local else {"RAY_gcs_rpc_server_connect_timeout_s": str(JOIN_TIMEOUT_S),
                                 "RAY_py_gcs_connect_timeout_s": str(JOIN_TIMEOUT_S),
                                 "RAY_gcs_server_port_wait_time_s": "1"}
    with tempfile.TemporaryFile("w+") as said, _env(**timeouts), \
            (_loopback_only() if local else contextlib.nullcontext()):
        import ray

        if not local and address != "auto":
            probe_address(address)
        try:
            try:
                with _stderr_to(said):
                    ctx = ray.init(**kwargs)
            except Exception as err:  # Ray gives its dashboard 20 s to start; a loaded machine can take longer
                if not (dashboard and local):
                    raise
                ray.shutdown()
                print(f"[sweep] Ray's dashboard did not start ({str(err).strip().splitlines()[0]}); going on "
                      "without it", file=stream, flush=True)
                kwargs.update(include_dashboard=False)
                kwargs.pop("dashboard_host", None)
                dashboard = False
                with _stderr_to(said):
                    ctx = ray.init(**kwargs)
        except Exception as err:  # whatever Ray raises here means: no Ray to run on
            ray.shutdown()  # what a half-started local instance started
            said.seek(0)
            lines = [ln.split("] ", 1)[-1] for ln in said.read().splitlines() if "Failed to" in ln]
            where = ("a local Ray instance" if local else
                     f"the Ray cluster at {address!r} (RAY_ADDRESS / sweep.ray_address)")
            why = lines[-1] if lines else " ".join(str(err).split())[:300]
            raise RayUnavailable(f"could not {'start' if local else 'join'} {where}: {why}") from None
        said.seek(0)
        log_dir = Path(ctx.address_info["session_dir"]) / "logs"
        with open(log_dir / "sweep-driver.log", "a") as log:
            log.write(said.read())
    if local and ray._private.worker._global_node.node_ip_address != LOOPBACK:
        ray.shutdown()
        raise RayUnavailable(f"the local Ray instance took node IP {ray._private.worker._global_node.node_ip_address}"
                             f", not {LOOPBACK}: it would listen beyond this machine; refused")
    if quiet:
        _route_ray_logging(log_dir / "sweep-driver.log")
    # Tune's result-grid summary warns that per-trial result files are absent: they are
    # disabled on purpose (records are written by our callback), so keep that quiet.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    started = bool(getattr(ray._private.worker._global_node, "head", False))
    how = "started a local Ray instance (listening on 127.0.0.1 only)" if started else "joined the Ray cluster"
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
    saved = sys.stdout
    log_dir = init_ray(address, quiet=quiet, stream=stream, env_vars=env_vars, dashboard=dashboard)
    import ray  # after init_ray: ray's first import reads the connect timeouts init_ray sets
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
    k = resources.workers_per_trial
    for key, name, want in (("cpus_per_trial", "CPU", resources.cpus_per_trial * k),
                            ("gpus_per_trial", "GPU", resources.gpus_per_trial)):
        if want > have.get(name, 0):
            per = f" x workers_per_trial {k}" if k > 1 and name == "CPU" else ""
            raise cfg.ConfigError(
                f"resources.{key}={getattr(resources, key)}{per} but the Ray cluster has {have.get(name, 0)} "
                f"{name}(s); lower it or join a cluster with {name}s (RAY_ADDRESS / sweep.ray_address)")


# host:port of a Ray cluster's GCS: a hostname, an IPv4 address or a bracketed IPv6 one.
ADDRESS_PATTERN = re.compile(r"^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
                             r":(?P<port>[0-9]{1,5})$")


def check_address(address: str | None) -> None:
    """The address's form, before anything starts: host:port, `auto`, `local` or none.

    Ray Client (`ray://`) is refused: under it Tune runs its driver loop as an actor on the
    head node (ray.tune.Tuner, client mode), so the result files would be written there."""
    if address in (*LOCAL_ADDRESSES, "auto"):
        return
    if address.startswith("ray://"):
        raise cfg.ConfigError(
            f"Ray address {address!r} (RAY_ADDRESS / sweep.ray_address) uses Ray Client, which runs the "
            f"sweep's driver on the head node; valid: run the sweep on a node of the cluster with the "
            f"GCS address, e.g. <head-ip>:6379, or unset it for local Ray")
    m = ADDRESS_PATTERN.fullmatch(address)
    if not m or not 1 <= int(m["port"]) <= 65535:
        shown = repr(address) if len(address) <= 80 else repr(address[:77]) + "..."
        raise cfg.ConfigError(
            f"Ray address {shown} (RAY_ADDRESS / sweep.ray_address) is invalid; valid: HOST:PORT of the "
            "cluster's head (e.g. 10.0.0.5:6379), auto (the cluster `ray start` began on this machine), local, "
            "or unset for a local instance")


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
