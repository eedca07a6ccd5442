# mel: the two commands in the README are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mel-installed

.PHONY: demo test setup man bench clean

# Set up a virtual environment with mel and its test extras (torch CPU build first,
# pinned, so nothing drags in CUDA wheels).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(STAMP)

# The quickstart: default model -> label index of the sample KB -> linked sample corpus
# -> recall table on the sample evaluation set. A second run reuses what exists.
DEMO := examples/out
MEL := $(BIN)/mel

demo: $(DEMO)/index-labels/manifest.json
	$(MEL) link examples/corpus.jsonl --index $(DEMO)/index-labels -o $(DEMO)/linked.jsonl
	$(MEL) eval mewsli9 examples/mewsli9-sample --index $(DEMO)/index-labels --method labels \
		--report $(DEMO)/eval-report.json

# Built once; rebuilt only when the sample KB changes (the model is built on first use).
$(DEMO)/index-labels/manifest.json: examples/kb.jsonl $(STAMP)
	$(MEL) model default
	$(MEL) index build --kb examples/kb.jsonl --kinds label -o $(DEMO)/index-labels --force

test: $(STAMP)
	$(BIN)/python -m pytest -q

man: $(STAMP)
	$(BIN)/python -m mel_cli.manpages man

bench: $(STAMP)
	$(BIN)/python bench/bench_encoder.py

clean:
	rm -rf $(VENV) build *.egg-info
