"""Reports: per-run PDF, per-method summary (CSV + PDF), cross-method comparison (CSV + PDF).

Inputs are the files a test script writes: `prediction.nc` (truth, mean, optional variance,
observed, valid; (time, band, y, x), physical units) and `metrics.json` (see docs/design.md). Plots use
`matplotlib.figure.Figure` directly (no pyplot, no global state; Agg-rendered into PdfPages).
`run_page.py` draws the per-run PDF, `summary.py` the method summary, `compare.py` the comparison
(`common.py` holds what they share), `video.py` a run's mp4, and `__main__.py` is the command line:

    python -m gapfill.report compare --results results --out results/comparison
    python -m gapfill.report run --run_dir results/exact_gp/<run_name>
    python -m gapfill.report video --run_dir results/exact_gp/<run_name> --band 0
"""
from gapfill.report.compare import compare
from gapfill.report.run_page import image_origin, run_report
from gapfill.report.summary import method_summary

__all__ = ["compare", "image_origin", "method_summary", "run_report"]
