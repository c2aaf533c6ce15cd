"""Per-chip and per-band statistics of GAN runs on the reference code's chip protocol (gan_eval): one CSV
row per chip (test frames; --split valid: the validation frames, as the reference) and one per chip and
band, with SSIM, MSE, MAE and RMSE on the cloud cells, the cloud fraction and the time gap, for whichever
dates were masked (--mask_position, default the run's), next to linear interpolation in time.

    python gan_gapfill/create_stats.py --checkpoint_dir checkpoints/gan/<run> --mask_position 1 3
    python gan_gapfill/create_stats.py --model_cap 64 --batch_size 16 --dataset gapfill --dataroot data/f.nc \
        --mask_position 2 --cloud_range 0.01 1.0 --local_rank 0 --checkpoint_dir <run> --split valid
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from gan_gapfill.gan_eval import add_chip_args, run_chips, stats_rows
from gapfill import cli
from gapfill.entry import run_cli
from gapfill.files import write_csv
from gapfill.system import setup_logging

log = logging.getLogger(__name__)


def main(argv=None) -> int:
    p = cli.Parser(description=__doc__.splitlines()[0])
    add_chip_args(p)
    p.add_argument("--out_dir", default=None, help="default: results/gan/<run>/stats_<dates> (stats_valid_<dates>)")
    p.add_argument("--save_chips", action="store_true", help="also write chips.npz (truth, filled, clouds)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    for run_dir in args.checkpoint_dir:
        cfg, problem, res = run_chips(run_dir, args)
        per_image, per_band = stats_rows(res, problem.field.bands)
        tag = ("valid_" if args.split == "valid" else "") + "-".join(str(d + 1) for d in res["masked"])
        out = Path(args.out_dir or Path("results") / "gan" / cfg["run_name"] / f"stats_{tag}")
        out.mkdir(parents=True, exist_ok=True)
        if not per_image:
            log.warning("%s: no chip has a cloud cell", run_dir)
            continue
        write_csv(out / "stats_per_image.csv", per_image)
        write_csv(out / "stats_per_band.csv", per_band)
        if args.save_chips:
            np.savez_compressed(out / "chips.npz", **{k: v for k, v in res.items()})
        m = {k: np.mean([r[k] for r in per_image]) for k in ("ssim", "rmse", "rmse_time_interpolation", "cloud_fraction")}
        log.info("%s, dates %s: %d chips; SSIM %.4f, RMSE %.4g (time interpolation %.4g), cloud fraction %.2f; wrote %s",
                 cfg["run_name"], tag, len(per_image), m["ssim"], m["rmse"], m["rmse_time_interpolation"],
                 m["cloud_fraction"], out)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
