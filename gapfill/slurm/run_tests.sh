# Sourced by submit_test_<m>.sh after common.sh: test every run folder under $CHECKPOINT_DIR with
# $TEST_SCRIPT into $RESULTS_DIR/$RESULTS_NAME, then compare all methods under $RESULTS_DIR.
# $TEST_ARGS (default $DEFAULT_TEST_ARGS) is appended to the test script's options.
# A run whose test fails does not stop the others, the summary or the comparison; the job's exit code
# is then the test script's (2: some runs failed, each named on one line in the log and in summary.csv).
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/$RESULTS_NAME}
RESULTS_DIR=${RESULTS_DIR:-results}
status=0
# shellcheck disable=SC2086
"$PYTHON" "$TEST_SCRIPT" --checkpoints "$CHECKPOINT_DIR"/*/ --results_folder "$RESULTS_DIR/$RESULTS_NAME" \
  ${TEST_ARGS:-${DEFAULT_TEST_ARGS:-}} || status=$?
"$PYTHON" -m gapfill.report compare --results "$RESULTS_DIR" --out "$RESULTS_DIR/comparison" || \
  { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
exit "$status"
