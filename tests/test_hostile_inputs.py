"""Hostile inputs, as an attacker and a careless user give them: result files, tables, experiment files,
names, paths, CLI arguments, data sources and the environment, through every CLI subcommand and every
reader of result files (the sweep planner, collect, report, compare, verify).

Each row runs the real entry point (`resnet_bench.cli.main(argv)` in-process; a subprocess where the
process boundary matters: a FIFO that would block, the installed `python -m resnet_bench`) and must end
nonzero with exactly one stderr line, `error: ...`, naming the offending input (the flag, the key or the
file), within seconds (a pytest timeout per row), with no traceback. Nothing outside the row's own
folder may change (checksums of a guard folder, which is also $HOME and holds a paper's figures and
tables), and nothing may run (a canary file that any shell payload of the table would create never
appears). The rows of the `doors` classes (shell interpolation in dvc.yaml, sources that are not files,
signals, RAY_ADDRESS, prepare's own flags) are in their own file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, venv_env
from hostile_world import (PicklePayload, Row, World, image_folder, planned_config, prepared_copy, write_retuned,
                           build_world, deep, edit_json, edit_record, edit_table, edited_config, fifo, first_record,
                           model_file, raw_file, raw_record)
from test_collect import make_record

from resnet_bench import cli


@pytest.fixture(scope="module")
def world(tmp_path_factory, prepared_digits) -> World:
    yield from build_world(tmp_path_factory.mktemp("hostile"), prepared_digits)


SHELL = "x; touch {CANARY}; $(touch {CANARY}) `touch {CANARY}`"  # a payload for every name and path


COLLECT = ["collect", "--results", "{T}/R"]
REPORT = ["report", "--results", "{T}/R", "--out", "{T}/out", "--formats", "png"]
VERIFY = ["verify", "--results", "{T}/R", "--prepared-dir", "{D}"]
SWEEP = ["sweep", "--params", "{P}/params.yaml", "--experiments-dir", "{P}/experiments", "--prepared-dir", "{D}",
         "--results", "{T}/R", "--dry-run"]
REC = "{REC}"  # the spoilt record's path


def record_rows() -> list[Row]:
    """One spoilt cell record, read by collect."""
    m = lambda **kw: edit_record(lambda r: r["metrics"].update(kw))
    c = lambda **kw: edit_record(lambda r: r["config"].update(kw))
    rows = [
        ("test_acc 5.0", m(test_acc=5.0), "metrics.test_acc"),
        ("test_acc -0.5", m(test_acc=-0.5), "metrics.test_acc"),
        ("test_acc string", m(test_acc="0.9"), "metrics.test_acc"),
        ("test_acc NaN", m(test_acc=float("nan")), "metrics.test_acc"),
        ("test_acc inf", m(test_acc=float("inf")), "metrics.test_acc"),
        ("test_acc bool", m(test_acc=True), "metrics.test_acc"),
        ("test_acc null in ok", m(test_acc=None), "metrics.test_acc"),
        ("test_loss negative", m(test_loss=-1.0), "metrics.test_loss"),
        ("params float", m(params=1.5e6), "metrics.params"),
        ("params bool", m(params=True), "metrics.params"),
        ("bench throughput zero", m(bench_train_img_per_s=0.0), "metrics.bench_train_img_per_s"),
        ("peak memory negative", m(peak_mem_bytes=-5), "metrics.peak_mem_bytes"),
        ("best_val_epoch after the end", m(best_val_epoch=99), "best_val_epoch"),
        ("epochs_completed forged", m(epochs_completed=5), "epochs_completed"),
        ("unknown metric", m(bonus=1.0), "metrics.bonus"),
        ("depth float", c(depth=18.0), "config.depth"),
        ("seed bool", c(seed=True), "config.seed"),
        ("nesterov string", edit_record(lambda r: r["config"]["recipe"].update(nesterov="false")),
         "config.recipe.nesterov"),
        ("lr out of schema range", edit_record(lambda r: r["config"]["recipe"].update(lr=1000.0)), "config.recipe.lr"),
        ("config edited, id kept", edit_record(lambda r: r["config"]["recipe"].update(lr=0.2)), "cell_id"),
        ("experiment name with markdown and html", c(experiment="x\n# <img src=http://e.invalid/x.png>"),
         "config.experiment"),
        ("dataset 300 characters", c(dataset="d" * 300), "config.dataset"),
        ("dataset mathtext", c(dataset="$\\frac{a}{$"), "config.dataset"),
        ("dataset shell payload", c(dataset=SHELL), "config.dataset"),
        ("dataset dot-dot", c(dataset=".."), "config.dataset"),
        ("model of another depth", c(model="resnet50_v1"), "model"),
        ("unit of the other version", edit_record(lambda r: r["config"].update(
            unit="full_preact" if r["config"]["version"] == "v1" else "original")), "unit"),
        ("status unknown", edit_record(lambda r: r.update(status="done")), "status"),
        ("status missing", edit_record(lambda r: r.pop("status")), "status"),
        ("ok with an error", edit_record(lambda r: r.update(error="boom")), "error"),
        ("failed without error", edit_record(lambda r: r.update(status="failed", error=None)), "error"),
        ("unknown top-level key", edit_record(lambda r: r.update(cheat=1)), "cheat"),
        ("retries negative", edit_record(lambda r: r.update(retries=-1)), "retries"),
        ("started_at not a time", edit_record(lambda r: r.update(started_at="yesterday")), "started_at"),
        ("error over 200k characters", edit_record(lambda r: r.update(status="failed", error="e" * 200_001)), "error"),
        ("epochs repeat", edit_record(lambda r: r["epochs"].append(dict(r["epochs"][-1]))), "epochs"),
        ("epoch val_acc 1.5", edit_record(lambda r: r["epochs"][0].update(val_acc=1.5)), "epochs.0.val_acc"),
        ("epoch train_loss negative", edit_record(lambda r: r["epochs"][0].update(train_loss=-1.0)),
         "epochs.0.train_loss"),
        ("epochs not a list", edit_record(lambda r: r.update(epochs={"1": {}})), "epochs"),
        ("attempts not a list", edit_record(lambda r: r.update(attempts="many")), "attempts"),
        ("node a string", edit_record(lambda r: r.update(node="gpu-1")), "node"),
        ("git commit not a sha", edit_record(lambda r: r["provenance"]["git"].update(commit="HEAD; rm")),
         "provenance.git.commit"),
        ("torch version a number", edit_record(lambda r: r["env"]["versions"].update(torch=2.14)),
         "env.versions.torch"),
        ("bench block partial", edit_record(lambda r: r["bench"].pop("train_img_per_s")), "bench.train_img_per_s"),
        ("dataset_meta of other data", edit_record(lambda r: r["dataset_meta"].update(content_sha256="a" * 64)),
         "dataset_meta.content_sha256"),
        ("data hash not hex", edit_record(lambda r: r["config"]["data"].update(content_sha256="xyz")),
         "config.data.content_sha256"),
        ("top level a list", raw_record(b"[1, 2]"), "(top level)"),
        ("top level a string", raw_record(b'"ok"'), "(top level)"),
        ("top level null", raw_record(b"null"), "(top level)"),
        ("nested 200k deep", raw_record(deep(200_000)), "nested deeper"),
        ("invalid UTF-8", raw_record(b'{"cell_id": "\xff\xfe"}'), "not UTF-8"),
        ("truncated JSON", raw_record(b'{"cell_id": '), "not valid JSON"),
        ("empty file", raw_record(b""), "not valid JSON"),
        ("duplicate key", raw_record(b'{"status": "ok", "status": "failed"}'), "duplicate key 'status'"),
        ("a folder named like a record", raw_record(lambda w, p: (p.unlink(), p.mkdir())), "is a folder"),
        ("symlink to /dev/zero", raw_record(lambda w, p: (p.unlink(), p.symlink_to("/dev/zero"))),
         "is a character device"),
        ("huge file", raw_record(lambda w, p: p.write_bytes(b" " * (64 * 2**20 + 1))), "larger than 64 MiB"),
        ("copied under another id", raw_record(lambda w, p: p.write_bytes(sorted(p.parent.glob("*.json"))[1]
                                                                          .read_bytes())), "holds cell"),
        ("not a record name", raw_record(lambda w, p: p.rename(p.with_name("notes.json"))), "notes.json"),
    ]
    out = [Row(f"record: {i}", COLLECT, [REC if "record name" not in i else "notes.json", key], setup=s)
           for i, s, key in rows]
    out.append(Row("record: a FIFO (subprocess: must not block)", COLLECT, [REC, "is a FIFO"],
                   setup=raw_record(lambda w, p: (p.unlink(), fifo(p))), subprocess=True))
    out.append(Row("record: two results of one cell, no grid", ["collect", "--cells", "{T}/R/cells", "--out",
                                                                "{T}/out"], ["are both", "resnet18_v", "/digits/seed", "with different configs"],
                   setup=raw_record(lambda w, p: write_retuned(json.loads(p.read_text()), p.parent))))
    return out


def reader_rows() -> list[Row]:
    """expected_cells.json, experiment.json and the tables, through collect, report, compare, verify and the planner."""
    bad_first = lambda f: edit_json("expected_cells.json", lambda d: [f(d[0]), *d[1:]])
    rows = [
        Row("expected: an object", COLLECT, ["expected_cells.json", "expected a JSON list"],
            setup=edit_json("expected_cells.json", lambda d: {"cells": d})),
        Row("expected: item without config", COLLECT, ["expected_cells.json", "item 0"],
            setup=bad_first(lambda e: {"cell_id": e["cell_id"]})),
        Row("expected: id not the config's hash", COLLECT, ["expected_cells.json", "item 0", "cell_id"],
            setup=bad_first(lambda e: {**e, "cell_id": "0" * 12})),
        Row("expected: the same cell twice", COLLECT, ["expected_cells.json", "same cell"],
            setup=edit_json("expected_cells.json", lambda d: [*d, d[0]])),
        Row("expected: depth a string", COLLECT, ["expected_cells.json", "config.depth"],
            setup=bad_first(lambda e: {**e, "config": {**e["config"], "depth": "18"}})),
        Row("expected: nested deep", COLLECT, ["expected_cells.json", "nested deeper"],
            setup=raw_file("expected_cells.json", deep(100))),
        Row("expected: invalid UTF-8", COLLECT, ["expected_cells.json", "not UTF-8"],
            setup=raw_file("expected_cells.json", b"[\xff]")),
        Row("expected: a FIFO", COLLECT, ["expected_cells.json", "is a FIFO"],
            setup=raw_file("expected_cells.json", fifo)),
        Row("verify: expected id forged", VERIFY, ["expected_cells.json", "cell_id"],
            setup=bad_first(lambda e: {**e, "cell_id": "0" * 12})),
        Row("verify: cells.parquet test_acc 5", VERIFY, ["cells.parquet", "test_acc"],
            setup=edit_table("cells.parquet", lambda df: df.assign(test_acc=5.0))),
        Row("verify: --sample 0", [*VERIFY, "--sample", "0"], ["--sample"]),
        Row("verify: --seed -1", [*VERIFY, "--seed", "-1"], ["--seed"]),
        Row("verify: results folder absent", ["verify", "--results", "{T}/none"], ["--results", "none"]),
    ]
    exp = lambda f: edit_json("experiment.json", f)
    paper = {"citation": "He et al. 2016", "statistic": "median", "metric": "test_error_pct", "dataset": "digits",
             "variant": "modern", "recipe": "quick",
             "results": [{"model": "resnet18_v1", "unit": "original", "dataset": "digits", "value": 5.0}]}
    rows += [
        Row("experiment: paper_comparable a string", REPORT, ["experiment.json", "paper_comparable"],
            setup=exp(lambda d: d.update(paper_comparable="yes"))),
        Row("experiment: paper value 500", REPORT, ["experiment.json", "paper.results.0.value"],
            setup=exp(lambda d: d.update(paper={**paper, "results": [{**paper["results"][0], "value": 500.0}]}))),
        Row("experiment: paper model html", REPORT, ["experiment.json", "paper.results.0.model"],
            setup=exp(lambda d: d.update(paper={**paper, "results": [{**paper["results"][0],
                                                                      "model": "<img src=x>"}]}))),
        Row("experiment: name with markdown", REPORT, ["experiment.json", "name"],
            setup=exp(lambda d: d.update(name="x\n# <img src=http://e.invalid/a.png>"))),
        Row("experiment: description 5000 characters", REPORT, ["experiment.json", "description"],
            setup=exp(lambda d: d.update(description="d" * 5000))),
        Row("experiment: unknown key", REPORT, ["experiment.json", "extra"], setup=exp(lambda d: d.update(extra=1))),
        Row("experiment: recipe lr negative", REPORT, ["experiment.json", "recipe.lr"],
            setup=exp(lambda d: d["recipe"].update(lr=-1.0))),
        Row("experiment: a list", REPORT, ["experiment.json", "expected a JSON object"],
            setup=raw_file("experiment.json", b"[]")),
        Row("experiment: not JSON", REPORT, ["experiment.json", "not valid JSON"],
            setup=raw_file("experiment.json", b"{not json")),
        Row("experiment: a FIFO", REPORT, ["experiment.json", "is a FIFO"],
            setup=raw_file("experiment.json", fifo)),
    ]
    t = lambda name, f: edit_table(name, f)
    rows += [
        Row("cells.parquet: test_acc 5", REPORT, ["cells.parquet", "test_acc"], setup=t(
            "cells.parquet", lambda df: df.assign(test_acc=5.0))),
        Row("cells.parquet: test_acc -0.5", REPORT, ["cells.parquet", "test_acc"], setup=t(
            "cells.parquet", lambda df: df.assign(test_acc=-0.5))),
        Row("cells.parquet: status unknown", REPORT, ["cells.parquet", "status"], setup=t(
            "cells.parquet", lambda df: df.assign(status="great"))),
        Row("cells.parquet: experiment with markdown", REPORT, ["cells.parquet", "experiment"], setup=t(
            "cells.parquet", lambda df: df.assign(experiment="x\n# <img src=http://e.invalid/a.png>"))),
        Row("cells.parquet: dataset mathtext", REPORT, ["cells.parquet", "dataset"], setup=t(
            "cells.parquet", lambda df: df.assign(dataset="$x^$"))),
        Row("cells.parquet: depth 18.5", REPORT, ["cells.parquet", "depth"], setup=t(
            "cells.parquet", lambda df: df.assign(depth=18.5))),
        Row("cells.parquet: a cell twice", REPORT, ["cells.parquet", "two rows"], setup=t(
            "cells.parquet", lambda df: __import__("pandas").concat([df, df.iloc[:1]]))),
        Row("cells.parquet: no test_acc column", REPORT, ["cells.parquet", "test_acc"], setup=t(
            "cells.parquet", lambda df: df.drop(columns=["test_acc"]))),
        Row("cells.parquet: throughput zero", REPORT, ["cells.parquet", "bench_train_img_per_s"], setup=t(
            "cells.parquet", lambda df: df.assign(bench_train_img_per_s=0.0))),
        Row("cells.parquet: not parquet", REPORT, ["cells.parquet", "not a readable parquet"],
            setup=raw_file("cells.parquet", b"PAR1 garbage")),
        Row("cells.parquet: a folder", REPORT, ["cells.parquet", "is a folder"],
            setup=raw_file("cells.parquet", lambda p: p.mkdir())),
        Row("epochs.parquet: val_acc 2", REPORT, ["epochs.parquet", "val_acc"], setup=t(
            "epochs.parquet", lambda df: df.assign(val_acc=2.0))),
        Row("epochs.parquet: train_acc negative", REPORT, ["epochs.parquet", "train_acc"], setup=t(
            "epochs.parquet", lambda df: df.assign(train_acc=-1.0))),
        Row("excluded.csv: columns missing", REPORT, ["excluded.csv", "lacks column"],
            setup=raw_file("excluded.csv", b"cell_id,why\nabc,old\n")),
        Row("excluded.csv: id a path", REPORT, ["excluded.csv", "cell_id"],
            setup=raw_file("excluded.csv", b"cell_id,experiment,model,version,unit,depth,dataset,seed,reason\n"
                                           b"../../x,smoke,resnet18_v1,v1,original,18,digits,0,old\n")),
        Row("excluded.csv: invalid UTF-8", REPORT, ["excluded.csv", "not UTF-8"],
            setup=raw_file("excluded.csv", b"cell_id\n\xff\n")),
        Row("compare: A with test_acc 5", ["compare", "{T}/R", "{GOOD}"], ["cells.parquet", "test_acc"], setup=t(
            "cells.parquet", lambda df: df.assign(test_acc=5.0))),
        Row("compare: B absent", ["compare", "{GOOD}", "{T}/none"], ["none/cells.parquet", "not found"]),
        Row("compare: --formats gif", ["compare", "{GOOD}", "{GOOD}", "--formats", "gif"], ["--formats", "gif"]),
        Row("report: results absent", ["report", "--results", "{T}/none", "--out", "{T}/out"],
            ["none/cells.parquet", "not found"]),
        Row("report: --dpi 0", [*REPORT[:5], "--dpi", "0"], ["--dpi"]),
        Row("report: --formats gif", [*REPORT[:5], "--formats", "gif"], ["--formats"]),
        Row("report: --params a FIFO", [*REPORT, "--params", "{T}/fifo"], ["fifo", "is a FIFO"],
            setup=lambda w, t: fifo(t / "fifo")),
    ]
    # The sweep planner: a spoilt record where the tiny sweep would look for a finished cell.
    planned = lambda data: (lambda w, t: (t / "R" / "cells" / f"{w.planned[0]}.json").write_bytes(
        data(w) if callable(data) else data))
    good_one = lambda w: json.dumps({**make_record(planned_config(w), acc=0.9)}).encode()
    rows += [
        Row("sweep planner: truncated record", SWEEP, ["cells/", "not valid JSON"], setup=planned(b"{")),
        Row("sweep planner: test_acc 5", SWEEP, ["cells/", "metrics.test_acc"], setup=planned(
            lambda w: good_one(w).replace(b'"test_acc": 0.9', b'"test_acc": 5.0'))),
        Row("sweep planner: a list", SWEEP, ["cells/", "(top level)"], setup=planned(b"[]")),
        Row("sweep planner: copied under another id", SWEEP, ["cells/", "holds cell"], setup=lambda w, t: (
            t / "R" / "cells" / f"{w.planned[0]}.json").write_bytes(
                json.dumps(make_record(planned_config(w, 1), acc=0.9)).encode())),
        Row("sweep: --results holds a paper", [*SWEEP[:-3], "--results", "{HOME}/paper", "--dry-run"],
            ["--results", "paper", "did not write"]),
        Row("sweep: a file where cells/ goes", SWEEP, ["--results", "cells"],
            setup=lambda w, t: (shutil.rmtree(t / "R" / "cells"), (t / "R" / "cells").write_text("x"))),
    ]
    return rows


def output_rows() -> list[Row]:
    """Outputs: folders and files that are not the program's, paths given carelessly."""
    ro = "{RO}"
    rows = [
        Row("report --out a paper's folder", [*REPORT[:3], "--out", "{HOME}/paper"], ["--out", "paper", "did not write"]),
        Row("report --out the home folder", [*REPORT[:3], "--out", "{HOME}"], ["--out", "home folder"]),
        Row("report --out an existing file", [*REPORT[:3], "--out", "{HOME}/notes.txt"], ["--out", "not a folder"]),
        Row("report --out empty", [*REPORT[:3], "--out", ""], ["--out", "empty path"]),
        Row("report --out a 300-byte name", [*REPORT[:3], "--out", "{T}/" + "n" * 300], ["--out", "bytes long"]),
        Row("report --out not UTF-8", [*REPORT[:3], "--out", "{T}/o" + b"\xff".decode("utf-8", "surrogateescape")],
            ["--out", "not UTF-8"]),
        Row("report --out not UTF-8 (the real CLI)", [*REPORT[:3], "--out", "{T}/o" + b"\xff".decode(
            "utf-8", "surrogateescape")], ["--out", "not UTF-8"], subprocess=True),
        Row("collect --cells a device", ["collect", "--cells", "/dev/null", "--out", "{T}/o"], ["--cells /dev/null",
                                                                                             "not a folder"]),
        Row("report --out ~nosuchuser", [*REPORT[:3], "--out=~nosuchuser-x/r"], ["--out", "~nosuchuser-x"]),
        Row("report --out under a file", [*REPORT[:3], "--out", "{HOME}/notes.txt/r"], ["--out", "in the way"]),
        Row("report --out with a shell payload under a file", [*REPORT[:3], "--out", "{HOME}/notes.txt/" + SHELL],
            ["--out", "in the way"]),
        Row("report --out a folder with a corrupt manifest", REPORT, ["--out", "manifest"],
            setup=lambda w, t: ((t / "out").mkdir(), (t / "out" / ".resnet-bench-outputs.json").write_text("[1]"))),
        Row("collect --out a paper's folder", [*COLLECT, "--out", "{HOME}/paper"], ["--out", "paper", "did not write"]),
        Row("collect --out the root folder", [*COLLECT, "--out", "/"], ["--out", "root or home"]),
        Row("collect --out a file", [*COLLECT, "--out", "{HOME}/notes.txt"], ["--out", "not a folder"]),
        Row("collect --results holds notes", COLLECT, ["--results", "notes.md", "did not write"],
            setup=lambda w, t: (t / "R" / "notes.md").write_text("mine")),
        Row("compare --out a paper's folder", ["compare", "{GOOD}", "{GOOD}", "--out", "{HOME}/paper"],
            ["--out", "paper", "did not write"]),
        Row("train --out a file of the user's", ["train", "--model", "resnet18_v1", "--prepared-dir", "{D}", "--out",
                                                 "{HOME}/notes.txt"], ["--out", "notes.txt", "not written by"]),
        Row("train --out a JSON file of the user's", ["train", "--model", "resnet18_v1", "--prepared-dir", "{D}",
                                                      "--out", "{HOME}/record.json"], ["--out", "record.json"]),
        Row("train --out a folder", ["train", "--model", "resnet18_v1", "--prepared-dir", "{D}", "--out", "{HOME}"],
            ["--out", "is a folder"]),
        Row("bench --out a CSV of the user's", ["bench", "--models", "resnet18_v1", "--out", "{HOME}/bench.csv"],
            ["--out", "bench.csv", "not written by"]),
        Row("bench --out a folder", ["bench", "--models", "resnet18_v1", "--out", "{HOME}/paper"], ["--out", "folder"]),
        Row("models --csv a file of the user's", ["models", "resnet20_v1", "--csv", "{HOME}/paper/main.tex"],
            ["--csv", "main.tex", "not written by"]),
        Row("models --csv a folder", ["models", "resnet20_v1", "--csv", "{HOME}"], ["--csv", "is a folder"]),
        Row("config schema --out a file of the user's", ["config", "schema", "--out", "{HOME}/.bashrc"],
            ["--out", ".bashrc", "not written by"]),
        Row("config schema --out the root folder", ["config", "schema", "--out", "/"], ["--out", "is a folder"]),
    ]
    rows += [Row(f"read-only: {name}", argv, ["cannot write", *extra], readonly=True) for name, argv, extra in (
        ("report --out", [*REPORT[:3], "--out", ro + "/r"], ["--out"]),
        ("collect --out", [*COLLECT, "--out", ro], ["--out"]),
        ("compare --out", ["compare", "{GOOD}", "{GOOD}", "--out", ro + "/c"], ["--out"]),
        ("sweep --results (cells/ read-only, before Ray)", [*SWEEP[:-3], "--results", ro, "--dry-run"],
         ["--results"]),
        ("train --out", ["train", "--model", "resnet18_v1", "--prepared-dir", "{D}", "--out", ro + "/r.json"],
         ["--out"]),
        ("bench --out", ["bench", "--models", "resnet18_v1", "--out", ro + "/b.csv"], ["--out"]),
        ("models --csv", ["models", "resnet20_v1", "--csv", ro + "/m.csv"], ["--csv"]),
        ("config schema --out", ["config", "schema", "--out", ro + "/s.json"], ["--out"]),
    )]
    return rows


