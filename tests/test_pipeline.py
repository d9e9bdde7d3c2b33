"""End to end: the real `dvc repro` on a tiny experiment in a temporary git repository."""

import json
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import make_project, venv_env

pytestmark = pytest.mark.slow


def dvc(project, *args) -> str:
    proc = subprocess.run(["dvc", *args], cwd=project, env=venv_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def ran_stages(log: str) -> list[str]:
    return [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")]


def test_dvc_repro_end_to_end(tmp_path):
    project = make_project(tmp_path / "p", git=True)
    log = dvc(project, "repro")
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

    # Nothing changed: nothing reruns.
    log = dvc(project, "repro")
    assert ran_stages(log) == [], log

    # Only a report setting changed: only the report reruns.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["report"]["dpi"] = 100
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = dvc(project, "repro")
    assert ran_stages(log) == ["report"], log


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
