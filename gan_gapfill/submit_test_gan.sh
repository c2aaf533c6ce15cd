#!/bin/bash
# Test every trained GP-VAE run (imputation and its pages), then compare all methods:
#   jid=$(sbatch --parsable gan_gapfill/submit_train_gan.sh)
#   sbatch --dependency=afterok:$jid --kill-on-invalid-dep=yes gan_gapfill/submit_test_gan.sh
#   bash gan_gapfill/submit_test_gan.sh     # no SLURM
#SBATCH --job-name=test_gan
#SBATCH --output=logs/%x_%j.out
#SBATCH --time=04:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
RESULTS_NAME=gan
TEST_SCRIPT=gan_gapfill/test_gan.py
DEFAULT_TEST_ARGS="--num_frames_test 10"
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_tests.sh
