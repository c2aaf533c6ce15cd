"""Train the conditional GAN that fills cloud gaps in multi-temporal, multi-band chips, on the core's
Lightning engine (manual optimisation: one discriminator and one generator step per batch).

A chip is --time_steps consecutive frames x all bands, stacked as channels, cut to --chip_size, shaped like
the test: every date shows its training-mask cells, and the --mask_position dates (default: every
combination of the dates, cycled by chip) show one of --mask_variants masks of the training family (clouds
with a share from --cloud_range by default), drawn anew each epoch. The generator predicts the residual over
the core's first guess (--first_guess, default auto: the floor method whose guess scores best on the
validation frames), so the untrained generator (epoch 0) is the first guess, and is trained with the hinge
loss on gap patches + --alpha x MSE on gap cells. The best checkpoint is the
highest SSIM of the validation frames' hidden cells (filled frames, the data's range), with the networks in
eval mode; validation frames are filled from their real clouds and scored through the Run.

    python gan_gapfill/train_gan.py --data_path data/multispectral.nc --epochs 200 --batch_size 16 \\
        --model_cap 64 --mask_position 2 --alpha 5 --discriminator_lr 0.0001 --generator_lr 0.0005 \\
        --cloud_range 0.01 1.0 --training_length 1600
"""
from __future__ import annotations

import argparse
import logging
import sys

import pytorch_lightning as pl

from gan_gapfill.gan_data import ChipData, FieldChips, TrainChips, check_time_steps, data_file, positions
from gan_gapfill.gan_model import GAN
from gapfill import cli, lightning, runs
from gapfill.data import DataError
from gapfill.floor import GUESS_TAG
from gapfill.view import resolve_first_guess

METHOD = "gan"
log = logging.getLogger("gan.train")


def add_model_args(p) -> None:
    g = p.add_argument_group("GAN (option names of the reference code)")
    g.add_argument("--epochs", dest="max_epochs", type=cli.positive_int, default=argparse.SUPPRESS,
                   help="the same as --max_epochs")
    g.add_argument("--dataset", choices=("gapfill",), default="gapfill", help="accepted for the reference's commands")
    g.add_argument("--visualization", default=None,
                   help="accepted for the reference's commands (its training pictures): test_gan's PDF and "
                        "visualize_gan draw the chips; --dataroot is the reference's name for --data_path")
    g.add_argument("--batch_size", type=cli.positive_int, default=32)
    g.add_argument("--n_bands", type=cli.positive_int, default=None, help="check: the field must have this many bands")
    g.add_argument("--time_steps", type=cli.positive_int, default=3, help="dates per chip")
    g.add_argument("--chip_size", type=cli.positive_int, default=224,
                   help="chip side (reduced to the field; padded to a multiple of 16 inside)")
    g.add_argument("--model_cap", type=cli.positive_int, default=64,
                   help="generator width (16, 32, 48, 64 in the reference)")
    g.add_argument("--n_res_blocks", type=cli.positive_int, default=9)
    g.add_argument("--generator", choices=("global", "unet"), default="global",
                   help="global: pix2pixHD's encoder-decoder (no skip links); unet: the same with skip links")
    g.add_argument("--mask_input", action="store_true", help="cloud masks as extra input channels")
    g.add_argument("--n_scales", type=cli.positive_int, default=2, help="discriminator scales")
    g.add_argument("--disc_cap", type=cli.positive_int, default=64, help="discriminator width (64 to 8 x 64 channels)")
    g.add_argument("--generator_lr", type=cli.positive_float, default=1e-5)
    g.add_argument("--discriminator_lr", type=cli.positive_float, default=4e-5)
    g.add_argument("--alpha", type=cli.nonnegative_float, default=1.0, help="weight of the cloud-cell MSE")
    g.add_argument("--select", choices=("valid_ssim", "valid_rmse"), default="valid_ssim",
                   help="the validation score that picks best.ckpt and stops early (the reference's: SSIM of the "
                        "cloud cells); the benchmark scores RMSE")
    g.add_argument("--mask_position", type=cli.positive_int, nargs="+", default=None,
                   help="the clouded dates, 1-based (2: the middle of 3; 1 3: first and last); "
                        "default every combination of the dates but all, cycled by chip")
    g.add_argument("--training_length", type=cli.positive_int, default=None,
                   help="training chips: a seeded random set of this many (default: every start x tile)")
    cli.add_first_guess_arg(g)
    g.add_argument("--mask_variants", type=cli.positive_int, default=3,
                   help="masks per training frame for the masked dates: the training mask and redraws of its kind")


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    lightning.add_engine_args(p)
    add_model_args(p)
    p.set_defaults(mask_kind="clouds", mask_type="dynamic", cloud_range=(0.1, 1.0), max_iters=None, max_epochs=200,
                   patience=20)
    argv = sys.argv[1:] if argv is None else list(argv)
    return p.parse_args([a.replace("--dataroot", "--data_path", 1) if a == "--dataroot" or a.startswith("--dataroot=")
                         else a for a in argv])


def name_parts(args) -> dict:
    mp = "".join(map(str, args.mask_position)) if args.mask_position else "all"
    return {"mask": cli.mask_tag(vars(args)), "g": args.generator, "cap": args.model_cap, "mp": mp,
            "a": args.alpha, "mi": int(args.mask_input), "fg": GUESS_TAG[args.first_guess], "seed": args.seed}


def main(argv=None) -> int:
    args = parse_args(argv)
    data_file(args.data_path, "--data_path")
    if args.visualization:
        log.info("--visualization %s: not applied; test_gan's PDF and visualize_gan draw the chips", args.visualization)
    run = runs.open_training(args, METHOD, name_parts(args),
                             ["epoch", "train_loss", "g_loss", "d_loss", "valid_rmse", "valid_ssim"])
    if run.status == "finished":
        return 0
    problem = run.problem
    B = problem.field.shape[1]
    if args.n_bands is not None and args.n_bands != B:
        raise DataError(f"--n_bands {args.n_bands}, but {problem.field.path} has {B} bands: "
                        f"{', '.join(problem.field.bands)}")
    mask_kwargs = {k: v for k, v in cli.mask_options(vars(args)).items() if v is not None}
    mask_kwargs["mode"] = "dynamic"
    check_time_steps(args.time_steps, problem.field.shape[0])      # before positions() counts combinations
    combos = positions(args.mask_position, args.time_steps)
    data = FieldChips(problem, None, args.time_steps, resolve_first_guess(run, args.first_guess), mask_kwargs,
                      args.mask_variants, args.seed)
    normalizer = data.normalizer
    chips = TrainChips(data, args.chip_size, combos, args.training_length, args.seed)
    if run.status == "new":
        run.record(display_name="GAN", normalization=normalizer.to_dict(), chip_size=chips.P)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    module = GAN.from_args(vars(args), B)
    module.monitor = (args.select, "max" if args.select == "valid_ssim" else "min")
    module.data = data
    lightning.fit(run, args, module, ChipData(chips, args.batch_size, vars(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
