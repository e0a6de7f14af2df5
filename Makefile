# egresskit: `make run` runs the whole guide on the local backend; `make test` runs every test.
# Both set themselves up first; a fresh clone needs nothing else.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out

# Debian packages the kit drives for real: curl (the guide's client), chromium (looks at the
# rendered report, and runs notebook 3 in JupyterLab, in tests), wrk and nginx (the data-plane
# benchmark).
TEST_DEBS  := curl chromium
BENCH_DEBS := wrk nginx

.PHONY: setup sysdeps bench-sysdeps run test lint lab bench fuzz notebooks cluster cluster-down clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changes, so a second `make test` starts at once.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing egresskit and its dev tools into $(VENV) ..."
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
		| grep -v '^WARNING: Location' || true
	@$(BIN)/python -c "import egresskit, pytest, mypy" # fail here if the install did not work
	@touch $(STAMP)

sysdeps:
	@$(PYTHON) egresskit/sysdeps.py $(TEST_DEBS)

bench-sysdeps:
	@$(PYTHON) egresskit/sysdeps.py $(BENCH_DEBS)

run: setup sysdeps
	$(BIN)/egresskit run --out $(OUT)

lint: setup
	$(BIN)/ruff check egresskit tests benchmarks notebooks
	$(BIN)/ruff format --check egresskit tests benchmarks notebooks
	$(BIN)/mypy

test: setup sysdeps lint
	$(BIN)/pytest

# The kernel goes into the venv (--sys-prefix) and JUPYTER_PATH puts the venv first, so a
# kernel named egresskit registered elsewhere (another clone, --user) is not picked up.
# JupyterLab refuses to run as root without --allow-root.
lab: setup
	@$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/python -m pip install -q -e '.[lab]'
	$(BIN)/python -m ipykernel install --sys-prefix --name egresskit --display-name "egresskit" >/dev/null
	JUPYTER_PATH=$(abspath $(VENV))/share/jupyter $(BIN)/jupyter lab notebooks/ \
		$(if $(filter 0,$(shell id -u)),--allow-root)

bench: setup bench-sysdeps
	$(BIN)/python -m benchmarks

# Request smuggling and ClientHello fuzzers, run long (issue 11): prints cases, crashes,
# hangs and requests that reached an upstream unjudged; fails unless the last three are 0.
fuzz: setup
	$(BIN)/python -m tests.fuzz

# Rewrite the notebooks from notebooks/build.py and save them executed, with outputs.
notebooks: setup
	$(BIN)/python notebooks/build.py
	$(BIN)/python notebooks/build_grpc.py
	$(BIN)/python -m egresskit.runner

cluster: setup
	$(BIN)/egresskit cluster up

cluster-down: setup
	$(BIN)/egresskit cluster down

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
