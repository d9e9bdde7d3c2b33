"""The output policy (resnet_bench.outputs) and the escaping of user text per output (resnet_bench.report.escape):
what a writer may create, replace and delete, `~` one way, atomic writes, and user strings that stay text in
Markdown, LaTeX, matplotlib and spreadsheets."""

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from test_collect import make_config, make_record

from resnet_bench import collect, report
from resnet_bench.outputs import MANIFEST, OutputDir, OutputError, OutputFile, csv_guard, csv_unguard, is_tmp, out_path
from resnet_bench.outputs import tmp_path as temp_name
from resnet_bench.report import escape, figures


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def writer(root, **kw) -> OutputDir:
    return OutputDir(root, writer="w", flag="--out", layout=[r"a\.txt", r"sub/[a-z]+\.csv"], **kw)


def test_a_writer_replaces_and_deletes_only_its_own_files(tmp_path):
    out = writer(tmp_path / "o").prepare()
    out.write_text("a.txt", "1")
    out.write_text("sub/x.csv", "x")
    out.write_text("sub/y.csv", "y")
    out.finish()
    assert json.loads((tmp_path / "o" / MANIFEST).read_text())["files"] == {"a.txt": "w", "sub/x.csv": "w",
                                                                            "sub/y.csv": "w"}
    # Another writer's file beside them: accepted as a sibling, never touched.
    (tmp_path / "o" / "theirs.json").write_text("keep")
    out = writer(tmp_path / "o", siblings=[r"theirs\.json"]).prepare()
    out.write_text("a.txt", "2")
    out.write_text("sub/x.csv", "x2")
    assert out.finish() == [tmp_path / "o" / "sub" / "y.csv"]  # its own earlier file, not written again
    assert files(tmp_path / "o") == {MANIFEST: (tmp_path / "o" / MANIFEST).read_bytes(), "a.txt": b"2",
                                     "sub/x.csv": b"x2", "theirs.json": b"keep"}
    # A file it did not write refuses the folder before anything changes, naming it.
    (tmp_path / "o" / "sub" / "Mine.csv").write_text("the user's")
    before = files(tmp_path / "o")
    with pytest.raises(OutputError, match=r"--out .*/o: holds sub/Mine\.csv, which resnet-bench w did not write"):
        writer(tmp_path / "o", siblings=[r"theirs\.json"]).prepare()
    assert files(tmp_path / "o") == before


def test_a_folder_laid_out_as_its_own_but_without_a_manifest_is_adopted(tmp_path):
    (tmp_path / "o" / "sub").mkdir(parents=True)
    (tmp_path / "o" / "a.txt").write_text("written by an earlier version")
    (tmp_path / "o" / "sub" / "old.csv").write_text("stale")
    out = writer(tmp_path / "o").prepare()
    out.write_text("a.txt", "new")
    out.finish()
    assert files(tmp_path / "o").keys() == {MANIFEST, "a.txt"}


