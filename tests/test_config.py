"""The typed configuration: every bad value refused before anything starts, one line each.

Table-driven: each bad value goes through the real entry point (the sweep's `driver.main`,
`train.main`, `bench.main`, `config` subcommand), which must exit nonzero with
exactly one error line naming the key, without starting Ray or training.
"""

import json
from pathlib import Path

import pytest
import yaml

from resnet_bench import bench, cli, config as cfg, train_cli
from resnet_bench.sweep import cluster, driver

GOOD_EXPERIMENT = {
    "description": "config test grid",
    "grid": {"versions": ["v1", "v2"], "depths": [18], "datasets": ["digits"], "seeds": [0, 1]},
    "arch": {"stem": "cifar", "width": 4},
    "recipe": {"name": "quick", "epochs": 1, "batch_size": 128},
    "runtime": {"device": "auto"},
    "bench": {"enabled": False, "batch_size": 16, "warmup": 1, "repeats": 2},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
}
GOOD_PARAMS = {"prepare": {"builtin": ["digits"], "files": {}, "val_fraction": 0.1, "split_seed": 0},
               "sweep": {"experiment": "e"}, "report": {"formats": ["png"], "dpi": 100, "context": "paper"}}


def _set(tree: dict, path: str, value) -> dict:
    """A copy of `tree` with dotted `path` set (a value of DELETE removes the key)."""
    tree = json.loads(json.dumps(tree))
    node = tree
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return tree


