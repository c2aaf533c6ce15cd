"""Loading a trained GAN run, and the chip protocol of the reference code on the test frames (`--split valid`:
the validation frames, where the reference computed its statistics): chips of
`time_steps` consecutive frames (non-overlapping) x tiles of the run's chip size, clouds at the
`mask_position` dates from a fixed seeded set (share from `cloud_range`), the other dates clear. Scores on
the cloud cells only, physical units: MSE, MAE, RMSE, SSIM of the filled image (truth outside the clouds,
the data's real range; gapfill.metrics.ssim), per chip and per chip and band, for whichever dates were
masked, with the cloud fraction and the time gap to the nearest clear date, next to linear interpolation in
time (gapfill.floor's time_interpolation).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from gan_gapfill.gan_data import FieldChips, data_file, make_chip, positions
from gan_gapfill.gan_model import GAN
from gapfill import cli, lightning
from gapfill.data import DataError, Normalizer
from gapfill.evaluate import check_grid, load_run
from gapfill.floor import first_guess
from gapfill.masks import make_mask
from gapfill.metrics import ssim
from gapfill.problem import Problem, build_problem
from gapfill.system import resolve_device
from gapfill.view import chosen_guess

log = logging.getLogger(__name__)
CLOUD_SEED = 4242                    # the test clouds: (run seed, CLOUD_SEED, chip, date)


def load_trained(problem, cfg: dict, run_dir, device: str = "cpu") -> GAN:
    """The run's best GAN on `device` in eval mode, on `problem` (the model's view)."""
    args = cfg["args"]
    module = lightning.load_module(GAN.from_args(args, problem.field.shape[1]), run_dir, "best", device)
    module.data = FieldChips(problem, Normalizer.from_dict(cfg["normalization"]), args["time_steps"], chosen_guess(cfg))
    return module


def add_chip_args(p) -> None:
    """create_stats' and visualize_gan's options: the chips' masked dates, clouds, split and device, and the
    reference's `--model_cap --dataset --dataroot --local_rank` (its commands run as they are)."""
    p.add_argument("--checkpoint_dir", nargs="+", required=True, help="GAN run folder(s)")
    p.add_argument("--mask_position", type=cli.positive_int, nargs="+", default=None,
                   help="clouded dates, 1-based (default: the run's; a run trained on every combination: the middle)")
    p.add_argument("--cloud_range", nargs="+", action=cli._RangeAction, default=None,
                   help="cloud share of the chips' clouds, LOW HIGH (default: the run's)")
    p.add_argument("--split", choices=("test", "valid"), default="test",
                   help="the frames the chips are cut from; valid: the reference's statistics (validation set)")
    p.add_argument("--batch_size", type=cli.positive_int, default=8)
    p.add_argument("--device", type=cli.device_name, default="auto")
    p.add_argument("--log_level", default="INFO")
    g = p.add_argument_group("the reference's options")
    g.add_argument("--model_cap", type=cli.positive_int, default=None,
                   help="checked against the run's: the network is always the checkpoint's")
    g.add_argument("--dataset", choices=("gapfill",), default="gapfill", help="accepted")
    g.add_argument("--dataroot", default=None, help="a data file with the run's grid instead of the run's own")
    g.add_argument("--local_rank", type=cli.nonnegative_int, default=None, help="GPU index")


