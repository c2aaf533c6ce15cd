#!/bin/bash
# Test every trained baseline run, then compare all methods. Submit after the training array:
#   jid=$(sbatch --parsable baselines/submit_train_baselines.sh)
#   sbatch --dependency=afterok:$jid baselines/submit_test_baselines.sh
#   bash baselines/submit_test_baselines.sh           # no SLURM
#SBATCH --job-name=test_baselines
#SBATCH --output=logs/%x_%j.out
#SBATCH --time=00:30:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
RESULTS_NAME=baselines
TEST_SCRIPT=baselines/test_baselines.py
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_tests.sh
