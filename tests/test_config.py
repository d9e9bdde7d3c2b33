"""Config loading, validation (one clear error before any work) and grid expansion."""

import pytest

from resnet_bench import config as cfg

MODELS = [f"resnet{d}_{v}" for d in (18, 34, 50, 101, 152, 20, 110, 164) for v in ("v1", "v2")]


def experiment(**grid):
    exp = cfg.deep_merge(cfg.DEFAULT_EXPERIMENT, {"grid": grid})
    exp["name"] = "t"
    return exp


def expand(exp, datasets=("digits",)):
    return cfg.expand_grid(exp, valid_datasets=list(datasets), valid_models=MODELS)


def test_grid_is_the_product_of_axes_with_unique_stable_ids():
    cells = expand(experiment(versions=["v1", "v2"], depths=[18, 50], seeds=[0, 1]))
    assert len(cells) == 8
    assert {c["model"] for c in cells} == {"resnet18_v1", "resnet18_v2", "resnet50_v1", "resnet50_v2"}
    assert len({c["cell_id"] for c in cells}) == 8
    again = expand(experiment(versions=["v1", "v2"], depths=[18, 50], seeds=[0, 1]))
    assert [c["cell_id"] for c in cells] == [c["cell_id"] for c in again]


def test_cell_id_ignores_experiment_label_but_not_recipe():
    exp = experiment(versions=["v1"], depths=[18])
    (a,) = expand(exp)
    exp["name"] = "other"
    (b,) = expand(exp)
    assert a["cell_id"] == b["cell_id"]
    exp["recipe"] = {"name": "quick", "epochs": 7}
    (c,) = expand(exp)
    assert c["cell_id"] != a["cell_id"]


def test_growing_the_grid_keeps_existing_ids():
    small = {c["cell_id"] for c in expand(experiment(versions=["v1", "v2"], depths=[18]))}
    big = {c["cell_id"] for c in expand(experiment(versions=["v1", "v2"], depths=[18, 34]))}
    assert small < big and len(big - small) == 2


@pytest.mark.parametrize("grid, bad, valid", [
    ({"datasets": ["imagenet21k"]}, "'imagenet21k'", "digits"),
    ({"versions": ["v3"]}, "'v3'", "v1, v2"),
    ({"depths": [19]}, "19", "18, 20, 34"),
    ({"units": ["bn_everywhere"], "versions": None}, "'bn_everywhere'", "full_preact"),
    ({"models": ["resnet19_v1"]}, "'resnet19_v1'", "resnet18_v1"),
])
def test_bad_values_name_the_value_and_the_valid_choices(grid, bad, valid):
    with pytest.raises(cfg.ConfigError) as err:
        expand(experiment(**grid))
    msg = str(err.value)
    assert bad in msg and valid in msg and "\n" not in msg


def test_units_axis_maps_to_versions():
    cells = expand(experiment(units=list(cfg.UNITS), versions=None, depths=[110]))
    assert [(c["unit"], c["version"]) for c in cells] == [
        ("original", "v1"), ("bn_after_add", "v1"), ("relu_before_add", "v1"),
        ("relu_only_preact", "v1"), ("full_preact", "v2")]


def test_recipe_resolution_and_errors():
    r = cfg.resolve_recipe({"name": "he2016_cifar", "epochs": 2})
    assert r["lr"] == 0.1 and r["milestones"] == [0.5, 0.75] and r["epochs"] == 2
    with pytest.raises(cfg.ConfigError, match="unknown recipe 'adamw'.*he2016_cifar"):
        cfg.resolve_recipe({"name": "adamw"})
    with pytest.raises(cfg.ConfigError, match="unknown recipe key.*lr_max"):
        cfg.resolve_recipe({"name": "quick", "lr_max": 1})
    with pytest.raises(cfg.ConfigError, match="schedule 'poly'"):
        cfg.resolve_recipe({"name": "quick", "schedule": "poly"})


def test_params_overrides_apply(tmp_path):
    (tmp_path / "e.yaml").write_text("grid: {versions: [v1], depths: [18], datasets: [digits]}\n"
                                     "recipe: {name: quick, epochs: 5}\n")
    exp = cfg.load_experiment({"experiment": "e", "depths": [18, 34], "seeds": None,
                               "recipe": {"epochs": 1}, "ray_address": None}, tmp_path)
    assert exp["grid"]["depths"] == [18, 34] and exp["recipe"]["epochs"] == 1
    with pytest.raises(cfg.ConfigError, match="unknown experiment 'nope' in sweep.experiment; valid: e"):
        cfg.load_experiment({"experiment": "nope"}, tmp_path)
    with pytest.raises(cfg.ConfigError, match="unknown key.*depthz"):
        cfg.load_experiment({"experiment": "e", "depthz": [1]}, tmp_path)


def test_cpu_cells_get_fixed_threads_and_float32():
    exp = experiment(versions=["v1"], depths=[18])
    exp["runtime"]["amp"] = "bf16"
    exp["resources"]["cpus_per_trial"] = 2
    (c,) = expand(exp)
    assert c["runtime"]["device"] == "cpu" and c["runtime"]["threads"] == 2 and c["runtime"]["amp"] == "none"
    exp["resources"]["gpus_per_trial"] = 0.5
    (g,) = expand(exp)
    assert g["runtime"]["device"] == "cuda"


def test_shipped_experiments_expand(repo_root):
    """Every experiments/*.yaml validates against the full model list."""
    from resnet_bench.models import available_models

    names = cfg.available_experiments(repo_root / "experiments")
    assert "smoke" in names
    for name in names:
        exp = cfg.load_experiment({"experiment": name}, repo_root / "experiments")
        cells = cfg.expand_grid(exp, valid_datasets=exp["grid"]["datasets"], valid_models=available_models())
        assert cells, name