def cli_rows() -> list[Row]:
    """Names and arguments of every subcommand; prepared data and image-folder sources."""
    train = ["train", "--model", "resnet18_v1", "--prepared-dir", "{D}"]
    show = ["config", "show", "--params", "{P}/params.yaml", "--experiments-dir", "{P}/experiments"]
    rows = [
        Row("summary --image-size -3", ["summary", "resnet18_v1", "--image-size", "-3"], ["--image-size"]),
        Row("summary --depth -1", ["summary", "resnet18_v1", "--depth", "-1"], ["--depth"]),
        Row("summary --in-channels 0", ["summary", "resnet18_v1", "--in-channels", "0"], ["--in-channels"]),
        Row("summary --num-classes 0", ["summary", "resnet18_v1", "--num-classes", "0"], ["--num-classes"]),
        Row("summary --image-size not a number", ["summary", "resnet18_v1", "--image-size", "1e9"], ["--image-size"]),
        Row("summary unknown model", ["summary", "resnet18_v9"], ["resnet18_v9"]),
        Row("models --image-size 0", ["models", "--image-size", "0"], ["--image-size"]),
        Row("models --num-classes -1", ["models", "--num-classes", "-1"], ["--num-classes"]),
        Row("models unknown model with a payload", ["models", SHELL], ["unknown model"]),
        Row("config show --experiment ../../etc/passwd", [*show, "--experiment", "../../etc/passwd"],
            ["--experiment", "../../etc/passwd"]),
        Row("config show --experiment payload", [*show, "--experiment", SHELL], ["--experiment"]),
        Row("config show --experiment empty", [*show, "--experiment", ""], ["--experiment"]),
        Row("config show --params a FIFO", ["config", "show", "--params", "{T}/p.yaml"], ["p.yaml", "is a FIFO"],
            setup=lambda w, t: fifo(t / "p.yaml")),
        Row("config show --params /dev/zero", ["config", "show", "--params", "/dev/zero"],
            ["/dev/zero", "character device"]),
        Row("config show --params a folder", ["config", "show", "--params", "{HOME}"], ["home", "is a folder"]),
        Row("config show --params invalid UTF-8", ["config", "show", "--params", "{T}/p.yaml"],
            ["p.yaml", "not UTF-8"], setup=lambda w, t: (t / "p.yaml").write_bytes(b"sweep: \xff\n")),
        Row("train --dataset ../../etc", [*train, "--dataset", "../../etc"], ["--dataset"]),
        Row("train --dataset payload", [*train, "--dataset", SHELL], ["--dataset"]),
        Row("train --seed -1", [*train, "--seed", "-1"], ["--seed"]),
        Row("train --epochs 0", [*train, "--epochs", "0"], ["--epochs"]),
        Row("train --lr nan", [*train, "--lr", "nan"], ["--lr"]),
        Row("train --lr inf", [*train, "--lr", "inf"], ["--lr"]),
        Row("train --batch-size 0", [*train, "--batch-size", "0"], ["--batch-size"]),
        Row("train --model payload", ["train", "--model", SHELL], ["--model"]),
        Row("train --unit unknown", [*train, "--unit", "bogus"], ["--unit"]),
        Row("train --threads 0", [*train, "--threads", "0"], ["--threads"]),
        Row("train --width 0", [*train, "--width", "0"], ["--width"]),
        Row("train --variant bogus", [*train, "--variant", "bogus"], ["--variant", "'modern'", "'paper'"]),
        Row("train --shortcut B", [*train, "--shortcut", "B"], ["--shortcut", "'zero_pad'", "'projection'"]),
        Row("train --bottleneck-stride 2x2", [*train, "--bottleneck-stride", "2x2"], ["--bottleneck-stride", "'1x1'"]),
        Row("train --warmup-iters -1", [*train, "--warmup-iters", "-1"], ["--warmup-iters"]),
        Row("train --warmup-iters without --warmup-lr", [*train, "--warmup-iters", "5"], ["--warmup-iters",
                                                                                          "warmup_lr"]),
        Row("train --milestones not numbers", [*train, "--milestones", "half"], ["--milestones"]),
        Row("train --milestones 1.5", [*train, "--schedule", "step", "--milestones", "1.5"], ["--milestones"]),
        Row("train --milestones decreasing", [*train, "--schedule", "step", "--milestones", "0.7,0.3"],
            ["milestones must increase"]),
        Row("train --milestones with cosine", [*train, "--milestones", "0.5"], ["only used by schedule 'step'"]),
        Row("train --gamma 0", [*train, "--gamma", "0"], ["--gamma"]),
        Row("train --momentum 1", [*train, "--momentum", "1"], ["--momentum"]),
        Row("train --weight-decay nan", [*train, "--weight-decay", "nan"], ["--weight-decay"]),
        Row("train --label-smoothing 1", [*train, "--label-smoothing", "1"], ["--label-smoothing"]),
        Row("train --crop-pad -4", [*train, "--crop-pad", "-4"], ["--crop-pad"]),
        Row("train --schedule bogus", [*train, "--schedule", "bogus"], ["--schedule", "'cosine'"]),
        Row("sweep --json without --dry-run", [*SWEEP[:-1], "--json"], ["--json", "--dry-run"]),
        Row("bench --batch-size not a number", ["bench", "--models", "resnet18_v1", "--batch-size", "x", "--out",
                                                "{T}/b.csv"], ["--batch-size"]),
        Row("train: prepared meta.json a FIFO", ["train", "--model", "resnet18_v1", "--prepared-dir", "{T}/prep"],
            ["meta.json", "is a FIFO"], setup=lambda w, t: ((t / "prep" / "digits").mkdir(parents=True),
                                                            fifo(t / "prep" / "digits" / "meta.json"))),
        Row("train: a single-class dataset", ["train", "--model", "resnet18_v1", "--prepared-dir", "{T}/prep"],
            ["meta.json", "1 class"], setup=prepared_copy(lambda m: m.update(num_classes=1))),
        Row("train: fewer training images than classes", ["train", "--model", "resnet18_v1", "--prepared-dir",
                                                          "{T}/prep"], ["meta.json", "training image"],
            setup=prepared_copy(lambda m: m["counts"].update(train=1))),
        Row("train: meta.json not JSON", ["train", "--model", "resnet18_v1", "--prepared-dir", "{T}/prep"],
            ["meta.json", "not valid JSON"], setup=lambda w, t: (
                shutil.copytree(w.prepared / "digits", t / "prep" / "digits"),
                (t / "prep" / "digits" / "meta.json").write_text("{"))),
        Row("bench --image-size 0", ["bench", "--models", "resnet18_v1", "--image-size", "0", "--out", "{T}/b.csv"], ["--image-size"]),
        Row("bench --batch-size 0", ["bench", "--models", "resnet18_v1", "--batch-size", "0", "--out", "{T}/b.csv"], ["--batch-size"]),
        Row("bench --models payload", ["bench", "--models", SHELL, "--out", "{T}/b.csv"], ["--models"]),
        Row("bench --threads 0", ["bench", "--models", "resnet18_v1", "--threads", "0", "--out", "{T}/b.csv"],
            ["--threads"]),
        Row("bench: a batch of one 1x1 image (BatchNorm cannot train on it)",
            ["bench", "--models", "resnet18_v1", "--batch-size", "1", "--image-size", "1", "--warmup", "0", "--repeats", "1",
             "--out", "{T}/b.csv"], ["--models resnet18_v1", "Expected more than 1 value per channel"]),
        Row("train --batch-size 1", [*train, "--batch-size", "1"], ["--batch-size"]),
        Row("bench --device cuda:99", ["bench", "--models", "resnet18_v1", "--device", "cuda:99", "--out",
                                       "{T}/b.csv"], ["--device"]),
        Row("prepare --name ../../x", ["prepare", "--name", "../../x", "--format", "digits", "--out", "{T}/p"],
            ["--name"]),
        Row("prepare --name ...", ["prepare", "--name", "...", "--format", "digits", "--out", "{T}/p"], ["--name"]),
        Row("prepare --name 300 characters", ["prepare", "--name", "n" * 300, "--format", "digits", "--out", "{T}/p"],
            ["--name"]),
        Row("prepare --name payload", ["prepare", "--name", SHELL, "--format", "digits", "--out", "{T}/p"],
            ["--name"]),
        Row("prepare --out empty", ["prepare", "--name", "digits", "--out", ""], ["--out", "empty path"]),
        Row("prepare: a class folder named ...", ["prepare", "--name", "imgs", "--format", "imagefolder",
                                                  "--source", "{T}/imgs", "--out", "{T}/p"], ["'...'", "hidden"],
            setup=lambda w, t: image_folder(t, {"cat": 3, "...": 3})),
        Row("prepare: one image per class", ["prepare", "--name", "imgs", "--format", "imagefolder", "--source",
                                             "{T}/imgs", "--out", "{T}/p"], ["class 'cat' has 1 training image", "at least 2"],
            setup=lambda w, t: image_folder(t, {"cat": 1, "dog": 1})),
        Row("unknown command", ["bogus"], ["unknown command 'bogus'"]),
        Row("init: a non-empty folder", ["init", "{T}/R"], ["{T}/R", "not empty"]),
        Row("init: a file", ["init", "{T}/R/expected_cells.json"], ["expected_cells.json", "not a folder"]),
        Row("init: under a file", ["init", "{T}/R/expected_cells.json/p"], ["expected_cells.json", "not a folder"]),
        Row("init: a payload name", ["init", "{T}/R/" + SHELL], ["does not exist"]),
        Row("exp-show outside a DVC project", ["exp-show"], ["not in a DVC project"]),
        Row("plots-offline: not npm tarballs", ["plots-offline", "{T}/a", "{T}/b", "{T}/c"], ["not an npm tarball"]),
        Row("plots-offline: a FIFO tarball (must not block)",
            ["plots-offline", "{T}/vega-5.20.2.tgz", "{T}/vega-lite-5.2.0.tgz", "{T}/vega-embed-6.18.2.tgz",
             "--out", "{T}/offline.html"], ["vega-5.20.2.tgz", "FIFO"],
            setup=lambda w, t: (fifo(t / "vega-5.20.2.tgz"), (t / "vega-lite-5.2.0.tgz").write_bytes(b""),
                                (t / "vega-embed-6.18.2.tgz").write_bytes(b"")), subprocess=True),
        Row("plots-offline: --out not ours", ["plots-offline", "{T}/vega-5.20.2.tgz", "{T}/vega-lite-5.2.0.tgz",
                                              "{T}/vega-embed-6.18.2.tgz", "--out", "{T}/R/expected_cells.json"],
            ["expected_cells.json", "not written by resnet-bench plots-offline"]),
        Row("the real CLI: collect of a spoilt record", ["collect", "--results", "{T}/R"], [REC, "metrics.test_acc"],
            setup=edit_record(lambda r: r["metrics"].update(test_acc=5.0)), subprocess=True),
    ]
    return rows


