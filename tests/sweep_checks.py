"""Checks shared by the sweep tests (bash in test_pipeline, sbatch in test_slurm): every run of the
baselines' sweep wrote its checkpoints, prediction, metrics and PDF, and the leaderboard lists them all.
Also `signal_at_check`, the SLURM warning signal at a chosen step, for the resume tests."""
import csv
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

METHODS = ["climatology", "persistence", "interpolation", "anomaly_interpolation", "dineof"]


ROOT = Path(__file__).resolve().parents[1]


def pdf_pages(path) -> int:
    return len(re.findall(rb"/Type\s*/Page[^s]", Path(path).read_bytes()))


def assert_sweep_outputs(ckpt: Path, results: Path, n_test: int, ny: int, nx: int) -> None:
    """Five finished runs, each with best/last, prediction.nc (test frames), metrics matching the file,
    a PDF of one page per test frame plus a summary; the method summary and a leaderboard of all five."""
    runs = sorted(ckpt.iterdir())
    assert [r.name.split("_")[2] for r in runs] == sorted(m.replace("_", "") for m in METHODS)
    for run in runs:
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["finished"] and cfg["normalization"]["std"][0] > 0 and len(cfg["git_commit"]) >= 7
        assert (run / "best.npz").exists() and (run / "last.npz").exists()
        res = results / "baselines" / run.name
        pred = xr.open_dataset(res / "prediction.nc")
        assert pred["truth"].shape == (n_test, 1, ny, nx) and pdf_pages(res / f"{run.name}.pdf") == n_test + 1
        m = json.loads((res / "metrics.json").read_text())
        hidden = (pred["valid"].values == 1) & (pred["observed"].values[:, None] == 0)
        assert m["metrics"]["overall"]["n_scored"] == hidden.sum()
        assert abs(hidden.mean() - 0.9) < 0.02                           # the 90% test mask was applied
        err = (pred["mean"].values - pred["truth"].values)[hidden]       # metrics.json agrees with the file
        assert m["metrics"]["overall"]["rmse"] == pytest.approx(np.sqrt(np.mean(err.astype(float) ** 2)), rel=1e-5)
        assert set(m["baselines"]) == {"climatology", "persistence", "interpolation", "anomaly_interpolation"}
    assert (results / "baselines" / "summary.csv").exists()
    rows = list(csv.DictReader(open(results / "comparison" / "leaderboard.csv")))
    rmse = {r["run_name"].split("_")[2]: float(r["rmse"]) for r in rows}
    assert set(rmse) == {m.replace("_", "") for m in METHODS}
    assert rmse["dineof"] < 0.8 * rmse["climatology"]
    assert rmse["anomalyinterpolation"] < rmse["climatology"]
    assert pdf_pages(results / "comparison" / "comparison.pdf") >= 2


def signal_at_check(monkeypatch, n: int) -> None:
    """Make the n-th runs.Preemption.check of this test see SLURM's USR1 (outside SLURM: save, exit 75)."""
    from gapfill import runs
    calls = {"n": 0}
    real_check = runs.Preemption.check

    def check(self, save_last):
        calls["n"] += 1
        if calls["n"] == n:
            self.requested = "SIGUSR1"
        return real_check(self, save_last)

    monkeypatch.setattr(runs.Preemption, "check", check)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def assert_gp_reports(records: list[dict], results, method: str) -> None:
    """Every GP run tested: finite scores (uncertainty ones too), RMSE within 1.5 x climatology's (a kernel
    that does not suit the field, a periodic space kernel, may be worse than the floor after a few steps),
    the best kernel pair at least 20% below the best classical baseline on the same cells (measured: 0.49 x
    for the exact GP, 0.71 x for the variational one), a PDF of two test frames + summary, and the method
    summary with its bars, uncertainty page and 4 heatmaps."""
    for rec in records:
        ov = rec["metrics"]["overall"]
        assert all(np.isfinite(ov[k]) for k in ("rmse", "mae", "crps", "nll", "coverage95")), rec["run_name"]
        assert ov["rmse"] < rec["baselines"]["climatology"]["overall"]["rmse"] * 1.5, rec["run_name"]
        assert pdf_pages(Path(results) / rec["run_name"] / f"{rec['run_name']}.pdf") == 2 + 1
    floor = min(b["overall"]["rmse"] for rec in records for b in rec["baselines"].values())
    best = min(rec["metrics"]["overall"]["rmse"] for rec in records)
    assert best < 0.8 * floor, (best, floor)
    assert pdf_pages(Path(results) / f"summary_{method}.pdf") == 2 + 4


def job_env(tmp: Path, **extra) -> dict:
    """Environment of a submission from `tmp` (logs land in tmp/logs) with this repository's code."""
    (tmp / "logs").mkdir(exist_ok=True)
    env = dict(os.environ, PYTHON=sys.executable, GAPFILL_ROOT=str(ROOT), **extra)
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID"):
        env.pop(key, None)
    return env


def logged_values(wandb_file: Path, key: str) -> list[float]:
    """Every value logged or summarised under `key` in an offline .wandb file (protobuf records hold the key,
    then the value as JSON text); read from the bytes, since wandb has no offline reader."""
    data = wandb_file.read_bytes()
    return [float(m.group(1)) for m in re.finditer(re.escape(key.encode()) + rb"[^0-9-]{1,4}(-?[0-9.]+(?:e-?[0-9]+)?)",
                                                    data)]
