#!/bin/bash
# Test every trained partial-convolution UNet run (inpainting and analyses), then compare all methods:
#   jid=$(sbatch --parsable pconv_inpainting/submit_train_pconv.sh)
#   sbatch --dependency=afterok:$jid --kill-on-invalid-dep=yes pconv_inpainting/submit_test_pconv.sh
#   bash pconv_inpainting/submit_test_pconv.sh     # no SLURM
#SBATCH --job-name=test_pconv
#SBATCH --output=logs/%x_%j.out
#SBATCH --time=04:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
RESULTS_NAME=pconv
TEST_SCRIPT=pconv_inpainting/test_pconv.py
DEFAULT_TEST_ARGS="--num_frames_test 10"
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_tests.sh
