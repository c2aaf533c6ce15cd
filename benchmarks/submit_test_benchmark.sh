#!/bin/bash
# Write the benchmark's leaderboard.csv and benchmark.pdf (results/benchmark) from every finished case.
# Submit after the case array (python -m gapfill.submit benchmarks does both):
#   jid=$(sbatch --parsable benchmarks/submit_train_benchmark.sh)
#   sbatch --dependency=afterok:$jid benchmarks/submit_test_benchmark.sh
#   bash benchmarks/submit_test_benchmark.sh           # no SLURM
# $SWEEP_ARGS (e.g. "--budget large") is passed on, as to the cases.
#SBATCH --job-name=test_benchmark
#SBATCH --output=logs/%x_%j.out
#SBATCH --time=00:30:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
# shellcheck disable=SC2086
exec "$PYTHON" -m benchmarks.benchmark --stage report --sweep "${SWEEP_FILE:-benchmarks/sweep_benchmark.toml}" ${SWEEP_ARGS:-}
