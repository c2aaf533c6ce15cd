"""Test exact-GP runs by inpainting: each test frame's posterior conditions on its observed cells and on
those of the frames within the run's context; writes prediction.nc, metrics.json, PDFs and the summary.

    python exact_gp_related/test_exact_gp.py --checkpoints D/* --results_folder R --num_frames_test 10 \\
        --test_mask_type fixed --test_prob_masking 0.9
"""
from __future__ import annotations

import numpy as np
import torch

from exact_gp_related.exact_gp_utils import make_model
from exact_gp_related.train_exact_gp import METHOD, Setup
from gapfill import runs
from gapfill.data import Normalizer
from gapfill.evaluate import test_main

# summary heatmaps: one row per kernel pair, one column per masking probability and mask type
SUMMARY_GRID = (["timekernel", "kernel_combination", "spacekernel"], ["prob_masking", "mask_type"])


def predict_bands(setup, run_dir, device, build) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance), each (T_test, B, Y, X) in physical units: every band's test frames inpainted by
    `setup` with the band's best state; `build(b, state)` -> (model, likelihood) to load it into."""
    best = torch.load(run_dir / "best.pt", weights_only=False)["bands"]
    sl = setup.problem.splits["test"]
    means, variances = [], []
    for b in range(setup.problem.field.shape[1]):
        model, lik = build(b, best[b]["model"])
        model.load_state_dict(best[b]["model"])
        model.eval()
        mean, var = setup.inpaint(b, model, lik, range(sl.start, sl.stop), device, progress=True)
        means.append(mean)
        variances.append(var)
    return np.stack(means, axis=1), np.stack(variances, axis=1)


def predict(problem, cfg, run_dir, device):
    """(mean, variance), each (T_test, B, Y, X) in physical units, from the observed cells only."""
    setup = Setup(cfg["args"], problem, Normalizer.from_dict(cfg["normalization"]))
    return predict_bands(setup, run_dir, device,
                         lambda b, state: make_model(cfg["args"], setup.grid, dtype=setup.dtype, device=device))


def main(argv=None):
    test_main(METHOD, predict, argv, __doc__.splitlines()[0], summary_grid=SUMMARY_GRID)
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
