#!/bin/bash
# Train the GAN sweep: one job-array task per sweep entry. From the repository root:
#   sbatch --account=ACCOUNT --partition=PARTITION gan_gapfill/submit_train_gan.sh
#   python -m gapfill.submit gan_gapfill --account=ACCOUNT --partition=PARTITION   # + the test job
#   bash gan_gapfill/submit_train_gan.sh    # no SLURM: every entry in turn
# --array below matches `python -m gapfill.sweep gan_gapfill/sweep_gan.toml --array` (a test checks it).
#SBATCH --job-name=train_gan
#SBATCH --array=0-15
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --time=12:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
SWEEP_FILE=${SWEEP_FILE:-gan_gapfill/sweep_gan.toml}
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}}/gapfill/slurm/common.sh"
source gapfill/slurm/run_sweep.sh
