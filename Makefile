# `make demo` and `make test` work on a fresh machine: they build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch is pinned here so a fresh machine does not pull several GB of CUDA
# packages; pyproject.toml keeps an open range so GPU users can bring their own build.
TORCH ?= torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: setup demo test bench clean

$(BIN)/raydenoise: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/raydenoise

demo: setup
	$(BIN)/raydenoise demo --out $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) $(DEMO_OUT)
