"""Reports: per-run PDF, per-method summary (CSV + PDF), cross-method comparison (CSV + PDF).

Inputs are the files a test script writes: `prediction.nc` (truth, mean, optional variance,
observed, valid; (time, band, y, x), physical units) and `metrics.json` (see docs/design.md). Plots use
`matplotlib.figure.Figure` directly (no pyplot, no global state; Agg-rendered into PdfPages).

    python -m gapfill.report compare --results results --out results/comparison
    python -m gapfill.report run --run_dir results/exact_gp/<run_name>
"""
from __future__ import annotations

import csv
import json
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

from gapfill.data import decode_times
from gapfill.entry import Parser, run_cli
from gapfill.errors import DataError
from gapfill.files import atomic_path, read_json
from gapfill.system import setup_logging

log = logging.getLogger(__name__)

PAGE = (11.69, 8.27)                  # A4 landscape, inches
MAX_BANDS = 4                         # rows per frame page; more bands would be unreadable
HIDDEN_GREY = (0.45, 0.45, 0.45, 1)   # hidden (scored) cells in the observed-input panel
NAN_GREY = "0.85"                     # never-observed cells everywhere
TABLE_KEYS = [("rmse", "RMSE"), ("mae", "MAE"), ("bias", "bias"), ("r2", "R2"), ("ssim", "SSIM"),
              ("crps", "CRPS"), ("coverage95", "cov95")]
OVERALL_KEYS = ["rmse", "mae", "bias", "r2", "ssim", "nll", "crps", "coverage95", "std_error_corr",
                "mean_variance", "n_scored"]
LEADERBOARD_KEYS = ["method", "run_name", "status", "dataset", "mask", "units", "rmse", "mae", "bias", "r2", "ssim", "crps",
                    "coverage95", "nll", "test_seconds", "train_seconds", "path"]


# ---------------------------------------------------------------- small helpers
def _num(v) -> float:
    """Metric value -> float, nan for None/missing/non-numeric."""
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _fmt(v) -> str:
    x = _num(v)
    return "–" if not math.isfinite(x) else f"{x:.4g}"


