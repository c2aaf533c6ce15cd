#!/bin/bash
# Train the GINR sweep: one job-array task per sweep entry. From the repository root:
#   sbatch --account=ACCOUNT --partition=PARTITION ginr/submit_train_ginr.sh
#   python -m gapfill.submit ginr --account=ACCOUNT --partition=PARTITION   # + the test job
#   bash ginr/submit_train_ginr.sh    # no SLURM: every entry in turn
# --array below matches `python -m gapfill.sweep ginr/sweep_ginr.toml --array` (a test checks it).
#SBATCH --job-name=train_ginr
#SBATCH --array=0-11
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --time=12:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
SWEEP_FILE=${SWEEP_FILE:-ginr/sweep_ginr.toml}
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_sweep.sh
