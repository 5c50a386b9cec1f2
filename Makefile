# Two entry points on a fresh machine (Python 3.11):
#   make repro   install into .venv, then run the whole pipeline (dvc repro, default profile)
#   make test    install into .venv (with test extras), then run the test suite
# and, for the installs themselves (resolver dry runs, metadata only, about a minute; CI runs it):
#   make resolve    the GPU set (pip install -e ".[gpu]" -c constraints/gpu.txt) and this CPU install still resolve
#   make lock-gpu   regenerate constraints/gpu.txt after changing pyproject.toml's dependencies
#   make lock-cpu   regenerate constraints/cpu.txt (the CPU install's pins: the committed results' environment)
PY       ?= python3.11
VENV     ?= .venv
BIN      := $(VENV)/bin
# torch 2.14.1 + torchvision 0.29.1 import together (PyPI torchvision fails beside torch 2.13.0). CPU-only users with
# network access can save ~5 GB with TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH_PIP_ARGS ?=
# The resolver for the dry runs (uv reads the same PyPI metadata as pip, in seconds; pip takes minutes).
UV_VERSION ?= 0.13.9

.PHONY: install install-test repro test kernel clean-venv resolve lock-gpu lock-cpu

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 $(TORCH_PIP_ARGS)
	touch $@

# constraints/cpu.txt pins every package: a fresh clone gets the versions the committed results were produced with.
install: $(VENV)/.torch
	$(BIN)/pip install -q -e . -c constraints/cpu.txt

# geoclip (the paper recipe's GeoCLIP teacher; the tests build a tiny one from its classes) pins huggingface-hub<2
# though it only calls snapshot_download: installed without its pins, beside the hub transformers brings.
install-test: $(VENV)/.torch
	$(BIN)/pip install -q -e ".[test]" -c constraints/cpu.txt
	$(BIN)/pip install -q --no-deps "geoclip==1.3.0" "geopy>=2.3,<3" "geographiclib>=2,<3"

# `jupyter lab` from the venv finds this kernel ("Python (globe)") with globe installed.
kernel: install
	$(BIN)/python -m ipykernel install --user --name globe --display-name "Python (globe)"

repro: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: install-test
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

$(BIN)/uv: | $(BIN)/python
	$(BIN)/pip install -q uv==$(UV_VERSION)

resolve: $(BIN)/uv
	$(BIN)/python scripts/check_resolve.py

lock-gpu: $(BIN)/uv
	$(BIN)/python scripts/check_resolve.py --lock

lock-cpu: $(BIN)/uv
	$(BIN)/python scripts/check_resolve.py --lock-cpu

clean-venv:
	rm -rf $(VENV)
