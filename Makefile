# qrepro: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_DEBIAN := /usr/share/datasets/fashion-mnist
SMOKE ?= 0
STUDY ?= $(if $(filter 1,$(SMOKE)),smoke,full)
STUDY_DIR ?= results
export PYTHONUNBUFFERED := 1
export MPLBACKEND := Agg

.DEFAULT_GOAL := help
.PHONY: help setup data browser test test-fast reproduce readme teach study status benchmark gpu-check clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's|$$(STUDY_DIR)|$(STUDY_DIR)|g' \
		| awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

setup: $(STAMP) data ## create .venv with the pinned packages and make Fashion-MNIST available (idempotent)

# $(call apt_install,CHECK,PACKAGES,WHY,OTHERWISE): unless the shell test CHECK holds, install PACKAGES with apt-get
# (sudo unless root), or print OTHERWISE where apt-get is missing
define apt_install
	@if $(1); then \
		true; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "installing $(2) with apt-get ($(3))"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(2) >/dev/null; \
	else \
		echo "$(4)"; \
	fi
endef

data: ## make Fashion-MNIST available (Debian package dataset-fashion-mnist, where apt-get exists)
	$(call apt_install,[ -f data/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -f $(FASHION_DEBIAN)/train-images-idx3-ubyte.gz ],dataset-fashion-mnist,Fashion-MNIST,Fashion-MNIST not found and apt-get is missing: copy the IDX files into data/fashion-mnist/)

browser: ## install Chromium and its driver for the JupyterLab browser test (apt-get, where it exists)
	$(call apt_install,command -v chromium >/dev/null && command -v chromedriver >/dev/null,chromium chromium-driver,for tests/test_browser.py,Chromium not found and apt-get is missing: tests/test_browser.py will be skipped)

test: setup browser ## run the test suite (installs what it needs first)
	$(PY) -m pytest -q -n auto --dist loadfile

test-fast: setup ## the test suite without the smoke study and notebooks
	$(PY) -m pytest -q -m "not slow"

study: setup ## build the study's artifacts into $(STUDY_DIR) (STUDY=name: qrepro/presets/<name>.toml; SMOKE=1: tiny; ONLY='id pattern ...': those and what they need)
	$(PY) -m qrepro study --preset $(STUDY) --results $(STUDY_DIR) $(if $(ONLY),--only $(ONLY))

status: setup ## one line per artifact of the study: fresh, legacy, stale (why), missing, corrupt (exit 1 unless all usable)
	$(PY) -m qrepro status --preset $(STUDY) --results $(STUDY_DIR)

reproduce: setup ## check the cache (status), then regenerate every figure from it (the main job)
	$(PY) -m qrepro reproduce --preset $(STUDY) --results $(STUDY_DIR)

readme: setup ## copy the study's tables into the marked table blocks of README.md and docs/ (the prose stays hand-written)
	$(PY) -m qrepro readme --results $(STUDY_DIR)

teach: setup ## execute the teaching notebooks (notebooks/teaching; about a minute each, base checkpoints only)
	$(PY) -m qrepro teach --results $(STUDY_DIR) $(if $(filter 1,$(SMOKE)),--smoke,)

benchmark: setup ## print speed figures (ratios measured side by side in one run); rows also in results/_scratch/benchmark.json
	$(PY) benchmarks/benchmark.py --json results/_scratch/benchmark.json

gpu-check: ## on a GPU machine: GPU tests, a short study on cuda, GPU throughput and pruned inference; JSON summary (runs from the source tree, no venv)
	PYTHONPATH=. $(PYTHON) benchmarks/gpu_check.py

clean: ## remove the virtual environment and caches (keeps results/)
	rm -rf $(VENV) .pytest_cache build *.egg-info
