"""The method summary: summary.csv (one row per run, failed runs included) and summary_<method>.pdf."""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gapfill.files import atomic_path
from gapfill.report.common import PAGE, _cell, _cmap, _failed_page, _mask_label, _num, _scores, _short, _status

log = logging.getLogger(__name__)

OVERALL_KEYS = ["rmse", "mae", "bias", "r2", "ssim", "nll", "crps", "coverage95", "std_error_corr",
                "mean_variance", "n_scored"]


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
