"""Fit a classical baseline and write the standard run folder.

Climatology comes from the training frames; DINEOF also picks its rank by cross-validation on the
observed cells of the validation frames (`--max_iters`: SVD iterations per rank). On SLURM's warning
signal (or SIGTERM) DINEOF saves its rank search in `last.npz` after the current rank and stops (requeued
under SLURM); the same command resumes the search where it stopped, with the same result.

    python baselines/train_baselines.py --data_path data/synthetic_default.nc --method dineof --prob_masking 0.9
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gapfill import cli, runs
from gapfill.data import Normalizer
from gapfill.floor import BASELINES, baseline_options, climatology, reconstruct_baseline

log = logging.getLogger("baselines.train")
METHOD = "baselines"


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    g = p.add_argument_group("baseline")
    g.add_argument("--method", choices=BASELINES, default="dineof")
    g.add_argument("--max_rank", type=cli.positive_int, default=100, help="DINEOF: largest rank tried by cross-validation")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    run = runs.open_training(args, METHOD, {"": args.method, "mask": cli.mask_tag(vars(args)), "seed": args.seed},
                             ["cv_mse"], display_name=args.method)
    if run.status == "finished":
        return 0
    problem, splits = run.problem, run.problem.splits
    visible, train = problem.visible(), splits["train"]
    if run.status == "new":            # an image has no training frames: its observed cells
        run.record(normalization=Normalizer.fit(visible[train] if train.stop > train.start else visible).to_dict())
    resume = {k[7:]: v for k, v in (run.resume_state or {}).items() if k.startswith("search_")} or None

    def after_rank(search: dict) -> None:
        """Log each rank of DINEOF's search; on a signal save the search as `last` and stop."""
        run.log(int(search["curve_rank"][-1]), cv_mse=float(search["curve_mse"][-1]))
        run.check(lambda: run.save_last({f"search_{key}": v for key, v in search.items()}))

    state: dict[str, Any] = {"climatology": climatology(visible, train).astype(np.float32), "rank": 0}
    val = {}
    if splits["valid"].stop > splits["valid"].start:
        upto = visible[: splits["valid"].stop]          # the test frames play no part in training
        extra = {"resume": resume, "after_rank": after_rank} if args.method == "dineof" else {}
        mean, var, info = reconstruct_baseline(args.method, upto, train, splits["valid"],
                                               x_periodic=run.problem.field.x_periodic,
                                               **baseline_options(vars(args)), **extra)
        state["rank"] = info.get("rank", 0)
        val = run.score_valid(mean, var)
        log.info("%s: validation RMSE %.4g %s", args.method, val["valid_rmse"], problem.field.units[0])
    run.save_best(state)
    run.save_last(state)
    run.finish(rank=int(state["rank"]), **val)
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
