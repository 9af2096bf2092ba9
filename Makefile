# tvconv-ablations: every command a user needs. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-done
PYTEST_ARGS ?=
PRESET ?= quick
JOBS ?= 2
RESULTS ?= results
OVERRIDES ?=
DATA_ROOT ?=
STUDY = DATA_ROOT=$(DATA_ROOT) $(PY) -m studies run --preset $(PRESET) --jobs $(JOBS) \
	--results $(RESULTS)

.DEFAULT_GOAL := help
.PHONY: help setup test lint format clean data-preview studies ablation-aug ablation-init \
	ablation-weightgen ablation-depth ablations tradeoff profile wandb-sync

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# The stamp records the torch requirement it was made with: changing TORCH (e.g. a CUDA build,
# `make setup TORCH="torch==2.13.0 --index-url ..."`) or pyproject.toml reinstalls; otherwise
# setup is a no-op.
setup:  ## create .venv and install torch (TORCH=...) and the package (idempotent)
	@if [ ! -x $(PY) ] || [ ! -f $(SETUP_STAMP) ] || [ pyproject.toml -nt $(SETUP_STAMP) ] \
		|| [ "$$(cat $(SETUP_STAMP))" != "$(TORCH)" ]; then \
		set -e; \
		echo "setup: creating $(VENV) and installing $(TORCH) + tvconv-ablations[dev]"; \
		[ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
		$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH); \
		$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"; \
		echo "$(TORCH)" > $(SETUP_STAMP); \
	fi

test: setup  ## run the test suite (installs first if needed)
	WANDB_MODE=disabled $(PY) -m pytest $(PYTEST_ARGS)

lint: setup  ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

studies: setup  ## list the studies, presets and run counts
	$(PY) -m studies list --results $(RESULTS)

ablation-aug: setup  ## question 1: robustness to augmentation (PRESET, JOBS, DATA_ROOT, OVERRIDES)
	$(STUDY) aug $(OVERRIDES)

ablation-init: setup  ## question 2: affinity-map initialisation
	$(STUDY) init $(OVERRIDES)

ablation-weightgen: setup  ## question 3: weight-generator width x depth
	$(STUDY) weightgen $(OVERRIDES)

ablation-depth: setup  ## question 4: where to insert TVConv
	$(STUDY) depth $(OVERRIDES)

ablations: ablation-aug ablation-init ablation-weightgen ablation-depth  ## all four questions

tradeoff: setup  ## accuracy vs MACs / params / latency across widths
	$(STUDY) tradeoff $(OVERRIDES)

profile: setup  ## MACs, params, latency and memory of every model (and the layer grid)
	$(STUDY) profile $(OVERRIDES)

wandb-sync: setup  ## upload the offline W&B runs (results/wandb)
	$(VENV)/bin/wandb sync --sync-all $(RESULTS)/wandb/wandb

data-preview: setup  ## write docs/data_samples.png and print the layout diagnostic
	$(PY) -m tvconv.data --out docs/data_samples.png

clean:  ## remove the virtualenv and caches (results are kept)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
