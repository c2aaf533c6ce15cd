"""Training curves of GAN runs (what the reference did in a notebook): generator, discriminator and
cloud-cell MSE losses, and the validation RMSE and SSIM, per epoch, from each run's train_log.csv.

    python gan_gapfill/plot_training.py --checkpoint_dir checkpoints/gan/* --out training.pdf
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gapfill import cli
from gapfill.entry import run_cli
from gapfill.errors import DataError
from gapfill.evaluate import load_run
from gapfill.files import check_figure_path
from gapfill.system import setup_logging

log = logging.getLogger(__name__)
PANELS = (("g_loss", "generator loss"), ("d_loss", "discriminator loss (hinge)"),
          ("train_loss", "cloud-cell MSE (normalised)"), ("valid_rmse", "validation RMSE"),
          ("valid_ssim", "validation cloud-cell SSIM (picks best.ckpt)"))


def read_log(run_dir) -> dict:
    """{column: (n,) float array} of a run's train_log.csv (NaN where empty)."""
    load_run(run_dir, "gan", "gan_gapfill/plot_training.py")           # a GAN run, or one line saying whose
    path = Path(run_dir) / "train_log.csv"
    if not path.exists():
        raise DataError(f"{run_dir}: no train_log.csv (no epoch finished yet)")
    rows = list(csv.DictReader(open(path)))
    num = lambda v: float(v) if v not in ("", "None", None) else np.nan    # noqa: E731
    try:
        return {k: np.array([num(r[k]) for r in rows]) for k in rows[0]} if rows else {}
    except ValueError as err:
        raise DataError(f"{path}: not a training log of ours ({err})") from None


def main(argv=None) -> int:
    p = cli.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint_dir", nargs="+", required=True, help="GAN run folder(s)")
    p.add_argument("--out", default="results/gan/training.pdf")
    p.add_argument("--log_level", default="INFO")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    out = check_figure_path(args.out, "--out", ("pdf",))
    logs = {Path(d).name: read_log(d) for d in args.checkpoint_dir}
    fig = Figure(figsize=(11.69, 8.27), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for ax, (key, title) in zip(axes, PANELS, strict=False):
        for name, lg in logs.items():
            if key in lg and np.isfinite(lg[key]).any():
                ax.plot(lg["epoch"], lg[key], "o-", ms=3, label=name[-40:])
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    axes[-1].axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(out) as pdf:
        pdf.savefig(fig)
    log.info("wrote %s (%d runs)", out, len(logs))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
