"""The world the hostile-input table spoils one input of at a time (tests/test_hostile_inputs.py): good
results, a tiny sweep's configuration, prepared digits, a $HOME holding a paper, a read-only folder; and
the helpers that spoil one file of a row's copy."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from conftest import TINY_EXPERIMENT, make_project
from test_collect import make_config, make_record

from resnet_bench import collect
from resnet_bench import config as cfg
from resnet_bench.sweep.records import experiment_summary

# ---- the world: good inputs each row spoils one of --------------------------------------------------


@dataclass
class World:
    root: Path
    home: Path  # $HOME for every row: a paper's folder and dotfiles that must never change
    good: Path  # a collected results folder: cells/, expected_cells.json, experiment.json, tables
    project: Path  # params.yaml + experiments/ of a tiny sweep
    prepared: Path  # data/prepared with digits
    planned: list[str]  # cell ids the tiny sweep plans (its --dry-run)
    readonly: Path | None  # a read-only folder (a read-only mount), None where none can be made
    canary: Path

    def guard(self) -> str:
        """One checksum over every file a row must not touch."""
        h = hashlib.sha256()
        for top in (self.home, self.good, self.project, self.prepared):
            for p in sorted(top.rglob("*")):
                if p.is_file() and not p.is_symlink():
                    h.update(str(p.relative_to(self.root.parent)).encode() + b"\0" + p.read_bytes())
        return h.hexdigest()


def _good_records() -> tuple[list[dict], list[dict]]:
    recs = [make_record(make_config("smoke", "digits", v, {"v1": "original", "v2": "full_preact"}[v], 18, s,
                                    recipe="quick", device="cpu"), acc=acc)
            for (v, s), acc in {("v1", 0): 0.9, ("v1", 1): 0.91, ("v2", 0): 0.93, ("v2", 1): 0.94}.items()]
    return recs, [{"cell_id": r["cell_id"], "config": r["config"]} for r in recs]


def _experiment() -> dict:
    exp = cfg.Experiment(name="smoke", grid=cfg.Grid(versions=["v1", "v2"], depths=[18], seeds=[0, 1]),
                         arch=cfg.Arch(), recipe=cfg.resolve_recipe({"name": "quick"}),
                         runtime=cfg.Runtime(device="cpu"), bench=cfg.Bench(), resources=cfg.Resources())
    return experiment_summary(exp)


def _mount_readonly(path: Path) -> bool:
    path.mkdir()
    (path / "inside").mkdir()
    if os.geteuid() != 0:  # permission bits hold for anyone but root
        path.chmod(0o555)
        return True
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


def build_world(root: Path, prepared_digits: Path):
    """Yields the World, then unmounts its read-only folder."""
    home = root / "home"
    for rel, text in {"paper/figures/fig1.pdf": "%PDF-1.4 the paper's figure", "paper/tables/t.tex": "\\begin{x}",
                      "paper/main.tex": "\\documentclass{article}", "notes.txt": "mine", ".bashrc": "# mine",
                      "bench.csv": "model,mine\n", "record.json": '{"mine": true}'}.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    good = root / "good"
    recs, expected = _good_records()
    (good / "cells").mkdir(parents=True)
    for r in recs:
        (good / "cells" / f"{r['cell_id']}.json").write_text(json.dumps(r))
    (good / "expected_cells.json").write_text(json.dumps(expected))
    (good / "experiment.json").write_text(json.dumps(_experiment()))
    assert collect.main(["--results", str(good)]) == 0
    project = make_project(root / "project", TINY_EXPERIMENT)
    shutil.rmtree(project / "resnet_bench")  # only its configuration is used
    from resnet_bench.sweep import driver

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert driver.main(["--params", str(project / "params.yaml"), "--experiments-dir",
                            str(project / "experiments"), "--prepared-dir", str(prepared_digits),
                            "--results", str(root / "plan"), "--dry-run"]) == 0
    planned = [line.split()[0] for line in out.getvalue().splitlines()]
    ro = root / "ro"
    readonly = ro if _mount_readonly(ro) else None
    yield World(root, home, good, project, prepared_digits, planned, readonly, root / "canary")
    if readonly is not None and os.geteuid() == 0:
        subprocess.run(["umount", str(ro)], capture_output=True)


# ---- a row and the helpers that spoil one input of its copy ----------------------------------------


@dataclass
class Row:
    id: str
    argv: list[str]  # formatted with the row's paths ({R} its results copy, {T} its folder, ...)
    needles: list[str]  # each must appear in the one error line
    setup: Callable[[World, Path], None] | None = None
    subprocess: bool = False
    readonly: bool = False  # needs the read-only folder
    env: dict = field(default_factory=dict)


def first_record(r: Path) -> Path:
    return sorted((r / "cells").glob("*.json"))[0]


def edit_record(mutate) -> Callable[[World, Path], None]:
    def setup(w: World, t: Path):
        path = first_record(t / "R")
        rec = json.loads(path.read_text())
        mutate(rec)
        path.write_text(json.dumps(rec))
    return setup


def raw_record(data: bytes | Callable[[World, Path], None]) -> Callable[[World, Path], None]:
    def setup(w: World, t: Path):
        path = first_record(t / "R")
        if callable(data):
            data(w, path)
        else:
            path.unlink()
            path.write_bytes(data)
    return setup


def edit_json(rel: str, mutate) -> Callable[[World, Path], None]:
    def setup(w: World, t: Path):
        path = t / "R" / rel
        doc = json.loads(path.read_text())
        doc = mutate(doc) or doc
        path.write_text(json.dumps(doc))
    return setup


def raw_file(rel: str, data) -> Callable[[World, Path], None]:
    def setup(w: World, t: Path):
        path = t / "R" / rel
        path.unlink(missing_ok=True)
        if callable(data):
            data(path)
        else:
            path.write_bytes(data)
    return setup


def edit_table(name: str, mutate) -> Callable[[World, Path], None]:
    def setup(w: World, t: Path):
        import pandas as pd

        path = t / "R" / name
        df = pd.read_parquet(path)
        df = mutate(df)
        df.to_parquet(path, index=False)
    return setup


def fifo(path: Path) -> None:
    os.mkfifo(path)


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def write_retuned(rec: dict, cells: Path) -> None:
    """The same model, dataset and seed under another recipe, under its own id (a stale result beside the
    current one)."""
    rec["config"]["recipe"]["lr"] = 0.01
    rec["config"].pop("cell_id")
    rec["config"]["cell_id"] = rec["cell_id"] = cfg.Cell.model_validate(rec["config"]).cell_id
    (cells / f"{rec['cell_id']}.json").write_text(json.dumps(rec))


def planned_config(w: World, index: int = 0) -> dict:
    """The config of the tiny sweep's planned cell `index` (as its expected_cells would list it)."""
    from resnet_bench.env import code_fingerprint

    params = cfg.load_params(w.project / "params.yaml")
    exp = cfg.resolve_experiment(params, w.project / "experiments").experiment
    data = {"digits": cfg.data_identity(w.prepared / "digits")}
    cells = {c.cell_id: c for c in cfg.expand_grid(exp, data=data, code_fingerprint=code_fingerprint())}
    return cells[w.planned[index]].to_dict()