# (dotted key in the experiment file, bad value, text the error line must contain)
EXPERIMENT_CASES = [
    ("grid.depths", 18, "grid.depths"),
    ("grid.depths", ["18"], "grid.depths.0"),
    ("grid.depths", [19], "19"),
    ("grid.depths", [], "depths is empty"),
    ("grid.depths", [18, 18], "duplicate depths"),
    ("grid.versions", ["v3"], "grid.versions.0"),
    ("grid.versions", "v1", "grid.versions"),
    ("grid.units", ["bn_everywhere"], "grid.units.0"),
    ("grid", {"models": ["resnet19_v1"], "datasets": ["digits"]}, "resnet19_v1"),
    ("grid", {"models": ["resnet18_v1"], "depths": [18], "datasets": ["digits"]}, "not both"),
    ("grid.datasets", ["imagenet21k"], "imagenet21k"),
    ("grid.datasets", [], "datasets is empty"),
    ("grid.datasets", ["../etc"], "grid.datasets.0"),
    ("grid.seeds", [0, 0], "duplicate seeds"),
    ("grid.seeds", [-1], "grid.seeds.0"),
    ("grid.seeds", ["0"], "grid.seeds.0"),
    ("grid.seeds", 0, "grid.seeds"),
    ("grid.seedz", [0], "grid.seedz"),
    ("arch.widht", 3, "did you mean 'width'"),
    ("arch.width", 0, "arch.width"),
    ("arch.width", -8, "arch.width"),
    ("arch.width", 2.5, "arch.width"),
    ("arch.width", "8", "arch.width"),
    ("arch.stem", "resnetd", "arch.stem"),
    ("arch.zero_init_residual", "yes", "arch.zero_init_residual"),
    ("recipe.name", "adamw", "recipe.name"),
    ("recipe.optimizer", "adam", "recipe.optimizer"),
    ("recipe.lr", 0, "recipe.lr"),
    ("recipe.lr", -0.1, "recipe.lr"),
    ("recipe.lr", float("nan"), "recipe.lr"),
    ("recipe.lr", float("inf"), "recipe.lr"),
    ("recipe.lr", "0.1", "recipe.lr"),
    ("recipe.momentum", 1.0, "recipe.momentum"),
    ("recipe.momentum", -0.1, "recipe.momentum"),
    ("recipe.nesterov", "no", "recipe.nesterov"),
    ("recipe.weight_decay", -1e-4, "recipe.weight_decay"),
    ("recipe.schedule", "poly", "recipe.schedule"),
    ("recipe.milestones", [0.5, 0.2], "milestones must increase"),
    ("recipe.milestones", [0.0, 0.5], "recipe.milestones.0"),
    ("recipe.milestones", [0.5, 1.5], "recipe.milestones.1"),
    ("recipe.milestones", 0.5, "recipe.milestones"),
    ("recipe.gamma", 0, "recipe.gamma"),
    ("recipe.gamma", 2, "recipe.gamma"),
    ("recipe.warmup_iters", -1, "recipe.warmup_iters"),
    ("recipe.label_smoothing", 1.0, "recipe.label_smoothing"),
    ("recipe.epochs", 0, "recipe.epochs"),
    ("recipe.epochs", 1_000_000_000, "recipe.epochs"),
    ("recipe.epochs", 2.5, "recipe.epochs"),
    ("recipe.epochs", True, "recipe.epochs"),
    ("recipe.batch_size", 0, "recipe.batch_size"),
    ("recipe.augment.crop_pad", -1, "recipe.augment.crop_pad"),
    ("recipe.augment.flip", "yes", "recipe.augment.flip"),
    ("recipe.augment.rotate", 10, "recipe.augment.rotate"),
    ("recipe.lrr", 0.1, "did you mean 'lr'"),
    ("runtime.device", "tpu", "runtime.device"),
    ("runtime.devcie", "cpu", "did you mean 'device'"),
    ("runtime.amp", "fp8", "runtime.amp"),
    ("runtime.amp", "fp16", "amp 'fp16' needs a CUDA device"),
    ("runtime", {"amp": "bf16", "deterministic": True}, "outside the bit-identity promise"),
    ("runtime.tf32", True, "tf32 true needs a CUDA device"),
    ("runtime.tf32", "yes", "runtime.tf32"),
    ("runtime.compile_mode", "max-autotune", "needs runtime.compile true"),
    ("runtime.compile_mode", "fast", "runtime.compile_mode"),
    ("runtime.device", "cuda:1", "cuda:0"),
    ("runtime.deterministic", "no", "runtime.deterministic"),
    ("runtime.threads", 0, "runtime.threads"),
    ("runtime.channels_last", 1, "runtime.channels_last"),
    ("runtime.compile", "true", "runtime.compile"),
    ("runtime.device", "cuda", "needs resources.gpus_per_trial > 0"),
    ("bench.batch_size", 0, "bench.batch_size"),
    ("bench.warmup", -1, "bench.warmup"),
    ("bench.repeats", 0, "bench.repeats"),
    ("bench.enabled", "no", "bench.enabled"),
    ("bench.img_size", 0, "bench.img_size"),
    ("bench.steps_per_repeat", 0, "bench.steps_per_repeat"),
    ("bench.repeat", 3, "did you mean 'repeats'"),
    ("resources.cpus_per_trial", 0, "resources.cpus_per_trial"),
    ("resources.cpus_per_trial", "two", "resources.cpus_per_trial"),
    ("resources.gpus_per_trial", -1, "resources.gpus_per_trial"),
    ("resources.gpus_per_trial", float("nan"), "resources.gpus_per_trial"),
    ("resources.gpus_per_trial", 2, "gpus_per_trial 2 with workers_per_trial 1: one process trains on one GPU"),
    ("resources", {"gpus_per_trial": 1, "workers_per_trial": 2}, "each worker holds one whole GPU"),
    ("resources", {"gpus_per_trial": 1.5, "workers_per_trial": 2}, "no fractions across workers"),
    ("resources.workers_per_trial", 3, "recipe.batch_size 128 does not split over workers_per_trial 3"),
    ("resources.workers_per_trial", 0, "resources.workers_per_trial"),
    ("resources.workers_per_trial", 1.5, "resources.workers_per_trial"),
    ("arch.sync_bn", True, "arch.sync_bn true with workers_per_trial 1"),
    ("arch", {"sync_bn": True}, "no other worker to share"),
    ("resources.max_concurrent", 0, "resources.max_concurrent"),
    ("resorces", {}, "did you mean 'resources'"),
    ("description", 5, "description"),
]

