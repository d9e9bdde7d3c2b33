# `make repro`: set up .venv if needed and run the pipeline. `make test`: the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned no higher than the builds this project is tested with.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: install dev repro test exp-show qemu-user clean

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

# qemu-x86_64 (Debian/Ubuntu package qemu-user; TCG emulates AVX2 from QEMU 7.2) lets
# tests/test_numeric_pin.py train under an emulated Intel CPU; without it that test skips.
# Installs only as root or with password-less sudo; otherwise says so and goes on.
qemu-user:
	@if command -v qemu-x86_64 >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "qemu-user: no apt-get here; the emulated-CPU test will skip"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "qemu-user: not root and no password-less sudo; the emulated-CPU test will skip"; exit 0; fi; \
	($$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q qemu-user) \
	  || echo "qemu-user: apt-get failed; the emulated-CPU test will skip"

clean:
	rm -rf data/prepared results/cells results/checkpoints scratch
