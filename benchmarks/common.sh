# Sourced by the benchmark scripts here: `source "$(dirname "$0")/common.sh" NAME` sets bash's strict mode,
# moves to the repository root and sets PY (the venv's python, or $PYTHON), OUT (results/NAME) and CK
# (checkpoints/NAME); OUT and CK set in the environment win.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results/$1}
CK=${CK:-checkpoints/$1}
