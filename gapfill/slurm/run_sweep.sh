# Sourced by submit_train_<m>.sh after common.sh: run entry $SLURM_ARRAY_TASK_ID of $SWEEP_FILE,
# or, outside a job array, every entry in turn. $SWEEP_ARGS is appended to every entry.
# In a job array Python replaces this shell (exec), so `--signal=B:USR1@90` (sent to the batch shell
# only) reaches the training loop, which saves `last` and requeues the task.
# Outside a job array, as in an array, a failed entry does not stop the others: the failed entries are
# listed at the end and the script exits 1.
n=$("$PYTHON" -m gapfill.sweep "$SWEEP_FILE" --count)
script=$("$PYTHON" -m gapfill.sweep "$SWEEP_FILE" --script)
run_entry() {  # $1: entry number; $2: "exec" to let Python replace this shell
  local entry options
  options=$("$PYTHON" -m gapfill.sweep "$SWEEP_FILE" --args "$1") || return
  eval "entry=($options)"
  echo "entry $1/$n: $script ${entry[*]} ${SWEEP_ARGS:-}"
  # shellcheck disable=SC2086
  ${2:-} "$PYTHON" "$script" "${entry[@]}" ${SWEEP_ARGS:-}
}
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  run_entry "$SLURM_ARRAY_TASK_ID" exec
else
  failed="" nfailed=0
  for ((i = 0; i < n; i++)); do
    run_entry "$i" || { failed+="${failed:+, }entry $i (exit code $?)"; nfailed=$((nfailed + 1)); }
  done
  if [ "$nfailed" -gt 0 ]; then
    echo "$nfailed of $n sweep entries failed: $failed; the others ran" >&2
    exit 1
  fi
fi
