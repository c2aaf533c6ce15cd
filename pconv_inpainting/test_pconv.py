"""Test partial-convolution UNet runs by inpainting the test frames (the model sees their observed cells),
then the analyses: hole error against the radius of a centred circular hole (12 radii, 5 to 65 cells),
validation loss per epoch, CoMBInE's per-epoch statistics (runs trained with --analysis_every), value
distributions on hole cells, and the standard pages and summaries.

    python pconv_inpainting/test_pconv.py --checkpoints checkpoints/pconv/* --results_folder results/pconv
"""
from __future__ import annotations

import csv

import numpy as np
from matplotlib.figure import Figure

from gapfill import checkpoints, runs
from gapfill.data import Normalizer
from gapfill.evaluate import script_main
from gapfill.floor import climatology
from gapfill.metrics import rmse
from gapfill.view import chosen_guess
from pconv_inpainting import keras
from pconv_inpainting.pconv_data import Data, inpaint, keras_device

METHOD = "pconv"
RADII = np.linspace(5, 65, 12)


def load(run_dir, cfg, problem, frames):
    data = Data(cfg["args"], problem, Normalizer.from_dict(cfg["normalization"]), frames=frames,
                kind=chosen_guess(cfg))
    return data, checkpoints.load_checkpoint(run_dir, "best")


def predict(problem, cfg, run_dir, device):
    """(mean, variance or None), (T_test, B, Y, X): each test frame from its observed cells (first guess
    plus the predicted residual; the variance with the factor calibrated on the validation frames)."""
    sl = problem.splits["test"]
    with keras.device(keras_device(device)):
        data, model = load(run_dir, cfg, problem, range(sl.start, sl.stop))
        seen = data.visible_in & problem.observed[:, None]
        return inpaint(model, data, seen, range(sl.start, sl.stop), variance_scale=cfg.get("variance_scale", 1.0))


