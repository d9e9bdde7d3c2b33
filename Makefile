# `make repro`: set up .venv if needed and run the pipeline. `make test`: the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned no higher than the builds this project is tested with.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: install dev repro test exp-show clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e . $(TORCH)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]" $(TORCH)
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.installed-dev

repro: install
	@test -d .dvc || (echo "no .dvc here: run from the repository root" && exit 1)
	PATH="$(abspath $(BIN)):$$PATH" dvc repro

test: dev
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

# `dvc exp show` narrowed to what compares experiments (fits 120 columns); ARGS go to dvc, e.g. ARGS=--csv
exp-show: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m resnet_bench exp-show $(ARGS)

clean:
	rm -rf data/prepared results/cells results/checkpoints scratch
