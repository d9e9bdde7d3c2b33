"""The sweep on a tiny grid with real Ray Tune: incremental, resumable, failures recorded."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import TINY_EXPERIMENT, make_project, strip_timing, train_in_fresh_process, venv_env
from resnet_bench.sweep import driver, progress
from resnet_bench.sweep import records as record_files
from resnet_bench.sweep import results_dir
from resnet_bench.sweep import storage as ckpt_storage

pytestmark = pytest.mark.slow


def run_sweep(project: Path, prepared: Path, *extra) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared), *extra],
        cwd=project, env=venv_env(), capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr + proc.stdout


def records(project: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (project / "results" / "tiny" / "cells").glob("*.json")}


def trained_count(log: str) -> int:
    """Cells the sweep said it would train ('... N to train')."""
    line = next(l for l in log.splitlines() if "to train" in l)
    return int(line.split(" done, ")[1].split(" to train")[0])


def start_sweep_until(project: Path, prepared: Path, ready, timeout_s: float = 300) -> subprocess.Popen:
    """A sweep in its own process group, returned once `ready()` holds (or it exited, or time ran out)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "resnet_bench.sweep", "--prepared-dir", str(prepared)],
        cwd=project, env=venv_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.1)
    return proc


def set_params(project: Path, **sweep_overrides):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sweep"].update(sweep_overrides)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_rerun_trains_nothing_and_growing_grid_trains_only_new_cells(tmp_path, prepared_digits):
    project = make_project(tmp_path / "p")
    set_params(project, tune_loggers=True)  # changes no cell id; checked below
    rc, log = run_sweep(project, prepared_digits)
    assert rc == 0, log
    first = records(project)
    assert len(first) == 2 and {r["status"] for r in first.values()} == {"ok"}
    for r in first.values():
        assert 0.0 <= r["metrics"]["test_acc"] <= 1.0 and r["epochs"][0]["epoch"] == 1
        assert r["provenance"]["code_fingerprint"] == r["config"]["code_fingerprint"]
        assert r["config"]["cell_id"] == r["cell_id"] and r["provenance"]["node"]["hostname"]
        # Every setting of the pin was in effect in the Ray worker (runtime_env, then the trial).
        assert r["provenance"]["numeric"]["numeric_pin"] == "portable", r["provenance"]["numeric"]
    storage = project / "scratch" / "ray_results"  # finished cells need no resume point
    assert not list(storage.glob("train/*/checkpoint_*")) and not list(storage.glob("resume/*"))
    tune_loggers_give_tunes_tools_the_numeric_curves(project, first)

    rc, log = run_sweep(project, prepared_digits)
    assert rc == 0 and trained_count(log) == 0, log
    assert records(project) == first  # untouched

    set_params(project, depths=[18, 34])
    rc, log = run_sweep(project, prepared_digits)
    assert rc == 0 and trained_count(log) == 2, log
    grown = records(project)
    assert len(grown) == 4
    assert all(grown[k] == v for k, v in first.items())
    assert {r["config"]["depth"] for r in grown.values()} == {18, 34}


