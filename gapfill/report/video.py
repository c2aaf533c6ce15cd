"""An mp4 of a prediction file: one video frame per test frame, truth | reconstruction | |error| on the hidden
cells side by side, the first two on one colour scale (the truth's 1st-99th percentile over all frames),
never-observed cells grey. Written with OpenCV's mp4v writer (no ffmpeg needed).

    python -m gapfill.report video --run_dir results/exact_gp/<run_name> --band 0 --fps 4
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import xarray as xr
from matplotlib import colormaps

from gapfill.errors import DataError, RunError
from gapfill.report.run_page import image_origin

log = logging.getLogger(__name__)
GREY = np.array([115, 115, 115], np.uint8)          # never-observed cells (RGB)
LABELS = ("truth", "reconstruction", "|error| on hidden cells")


def rgb(values: np.ndarray, lo: float, hi: float, cmap: str) -> np.ndarray:
    """(Y, X) values -> (Y, X, 3) uint8 RGB through `cmap` on [lo, hi]; NaN grey."""
    z = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = (colormaps[cmap](np.nan_to_num(z))[..., :3] * 255).astype(np.uint8)
    rgb[~np.isfinite(values)] = GREY
    return rgb


def video_frames(prediction: xr.Dataset, band: int = 0, min_height: int = 240) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of band `band`: truth | reconstruction | |error| (hidden cells), each
    panel enlarged by a whole factor to at least `min_height` pixels, with 8-pixel white gaps and a label row."""
    dims = ("time", "band", "y", "x")
    if not 0 <= band < prediction.sizes["band"]:
        raise DataError(f"--band {band}: the prediction has bands 0 to {prediction.sizes['band'] - 1}")
    truth = prediction["truth"].transpose(*dims).values[:, band].astype(np.float64)          # (T, Y, X)
    mean = prediction["mean"].transpose(*dims).values[:, band].astype(np.float64)
    valid = prediction["valid"].transpose(*dims).values[:, band].astype(bool) & np.isfinite(truth)
    observed = prediction["observed"].values.astype(bool)
    observed = observed[:, band] if observed.ndim == 4 else observed
    hidden = valid & ~observed
    shown = np.where(valid, truth, np.nan)
    recon = np.where(hidden, mean, shown)
    err = np.where(hidden, np.abs(mean - truth), np.nan)
    if not valid.any():
        raise DataError("the prediction has no valid cell to show")
    lo, hi = np.percentile(truth[valid], [1, 99])
    emax = float(np.nanpercentile(err, 99)) if np.isfinite(err).any() else 1.0
    if image_origin(prediction) == "lower":            # north up
        shown, recon, err = shown[:, ::-1], recon[:, ::-1], err[:, ::-1]
    k = max(1, -(-min_height // truth.shape[1]))       # whole enlargement factor
    frames = [labelled_row([rgb(shown[t], lo, hi, "viridis"), rgb(recon[t], lo, hi, "viridis"),
                            rgb(err[t], 0.0, emax or 1.0, "magma_r")],
                           [f"{LABELS[0]}  {t + 1}/{truth.shape[0]}", *LABELS[1:]], k) for t in range(truth.shape[0])]
    return np.stack(frames)


def labelled_row(panels: list[np.ndarray], labels: list[str], k: int = 1) -> np.ndarray:
    """(Y, X, 3) uint8 panels side by side, each enlarged k times, 8-pixel white gaps, a label row on top
    -> (24 + k Y, ..., 3), cut to even sizes for the codec."""
    panels = [np.kron(p, np.ones((k, k, 1), np.uint8)) for p in panels]
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    row = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    head = np.full((24, row.shape[1], 3), 255, np.uint8)
    w = panels[0].shape[1] + 8
    for i, text in enumerate(labels):
        cv2.putText(head, text, (i * w + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    out = np.concatenate([head, row], axis=0)
    return out[: out.shape[0] // 2 * 2, : out.shape[1] // 2 * 2]


def write_mp4(frames: np.ndarray, path, fps: float = 4.0) -> Path:
    """Write (T, H, W, 3) uint8 RGB frames (H, W even) to the mp4 `path` with OpenCV's mp4v writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    T, H, W, _ = frames.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (W, H))
    if not writer.isOpened():
        raise RunError(f"{path}: OpenCV cannot write an mp4 here")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    log.info("wrote %s (%d frames, %d x %d, %g fps)", path, T, W, H, fps)
    return path


def write_video(prediction: xr.Dataset, path, band: int = 0, fps: float = 4.0) -> Path:
    """Write `video_frames(prediction, band)` to the mp4 `path`; returns it."""
    return write_mp4(video_frames(prediction, band), path, fps)