def _short(s, n: int = 48) -> str:
    """Shorten a long name with a middle ellipsis so axis labels stay readable."""
    s = str(s)
    return s if len(s) <= n else s[: n // 2 - 1] + "…" + s[-(n - n // 2):]


def _cmap(name: str, bad=NAN_GREY):
    return matplotlib.colormaps[name].with_extremes(bad=bad)


def _scores(m: dict) -> dict:
    """The compute_metrics dict inside a metrics.json dict (or the dict itself)."""
    return m.get("metrics", m) if "overall" not in m else m


def _mask_label(m: dict) -> str:
    mask = m.get("mask") or {}
    return str(mask.get("label") or mask.get("kind") or "") if isinstance(mask, dict) else str(mask)


def _overlay(ax, mask2d, color, origin):
    """Paint cells where mask2d is True in one solid colour over an image."""
    rgba = np.zeros(mask2d.shape + (4,))
    rgba[mask2d] = matplotlib.colors.to_rgba(color)
    ax.imshow(rgba, origin=origin, interpolation="nearest")


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


# ---------------------------------------------------------------- per-run PDF
def _frame_page(pdf, p: dict, t: int, meta: dict, pf: dict | None):
    """One page for test frame t: a row per band, columns input | truth | reconstruction | std | |error|."""
    truth, recon, std, hidden, valid = (p["truth"][t], p["recon"][t], None if p["std"] is None else p["std"][t],
                                        p["hidden"][t], p["valid"][t])                       # (B, Y, X)
    nb = min(truth.shape[0], MAX_BANDS)
    fig = Figure(figsize=(PAGE[0], max(3.6, 1.0 + 2.2 * nb)), layout="constrained")  # no overlapping titles
    axes = fig.subplots(nb, 5, squeeze=False)
    origin = p["origin"]
    titles = ["observed input", "ground truth", "reconstruction", "predictive std", "|error| on hidden cells"]
    for b in range(nb):
        unit = p["units"][b] if b < len(p["units"]) else ""
        both = np.concatenate([truth[b][valid[b]], recon[b][valid[b] & np.isfinite(recon[b])]])
        vmin, vmax = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        if vmax <= vmin:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        shown = np.where(valid[b], truth[b], np.nan)
        observed_in = np.where(hidden[b], np.nan, shown)
        err = np.where(hidden[b], np.abs(recon[b] - truth[b]), np.nan)
        ax = axes[b]
        for i, (img, cmap, lo, hi) in enumerate([(observed_in, "viridis", vmin, vmax), (shown, "viridis", vmin, vmax),
                                                 (np.where(valid[b], recon[b], np.nan), "viridis", vmin, vmax)]):
            im = ax[i].imshow(img, cmap=_cmap(cmap), vmin=lo, vmax=hi, origin=origin, interpolation="nearest")
            fig.colorbar(im, ax=ax[i], fraction=0.046, pad=0.02).ax.set_title(unit, fontsize=7)
        _overlay(ax[0], hidden[b], HIDDEN_GREY, origin)
        if std is None:
            ax[3].set_facecolor("0.96")
            ax[3].set_box_aspect(truth.shape[1] / truth.shape[2])  # same size as the image panels
            ax[3].text(0.5, 0.5, "no uncertainty\nestimate\n(method gives\nno variance)", ha="center", va="center",
                       fontsize=9, transform=ax[3].transAxes)
        else:
            im = ax[3].imshow(np.where(valid[b], std[b], np.nan), cmap=_cmap("viridis"), origin=origin,
                              interpolation="nearest")
            fig.colorbar(im, ax=ax[3], fraction=0.046, pad=0.02).ax.set_title(unit, fontsize=7)
        emax = float(np.nanmax(err)) if np.isfinite(err).any() else 1.0
        im = ax[4].imshow(err, cmap=_cmap("magma_r"), vmin=0, vmax=emax if emax > 0 else 1.0, origin=origin,
                          interpolation="nearest")
        _overlay(ax[4], valid[b] & ~hidden[b], "white", origin)
        fig.colorbar(im, ax=ax[4], fraction=0.046, pad=0.02).ax.set_title(unit, fontsize=7)
        ax[0].set_ylabel(f"{p['bands'][b]}" + (f" [{unit}]" if unit else ""), fontsize=9)
        for j, a in enumerate(ax):
            a.set_xticks([])
            a.set_yticks([])
            a.tick_params(labelsize=7)
            if b == 0:
                a.set_title(titles[j], fontsize=9)
    scores = "" if pf is None else f" | frame MAE {_fmt(pf.get('mae'))}, RMSE {_fmt(pf.get('rmse'))}"
    more = f" (first {MAX_BANDS} of {truth.shape[0]} bands)" if truth.shape[0] > MAX_BANDS else ""
    fig.suptitle(f"{meta['method']} | {_short(meta['run_name'], 80)} | {meta['dataset']}\n"
                 f"test frame {t + 1}/{p['truth'].shape[0]}  {meta['times'][t]} | mask: {meta['mask']}{scores}{more}",
                 fontsize=10)
    fig.supxlabel("dark grey: hidden (scored) cells   light grey: never observed (NaN)   "
                  "white in error panel: observed cells", fontsize=8)
    pdf.savefig(fig)


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


def run_report(pdf_path, prediction: xr.Dataset, metrics: dict, extra_figures=()) -> Path:
    """Write the per-run PDF: one page per test frame, a summary page, then `extra_figures` (a method's
    own analyses, matplotlib Figures). Returns the PDF path.

    prediction: truth, mean, optional variance (time, band, y, x); observed (time, y, x); valid
    (time, band, y, x). metrics: a metrics.json dict (or a bare compute_metrics dict).
    """
    pdf_path = Path(pdf_path)
    dims = ("time", "band", "y", "x")
    truth = prediction["truth"].transpose(*dims).values.astype(np.float64)              # (T, B, Y, X)
    mean = prediction["mean"].transpose(*dims).values.astype(np.float64)
    valid = prediction["valid"].transpose(*dims).values.astype(bool) & np.isfinite(truth)
    observed = prediction["observed"].values.astype(bool)                               # (T, Y, X) or (T, B, Y, X)
    if observed.ndim == 3:
        observed = observed[:, None]
    hidden = valid & ~observed                                                            # scored cells
    var = prediction["variance"].transpose(*dims).values if "variance" in prediction else None
    std = None if var is None else np.sqrt(np.clip(var.astype(np.float64), 0, None))
    attrs = prediction.attrs
    bands = [str(b) for b in prediction["band"].values] if "band" in prediction.coords \
        else [f"band{b}" for b in range(truth.shape[1])]
    units = metrics.get("units") or attrs.get("units") or []
    units = units.split(";") if isinstance(units, str) else [str(u) for u in units]
    p = {"truth": truth, "recon": np.where(hidden, mean, truth), "std": std, "hidden": hidden, "valid": valid,
         "bands": bands, "units": units, "origin": image_origin(prediction)}
    meta = {"method": metrics.get("method") or attrs.get("method", "method"),
            "run_name": metrics.get("run_name") or attrs.get("run_name", ""),
            "dataset": metrics.get("dataset") or attrs.get("dataset", ""),
            "mask": _mask_label(metrics) or attrs.get("mask_label", ""),
            "times": [_time_label(prediction, t) for t in range(truth.shape[0])]}
    per_frame = {e.get("frame"): e for e in (_scores(metrics).get("per_frame") or [])}
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    with PdfPages(pdf_path) as pdf:
        for t in tqdm(range(truth.shape[0]), desc=f"report {pdf_path.name[:40]}", unit="page", disable=None):
            _frame_page(pdf, p, t, meta, per_frame.get(t))
        _summary_page(pdf, meta, metrics)
        for fig in extra_figures:
            pdf.savefig(fig)
    log.info("wrote %s (%d frame pages + summary%s)", pdf_path, truth.shape[0],
             f" + {len(extra_figures)} analysis pages" if extra_figures else "")
    return pdf_path


# ---------------------------------------------------------------- per-method summary
def _varying_options(metrics_list: list[dict], skip) -> list[str]:
    """Config options whose value differs between runs (paths derived from the run name are left out)."""
    configs = [m.get("config") or {} for m in metrics_list]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    out = []
    for k in keys:
        if k in skip:
            continue
        vals = {json.dumps(c.get(k, "<missing>"), sort_keys=True, default=str) for c in configs}
        derived = all(isinstance(c.get(k), str) and m.get("run_name") and str(m["run_name"]) in c[k]
                      for c, m in zip(configs, metrics_list, strict=False))
        if len(vals) > 1 and not derived:
            out.append(k)
    return out


def _cell(v):
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(v, default=str)
    return "" if v is None else v


def _run_labels(metrics_list: list[dict], options: list[str]) -> list[str]:
    """Short labels from the options that vary (plus dataset/mask when they vary); run names otherwise."""
    varying_meta = [k for k, f in (("dataset", lambda m: m.get("dataset")), ("mask", _mask_label))
                    if len({str(f(m)) for m in metrics_list}) > 1]
    labels = []
    for m in metrics_list:
        cfg = m.get("config") or {}
        parts = [str(m.get("dataset")) if k == "dataset" else _mask_label(m) for k in varying_meta]
        for k in options:
            v = cfg.get(k)
            parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={_short(v, 20)}")
        labels.append(_short(", ".join(parts), 60))
    if not all(labels) or len(set(labels)) < len(labels):
        labels = [_short(m.get("run_name", f"run{i}"), 60) for i, m in enumerate(metrics_list)]
    return [f"{lab} (partial)" if m.get("partial") else lab for lab, m in zip(labels, metrics_list, strict=True)]


def _failed_page(pdf, failed: list[dict], title: str) -> None:
    """A page listing what could not be tested or read, one line each."""
    fig = Figure(figsize=PAGE)
    fig.text(0.03, 0.95, title, fontsize=11, va="top", color="C3")
    lines = [f"{_short(e['run_name'], 70)}: {_short(e['error'], 150)}" for e in failed[:45]]
    lines += [f"... and {len(failed) - 45} more (see the CSV)"] if len(failed) > 45 else []
    fig.text(0.03, 0.90, "\n".join(lines), fontsize=7, va="top", family="monospace")
    pdf.savefig(fig)


def _grouped_barh(ax, labels, series: dict, title: str):
    """Horizontal grouped bars: one group per run, one bar per series (first = the method)."""
    n, k = len(labels), max(len(series), 1)
    h = 0.8 / k
    for j, (name, vals) in enumerate(series.items()):
        ax.barh(np.arange(n) + (j - (k - 1) / 2) * h, np.nan_to_num(vals), height=h, label=name,
                color="C0" if j == 0 else f"C{j}", alpha=1.0 if j == 0 else 0.55)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)


