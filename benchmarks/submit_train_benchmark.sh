#!/bin/bash
# Run the benchmark's cases: one job-array task per method x dataset x mask (an entry of the sweep file).
# From the repository root:
#   python -m gapfill.submit benchmarks --account ACCOUNT --partition PARTITION    # this array, then the report
#   sbatch --account=ACCOUNT --partition=PARTITION benchmarks/submit_train_benchmark.sh
#   bash benchmarks/submit_train_benchmark.sh          # no SLURM: every case in turn (what make benchmark runs)
# A task whose case is done returns at once; a requeued task resumes its training from `last`.
# Full budget on a GPU cluster: SWEEP_ARGS="--budget large" python -m gapfill.submit benchmarks -- --gres=gpu:1
# --array below matches `python -m gapfill.sweep benchmarks/sweep_benchmark.toml --array` (a test checks it).
#SBATCH --job-name=train_benchmark
#SBATCH --array=0-83
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --time=01:00:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=16G
SWEEP_FILE=${SWEEP_FILE:-benchmarks/sweep_benchmark.toml}
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_sweep.sh
