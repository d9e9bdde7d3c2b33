"""Issue 24: what a DVC user reads. `dvc exp show` through `resnet-bench exp-show` in 120 columns, the
experiment file in `dvc params diff`, the plot template's fields, and `dvc plots show` without a CDN."""

import csv
import io
import json
import re
import subprocess
import sys
import tarfile

import pytest
import yaml

from conftest import REPO, copy_project, venv_env
from resnet_bench import collect, views

pytestmark = pytest.mark.slow


def run(project, *cmd, env=None, check=True) -> str:
    proc = subprocess.run(list(cmd), cwd=project, env={**venv_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def committed_copy(reproduced_tiny, tmp_path):
    project = copy_project(reproduced_tiny[0], tmp_path / "p")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "results")
    return project


def csv_columns(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text)))


def test_the_kept_columns_are_metrics_collect_writes():
    assert set(views.KEPT_DATASET_KEYS) <= set(collect.HEADLINE_DATASET_KEYS)
    assert set(views.KEPT_TOP_KEYS) <= set(collect.HEADLINE_COUNT_KEYS)


def test_exp_show_fits_120_columns_with_headline_metrics_and_the_params_that_differ(reproduced_tiny, tmp_path):
    project = committed_copy(reproduced_tiny, tmp_path)
    # A real experiment that trains nothing (cell ids do not cover these keys): the sweep stage reruns on the
    # changed params and finds every cell done. It changes a params.yaml key and an experiment-file key.
    run(project, "dvc", "exp", "run", "-n", "lenient", "-S", "sweep.allow_failures=true",
        "-S", "experiments/tiny.yaml:+resources.max_concurrent=1")
    run(project, "git", "checkout", "--", "params.yaml", "experiments/tiny.yaml")

    # The control: plain `dvc exp show` is what the issue saw, dozens of columns, most of them file hashes.
    plain = csv_columns(run(project, "dvc", "exp", "show", "--csv"))
    assert len(plain) > 60 and sum("/" in c for c in plain) > 40, plain

    cols = csv_columns(run(project, sys.executable, "-m", "resnet_bench", "exp-show", "--csv"))
    # The experiment, the headline metrics (ci95_pp is null with one (depth, seed) pair, so DVC has no column),
    # and exactly the two parameters that differ; v1_acc/v2_acc/ok are equal in every row, so not shown.
    assert cols == ["Experiment", "rev", "typ", "digits.v2-v1_pp", "not_ok", "sweep.allow_failures",
                    "resources.max_concurrent"], cols

    table = run(project, sys.executable, "-m", "resnet_bench", "exp-show", env={"COLUMNS": "120"})
    lines = table.splitlines()
    assert max(map(len, lines)) <= 120, table
    assert "…" not in table, f"a column was collapsed:\n{table}"
    for header in ("Experiment", "digits.v2-v1_pp", "not_ok", "sweep.allow_failures", "resources.max_concurrent"):
        assert header in table, table
    (row,) = [line for line in lines if "[lenient]" in line]
    assert re.search(r"\bTrue\s+1$", row.rstrip()), table
    (master,) = [line for line in lines if line.strip().startswith("master")]
    assert re.search(r"\bFalse\s+-$", master.rstrip()), table  # max_concurrent not set there


def test_params_diff_shows_an_experiment_file_edit_and_a_comment_edit_changes_nothing(reproduced_tiny, tmp_path):
    project = committed_copy(reproduced_tiny, tmp_path)
    exp_file = project / "experiments" / "tiny.yaml"
    original = exp_file.read_text()
    exp = yaml.safe_load(original)
    exp["recipe"]["epochs"] = 2
    exp_file.write_text(yaml.safe_dump(exp))
    diff = run(project, "dvc", "params", "diff")
    assert re.search(r"experiments/tiny\.yaml\s+recipe\.epochs\s+1\s+2", diff), diff
    status = run(project, "dvc", "status", "sweep")  # the sweep is stale: a value it reads changed
    assert re.search(r"experiments/tiny\.yaml:\s+modified:\s+recipe", status), status

    # A comment is not a value: no params difference and nothing to rerun.
    exp_file.write_text(original + "# a comment changes no value\n")
    assert run(project, "dvc", "params", "diff").strip() == ""
    assert "up to date" in run(project, "dvc", "status"), run(project, "dvc", "status")


def plot_spec(project) -> tuple[str, dict]:
    shown = json.loads(run(project, "dvc", "plots", "show", "--json"))["data"]
    assert list(shown) == ["results/tiny/curves/digits.csv"], list(shown)  # one chart per dataset
    (plot,) = shown["results/tiny/curves/digits.csv"]
    return plot["type"], plot["content"]