def model_rows() -> list[Row]:
    """Model files (resnet_bench.models.files) through evaluate and export: refused in one line, nothing run."""
    import pickle
    import struct

    import torch

    EVAL = ["evaluate", "--weights", "{T}/m.safetensors", "--prepared-dir", "{D}"]
    M = "{T}/m.safetensors"

    def tensor(name, value):
        return lambda tensors, meta: tensors.update({name: value(tensors[name])})

    def nan(t):
        t = t.clone()
        t.view(-1)[0] = float("nan")
        return t

    rows = [
        Row("model: a pickle renamed .safetensors (its payload would run)", EVAL, [M, "a pickle", "refused unread"],
            setup=model_file(raw=lambda w, d: pickle.dumps(PicklePayload(w.canary)))),
        Row("model: torch.save output renamed .safetensors", EVAL, [M, "zip archive (torch.save)"],
            setup=model_file(raw=lambda w, d: (lambda b: (torch.save({"w": torch.zeros(2)}, b), b.getvalue())[1])(
                __import__("io").BytesIO()))),
        Row("model: header length 2**40 (oversized header)", EVAL, [M, "header length 1099511627776", "exceeds the file"],
            setup=model_file(raw=lambda w, d: struct.pack("<Q", 2**40) + d[8:])),
        Row("model: a 32 MiB header in a 33 MiB file", EVAL, [M, "header length 33554432", "exceeds the cap"],
            setup=model_file(raw=lambda w, d: struct.pack("<Q", 2**25) + b"{" + b" " * (2**25 + 2**20))),
        Row("model: header longer than the file", EVAL, [M, "exceeds the file"],
            setup=model_file(raw=lambda w, d: struct.pack("<Q", len(d)) + d[8:])),
        Row("model: empty file", EVAL, [M, "too short"], setup=model_file(raw=lambda w, d: b"")),
        Row("model: truncated to half", EVAL, [M, "data_offsets"], setup=model_file(raw=lambda w, d: d[:len(d) // 2])),
        Row("model: header not JSON", EVAL, [M, "not a JSON object"],
            setup=model_file(raw=lambda w, d: struct.pack("<Q", 4) + b"abcd")),
        Row("model: duplicate key in the header", EVAL, [M, "duplicate key"],
            setup=model_file(raw=lambda w, d: (lambda h: struct.pack("<Q", len(h)) + h)(
                b'{"__metadata__": {}, "__metadata__": {}}'))),
        Row("model: NaN weights", EVAL, [M, "'conv1.weight' holds NaN"], setup=model_file(tensor("conv1.weight", nan))),
        Row("model: infinite weights", EVAL, [M, "'fc.bias' holds infinite"],
            setup=model_file(tensor("fc.bias", lambda t: torch.full_like(t, float("inf"))))),
        Row("model: a tensor of the wrong shape", EVAL, [M, "'fc.weight'", "[11,", "the network its config builds"],
            setup=model_file(tensor("fc.weight", lambda t: torch.zeros(11, t.shape[1])))),
        Row("model: a float64 tensor", EVAL, [M, "'conv1.weight'", "malformed entry"],
            setup=model_file(tensor("conv1.weight", lambda t: t.double()))),
        Row("model: a tensor missing", EVAL, [M, "do not match", "missing 'fc.bias'"],
            setup=model_file(lambda tensors, meta: tensors.pop("fc.bias"))),
        Row("model: metadata config of another network (id recomputed)", EVAL, [M, "do not match the network",
                                                                               "resnet34_v1"],
            setup=model_file(edited_config(lambda c: c.update(model="resnet34_v1", depth=34), rehash=True))),
        Row("model: metadata config edited, id kept", EVAL, [M, "metadata", "config"],
            setup=model_file(edited_config(lambda c: c["recipe"].update(lr=0.2), rehash=False))),
        Row("model: metadata cell_id not its config's", EVAL, [M, "edited or forged"],
            setup=model_file(lambda tensors, meta: meta.update({"resnet_bench.cell_id": "0" * 12}))),
        Row("model: metadata config not JSON", EVAL, [M, "metadata config", "not valid JSON"],
            setup=model_file(lambda tensors, meta: meta.update({"resnet_bench.config": "{"}))),
        Row("model: another library's safetensors (no metadata)", EVAL, [M, "no resnet-bench metadata"],
            setup=model_file(raw=lambda w, d: __import__("safetensors.torch").torch.save({"w": torch.zeros(2)}))),
        Row("model: epoch beyond the recipe", EVAL, [M, "epoch 99"],
            setup=model_file(lambda tensors, meta: meta.update({"resnet_bench.epoch": "99"}))),
        Row("model: a FIFO (subprocess: must not block)", EVAL, [M, "is a FIFO"],
            setup=lambda w, t: fifo(t / "m.safetensors"), subprocess=True),
        Row("model: a folder", ["evaluate", "--weights", "{T}/R", "--prepared-dir", "{D}"], ["is a folder"]),
        Row("evaluate --split train", [*EVAL, "--split", "train"], ["--split", "test, val"], setup=model_file()),
        Row("evaluate --dataset payload", [*EVAL, "--dataset", SHELL], ["--dataset"], setup=model_file()),
        Row("evaluate --device tpu", [*EVAL, "--device", "tpu"], ["--device"], setup=model_file()),
        Row("export --to onnx", ["export", "--weights", M, "--to", "onnx", "--out", "{T}/x.safetensors"],
            ["--to", "torchvision, timm"], setup=model_file()),
        Row("export: a CIFAR-stem width-4 network", ["export", "--weights", M, "--to", "torchvision", "--out",
                                                     "{T}/x.safetensors"], ["no counterpart in torchvision"],
            setup=model_file()),
        Row("export --out not ours", ["export", "--weights", M, "--to", "torchvision", "--out",
                                      "{T}/R/expected_cells.json"], ["--out", "not written by resnet-bench export"],
            setup=model_file()),
        Row("export: a NaN model", ["export", "--weights", M, "--to", "torchvision", "--out", "{T}/x.safetensors"],
            ["holds NaN"], setup=model_file(tensor("conv1.weight", nan))),
    ]
    return rows


ROWS = record_rows() + reader_rows() + output_rows() + cli_rows() + model_rows()


def test_the_table_has_at_least_120_rows_across_every_subcommand():
    assert len(ROWS) >= 120, len(ROWS)
    assert {r.argv[0] for r in ROWS} >= set(cli.COMMANDS)


# ---- running a row ----------------------------------------------------------------------------------


def _fmt(text: str, w: World, t: Path, rec: Path | None) -> str:
    return text.format(T=t, R=t / "R", D=w.prepared, P=w.project, HOME=w.home, GOOD=w.good, CANARY=w.canary,
                       RO=w.readonly, REC=rec or "")


def _run(row: Row, w: World, t: Path, capsys, monkeypatch) -> tuple[int, str]:
    argv = [_fmt(a, w, t, None) for a in row.argv]
    env = {"HOME": str(w.home), "MPLCONFIGDIR": str(t / "mpl"), "XDG_CACHE_HOME": str(t / "cache"),
           "XDG_CONFIG_HOME": str(t / "config"), **row.env}
    if row.subprocess:
        proc = subprocess.run([sys.executable, "-m", "resnet_bench", *argv], cwd=t, capture_output=True, text=True,
                              timeout=25, env={**venv_env(), **env, "PYTHONPATH": str(REPO)})
        return proc.returncode, proc.stderr
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(t)
    try:
        rc = cli.main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    return rc, capsys.readouterr().err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_hostile_input_is_one_line_and_touches_nothing(row: Row, world: World, tmp_path, capsys, monkeypatch):
    if row.readonly and world.readonly is None:
        pytest.skip("no read-only folder can be made here (root without mount permission)")
    shutil.copytree(world.good, tmp_path / "R")
    if row.setup:
        row.setup(world, tmp_path)
    rec = first_record(tmp_path / "R") if (tmp_path / "R" / "cells").is_dir() and any(
        (tmp_path / "R" / "cells").glob("*.json")) else None
    before = world.guard()
    rc, err = _run(row, world, tmp_path, capsys, monkeypatch)
    # Progress lines (`[bench] resnet18_v1 ...`) may come first; nothing else but the one error line.
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
    if os.environ.get("SHOW_ROWS"):
        print(f"\n[{row.id}] rc={rc} {lines}", file=sys.__stdout__)
    assert rc not in (0, None), (rc, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in row.needles:
        assert _fmt(needle, world, tmp_path, rec) in lines[0], (needle, lines[0])
    assert world.guard() == before, "a file outside the row's own folder changed"
    assert not world.canary.exists(), "a payload ran"