def test_failed_cells_are_recorded_do_not_stop_others_and_are_retried(tmp_path, prepared_digits):
    prepared = tmp_path / "prepared"
    shutil.copytree(prepared_digits, prepared)
    shutil.copytree(prepared / "digits", prepared / "broken")
    (prepared / "broken" / "train_x.npy").unlink()
    project = make_project(tmp_path / "p")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["prepare"]["files"] = {"broken": {"format": "digits", "source": "x", "sha256": "", "image_size": 0,
                                            "max_aspect": 1.0, "eval_resize": 0, "eval_crop": 0}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    set_params(project, datasets=["digits", "broken"])

    rc, log = run_sweep(project, prepared)
    assert rc == 1, log
    # Tune's own loggers are off by default (sweep.tune_loggers): trial folders, no per-trial result files
    storage = project / "scratch" / "ray_results"
    assert list(storage.glob("train/*")) and not list(storage.glob("train/*/progress.csv"))
    recs = records(project)
    assert len(recs) == 4
    by_ds = {(r["config"]["dataset"], r["config"]["version"]): r for r in recs.values()}
    assert by_ds[("digits", "v1")]["status"] == "ok" and by_ds[("digits", "v2")]["status"] == "ok"
    for v in ("v1", "v2"):
        failed = by_ds[("broken", v)]
        assert failed["status"] == "failed" and "train_x" in failed["error"]
        assert f"FAILED {failed['cell_id']}" in log

    # The report can go ahead with the gaps shown.
    rc, log = run_sweep(project, prepared, "--allow-failures")
    assert rc == 0 and trained_count(log) == 2, log

    # Mend the dataset: the next run retrains only the two failed cells.
    shutil.copy(prepared / "digits" / "train_x.npy", prepared / "broken" / "train_x.npy")
    ok_before = {k: v for k, v in records(project).items() if v["status"] == "ok"}
    rc, log = run_sweep(project, prepared)
    assert rc == 0 and trained_count(log) == 2, log
    after = records(project)
    # The mended files are new data (another content hash): new cell ids, all ok; the failed
    # records of the broken data stay on disk, outside the current grid.
    current = {e["cell_id"] for e in json.loads((project / "results" / "tiny" / "expected_cells.json").read_text())}
    assert {after[k]["status"] for k in current} == {"ok"}
    assert all(after[k] == v for k, v in ok_before.items())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_sweep_loses_no_finished_cell_and_rerun_finishes(tmp_path, prepared_digits, sig):
    exp = {**TINY_EXPERIMENT, "grid": {**TINY_EXPERIMENT["grid"], "seeds": [0, 1, 2]},
           "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1}}
    project = make_project(tmp_path / "p", exp)
    cells = project / "results" / "tiny" / "cells"
    proc = start_sweep_until(project, prepared_digits, lambda: list(cells.glob("*.json")))
    os.killpg(proc.pid, sig)  # the whole process group, as Ctrl-C in a terminal does
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"sweep did not exit within 120 s of {sig.name}")
    survived = records(project)
    assert 1 <= len(survived) < 6, "kill should land mid-sweep"
    assert all(r["status"] == "ok" for r in survived.values())

    rc, log = run_sweep(project, prepared_digits)
    assert rc == 0, log
    assert trained_count(log) == 6 - len(survived)
    final = records(project)
    assert len(final) == 6 and all(final[k] == v for k, v in survived.items())


def test_plan_splits_done_and_pending_and_refuses_a_record_it_cannot_trust(tmp_path):
    from resnet_bench import config as cfg
    from test_collect import make_config, make_record

    configs = [make_config("tiny", "digits", "v1", "original", 18, seed, recipe="quick", device="cpu")
               for seed in range(5)]
    cells = [cfg.Cell.model_validate(c) for c in configs]
    for cell, config, status in zip(cells, configs, ("ok", "failed", "diverged")):
        results_dir.write_record(tmp_path, record_files.parse_record(
            make_record(config, acc=0.9, status=status, n_epochs=2 if status == "diverged" else None), "test"))
    done, pending = results_dir.plan(cells, tmp_path)
    assert [c.cell_id for c in done] == [cells[0].cell_id, cells[2].cell_id]
    assert [c.cell_id for c in pending] == [c.cell_id for c in cells[1:2] + cells[3:]]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    # A record that is not valid is neither trusted (done) nor silently retrained over: one line naming it.
    (tmp_path / f"{cells[3].cell_id}.json").write_text("{truncated")
    with pytest.raises(record_files.RecordError, match=rf"{cells[3].cell_id}\.json: not valid JSON"):
        results_dir.plan(cells, tmp_path)
    # A valid record copied under another cell's name is refused too.
    (tmp_path / f"{cells[3].cell_id}.json").write_bytes((tmp_path / f"{cells[0].cell_id}.json").read_bytes())
    with pytest.raises(record_files.RecordError, match=f"holds cell {cells[0].cell_id}, not {cells[3].cell_id}"):
        results_dir.plan(cells, tmp_path)


def test_gpu_trial_on_a_cluster_without_gpus_fails_up_front(tmp_path, prepared_digits):
    exp = {**TINY_EXPERIMENT, "resources": {"cpus_per_trial": 1, "gpus_per_trial": 1}}
    project = make_project(tmp_path / "p", exp)
    rc, log = run_sweep(project, prepared_digits)  # no cluster given: refused before Ray starts
    assert rc == 2 and "resources.gpus_per_trial: 1.0 but this machine has 0 GPU(s)" in log, log
    assert not (project / "results" / "tiny" / "cells").exists()
    # Joining a (local, GPU-less) cluster: Ray's view of resources refuses it up front, not a hang.
    rc, log = run_sweep(project, prepared_digits, "--ray-address", "local")
    assert rc == 2 and "gpus_per_trial=1" in log and "0 GPU" in log, log
    assert not (project / "results" / "tiny" / "cells").exists()
    

def test_sweep_killed_mid_cell_resumes_from_its_checkpoint_with_the_same_numbers(tmp_path, prepared_digits):
    epochs = 30  # ~0.25 s each on one core: the kill lands a few epochs in
    exp = {**TINY_EXPERIMENT, "grid": {**TINY_EXPERIMENT["grid"], "versions": ["v2"]},
           "recipe": {**TINY_EXPERIMENT["recipe"], "epochs": epochs}}
    project = make_project(tmp_path / "p", exp)
    trial_dirs = project / "scratch" / "ray_results" / "train"
    # checkpoint_000001 exists only once Tune has finished persisting checkpoint_000000.
    proc = start_sweep_until(project, prepared_digits, lambda: list(trial_dirs.glob("*/checkpoint_000001")))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not records(project), "the kill should land mid-cell"

    rc, log = run_sweep(project, prepared_digits)
    assert rc == 0, log
    assert "resuming from the checkpoint an interrupted sweep left" in log, log
    (rec,) = records(project).values()
    assert rec["status"] == "ok" and [e["epoch"] for e in rec["epochs"]] == list(range(1, epochs + 1))
    (attempt,) = rec["attempts"]
    assert 2 <= attempt["first_epoch"] <= epochs and rec["retries"] == 0
    assert not list(trial_dirs.glob("*/checkpoint_*")) and not list(trial_dirs.parent.glob("resume/*"))

    # The same cell uninterrupted, in a fresh process started as the sweep's workers are.
    uninterrupted = train_in_fresh_process(rec["config"], prepared_digits, tmp_path / "fresh")
    assert strip_timing(rec) == strip_timing(uninterrupted)


def _write_checkpoint(d: Path, payload: bytes, *, size: int | None = None, cell_id: str = "abc") -> None:
    d.mkdir(parents=True)
    (d / ckpt_storage.CKPT_FILE).write_bytes(payload)
    meta = ckpt_storage.checkpoint_meta(d / ckpt_storage.CKPT_FILE, cell_id, 1)
    (d / ckpt_storage.CKPT_META).write_text(json.dumps({**meta, "bytes": meta["bytes"] if size is None else size}))


def test_prior_checkpoint_is_the_newest_complete_one_and_is_dropped_when_done(tmp_path):
    storage, trial = str(tmp_path / "s"), tmp_path / "s" / "train" / "abc"
    _write_checkpoint(trial / "checkpoint_000000", b"old")
    _write_checkpoint(trial / "checkpoint_000002", b"new")
    _write_checkpoint(trial / "checkpoint_000003", b"cut sh", size=9)  # a copy cut short by a kill
    uri = ckpt_storage.adopt_prior_checkpoint(storage, "abc")
    assert uri == str(tmp_path / "s" / "resume" / "abc")
    assert (Path(uri) / ckpt_storage.CKPT_FILE).read_bytes() == b"new"
    assert not list(trial.glob("checkpoint_*"))  # the next trial's checkpoint_000000 starts afresh
    # A rerun killed before its first checkpoint: the adopted one stays.
    assert ckpt_storage.adopt_prior_checkpoint(storage, "abc") == uri
    # A rerun that checkpointed again supersedes it.
    _write_checkpoint(trial / "checkpoint_000000", b"newer")
    assert (Path(ckpt_storage.adopt_prior_checkpoint(storage, "abc")) / ckpt_storage.CKPT_FILE).read_bytes() == b"newer"
    ckpt_storage.drop_checkpoints(storage, "abc")
    assert not Path(uri).exists() and ckpt_storage.adopt_prior_checkpoint(storage, "abc") is None


@pytest.mark.parametrize("bad", ["two", -2, 1.5, True])
def test_bad_max_failures_fails_before_ray_with_one_line(tmp_path, prepared_digits, capsys, bad):
    project = make_project(tmp_path / "p")
    set_params(project, max_failures=bad)
    rc = driver.main(["--params", str(project / "params.yaml"), "--experiments-dir", str(project / "experiments"),
                     "--prepared-dir", str(prepared_digits), "--results", str(project / "results")])
    assert rc == 2
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "sweep.max_failures" in errors[0] and repr(bad) in errors[0], errors
    assert not (project / "results").exists()


def test_failed_bench_measurement_is_retried_once_then_fails_the_sweep(tmp_path, prepared_digits):
    # One image of 1x1 pixels: BatchNorm in training mode sees one value per channel and raises,
    # on every try.
    exp = {**TINY_EXPERIMENT, "grid": {**TINY_EXPERIMENT["grid"], "versions": ["v2"]},
           "bench": {"enabled": True, "batch_size": 1, "img_size": 1, "warmup": 1, "repeats": 1}}
    project = make_project(tmp_path / "p", exp)
    rc, log = run_sweep(project, prepared_digits)
    assert rc == 1, log
    assert "bench: 1 measurement(s) failed, retrying once" in log and "1 bench measurement(s) failed" in log
    (rec,) = records(project).values()
    assert rec["status"] == "ok" and "Expected more than 1 value per channel" in rec["bench_error"]
    assert rec["metrics"].get("bench_train_img_per_s") is None

    rc, log = run_sweep(project, prepared_digits, "--allow-failures")
    assert rc == 0 and trained_count(log) == 0, log


def test_ray_client_address_is_refused_before_anything_runs(tmp_path, prepared_digits, capsys, monkeypatch):
    project = make_project(tmp_path / "p")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head.example:10001")
    rc = driver.main(["--params", str(project / "params.yaml"), "--experiments-dir", str(project / "experiments"),
                     "--prepared-dir", str(prepared_digits), "--results", str(project / "results")])
    assert rc == 2
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "ray://head.example:10001" in errors[0] and "<head-ip>:6379" in errors[0]
    assert not (project / "results").exists()


def test_progress_eta_counts_epochs_left_over_concurrent_trials(monkeypatch):
    import io

    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    cells = [{"cell_id": c, "recipe": {"epochs": 3}} for c in ("a", "b", "c", "d")]
    out = io.StringIO()
    p = progress.Progress(4, 0, cells, stream=out, concurrency=2)
    assert p.eta_s() != p.eta_s()  # NaN before any epoch
    p.started("a"), p.started("b")
    clock[0] = 100.0
    p.epoch("a", "A", 1, {"hostname": "h", "node_id": "n"}, 0, True)
    p.epoch("b", "B", 1, {"hostname": "h", "node_id": "n"}, 0, True)
    # 100 s per epoch; 10 epochs left (2 + 2 + 3 + 3), two at a time: 500 s.
    assert p.eta_s() == 500.0
    assert "~8.3 min left" in out.getvalue().splitlines()[-1]


def tune_loggers_give_tunes_tools_the_numeric_curves(project: Path, recs: dict[str, dict]) -> None:
    """After a sweep with sweep.tune_loggers: true: Tune's CSV/JSON/TensorBoard files in each trial folder, and
    ExperimentAnalysis reads the numbers (final metrics, per-epoch curves), not JSON strings."""
    import pandas as pd
    from ray.tune import ExperimentAnalysis

    train = project / "scratch" / "ray_results" / "train"
    for cell_id, rec in recs.items():
        assert {"progress.csv", "result.json"} <= {p.name for p in (train / cell_id).iterdir()}, cell_id
        assert list((train / cell_id).glob("events.out.tfevents.*"))  # TensorBoard
        assert set(rec["epochs"][0]) == set(record_files.EPOCH_KEYS)  # the record rebuilt from the numbers
        # every per-epoch report reached Tune as numbers
        rows = pd.read_csv(train / cell_id / "progress.csv")
        epoch_rows = rows[~rows["final"].astype(bool)]
        assert list(epoch_rows["val_acc"]) == [e["val_acc"] for e in rec["epochs"]], cell_id
    frame = ExperimentAnalysis(str(train)).dataframe()  # the last result of each trial
    assert len(frame) == len(recs) == 2
    assert frame["test_acc"].dtype.kind == "f"
    assert sorted(frame["test_acc"]) == sorted(r["metrics"]["test_acc"] for r in recs.values())
    assert (frame["epochs_completed"] == 1).all() and not any(c.endswith("_json") and c != "record_json"
                                                             for c in frame.columns)


def test_dashboard_without_its_packages_fails_before_ray_with_one_line(tmp_path, prepared_digits, capsys):
    from ray._private.utils import get_dashboard_dependency_error

    if get_dashboard_dependency_error() is None:
        pytest.skip("Ray's dashboard packages are installed here; test_dashboard_binds_loopback covers it")
    project = make_project(tmp_path / "p")
    set_params(project, dashboard=True)
    rc, log = run_sweep(project, prepared_digits)
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "sweep.dashboard" in errors[0] and "ray[default]" in errors[0], log
    assert "started a local Ray" not in log and not (project / "results" / "tiny" / "cells").exists()


def test_dashboard_binds_loopback():
    """sweep.dashboard: true starts Ray's dashboard on 127.0.0.1 only, and it answers there."""
    import io
    import urllib.request

    from ray._private.utils import get_dashboard_dependency_error

    from resnet_bench.sweep.cluster import ray_session

    if get_dashboard_dependency_error() is not None:
        pytest.skip(f"Ray's dashboard packages are not installed: {get_dashboard_dependency_error()}")
    import ray

    lines = io.StringIO()
    with ray_session(None, dashboard=True, stream=lines):
        url = ray._private.worker.get_dashboard_url()
        assert f"[sweep] Ray dashboard: http://{url}" in lines.getvalue(), lines.getvalue()
        assert url.split(":")[0] == "127.0.0.1", url
        with urllib.request.urlopen(f"http://{url}/api/version", timeout=30) as resp:
            assert resp.status == 200


def test_dry_run_prints_the_grids_gpu_hours_before_the_data_exists(tmp_path, capsys):
    """imagenet1k-depth with ILSVRC2012 in params.yaml but not prepared: the estimate from the models' FLOPs
    and the nominal image counts comes first, before the data or the GPUs are checked."""
    from resnet_bench import config as cfg
    from resnet_bench.sweep import estimate

    repo = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["files"] = {"imagenet": {"format": "imagenet", "source": "data/raw/imagenet", "sha256": "",
                                               "image_size": 256, "max_aspect": 1.3333333333333333,
                                               "eval_resize": 256, "eval_crop": 224}}
    params["sweep"]["experiment"] = "imagenet1k-depth"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    rc = driver.main(["--params", str(tmp_path / "params.yaml"), "--experiments-dir", str(repo / "experiments"),
                      "--prepared-dir", str(tmp_path / "prepared"), "--dry-run"])
    err = capsys.readouterr().err
    # The estimate comes before any check; this machine then refuses the experiment's GPUs (exit 2).
    assert rc == 2 and "gpus_per_trial" in err.splitlines()[-1], err
    head = err.splitlines()[0]
    assert head.startswith("[sweep] estimate: 36 cells") and "GPU-hours" in head and "2470 img/s" in head
    # One cell by hand: 90 epochs of the 1,153,050 train images (90% of 1,281,167) at 3x the forward
    # FLOPs, plus a forward of val + test each epoch and a last test pass, at the reference rate.
    exp = cfg.resolve_experiment(cfg.load_params(tmp_path / "params.yaml"), repo / "experiments").experiment
    cell = next(c for c in cfg.expand_grid(exp) if c.model == "resnet50_v1")
    sizes = driver.dataset_sizes(cfg.load_params(tmp_path / "params.yaml"), exp, tmp_path / "prepared")
    f = estimate.forward_flops("resnet50_v1", "imagenet", None, "original", "paper", "projection", "3x3", 3, 1000, 224)
    n_val = round(1_281_167 * 0.1)
    flops = 90 * (3 * (1_281_167 - n_val) + n_val + 50_000) * f + 50_000 * f
    rate = estimate.reference_rate()
    assert estimate.cell_flops(cell, sizes["imagenet"]) == flops
    assert rate.train_flops_per_s == pytest.approx(2470 * 3 * estimate.forward_flops(
        "resnet50_v1", "imagenet", None, "original", "modern", "projection", "3x3", 3, 1000, 224))
    assert f"resnet50_v1/imagenet: 3 seed(s) x {flops / rate.train_flops_per_s / 3600:,.2f} GPU-h" in err