def test_nothing_is_created_when_a_command_is_refused_and_writability_is_probed(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file in the way"):
        writer(tmp_path / "file" / "o").prepare()
    out = writer(tmp_path / "deep" / "er" / "o").prepare()
    assert not (tmp_path / "deep").exists()  # created at the first write, not before
    out.write_text("sub/q.csv", "q")
    assert (tmp_path / "deep" / "er" / "o" / "sub" / "q.csv").read_text() == "q"


def test_tilde_is_expanded_one_way_for_every_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert out_path("~/x", "--out") == out_path(str(tmp_path / "home" / "x"), "--out") == tmp_path / "home" / "x"
    # the shell expands `--out ~/x` but not `--out=~/x`: both are HOME/x here, and no literal ./~ appears
    assert collect.main(["--cells", str(tmp_path / "none"), "--out=~/r"]) == 0
    assert collect.main(["--cells", str(tmp_path / "none"), "--out", str(tmp_path / "home" / "r")]) == 0
    assert (tmp_path / "home" / "r" / "cells.csv").is_file() and not (tmp_path / "~").exists()


def test_writes_are_atomic_and_temporary_names_match_no_output_glob(tmp_path):
    out = writer(tmp_path / "o").prepare()
    with pytest.raises(ZeroDivisionError):
        with out.file("a.txt") as tmp:
            tmp.write_text("half")
            1 / 0
    # nothing but the manifest, which lists a.txt before it is written (so a kill mid-write leaves no
    # file of ours unlisted)
    assert not (tmp_path / "o" / "a.txt").exists()
    assert [p.name for p in (tmp_path / "o").iterdir()] == [MANIFEST]
    t = temp_name(tmp_path / "o" / "cells.csv").name
    assert is_tmp(t) and t.startswith(".") and not re.fullmatch(r".*\.(csv|json|png|parquet)", t)
    # a dead process's temporary file is removed by the next writer; a live one's is left alone
    (tmp_path / "o").mkdir(exist_ok=True)
    dead = tmp_path / "o" / ".a.txt.999999999.0badc0de.resnet-bench.tmp"
    live = tmp_path / "o" / f".a.txt.{os.getpid()}.0badc0de.resnet-bench.tmp"
    dead.write_text("x")
    live.write_text("x")
    writer(tmp_path / "o").prepare()
    assert not dead.exists() and live.exists()


def test_a_single_output_file_is_replaced_only_if_it_is_recognisably_ours(tmp_path):
    ours = lambda p: p.read_text().startswith("OURS")
    f = OutputFile(tmp_path / "x.txt", writer="w", flag="--out", ours=ours)
    f.prepare().write_text("OURS 1")
    OutputFile(tmp_path / "x.txt", writer="w", flag="--out", ours=ours).prepare().write_text("OURS 2")
    assert (tmp_path / "x.txt").read_text() == "OURS 2"
    (tmp_path / "y.txt").write_text("the user's")
    with pytest.raises(OutputError, match="y.txt: exists and was not written by resnet-bench w"):
        OutputFile(tmp_path / "y.txt", writer="w", flag="--out", ours=ours).prepare()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no manifest, no temporary file


# ---- escaping per output ------------------------------------------------------------------------------

INJECTION = "boom\n# Heading <img src=http://e.invalid/x.png> ![x](http://e.invalid/y.png) | cell `code` &amp;"


def test_markdown_text_cannot_start_a_heading_image_link_tag_or_cell():
    s = escape.md_text(INJECTION)
    assert "\n" not in s and "<img" not in s and " | " not in s
    assert re.search(r"(?<!\\)[\[\]`|#]", s) is None  # every bracket, backtick, bar and hash escaped
    assert "&lt;img src=http://e.invalid/x.png&gt;" in s and "\\# Heading" in s and "&amp;amp;" in s
    assert escape.md_text("resnet18_v1 on cifar10_jpeg (v2 − v1)") == "resnet18_v1 on cifar10_jpeg (v2 − v1)"


def test_report_md_shows_hostile_free_text_as_text(tmp_path):
    """Error messages, host names and reasons are free text in valid records: they reach report.md escaped."""
    recs = [make_record(make_config("smoke", "digits", v, u, 18, 0, recipe="quick", device="cpu"), acc=0.9)
            for v, u in (("v1", "original"), ("v2", "full_preact"))]
    bad = make_record(make_config("smoke", "digits", "v1", "original", 18, 1, recipe="quick", device="cpu"),
                      acc=0.5, status="failed")
    bad["error"] = INJECTION.replace("\n", " ")  # the report shows an error's first line
    bad["provenance"]["node"]["hostname"] = "<script>alert(1)</script>"
    recs.append(bad)
    recs[0]["env"]["hardware"]["cpu_model"] = "=cmd|' /C calc'!A0 <b>"
    results = tmp_path / "r"
    collect.write_outputs(collect.cells_table(recs), collect.epochs_table(recs), results)
    from resnet_bench import config as cfg
    from resnet_bench.sweep.records import experiment_summary

    exp = cfg.Experiment(name="smoke", description=INJECTION, grid=cfg.Grid(versions=["v1", "v2"], depths=[18]),
                         arch=cfg.Arch(), recipe=cfg.resolve_recipe({"name": "quick"}),
                         runtime=cfg.Runtime(device="cpu"), bench=cfg.Bench(), resources=cfg.Resources())
    (results / "experiment.json").write_text(json.dumps(experiment_summary(exp)))
    assert report.main(["--results", str(results), "--out", str(tmp_path / "o"), "--formats", "png"]) == 0
    md = (tmp_path / "o" / "report.md").read_text()
    assert "<img" not in md and "<script" not in md and "<b>" not in md and "![x](http" not in md
    assert not [line for line in md.splitlines() if line.startswith("# Heading")]
    assert md.count("boom \\# Heading &lt;img src=http://e.invalid/x.png&gt; !\\[x\\]") == 2  # error, description
    # the same text in the spreadsheet files is not a formula, and reads back as it was written
    csv = (results / "cells.csv").read_text()
    assert "'=cmd|" in csv and ",=cmd" not in csv
    assert collect.read_table(results / "cells.csv").equals(collect.read_table(results / "cells.parquet"))


def test_latex_and_mathtext_escaping(tmp_path):
    tex = report.to_latex(pd.DataFrame({"name": ["a_b $x$ 50% #1 {y} \\z\nnext"]}), "caption $ & _", "tab:x")
    assert r"a\_b \$x\$ 50\% \#1 \{y\} \textbackslash{}z next" in tex and r"caption \$ \& \_" in tex
    matplotlib, plt = figures.pyplot()
    fig, ax = plt.subplots()
    ax.set_title(figures.panel_title("exp", "$\\frac{a}{$", True))  # unbalanced mathtext: a parse error unescaped
    fig.savefig(tmp_path / "t.png")
    plt.close(fig)
    assert (tmp_path / "t.png").stat().st_size > 0


@pytest.mark.parametrize("text", ["=1+1", "+1", "-x", "@SUM(A1)", "\tx", "'quoted", "plain", ""])
def test_spreadsheet_guard_round_trips(text):
    guarded = csv_guard(text)
    assert csv_unguard(guarded) == text and not guarded.startswith(("=", "+", "-", "@", "\t"))
    assert csv_guard(-0.5) == -0.5  # numbers are left alone


def test_paper_comparison_is_rederived_never_believed(tmp_path):
    """experiment.json claiming the run is comparable with the paper when its recipe is not the paper's (and
    the other way round): the claims are re-derived from the experiment's own paper block."""
    from test_report import write_experiment

    from resnet_bench.report import stats
    from resnet_bench.sweep.records import read_experiment

    written = write_experiment(tmp_path, comparable=False, paper_comparable=True, paper_mismatch=[])
    assert written["paper_comparable"] is True
    derived = read_experiment(tmp_path / "experiment.json")
    assert derived["paper_comparable"] is False and stats.paper_lookup(derived) == {}
    assert "this run is not comparable (recipe: differs from the paper's 'he2016_cifar' in epochs)" in \
        stats.paper_status(derived, "experiment.json")
    write_experiment(tmp_path, comparable=True, paper_comparable=False, paper_mismatch=["forged"])
    derived = read_experiment(tmp_path / "experiment.json")
    assert derived["paper_comparable"] is True and derived["paper_mismatch"] == []
    assert stats.paper_lookup(derived) == {("cifar10", "resnet18_v1", "original"): 7.5,
                                           ("cifar10", "resnet18_v2", "full_preact"): 6.0}