def test_plot_template_v1_v2_by_colour_splits_by_dash_numeric_panels_and_single_epoch_points(reproduced_tiny,
                                                                                          tmp_path):
    kind, spec = plot_spec(copy_project(reproduced_tiny[0], tmp_path / "p"))
    assert kind == "vega"
    # the title names the experiment, not a file path; panels name network, depth and dataset
    assert spec["title"]["text"] == "tiny: top-1 error per epoch, mean over ok seeds"
    calc = {t["as"]: t["calculate"] for t in spec["transform"] if "calculate" in t}
    assert calc["panel"] == "datum.network + ' on ' + datum.dataset"
    facet = spec["facet"]
    # depths sorted as numbers (101 after 18), one row of panels per revision
    assert calc["depth_n"] == "toNumber(datum.depth)"
    assert facet["column"] == {**facet["column"], "field": "panel",
                               "sort": {"field": "depth_n", "op": "min", "order": "ascending"}}
    assert facet["row"]["field"] == "rev"
    enc = spec["spec"]["encoding"]
    assert enc["color"]["field"] == "version" and enc["color"]["scale"]["domain"] == ["v1", "v2"]
    assert enc["color"]["legend"]["symbolType"] == "stroke"
    # integer epochs: whole-number ticks, never 1.1
    assert enc["x"]["axis"] == {"format": "d", "tickMinStep": 1} and calc["epoch_n"] == "toNumber(datum.epoch)"
    line, *points = spec["spec"]["layer"]
    dash = line["encoding"]["strokeDash"]
    assert line["mark"]["type"] == "line" and dash["field"] == "split"
    assert dash["scale"]["domain"] == ["validation", "train"] and dash["scale"]["range"][0] != dash["scale"]["range"][1]
    assert dash["legend"]["symbolType"] == "stroke"
    # short series (this 1-epoch run) are also drawn as points, one shape per split
    join = next(t for t in spec["transform"] if "joinaggregate" in t)
    assert set(join["groupby"]) == {"rev", "panel", "version", "split"}
    assert sorted(p["mark"]["shape"] for p in points) == ["circle", "triangle-up"]
    assert all(p["mark"]["type"] == "point" and "datum.series_epochs <= 12" in p["transform"][0]["filter"]
               for p in points)
    rows = spec["data"]["values"]
    series = {(r["version"], r["split"]) for r in rows}
    assert series == {("v1", "validation"), ("v1", "train"), ("v2", "validation"), ("v2", "train")}
    assert len(rows) == 4 and {r["epoch"] for r in rows} == {"1"}  # 1 epoch each: only the points show it
    # every data field the template reads is a curve column (or DVC's rev)
    template = (REPO / ".dvc" / "plots" / "v1v2_curves.json").read_text()
    columns = {c for c, *_ in collect.CURVE_COLUMNS}
    assert set(re.findall(r"datum\.(\w+)", template)) - {"rev", "label"} - set(calc) - {"series_epochs"} <= columns


def npm_tarball(path, name: str, text: str):
    with tarfile.open(path, "w:gz") as tar:
        data = text.encode()
        info = tarfile.TarInfo(views.VEGA_SCRIPTS[name])
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_plots_offline_inlines_the_scripts_and_dvc_renders_with_no_cdn(reproduced_tiny, tmp_path):
    project = copy_project(reproduced_tiny[0], tmp_path / "p")
    versions = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
    balls = [npm_tarball(tmp_path / f"{n}-{v}.tgz", n, f"window.{n.replace('-', '_')}_loaded = '</script>';")
             for n, v in versions.items()]
    cmd = [sys.executable, "-m", "resnet_bench", "plots-offline"]
    # hostile input first: a wrong file, a tarball without the script; one line each, nothing written
    (tmp_path / "notes.txt").write_text("x")
    out = run(project, *cmd, str(balls[0]), str(balls[1]), str(tmp_path / "notes.txt"), check=False)
    assert "notes.txt: not an npm tarball" in out and out.count("\n") == 1, out
    empty = tmp_path / "vega-embed-6.18.2.tgz"
    empty.unlink()
    with tarfile.open(empty, "w:gz"):
        pass
    out = run(project, *cmd, *map(str, balls), check=False)
    assert "has no package/build/vega-embed.min.js" in out and not (project / ".dvc/plots/offline.html").exists()
    npm_tarball(empty, "vega-embed", "window.vega_embed_loaded = 1;")

    run(project, *cmd, *map(str, reversed(balls)))
    page = run(project, "dvc", "plots", "show", "--html-template", ".dvc/plots/offline.html", "-o", "view")
    html = (project / "view" / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and "<script src" not in html, page
    # inlined in load order, a `</script` in a script escaped, and the plot itself on the page
    assert html.index("window.vega_loaded") < html.index("window.vega_lite_loaded") < html.index("vega_embed_loaded")
    assert "'<\\/script>'" in html and "vegaEmbed(" in html and "ResNet-18" in html
    # a file it did not write is never replaced
    (project / "other.html").write_text("mine")
    out = run(project, *cmd, *map(str, balls), "--out", "other.html", check=False)
    assert "was not written by resnet-bench plots-offline" in out and (project / "other.html").read_text() == "mine"
