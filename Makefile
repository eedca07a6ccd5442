# mel: the two commands in the README are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# What each target needs installed: linking needs the CPU runtime only; the tests also torch
# (CPU build, pinned first so nothing drags in CUDA wheels), transformers, the linters and Ray Data
# (the mel[ray] engine's tests run in CI).
DEMO_STAMP := $(VENV)/.mel-cpu
TEST_STAMP := $(VENV)/.mel-test

.PHONY: demo test test-fast lint setup man bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[cpu]'
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[cpu,test,ray]'
	touch $@ $(DEMO_STAMP)

setup: $(TEST_STAMP)

# The quickstart: default model -> linker index of the sample KB -> linked sample corpus
# -> recall table on the sample evaluation set. A second run reuses what exists.
DEMO := examples/out
MEL := $(BIN)/mel

demo: $(DEMO)/index/manifest.json
	$(MEL) link examples/corpus.jsonl --index $(DEMO)/index -o $(DEMO)/linked.jsonl
	$(MEL) eval mewsli9 examples/mewsli9-sample --index $(DEMO)/index --report $(DEMO)/eval-report.json

# Built once; rebuilt only when the sample KB changes (the model is built on first use).
$(DEMO)/index/manifest.json: examples/kb.jsonl $(DEMO_STAMP)
	$(MEL) model default
	$(MEL) index build --kb examples/kb.jsonl -o $(DEMO)/index --force

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m mypy

man: $(DEMO_STAMP)
	$(BIN)/python -m mel.cli.manpages man

bench: $(TEST_STAMP)
	$(BIN)/python bench/bench_encoder.py

clean:
	rm -rf $(VENV) build *.egg-info
