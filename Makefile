# The everyday targets. `make demo` and `make test` work on a fresh machine: they create the
# virtualenv and install what is missing first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall when the dependencies change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PACKAGES := daemon checks remediations

.PHONY: demo demo-deploy test check lint format clean services

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/runbookd demo

# The deploy watch: a good deploy completed, a bad one rolled back against its baseline (~20 s).
demo-deploy: $(STAMP)
	$(BIN)/runbookd demo deploy

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES) tests
	$(BIN)/ruff format --check $(PACKAGES) tests
	$(BIN)/mypy

# Prometheus, monitoring plugins, PostgreSQL and Redis for the integration tests.
services:
	tests/setup-services.sh

# Three workers on two cores: most of the suite waits on sockets and processes, not the CPU
# (578 s serial, 347 s this way, on a loaded 2-core machine).
test: lint services
	$(BIN)/pytest -q -n 3 --dist worksteal

# The unit tests alone (tests/unit: no sockets, no processes, no services), for a quick loop.
check: $(STAMP)
	$(BIN)/pytest -q tests/unit

format: $(STAMP)
	$(BIN)/ruff check --fix $(PACKAGES) tests
	$(BIN)/ruff format $(PACKAGES) tests

# The configuration reference, generated from the config models; tests/unit/test_reference.py
# fails when docs/configuration.md is out of date.
.PHONY: docs
docs: $(STAMP)
	$(BIN)/runbookd config reference > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache state

# Side-by-side benchmarks against real peers on 127.0.0.1 (bench/README.md): quick mode (under
# three minutes) by default; `make bench FULL=1` (or BENCH_MODE=full) for the full sizes.
.PHONY: bench
bench: $(STAMP)
	bench/setup.sh
	$(BIN)/python -m bench $(if $(filter 1 yes true,$(FULL)),--full,)

# The model-based tests, long (tests/unit/test_model_based.py, test_model_replicas.py): SOAK_EXAMPLES
# examples from a random seed, printed first; a failure replays with `make soak SEED=<seed>`
# or with the @reproduce_failure line it prints.
SOAK_EXAMPLES ?= 5000
# Drawn once (:=), so the seed printed is the seed used.
ifndef SEED
SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
.PHONY: soak
soak: $(STAMP)
	@echo "soak: $(SOAK_EXAMPLES) examples, seed $(SEED); replay: make soak SEED=$(SEED)"
	SOAK_EXAMPLES=$(SOAK_EXAMPLES) $(BIN)/pytest -q --timeout=0 --hypothesis-seed=$(SEED) \
		tests/unit/test_model_based.py tests/unit/test_model_replicas.py
