"""Fit a classical baseline and write the standard run folder.

Climatology comes from the training frames; DINEOF also picks its rank by cross-validation on the
observed cells of the validation frames (`--max_iters`: SVD iterations per rank). On SLURM's warning
signal (or SIGTERM) DINEOF saves its rank search in `last.npz` after the current rank and stops (requeued
under SLURM); the same command resumes the search where it stopped, with the same result.

    python baselines/train_baselines.py --data_path data/synthetic_default.nc --method dineof --prob_masking 0.9
"""
from __future__ import annotations

import logging
import time

import numpy as np

from baselines.classical import METHODS, climatology, method_options, reconstruct
from gapfill import cli, runs
from gapfill.data import Normalizer
from gapfill.evaluate import open_training, validation_rmse

log = logging.getLogger("baselines.train")


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    g = p.add_argument_group("baseline")
    g.add_argument("--method", choices=METHODS, default="dineof")
    g.add_argument("--max_rank", type=int, default=100, help="DINEOF: largest rank tried by cross-validation")
    return p.parse_args(argv)


def save(path, arrays: dict, **config_changes) -> None:
    """Write an .npz atomically (then record `config_changes` in config.json)."""
    with runs.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    if config_changes:
        runs.update_config(path.parent, **config_changes)


def main(argv=None) -> int:
    args = parse_args(argv)
    problem, name, run_dir, state = open_training(args, "baselines", lambda dataset: args.run_name or runs.make_run_name(
        "baselines", dataset, {"": args.method, "mask": cli.mask_tag(vars(args)), "seed": args.seed}))
    field, splits = problem.field, problem.splits
    if state == "finished":
        return 0
    preempt = runs.Preemption()
    t0 = time.time()
    visible, train = problem.visible(), splits["train"]
    normalizer = Normalizer.fit(visible[train] if train.stop > train.start else visible)  # an image: observed cells
    resume = None
    if state == "resume":
        with np.load(run_dir / "last.npz") as last:
            resume = {k[7:]: last[k] for k in last.files if k.startswith("search_")} or None
        t0 -= runs.note_restart(run_dir)
    else:
        runs.save_config(run_dir, "baselines", name, vars(args), display_name=args.method,
                         normalization=normalizer.to_dict(), bands=field.bands, units=field.units)
    logger = runs.CsvLog(run_dir / "train_log.csv", ["rank", "cv_mse", "seconds"])

    def after_rank(search: dict) -> None:
        """Log each rank of DINEOF's search; on a signal save the search as `last` and stop."""
        k = int(search["curve_rank"][-1])
        logger.write(rank=k, cv_mse=float(search["curve_mse"][-1]), seconds=round(time.time() - t0, 3))
        preempt.check(lambda: save(run_dir / "last.npz", {f"search_{key}": v for key, v in search.items()},
                                   train_seconds=time.time() - t0))

    state_dict = {"climatology": climatology(visible, splits["train"]).astype(np.float32), "rank": 0}
    val = {}
    if splits["valid"].stop > splits["valid"].start:
        upto = visible[: splits["valid"].stop]          # the test frames play no part in training
        extra = {"resume": resume, "after_rank": after_rank} if args.method == "dineof" else {}
        mean, _, info = reconstruct(args.method, upto, splits["train"], splits["valid"],
                                    **method_options(vars(args)), **extra)
        state_dict["rank"] = info.get("rank", 0)
        val = {"valid_rmse": validation_rmse(problem, mean)}
        log.info("%s: validation RMSE %.4g %s", args.method, val["valid_rmse"], field.units[0])
    for which in ("last", "best"):
        save(run_dir / f"{which}.npz", state_dict)
    runs.update_config(run_dir, finished=True, train_seconds=time.time() - t0, rank=int(state_dict["rank"]), **val)
    log.info("wrote %s", run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
