# redsift: the two commands of the README's quick start.
#   make demo   create .venv, install redsift, run the main job on an embedded example
#   make test   create/update .venv, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch on this workplace's disk; a bare `torch` would fetch CUDA.
TORCH_PIN ?= torch==2.13.0
DEMO_DIR ?= demo_output

.PHONY: demo test venv bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

test: venv
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: venv
	$(BIN)/redsift demo -o $(DEMO_DIR)

bench: venv
	$(BIN)/python benchmarks/bench_io.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build src/*.egg-info
