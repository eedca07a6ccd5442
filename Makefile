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

demo: $(STAMP)
	$(BIN)/mel model default
	printf 'Paris\nParís\nパリ\nباريس\nBerlin\n' | $(BIN)/mel model embed --role mention -o /tmp/mel-demo.npy
	$(BIN)/python -c "import numpy as n; v=n.load('/tmp/mel-demo.npy'); print('cosine similarities:'); print((v@v.T).round(2))"

test: $(STAMP)
	$(BIN)/python -m pytest -q

man: $(STAMP)
	$(BIN)/python -m mel_cli.manpages man

bench: $(STAMP)
	$(BIN)/python bench/bench_encoder.py

clean:
	rm -rf $(VENV) build *.egg-info
