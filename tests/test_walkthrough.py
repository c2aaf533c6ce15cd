"""The walkthrough notebook, executed top to bottom at its small sizes (WALKTHROUGH_SMALL=1) in a kernel of this
interpreter, with its working folder in tmp_path; and the committed notebook carries no outputs."""
import csv
import json
import math
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "additional_material" / "walkthrough.ipynb"
BENCH_COLUMNS = ["method", "dataset", "mask", "budget", "status", "reason", "rmse", "mae", "r2", "ssim", "crps",
                 "coverage95", "nll", "n_scored", "best_classical", "best_classical_rmse", "rank", "train_seconds",
                 "test_seconds", "peak_memory_mb"]


def _fake_benchmark(path: Path) -> None:
    """A benchmark leaderboard of three rows: on one case exact_gp beats pconv, and a failed row with a lower
    (meaningless) RMSE that the notebook must leave out."""
    rows = [("exact_gp", "synthetic", "random90", "ok", 0.4), ("pconv", "synthetic", "random90", "ok", 0.7),
            ("gan", "synthetic", "random90", "failed", 0.1)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=BENCH_COLUMNS)
        w.writeheader()
        for method, dataset, mask, status, rmse in rows:
            w.writerow({"method": method, "dataset": dataset, "mask": mask, "budget": "default", "status": status,
                        "rmse": rmse, "best_classical": "interpolation", "best_classical_rmse": 0.8})


def _text(cell) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for out in cell.outputs:
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
        parts.append(out.get("data", {}).get("text/html", ""))
    return "".join(parts)


def test_walkthrough_runs_and_the_gp_beats_climatology(tmp_path, monkeypatch):
    monkeypatch.setenv("WALKTHROUGH_SMALL", "1")
    monkeypatch.delenv("WALKTHROUGH_DIR", raising=False)            # the default: walkthrough/ in the cwd
    _fake_benchmark(tmp_path / "leaderboard.csv")
    monkeypatch.setenv("BENCHMARK_LEADERBOARD", str(tmp_path / "leaderboard.csv"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"code cell {i} failed: {errors[0].ename}: {errors[0].evalue}"
    work = tmp_path / "walkthrough"
    assert (work / "field.nc").is_file() and (work / "field.png").is_file()

    rmse = {}
    for method in ("baselines", "exact_gp"):
        found = sorted((work / "results" / method).glob("*/metrics.json"))
        assert len(found) == 1, f"{method}: {found}"
        record = json.loads(found[0].read_text())
        rmse[method] = record["metrics"]["overall"]["rmse"]
        assert math.isfinite(rmse[method]), method
        floor = record["baselines"]
    # 0.33 K against 2.19 K for climatology and 0.73 K for anomaly interpolation when this was written
    assert rmse["exact_gp"] < 0.5 * floor["climatology"]["overall"]["rmse"]
    assert rmse["exact_gp"] < floor["anomaly_interpolation"]["overall"]["rmse"]
    assert rmse["baselines"] == floor["anomaly_interpolation"]["overall"]["rmse"]     # the run is its floor entry
    assert (work / "results" / "comparison" / "leaderboard.csv").is_file()

    pages = next(c for c in code if "get_pixmap" in c.source)
    assert sum("image/png" in o.get("data", {}) for o in pages.outputs) >= 4      # first and last page of 2 PDFs
    assert sum("image/png" in o.get("data", {}) for c in code for o in c.outputs) >= 6   # + data figure, comparison
    bench = _text(code[-1])
    assert "exact_gp" in bench and "pconv" not in bench and "gan" not in bench


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert nb.metadata.kernelspec.name == "python3"
