"""The deterministic CPU pin (resnet_bench.env.NUMERIC_PINS): the same bits on another vendor's CPU,
and its settings in effect, recorded and named when they differ."""

import json
import platform
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import strip_timing, venv_env
from resnet_bench import config as cfg
from resnet_bench.env import NUMERIC_ENV_VARS, NUMERIC_PINS, code_fingerprint

TESTS = Path(__file__).resolve().parent
QEMU = shutil.which("qemu-x86_64")
# An Intel CPU without AVX-512 whose caches differ from most hosts' (QEMU 7.2 TCG: GenuineIntel,
# AVX2 + FMA, 32 KiB L1d, 4 MiB L2): vendor, ISA and cache sizes all change at once.
EMULATED_CPU = "Haswell-v4"
NO_QEMU = "qemu-x86_64 is not installed (Debian/Ubuntu: apt-get install qemu-user; `make qemu-user` as root)"

# The train loop of a sweep trial: the cell's pin in this process, then train_cell.
CHILD = """
import json, sys
from resnet_bench import config as cfg, train
cell = cfg.Cell.model_validate(json.load(open(sys.argv[1])))
train.pin_numeric_environment(cell)
json.dump(train.train_cell(cell, sys.argv[2]), open(sys.argv[3], "w"))
"""


def clean_env() -> dict:
    """This interpreter's environment without any pin variable: the pin under test sets its own."""
    env = venv_env()
    for k in NUMERIC_ENV_VARS:
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def digits_mini(prepared_digits, tmp_path_factory) -> Path:
    """The first 256 / 64 / 64 train / val / test images of prepared digits, with their own content
    hash: an epoch under an emulated CPU (~75 images/s) then takes seconds."""
    from resnet_bench.data.artifact import ARRAY_KEYS, content_sha256

    src, out = prepared_digits / "digits", tmp_path_factory.mktemp("prepared") / "digits_mini"
    out.mkdir()
    rows = {"train": 256, "val": 64, "test": 64}
    for key in ARRAY_KEYS:
        np.save(out / f"{key}.npy", np.load(src / f"{key}.npy")[:rows[key.split("_")[0]]])
    meta = json.loads((src / "meta.json").read_text())
    meta.update(name="digits_mini", counts=rows)
    meta["content_sha256"] = content_sha256(out, meta)
    (out / "meta.json").write_text(json.dumps(meta))
    return out.parent


def mini_cell(prepared: Path, dataset: str = "digits_mini") -> cfg.Cell:
    """ResNet-18 v1 at width 4, one epoch, deterministic CPU under the portable pin, 1 thread."""
    layer = cfg.Layer("test", {
        "grid": {"models": ["resnet18_v1"], "datasets": [dataset], "seeds": [0]},
        "arch": {"stem": "cifar", "width": 4},
        "recipe": {"name": "quick", "epochs": 1, "batch_size": 64},
        "runtime": {"device": "cpu", "threads": 1, "numeric_pin": "portable"},
    })
    exp = cfg.resolve_layers("t", [layer], cfg.Params(), check_datasets=False).experiment
    (cell,) = cfg.expand_grid(exp, data={dataset: cfg.data_identity(prepared / dataset)},
                              code_fingerprint=code_fingerprint())
    return cell


