"""End to end: the real `dvc repro` on a tiny experiment in a temporary git repository."""

import json
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import copy_project, make_project, venv_env

pytestmark = pytest.mark.slow


def dvc(project, *args) -> str:
    proc = subprocess.run(["dvc", *args], cwd=project, env=venv_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def ran_stages(log: str) -> list[str]:
    return [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")]


def test_dvc_repro_end_to_end(tmp_path, reproduced_tiny):
    project, log = copy_project(reproduced_tiny[0], tmp_path / "p"), reproduced_tiny[1]
    assert ran_stages(log) == ["prepare@digits", "sweep", "collect", "report"], log

    cells = pd.read_parquet(project / "results" / "tiny" / "cells.parquet")
    assert len(cells) == 2 and set(cells["version"]) == {"v1", "v2"}
    assert (cells["status"] == "ok").all()
    # 1 epoch of a width-4 net on digits is well above chance (10%) but not perfect.
    assert cells["test_acc"].between(0.15, 1.0).all(), cells["test_acc"]
    assert (cells["params"] > 0).all() and (cells["train_img_per_s"] > 0).all()
    metrics = json.loads((project / "results" / "tiny" / "metrics.json").read_text())
    assert metrics
    figures = list((project / "reports" / "tiny" / "figures").glob("*.png"))
    assert figures and all(f.stat().st_size > 5_000 for f in figures)
    report = (project / "reports" / "tiny" / "report.md").read_text()
    assert "v1" in report and "v2" in report
    # every ok cell keeps its final model beside its record (sweep.keep_models: final, the default), whole
    from resnet_bench.models.files import read_model_file

    for r in cell_records(project).values():
        model = read_model_file(project / "results" / "tiny" / "cells" / r["models"]["final"]["file"])
        assert model.cell.cell_id == r["cell_id"] and model.metrics["test_acc"] == r["metrics"]["test_acc"]
        assert r["models"]["best"] is None

    # Nothing changed: nothing reruns.
    log = dvc(project, "repro")
    assert ran_stages(log) == [], log

    # Only a report setting changed: only the report reruns.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["report"]["dpi"] = 100
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = dvc(project, "repro")
    assert ran_stages(log) == ["report"], log


def git(project, *args) -> str:
    proc = subprocess.run(["git", *args], cwd=project, env=venv_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"git {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def cell_records(project) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (project / "results" / "tiny" / "cells").glob("*.json")}


def report_files(project) -> dict[str, bytes]:
    root = project / "reports" / "tiny"
    files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    for name in ("cells.csv", "epochs.csv", "excluded.csv", "metrics.json"):
        files[name] = (project / "results" / "tiny" / name).read_bytes()
    return files


def test_numbers_are_traceable_shared_through_dvc_and_retrained_only_when_code_changes(tmp_path, reproduced_tiny):
    """Issue 10 end to end: provenance, a DVC remote round trip, code vs comment edits."""
    project = copy_project(reproduced_tiny[0], tmp_path / "p")
    head = git(project, "rev-parse", "HEAD").strip()
    first = cell_records(project)
    assert len(first) == 2
    for r in first.values():
        assert r["provenance"]["git"] == {"commit": head, "dirty": False, "diff_sha256": None}
        assert r["provenance"]["node"]["hostname"] and r["provenance"]["code_fingerprint"]

    # Share through a DVC remote: a second clone pulls data and cells, and trains nothing.
    dvc(project, "remote", "add", "-d", "store", str(tmp_path / "remote"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "results")
    dvc(project, "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    dvc(clone, "pull")
    status = dvc(clone, "status")
    assert "up to date" in status, status
    # Models are results too (issue 23): each ok cell's model file came with its record, and the clone
    # re-evaluates them without training, bit for bit (verify --eval), and one by its own file (evaluate).
    pulled = cell_records(clone)
    for r in pulled.values():
        model = clone / "results" / "tiny" / "cells" / r["models"]["final"]["file"]
        assert model.is_file() and model.stat().st_size == r["models"]["final"]["bytes"]
    proc = subprocess.run(["python", "-m", "resnet_bench", "verify", "--eval", "--results", "results/tiny"], cwd=clone, env=venv_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.count(" identical: final (epoch 1)") == 2, proc.stdout + proc.stderr
    some = next(iter(pulled.values()))
    proc = subprocess.run(["python", "-m", "resnet_bench", "evaluate", "--weights",
                           f"results/tiny/cells/{some['models']['final']['file']}"], cwd=clone, env=venv_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and f"acc {some['metrics']['test_acc']!r}" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.endswith(": identical\n"), proc.stdout
    assert ran_stages(dvc(clone, "repro")) == []
    # Regenerated from the pulled cells (forced), the tables and report are byte-identical.
    log = dvc(clone, "repro", "--force")
    assert "2 cells, 2 done, 0 to train" in log and "Running stage 'report'" in log, log
    assert report_files(clone) == report_files(project)

    # A comment-only edit of training code: the sweep stage reruns (its dep changed) and trains nothing.
    train_py = project / "resnet_bench" / "train.py"
    train_py.write_text(train_py.read_text() + "\n# a comment changes no number\n")
    git(project, "commit", "-qam", "comment")
    log = dvc(project, "repro")
    assert "2 cells, 2 done, 0 to train" in log, log
    assert cell_records(project) == first

    # An edit that changes the loss (the training step's, in runtime.py): every cell retrains; the
    # tables hold only the new cells.
    runtime_py = project / "resnet_bench" / "runtime.py"
    src = runtime_py.read_text()
    assert "label_smoothing=label_smoothing)" in src
    runtime_py.write_text(src.replace("label_smoothing=label_smoothing)", "label_smoothing=label_smoothing) * 0.5", 1))
    git(project, "commit", "-qam", "loss x 0.5")
    log = dvc(project, "repro")
    assert "2 cells, 0 done, 2 to train" in log, log
    cells = pd.read_parquet(project / "results" / "tiny" / "cells.parquet")
    old_fp = {r["config"]["code_fingerprint"] for r in first.values()}
    assert len(cells) == 2 and (cells["status"] == "ok").all() and not set(cells["code_fingerprint"]) & old_fp
    new_head = git(project, "rev-parse", "HEAD").strip()
    assert set(cells["git_commit"]) == {new_head}
    excluded = pd.read_csv(project / "results" / "tiny" / "excluded.csv")
    assert sorted(excluded["cell_id"]) == sorted(first) and set(excluded["reason"]) == {"training code changed"}
    assert "; 2 excluded." in (project / "reports" / "tiny" / "report.md").read_text()


def test_bad_params_fail_before_training_with_one_line(tmp_path, prepared_digits):
    project = make_project(tmp_path / "p")
    for key, value, bad, valid in [
        ("datasets", ["cifar11"], "'cifar11'", "digits"),
        ("versions", ["v3"], "'v3'", "'v1' or 'v2'"),
        ("depths", [19], "19", "152"),
    ]:
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["sweep"] = {**params["sweep"], "datasets": None, "versions": None, "depths": None, key: value}
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        proc = subprocess.run(
            ["python", "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared_digits)],
            cwd=project, env=venv_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2
        errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
        assert len(errors) == 1 and bad in errors[0] and valid in errors[0], proc.stderr
        assert not (project / "results" / "tiny" / "cells").exists()
