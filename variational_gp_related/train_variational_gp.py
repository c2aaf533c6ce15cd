"""Train a sparse variational GP (GPyTorch SVGP) on every observed cell of the training frames.

The predictive log likelihood (--objective pll, default) or the ELBO (elbo) is maximised on mini-batches
(--batch_size cells, 0 = all) that stream over every observed cell of the training frames, epoch after
epoch, one band at a time: q(u) on --num_inducing_points inducing inputs (k-means on the observed inputs;
--learn_inducing_locations moves them); Adam on everything or, with --natural_gradient (ELBO only),
natural-gradient steps for q(u) and Adam for the hyperparameters. Kernels and their options are the exact
GP's. Every --eval_every steps the validation frames are inpainted (q(u) refitted around each frame with
the hyperparameters frozen) and scored on their hidden cells, the predictive variance first calibrated on
them (--variance_calibration: the factor of minimum NLL, kept with the state and applied by the test);
the state with the best --select score (RMSE by default) is kept. On SLURM's warning
signal (or SIGTERM) the run saves `last` and stops; the same command resumes.

    python variational_gp_related/train_variational_gp.py --data_path F --timekernel matern --spacekernel matern \\
        --prob_masking 0.9 --num_inducing_points 512 --batch_size 1024 --checkpoint_dir D
"""
from __future__ import annotations

import logging

import gpytorch
import numpy as np
import torch

from exact_gp_related import gp_training
from exact_gp_related.exact_gp_utils import add_model_args, parse_with_preset, robust_step
from exact_gp_related.gp_training import BandLoop, train_bands
from gapfill import cli, runs
from variational_gp_related.variational_gp_utils import VariationalSetup, add_variational_args, batch_indices, kmeans

log = logging.getLogger("variational_gp.train")
METHOD = "variational_gp"


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    add_model_args(p)
    add_variational_args(p)
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=cli.positive_float, default=0.03, help="Adam")
    g.add_argument("--eval_every", type=cli.positive_int, default=100, help="steps between validation inpaintings")
    g.add_argument("--max_valid_frames", type=cli.positive_int, default=10,
                   help="validation frames inpainted per evaluation (evenly spaced)")
    g.add_argument("--patience", type=cli.positive_int, default=5, help="evaluations without improvement before stopping")
    p.set_defaults(max_iters=1000)      # mini-batch steps: 10 epochs of the default field's 104,550 training cells
    args = parse_with_preset(p, argv)
    for opt in ("num_inducing_points", "max_context_points"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt} must be at least 1, got {getattr(args, opt)}")
    if args.natural_gradient and args.objective != "elbo":
        p.error("--natural_gradient needs --objective elbo (natural-gradient steps are those of the ELBO)")
    return args


def name_parts(args) -> dict:
    """The parts of the default run name (the run's identity also covers every other option)."""
    return {**gp_training.name_parts(args), "M": args.num_inducing_points, "bs": args.batch_size, "obj": args.objective,
            "opt": "ngd" if args.natural_gradient else "adam",
            "Z": "learned" if args.learn_inducing_locations else "kmeans", "seed": args.seed}


def optimisers(model, args: dict, n: int) -> list:
    """[Adam on every parameter] or, with --natural_gradient, [NGD on q(u), Adam on the hyperparameters]:
    each step takes them in turn, the hyperparameters' gradient at the q(u) just updated (as Salimbeni et
    al. 2018 alternate them), so a full-batch NGD step of 1 makes the ELBO the exact marginal likelihood."""
    if not args["natural_gradient"]:
        return [torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args["lr"])]
    hyper = [p for p in model.hyperparameters() if p.requires_grad]
    return [gpytorch.optim.NGD(model.variational_parameters(), num_data=n, lr=args["ngd_lr"]),
            torch.optim.Adam(hyper, lr=args["lr"])]


def fit_band(setup: VariationalSetup, b: int, run: runs.Run, state: dict) -> dict:
    """Mini-batch PLL/ELBO ascent for band b; resumes from `state['current']` when present."""
    args, device = setup.args, run.device
    x, y = setup.training_cells(b)                                        # (N, 3), (N,) numpy
    n, seed = len(y), args["seed"] + b
    sub = np.random.default_rng(seed).choice(n, min(n, 2000), replace=False)
    model, lik = setup.new_model(b, kmeans(x, args["num_inducing_points"], seed), device, x[sub], y[sub])
    opts = optimisers(model, args, n)
    loop = BandLoop(setup, b, run, state, model, opts)
    objective = (gpytorch.mlls.PredictiveLogLikelihood if args["objective"] == "pll"
                 else gpytorch.mlls.VariationalELBO)(lik, model, num_data=n)
    bsize = n if args["batch_size"] <= 0 else min(args["batch_size"], n)
    log.info("%s: %d observed training cells, %d inducing points, batches of %d (%d steps per epoch)", loop.what,
             n, len(model.variational_strategy.inducing_points), bsize, -(-n // bsize))
    tt = lambda a: torch.as_tensor(a, dtype=setup.dtype, device=device)      # noqa: E731
    floor = 1e-6 if setup.dtype == torch.float64 else 1e-4                   # GPyTorch's own variational jitter
    model.train()
    for step in loop.bar:
        idx = batch_indices(n, args["batch_size"], step, seed)
        xb, yb = tt(x[idx]), tt(y[idx])

        def step_fn(jitter, xb=xb, yb=yb):
            j = max(jitter, floor)
            with gpytorch.settings.variational_cholesky_jitter(float_value=j, double_value=j), \
                    gpytorch.settings.cholesky_jitter(float_value=j, double_value=j):
                for o in opts:                  # NGD (if any) first, then Adam at the updated q(u)
                    o.zero_grad()
                    loss = -objective(model(xb), yb)
                    if not torch.isfinite(loss):
                        break
                    loss.backward()
                    o.step()
            return loss

        loss = robust_step(step_fn, (model, *opts), loop.cur, loop.what, step, setup.dtype)
        if loop.end_step(step, loss, lik, epoch=round((step + 1) * bsize / n, 3)):
            break
    return loop.finish(n)


def main(argv=None) -> int:
    args = parse_args(argv)
    return train_bands(args, METHOD, name_parts(args), VariationalSetup, fit_band, ["epoch", "variance_scale"])


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