def run_chips(run_dir, args) -> tuple[dict, Problem, dict]:
    """(config, problem, evaluate_chips' result) of one run folder with `add_chip_args`' options `args`;
    masked dates default to the run's (the middle date for a run trained on every combination)."""
    cfg = load_run(run_dir, "gan", "this GAN script (create_stats, visualize_gan)")
    if args.model_cap is not None and args.model_cap != cfg["args"]["model_cap"]:
        log.warning("--model_cap %d: %s was trained with %d; its checkpoint's network is used", args.model_cap,
                    cfg["run_name"], cfg["args"]["model_cap"])
    problem = build_problem(cfg["args"], {"data_path": data_file(args.dataroot)} if args.dataroot else None)
    if args.dataroot:
        check_grid(cfg, problem.field)
    module = load_trained(problem.for_model(), cfg, run_dir, resolve_device(args.device, args.local_rank))
    mp = args.mask_position or cfg["args"]["mask_position"] or [(cfg["args"]["time_steps"] + 1) // 2]
    return cfg, problem, evaluate_chips(module, problem, cfg, mp, args.cloud_range, args.batch_size, args.split)


def chip_origins(problem, time_steps: int, P: int, split: str = "test") -> list[tuple[int, int, int]]:
    """(start frame, y0, x0) of every chip of `split`: non-overlapping runs of dates x non-overlapping tiles."""
    sl = problem.splits[split]
    Y, X = problem.field.shape[2:]
    if sl.stop - sl.start < time_steps:
        raise DataError(f"the {split} split has {sl.stop - sl.start} frames, fewer than the chips' {time_steps} dates")
    return [(s, y, x) for s in range(sl.start, sl.stop - time_steps + 1, time_steps)
            for y in range(0, Y - P + 1, P) for x in range(0, X - P + 1, P)]


@torch.no_grad()
def evaluate_chips(module: GAN, problem, cfg: dict, mask_position=None, cloud_range=None,
                   batch_size: int = 8, split: str = "test") -> dict:
    """Fill the chips of `split`. Returns arrays (N chips): truth, filled, interp (N, D, B, P, P) physical units,
    cloud (N, D, P, P) bool, origin (N, 3), masked dates (0-based), times (N, D)."""
    args, D = cfg["args"], module.data
    assert D is not None                                      # load_trained sets it
    pos = positions(mask_position or args["mask_position"], args["time_steps"])[0]
    cr = tuple(cloud_range or args["cloud_range"])
    P = int(cfg["chip_size"])
    f, norm = problem.field, D.normalizer
    values = np.nan_to_num(norm.normalize(f.values)).astype(np.float32)        # the full field (evaluation side)
    valid = np.isfinite(f.values)
    origins = chip_origins(problem, D.D, P, split)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("truth", "filled", "interp", "cloud")}
    seed = int(args["seed"])
    for a in range(0, len(origins), batch_size):
        chips = []
        for i, (s, y0, x0) in enumerate(origins[a:a + batch_size], start=a):
            win = (slice(s, s + D.D), slice(None), slice(y0, y0 + P), slice(x0, x0 + P))
            cloud = np.zeros((D.D, P, P), bool)
            for d in pos:
                cloud[d] = ~make_mask("clouds", "fixed", (1, P, P), cloud_range=cr, cloud_scale=max(2.0, P / 16),
                                      seed=int(np.random.default_rng([seed, CLOUD_SEED, i, d]).integers(2**31)))[0]
            seen = valid[win] & ~cloud[:, None]
            clim = D.clim[:, y0:y0 + P, x0:x0 + P]
            guess = D.chip_guess(values[win], seen, clim)
            chips.append(make_chip(values[win], seen, guess))
            out["truth"].append(f.values[win])
            out["cloud"].append(cloud & valid[win].any(1))
            interp = first_guess("time_interpolation", np.where(seen, values[win], np.nan), seen, slice(0, 0), clim=clim)
            out["interp"].append(norm.denormalize(interp))
        batch = module.pad16({k: torch.stack([c[k] for c in chips]).to(module.device) for k in chips[0]})
        _, filled = module.fill(batch, module.inputs(batch))
        filled_n = filled[..., :P, :P].float().cpu().numpy().reshape(len(chips) * D.D, D.B, P, P).astype(np.float64)
        out["filled"] += list(norm.denormalize(filled_n).reshape(len(chips), D.D, D.B, P, P))   # band axis 1
    res = {k: np.stack(v) for k, v in out.items()}
    res["origin"] = np.array(origins)
    res["masked"] = np.array(pos)
    t = np.asarray(f.time, dtype=np.float64)
    res["times"] = np.stack([t[s:s + D.D] for s, _, _ in origins])
    return res


def _scores(truth, filled, interp, cloud) -> dict:
    """Scores over the cloud cells of (n, Y, X) maps of one band or several (stacked)."""
    cloud = cloud & np.isfinite(truth)
    err = (filled - truth)[cloud]
    e_i = (interp - truth)[cloud]
    ss = [ssim(t, np.where(c, p, t), c) for t, p, c in zip(truth, filled, cloud, strict=True) if c.any()]
    return {"ssim": float(np.nanmean(ss)) if ss else float("nan"), "mse": float(np.mean(err ** 2)),
            "mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "rmse_time_interpolation": float(np.sqrt(np.mean(e_i ** 2)))}


def stats_rows(res: dict, bands: list[str]) -> tuple[list[dict], list[dict]]:
    """(per-chip rows, per-chip-and-band rows) of `evaluate_chips`' result."""
    per_image, per_band = [], []
    masked = list(res["masked"])
    clear = [d for d in range(res["truth"].shape[1]) if d not in masked]
    for i in range(len(res["truth"])):
        cloud = res["cloud"][i][masked]                                         # (m, P, P)
        if not cloud.any():
            continue
        times = res["times"][i]
        gap = float(np.mean([min((abs(times[d] - times[c]) for c in clear), default=np.nan) for d in masked]))
        s, y0, x0 = (int(v) for v in res["origin"][i])
        head = {"chip": i, "start_frame": s, "y0": y0, "x0": x0, "masked_dates": " ".join(str(d + 1) for d in masked),
                "cloud_fraction": float(cloud.mean()), "time_gap": gap}
        B = res["truth"].shape[2]
        chip = {k: res[k][i][masked] for k in ("truth", "filled", "interp")}         # (m, B, P, P)
        allb = {k: np.concatenate(list(v.transpose(1, 0, 2, 3))) for k, v in chip.items()}
        per_image.append({**head, **_scores(allb["truth"], allb["filled"], allb["interp"], np.concatenate([cloud] * B))})
        for b in range(B):
            per_band.append({**head, "band": bands[b],
                             **_scores(chip["truth"][:, b], chip["filled"][:, b], chip["interp"][:, b], cloud)})
    return per_image, per_band
