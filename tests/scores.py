"""Independent checks of a test run's scores: the RMSE recomputed in float64 numpy from the prediction file
(truth, mean, observed, valid on (time, band, y, x)), and the best classical RMSE its metrics.json lists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr


def file_rmse(path: Path) -> float:
    """RMSE of the file's mean on its scored cells (valid and not observed), summed over every band."""
    with xr.open_dataset(path, decode_times=False) as p:              # numeric time: any calendar
        truth = p["truth"].values.astype(np.float64)                         # (T, B, Y, X)
        mean = p["mean"].values.astype(np.float64)
        scored = (p["valid"].values == 1) & (p["observed"].values[:, None] == 0)
    assert scored.any(), path
    return float(np.sqrt(np.mean((mean - truth)[scored] ** 2)))


def best_classical(record: dict) -> float:
    """The lowest test RMSE among the classical methods a metrics.json record lists (its `baselines`)."""
    return min(b["overall"]["rmse"] for b in record["baselines"].values())


def check_rmse(record: dict, prediction: Path, within: float | None = None) -> float:
    """Assert the record's RMSE is the file's, and (when `within` is given) at most `within` x the best classical
    RMSE on the same cells; return it."""
    rmse = record["metrics"]["overall"]["rmse"]
    assert rmse == pytest.approx(file_rmse(prediction), rel=1e-5)          # the file's values (float32) scored
    if within is not None:
        assert rmse < within * best_classical(record), (rmse, best_classical(record))
    return rmse
