"""The GPU acceptance script's CPU mode: every step's code path runs (CUDA-only checks skipped with their
reason), so the script a GPU session runs in one command cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import venv_env

REPO = Path(__file__).resolve().parents[1]


def test_gpu_acceptance_cpu_mode_runs_every_step(tmp_path):
    out = tmp_path / "acceptance"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_acceptance.py"), "--cpu", "--out", str(out)],
                          env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_acceptance.json").read_text())
    steps = report["steps"]
    assert list(steps) == ["environment", "tf32", "bench_resnet50", "oom", "fp16_resume", "host_syncs",
                           "loop_vs_bench", "sharing", "two_workers", "ten_models_compile", "compile_resnet50"]
    assert steps["tf32"] == {**steps["tf32"], "status": "skipped", "skipped": "needs CUDA: TF32 is a GPU tensor-core format"}
    assert all(s["status"] == "ok" for name, s in steps.items() if name != "tf32"), steps
    r = {name: s["result"] for name, s in steps.items()}
    # a real allocation failure, halved until it fits; a cell that cannot fit fails in one line
    assert r["oom"]["bench_halving"]["oom_retries"] >= 1
    assert "can't allocate memory" in r["oom"]["bench_halving"]["oom_errors"][0]
    line = r["oom"]["cell_does_not_fit"]
    assert "\n" not in line and line.startswith("resnet18_v1 at batch 512 does not fit on cpu (")
    assert r["fp16_resume"]["identical_metrics"] and r["fp16_resume"]["scale_final"] == r["fp16_resume"][
        "scale_final_resumed"]
    assert r["host_syncs"]["loader_syncs_per_batch"] == 0
    assert [t["status"] for t in r["sharing"]["trials"]] == ["ok", "ok"] and "Ray" in r["sharing"]["ray"]
    assert r["two_workers"]["backend"] == "gloo" and r["two_workers"]["per_rank_batch"] == 128
    assert r["two_workers"]["scaling_efficiency"] > 0 and r["two_workers"]["test_acc_two"] >= 0
    assert all(row["compile_graphs"] == 2 for row in r["ten_models_compile"]["rows"])
    md = (out / "gpu_acceptance.md").read_text()
    assert "| oom | ok |" in md and "| tf32 | skipped |" in md and md in proc.stdout
