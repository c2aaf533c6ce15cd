"""Test GAN runs on the common protocol: each test frame filled from its whole-frame chip (the frame at the
first masked date, its neighbours as observed), scored on its hidden cells next to the classical floor.

    python gan_gapfill/test_gan.py --checkpoints checkpoints/gan/* --results_folder results/gan
"""
from __future__ import annotations

from gan_gapfill.gan_eval import load_trained
from gapfill import runs
from gapfill.evaluate import script_main

METHOD = "gan"


def predict(problem, cfg, run_dir, device):
    """(mean, None), (T_test, B, Y, X) physical units."""
    sl = problem.splits["test"]
    return load_trained(problem, cfg, run_dir, device).reconstruct(range(sl.start, sl.stop))


main = script_main(METHOD, predict, __doc__)


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
