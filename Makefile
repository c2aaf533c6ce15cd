# make demo: set up .venv, generate the default data, run the baselines' sweep, then the variational and the
#            exact GP, each through its sbatch scripts (without SLURM), on the same field and hidden cells;
#            write the PDFs and the cross-method comparison and print the leaderboard.
# make test: set up .venv and run the test suite (fast tests; `make test-slow` adds the slow ones).
# make benchmark: every method on every case of benchmarks/sweep_benchmark.toml at the default budget (90 minutes
#            on 2 cores; a rerun runs only the cases not done), then results/benchmark/leaderboard.csv and benchmark.pdf.
#            BENCHMARK_ARGS="--only ginr --datasets sst" restricts it.
# make lint: ruff (pyflakes, pycodestyle, import order, bugbear, pyupgrade) and mypy on gapfill/ and every method,
#            baseline, data, benchmark and additional_material folder (pyproject.toml's [tool.mypy] files; not tests/).
SHELL := /bin/bash
PYTHON_BIN ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo benchmark test test-slow lint venv clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# made once: a new file (new modification time) would make every finished run's identity differ
data/synthetic_default.nc: | $(STAMP)
	$(PY) -m data_generation.make_synthetic_field --out data/synthetic_default.nc

# every method is tested on the same 20 test frames (the first 20 after validation) and so on the same
# hidden cells; 20 rather than all 55 keeps the PDFs (one page a frame) and the demo short
DEMO_TEST_ARGS ?= --num_frames_test 20
demo: $(STAMP) data/synthetic_default.nc
	PYTHON=$(PY) bash baselines/submit_train_baselines.sh
	PYTHON=$(PY) TEST_ARGS="$(DEMO_TEST_ARGS)" bash baselines/submit_test_baselines.sh
	PYTHON=$(PY) SWEEP_FILE=variational_gp_related/sweep_demo_variational_gp.toml \
	    bash variational_gp_related/submit_train_variational_gp.sh
	PYTHON=$(PY) TEST_ARGS="$(DEMO_TEST_ARGS)" bash variational_gp_related/submit_test_variational_gp.sh
	PYTHON=$(PY) SWEEP_FILE=exact_gp_related/sweep_demo_exact_gp.toml bash exact_gp_related/submit_train_exact_gp.sh
	PYTHON=$(PY) TEST_ARGS="$(DEMO_TEST_ARGS)" bash exact_gp_related/submit_test_exact_gp.sh
	@echo "Per-run PDFs:       results/{baselines,variational_gp,exact_gp}/*/*.pdf"
	@echo "Method summaries:   results/<method>/summary_<method>.pdf and summary.csv"
	@echo "Comparison:         results/comparison/comparison.pdf and leaderboard.csv"

BENCHMARK_ARGS ?=
benchmark: $(STAMP)
	$(PY) -m benchmarks.benchmark $(BENCHMARK_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

clean:
	rm -rf checkpoints results logs/*.out data
