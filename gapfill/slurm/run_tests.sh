# Sourced by submit_test_<m>.sh after common.sh: test every run folder under $CHECKPOINT_DIR with
# $TEST_SCRIPT into $RESULTS_DIR/$RESULTS_NAME, then compare all methods under $RESULTS_DIR.
# $TEST_ARGS (default $DEFAULT_TEST_ARGS) is appended to the test script's options.
CHECKPOINT_DIR=${CHECKPOINT_DIR:-checkpoints/$RESULTS_NAME}
RESULTS_DIR=${RESULTS_DIR:-results}
# shellcheck disable=SC2086
"$PYTHON" "$TEST_SCRIPT" --checkpoints "$CHECKPOINT_DIR"/*/ --results_folder "$RESULTS_DIR/$RESULTS_NAME" \
  ${TEST_ARGS:-${DEFAULT_TEST_ARGS:-}}
"$PYTHON" -m gapfill.report compare --results "$RESULTS_DIR" --out "$RESULTS_DIR/comparison"
