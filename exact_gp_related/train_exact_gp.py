"""Train an exact spatio-temporal GP (GPyTorch) on the observed cells of the training frames.

Hyperparameters maximise the exact marginal likelihood (Adam), one band at a time. With a product kernel
(`--inference kronecker`, the default there) on every observed cell of the training frames: the gradient
by conjugate gradients and Hutchinson probes on the Kronecker-structured covariance, the logged value with
a stochastic Lanczos log-determinant (exact_gp_related/kronecker.py). With `--inference dense` (a sum of
kernels) by Cholesky on up to --max_train_points of them. Every --eval_every steps the validation frames
are inpainted (conditioning on the observed cells of every frame, or of nearby frames with the dense
path) and scored on their hidden cells (RMSE, NLL); the best state is kept, --patience evaluations without
improvement stop the band. On SLURM's warning signal (or SIGTERM) the run saves `last` and stops; the same
command resumes.

    python exact_gp_related/train_exact_gp.py --data_path F --timekernel matern --spacekernel rbf \\
        --prob_masking 0.9 --mask_type dynamic --max_iters 100 --num_frames_train 50 --num_frames_valid 10 \\
        --checkpoint_dir D
"""
from __future__ import annotations

import logging
import math

import gpytorch
import torch

from exact_gp_related import gp_training, kronecker
from exact_gp_related.exact_gp_utils import add_model_args, make_model, parse_with_preset, robust_step
from exact_gp_related.gp_training import BandLoop, Setup, train_bands
from gapfill import cli, runs
from gapfill.errors import RunError

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
    kronecker.add_inference_args(p)
    args = parse_with_preset(p, argv)
    if args.inference == "kronecker" and args.kernel_combination != "product":
        p.error("--inference kronecker needs --kernel_combination product (a sum of kernels is not a Kronecker "
                "product); use --inference dense")
    return args


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


def fit_band_kronecker(setup: kronecker.KroneckerSetup, b: int, run: runs.Run, state: dict) -> dict:
    """Adam on the exact marginal likelihood of every observed training cell of band b (kronecker.py): exact
    (StationSolver) when every training frame observes the same cells, else one batched CG solve a step for
    the data and --probes Hutchinson probes, warm-started from the last, and a Lanczos log det for the value."""
    args, dtype, device = setup.args, setup.dtype, run.device
    setup.training_cells(b)                                                # a few observed cells, or DataError
    x, y = setup.training_data(b, device) if args["spacekernel"] == "spectral" or args["timekernel"] == "spectral" \
        else (None, None)                                                  # spectral kernels start from the data
    model, lik = make_model(args, setup.grid, x, y, dtype, device, separable=True)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args["lr"])
    loop = BandLoop(setup, b, run, state, model, [opt])
    grid = setup.grid_of(setup.train)
    _, data, mask = setup.band_data(b, model, setup.train, device)
    n = float(mask.sum())
    gen = torch.Generator().manual_seed(args["seed"] + b)
    probes = torch.randn((args["probes"], *mask.shape), generator=gen, dtype=dtype).sign().to(device) * mask  # Rademacher
    constant = hasattr(model.mean_module, "constant")
    cells = kronecker.fixed_cells(mask)          # the same cells in every training frame: exact, no CG
    ys = data.reshape(1, data.shape[0], -1)[..., cells] if cells is not None else None     # (1, T, stations)
    warm, capped = None, False
    cg_dtype = torch.float32 if args.get("train_cg_precision") == "32" else dtype
    model.train()
    for step in loop.bar:
        mats = kronecker.factor_matrices(model.covar_module, grid, dtype, device)
        noise = lik.noise.reshape(())
        c = model.mean_module.constant.reshape(()) if constant else torch.zeros((), dtype=dtype)
        value: float | None
        if cells is not None:
            assert ys is not None                    # set with cells
            st = kronecker.StationSolver(mats, noise.item(), cells)
            a = st.alpha(ys - c.detach())[0]
            loss = st.surrogate(mats, noise, a) - c * a.sum()
            value = 0.5 * float(((ys[0] - c.detach()) * a).sum()) + 0.5 * st.logdet()
            iters = 0
        else:
            resid = (data - c.detach()) * mask
            solver = kronecker.Solver([m.detach().to(cg_dtype) for m in mats], noise.item(), mask.to(cg_dtype),
                                      kronecker.train_tol(args["train_cg_tol"], noise.item()),
                                      args.get("max_train_cg_iters", args["max_cg_iters"]), warn=False)
            _, a, res = solver.solve(torch.cat([resid[None], probes]).to(cg_dtype), warm)
            warm, iters, a = res.x, res.iters, a.to(dtype)
            if iters >= solver.max_iters and not capped:
                capped = True
                log.warning("%s: training CG capped at %d iterations from step %d (relative residual %.2g, "
                            "tolerance %.1e): the gradient is approximate (--max_train_cg_iters)", loop.what,
                            iters, step, float(res.residual.max()), solver.tol)
            loss = kronecker.surrogate_loss(mats, noise, mask, a[0], probes, a[1:]) - c * a[0].sum()
            value = None                              # the value is only logged: estimated when it is read
            if loop.value_due(step):                  # log det: Lanczos quadrature
                logdet = n * math.log(noise.item()) + float(solver.logdet(args["probes"], seed=args["seed"] + b))
                value = 0.5 * float((resid * a[0]).sum()) + 0.5 * logdet
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
        if value is not None:
            value = (value + 0.5 * n * math.log(2 * math.pi)) / n
            if not math.isfinite(value):
                raise RunError(f"{loop.what}: the marginal likelihood is not finite at step {step}; try a smaller --lr")
        if loop.end_step(step, None if value is None else torch.tensor(value), lik, cg_iters=iters):
            break
    return loop.finish(int(n))


def main(argv=None) -> int:
    args = parse_args(argv)
    if kronecker.use_kronecker(vars(args)):
        return train_bands(args, METHOD, name_parts(args), kronecker.KroneckerSetup, fit_band_kronecker, ["cg_iters"])
    return train_bands(args, METHOD, name_parts(args), Setup, fit_band, ["cg_iters"])


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