def analyses(problem, cfg, run_dir, device, mean) -> list:
    """Extra PDF pages: circle-size curve, validation loss per epoch, value distributions on hole cells
    (of `mean` (T_test, B, Y, X), the prediction the test just scored)."""
    f, sl = problem.field, problem.splits["test"]
    frames = np.arange(sl.start, sl.stop)[:4]
    data, model = load(run_dir, cfg, problem, frames)
    T, B, Y, X = f.shape
    yy, xx = np.mgrid[:Y, :X]
    truth = f.values[frames]
    errs, floor = [], []
    clim = climatology(problem.visible(), problem.splits["train"])       # (B, Y, X) the classical floor
    for r in RADII:                                # a centred disc hidden, every other valid cell seen
        hole = (yy - (Y - 1) / 2) ** 2 + (xx - (X - 1) / 2) ** 2 <= r * r
        seen = data.truth_known.copy()
        seen[frames] &= ~hole[None, None]
        scored = np.isfinite(truth) & hole[None, None]
        if not scored.any() or not seen[frames].any(axis=(1, 2, 3)).all():     # nothing hidden, or nothing seen
            errs.append(np.nan)
            floor.append(np.nan)
            continue
        disc, _ = inpaint(model, data, seen, frames)
        errs.append(rmse(truth, disc, scored))
        known = scored & np.isfinite(clim)[None]                  # no climatology without training frames
        floor.append(rmse(truth, np.broadcast_to(clim, truth.shape), known) if known.any() else np.nan)
    figs = []
    fig = Figure(figsize=(11.69, 8.27), layout="constrained")
    ax = fig.subplots()
    ax.plot(RADII, errs, "o-", label="pconv UNet")
    ax.plot(RADII, floor, "s--", color="grey", label="climatology")
    ax.set(xlabel="radius of the centred circular hole (cells)", ylabel=f"hole RMSE ({f.units[0]})",
           title=f"hole error against hole size, first {len(frames)} test frames")
    ax.grid(alpha=0.3)
    ax.legend()
    figs.append(fig)

    fig = Figure(figsize=(11.69, 8.27), layout="constrained")
    axes = fig.subplots(1, 2)
    rows = []
    if (run_dir / "train_log.csv").exists():
        with open(run_dir / "train_log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    for ax, key, what in ((axes[0], "loss", "training loss (normalised units)"),
                          (axes[1], "valid_rmse", f"validation RMSE on hidden cells ({f.units[0]})")):
        vals = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
        if vals:
            ax.plot(np.arange(1, len(vals) + 1), vals, "o-")
        ax.set(xlabel="epoch (stages in order)", ylabel=what, title=what)
        ax.grid(alpha=0.3)
    figs.append(fig)

    if (run_dir / "analysis.csv").exists():
        figs.append(analysis_figure(run_dir, f.units[0]))
    hidden = problem.scored("test")
    fig = Figure(figsize=(11.69, 8.27), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, B, squeeze=False)[0])
    for b, ax in enumerate(axes):
        t, p = f.values[sl][:, b][hidden[:, b]], mean[:, b][hidden[:, b]]
        bins = np.linspace(min(t.min(), p.min()), max(t.max(), p.max()), 60)
        for v, name, c in ((t, "truth", "k"), (p, "prediction", "C0")):
            mu, sd = float(v.mean()), float(v.std())
            ax.hist(v, bins=bins, density=True, histtype="step", color=c, lw=1.5,
                    label=f"{name}: mean {mu:.4g}, std {sd:.3g}")
            g = np.linspace(bins[0], bins[-1], 200)
            ax.plot(g, np.exp(-0.5 * ((g - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), color=c, ls=":")
        ax.set(xlabel=f"{f.bands[b]} ({f.units[b]})", ylabel="density",
               title=f"values on hole cells ({hidden[:, b].sum():,} cells), fitted normals dotted")
        ax.legend(fontsize=8)
    figs.append(fig)
    return figs


def analysis_figure(run_dir, unit: str) -> Figure:
    """--analysis_every's page (CoMBInE's per-epoch statistics of the validation frames' hidden cells): mean
    and std of |difference| and the % difference per recorded epoch; each frame's RMSE against its hidden
    share at the first, middle and last recorded epoch. A resumed run's repeated epochs count once."""
    def read(name) -> list[dict]:
        with open(run_dir / name, newline="") as fh:
            return list(csv.DictReader(fh))
    epochs = {(r["phase"], r["epoch"]): r for r in read("analysis.csv")}        # the last row of an epoch
    keys = list(epochs)
    mean, std, pct = (np.array([float(epochs[k][c]) for k in keys]) for c in ("abs_mean", "abs_std", "pct_difference"))
    fig = Figure(figsize=(11.69, 8.27), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    x = np.arange(len(keys))
    ax.plot(x, mean, "o-", label="mean |difference|")
    ax.fill_between(x, mean - std, mean + std, alpha=0.2, label="+- std")
    ax.set_xticks(x, [f"{e} (stage {p})" for p, e in keys], rotation=45, fontsize=7)
    ax.set(xlabel="epoch (0: the first guess)", ylabel=f"|difference| on hidden cells ({unit})",
           title="validation frames, hidden cells")
    twin = ax.twinx()
    twin.plot(x, pct, "s--", color="C3", label="% difference")
    twin.set_ylabel("% difference (of the mean |truth - its mean|)", color="C3")
    ax.legend(loc="upper right")
    frames = read("analysis_frames.csv")
    for i, k in enumerate(sorted({keys[0], keys[len(keys) // 2], keys[-1]}, key=keys.index)):
        rows = [r for r in frames if (r["phase"], r["epoch"]) == k]
        ax2.scatter([float(r["share"]) for r in rows], [float(r["rmse"]) for r in rows], s=12, color=f"C{i}",
                    label=f"epoch {k[1]} (stage {k[0]})")
    ax2.set(xlabel="hidden share of the frame", ylabel=f"frame RMSE ({unit})", title="error against mask size")
    ax2.legend(fontsize=8)
    return fig


main = script_main(METHOD, predict, __doc__, analyses=analyses)


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
