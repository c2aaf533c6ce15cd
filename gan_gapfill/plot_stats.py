"""Plots of create_stats' CSVs (what the reference's per-image and band-correlation notebooks did): metric
distributions against linear interpolation in time, metrics against cloud fraction, and the band-to-band
correlation of the per-chip errors.

    python gan_gapfill/plot_stats.py --stats_dir results/gan/<run>/stats_2 --out stats.pdf
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
from gapfill.files import check_figure_path
from gapfill.system import setup_logging

log = logging.getLogger(__name__)


def read(path: Path, numbers: tuple[str, ...], names: tuple[str, ...] = ()) -> list[dict]:
    """The rows of a CSV written by create_stats.py, with the columns `numbers` (numbers in every row) and
    `names`; anything else is one line naming the file."""
    if not path.exists():
        raise DataError(f"{path} does not exist: run create_stats.py first")
    rows = list(csv.DictReader(open(path)))
    missing = [c for c in (*numbers, *names) if not rows or c not in rows[0]]
    if missing:
        raise DataError(f"{path}: not written by create_stats.py (no rows, or no column {missing[0]!r})")
    try:
        np.array([[float(r[c]) for c in numbers] for r in rows])
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: a value is not a number ({err}); run create_stats.py again") from None
    return rows


def main(argv=None) -> int:
    p = cli.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--stats_dir", required=True, help="a folder written by create_stats.py")
    p.add_argument("--out", default=None, help="default: <stats_dir>/stats.pdf")
    p.add_argument("--log_level", default="INFO")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    d = Path(args.stats_dir)
    out = check_figure_path(args.out or d / "stats.pdf", "--out", ("pdf",))
    img = read(d / "stats_per_image.csv", ("rmse", "rmse_time_interpolation", "ssim", "cloud_fraction"))
    band = read(d / "stats_per_band.csv", ("chip", "rmse"), ("band",))
    col = lambda rows, k: np.array([float(r[k]) for r in rows])             # noqa: E731
    pages = []
    fig = Figure(figsize=(11.69, 8.27), layout="constrained")
    ax = fig.subplots(2, 2).ravel()
    ax[0].hist([col(img, "rmse"), col(img, "rmse_time_interpolation")], bins=20, label=["GAN", "time interpolation"])
    ax[0].set(title="cloud-cell RMSE per chip", xlabel="RMSE")
    ax[0].legend()
    ax[1].hist(col(img, "ssim"), bins=20)
    ax[1].set(title="cloud-cell SSIM per chip", xlabel="SSIM")
    for a, k in ((ax[2], "rmse"), (ax[3], "ssim")):
        a.scatter(col(img, "cloud_fraction"), col(img, k), s=10, label="GAN")
        if k == "rmse":
            a.scatter(col(img, "cloud_fraction"), col(img, "rmse_time_interpolation"), s=10, label="time interpolation")
            a.legend()
        a.set(title=f"{k.upper()} against cloud fraction", xlabel="cloud fraction", ylabel=k)
    for a in ax:
        a.grid(alpha=0.3)
    fig.suptitle(f"{d}: {len(img)} chips, dates {img[0]['masked_dates']}")
    pages.append(fig)
    names = list(dict.fromkeys(r["band"] for r in band))
    chips = sorted({int(r["chip"]) for r in band})
    err = np.full((len(chips), len(names)), np.nan)                          # (chips, bands) RMSE
    for r in band:
        err[chips.index(int(r["chip"])), names.index(r["band"])] = float(r["rmse"])
    fig = Figure(figsize=(11.69, 8.27), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    corr = np.corrcoef(err.T) if len(chips) > 2 else np.full((len(names),) * 2, np.nan)
    im = a1.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    a1.set_xticks(range(len(names)), names, rotation=45)
    a1.set_yticks(range(len(names)), names)
    a1.set_title("band-to-band correlation of the per-chip RMSE")
    fig.colorbar(im, ax=a1, shrink=0.6)
    a2.boxplot([err[:, j] for j in range(len(names))])
    a2.set_xticks(range(1, len(names) + 1), names)
    a2.set(title="per-band cloud-cell RMSE over chips", ylabel="RMSE")
    pages.append(fig)
    with PdfPages(out) as pdf:
        for f in pages:
            pdf.savefig(f)
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
