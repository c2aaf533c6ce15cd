# Sourced by submit_train_<m>.sh after common.sh: run entry $SLURM_ARRAY_TASK_ID of $SWEEP_FILE,
# or, outside a job array, every entry in turn. $SWEEP_ARGS is appended to every entry.
n=$("$PYTHON" -m gapfill.sweep "$SWEEP_FILE" --count)
script=$("$PYTHON" -m gapfill.sweep "$SWEEP_FILE" --script)
run_entry() {
  local entry
  eval "entry=($("$PYTHON" -m gapfill.sweep "$SWEEP_FILE" --args "$1"))"
  echo "entry $1/$n: $script ${entry[*]} ${SWEEP_ARGS:-}"
  # shellcheck disable=SC2086
  "$PYTHON" "$script" "${entry[@]}" ${SWEEP_ARGS:-}
}
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  run_entry "$SLURM_ARRAY_TASK_ID"
else
  for ((i = 0; i < n; i++)); do run_entry "$i"; done
fi