def run_child(prefix: list[str], args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([*prefix, sys.executable, *args], env=clean_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def train_child(prefix: list[str], cell: cfg.Cell, prepared: Path, workdir: Path) -> dict:
    workdir.mkdir()
    (workdir / "cell.json").write_text(json.dumps(cell.to_dict()))
    run_child(prefix, ["-c", CHILD, str(workdir / "cell.json"), str(prepared), str(workdir / "record.json")])
    return json.loads((workdir / "record.json").read_text())


def cpu_seen(prefix: list[str]) -> dict:
    return json.loads(run_child(prefix, [str(TESTS / "cpuid_probe.py")]).stdout)


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None, reason=NO_QEMU)
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the emulated CPU must run this machine's x86-64 build")
def test_portable_pin_gives_the_same_bits_on_an_emulated_intel_cpu(digits_mini, tmp_path):
    """Committed results are re-checked on CI machines that may be Intel or AMD, with or without
    AVX-512: a cell trained here and under an emulated Intel AVX2 CPU must agree to the last bit."""
    emulator = [QEMU, "-cpu", EMULATED_CPU]
    host, emulated = cpu_seen([]), cpu_seen(emulator)
    if not (emulated["avx2"] and emulated["fma"]):
        pytest.skip(f"{QEMU} emulates no AVX2/FMA (QEMU's TCG has them from version 7.2): {emulated}")
    assert (emulated["vendor"], emulated["avx512f"]) == ("GenuineIntel", False), emulated
    if (host["vendor"], host["avx512f"], host["caches_kib"]) == \
            (emulated["vendor"], emulated["avx512f"], emulated["caches_kib"]):
        pytest.skip(f"this machine's CPU is what {EMULATED_CPU} emulates ({host}): nothing would differ")

    cell = mini_cell(digits_mini)
    with ThreadPoolExecutor(2) as pool:  # the native run fits in the emulated one's import time
        runs = pool.map(lambda prefix, name: train_child(prefix, cell, digits_mini, tmp_path / name),
                        [emulator, []], ["emulated", "native"])
        intel, native = list(runs)
    for rec in (native, intel):
        num = rec["provenance"]["numeric"]
        assert (num["numeric_pin"], num["mkl_cbwr_branch"], num["onednn_enabled"]) == \
            ("portable", "COMPATIBLE", False), num
    assert strip_timing(native) == strip_timing(intel), f"this machine: {host}; emulated: {emulated}"


@pytest.mark.parametrize("pin", sorted(NUMERIC_PINS))
def test_each_pin_is_in_effect_when_its_process_sets_it_before_computing(pin, tmp_path):
    """`resnet-bench bench --numeric-pin` sets the pin as `train`, `verify` and the trials do (in the
    process, before any computation) and records what was in effect."""
    out = tmp_path / "bench.csv"
    run_child([], ["-m", "resnet_bench", "bench", "--models", "resnet20_v1", "--width", "2", "--batch-size", "4",
                   "--image-size", "8", "--device", "cpu", "--threads", "1", "--warmup", "1", "--repeats", "1",
                   "--numeric-pin", pin, "--out", str(out)])
    import pandas as pd

    row = pd.read_csv(out).iloc[0]
    want = NUMERIC_PINS[pin]
    assert (row["numeric_pin"], row["mkl_cbwr_branch"], bool(row["onednn_enabled"])) == \
        (pin, want["env"]["MKL_CBWR"], want["onednn"])
    if "ATEN_CPU_CAPABILITY" in want["env"]:
        assert row["aten_cpu_capability"] == want["env"]["ATEN_CPU_CAPABILITY"].upper()


def test_pin_levels_are_the_schemas():
    assert tuple(NUMERIC_PINS) == cfg.Runtime.model_fields["numeric_pin"].annotation.__args__


def test_a_process_that_computed_before_pinning_records_no_pin(prepared_digits):
    """MKL fixes its branch at its first call: a process that computed before setting MKL_CBWR runs
    the branch it started with, and its record says so instead of claiming the pin."""
    cell = mini_cell(prepared_digits, dataset="digits")
    script = ("import json, sys, torch; from resnet_bench import config as cfg, train, env; "
              "torch.ones(4, 4) @ torch.ones(4, 4); "
              "pin = train.pin_numeric_environment(cfg.Cell.model_validate(json.loads(sys.argv[1]))); "
              "print(json.dumps({'pin': pin, **env.numeric_environment()}))")
    num = json.loads(run_child([], ["-c", script, json.dumps(cell.to_dict())]).stdout)
    assert num["pin"] == "portable" and num["env"]["MKL_CBWR"] == "COMPATIBLE"
    assert num["mkl_cbwr_branch"] != "COMPATIBLE" and num["numeric_pin"] is None and num["pinned"] is False


def test_verify_names_a_difference_in_the_effective_settings():
    from resnet_bench.verify import ENV_COLUMNS, env_differences

    recorded = {k: None for k in ENV_COLUMNS}
    recorded.update(numeric_pin="portable", mkl_cbwr_branch="COMPATIBLE", onednn_enabled=False)
    now = {**recorded, "numeric_pin": None, "mkl_cbwr_branch": "AUTO", "onednn_enabled": True}
    assert env_differences(recorded, now) == ["numeric_pin portable -> None", "mkl_cbwr_branch COMPATIBLE -> AUTO",
                                              "onednn_enabled False -> True"]
