"""Issue 24: an installable package. The built wheel, installed into a fresh virtualenv, starts a project of
its own outside the repository (`resnet-bench init`), shows its config and runs a tiny `dvc repro` there."""

import email
from collections import Counter
import re
import site
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_EXPERIMENT
from resnet_bench import scaffold

pytestmark = pytest.mark.slow

# what the wheel is built from: the package and the files its project_template/ symlinks point at
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "params.yaml", "dvc.yaml", ".gitignore",
           ".dvcignore", "resnet_bench", "experiments", ".dvc/plots")


def tracked_sources(dst: Path) -> Path:
    """The repository's tracked (and new, not ignored) files under SOURCES, copied with their symlinks."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", *SOURCES], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        src, out = REPO / name, dst / name
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            out.symlink_to(os.readlink(src))
        elif src.is_file():
            out.write_bytes(src.read_bytes())
    return dst


def clean_env(venv: Path) -> dict:
    """This venv's `python`, `resnet-bench` first on PATH; no PYTHONPATH, so nothing imports the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return env


def sh(cwd: Path, env: dict, *cmd) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tracked_sources(tmp / "src")
    # offline: no index, no build isolation (this venv's setuptools builds it)
    sh(tmp, dict(os.environ), sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
       "--no-index", "-q", "-w", str(tmp / "dist"), str(src))
    (whl,) = (tmp / "dist").glob("resnet_bench-*.whl")
    return whl


def test_the_wheel_ships_the_project_template_and_complete_metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        # the template's files are in the wheel as files, byte for byte the repository's
        for rel, repo_file in [("params.yaml", "params.yaml"), ("pipeline.yaml", "dvc.yaml"),
                               ("plots/v1v2_curves.json", ".dvc/plots/v1v2_curves.json"),
                               *[(f"experiments/{p.name}", f"experiments/{p.name}")
                                 for p in (REPO / "experiments").iterdir()]]:
            assert z.read(f"resnet_bench/project_template/{rel}") == (REPO / repo_file).read_bytes(), rel
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(z.read(meta_name))
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert meta["License-Expression"] == "MIT" and meta["Description-Content-Type"] == "text/markdown"
    assert "# resnet-bench" in meta.get_payload()  # the README is the long description
    assert meta.get_all("Project-URL") and len(meta.get_all("Classifier")) >= 5
    requires = {r.split(">")[0].split("[")[0].split("<")[0].strip(): r for r in meta.get_all("Requires-Dist")}
    for pkg in ("ray", "dvc", "pydantic"):  # tested lower bounds and upper caps
        assert re.search(r">=[\d.]+,\s*<\d", requires[pkg].replace(", ", ",")) or re.search(
            r"<\d.*>=[\d.]+", requires[pkg]), requires[pkg]