def _grid_pages(pdf, metrics_list: list[dict], method: str, rows: list[str], cols: list[str]) -> None:
    """Heatmaps of RMSE, MAE, CRPS and 95% coverage: one row per value of the options `rows` (e.g. the
    kernel pair), one column per value of `cols` (e.g. masking probability and mask type), averaged over
    runs that share both; RMSE and MAE get a last row with the best classical baseline on the same cells."""
    def key(m, ks):
        cfg = m.get("config") or {}
        return " x ".join(f"{cfg.get(k):g}" if isinstance(cfg.get(k), float) else str(cfg.get(k)) for k in ks)

    rkeys = sorted({key(m, rows) for m in metrics_list})
    ckeys = sorted({key(m, cols) for m in metrics_list})
    for metric, title in (("rmse", "RMSE"), ("mae", "MAE"), ("crps", "CRPS"), ("coverage95", "95% coverage")):
        table = np.full((len(rkeys) + 1, len(ckeys)), np.nan)
        for i, r in enumerate(rkeys):
            for j, c in enumerate(ckeys):
                v = [_num((_scores(m).get("overall") or {}).get(metric)) for m in metrics_list
                     if key(m, rows) == r and key(m, cols) == c]
                table[i, j] = np.nanmean(v) if v and np.isfinite(v).any() else np.nan
        floor = metric in ("rmse", "mae")
        for j, c in enumerate(ckeys):
            if floor:
                vals = [min(_num((b.get("overall") or {}).get(metric)) for b in (m.get("baselines") or {}).values())
                        for m in metrics_list if key(m, cols) == c and m.get("baselines")]
                table[-1, j] = np.nanmean(vals) if vals else np.nan
        if not np.isfinite(table).any():
            continue
        labels = rkeys + (["best classical baseline"] if floor else [])
        data = table if floor else table[:-1]
        fig = Figure(figsize=(PAGE[0], min(max(PAGE[1], 1.5 + 0.3 * len(labels)), 60)), layout="constrained")
        ax = fig.subplots()
        im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=_cmap("viridis_r" if metric != "coverage95"
                                                                              else "viridis"))
        for (i, j), v in np.ndenumerate(data):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7,
                        color="w" if v > np.nanmean(data) else "k")
        ax.set_xticks(range(len(ckeys)), ckeys, fontsize=8, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel(" x ".join(cols))
        ax.set_ylabel(" x ".join(rows))
        if floor:
            ax.axhline(len(rkeys) - 0.5, color="w", lw=3)
        fig.colorbar(im, ax=ax, shrink=0.8)
        fig.suptitle(f"{method}: {title} on hidden valid cells by {' x '.join(rows)} and {' x '.join(cols)}",
                     fontsize=11)
        pdf.savefig(fig)


def _status(m: dict) -> str:
    return "partial" if m.get("partial") else "ok"


def method_summary(metrics_list: list[dict], out_dir, method: str, grid: tuple[list[str], list[str]] | None = None,
                   failed: list[dict] | None = None) -> tuple[Path, Path | None]:
    """Write summary.csv (one row per run, `status` ok, partial or failed) and summary_<method>.pdf.
    Returns (csv_path, pdf_path); pdf_path is None when every run failed.

    `grid` = (row options, column options) adds heatmap pages (see _grid_pages) when runs differ in both.
    `failed` = [{"run_name", "error"}] for runs whose test failed: listed in the CSV and on the PDF."""
    failed = failed or []
    if not metrics_list and not failed:
        raise ValueError(f"method_summary got no runs for method {method!r}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    baselines = list(dict.fromkeys(b for m in metrics_list for b in (m.get("baselines") or {})))
    options = _varying_options(metrics_list, skip=set(OVERALL_KEYS + ["run_name", "test_seconds"]))
    rows = []
    for m in metrics_list:
        ov = _scores(m).get("overall") or {}
        row = {"method": m.get("method", method), "run_name": m.get("run_name", ""), "status": _status(m),
               "dataset": m.get("dataset", ""), "mask": _mask_label(m)}
        row.update({k: _cell((m.get("config") or {}).get(k)) for k in options})
        row.update({k: _cell(ov.get(k)) for k in OVERALL_KEYS})
        row.update({f"rmse_{b}": _cell(((m.get("baselines") or {}).get(b, {}).get("overall") or {}).get("rmse"))
                    for b in baselines})
        row["test_seconds"] = _cell((m.get("cost") or {}).get("test_seconds"))
        rows.append(row)
    fields = list(rows[0]) if rows else ["method", "run_name", "status", "dataset", "mask"]
    rows += [{"method": method, "run_name": e["run_name"], "status": "failed", "error": e["error"]} for e in failed]
    csv_path = out_dir / "summary.csv"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields + (["error"] if failed else []), restval="")
        w.writeheader()
        w.writerows(rows)
    if not metrics_list:
        log.warning("every run failed: wrote only %s", csv_path)
        return csv_path, None

    labels = _run_labels(metrics_list, options)
    height = min(max(PAGE[1], 1.5 + 0.22 * len(labels) * (1 + len(baselines))), 60)

    def series(key):
        out = {method: [_num((_scores(m).get("overall") or {}).get(key)) for m in metrics_list]}
        for b in baselines:
            out[b] = [_num(((m.get("baselines") or {}).get(b, {}).get("overall") or {}).get(key)) for m in metrics_list]
        return out

    pdf_path = out_dir / f"summary_{method}.pdf"
    with PdfPages(pdf_path) as pdf:
        fig = Figure(figsize=(PAGE[0], height), layout="constrained")
        axes = fig.subplots(1, 2, sharey=True)
        _grouped_barh(axes[0], labels, series("rmse"), "RMSE per run (method vs baselines)")
        _grouped_barh(axes[1], labels, series("mae"), "MAE per run (method vs baselines)")
        axes[1].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"{method}: errors on hidden valid cells ({len(labels)} runs)", fontsize=11)
        pdf.savefig(fig)
        if failed:
            _failed_page(pdf, failed, f"{method}: {len(failed)} run(s) failed their test")
        if any(_scores(m).get("has_variance") for m in metrics_list):
            fig = Figure(figsize=(PAGE[0], min(max(PAGE[1], 1.5 + 0.3 * len(labels)), 60)), layout="constrained")
            axes = fig.subplots(1, 4, sharey=True)
            for ax, (key, title, ref) in zip(axes, [("crps", "CRPS", None), ("coverage95", "95% coverage", 0.95),
                                                     ("std_error_corr", "corr(std, |error|)", 0.0),
                                                     ("mean_variance", "mean predictive variance", None)], strict=False):
                _grouped_barh(ax, labels, {method: series(key)[method]}, title)
                if ref is not None:
                    ax.axvline(ref, color="k", ls="--", lw=1)
            fig.suptitle(f"{method}: uncertainty on hidden valid cells (runs without variance show no bar)",
                         fontsize=11)
            pdf.savefig(fig)
        if grid and len(metrics_list) > 1:
            _grid_pages(pdf, metrics_list, method, list(grid[0]), list(grid[1]))
    log.info("wrote %s and %s", csv_path, pdf_path)
    return csv_path, pdf_path


