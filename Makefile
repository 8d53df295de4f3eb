# Set-up for a fresh machine: `make demo` builds the demo loom, `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench cg clean consumers

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,demo]'
	# the public label tables torchxrayvision ships (NIH, RSNA, SIIM RLE, CheXpert): the reader tests' real layouts;
	# --no-deps: its torchvision dependency must stay out (the tests read its data files, never import it)
	$(BIN)/pip install --quiet --no-deps torchxrayvision==1.5.7
	# nnU-Net's network classes for `propose --method nnunet`; --no-deps for the same reason (timm -> torchvision)
	$(BIN)/pip install --quiet --no-deps dynamic-network-architectures==0.4.4
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo/build_demo.py demo

test: $(STAMP)
	$(BIN)/python -m pytest tests

# the trainers' own code for tests/test_trainers.py (skipped without), each in a venv of its own: open_clip needs
# torchvision, which must stay out of .venv (torch 2.14.1 and torchvision 0.29.1: a CUDA build, several GB)
OPEN_CLIP_VENV ?= /tmp/venv-open_clip
SWIFT_VENV ?= /tmp/venv-swift
# LLaMA-Factory's own code beside .venv's (tests/test_cg_mllm.py reads its arguments and data through it): no deps,
# it would pin another transformers
LLAMAFACTORY_SITE ?= /tmp/llamafactory-site
consumers: $(STAMP)
	test -x $(OPEN_CLIP_VENV)/bin/python || $(PY) -m venv $(OPEN_CLIP_VENV)
	$(OPEN_CLIP_VENV)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1 'open_clip_torch[training]==3.3.0'
	test -x $(SWIFT_VENV)/bin/python || $(PY) -m venv $(SWIFT_VENV)
	$(SWIFT_VENV)/bin/python -m pip install --quiet torch==2.13.0 ms-swift==4.6.0
	$(SWIFT_VENV)/bin/python -m pip install --quiet --no-deps --target $(SWIFT_VENV)/ms-swift-3 ms-swift==3.12.6
	$(BIN)/pip install --quiet --no-deps --target $(LLAMAFACTORY_SITE) llamafactory==0.9.5 omegaconf==2.3.0 \
		antlr4-python3-runtime==4.9.3

cg: $(STAMP)
	PYTHON=$(BIN)/python examples/cg/run.sh cg-world

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/readers.py
	$(BIN)/python benchmarks/export.py
	$(BIN)/python benchmarks/stream.py
	$(BIN)/python benchmarks/pmc.py
	$(BIN)/python benchmarks/dedup.py
	$(BIN)/python benchmarks/burned_in.py
	$(BIN)/python benchmarks/propose.py
	$(BIN)/python benchmarks/propose_throughput.py --n 10000
	$(BIN)/python benchmarks/eval.py
	$(BIN)/python benchmarks/answers.py
	$(BIN)/python benchmarks/zeroshot.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/publish.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/cores.py --n 4000
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf demo cg-world .pytest_cache