# Every prepare.files entry names the four store sizes (dvc.yaml passes each on the command line).
SIZES = {"image_size": 0, "max_aspect": 1.0, "eval_resize": 0, "eval_crop": 0}
# (dotted key in params.yaml, bad value, text the error line must contain)
PARAMS_CASES = [
    ("prepare.builtin", ["mnist"], "prepare.builtin.0"),
    ("prepare.builtin", "digits", "prepare.builtin"),
    ("prepare.val_fraction", 0, "prepare.val_fraction"),
    ("prepare.val_fraction", 1.5, "prepare.val_fraction"),
    ("prepare.split_seed", -1, "prepare.split_seed"),
    ("prepare.split_seed", "0", "prepare.split_seed"),
    ("prepare.files", {"x": {"format": "bogus", "source": "a", "sha256": "", **SIZES}}, "prepare.files.x.format"),
    ("prepare.files", {"x": {"format": "cifar10", "source": "a", "sha256": "abc", **SIZES}},
     "prepare.files.x.sha256"),
    ("prepare.files", {"x": {"format": "cifar10", "sha256": "", **SIZES}}, "prepare.files.x.source"),
    ("prepare.files", {"x": {"format": "imagefolder", "source": "a", "sha256": "", "max_aspect": 1.0,
                             "eval_resize": 0, "eval_crop": 0}}, "prepare.files.x.image_size"),
    ("prepare.files", {"x": {"format": "imagefolder", "source": "a", "sha256": "", **SIZES, "image_size": -1}},
     "prepare.files.x.image_size"),
    ("prepare.files", {"x": {"format": "imagenet", "source": "a", "sha256": "", **SIZES, "max_aspect": 0.5}},
     "prepare.files.x.max_aspect"),
    ("prepare.files", {"x": {"format": "imagenet", "source": "a", "sha256": "", **SIZES, "image_size": 256,
                             "eval_resize": 256, "eval_crop": 300}}, "eval_crop 300 is larger than"),
    ("prepare.files", {"x": {"format": "cifar10", "source": "a", "sha256": "", **SIZES, "eval_crop": 24}},
     "apply only to the image formats"),
    ("prepare.files", {"digits": {"format": "digits", "source": "a", "sha256": "", **SIZES}},
     "both as builtin and in files"),
    ("sweep.experiment", "nope", "sweep.experiment"),
    ("sweep.depths", 18, "sweep.depths"),
    ("sweep.depths", ["18"], "sweep.depths.0"),
    ("sweep.seeds", [0, 0], "duplicate seeds"),
    ("sweep.allow_failures", "no", "sweep.allow_failures"),
    ("sweep.recipe", {"lrr": 1}, "did you mean 'lr'"),
    ("sweep.recipe", {"lr": 0}, "recipe.lr"),
    ("sweep.runtime", {"devcie": "cpu"}, "did you mean 'device'"),
    ("sweep.storage_path", 5, "sweep.storage_path"),
    ("sweep.depth", [18], "did you mean 'depths'"),
    ("report.formats", ["jpg"], "report.formats.0"),
    ("report.formats", "png", "report.formats"),
    ("report.dpi", 0, "report.dpi"),
    ("report.context", "slides", "report.context"),
    ("sweeep", {}, "did you mean 'sweep'"),
]

# Raw YAML texts for params.yaml: duplicate keys, tags, alias bombs.
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
RAW_PARAMS_CASES = [
    ("sweep: {experiment: e}\nsweep: {experiment: e}\n", "duplicate key 'sweep'"),
    ("sweep: {experiment: e, seeds: [0], seeds: [1]}\n", "duplicate key 'seeds'"),
    ("sweep: !!python/object:os.system {experiment: e}\n", "YAML tag"),
    ("sweep: {experiment: !custom e}\n", "YAML tag"),
    (BOMB, "alias"),
    ("sweep: [unclosed\n", "invalid YAML"),
    ("- just\n- a list\n", "expected a mapping"),
]


