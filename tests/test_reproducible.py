"""Same numbers on another machine: numeric pin, data in the cell id, committed results current."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import venv_env
from resnet_bench import config as cfg
from resnet_bench.data import prepare as prep
from resnet_bench.env import code_fingerprint
from resnet_bench.outputs import MANIFEST

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results" / "smoke"


def test_changing_split_seed_changes_every_cell_id(tmp_path):
    for seed in (0, 1):
        assert prep.main(["--name", "digits", "--out", str(tmp_path / f"s{seed}" / "digits"),
                          "--split-seed", str(seed)]) == 0
    layer = cfg.Layer("t", {"grid": {"versions": ["v1", "v2"], "depths": [18], "datasets": ["digits"],
                                     "seeds": [0, 1]}})
    exp = cfg.resolve_layers("t", [layer], cfg.Params(), check_datasets=False).experiment
    ids = [{c.cell_id for c in cfg.expand_grid(exp, data={"digits": cfg.data_identity(tmp_path / f"s{s}" / "digits")})}
           for s in (0, 1)]
    assert len(ids[0]) == len(ids[1]) == 4 and not ids[0] & ids[1]


@pytest.mark.parametrize("experiment", sorted(p.parent.name for p in (REPO / "results").glob("*/expected_cells.json")))
def test_committed_results_are_made_by_this_code(experiment):
    results = REPO / "results" / experiment
    expected = json.loads((results / "expected_cells.json").read_text())
    stale = {e["config"]["code_fingerprint"] for e in expected} - {code_fingerprint()}
    how = ("`make repro`" if experiment == "smoke" else
           f"`dvc exp run -S sweep.experiment={experiment}` (docs/{experiment.replace('-', '_')}.md)")
    assert not stale, (f"results/{experiment} was made by other training code (fingerprint {sorted(stale)} != "
                       f"{code_fingerprint()}): rerun {how} and commit results/ and reports/")
    cells = pd.read_parquet(results / "cells.parquet")
    assert set(cells["cell_id"]) == {e["cell_id"] for e in expected} and (cells["status"] == "ok").all()
    assert (REPO / "reports" / experiment / "report.md").is_file()


def test_smoke_results_are_committed():
    assert (COMMITTED / "expected_cells.json").is_file()


@pytest.mark.slow
def test_verify_reproduces_a_committed_smoke_cell_and_flags_a_tampered_one(prepared_digits, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "resnet_bench", "verify", "--results", str(COMMITTED),
                           "--prepared-dir", str(prepared_digits), "--sample", "1"],
                          env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and " identical: " in proc.stdout, proc.stdout + proc.stderr
    assert "same numeric environment" in proc.stdout, proc.stdout

    tampered = tmp_path / "smoke"
    shutil.copytree(COMMITTED, tampered, ignore=shutil.ignore_patterns("cells", "checkpoints"))
    cells = pd.read_parquet(tampered / "cells.parquet")
    cells["test_acc"] = cells["test_acc"] - 0.2  # as if another machine had printed 20 pp less
    cells["aten_cpu_capability"] = "AVX512"
    cells.to_parquet(tampered / "cells.parquet", index=False)
    proc = subprocess.run([sys.executable, "-m", "resnet_bench", "verify", "--results", str(tampered),
                           "--prepared-dir", str(prepared_digits), "--sample", "1"],
                          env=venv_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and " outside: " in proc.stdout, proc.stdout + proc.stderr
    assert "aten_cpu_capability AVX512 -> AVX2" in proc.stdout


@pytest.mark.parametrize("module, old, new, changes", [
    ("train.py", "def lr_at(", "# a comment\ndef lr_at(", False),
    ("train_cli.py", '"Train one grid cell by hand."', '"Train one cell."', False),  # CLI text
    ("train.py", "passed = sum(frac >= m for m in recipe.milestones)",
     "passed = sum(frac > m for m in recipe.milestones)", True),
    ("models/cli.py", "def models_main(", "def _unused():\n    return 1\n\n\ndef models_main(", False),
    ("models/blocks.py", "class BasicBlock(", "EPS = 1\n\n\nclass BasicBlock(", False),  # unreferenced constant
    ("data/artifact.py", "def check_out_dir(", "def _prepare_only():\n    return 2\n\n\ndef check_out_dir(", False),
    ("data/loader.py", "class DeviceLoader", "LOADER_NOTE = 1\n\n\nclass DeviceLoader", False),
    ("env.py", '"MKL_CBWR": "COMPATIBLE"', '"MKL_CBWR": "AUTO"', True),
    ("env.py", '"onednn": False', '"onednn": True', True),
    ("env.py", "def cpu_caches(", "def _unused_probe():\n    return 3\n\n\ndef cpu_caches(", False),  # recording only
    ("data/augment.py", "support = torch.where(scale >= 1, scale,", "support = torch.where(scale > 1, scale,", True),
    ("data/augment.py", "RESIZE_TRIES = 10", "RESIZE_TRIES = 9", True),
    ("data/images.py", "CHUNK_IMAGES = 256", "CHUNK_IMAGES = 128", False),  # prepare code: in the content hash
])
def test_code_fingerprint_follows_training_code_only(tmp_path, module, old, new, changes):
    pkg = tmp_path / "resnet_bench"
    shutil.copytree(REPO / "resnet_bench", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_fingerprint(str(pkg))
    src = (pkg / module).read_text()
    assert old in src, f"{module} no longer contains {old!r}: update this test"
    (pkg / module).write_text(src.replace(old, new, 1))
    code_fingerprint.cache_clear()
    assert (code_fingerprint(str(pkg)) != before) == changes


def test_code_fingerprint_sees_loader_and_model_edits(tmp_path):
    pkg = tmp_path / "resnet_bench"
    shutil.copytree(REPO / "resnet_bench", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_fingerprint(str(pkg))
    for module in ("data/loader.py", "models/blocks.py", "models/trunk.py"):
        src = (pkg / module).read_text()
        cls = {"data/loader.py": "class DeviceLoader", "models/blocks.py": "class BasicBlock(",
               "models/trunk.py": "class ResNet("}[module]
        body = src.index(":\n", src.index(cls)) + 2
        # A statement inside the class body: code that runs, not a comment.
        (pkg / module).write_text(src[:body] + "    _fingerprint_probe = 1\n" + src[body:])
        code_fingerprint.cache_clear()
        after = code_fingerprint(str(pkg))
        assert after != before, module
        before = after


def test_fingerprint_roots_cover_what_training_modules_import_from_each_other():
    """A models/ or data/ module's fingerprinted code that uses a name of another such module: that
    name is fingerprinted there too (FINGERPRINT_ROOTS lists the names that cross modules)."""
    import ast

    from resnet_bench.env import FINGERPRINT_ROOTS, fingerprinted_source

    pkg = REPO / "resnet_bench"
    mods = {m for m in FINGERPRINT_ROOTS if m.startswith(("models/", "data/"))}
    chosen = {m: "\n".join(fingerprinted_source((pkg / m).read_text(), FINGERPRINT_ROOTS[m])) for m in mods}
    gaps = []
    for m in mods:
        for node in ast.walk(ast.parse((pkg / m).read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("resnet_bench.")):
                continue
            src = node.module.removeprefix("resnet_bench.").replace(".", "/") + ".py"
            for alias in node.names:
                used = f"id='{alias.asname or alias.name}'" in chosen[m]
                if src in mods and used and f"name='{alias.name}'" not in chosen[src] \
                        and f"id='{alias.name}'" not in chosen[src]:
                    gaps.append(f"{m} uses {alias.name} from {src}, which does not fingerprint it")
    assert not gaps, "\n".join(gaps)


def test_verify_refuses_results_of_another_config_schema_in_one_line(tmp_path, capsys):
    """Results written by a version whose config had other fields: one line, before any training."""
    from resnet_bench import verify

    results = tmp_path / "smoke"
    results.mkdir()
    shutil.copy(COMMITTED / "cells.parquet", results / "cells.parquet")
    expected = json.loads((COMMITTED / "expected_cells.json").read_text())
    expected[0]["config"]["runtime"]["a_later_field"] = 1
    (results / "expected_cells.json").write_text(json.dumps(expected))
    assert verify.main(["--results", str(results), "--sample", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected_cells.json" in err[0] and "make repro" in err[0], err


@pytest.mark.parametrize("experiment", sorted(p.parent.name for p in (REPO / "reports").glob("*/report.md")))
def test_committed_reports_are_what_this_code_writes_from_the_committed_results(experiment, tmp_path):
    """reports/<experiment> byte for byte (text, tables, figures) as the report stage writes it
    now from results/<experiment> with params.yaml's report settings: a report-code change that is not
    followed by regenerating the committed reports fails here."""
    out = tmp_path / experiment
    proc = subprocess.run([sys.executable, "-m", "resnet_bench.report", "--params", str(REPO / "params.yaml"),
                           "--results", str(REPO / "results" / experiment), "--out", str(out)],
                          cwd=tmp_path, env=venv_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    committed = REPO / "reports" / experiment
    tracked = subprocess.run(["git", "ls-files", "-z", "."], cwd=committed, capture_output=True, text=True,
                             check=True).stdout.split("\0")
    files = sorted(f for f in tracked if f)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                     if p.is_file() and p.name != MANIFEST)  # the output policy's own list, git-ignored
    assert files == written, f"rerun the report stage for {experiment} and commit reports/{experiment}"
    stale = [f for f in files if (committed / f).read_bytes() != (out / f).read_bytes()]
    assert not stale, (f"reports/{experiment}: {stale} differ from what this code writes; rerun `python -m "
                       f"resnet_bench.report --params params.yaml --results results/{experiment} --out "
                       f"reports/{experiment}` and commit it")
