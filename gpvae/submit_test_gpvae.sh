#!/bin/bash
# Test every trained GP-VAE run (imputation and its pages), then compare all methods:
#   jid=$(sbatch --parsable gpvae/submit_train_gpvae.sh)
#   sbatch --dependency=afterok:$jid --kill-on-invalid-dep=yes gpvae/submit_test_gpvae.sh
#   bash gpvae/submit_test_gpvae.sh     # no SLURM
#SBATCH --job-name=test_gpvae
#SBATCH --output=logs/%x_%j.out
#SBATCH --time=04:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
RESULTS_NAME=gpvae
TEST_SCRIPT=gpvae/test_gpvae.py
DEFAULT_TEST_ARGS="--num_frames_test 10"
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_tests.sh
