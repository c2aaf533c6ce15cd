#!/bin/bash
# Test every trained GP-VAE run (imputation and its pages), then compare all methods:
#   jid=$(sbatch --parsable ginr/submit_train_ginr.sh)
#   sbatch --dependency=afterok:$jid --kill-on-invalid-dep=yes ginr/submit_test_ginr.sh
#   bash ginr/submit_test_ginr.sh     # no SLURM
#SBATCH --job-name=test_ginr
#SBATCH --output=logs/%x_%j.out
#SBATCH --time=04:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
RESULTS_NAME=ginr
TEST_SCRIPT=ginr/test_ginr.py
DEFAULT_TEST_ARGS="--num_frames_test 10"
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_tests.sh
