#!/bin/bash
# Test every trained variational GP run (inpainting of the test frames), then compare all methods:
#   jid=$(sbatch --parsable variational_gp_related/submit_train_variational_gp.sh)
#   sbatch --dependency=afterok:$jid --kill-on-invalid-dep=yes variational_gp_related/submit_test_variational_gp.sh
#   bash variational_gp_related/submit_test_variational_gp.sh     # no SLURM
#SBATCH --job-name=test_variational_gp
#SBATCH --output=logs/%x_%j.out
#SBATCH --time=04:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
RESULTS_NAME=variational_gp
TEST_SCRIPT=variational_gp_related/test_variational_gp.py
DEFAULT_TEST_ARGS="--num_frames_test 10"
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_tests.sh
