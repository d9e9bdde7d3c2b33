"""dvc.yaml's deps are complete and minimal: derived from the code, not written from memory."""

import ast
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "resnet_bench"


def module_file(name: str) -> Path | None:
    """resnet_bench.x -> resnet_bench/x.py (or x/__init__.py); None outside the package."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")
    as_file = REPO.joinpath(*parts).with_suffix(".py")
    if as_file.is_file():
        return as_file
    as_pkg = REPO.joinpath(*parts, "__init__.py")
    return as_pkg if as_pkg.is_file() else None


def imported_modules(path: Path) -> set[str]:
    """Every resnet_bench module named in an import statement anywhere in the file (functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in out if module_file(m) is not None}


def closure(entry: str) -> set[str]:
    """Files of `entry` and everything it imports, transitively, plus each package's __init__
    (and, for a package run with `python -m`, its __main__)."""
    seen, todo = set(), [entry]
    if module_file(entry) and module_file(entry).name == "__init__.py" and module_file(entry + ".__main__"):
        todo.append(entry + ".__main__")
    while todo:
        name = todo.pop()
        f = module_file(name)
        if f is None or str(f.relative_to(REPO)) in seen:
            continue
        seen.add(str(f.relative_to(REPO)))
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run on import
        todo += sorted(imported_modules(f))
    return seen


def stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_module(stage: dict) -> str:
    cmd = stage["do"]["cmd"] if "do" in stage else stage["cmd"]
    return re.search(r"python -m ([\w.]+)", cmd).group(1)


def code_deps(stage: dict) -> set[str]:
    deps = (stage["do"] if "do" in stage else stage)["deps"]
    return {d for d in deps if isinstance(d, str) and d.startswith(PACKAGE + "/")}


def test_every_stage_declares_exactly_the_modules_it_imports():
    problems = []
    for name, stage in stages().items():
        want, have = closure(stage_module(stage)), code_deps(stage)
        if want - have:
            problems.append(f"{name}: missing deps {sorted(want - have)}")
        if have - want:
            problems.append(f"{name}: deps it never imports {sorted(have - want)}")
    assert not problems, "\n".join(problems)


def test_stages_declare_the_params_sections_their_code_reads():
    """A section the stage's own module reads (`params.<section>`, `.get("<section>")`) is a params dep."""
    pattern = r"""\bparams\.(prepare|sweep|report)\b|\.get\(["'](prepare|sweep|report)["']\)"""
    for name, stage in stages().items():
        entry = module_file(stage_module(stage))
        own = entry.parent.glob("*.py") if entry.name == "__init__.py" else [entry]
        read = set()
        for f in own:
            read |= {a or b for a, b in re.findall(pattern, f.read_text())}
        # params.yaml sections are strings; other params files (the experiment file) are {path: keys}
        declared = {p.split(".")[0] for p in (stage["do"] if "do" in stage else stage).get("params", [])
                    if isinstance(p, str)}
        assert read <= declared, f"{name} reads params sections {sorted(read - declared)} it does not declare"


def test_sweep_reads_only_the_active_experiment_as_a_params_file():
    """Its values are DVC params (`dvc params diff`, `exp show`); editing another experiment reruns nothing."""
    sweep = stages()["sweep"]
    assert {"experiments/${sweep.experiment}.yaml": None} in sweep["params"]
    assert not [d for d in sweep["deps"] if isinstance(d, str) and d.startswith("experiments")]


def test_no_command_takes_a_value_from_params_or_experiments():
    """DVC interpolates `${...}` into `cmd:` before any schema check and runs it in a shell: a
    command names only fixed paths, and the stage's module reads params.yaml itself."""
    for name, stage in stages().items():
        cmd = stage["do"]["cmd"] if "do" in stage else stage["cmd"]
        assert "$" not in cmd, f"{name}: {cmd}"
        assert re.fullmatch(r"python -m [\w.]+( --[\w-]+ [\w./-]+)*", " ".join(cmd.split())), f"{name}: {cmd}"
