"""The per-run PDF: one page per test frame (input, truth, reconstruction, std, error), then the summary page.

Input is what a test script writes: `prediction.nc` (truth, mean, optional variance, observed, valid;
(time, band, y, x), physical units) and its `metrics.json` dict.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from tqdm import tqdm

from gapfill.report.common import PAGE, _cmap, _fmt, _mask_label, _num, _scores, _short
from gapfill.times import decode_times

log = logging.getLogger(__name__)

MAX_BANDS = 4                         # rows per frame page; more bands would be unreadable
HIDDEN_GREY = (0.45, 0.45, 0.45, 1)   # hidden (scored) cells in the observed-input panel
SPLIT_NAMES = {"train": "training", "valid": "validation"}
TABLE_KEYS = [("rmse", "RMSE"), ("mae", "MAE"), ("bias", "bias"), ("r2", "R2"), ("ssim", "SSIM"),
              ("crps", "CRPS"), ("coverage95", "cov95")]


def _rgba(mask2d: np.ndarray, color) -> np.ndarray:
    """(Y, X, 4) one solid colour where mask2d is True, transparent elsewhere: an overlay's image."""
    rgba = np.zeros(mask2d.shape + (4,))
    rgba[mask2d] = matplotlib.colors.to_rgba(color)
    return rgba


def image_origin(prediction: xr.Dataset) -> str:
    """'lower' for ascending geographic/projected y (north up), 'upper' for pixel rows and descending y."""
    if "y" not in prediction.coords:
        return "upper"
    y = np.asarray(prediction["y"].values, dtype=float)
    if y.size > 1 and np.all(np.diff(y) > 0) and not np.array_equal(y, np.arange(y.size)):
        return "lower"
    return "upper"


def _time_label(prediction: xr.Dataset, t: int) -> str:
    if "time" not in prediction.coords:
        return ""
    v = prediction["time"].values[t]
    if np.issubdtype(np.asarray(v).dtype, np.datetime64):
        return str(np.datetime_as_string(v, unit="m"))
    units, cal = prediction["time"].attrs.get("units"), prediction["time"].attrs.get("calendar")
    if units:
        dates = decode_times(np.atleast_1d(v), units, cal)        # months since, 360_day, noleap...
        return str(dates[0]) if dates is not None else f"{v} {units}"
    return str(v)


