#!/bin/bash
# One training run over N devices on M nodes with the Lightning engine (DDP): one srun task per device.
# From the repository root, for a method script and its options (here: 2 nodes x 4 GPUs):
#   sbatch --nodes=2 --ntasks-per-node=4 --gres=gpu:4 --account=ACCOUNT --partition=PARTITION \
#       gapfill/slurm/ddp_example.sh <method>/train_<method>.py --data_path F --devices 4 --num_nodes 2 --strategy ddp
#   (CPU, e.g. the test cluster: --ntasks-per-node=2 without --gres, and --devices 2 --strategy ddp)
# The warning signal goes to the srun job step (no B:), so every rank hears it; each finishes its epoch,
# rank 0 writes last.ckpt and requeues the job, which resumes from it.
#SBATCH --job-name=train_ddp
#SBATCH --output=logs/%x_%j.out
#SBATCH --open-mode=append
#SBATCH --signal=USR1@90
#SBATCH --requeue
#SBATCH --time=01:00:00
#SBATCH --cpus-per-task=2
source "${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(dirname "$0")/../..}}/gapfill/slurm/common.sh"
[ $# -ge 1 ] || { echo "usage: sbatch [options] gapfill/slurm/ddp_example.sh SCRIPT [options]" >&2; exit 2; }
# MASTER_ADDR/PORT for torch.distributed: the first node of the allocation, a port from the job id
MASTER_ADDR=$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | head -n 1)
export MASTER_ADDR=${MASTER_ADDR:-localhost}
export MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
srun --kill-on-bad-exit=1 "$PYTHON" "$@"
