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
.PHONY: help setup app lab test quick fonts model slides slides-if-node lint clean colab-setup \
	colab-test screenshot mutate

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv with torch and the course (idempotent)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

app: setup ## serve the Gradio UI with the bundled model on http://$(HOST):$(PORT)
	$(BIN)/python -m lab_code.serving app --host $(HOST) --port $(PORT)

lab: setup ## open the lessons in JupyterLab
	$(BIN)/jupyter lab notebooks/

# A notebook cell may run as long as a whole notebook may (tests/conftest.py's NOTEBOOK_LIMIT_S).
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=120

test: setup slides-if-node ## everything CI runs: the tests, every notebook and solution, the slides
	$(BIN)/python -m pytest tests notebooks solutions $(NBVAL) --durations=25

quick: setup ## the fast tests only: no notebooks, no slow or browser tests (about 9 minutes)
	$(BIN)/python -m pytest tests -m "not slow and not browser" -q

# The slides need Node.js; a learner without it still gets every other test. Under CI=true they
# are required: the build runs, and fails without Node.
slides-if-node: setup
	@if [ "$$CI" = true ] || { command -v node && command -v npm; } >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory slides; \
	else \
	    echo "Slides skipped: Node.js and npm are not installed (install them, then run make slides)."; \
	fi

# Training fonts: Debian packages (as root). Without apt, training falls back to matplotlib's
# fonts with a warning; install similar font files into ~/.local/share/fonts or /usr/share/fonts.
FONT_PACKAGES := fonts-urw-base35 fonts-texgyre fonts-dejavu-core fonts-roboto \
	fonts-freefont-ttf fonts-linuxlibertine fonts-ebgaramond fonts-go fonts-hack \
	fonts-jetbrains-mono fonts-firacode fonts-comfortaa fonts-dosis fonts-cabin fonts-karla \
	fonts-inter fonts-league-spartan fonts-b612 fonts-sil-andika fonts-sil-gentium \
	fonts-sil-charis fonts-courier-prime fonts-anonymous-pro fonts-clear-sans \
	fonts-crosextra-caladea fonts-adf-accanthis fonts-adf-gillius fonts-adf-universalis \
	fonts-croscore fonts-oxygen fonts-lmodern fonts-noto-mono

fonts: ## install the training font packages (Debian/Ubuntu, needs root: sudo make fonts)
	@command -v apt-get >/dev/null || { echo "error: no apt-get here: install the packages \
	listed in FONT_PACKAGES (or similar .ttf/.otf files) by hand, or train on matplotlib's \
	fonts only."; exit 1; }
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	  --no-install-recommends $(FONT_PACKAGES)

RUN_DIR ?= runs/recognizer
# W&B writes its run, cache and config folders inside the run folder, never in $$HOME.
WANDB_ENV = WANDB_DIR=$(RUN_DIR) WANDB_CACHE_DIR=$(RUN_DIR)/wandb-cache \
	WANDB_CONFIG_DIR=$(RUN_DIR)/wandb-config WANDB_DATA_DIR=$(RUN_DIR)/wandb-data

model: setup fonts ## retrain on many fonts, stage with lineage and bundle it (about an hour on 2 CPU cores)
	mkdir -p $(RUN_DIR)
	$(WANDB_ENV) $(BIN)/python -m lab_code.training train --out $(RUN_DIR) --wandb offline
	$(WANDB_ENV) $(BIN)/python -m lab_code.training stage_model --checkpoint $(RUN_DIR)/checkpoint.pt \
	  --bundle --wandb offline

# A Colab-like environment: Colab's Python, IPython, ipykernel, pytest, gradio and an older torch.
# Its venv lives where COLAB_VENV says (.ci/run keeps it outside the checkout, so a fresh clone on
# the same machine reuses it); torch 2.11 on Python 3.13 is a ~3 GB CUDA build from PyPI.
COLAB_PYTHON ?= $(shell tools/find_python.sh 3.13 3.12)
COLAB_VENV ?= .venv-colab
export COLAB_VENV := $(abspath $(COLAB_VENV))
COLAB_TORCH ?= torch==2.11.0
COLAB_PINS ?= ipython==7.34.0 ipykernel==6.17.1 pytest==8.4.2 gradio==6.24.0 numpy==2.1.3 \
	wandb==0.28.1 "nbval>=0.11" "nbformat>=5.9" "packaging>=23" "pyyaml>=6" "pytest-timeout>=2.3"
# The stamp is named for what it installed (pyproject.toml and the pins), not for file times, so
# a fresh clone on the same machine finds it and installs nothing.
COLAB_HASH := $(shell { cat pyproject.toml; echo '$(COLAB_TORCH) $(COLAB_PINS)'; } \
	| md5sum | cut -c1-12)
COLAB_STAMP := $(COLAB_VENV)/.installed-$(COLAB_HASH)

colab-setup: $(COLAB_STAMP) ## create the Colab-like venv (Python 3.13, IPython 7.34, torch 2.11)
	@# a venv shared by several checkouts: point its lab_code at this one (-P: Python must not
	@# find ./lab_code in the working folder, which would pass even when the install is stale)
	$(COLAB_VENV)/bin/python -P -c "import lab_code, sys; \
	    sys.exit(lab_code.__file__ != '$(abspath lab_code)/__init__.py')" 2>/dev/null || \
	    $(COLAB_VENV)/bin/python -m pip install -q --no-deps -e .

$(COLAB_STAMP):
	@test -n "$(COLAB_PYTHON)" || { echo "error: no Python 3.13 or 3.12 found (PATH, pyenv);" \
	    "install one or set COLAB_PYTHON=/path/to/python3.13." >&2; exit 1; }
	test -x $(COLAB_VENV)/bin/python || $(COLAB_PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install -q --upgrade pip
	$(COLAB_VENV)/bin/python -c "import torch" 2>/dev/null || \
	    $(COLAB_VENV)/bin/python -m pip install -q "$(COLAB_TORCH)"
	$(COLAB_VENV)/bin/python -m pip install -q "$(COLAB_TORCH)" -e ".[course]" $(COLAB_PINS)
	rm -f $(COLAB_VENV)/.installed-*
	touch $(COLAB_STAMP)

colab-test: colab-setup ## run every notebook and solution with nbval in the Colab-like venv
	PATH=$(COLAB_VENV)/bin:$$PATH $(COLAB_VENV)/bin/python -m pytest -p no:cacheprovider \
	    notebooks solutions $(NBVAL)

mutate: setup ## break each guarded property on purpose and check a test fails (tools/mutate.py)
	$(BIN)/python tools/mutate.py

screenshot: setup ## retake notebooks/img/app.png: the running UI in headless Chromium
	$(BIN)/python tools/screenshot.py

slides: setup ## build slides/*.md into self-contained HTML in build/slides/
	$(BIN)/python tools/slides.py --out build/slides

lint: setup ## ruff
	$(BIN)/ruff check lab_code tests tools profiling

clean: ## remove build outputs (keeps .venv)
	rm -rf build runs model_registry wandb .pytest_cache