@pytest.fixture
def project(tmp_path, prepared_digits, monkeypatch):
    """A params.yaml + experiments/e.yaml; Ray must never start in these tests."""
    (tmp_path / "experiments").mkdir()

    def no_ray(*a, **k):
        raise AssertionError("Ray started although the config is invalid")

    monkeypatch.setattr(cluster, "init_ray", no_ray)
    return tmp_path


def write(project: Path, experiment=GOOD_EXPERIMENT, params=GOOD_PARAMS, raw_params: str | None = None):
    (project / "experiments" / "e.yaml").write_text(yaml.safe_dump(experiment, sort_keys=False))
    (project / "params.yaml").write_text(raw_params if raw_params is not None
                                         else yaml.safe_dump(params, sort_keys=False))


def run_sweep(project: Path, prepared: Path, capsys) -> tuple[int, list[str]]:
    rc = driver.main(["--params", str(project / "params.yaml"), "--experiments-dir", str(project / "experiments"),
                     "--prepared-dir", str(prepared), "--results", str(project / "results")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def assert_one_line(rc, lines, needle):
    assert rc != 0
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and needle in lines[0], lines


def test_good_config_passes_dry_run(project, prepared_digits, capsys):
    write(project)
    rc = driver.main(["--params", str(project / "params.yaml"), "--experiments-dir", str(project / "experiments"),
                     "--prepared-dir", str(prepared_digits), "--dry-run"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "4 cells, 0 done, 4 to train" in out.err and len(out.out.splitlines()) == 4


@pytest.mark.parametrize("key, value, needle", EXPERIMENT_CASES, ids=[f"exp:{k}={v!r}" for k, v, _ in EXPERIMENT_CASES])
def test_bad_experiment_value_is_one_line_before_ray(project, prepared_digits, capsys, key, value, needle):
    write(project, experiment=_set(GOOD_EXPERIMENT, key, value))
    rc, lines = run_sweep(project, prepared_digits, capsys)
    assert_one_line(rc, lines, needle)
    assert "e.yaml" in lines[0] or "config" in lines[0]
    assert not (project / "results").exists()


@pytest.mark.parametrize("key, value, needle", PARAMS_CASES, ids=[f"params:{k}={v!r}" for k, v, _ in PARAMS_CASES])
def test_bad_params_value_is_one_line_before_ray(project, prepared_digits, capsys, key, value, needle):
    write(project, params=_set(GOOD_PARAMS, key, value))
    rc, lines = run_sweep(project, prepared_digits, capsys)
    assert_one_line(rc, lines, needle)
    assert "params.yaml" in lines[0]


@pytest.mark.parametrize("text, needle", RAW_PARAMS_CASES, ids=[n for _, n in RAW_PARAMS_CASES])
def test_hostile_yaml_is_one_line(project, prepared_digits, capsys, text, needle):
    write(project, raw_params=text)
    rc, lines = run_sweep(project, prepared_digits, capsys)
    assert_one_line(rc, lines, needle)


def test_all_errors_reported_together(project, prepared_digits, capsys):
    bad = _set(_set(_set(GOOD_EXPERIMENT, "recipe.lr", 0), "arch.width", 0), "bench.repeats", 0)
    write(project, experiment=bad)
    rc, lines = run_sweep(project, prepared_digits, capsys)
    assert rc == 2 and len(lines) == 3
    assert {"recipe.lr", "arch.width", "bench.repeats"} == {k for k in ("recipe.lr", "arch.width", "bench.repeats")
                                                           if any(k in line for line in lines)}


def test_stale_prepared_split_is_refused(project, prepared_digits, capsys):
    write(project, params=_set(GOOD_PARAMS, "prepare.split_seed", 7))
    rc, lines = run_sweep(project, prepared_digits, capsys)
    assert_one_line(rc, lines, "split_seed")


def test_gpu_experiment_on_a_gpu_less_host_is_refused_before_ray(project, prepared_digits, capsys):
    exp = _set(_set(GOOD_EXPERIMENT, "resources.gpus_per_trial", 1), "runtime.device", "cuda")
    write(project, experiment=exp)
    rc, lines = run_sweep(project, prepared_digits, capsys)
    assert_one_line(rc, lines, "resources.gpus_per_trial")


TRAIN_CASES = [
    (["--width", "0"], "--width"),
    (["--width", "abc"], "--width"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "1000000000"], "--epochs"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--recipe", "nope"], "--recipe"),
    (["--schedule", "poly"], "--schedule"),
    (["--stem", "x"], "--stem"),
    (["--threads", "0"], "--threads"),
    (["--amp", "fp16", "--device", "cpu"], "amp"),
    (["--tf32", "--device", "cpu"], "tf32"),
    (["--device", "cuda:1"], "--device"),
    (["--device", "cuda:x"], "runtime.device"),
    (["--amp", "fp8"], "--amp"),
    (["--device", "tpu"], "--device"),
    (["--device", "cuda"], "--device"),
    (["--unit", "bogus"], "--unit"),
    (["--unit", "original"], "--unit"),  # a v1 unit on the v2 model below
    (["--dataset", "nope"], "--dataset"),
    (["--seed", "-1"], "grid.seeds"),
    (["--out", "/"], "--out"),
]


@pytest.mark.parametrize("extra, needle", TRAIN_CASES, ids=[" ".join(a) for a, _ in TRAIN_CASES])
def test_bad_train_flag_is_one_line(prepared_digits, capsys, extra, needle, monkeypatch):
    monkeypatch.setattr(train_cli, "train_cell", lambda *a, **k: pytest.fail("trained despite a bad flag"))
    with pytest.raises(SystemExit) if "abc" in extra else _nullcontext() as exc:
        rc = train_cli.main(["--model", "resnet18_v2", "--prepared-dir", str(prepared_digits), *extra])
    rc = exc.value.code if "abc" in extra else rc
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert_one_line(rc, lines, needle)


BENCH_CASES = [
    (["--models", "foo"], "--models"),
    (["--batch-size", "0"], "--batch-size"),
    (["--warmup", "-1"], "--warmup"),
    (["--repeats", "0"], "--repeats"),
    (["--steps-per-repeat", "0"], "--steps-per-repeat"),
    (["--image-size", "0"], "--image-size"),
    (["--width", "0"], "--width"),
    (["--stem", "x"], "--stem"),
    (["--num-classes", "0"], "--num-classes"),
    (["--in-channels", "0"], "--in-channels"),
    (["--amp", "fp16"], "--amp"),
    (["--tf32"], "--tf32"),
    (["--compile-mode", "max-autotune"], "--compile-mode"),
    (["--device", "cuda"], "--device"),
    (["--device", "cuda:1"], "--device"),
    (["--threads", "0"], "--threads"),
    (["--out", "/"], "--out"),
]


@pytest.mark.parametrize("extra, needle", BENCH_CASES, ids=[" ".join(a) for a, _ in BENCH_CASES])
def test_bad_bench_flag_is_one_line(capsys, extra, needle, monkeypatch):
    monkeypatch.setattr(bench, "benchmark_models", lambda *a, **k: pytest.fail("benchmarked despite a bad flag"))
    args = ["--models", "resnet18_v1", "--device", "cpu", *extra]
    rc = bench.main(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert_one_line(rc, lines, needle)


CLI_CASES = [
    (["bogus"], "unknown command"),
    (["config"], "{show,schema}"),
    (["config", "show", "--experiment", "nope"], "--experiment: unknown experiment"),
    (["config", "schema", "--of", "bogus"], "--of"),
    (["config", "schema", "--out", "/"], "--out"),
]


@pytest.mark.parametrize("argv, needle", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_bad_cli_subcommand_is_one_line(repo_root, capsys, argv, needle, monkeypatch):
    monkeypatch.chdir(repo_root)
    try:
        rc = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert_one_line(rc, lines, needle)


def test_the_table_covers_at_least_80_bad_values():
    total = (len(EXPERIMENT_CASES) + len(PARAMS_CASES) + len(RAW_PARAMS_CASES) + len(TRAIN_CASES)
             + len(BENCH_CASES) + len(CLI_CASES))
    assert total >= 80, total


class _nullcontext:
    value = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---- resolution, defaults and sources ----------------------------------------------------------


def resolve(experiment=GOOD_EXPERIMENT, tmp_path=None, **sweep_overrides) -> cfg.Resolved:
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(experiment))
    params = cfg.Params.model_validate({"sweep": {"experiment": "e", **sweep_overrides}})
    return cfg.resolve_experiment(params, tmp_path)


def test_train_recipe_flag_resolves_the_recipes_epochs(prepared_digits):
    args = train_cli.parse_args(["--model", "resnet20_v1", "--recipe", "he2016_cifar",
                             "--prepared-dir", str(prepared_digits)])
    cell = train_cli.cell_from_args(args)
    assert cell.recipe.epochs == 164 and cell.recipe.milestones == [0.5, 0.75]
    args = train_cli.parse_args(["--model", "resnet20_v1", "--recipe", "he2016_cifar", "--epochs", "2",
                             "--prepared-dir", str(prepared_digits)])
    assert train_cli.cell_from_args(args).recipe.epochs == 2


def test_sources_name_default_recipe_file_and_params(tmp_path):
    r = resolve(tmp_path=tmp_path, recipe={"lr": 0.2})
    text = r.show()
    assert 'recipe.lr: 0.2  # params.yaml sweep' in text
    assert 'recipe.epochs: 1  # ' in text and "e.yaml" in text.split("recipe.epochs: 1  # ")[1].splitlines()[0]
    assert 'recipe.momentum: 0.9  # recipe quick' in text
    assert 'runtime.compile: false  # default' in text
    assert 'runtime.amp: "none"  # default on cpu' in text  # unset: the device's default, shown resolved
    gpu = resolve(tmp_path=tmp_path, resources={"gpus_per_trial": 1}).show()
    assert 'runtime.amp: "bf16"  # default on cuda' in gpu and 'runtime.deterministic: false  # default on cuda' in gpu


def test_axis_override_replaces_the_axis_and_units_replace_versions(tmp_path):
    r = resolve(tmp_path=tmp_path, depths=[18, 34], units=list(cfg.UNITS))
    grid = r.experiment.grid
    assert grid.depths == [18, 34] and grid.versions is None and grid.units == list(cfg.UNITS)
    cells = cfg.expand_grid(r.experiment)
    assert [(c.unit, c.version) for c in cells if c.depth == 18 and c.seed == 0] == [
        ("original", "v1"), ("bn_after_add", "v1"), ("relu_before_add", "v1"),
        ("relu_only_preact", "v1"), ("full_preact", "v2")]


def test_cell_ids_stable_label_free_and_config_sensitive(tmp_path):
    a = cfg.expand_grid(resolve(tmp_path=tmp_path).experiment)
    again = cfg.expand_grid(resolve(tmp_path=tmp_path).experiment)
    assert [c.cell_id for c in a] == [c.cell_id for c in again] and len({c.cell_id for c in a}) == 4
    renamed = cfg.expand_grid(resolve(tmp_path=tmp_path).experiment.model_copy(update={"name": "other"}))
    assert [c.cell_id for c in renamed] == [c.cell_id for c in a]
    longer = cfg.expand_grid(resolve(tmp_path=tmp_path, recipe={"epochs": 2}).experiment)
    assert not {c.cell_id for c in longer} & {c.cell_id for c in a}
    other_code = cfg.expand_grid(resolve(tmp_path=tmp_path).experiment, code_fingerprint="x")
    assert not {c.cell_id for c in other_code} & {c.cell_id for c in a}


def test_cell_validated_again_on_arrival_refuses_a_tampered_id(tmp_path):
    (cell, *_) = cfg.expand_grid(resolve(tmp_path=tmp_path).experiment)
    data = cell.to_dict()
    assert cfg.Cell.model_validate(data) == cell
    data["recipe"]["lr"] = 0.5
    with pytest.raises(Exception, match="does not match its config"):
        cfg.Cell.model_validate(data)


def test_cpu_cells_get_fixed_threads(tmp_path):
    exp = _set(GOOD_EXPERIMENT, "resources.cpus_per_trial", 2)
    (c, *_) = cfg.expand_grid(resolve(exp, tmp_path=tmp_path).experiment)
    assert c.runtime.device == "cpu" and c.runtime.threads == 2


# ---- JSON Schema --------------------------------------------------------------------------------


def test_json_schema_validates_shipped_experiments_and_rejects_a_typo(repo_root):
    import jsonschema  # a dev dependency (pyproject.toml): a missing one must fail, not skip
    schema_path = repo_root / "experiments" / "experiment.schema.json"
    committed = json.loads(schema_path.read_text())
    assert committed == cfg.experiment_json_schema(), (
        "experiments/experiment.schema.json is stale: run `resnet-bench config schema "
        "--out experiments/experiment.schema.json`")
    validator = jsonschema.Draft202012Validator(committed)
    names = cfg.available_experiments(repo_root / "experiments")
    assert "smoke" in names
    for name in names:
        path = repo_root / "experiments" / f"{name}.yaml"
        text = path.read_text()
        assert "# yaml-language-server: $schema=experiment.schema.json" in text.splitlines()[0], path
        errors = list(validator.iter_errors(cfg.parse_yaml(text, str(path))))
        assert not errors, (path, [e.message for e in errors])
    typo = cfg.parse_yaml((repo_root / "experiments" / "smoke.yaml").read_text())
    typo["arch"]["widht"] = 8
    assert any("widht" in e.message for e in validator.iter_errors(typo))


def test_shipped_experiments_resolve_and_expand(repo_root):
    params = cfg.load_params(repo_root / "params.yaml")
    for name in cfg.available_experiments(repo_root / "experiments"):
        p = params.model_copy(update={"sweep": params.sweep.model_copy(update={"experiment": name})})
        r = cfg.resolve_experiment(p, repo_root / "experiments", check_datasets=False)
        assert cfg.expand_grid(r.experiment), name


def test_config_show_prints_sources(repo_root, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    assert cli.main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "recipe.momentum: 0.9  # recipe quick" in out and "# experiments/smoke.yaml" in out


def test_python_dash_m_resnet_bench_works(repo_root):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "resnet_bench", "--help"], capture_output=True, text=True,
                          cwd=repo_root, timeout=120)
    assert proc.returncode == 0 and "commands:" in proc.stdout


def test_sync_bn_needs_cuda_workers_and_workers_scale_concurrency():
    from resnet_bench.sweep.progress import trial_slots

    two = _set(_set(GOOD_EXPERIMENT, "resources.workers_per_trial", 2), "arch.sync_bn", True)
    with pytest.raises(cfg.ConfigError, match="SyncBatchNorm has no CPU kernel"):
        cfg.resolve_layers("e", [cfg.Layer("e.yaml", two)], cfg.Params(), check_datasets=False)
    # 8 GPUs, 16 CPUs: 4 one-GPU trials of 2 workers each, CPUs counted per worker
    res = cfg.Resources(cpus_per_trial=2, gpus_per_trial=2, workers_per_trial=2)
    assert trial_slots(res, {"CPU": 16, "GPU": 8}) == 4
    assert trial_slots(res, {"CPU": 6, "GPU": 8}) == 1
