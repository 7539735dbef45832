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

# Where user namespaces are allowed, the suite runs in a private network namespace with only a
# loopback interface: no test can reach any other address. (Ray's servers listen on all
# interfaces and Ray turns 127.0.0.1 into the host's address, so binding alone cannot ensure it.)
test: setup
	@if command -v ip >/dev/null && unshare -rn ip link set lo up 2>/dev/null; then \
		echo "make test: running in a private network namespace (loopback only)"; \
		unshare -rn sh -c 'ip link set lo up && $(BIN)/python -m pytest -q'; \
	else \
		$(BIN)/python -m pytest -q; \
	fi

bench: setup
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) $(DEMO_OUT)
