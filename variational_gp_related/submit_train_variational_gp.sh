#!/bin/bash
# Train the variational GP sweep: one job-array task per sweep entry. From the repository root:
#   sbatch --account=ACCOUNT --partition=PARTITION variational_gp_related/submit_train_variational_gp.sh
#   python -m gapfill.submit variational_gp_related --account=ACCOUNT --partition=PARTITION   # + the test job
#   bash variational_gp_related/submit_train_variational_gp.sh    # no SLURM: every entry in turn
# --array below matches `python -m gapfill.sweep variational_gp_related/sweep_variational_gp.toml --array` (a test checks it).
#SBATCH --job-name=train_variational_gp
#SBATCH --array=0-431
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --time=02:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --gres=gpu:1
SWEEP_FILE=${SWEEP_FILE:-variational_gp_related/sweep_variational_gp.toml}
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_sweep.sh
