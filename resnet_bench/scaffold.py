"""`resnet-bench init DIR`: a new project of one's own, outside this repository, from the installed package.

Writes the pipeline (`dvc.yaml`), `params.yaml`, `experiments/` (every packaged experiment and the JSON
Schema editors read), `.gitignore` and `.dvcignore`, starts git (unless DIR is already inside a git work
tree) and DVC there, and adds the plot template (`.dvc/plots/v1v2_curves.json`). The files are the
repository's own, shipped as package data (resnet_bench/project_template/), with one difference: the
stages' dependencies on the package's modules are dropped, since the code is the installed package, not
files of the project. DIR must be absent or empty; nothing is ever overwritten.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from resnet_bench import __version__
from resnet_bench.argparsing import Parser

# A dvc.yaml dependency on a module of the package: `      - resnet_bench/sweep/driver.py`
_CODE_DEP = re.compile(r"^\s*- resnet_bench/\S+\.py\s*$")
PIPELINE_NOTE = (
    "# Written by `resnet-bench init` from resnet-bench {version}'s pipeline, without the stages' deps on the\n"
    "# package's modules (the comments below about those describe the repository's dvc.yaml): the stages run\n"
    "# the installed package, so after upgrading it run `dvc repro --force` (every cell id covers the\n"
    "# training code's fingerprint: only cells whose code changed are trained again).\n")


class InitError(ValueError):
    """DIR cannot hold a new project; the message says why."""


def project_pipeline(text: str) -> str:
    """The repository's dvc.yaml for a project that uses the installed package: code deps dropped, and a
    `deps:` left with no item dropped too (DVC refuses an empty one). Line-based, so comments stay."""
    lines = [line for line in text.splitlines(keepends=True) if not _CODE_DEP.match(line)]
    out = []
    for i, line in enumerate(lines):
        if line.strip() == "deps:":
            indent = len(line) - len(line.lstrip())
            rest = (x for x in lines[i + 1:] if x.strip() and not x.lstrip().startswith("#"))
            nxt = next(rest, "")
            if not (nxt.lstrip().startswith("- ") and len(nxt) - len(nxt.lstrip()) >= indent):
                continue
        out.append(line)
    return PIPELINE_NOTE.format(version=__version__) + "".join(out)


def _check_target(target: Path) -> None:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InitError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()):
        raise InitError(f"{target} is not empty; give a new or empty folder (init never overwrites a file)")
    if not target.parent.is_dir():
        what = "is not a folder" if target.parent.exists() else "does not exist"
        raise InitError(f"{target.parent} {what}; give DIR in an existing folder")


def _inside_git(path: Path) -> bool:
    if shutil.which("git") is None:
        return False
    proc = subprocess.run(["git", "-C", str(path), "rev-parse", "--is-inside-work-tree"], capture_output=True,
                          text=True)
    return proc.returncode == 0 and proc.stdout.strip() == "true"


def _run(cmd: list[str], cwd: Path) -> None:
    # argument lists, never a shell: the folder name reaches no command line as code
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise InitError(f"`{' '.join(cmd[-3:])}` failed in {cwd}: {(proc.stderr or proc.stdout).strip()}")


def write_project(target: Path, *, git: bool = True) -> list[str]:
    """Write the project into `target` (absent or empty); the relative paths written, in order."""
    from resnet_bench.config import packaged

    _check_target(target)
    created = not target.exists()
    target.mkdir(exist_ok=True)
    try:
        written = []

        def put(rel: str, text: str) -> None:
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x") as f:  # exclusive: never replaces a file
                f.write(text)
            written.append(rel)

        put("dvc.yaml", project_pipeline(packaged("pipeline.yaml").read_text()))
        put("params.yaml", packaged("params.yaml").read_text())
        for src in sorted(packaged("experiments").iterdir()):
            if src.suffix in (".yaml", ".json"):
                put(f"experiments/{src.name}", src.read_text())
        put(".gitignore", packaged("gitignore").read_text())
        put(".dvcignore", packaged("dvcignore").read_text())
        in_git = _inside_git(target)
        if git and not in_git and shutil.which("git"):
            _run(["git", "init", "-q"], target)
            in_git = True
        dvc = [sys.executable, "-m", "dvc"]
        _run([*dvc, "init", "-q", *(["--subdir"] if in_git and not (target / ".git").exists() else []),
              *([] if in_git else ["--no-scm"])], target)
        # like this repository: DVC sends no usage analytics from the project
        _run([*dvc, "config", "core.analytics", "false"], target)
        for src in sorted(packaged("plots").glob("*.json")):
            put(f".dvc/plots/{src.name}", src.read_text())
    except BaseException:
        if created:  # a folder init made itself and could not finish: removed, nothing else is touched
            shutil.rmtree(target, ignore_errors=True)
        raise
    return written


def init_main(argv=None) -> int:
    p = Parser(prog="resnet-bench init", description=__doc__.splitlines()[0])
    p.add_argument("dir", metavar="DIR", help="the new project's folder: absent or empty")
    p.add_argument("--no-git", action="store_true",
                   help="do not start a git repository (DVC then runs without git: `dvc init --no-scm`)")
    args = p.parse_args(argv)
    target = Path(args.dir)
    try:
        written = write_project(target, git=not args.no_git)
    except InitError as err:
        print(f"error: resnet-bench init: {err}", file=sys.stderr)
        return 2
    n_exp = sum(w.startswith("experiments/") and w.endswith(".yaml") for w in written)
    print(f"[init] wrote {target}: dvc.yaml, params.yaml, experiments/ ({n_exp} experiments), .gitignore, "
          ".dvcignore, .dvc/plots/; git and DVC started")
    print(f"[init] next: cd {target} && git add -A && git commit -m 'resnet-bench project' && dvc repro   "
          "(`resnet-bench config show` lists the active experiment)")
    return 0
