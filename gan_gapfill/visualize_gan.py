"""Pictures of GAN runs on the chip protocol (gan_eval): per test chip and masked date, the input with its
clouds, the filled chip, the truth and the absolute error; RGB composites where the bands are red, green and
blue (HLS names B04 B03 B02, or names saying so), band 1 otherwise. PNGs and one PDF per run.

    python gan_gapfill/visualize_gan.py --checkpoint_dir checkpoints/gan/<run> --mask_position 2 --n_chips 8
    python gan_gapfill/visualize_gan.py --model_cap 64 --batch_size 16 --dataset gapfill --dataroot data/f.nc \
        --mask_position 2 --cloud_range 0.01 1.0 --local_rank 0 --checkpoint_dir <run>     # the reference's
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gan_gapfill.gan_eval import add_chip_args, run_chips
from gapfill import cli
from gapfill.entry import run_cli
from gapfill.system import setup_logging

log = logging.getLogger(__name__)
RGB_NAMES = (("B04", "B03", "B02"), ("red", "green", "blue"))


def rgb_bands(bands: list[str]) -> list[int] | None:
    """Indices of the red, green and blue bands, or None."""
    low = [b.lower() for b in bands]
    for names in RGB_NAMES:
        idx = [next((i for i, b in enumerate(low) if n.lower() == b or n.lower() in b.split("_")), None) for n in names]
        if all(i is not None for i in idx):
            return [int(i) for i in idx if i is not None]
    return None


def _image(chip: np.ndarray, rgb, lo, hi) -> np.ndarray:
    """(B, P, P) -> (P, P, 3) RGB in [0, 1], or (P, P) of band 0."""
    if rgb is None:
        return chip[0]
    img = np.stack([chip[i] for i in rgb], -1)
    return np.clip((img - lo) / np.maximum(hi - lo, 1e-12), 0, 1)


def chip_figure(res: dict, i: int, d: int, bands, rgb, title: str) -> Figure:
    """Chip i, date d of evaluate_chips' result (truth, filled (N, D, B, P, P), cloud (N, D, P, P)): input
    with clouds, filled, truth (RGB bands `rgb` or band 0) and the error on cloud cells."""
    truth, filled, cloud = res["truth"][i, d], res["filled"][i, d], res["cloud"][i, d]
    sel = rgb if rgb is not None else [0]
    lo = np.nanpercentile(truth[sel], 2, axis=(1, 2)) if rgb else None
    hi = np.nanpercentile(truth[sel], 98, axis=(1, 2)) if rgb else None
    inp = np.where(cloud[None], np.nan, truth)
    panels = [("input with clouds", _image(inp, rgb, lo, hi)), ("filled", _image(filled, rgb, lo, hi)),
              ("truth", _image(truth, rgb, lo, hi))]
    fig = Figure(figsize=(11.69, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)
    vmin, vmax = np.nanpercentile(truth[0], [1, 99])
    for ax, (name, img) in zip(axes[:3], panels, strict=True):
        if img.ndim == 3:
            ax.imshow(np.where(np.isnan(img), 0.5, img), origin="lower")
        else:
            ax.imshow(img, origin="lower", vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    err = np.where(cloud, np.sqrt(np.mean((filled - truth) ** 2, axis=0)), np.nan)
    im = axes[3].imshow(err, origin="lower", cmap="magma")
    axes[3].set_title("error on cloud cells (RMS over bands)", fontsize=9)
    axes[3].axis("off")
    fig.colorbar(im, ax=axes[3], shrink=0.8)
    kind = "RGB " + "/".join(bands[k] for k in rgb) if rgb else bands[0]
    fig.suptitle(f"{title}: chip {i}, date {d + 1} ({kind}; cloud {cloud.mean():.0%})", fontsize=10)
    return fig


def main(argv=None) -> int:
    p = cli.Parser(description=__doc__.splitlines()[0])
    add_chip_args(p)
    p.add_argument("--n_chips", type=cli.positive_int, default=8)
    p.add_argument("--out_dir", default=None, help="default: results/gan/<run>/pictures")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    for run_dir in args.checkpoint_dir:
        cfg, problem, res = run_chips(run_dir, args)
        out = Path(args.out_dir or Path("results") / "gan" / cfg["run_name"] / "pictures")
        out.mkdir(parents=True, exist_ok=True)
        bands = problem.field.bands
        rgb = rgb_bands(bands)
        with PdfPages(out / "chips.pdf") as pdf:
            for i in range(min(args.n_chips, len(res["truth"]))):
                for d in res["masked"]:
                    fig = chip_figure(res, i, int(d), bands, rgb, cfg["run_name"])
                    fig.savefig(out / f"chip{i:03d}_date{int(d) + 1}.png", dpi=100)
                    pdf.savefig(fig)
        log.info("wrote %s (PNGs and chips.pdf)", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