def image_folder(t: Path, classes: dict[str, int]) -> Path:
    """An image folder (train/ and test/) with `n` 4x4 PNG images per class."""
    from PIL import Image

    for split in ("train", "test"):
        for cls, n in classes.items():
            (t / "imgs" / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((4, 4, 3), 10 * i, np.uint8)).save(t / "imgs" / split / cls / f"{i}.png")
    return t / "imgs"


def prepared_copy(mutate) -> Callable[[World, Path], None]:
    def setup(w: World, t: Path):
        shutil.copytree(w.prepared / "digits", t / "prep" / "digits")
        meta = json.loads((t / "prep" / "digits" / "meta.json").read_text())
        mutate(meta)
        (t / "prep" / "digits" / "meta.json").write_text(json.dumps(meta))
    return setup


def model_file(mutate=None, raw=None) -> Callable[[World, Path], None]:
    """`{T}/m.safetensors`: a model file of the tiny sweep's first planned cell (random weights), spoilt by
    `mutate(tensors, metadata)` (then saved again as safetensors) or replaced by `raw(world, good_bytes)`."""
    def setup(w: World, t: Path):
        import torch
        from safetensors.torch import load, save

        from resnet_bench.models.files import model_bytes
        from resnet_bench.train import build_cell_model

        config = planned_config(w)
        torch.manual_seed(0)
        state = build_cell_model(cfg.Cell.model_validate(config), 10, 1).state_dict()
        data = model_bytes(state, cell_config=config, kind="final", epoch=1, metrics={"test_acc": 0.5},
                           dataset={"name": "digits", "num_classes": 10, "channels": 1, "height": 8, "width": 8})
        if mutate is not None:
            n = int.from_bytes(data[:8], "little")
            metadata = json.loads(data[8:8 + n])["__metadata__"]
            tensors = load(data)
            mutate(tensors, metadata)
            data = save(tensors, metadata=metadata)
        if raw is not None:
            data = raw(w, data)
        (t / "m.safetensors").write_bytes(data)
    return setup


def edited_config(edit, *, rehash: bool):
    """A model file mutation: its metadata config edited (`rehash`: its cell id recomputed, so the file is
    self-consistent but describes another network)."""
    def mutate(tensors, metadata):
        config = json.loads(metadata["resnet_bench.config"])
        edit(config)
        if rehash:
            config.pop("cell_id")
            config["cell_id"] = metadata["resnet_bench.cell_id"] = cfg.Cell.model_validate(config).cell_id
        metadata["resnet_bench.config"] = json.dumps(config)
    return mutate


class PicklePayload:
    """Unpickled, it would run a shell command (creates the canary)."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return os.system, (f"touch {self.canary}",)
