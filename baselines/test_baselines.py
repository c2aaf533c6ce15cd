"""Test classical-baseline runs: inpaint the test frames, write prediction.nc, metrics.json, PDFs, summary.

    python baselines/test_baselines.py --checkpoints checkpoints/baselines/* --results_folder results/baselines
"""
from __future__ import annotations

from gapfill import checkpoints, runs
from gapfill.evaluate import script_main
from gapfill.floor import baseline_options, reconstruct_baseline


def predict(problem, cfg, run_dir, device):
    """(mean, variance or None), each (T_test, B, Y, X), from the visible cells only."""
    args = cfg["args"]
    state = checkpoints.load_checkpoint(run_dir, "best")
    mean, var, _ = reconstruct_baseline(args["method"], problem.visible(), problem.splits["train"],
                                        problem.splits["test"], x_periodic=problem.field.x_periodic,
                                        **baseline_options(args, rank=int(state["rank"])))
    return mean, var


main = script_main("baselines", predict, __doc__)


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