# ---------------------------------------------------------------- cross-method comparison
def _sort_key(row):
    r = _num(row["rmse"])
    return (str(row["dataset"]), str(row["mask"]), not math.isfinite(r), r if math.isfinite(r) else 0.0)


def compare(results_root, out_dir) -> tuple[Path, Path, list[dict]]:
    """Read every metrics.json under results_root; write leaderboard.csv and comparison.pdf.
    A metrics.json that cannot be read is skipped with one line, and listed in the third item returned
    ([{"run_name": path, "error": reason}]) and on the PDF."""
    results_root, out_dir = Path(results_root), Path(out_dir)
    if not results_root.is_dir():
        raise DataError(f"{results_root}: no such results folder; pass the folder test scripts wrote (--results)")
    files = sorted(p for p in results_root.rglob("metrics.json") if out_dir.resolve() not in p.resolve().parents)
    if not files:
        raise DataError(f"{results_root}: no metrics.json under it; run a test_<method>.py script first")
    rows, full, failed = [], [], []
    for path in files:
        try:
            m = read_json(path, "metrics file")
            if not isinstance(m.get("metrics"), dict):
                raise DataError(f"{path}: not a metrics file of ours (no 'metrics' object)")
        except DataError as err:
            log.error("skipped: %s", err)
            failed.append({"run_name": str(path), "error": str(err)})
            continue
        ov, cost = _scores(m).get("overall") or {}, m.get("cost") or {}
        row = {"method": m.get("method", path.parent.parent.name), "run_name": m.get("run_name", path.parent.name),
               "status": _status(m), "dataset": m.get("dataset", ""), "mask": _mask_label(m),
               "units": ";".join(m.get("units") or [])}
        row.update({k: _cell(ov.get(k)) for k in LEADERBOARD_KEYS[6:14]})
        row.update({"test_seconds": _cell(cost.get("test_seconds")), "train_seconds": _cell(cost.get("train_seconds")),
                    "path": str(path)})
        rows.append(row)
        full.append((row, m))
    if not rows:
        raise DataError(f"{results_root}: none of its {len(files)} metrics.json files could be read")
    order = sorted(range(len(rows)), key=lambda i: _sort_key(rows[i]))
    rows, full = [rows[i] for i in order], [full[i] for i in order]
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "leaderboard.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LEADERBOARD_KEYS)
        w.writeheader()
        w.writerows(rows)

    pdf_path = out_dir / "comparison.pdf"
    groups: dict[tuple, list] = {}
    for row, m in full:
        groups.setdefault((row["dataset"], row["mask"]), []).append((row, m))
    with PdfPages(pdf_path) as pdf:
        for (dataset, mask), items in groups.items():
            best: dict = {}
            for row, m in items:  # items are sorted by rmse: the first of a method is its best
                best.setdefault(row["method"], (row, m))
            fig = Figure(figsize=(PAGE[0], max(4.0, 2.0 + 0.6 * len(best))))
            ax = fig.subplots()
            names = [f"{r['method']}\n{_short(r['run_name'], 50)}" for r, _ in best.values()]
            vals = [_num(r["rmse"]) for r, _ in best.values()]
            ax.barh(range(len(names)), np.nan_to_num(vals), color=[f"C{i}" for i in range(len(names))])
            for i, v in enumerate(vals):
                ax.text(v if math.isfinite(v) else 0, i, f" {_fmt(v)}", va="center", fontsize=8)
            ax.set_yticks(range(len(names)), names, fontsize=8)
            ax.invert_yaxis()
            floor = (best and next(iter(best.values()))[1].get("baselines")) or {}
            for j, (b, bm) in enumerate(floor.items()):
                v = _num((bm.get("overall") or {}).get("rmse"))
                if math.isfinite(v):
                    ax.axvline(v, color="0.3", ls=["--", ":", "-.", (0, (5, 1))][j % 4], lw=1.2,
                               label=f"{b} (baseline) {_fmt(v)}")
            if floor:
                ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="classical floor")
            ax.set_xlabel("RMSE on hidden valid cells (best run per method)", fontsize=9)
            ax.set_title(f"dataset {dataset} | mask {mask} | {len(items)} runs, {len(best)} methods", fontsize=10)
            fig.tight_layout()
            pdf.savefig(fig)
        cols = ["method", "run_name", "dataset", "mask", "rmse", "mae", "crps", "coverage95", "test_seconds"]
        per_page = 30
        for start in range(0, len(rows), per_page):
            fig = Figure(figsize=PAGE)
            ax = fig.subplots()
            ax.axis("off")
            cells = [[_short(r[c], 40) if c in cols[:4] else _fmt(r[c]) for c in cols]
                     for r in rows[start:start + per_page]]
            tab = ax.table(cellText=cells, colLabels=cols, loc="upper center")
            tab.auto_set_font_size(False)
            tab.set_fontsize(7)
            tab.auto_set_column_width(list(range(len(cols))))
            ax.set_title(f"leaderboard (sorted by dataset, mask, RMSE), rows {start + 1}-"
                         f"{min(start + per_page, len(rows))} of {len(rows)}", fontsize=10)
            pdf.savefig(fig)
        if failed:
            _failed_page(pdf, failed, f"{len(failed)} metrics.json file(s) could not be read and are left out")
    log.info("leaderboard (best first within each dataset and mask):\n%s", _table_text(rows))
    log.info("wrote %s", csv_path)
    log.info("wrote %s", pdf_path)
    return csv_path, pdf_path, failed


