"""Test variational-GP runs by inpainting: for each test frame q(u) is refitted, with the trained
hyperparameters frozen, on the observed cells of that frame and of the frames within the run's context;
writes prediction.nc, metrics.json, PDFs and the summary.

    python variational_gp_related/test_variational_gp.py --checkpoints D/* --results_folder R --num_frames_test 10
"""
from __future__ import annotations

import numpy as np

from exact_gp_related.gp_training import predict_bands
from gapfill import runs
from gapfill.data import Normalizer
from gapfill.evaluate import script_main
from variational_gp_related.variational_gp_utils import VariationalSetup

METHOD = "variational_gp"

# summary heatmaps: one row per kernel pair and inducing-point count, one column per masking probability and mask type
SUMMARY_GRID = (["timekernel", "spacekernel", "num_inducing_points"], ["prob_masking", "mask_type"])


def predict(problem, cfg, run_dir, device, split="test"):
    """(mean, variance), each (T_split, B, Y, X) in physical units, from the observed cells only."""
    setup = VariationalSetup(cfg["args"], problem, Normalizer.from_dict(cfg["normalization"]))
    return predict_bands(setup, run_dir, device, lambda b, state: setup.new_model(
        b, np.zeros(tuple(state["variational_strategy.inducing_points"].shape)), device), split)


main = script_main(METHOD, predict, __doc__, summary_grid=SUMMARY_GRID)


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
