# make demo: set up .venv, generate the default data, run the baselines' sweep through its sbatch scripts
#            (without SLURM), write the PDFs and the cross-method comparison.
# make test: set up .venv and run the test suite (fast tests; `make test-slow` adds the slow ones).
SHELL := /bin/bash
PYTHON_BIN ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m data_generation.make_synthetic_field --out data/synthetic_default.nc
	PYTHON=$(PY) bash baselines/submit_train_baselines.sh
	PYTHON=$(PY) bash baselines/submit_test_baselines.sh
	@echo "Per-run PDFs:       results/baselines/*/*.pdf"
	@echo "Method summary:     results/baselines/summary_baselines.pdf and summary.csv"
	@echo "Comparison:         results/comparison/comparison.pdf and leaderboard.csv"

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

clean:
	rm -rf checkpoints results logs/*.out data
