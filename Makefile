# The commands a person types. Every target that needs the environment makes it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned here, not in the package, so Colab and conda keep the torch they have.
TORCH_SPEC ?= torch==2.13.0
# Notebooks run `!python -m lab_code...`: put the environment's python first on PATH for them.
export PATH := $(abspath $(BIN)):$(PATH)
HOST ?= 127.0.0.1
PORT ?= 7860

.DEFAULT_GOAL := help
.PHONY: help setup app lab test model slides lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv with torch and the course (idempotent)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

app: setup ## serve the Gradio UI with the bundled model on http://$(HOST):$(PORT)
	$(BIN)/python -m lab_code.app --host $(HOST) --port $(PORT)

lab: setup ## open the lessons in JupyterLab
	$(BIN)/jupyter lab notebooks/

test: setup slides ## run the tests, every notebook and solution (nbval), and build the slides
	$(BIN)/python -m pytest tests notebooks solutions --nbval-lax --nbval-current-env

model: setup ## retrain the recognizer, stage it and bundle it into the package (~30 min on CPU)
	$(BIN)/python -m lab_code.train --out runs/recognizer
	$(BIN)/python -m lab_code.stage_model --checkpoint runs/recognizer/checkpoint.pt --bundle

slides: setup ## build slides/*.md into self-contained HTML in build/slides/
	$(BIN)/python tools/slides.py --out build/slides

lint: setup ## ruff
	$(BIN)/ruff check lab_code tests tools profiling

clean: ## remove build outputs (keeps .venv)
	rm -rf build runs model_registry wandb .pytest_cache
