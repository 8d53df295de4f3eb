# Set-up for a fresh machine: `make demo` builds the demo loom, `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench cg clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo/build_demo.py demo

test: $(STAMP)
	$(BIN)/python -m pytest tests

cg: $(STAMP)
	PYTHON=$(BIN)/python examples/cg/run.sh cg-world

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/export.py
	$(BIN)/python benchmarks/stream.py
	$(BIN)/python benchmarks/pmc.py
	$(BIN)/python benchmarks/dedup.py
	$(BIN)/python benchmarks/burned_in.py
	$(BIN)/python benchmarks/eval.py
	$(BIN)/python benchmarks/zeroshot.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/publish.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/cores.py --n 4000
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf demo cg-world .pytest_cache
