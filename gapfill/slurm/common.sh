# Sourced by every submit_*.sh: find the repository root and the Python to use, make the log folder.
# Under sbatch the script runs from a spool copy, so the root is the submit directory (submit from the
# repository root, or export GAPFILL_ROOT); run with bash, it is the folder above the script.
set -euo pipefail
ROOT=${GAPFILL_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)}}
cd "$ROOT"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p logs
# one OpenMP/BLAS/torch thread per CPU the job was given; by default each library starts one per core of
# the whole node, and jobs sharing a node then slow each other down many times over
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$SLURM_CPUS_PER_TASK}; fi
echo "$(date '+%F %T') host $(hostname) root $ROOT python $PYTHON job ${SLURM_JOB_ID:-none} task ${SLURM_ARRAY_TASK_ID:-all} cpus ${SLURM_CPUS_PER_TASK:-all} gpus ${CUDA_VISIBLE_DEVICES:-none}"
