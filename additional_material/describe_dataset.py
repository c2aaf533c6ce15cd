"""Describe a dataset exactly as the methods see it (through gapfill.data.open_field).

    python -m additional_material.describe_dataset data/synthetic_default.nc [--variable temperature] [--out fig.png]

Logs shape, coordinates, time span, units, value range, NaN share and lag-1 autocorrelations
(in time: mean over cells of corr(x_t, x_t+1); in space: corr of horizontally and vertically
adjacent cells, pooled over all frames), and saves a one-page figure with, per band (4 at most):
mean map, std map, domain-mean time series and value histogram.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gapfill.data import Field, open_field  # noqa: E402
from gapfill.entry import Parser, run_cli  # noqa: E402
from gapfill.files import check_figure_path  # noqa: E402
from gapfill.system import setup_logging
from gapfill.times import decode_times

log = logging.getLogger(__name__)

MAX_BANDS_PLOTTED = 4     # one row per band keeps the page readable
GEO_Y_NAMES = ("lat", "latitude", "rlat", "nav_lat")


def pair_corr(a: np.ndarray, b: np.ndarray, axis=None) -> np.ndarray | float:
    """Pearson correlation of the pairs (a, b) where both are finite, pooled (axis=None) or along `axis`.

    Along an axis, entries with fewer than 3 pairs or zero variance give NaN.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    m = np.isfinite(a) & np.isfinite(b)
    n = m.sum(axis=axis)
    a0, b0 = np.where(m, a, 0.0), np.where(m, b, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma, mb = a0.sum(axis=axis) / n, b0.sum(axis=axis) / n
        if axis is not None:
            ma, mb = np.expand_dims(ma, axis), np.expand_dims(mb, axis)
        da, db = np.where(m, a - ma, 0.0), np.where(m, b - mb, 0.0)
        cov = (da * db).sum(axis=axis)
        den = np.sqrt((da * da).sum(axis=axis) * (db * db).sum(axis=axis))
        r = np.where((n >= 3) & (den > 0), cov / np.where(den > 0, den, 1.0), np.nan)
    return float(r) if axis is None else r


def _time_labels(field: Field) -> tuple[str, str]:
    """First and last time as dates in the file's calendar when the units allow it (`months since` too),
    else as numbers."""
    t = field.time[[0, -1]]
    d = decode_times(t, field.time_units, field.calendar)
    if d is not None:
        return d[0].isoformat(), d[1].isoformat()
    return f"{t[0]:g}", f"{t[1]:g}"


def describe(field: Field) -> dict:
    """Numbers describing a field (T, B, Y, X): shape, coordinates, time span, and per band
    units, min/max/mean/std, nan_share, lag1_time, lag1_x (horizontal neighbours), lag1_y (vertical)."""
    T, B, Y, X = field.values.shape
    start, end = _time_labels(field)
    out: dict[str, Any]
    out = {"path": field.path, "shape": (T, B, Y, X),
           "y_name": field.y_name, "y_range": (float(np.min(field.y)), float(np.max(field.y))),
           "x_name": field.x_name, "x_range": (float(np.min(field.x)), float(np.max(field.x))),
           "time_units": field.time_units, "calendar": field.calendar,
           "time_range": (float(field.time[0]), float(field.time[-1])), "time_start": start, "time_end": end,
           "time_span_days": float(field.time_days[-1] - field.time_days[0]),
           "nan_share": float(1.0 - np.isfinite(field.values).mean()), "bands": {}}
    for b, name in enumerate(field.bands):
        v = field.values[:, b].astype(np.float64)                          # (T, Y, X)
        ok = v[np.isfinite(v)]
        lag_t = pair_corr(v[:-1], v[1:], axis=0) if T > 1 else np.full((Y, X), np.nan)   # (Y, X)
        out["bands"][name] = {
            "units": field.units[b] if b < len(field.units) else "",
            "min": float(ok.min()), "max": float(ok.max()), "mean": float(ok.mean()), "std": float(ok.std()),
            "nan_share": float(1.0 - ok.size / v.size),
            "lag1_time": float(np.nanmean(lag_t)) if np.isfinite(lag_t).any() else float("nan"),
            "lag1_x": pair_corr(v[:, :, :-1], v[:, :, 1:]),
            "lag1_y": pair_corr(v[:, :-1, :], v[:, 1:, :]),
        }
    return out


def log_description(d: dict) -> None:
    T, B, Y, X = d["shape"]
    log.info("%s: (time, band, y, x) = %s, %.2f%% NaN overall", d["path"], d["shape"], 100 * d["nan_share"])
    log.info("  %s: %d values in [%g, %g]; %s: %d values in [%g, %g]", d["y_name"], Y, *d["y_range"],
             d["x_name"], X, *d["x_range"])
    log.info("  time: %d frames, %s .. %s (%g .. %g %s, calendar %s), span %.1f days", T, d["time_start"],
             d["time_end"], *d["time_range"], d["time_units"], d["calendar"], d["time_span_days"])
    for name, s in d["bands"].items():
        log.info("  band %-16s units %-8s range [%.4g, %.4g] mean %.4g std %.4g NaN %.2f%% "
                 "lag-1 corr: time %.3f, x %.3f, y %.3f", name, s["units"] or "-", s["min"], s["max"],
                 s["mean"], s["std"], 100 * s["nan_share"], s["lag1_time"], s["lag1_x"], s["lag1_y"])


def plot_description(field: Field, out) -> Path:
    """One-page figure: per band (at most 4) mean map, std map, domain-mean time series, histogram."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nb = min(len(field.bands), MAX_BANDS_PLOTTED)
    fig, axes = plt.subplots(nb, 4, figsize=(16, 3.4 * nb + 0.6), squeeze=False)
    geo = field.y_name.lower() in GEO_Y_NAMES
    origin = "lower" if geo and field.y[0] <= field.y[-1] else "upper"
    y0, y1 = (field.y[0], field.y[-1]) if origin == "lower" else (field.y[-1], field.y[0])
    extent = (float(field.x[0]), float(field.x[-1]), float(y0), float(y1))
    days = field.time_days
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)                   # all-NaN (land) cells
        for b in range(nb):
            v = field.values[:, b].astype(np.float64)                      # (T, Y, X)
            name = f"{field.bands[b]} [{field.units[b] or '-'}]"
            ax = axes[b]
            for k, (img, title) in enumerate(((np.nanmean(v, 0), "mean"), (np.nanstd(v, 0), "std in time"))):
                im = ax[k].imshow(img, origin=origin, extent=extent, aspect="auto", cmap="viridis",
                                  interpolation="nearest")
                fig.colorbar(im, ax=ax[k], fraction=0.046)
                ax[k].set_title(f"{name}: {title}", fontsize=10)
                ax[k].set(xlabel=field.x_name, ylabel=field.y_name)
            ax[2].plot(days, np.nanmean(v, axis=(1, 2)), "-o" if len(days) < 50 else "-", lw=1, ms=3)
            ax[2].set_title(f"{name}: domain mean", fontsize=10)
            ax[2].set(xlabel="days since first frame")
            ok = v[np.isfinite(v)]
            ax[3].hist(ok, bins=60, color="tab:blue")
            ax[3].set_title(f"{name}: histogram, {100 * (1 - ok.size / v.size):.1f}% NaN", fontsize=10)
            ax[3].set(xlabel="value")
    more = f" (first {nb} of {len(field.bands)} bands)" if len(field.bands) > nb else ""
    fig.suptitle(f"{field.path}: (time, band, y, x) = {field.values.shape}{more}")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> dict:
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("file", help="NetCDF file")
    p.add_argument("--variable", nargs="+", default=None, help="bands to describe (default: every field variable)")
    p.add_argument("--out", default=None, help="figure path (.png or .pdf); default <file stem>_description.png")
    args = p.parse_args(argv)
    setup_logging()
    out_path = Path(args.out or f"{Path(args.file).stem}_description.png")
    check_figure_path(out_path, "--out")
    field = open_field(args.file, args.variable)
    d = describe(field)
    log_description(d)
    out = plot_description(field, out_path)
    log.info("figure: %s", out)
    return d


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
