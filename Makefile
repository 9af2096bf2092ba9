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
# key=value overrides given to make directly (`make ablation-init optim.epochs=2`): make reads
# them as variables; every one whose key holds a dot, and task= / seed= / seeds=, goes to the
# runs as OVERRIDES (the runner refuses seed= with a pointer to SEEDS=, as it does in OVERRIDES)
CLI_OVERRIDES := $(foreach a,$(MAKEOVERRIDES),$(if $(or $(findstring .,$(firstword \
	$(subst =, ,$(a)))),$(filter task=% seed=% seeds=%,$(a))),$(a)))
DATA_ROOT ?=
ENTITY ?=
DRY_RUN ?=
SEEDS ?=
CELLS ?=
GPUS ?=
STUDY = $(if $(DATA_ROOT),DATA_ROOT=$(DATA_ROOT) )$(PY) -m studies run --preset $(PRESET) \
	--jobs $(JOBS) --results $(RESULTS) $(if $(SEEDS),--seeds '$(SEEDS)') \
	$(if $(CELLS),--cells '$(CELLS)') $(if $(GPUS),--gpus '$(GPUS)')
ANALYSE = $(PY) -m analysis --preset $(PRESET) --results $(RESULTS)
# Run a study, then render its tables and figures (also after failed runs: the finished ones
# are shown; not after a bad spec, exit code 2). The recipe ends with the runner's exit code
# (make reports it as "Error 1" or "Error 2"), or with the analysis's when every run finished.
# With OVERRIDES="task=fundus" the records are those of the study asked of the fundus task.
define run_and_render
	$(STUDY) $(1) $(OVERRIDES) $(CLI_OVERRIDES); status=$$?; \
	if [ $$status -ne 2 ]; then \
		$(ANALYSE) $(1) $(if $(findstring task=fundus,$(OVERRIDES) $(CLI_OVERRIDES)),--task fundus); \
		rendered=$$?; if [ $$status -eq 0 ]; then status=$$rendered; fi; \
	fi; exit $$status
endef

.DEFAULT_GOAL := help
.PHONY: help setup test lint format clean data-preview studies ablation-aug ablation-init \
	ablation-weightgen ablation-depth ablation-seg ablations convergence tradeoff profile figures \
	bench-kernels bench-loader wandb-sync wandb-views

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

lint: setup  ## ruff check + format check + the import layers (import-linter, pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

studies: setup  ## list the studies, presets and run counts
	$(PY) -m studies list --results $(RESULTS)

ablation-aug: setup  ## question 1: robustness to augmentation (PRESET, JOBS, SEEDS, CELLS, GPUS, DATA_ROOT, OVERRIDES)
	$(call run_and_render,aug)

ablation-init: setup  ## question 2: affinity-map initialisation
	$(call run_and_render,init)

ablation-weightgen: setup  ## question 3: weight-generator width x depth
	$(call run_and_render,weightgen)

ablation-depth: setup  ## question 4: where to insert TVConv
	$(call run_and_render,depth)

ablation-seg: setup  ## segmentation: ASPP variant x held-out fundus domain
	$(call run_and_render,seg)

ablations: ablation-aug ablation-init ablation-weightgen ablation-depth  ## all four questions

convergence: setup  ## the testbed's check: depthwise at the preset's steps and at twice as many
	$(call run_and_render,convergence)

tradeoff: setup  ## accuracy vs MACs / params / latency across widths
	$(call run_and_render,tradeoff)

profile: setup  ## MACs, params, latency and memory of every model (and the layer grid)
	$(call run_and_render,profile)

figures: setup  ## tables + figures of every study with results, Fig. 1, README results block
	$(PY) -m analysis --all --quiet --results $(RESULTS)
	$(PY) -m analysis layout --results $(RESULTS) --readme README.md

bench-kernels: setup  ## TVConv kernels vs depthwise conv per layer shape, and model images/s
	$(PY) benchmarks/kernels.py

bench-loader: setup  ## real-data loader on a generated CASIA-like JPEG tree vs the training step
	$(PY) benchmarks/loader.py

wandb-sync: setup  ## upload the offline W&B runs under RESULTS (DRY_RUN=1: list them only)
	$(PY) -m studies sync --results $(RESULTS) $(if $(DRY_RUN),--dry-run)

wandb-views: setup  ## save a W&B view per study, runs grouped by cell (ENTITY=, PRESET, DRY_RUN=1)
	$(PY) -m studies views --entity "$(ENTITY)" --preset $(PRESET) $(if $(DRY_RUN),--dry-run)

data-preview: setup  ## write docs/data_samples.png and print the layout diagnostic
	$(PY) -m tvconv.data --out docs/data_samples.png

clean:  ## remove the virtualenv and caches (results are kept)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
