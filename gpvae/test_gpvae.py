"""Test GP-VAE runs: impute the test frames from their observed cells (and those of the earlier frames a
window reaches back into), then the method's pages: latent time series with posterior bands, posterior
samples of an imputed frame, and the prior's correlation against lag.

    python gpvae/test_gpvae.py --checkpoints checkpoints/gpvae/* --results_folder results/gpvae
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from gapfill import lightning, runs
from gapfill.data import Normalizer
from gapfill.evaluate import script_main
from gapfill.view import chosen_guess
from gpvae.gpvae_data import Frames, check_window, covering_windows
from gpvae.gpvae_model import GPVAE

METHOD = "gpvae"
A4 = (11.69, 8.27)


def load(problem, cfg, run_dir, device):
    """The run's best GPVAE on `device`, reading `problem`'s model view."""
    args = cfg["args"]
    check_window(problem, args["window"])
    frames = Frames(problem, Normalizer.from_dict(cfg["normalization"]), chosen_guess(cfg))
    module = lightning.load_module(GPVAE.from_args(args, frames.bands, cfg["floor_var"]), run_dir, "best", device)
    module.frames, module.variance_scale = frames, float(cfg.get("variance_scale", 1.0))
    return module


def predict(problem, cfg, run_dir, device):
    """(mean, variance), (T_test, B, Y, X) physical units."""
    sl = problem.splits["test"]
    module = load(problem, cfg, run_dir, device)
    return module.reconstruct(range(sl.start, sl.stop), seed=cfg["args"]["seed"])


def analyses(problem, cfg, run_dir, device, mean) -> list:
    """The GP-VAE's own pages, on the first test window (`mean` (T_test, B, Y, X) is not read)."""
    module = load(problem, cfg, run_dir, device)
    sl, f = problem.splits["test"], problem.field
    W = module.hparams.window
    start, chunk = covering_windows(range(sl.start, sl.stop), W, f.shape[0])[0]
    out = module.impute_window(start, module.hparams.n_samples, seed=cfg["args"]["seed"], keep_samples=3)
    return [latent_page(out, start, W), samples_page(module, out, start, chunk[0], f), prior_page(module, W)]


def latent_page(out: dict, start: int, W: int) -> Figure:
    """Posterior mean +- 2 std of the latent series of up to 4 channels at the latent map's centre."""
    mu, var = out["mu"], out["var_z"]                                     # (C, h, w, W)
    C, h, w, _ = mu.shape
    fig = Figure(figsize=A4, layout="constrained")
    axes = fig.subplots(2, 2, squeeze=False).ravel()
    t = np.arange(start, start + W)
    for c, ax in enumerate(axes):
        if c >= C:
            ax.axis("off")
            continue
        m, s = mu[c, h // 2, w // 2], np.sqrt(var[c, h // 2, w // 2])
        ax.fill_between(t, m - 2 * s, m + 2 * s, alpha=0.3, label="posterior mean +- 2 std")
        ax.plot(t, m, "o-", ms=3)
        ax.set(xlabel="frame", ylabel=f"latent channel {c}", title=f"channel {c}, latent cell ({h // 2}, {w // 2})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("latent time series of the first test window (the GP prior ties neighbouring frames)")
    return fig


def samples_page(module, out: dict, start: int, t: int, field) -> Figure:
    """Truth, the imputed mean and three posterior samples of frame t (band 0), physical units."""
    F = module.frames
    i = t - start
    guess = F.guess([t])[0].astype(np.float64)                           # (B, Y, X) normalised
    to_phys = lambda r: F.normalizer.denormalize((guess + r)[None])[0, 0]   # noqa: E731
    panels = [("truth", field.values[t, 0]), ("imputed (posterior mean)", to_phys(out["mean"][i]))]
    panels += [(f"posterior sample {k + 1}", to_phys(s[i])) for k, s in enumerate(out["samples"])]
    fig = Figure(figsize=A4, layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    finite = np.concatenate([p[np.isfinite(p)] for _, p in panels])
    lo, hi = np.percentile(finite, [1, 99])
    seen = F.seen[t, 0]
    for ax, (name, img) in zip(axes[: len(panels)], panels, strict=True):
        im = ax.imshow(img, vmin=lo, vmax=hi, cmap="viridis", origin="lower")   # y ascending in memory
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    yy, xx = np.nonzero(seen)
    axes[0].scatter(xx, yy, s=2, c="w", marker=".", label="observed")
    axes[0].legend(fontsize=7, loc="lower right")
    spread = np.std(np.stack([to_phys(s[i]) for s in out["samples"]]), axis=0) if out["samples"] else np.zeros_like(seen)
    im2 = axes[-1].imshow(spread, cmap="magma", origin="lower")
    axes[-1].set_title("std across the samples shown", fontsize=9)
    axes[-1].axis("off")
    fig.colorbar(im, ax=axes[:-1].tolist(), shrink=0.6, label=f"{field.bands[0]} ({field.units[0]})")
    fig.colorbar(im2, ax=axes[-1], shrink=0.6)
    fig.suptitle(f"frame {t}: posterior samples are distinct draws, decoded")
    return fig


def prior_page(module, W: int) -> Figure:
    """Each channel group's prior correlation against lag (the learned length scale with --learn_prior)."""
    fig = Figure(figsize=A4, layout="constrained")
    ax = fig.subplots()
    with torch.no_grad():
        for K, idx, ls in zip(module.kernels(W), module.groups, torch.exp(module.log_length), strict=True):
            K = K.cpu().numpy()
            corr = K[0] / K[0, 0]
            ax.plot(np.arange(W), corr, "o-", ms=3,
                    label=f"channels {idx[0]}-{idx[-1]}: {module.hparams.kernel}, length {float(ls):.3g} frames")
    ax.set(xlabel="lag (frames)", ylabel="prior correlation", title="GP prior over time, correlation against lag")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


main = script_main(METHOD, predict, __doc__, analyses=analyses)


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
