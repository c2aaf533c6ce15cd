"""What the reports share: page size, colours, number formatting, the metrics.json accessors, the failed-runs page."""
from __future__ import annotations

import json
import math

import matplotlib
from matplotlib.figure import Figure

PAGE = (11.69, 8.27)                  # A4 landscape, inches
NAN_GREY = "0.85"                     # never-observed cells everywhere


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


def _status(m: dict) -> str:
    return "partial" if m.get("partial") else "ok"


def _cell(v):
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(v, default=str)
    return "" if v is None else v


def _failed_page(pdf, failed: list[dict], title: str) -> None:
    """A page listing what could not be tested or read, one line each."""
    fig = Figure(figsize=PAGE)
    fig.text(0.03, 0.95, title, fontsize=11, va="top", color="C3")
    lines = [f"{_short(e['run_name'], 70)}: {_short(e['error'], 150)}" for e in failed[:45]]
    lines += [f"... and {len(failed) - 45} more (see the CSV)"] if len(failed) > 45 else []
    fig.text(0.03, 0.90, "\n".join(lines), fontsize=7, va="top", family="monospace")
    pdf.savefig(fig)
