# tvconv-ablations: every command a user needs. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-done
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup test lint format clean ablation-init data-preview

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

ablation-init: setup  ## affinity-map initialisation study (question 2)
	@echo "ablation-init: the study runner (studies/) is not built yet; see the open issues." >&2
	@exit 2

data-preview: setup  ## write docs/data_samples.png and print the layout diagnostic
	$(PY) -m tvconv.data --out docs/data_samples.png

clean:  ## remove the virtualenv and caches (results are kept)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
