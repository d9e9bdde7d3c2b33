import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Tests are small: one thread keeps them deterministic and leaves a core for Ray workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

# A grid cell small enough for a test: 4 base channels, 1 epoch, no bench.
TINY_EXPERIMENT = {
    "description": "tiny test grid",
    "grid": {"versions": ["v1", "v2"], "depths": [18], "datasets": ["digits"], "seeds": [0]},
    "arch": {"stem": "cifar", "width": 4},
    "recipe": {"name": "quick", "epochs": 1, "batch_size": 128},
    "bench": {"enabled": False, "batch_size": 16, "warmup": 1, "repeats": 2},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
}


@pytest.fixture(autouse=True)
def _numeric_env_restored():
    """`resnet-bench train`/`verify` pin the numeric environment of their process (os.environ, and
    train_cell the torch flags); called in-process by a test, that must not leak into later tests."""
    import torch

    from resnet_bench.env import NUMERIC_ENV_VARS

    saved = {k: os.environ.get(k) for k in NUMERIC_ENV_VARS}
    flags = torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled()
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    torch.backends.mkldnn.enabled = flags[0]
    torch.backends.nnpack.set_flags(flags[1])


@pytest.fixture
def repo_root() -> Path:
    return REPO


def venv_env() -> dict:
    """Environment whose `python` and `dvc` are this interpreter's."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def make_project(root: Path, experiment: dict | None = None, *, git: bool = False) -> Path:
    """A copy of the project (code, dvc.yaml, params) with a tiny experiment active."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "resnet_bench", root / "resnet_bench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "experiments", root / "experiments")
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    (root / "experiments" / "tiny.yaml").write_text(yaml.safe_dump(experiment or TINY_EXPERIMENT))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["sweep"]["experiment"] = "tiny"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if git:
        env = venv_env()
        run = lambda *cmd: subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
        run("git", "init", "-q")
        run("git", "config", "user.email", "test@resnet-bench.invalid")
        run("git", "config", "user.name", "test")
        run("dvc", "init", "-q")
        run("dvc", "config", "core.analytics", "false")
        shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")  # the plot templates dvc.yaml names
        run("git", "add", "-A")
        run("git", "commit", "-qm", "tiny project")
    return root


@pytest.fixture(scope="session")
def reproduced_tiny(tmp_path_factory) -> tuple[Path, str]:
    """A tiny git + DVC project after one real `dvc repro` (its results not committed), and the repro's
    log. Shared by the tests that need a finished pipeline; those that change it work on `copy_project`."""
    project = make_project(tmp_path_factory.mktemp("reproduced") / "p", git=True)
    proc = subprocess.run(["dvc", "repro"], cwd=project, env=venv_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"dvc repro failed:\n{proc.stdout}\n{proc.stderr}"
    return project, proc.stdout + proc.stderr


def copy_project(src: Path, dst: Path) -> Path:
    """A copy of a git + DVC project (work tree, .git, .dvc with its cache): git and DVC paths are relative."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.fixture(scope="session")
def prepared_digits(tmp_path_factory) -> Path:
    """data/prepared/digits made once per test session by the real prepare entry point."""
    from resnet_bench.data import prepare as prep

    out = tmp_path_factory.mktemp("prepared")
    assert prep.main(["--name", "digits", "--out", str(out / "digits")]) == 0
    return out


def strip_timing(record: dict) -> dict:
    """The numbers of a cell record that must repeat exactly; wall-clock fields never do. A metric that is
    null is the same as one that is absent (a record written through the schema lists every metric)."""
    timing = {"epoch_s", "train_img_per_s", "train_time_s", "steady_s", "steady_images", "steady_train_img_per_s",
              "train_epoch_img_per_s", "train_img_per_s_per_worker"}
    return {"metrics": {k: v for k, v in record["metrics"].items() if k not in timing and v is not None},
            "epochs": [{k: v for k, v in e.items() if k not in timing} for e in record["epochs"]]}


def train_in_fresh_process(config: dict, prepared: Path, workdir: Path) -> dict:
    """Train a cell config in a new process started as the sweep's workers start: pinned numeric
    environment, 1 thread (a process that already computed keeps its kernel choice)."""
    from resnet_bench.env import pinned_env

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "cell.json").write_text(json.dumps(config))
    script = ("import json, sys; from resnet_bench import train; "
              "r = train.train_cell(json.load(open(sys.argv[1])), sys.argv[2]); "
              "open(sys.argv[3], 'w').write(json.dumps(r))")
    env = {**venv_env(), **pinned_env(1, config["runtime"]["numeric_pin"])}
    subprocess.run([sys.executable, "-c", script, str(workdir / "cell.json"), str(prepared),
                    str(workdir / "record.json")], env=env, check=True, timeout=600)
    return json.loads((workdir / "record.json").read_text())


@pytest.fixture(scope="module")
def ray_head():
    """A head node with 1 CPU, shared by a module's tests, Ray's files in a private temp dir.

    Cluster writes <RAY_TMPDIR>/ray/ray_current_cluster, which a bare `ray.init()` anywhere on
    this machine would join (Ray's convention), so the dir is private to this test. It is short
    because Ray's Unix sockets live under it (107-byte limit on socket paths).
    """
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        yield cluster
    finally:
        cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(tmp, ignore_errors=True)
