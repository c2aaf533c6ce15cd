#!/bin/bash
# Train the baselines' sweep: one job-array task per sweep entry. From the repository root:
#   sbatch --account=ACCOUNT --partition=PARTITION baselines/submit_train_baselines.sh
#   bash baselines/submit_train_baselines.sh          # no SLURM: every entry in turn
# --array below matches `python -m gapfill.sweep baselines/sweep_baselines.toml --array` (a test checks it);
# a different sweep: SWEEP_FILE=my.toml sbatch --array=$(python -m gapfill.sweep my.toml --array) ...
#SBATCH --job-name=train_baselines
#SBATCH --array=0-4
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --time=00:30:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
SWEEP_FILE=${SWEEP_FILE:-baselines/sweep_baselines.toml}
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_sweep.sh