class _FramePages:
    """The frame pages of one split, one figure redrawn per frame: a row per band, columns input | truth |
    reconstruction | std (or variance) | |error|. The first page is laid out (constrained layout: no
    overlapping titles) and later pages keep that layout and swap only images, colour limits and titles;
    the layout is half of a page's drawing time and the same on every page."""

    def __init__(self, p: dict, meta: dict):
        self.p, self.meta, self.laid_out = p, meta, False
        n_bands, ny, nx = p["truth"].shape[1:]
        nb = min(n_bands, MAX_BANDS)
        self.fig = fig = Figure(figsize=(PAGE[0], max(3.6, 1.0 + 2.2 * nb)), layout="constrained")
        axes = fig.subplots(nb, 5, squeeze=False)
        origin, blank, clear = p["origin"], np.zeros((ny, nx)), np.zeros((ny, nx, 4))
        titles = ["observed input", "ground truth", "reconstruction", f"predictive {p['show']}", "|error| on hidden cells"]
        self.images: list[dict] = []
        for b in range(nb):
            unit = p["units"][b] if b < len(p["units"]) else ""
            ax, im = axes[b], {}
            for i, key in enumerate(("observed", "truth", "recon")):
                im[key] = self._image(ax[i], "viridis", unit, blank)
            im["hidden"] = ax[0].imshow(clear, origin=origin, interpolation="nearest")
            if p["spread"] is None:
                ax[3].set_facecolor("0.96")
                ax[3].set_box_aspect(ny / nx)               # same size as the image panels
                ax[3].text(0.5, 0.5, "no uncertainty\nestimate\n(method gives\nno variance)", ha="center",
                           va="center", fontsize=9, transform=ax[3].transAxes)
            else:
                im["spread"] = self._image(ax[3], "viridis", f"({unit})²" if unit and p["show"] == "variance" else unit,
                                           blank)
            im["error"] = self._image(ax[4], "magma_r", unit, blank)
            im["seen"] = ax[4].imshow(clear, origin=origin, interpolation="nearest")
            ax[0].set_ylabel(f"{p['bands'][b]}" + (f" [{unit}]" if unit else ""), fontsize=9)
            for j, a in enumerate(ax):
                a.set_xticks([])
                a.set_yticks([])
                a.tick_params(labelsize=7)
                if b == 0:
                    a.set_title(titles[j], fontsize=9)
            self.images.append(im)
        self.title = fig.suptitle("\n", fontsize=10)
        fig.supxlabel("dark grey: hidden (scored) cells   light grey: never observed (NaN)   "
                      "white in error panel: observed cells", fontsize=8)

    def _image(self, ax, cmap: str, label: str, blank: np.ndarray):
        """An image panel with its colour bar (`label` above it); its data and limits are set per page."""
        im = ax.imshow(blank, cmap=_cmap(cmap), vmin=0, vmax=1, origin=self.p["origin"], interpolation="nearest")
        self.fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.set_title(label, fontsize=7)
        return im

    def draw(self, pdf, t: int, pf: dict | None) -> None:
        """Add the page of frame t (pf: its per-frame scores, test frames only) to `pdf`."""
        p = self.p
        truth, recon, hidden, valid = p["truth"][t], p["recon"][t], p["hidden"][t], p["valid"][t]     # (B, Y, X)
        for b, im in enumerate(self.images):
            both = np.concatenate([truth[b][valid[b]], recon[b][valid[b] & np.isfinite(recon[b])]])
            vmin, vmax = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
            if vmax <= vmin:
                vmin, vmax = vmin - 0.5, vmax + 0.5
            shown = np.where(valid[b], truth[b], np.nan)
            for key, img in (("observed", np.where(hidden[b], np.nan, shown)), ("truth", shown),
                             ("recon", np.where(valid[b], recon[b], np.nan))):
                im[key].set_data(img)
                im[key].set_clim(vmin, vmax)
            im["hidden"].set_data(_rgba(hidden[b], HIDDEN_GREY))
            if "spread" in im:
                s = np.where(valid[b], p["spread"][t][b], np.nan)
                fin = s[np.isfinite(s)]
                im["spread"].set_data(s)
                im["spread"].set_clim(*((float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)))
            err = np.where(hidden[b], np.abs(recon[b] - truth[b]), np.nan)
            emax = float(np.nanmax(err)) if np.isfinite(err).any() else 1.0
            im["error"].set_data(err)
            im["error"].set_clim(0, emax if emax > 0 else 1.0)
            im["seen"].set_data(_rgba(valid[b] & ~hidden[b], "white"))
        meta = self.meta
        scores = "" if pf is None else f" | frame MAE {_fmt(pf.get('mae'))}, RMSE {_fmt(pf.get('rmse'))}"
        more = f" (first {MAX_BANDS} of {truth.shape[0]} bands)" if truth.shape[0] > MAX_BANDS else ""
        self.title.set_text(f"{meta['method']} | {_short(meta['run_name'], 80)} | {meta['dataset']}\n"
                            f"{meta['split']} frame {t + 1}/{p['truth'].shape[0]}  {p['times'][t]} | mask: {meta['mask']}"
                            f"{scores}{more}")
        pdf.savefig(self.fig)
        if not self.laid_out:                  # keep the first page's layout
            self.fig.set_layout_engine("none")
            self.laid_out = True


