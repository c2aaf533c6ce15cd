#!/bin/bash
# Train the exact GP sweep: one job-array task per sweep entry. From the repository root:
#   sbatch --account=ACCOUNT --partition=PARTITION exact_gp_related/submit_train_exact_gp.sh
#   python -m gapfill.submit exact_gp_related --account=ACCOUNT --partition=PARTITION   # + the test job
#   bash exact_gp_related/submit_train_exact_gp.sh    # no SLURM: every entry in turn
# --array below matches `python -m gapfill.sweep exact_gp_related/sweep_exact_gp.toml --array` (a test checks it).
#SBATCH --job-name=train_exact_gp
#SBATCH --array=0-143
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --time=02:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --gres=gpu:1
SWEEP_FILE=${SWEEP_FILE:-exact_gp_related/sweep_exact_gp.toml}
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_sweep.sh