def _table_text(rows: list[dict], cols=("dataset", "mask", "method", "units", "rmse", "mae", "crps", "coverage95",
                                       "test_seconds")) -> str:
    """Leaderboard rows as an aligned plain-text table for logs and terminals."""
    cells = [list(cols)] + [[_short(r[c], 30) if c in cols[:4] else _fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)) for row in cells)


# ---------------------------------------------------------------- CLI
def _rerun(run_dir: Path) -> Path:
    """Re-draw a run's PDF from its prediction.nc and metrics.json."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such results folder; pass a folder holding prediction.nc and metrics.json")
    metrics = read_json(run_dir / "metrics.json", "metrics file")
    try:
        with xr.open_dataset(run_dir / "prediction.nc", decode_times=False) as ds:     # any CF calendar
            prediction = ds.load()
    except Exception as err:  # netCDF4/h5netcdf raise many kinds for a bad file
        raise DataError(f"{run_dir / 'prediction.nc'}: not a readable prediction file ({type(err).__name__}); "
                        "test the run again") from None
    missing = [v for v in ("truth", "mean", "observed", "valid") if v not in prediction]
    if missing:
        raise DataError(f"{run_dir / 'prediction.nc'}: not a prediction file of ours (no {', '.join(missing)})")
    return run_report(run_dir / f"{metrics.get('run_name') or run_dir.name}.pdf", prediction, metrics)


def main(argv=None) -> int:
    parser = Parser(prog="python -m gapfill.report", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="leaderboard.csv + comparison.pdf over every metrics.json")
    c.add_argument("--results", default="results", help="folder searched recursively for metrics.json")
    c.add_argument("--out", default="results/comparison", help="output folder")
    r = sub.add_parser("run", help="re-draw the per-run PDF from prediction.nc + metrics.json")
    r.add_argument("--run_dir", required=True, help="folder holding prediction.nc and metrics.json")
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == "compare":
        *_, failed = compare(args.results, args.out)
        return 2 if failed else 0
    _rerun(Path(args.run_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
