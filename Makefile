# `make demo` and `make test` work on a fresh machine: they build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch is pinned here so a fresh machine does not pull several GB of CUDA
# packages; pyproject.toml keeps an open range so GPU users can bring their own build.
TORCH ?= torch==2.13.0
DEMO_OUT ?= demo-out

.PHONY: setup demo test test-fast check bench bench-smoke clean browser

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
# The report page test opens a report in headless Chromium: the system's package and its driver,
# installed here where the system's package manager can (apt-get as root, or with sudo -n).
BROWSER_PKGS := chromium chromium-driver
browser:
	@if command -v chromedriver >/dev/null && { command -v chromium || command -v chromium-browser; } >/dev/null; then :; \
	else \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
		if [ "$$SUDO" != none ] && command -v apt-get >/dev/null; then \
			echo "make test: installing $(BROWSER_PKGS) (apt-get) for the report page test"; \
			$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PKGS) >/dev/null 2>&1 \
			|| { $$SUDO apt-get update -q >/dev/null 2>&1 && \
			     $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PKGS) >/dev/null 2>&1; } \
			|| echo "make test: could not install $(BROWSER_PKGS): the browser test will be skipped (it says why)"; \
		else echo "make test: no Chromium and no apt-get to install it: the browser test will be skipped (it says why)"; fi; \
	fi

# Lint, format, types and the import layers (pyproject.toml configures each).
check: setup
	$(BIN)/ruff check raydenoise tests bench jobs
	$(BIN)/ruff format --check raydenoise tests bench jobs
	$(BIN)/mypy
	$(BIN)/lint-imports

# The quick loop: the checks and the tests that start no Ray, S3 server or subprocess.
test-fast: check
	$(BIN)/python -m pytest -q -m "not slow"

# Two passes: the tests that start Ray clusters of their own (tests/cluster: several `ray
# start` nodes, a node killed on purpose) alone, one at a time, since a loaded machine makes
# Ray's 30 s node registration time out; then every other test on two processes (pytest-xdist,
# a whole file per process so that a module's fixtures are made once): most of their time is
# spent waiting on Ray and subprocesses, so two at once took about two thirds of the time on 2 cores.
# --durations: the slowest tests in every log (the suite's budget is 15 minutes on 2 cores).
SERIAL_TESTS := $(BIN)/python -m pytest -q --durations=10 tests/cluster
PARALLEL_TESTS := $(BIN)/python -m pytest -q --durations=15 -n 2 --dist loadfile --ignore=tests/cluster
# both passes run; the status fails when either failed
TESTS := $(SERIAL_TESTS); a=$$?; $(PARALLEL_TESTS); b=$$?; [ $$a = 0 ] && [ $$b = 0 ]
test: setup browser check
	@if command -v ip >/dev/null && unshare -rn ip link set lo up 2>/dev/null; then \
		echo "make test: running in a private network namespace (loopback only)"; \
		unshare -rn sh -c 'ip link set lo up && { $(TESTS); }'; \
	else \
		$(TESTS); \
	fi

bench: setup
	$(BIN)/python bench/ingest.py

# Every benchmark command at its smallest size (that each still runs; no figures).
bench-smoke: setup
	bench/smoke.sh

clean:
	rm -rf $(VENV) $(DEMO_OUT)
