"""Train an exact spatio-temporal GP (GPyTorch) on the observed cells of the training frames.

Hyperparameters maximise the exact marginal likelihood (Adam, Cholesky) on up to --max_train_points
observed cells of the training frames, one band at a time. Every --eval_every steps the validation frames
are inpainted (conditioning on their observed cells and those of nearby frames) and scored on their
hidden cells (RMSE, NLL); the best state is kept, --patience evaluations without improvement stop the
band. On SLURM's warning signal (or SIGTERM) the run saves `last` and stops; the same command resumes.

    python exact_gp_related/train_exact_gp.py --data_path F --timekernel matern --spacekernel rbf \\
        --prob_masking 0.9 --mask_type dynamic --max_iters 100 --num_frames_train 50 --num_frames_valid 10 \\
        --checkpoint_dir D
"""
from __future__ import annotations

import logging

import gpytorch
import torch

from exact_gp_related import gp_training
from exact_gp_related.exact_gp_utils import add_model_args, make_model, robust_step
from exact_gp_related.gp_training import BandLoop, Setup, train_bands
from gapfill import cli, runs

log = logging.getLogger("exact_gp.train")
METHOD = "exact_gp"


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    add_model_args(p)
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=cli.positive_float, default=0.05)
    g.add_argument("--max_train_points", type=cli.positive_int, default=2000,
                   help="observed training cells the likelihood uses (a random subset when there are more)")
    g.add_argument("--eval_every", type=cli.positive_int, default=10, help="steps between validation inpaintings")
    g.add_argument("--max_valid_frames", type=cli.positive_int, default=10,
                   help="validation frames inpainted per evaluation (evenly spaced)")
    g.add_argument("--patience", type=cli.positive_int, default=5, help="evaluations without improvement before stopping")
    return p.parse_args(argv)


def name_parts(args) -> dict:
    """The parts of the default run name (the run's identity also covers every other option)."""
    return {**gp_training.name_parts(args), "seed": args.seed}


def fit_band(setup: Setup, b: int, run: runs.Run, state: dict) -> dict:
    """Adam on the exact marginal likelihood for band b; resumes from `state['current']` when present."""
    x, y = setup.training_data(b, run.device)
    model, lik = make_model(setup.args, setup.grid, x, y, setup.dtype, run.device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=setup.args["lr"])
    loop = BandLoop(setup, b, run, state, model, [opt])
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    model.train()
    for step in loop.bar:
        def step_fn(jitter):
            opt.zero_grad()
            with gpytorch.settings.max_cholesky_size(10**7), \
                    gpytorch.settings.cholesky_jitter(float_value=jitter, double_value=jitter):
                loss = -mll(model(x), y)
                if torch.isfinite(loss):
                    loss.backward()
                    opt.step()
            return loss

        loss = robust_step(step_fn, (model, opt), loop.cur, loop.what, step, setup.dtype)
        if loop.end_step(step, loss, lik):
            break
    return loop.finish(len(y))


def main(argv=None) -> int:
    args = parse_args(argv)
    return train_bands(args, METHOD, name_parts(args), Setup, fit_band, [])


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