def test_the_installed_wheel_starts_a_project_outside_the_repository_and_runs_it(wheel, tmp_path):
    venv = tmp_path / "venv"
    # A fresh venv that reuses this one's packages (nothing is downloaded), with the wheel in it. This venv's
    # site-packages go on its path through a .pth file (`--system-site-packages` would give the base
    # interpreter's, not this venv's); the wheel installed into the new venv comes first on the path.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    (own,) = [p for p in (venv / "lib").glob("python3*/site-packages")]
    (own / "_reused_site_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = clean_env(venv)
    py = str(venv / "bin" / "python")
    # --ignore-installed: the editable install of this checkout (in the reused site-packages) is left alone
    sh(tmp_path, env, py, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel))
    where = sh(tmp_path, env, py, "-c", "import resnet_bench; print(resnet_bench.__file__)").strip()
    assert where.startswith(str(venv)), f"imported {where}, not the wheel's copy"

    # outside any project: the packaged experiments, the schema's defaults
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    shown = sh(nowhere, env, "resnet-bench", "config", "show")
    assert "# experiment 'smoke'" in shown and "resnet_bench/project_template/experiments/smoke.yaml" in shown
    assert "no params.yaml here" in shown
    dry = sh(nowhere, env, "resnet-bench", "sweep", "--dry-run")
    assert "resnet18_v1/digits/seed0" in dry and "need the prepared data" in dry

    out = sh(tmp_path, env, "resnet-bench", "init", "proj")
    proj = tmp_path / "proj"
    assert "next: cd proj" in out
    assert sorted(p.name for p in (proj / "experiments").iterdir()) == sorted(
        p.name for p in (REPO / "experiments").iterdir())
    assert (proj / ".dvc" / "plots" / "v1v2_curves.json").is_file() and (proj / ".git").is_dir()
    pipeline = (proj / "dvc.yaml").read_text()
    assert "resnet_bench/" not in pipeline.replace("python -m resnet_bench", "")  # no module deps
    assert "experiments/${sweep.experiment}.yaml" in pipeline
    # init refuses a folder that is not empty and changes nothing in it
    again = subprocess.run(["resnet-bench", "init", "proj"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "is not empty" in again.stderr and again.stderr.count("\n") == 1

    shown = sh(proj, env, "resnet-bench", "config", "show")  # the project's own files now
    assert "  # experiments/smoke.yaml" in shown and "no params.yaml here" not in shown
    # a tiny experiment of one's own, then the real pipeline
    (proj / "experiments" / "tiny.yaml").write_text(yaml.safe_dump(TINY_EXPERIMENT))
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["sweep"]["experiment"] = "tiny"
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(proj, env, "git", "add", "-A")
    sh(proj, env, "git", "-c", "user.email=t@resnet-bench.invalid", "-c", "user.name=t", "commit", "-qm", "init")
    log = sh(proj, env, py, "-m", "dvc", "repro")
    assert [l.split("'")[1] for l in log.splitlines() if l.startswith("Running stage")] == [
        "prepare@digits", "sweep", "collect", "report"], log
    metrics = yaml.safe_load((proj / "results" / "tiny" / "metrics.json").read_text())
    assert (metrics["ok"], metrics["not_ok"]) == (2, 0) and (proj / "reports" / "tiny" / "report.md").is_file()
    assert "up to date" in sh(proj, env, py, "-m", "dvc", "status")


def test_init_pipeline_drops_only_the_module_deps():
    text = (REPO / "dvc.yaml").read_text()
    out = scaffold.project_pipeline(text)
    dropped = Counter(text.splitlines()) - Counter(out.splitlines())
    code = {l for l in dropped if l.strip().startswith("- resnet_bench/") and l.strip().endswith(".py")}
    assert code and dict(dropped - Counter({l: dropped[l] for l in code})) == {"      deps:": 1}, dropped
    ours, theirs = yaml.safe_load(out)["stages"], yaml.safe_load(text)["stages"]
    assert ours.keys() == theirs.keys()
    for name, stage in ours.items():
        body, orig = stage.get("do", stage), theirs[name].get("do", theirs[name])
        assert [d for d in orig.get("deps", []) if not str(d).startswith("resnet_bench/")] == body.get("deps", [])
        assert {k: v for k, v in body.items() if k != "deps"} == {k: v for k, v in orig.items() if k != "deps"}


def test_a_projects_own_experiment_file_wins_over_the_packaged_one(tmp_path):
    from resnet_bench import config as cfg

    assert cfg.experiment_file("smoke", tmp_path) == cfg.packaged("experiments/smoke.yaml")
    assert cfg.packaged("experiments/smoke.yaml").read_bytes() == (REPO / "experiments" / "smoke.yaml").read_bytes()
    (tmp_path / "smoke.yaml").write_text("description: mine\n")
    (tmp_path / "mine.yaml").write_text("description: mine\n")
    assert cfg.experiment_file("smoke", tmp_path) == tmp_path / "smoke.yaml"
    assert set(cfg.available_experiments(tmp_path)) == {p.stem for p in (REPO / "experiments").glob("*.yaml")} | {
        "mine"}
