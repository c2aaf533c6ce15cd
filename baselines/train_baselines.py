"""Fit a classical baseline and write the standard run folder.

Climatology comes from the training frames; DINEOF also picks its rank by cross-validation on the
observed cells of the validation frames (`--max_iters`: SVD iterations per rank).

    python baselines/train_baselines.py --data_path data/synthetic_default.nc --method dineof --prob_masking 0.9
"""
from __future__ import annotations

import logging
import time

import numpy as np

from baselines.classical import METHODS, climatology, method_options, reconstruct
from gapfill import cli, runs
from gapfill.data import Normalizer
from gapfill.evaluate import build_problem, validation_rmse

log = logging.getLogger("baselines.train")


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    g = p.add_argument_group("baseline")
    g.add_argument("--method", choices=METHODS, default="dineof")
    g.add_argument("--max_rank", type=int, default=100, help="DINEOF: largest rank tried by cross-validation")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    runs.setup_logging(args.log_level)
    runs.seed_everything(args.seed)
    problem = build_problem(vars(args))
    field, splits = problem.field, problem.splits
    name = args.run_name or runs.make_run_name("baselines", field.name, {
        "": args.method, "mask": cli.mask_tag(vars(args)), "seed": args.seed})
    run_dir, state = runs.prepare_run(args.checkpoint_dir or "checkpoints/baselines", name, args.overwrite)
    if state == "finished":
        return 0
    t0 = time.time()
    visible, train = problem.visible(), splits["train"]
    normalizer = Normalizer.fit(visible[train] if train.stop > train.start else visible)  # an image: observed cells
    runs.save_config(run_dir, "baselines", name, vars(args), display_name=args.method, normalization=normalizer.to_dict(),
                     bands=field.bands, units=field.units)
    state_dict = {"climatology": climatology(visible, splits["train"]).astype(np.float32), "rank": 0}
    val = {}
    if splits["valid"].stop > splits["valid"].start:
        upto = visible[: splits["valid"].stop]          # the test frames play no part in training
        mean, _, info = reconstruct(args.method, upto, splits["train"], splits["valid"], **method_options(vars(args)))
        state_dict["rank"] = info.get("rank", 0)
        val = {"valid_rmse": validation_rmse(problem, mean)}
        logger = runs.CsvLog(run_dir / "train_log.csv", ["rank", "cv_mse", "valid_rmse"])
        for k, mse in info.get("cv_mse", {0: float("nan")}).items():
            logger.write(rank=k, cv_mse=mse, valid_rmse=val["valid_rmse"])
        log.info("%s: validation RMSE %.4g %s", args.method, val["valid_rmse"], field.units[0])
    for which in ("last", "best"):
        with runs.atomic_path(run_dir / f"{which}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **state_dict)
    runs.update_config(run_dir, finished=True, train_seconds=time.time() - t0, rank=int(state_dict["rank"]), **val)
    log.info("wrote %s", run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
