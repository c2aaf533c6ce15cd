"""Test exact-GP runs by inpainting: each test frame's posterior conditions on its observed cells and on
those of the frames within the run's context; writes prediction.nc, metrics.json, PDFs and the summary.

    python exact_gp_related/test_exact_gp.py --checkpoints D/* --results_folder R --num_frames_test 10 \\
        --test_mask_type fixed --test_prob_masking 0.9
"""
from __future__ import annotations

from exact_gp_related import kronecker
from exact_gp_related.exact_gp_utils import make_model
from exact_gp_related.gp_training import Setup, predict_bands
from gapfill import runs
from gapfill.data import Normalizer
from gapfill.evaluate import script_main

METHOD = "exact_gp"
# summary heatmaps: one row per kernel pair, one column per masking probability and mask type
SUMMARY_GRID = (["timekernel", "kernel_combination", "spacekernel"], ["prob_masking", "mask_type"])


def predict(problem, cfg, run_dir, device, split="test"):
    """(mean, variance), each (T_split, B, Y, X) in physical units, from the observed cells only."""
    kron = kronecker.use_kronecker(cfg["args"])
    setup = (kronecker.KroneckerSetup if kron else Setup)(cfg["args"], problem, Normalizer.from_dict(cfg["normalization"]))
    return predict_bands(setup, run_dir, device, lambda b, state: make_model(cfg["args"], setup.grid, dtype=setup.dtype,
                                                                             device=device, separable=kron), split)


main = script_main(METHOD, predict, __doc__, summary_grid=SUMMARY_GRID)


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
