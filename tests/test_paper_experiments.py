"""The paper experiments (experiments/cifar10-he2015, cifar10-units, cifar-he2016) name
networks the model zoo builds, and their `paper:` blocks cover exactly their grids.

Checked here against resnet_bench.models only (the typed schema in config.py checks the
rest): every paper result is a registered model whose unit agrees with its version, with
the experiment's variant; the grid trains exactly the (model, unit, dataset) triples the
paper printed; the printed parameter counts of He et al. 2015 Table 6 hold for the
networks the experiment builds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from resnet_bench.models import build_model, count_params, resolve_arch
from resnet_bench.models.cli import params_millions
from resnet_bench.vocab import VERSION_UNIT

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PAPER_EXPERIMENTS = ("cifar10-he2015", "cifar10-units", "cifar-he2016")
PAPER_KEYS = {"citation", "statistic", "metric", "dataset", "variant", "recipe", "results"}
RESULT_KEYS = {"model", "unit", "dataset", "value"}


def load(name: str) -> dict:
    return yaml.safe_load((EXPERIMENTS / f"{name}.yaml").read_text())


def grid_triples(exp: dict) -> set[tuple[str, str, str]]:
    """(model, unit, dataset) of every grid cell (seeds aside), as config.py expands them."""
    grid = exp["grid"]
    if grid.get("units"):
        pairs = [("v2" if u == "full_preact" else "v1", u) for u in grid["units"]]
    else:
        pairs = [(v, VERSION_UNIT[v]) for v in grid["versions"]]
    return {(f"resnet{d}_{v}", u, ds) for d in grid["depths"] for v, u in pairs for ds in grid["datasets"]}


@pytest.mark.parametrize("name", PAPER_EXPERIMENTS)
def test_paper_block_shape_and_consistency(name):
    exp = load(name)
    paper = exp["paper"]
    assert set(paper) == PAPER_KEYS
    assert paper["metric"] == "test_error_pct"
    assert paper["variant"] == exp["arch"]["variant"] == "paper"
    assert paper["recipe"] == exp["recipe"]["name"]
    assert paper["dataset"] in exp["grid"]["datasets"]
    assert paper["citation"].startswith("K. He, X. Zhang, S. Ren, J. Sun.")
    assert "run" in paper["statistic"]
    for result in paper["results"]:
        assert set(result) == RESULT_KEYS
        # a registered model whose unit agrees with its version (raises otherwise)
        resolve_arch(result["model"], variant=paper["variant"], unit=result["unit"])
        assert isinstance(result["value"], float) and 0 < result["value"] < 100
    printed = [(r["model"], r["unit"], r["dataset"]) for r in paper["results"]]
    assert len(printed) == len(set(printed)), "a result is listed twice"
    assert set(printed) == grid_triples(exp)
    for key in ("shortcut", "bottleneck_stride"):
        assert key in exp["arch"]  # explicit, even when null (the variant's default)


def test_he2015_experiment_builds_table6_networks():
    # He et al. 2015 Table 6's "# params" column, for the networks this experiment trains.
    exp = load("cifar10-he2015")
    table6 = {"resnet20_v1": "0.27", "resnet32_v1": "0.46", "resnet44_v1": "0.66", "resnet56_v1": "0.85",
              "resnet110_v1": "1.7"}
    assert {r["model"] for r in exp["paper"]["results"]} == set(table6)
    for model, printed in table6.items():
        with torch.device("meta"):
            net = build_model(model, num_classes=10, stem=exp["arch"]["stem"], variant=exp["arch"]["variant"],
                              shortcut=exp["arch"]["shortcut"], bottleneck_stride=exp["arch"]["bottleneck_stride"])
        assert params_millions(count_params(net)) == printed, model
