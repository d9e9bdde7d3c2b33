"""Trained models as result files (issue 23): evaluate reproduces the record bit for bit in a fresh
process, verify --eval, load_model, export into torchvision and timm, the disk estimate, the planner.
The sweep -> DVC push -> clone -> pull -> evaluate path is in test_pipeline.py; hostile model files
are rows of test_hostile_inputs.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, venv_env

from resnet_bench import cli
from resnet_bench.env import pinned_env

TRAIN_AND_KEEP = """
import json, sys
from pathlib import Path
from resnet_bench import train, train_cli
from resnet_bench.models.files import write_cell_models
prepared, out, model = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
args = train_cli.parse_args(["--model", model, "--width", "4", "--epochs", "2", "--prepared-dir", prepared,
                         "--threads", "1"])
cell = train_cli.cell_from_args(args)
train.pin_numeric_environment(cell)
states = {}
rec = train.train_cell(cell, prepared, keep_models="best", on_models=states.update)
rec["models"] = write_cell_models(rec, states, out, json.loads((Path(prepared) / "digits" / "meta.json").read_text()))
(out / f"{cell.cell_id}.json").write_text(json.dumps(rec))
"""


def run_cli(*argv, cwd=None) -> subprocess.CompletedProcess:
    """`python -m resnet_bench ...` in a fresh process (the pin must be set before torch computes)."""
    return subprocess.run([sys.executable, "-m", "resnet_bench", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**venv_env(), "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="session")
def kept(tmp_path_factory, prepared_digits) -> tuple[Path, dict]:
    """A width-4 ResNet-18 v1 trained 2 epochs on digits in a fresh pinned process, as a sweep trial
    trains it, with its final and best model files and its record (records.CellRecord) beside them."""
    out = tmp_path_factory.mktemp("kept")
    subprocess.run([sys.executable, "-c", TRAIN_AND_KEEP, str(prepared_digits), str(out), "resnet18_v1"],
                   env={**venv_env(), **pinned_env(1, "portable"), "PYTHONPATH": str(REPO)}, check=True, timeout=300)
    (record_path,) = out.glob("*.json")
    return out, json.loads(record_path.read_text())


def test_evaluate_reproduces_the_records_test_accuracy_bit_for_bit(kept, prepared_digits):
    from resnet_bench.sweep.records import parse_record

    folder, rec = kept
    parse_record(rec, "the kept record")  # the models block follows the record schema
    final, best = rec["models"]["final"], rec["models"]["best"]
    assert best["epoch"] == rec["metrics"]["best_val_epoch"] and final["epoch"] == 2
    proc = run_cli("evaluate", "--weights", folder / final["file"], "--prepared-dir", prepared_digits)
    assert proc.returncode == 0, proc.stderr
    m = rec["metrics"]
    assert f"acc {m['test_acc']!r} loss {m['test_loss']!r}" in proc.stdout and proc.stdout.endswith(
        ": identical\n"), proc.stdout
    # the best-validation weights against their epoch's test curve: verify --eval below


def results_folder(kept, tmp_path) -> Path:
    """A results folder (expected_cells.json, cells/) holding the kept cell."""
    folder, rec = kept
    (tmp_path / "R" / "cells").mkdir(parents=True)
    (tmp_path / "R" / "expected_cells.json").write_text(json.dumps([{"cell_id": rec["cell_id"],
                                                                       "config": rec["config"]}]))
    for p in folder.iterdir():
        (tmp_path / "R" / "cells" / p.name).write_bytes(p.read_bytes())
    return tmp_path / "R"


def test_verify_eval_says_identical_then_flags_a_changed_number_and_a_tampered_file(kept, prepared_digits, tmp_path):
    results = results_folder(kept, tmp_path)
    proc = run_cli("verify", "--eval", "--results", results, "--prepared-dir", prepared_digits)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" identical: ") == 2 and "2 identical" in proc.stderr, proc.stdout

    rec_path = results / "cells" / f"{kept[1]['cell_id']}.json"
    rec = json.loads(rec_path.read_text())
    rec["metrics"]["test_acc"] = rec["metrics"]["test_acc"] - 1 / 359  # one test image more wrong than it was
    rec_path.write_text(json.dumps(rec))
    model = results / "cells" / rec["models"]["best"]["file"]
    data = bytearray(model.read_bytes())
    data[-3] ^= 0x01  # one bit of the last weight
    model.write_bytes(bytes(data))
    proc = run_cli("verify", "--eval", "--results", results, "--prepared-dir", prepared_digits)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(" differs: final (epoch 2): test_acc" in line for line in lines), proc.stdout
    assert any(" differs: " in line and "SHA-256" in line for line in lines), proc.stdout


def test_load_model_in_three_lines_and_the_package_import_stays_light(kept):
    folder, rec = kept
    code = ("import sys; import resnet_bench; assert 'torch' not in sys.modules, 'torch imported'; "
            "from resnet_bench import load_model; m = load_model(sys.argv[1]); import torch; "
            "print(m(torch.zeros(2, 1, 8, 8)).shape, m.model_file.cell.cell_id, m.training)")
    proc = subprocess.run([sys.executable, "-c", code, str(folder / rec["models"]["final"]["file"])],
                          capture_output=True, text=True, timeout=120, env={**venv_env(), "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["torch.Size([2,", "10])", rec["cell_id"], "False"]


def test_the_disk_estimate_counts_the_tensor_bytes_exactly_and_bounds_the_header(kept):
    import struct

    from resnet_bench import config as cfg
    from resnet_bench.models.files import read_model_file
    from resnet_bench.sweep.model_disk import HEADER_BYTES_PER_TENSOR, METADATA_BYTES, model_disk_bytes

    folder, rec = kept
    cell = cfg.Cell.model_validate(rec["config"])
    meta = {"digits": {"num_classes": 10, "channels": 1}}
    est = model_disk_bytes([cell], metas=meta, keep_models="best")
    files = [folder / r["file"] for r in rec["models"].values()]
    actual = sum(p.stat().st_size for p in files)
    data = sum(p.stat().st_size - 8 - struct.unpack("<Q", p.read_bytes()[:8])[0] for p in files)
    n_tensors = len(read_model_file(files[0]).tensors)
    assert est["files"] == 2 and actual <= est["bytes"], (est, actual)
    assert est["bytes"] - 2 * (8 + METADATA_BYTES + HEADER_BYTES_PER_TENSOR * n_tensors) == data
    assert model_disk_bytes([cell], metas=meta, keep_models="none") == {"files": 0, "bytes": 0}


def test_the_planner_retrains_an_ok_cell_whose_model_file_is_gone(kept, tmp_path):
    from resnet_bench import config as cfg
    from resnet_bench.sweep.results_dir import plan

    results = results_folder(kept, tmp_path)
    cell = cfg.Cell.model_validate(kept[1]["config"])
    assert plan([cell], results / "cells", "best") == ([cell], [])
    (results / "cells" / kept[1]["models"]["best"]["file"]).unlink()
    assert plan([cell], results / "cells", "final") == ([cell], [])
    assert plan([cell], results / "cells", "best") == ([], [cell])
    assert plan([cell], results / "cells", "none") == ([cell], [])


# ---- export ----------------------------------------------------------------------------------------


def imagenet_model_file(tmp_path, prepared, model: str) -> Path:
    """A model file of a modern ImageNet-stem network at width 64 on 3 channels, random weights and
    BatchNorm statistics moved off their initial values (so a mis-mapped buffer changes the logits)."""
    from resnet_bench import train, train_cli
    from resnet_bench.models.files import model_bytes

    cell = train_cli.cell_from_args(train_cli.parse_args(["--model", model, "--stem", "imagenet", "--width", "64",
                                                  "--epochs", "1", "--prepared-dir", str(prepared)]))
    torch.manual_seed(0)
    net = train.build_cell_model(cell, 10, 3)
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(4, 3, 32, 32))
    dataset = {"name": "rgb", "num_classes": 10, "channels": 3, "height": 32, "width": 32}
    path = tmp_path / f"{model}.safetensors"
    path.write_bytes(model_bytes(net.state_dict(), cell_config=cell.to_dict(), kind="final", epoch=1, metrics={},
                                 dataset=dataset))
    return path


@pytest.mark.parametrize("model,library", [("resnet18_v1", "torchvision"), ("resnet18_v2", "timm")])
def test_export_loads_strictly_into_the_other_library_with_equal_logits(model, library, tmp_path, prepared_digits,
                                                                      capsys):
    from safetensors.torch import load_file

    from resnet_bench import load_model

    src = imagenet_model_file(tmp_path, prepared_digits, model)
    out = tmp_path / "exported.safetensors"
    assert cli.main(["export", "--weights", str(src), "--to", library, "--out", str(out)]) == 0
    assert "strict=True" in capsys.readouterr().out
    if library == "torchvision":
        import torchvision

        theirs = torchvision.models.resnet18(num_classes=10)
    else:
        timm = pytest.importorskip("timm")
        theirs = timm.create_model("resnetv2_18", pretrained=False, num_classes=10)
    theirs.load_state_dict(load_file(out), strict=True)
    ours = load_model(src)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(x), theirs.eval()(x)
    # the same weights through the same operations, summed in possibly another order: float32 rounding
    assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())
    # an export is replaced by the next export, never anything else (output policy)
    assert cli.main(["export", "--weights", str(src), "--to", library, "--out", str(out)]) == 0


def test_export_refuses_a_network_the_other_library_does_not_have(kept, tmp_path, capsys):
    folder, rec = kept
    rc = cli.main(["export", "--weights", str(folder / rec["models"]["final"]["file"]), "--to", "torchvision",
                   "--out", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "stem 'cifar'" in err[0] and "width 4" in err[0], err
    assert "1 input channel" in err[0] and not (tmp_path / "x.safetensors").exists()
    rc = cli.main(["export", "--weights", str(folder / rec["models"]["final"]["file"]), "--to", "timm",
                   "--out", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "v1 network: it exports to torchvision (resnet18), not timm" in err, err


def test_a_model_that_does_not_fit_the_results_disk_leaves_nothing_half_written(kept, tmp_path):
    """A real full disk (a 64 KiB tmpfs as cells/): the copy from storage fails as ENOSPC, which the
    driver names in one line (callbacks._write), and cells/ holds no partial model file."""
    import os

    from resnet_bench.outputs import disk_full_message, is_disk_full
    from resnet_bench.sweep.storage import fetch_model, models_uri

    folder, rec = kept
    ref = rec["models"]["final"]
    storage = tmp_path / "storage"
    Path(models_uri(str(storage), rec["cell_id"])).mkdir(parents=True)
    (Path(models_uri(str(storage), rec["cell_id"])) / ref["file"]).write_bytes((folder / ref["file"]).read_bytes())
    cells = tmp_path / "R" / "cells"
    cells.mkdir(parents=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(cells)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with pytest.raises(OSError) as err:
            fetch_model(str(storage), rec["cell_id"], ref["file"], nbytes=ref["bytes"], sha256=ref["sha256"],
                        target=cells / ref["file"])
        assert is_disk_full(err.value)
        assert "no space left on" in disk_full_message(cells, "the cell's model file")
        assert list(cells.iterdir()) == []
        # a copy that does not match what the trial reported is refused the same way: nothing written
        with pytest.raises(ValueError, match="the trial wrote"):
            fetch_model(str(storage), rec["cell_id"], ref["file"], nbytes=ref["bytes"], sha256="0" * 64,
                        target=tmp_path / "R" / ref["file"])
        assert not (tmp_path / "R" / ref["file"]).exists()
    finally:
        subprocess.run(["umount", str(cells)], capture_output=True)
