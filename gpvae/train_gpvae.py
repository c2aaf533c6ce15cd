"""Train a GP-VAE (Fortuin et al. 2020) on windows of consecutive frames, on the core's Lightning engine.

Each window's frames are given as their seen cells (the training mask), mask and first guess
(--first_guess, default auto: the floor method whose guess scores best on the validation frames); the
network learns the residual over the first guess, its output layer starting at zero, so epoch 0 is the
classical floor and stays the best checkpoint until training beats it. The latent time series of each channel
and latent cell has a GP prior over time (--kernel) and a posterior with a banded precision; the ELBO
(or, with --iwae_samples K > 1, the importance-weighted bound) is fitted on the training frames' cells,
validation frames are imputed from their real mask and scored through the Run; after training the
predictive variance is calibrated on them (one factor).

    python gpvae/train_gpvae.py --data_path data/synthetic_default.nc --kernel matern --window 16 \\
        --max_epochs 20 --checkpoint_dir checkpoints/gpvae
"""
from __future__ import annotations

import pytorch_lightning as pl

from gapfill import cli, lightning, runs
from gapfill.data import DataError
from gapfill.floor import GUESS_TAG
from gapfill.view import resolve_first_guess
from gpvae.gpvae_data import Frames, WindowData, check_window
from gpvae.gpvae_model import GPVAE
from gpvae.gpvae_prior import KERNELS, MATERN_NU

METHOD = "gpvae"
STRIDES = (1, 2, 4, 8)


def add_model_args(p) -> None:
    g = p.add_argument_group("GP-VAE")
    g.add_argument("--window", type=cli.at_least_two, default=16, help="consecutive frames per window")
    g.add_argument("--latent_dim", type=cli.positive_int, default=8, help="latent channels")
    g.add_argument("--latent_stride", type=int, choices=STRIDES, default=2, help="latent map resolution: 1/stride")
    g.add_argument("--filters", type=cli.positive_int, default=32, help="conv filters of encoder and decoder")
    g.add_argument("--kernel", choices=KERNELS, default="matern", help="GP prior over time; none: N(0, I)")
    g.add_argument("--length_scale", type=cli.positive_float, default=5.0, help="prior length scale, frames")
    g.add_argument("--sigma", type=cli.positive_float, default=1.0, help="prior standard deviation")
    g.add_argument("--kernel_scales", type=cli.positive_int, default=1,
                   help="length scales l, l/2, l/4... across the latent channels")
    g.add_argument("--matern_nu", type=float, choices=MATERN_NU, default=0.5,
                   help="1/2: the Markov (AR(1)) prior, rough like weather anomalies; 3/2, 5/2 smoother")
    g.add_argument("--learn_prior", action="store_true", help="learn the length scales and sigmas")
    g.add_argument("--beta", type=cli.positive_float, default=1.0, help="weight of the KL term")
    g.add_argument("--iwae_samples", type=cli.positive_int, default=1, help="K > 1: importance-weighted bound")
    g.add_argument("--heteroscedastic", action="store_true",
                   help="decoder predicts each cell's variance (default: a fixed per-band variance)")
    g.add_argument("--n_samples", type=cli.positive_int, default=32, help="posterior samples for the variance")
    g.add_argument("--patch_size", type=cli.positive_int, default=64, help="training crop (reduced to the field)")
    g.add_argument("--batch_size", type=cli.positive_int, default=4, help="windows per batch")
    g.add_argument("--lr", type=cli.positive_float, default=1e-3)
    cli.add_first_guess_arg(g)


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    lightning.add_engine_args(p)
    add_model_args(p)
    p.set_defaults(mask_kind="random", prob_masking=0.9, mask_type="dynamic", max_iters=None)
    return p.parse_args(argv)


def name_parts(args) -> dict:
    return {"mask": cli.mask_tag(vars(args)), "fg": GUESS_TAG[args.first_guess], "k": args.kernel,
            "w": args.window, "z": args.latent_dim, "b": args.beta, "seed": args.seed}


def main(argv=None) -> int:
    args = parse_args(argv)
    run = runs.open_training(args, METHOD, name_parts(args), ["epoch", "train_loss", "valid_rmse", "valid_nll"])
    if run.status == "finished":
        return 0
    problem = run.problem
    check_window(problem, args.window)
    frames = Frames(problem, None, resolve_first_guess(run, args.first_guess))   # the core's view, normalised
    normalizer = frames.normalizer
    floor_var = frames.floor_variance()
    if run.status == "new":
        run.record(display_name="GP-VAE", normalization=normalizer.to_dict(), floor_var=floor_var.tolist())
    pl.seed_everything(args.seed, workers=True, verbose=False)
    module = GPVAE.from_args(vars(args), len(normalizer.mean), floor_var)
    if run.status == "new":
        module.start_at_prior()
    module.frames = frames
    data = WindowData(frames, args.window, args.patch_size, args.batch_size, vars(args))
    if not len(data.data):
        raise DataError("no training window: fewer training frames than --window")
    lightning.fit(run, args, module, data, before_finish=lambda: calibrate(run, args, frames, floor_var))
    return 0


def calibrate(run: runs.Run, args, frames: Frames, floor_var) -> None:
    """The best model's variance factor, fitted on the validation frames (one number in config.json)."""
    vs = run.problem.splits["valid"]
    if vs.stop == vs.start:
        return
    module = lightning.load_module(GPVAE.from_args(vars(args), frames.bands, floor_var), run.dir, "best",
                                   run.device)
    module.frames = frames
    run.record(variance_scale=run.variance_scale(*module.reconstruct(range(vs.start, vs.stop), seed=args.seed)))


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
