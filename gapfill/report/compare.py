"""The cross-method comparison: leaderboard.csv and comparison.pdf over every metrics.json under a results folder."""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gapfill.errors import DataError
from gapfill.files import read_json
from gapfill.report.common import PAGE, _cell, _failed_page, _fmt, _mask_label, _num, _scores, _short, _status

log = logging.getLogger(__name__)

LEADERBOARD_KEYS = ["method", "run_name", "status", "dataset", "mask", "units", "rmse", "mae", "bias", "r2", "ssim", "crps",
                    "coverage95", "nll", "test_seconds", "train_seconds", "path"]


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