def _summary_page(pdf, meta: dict, m: dict):
    """Table of method vs baselines, RMSE bars, per-frame RMSE curves, power spectra."""
    rows = {meta["method"]: _scores(m)}
    rows.update({f"{k} (baseline)": v for k, v in (m.get("baselines") or {}).items()})
    fig = Figure(figsize=PAGE, layout="constrained")
    gs = fig.add_gridspec(2, 3, height_ratios=[1, 1.4])
    ax = fig.add_subplot(gs[0, :])
    ax.axis("off")
    cells = [[_short(name, 40)] + [_fmt((r.get("overall") or {}).get(k)) for k, _ in TABLE_KEYS]
             for name, r in rows.items()]                                    # names as a column: never clipped
    tab = ax.table(cellText=cells, colLabels=[""] + [c for _, c in TABLE_KEYS], bbox=Bbox.from_bounds(0.0, 0.0, 1.0, 0.9),
                   colWidths=[0.3] + [0.7 / len(TABLE_KEYS)] * len(TABLE_KEYS))
    tab.auto_set_font_size(False)
    tab.set_fontsize(9)
    tab.scale(1, 1.4)
    cost = m.get("cost") or {}
    ax.set_title(f"overall scores on hidden valid cells | train {_fmt(cost.get('train_seconds'))} s, test "
                 f"{_fmt(cost.get('test_seconds'))} s, peak memory {_fmt(cost.get('peak_memory_mb'))} MB", fontsize=9)

    ax = fig.add_subplot(gs[1, 0])
    names = list(rows)
    vals = [_num((r.get("overall") or {}).get("rmse")) for r in rows.values()]
    ax.barh(range(len(names)), np.nan_to_num(vals), color=["C0"] + ["0.6"] * (len(names) - 1))
    ax.set_yticks(range(len(names)), [_short(n, 24) for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("RMSE", fontsize=8)
    ax.set_title("RMSE: method vs baselines", fontsize=9)

    ax = fig.add_subplot(gs[1, 1])
    for i, (name, r) in enumerate(rows.items()):
        pf = r.get("per_frame") or []
        ax.plot([e.get("frame", j) for j, e in enumerate(pf)], [_num(e.get("rmse")) for e in pf], marker="o", ms=3,
                lw=2 if i == 0 else 1, color="C0" if i == 0 else f"C{i}", label=_short(name, 24))
    n_frames = len(_scores(m).get("per_frame") or [])
    ax.set_xticks(range(0, max(n_frames, 1), max(1, math.ceil(n_frames / 10))))   # integer frame ticks
    ax.set_xlim(-0.5, max(n_frames - 1, 0) + 0.5)  # a single frame sits in the middle
    ax.set_xlabel("test frame", fontsize=8)
    ax.set_ylabel("RMSE", fontsize=8)
    ax.set_title("RMSE per test frame", fontsize=9)
    ax.legend(fontsize=6)

    ax = fig.add_subplot(gs[1, 2])
    spec = _scores(m).get("spectrum") or {}
    k, st, sp = (np.asarray(spec.get(key) or [], dtype=float) for key in ("k", "truth", "pred"))
    ok = (k > 0) & (st > 0) & (sp > 0) if k.size and k.size == st.size == sp.size else np.zeros(0, bool)
    if ok.any():
        ax.loglog(k[ok], st[ok], "k-o", ms=3, label="truth")
        ax.loglog(k[ok], sp[ok], "C0-o", ms=3, label="reconstruction")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no spectrum", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("wavenumber (cycles per frame)", fontsize=8)
    ax.set_ylabel("power", fontsize=8)
    ax.set_title("radially averaged power spectrum", fontsize=9)
    for a in fig.axes[1:]:
        a.tick_params(labelsize=7)
    fig.suptitle(f"{meta['method']} | {_short(meta['run_name'], 80)} | {meta['dataset']} | mask: {meta['mask']}"
                 + (" | PARTIAL: training did not finish" if m.get("partial") else ""), fontsize=10,
                 color="C3" if m.get("partial") else "black")
    pdf.savefig(fig)


def _panels(prediction: xr.Dataset, metrics: dict, show: str) -> dict:
    """What the frame pages draw from a prediction file's frames: (T, B, Y, X) arrays, bands, units, origin."""
    dims = ("time", "band", "y", "x")
    truth = prediction["truth"].transpose(*dims).values.astype(np.float64)              # (T, B, Y, X)
    mean = prediction["mean"].transpose(*dims).values.astype(np.float64)
    valid = prediction["valid"].transpose(*dims).values.astype(bool) & np.isfinite(truth)
    observed = prediction["observed"].values.astype(bool)                               # (T, Y, X) or (T, B, Y, X)
    if observed.ndim == 3:
        observed = observed[:, None]
    hidden = valid & ~observed                                                            # scored cells
    var = prediction["variance"].transpose(*dims).values if "variance" in prediction else None
    spread = None if var is None else np.clip(var.astype(np.float64), 0, None)
    if spread is not None and show == "std":
        spread = np.sqrt(spread)
    bands = [str(b) for b in prediction["band"].values] if "band" in prediction.coords \
        else [f"band{b}" for b in range(truth.shape[1])]
    units = metrics.get("units") or prediction.attrs.get("units") or []
    units = units.split(";") if isinstance(units, str) else [str(u) for u in units]
    return {"truth": truth, "recon": np.where(hidden, mean, truth), "spread": spread, "show": show, "hidden": hidden,
            "valid": valid, "bands": bands, "units": units, "origin": image_origin(prediction),
            "times": [_time_label(prediction, t) for t in range(truth.shape[0])]}


def run_report(pdf_path, prediction: xr.Dataset, metrics: dict, extra_figures=(), show: str = "std",
               before=()) -> Path:
    """Write the per-run PDF: one page per test frame, a summary page, then `extra_figures` (a method's
    own analyses, matplotlib Figures). Returns the PDF path. `show`: the uncertainty column, 'std' or
    'variance' (the test scripts' --show). `before`: (split, prediction) pairs whose frames come first
    ('train', 'valid': the test scripts' --pages all; drawn, not scored).

    prediction: truth, mean, optional variance (time, band, y, x); observed (time, y, x); valid
    (time, band, y, x). metrics: a metrics.json dict (or a bare compute_metrics dict).
    """
    pdf_path = Path(pdf_path)
    attrs = prediction.attrs
    meta = {"method": metrics.get("method") or attrs.get("method", "method"),
            "run_name": metrics.get("run_name") or attrs.get("run_name", ""),
            "dataset": metrics.get("dataset") or attrs.get("dataset", ""),
            "mask": _mask_label(metrics) or attrs.get("mask_label", "")}
    per_frame = {e.get("frame"): e for e in (_scores(metrics).get("per_frame") or [])}
    splits = [(SPLIT_NAMES.get(split, split), ds, {}) for split, ds in before] + [("test", prediction, per_frame)]
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    n_pages = 0
    with PdfPages(pdf_path) as pdf:
        for label, ds, scores in splits:
            mask = ds.attrs.get("mask_label") if label != "test" else None     # the training mask there
            pages = _FramePages(_panels(ds, metrics, show), {**meta, "split": label, "mask": mask or meta["mask"]})
            for t in tqdm(range(ds.sizes["time"]), desc=f"report {pdf_path.name[:40]} {label}", unit="page",
                          disable=None):
                pages.draw(pdf, t, scores.get(t))
            n_pages += ds.sizes["time"]
        _summary_page(pdf, meta, metrics)
        for fig in extra_figures:
            pdf.savefig(fig)
    log.info("wrote %s (%d frame pages + summary%s)", pdf_path, n_pages,
             f" + {len(extra_figures)} analysis pages" if extra_figures else "")
    return pdf_path
