"""What the GP-VAE sees: windows of consecutive frames, each frame as (observed values, mask, first guess).

All arrays are normalised per band (the training frames' z-score). A frame's inputs read only its seen
cells (the training mask on training frames, the real mask elsewhere); the training target is the
residual of the training frames' truth over the first guess (training frames are complete ground truth,
DESIGN); hidden validation and test cells are NaN in the model's view and never read.
"""
from __future__ import annotations

import logging

import numpy as np
import pytorch_lightning as pl
import torch

from gapfill import lightning
from gapfill.data import DataError, Normalizer
from gapfill.view import ModelView

log = logging.getLogger(__name__)


class Frames:
    """The core's model view (gapfill.view.ModelView) as the GP-VAE reads it: `inputs(frames)` (n, 3B, Y, X)
    float32 = [seen values (0 elsewhere), seen mask, first guess] and `guess(frames)` (n, B, Y, X)
    normalised; first guesses are computed once per frame, on demand."""

    def __init__(self, problem, normalizer: Normalizer | None, kind: str):
        self.view = ModelView(problem, kind, normalizer)
        self.problem, self.normalizer, self.kind = problem, self.view.normalizer, kind
        self.visible, self.seen, self.values = self.view.visible, self.view.seen, self.view.values
        self.bands, self.Y, self.X = self.view.bands, self.view.Y, self.view.X

    def guess(self, frames) -> np.ndarray:
        """(n, B, Y, X) float32 normalised first guess of `frames`."""
        return self.view.guess(frames)

    def inputs(self, frames) -> np.ndarray:
        """(n, 3B, Y, X) float32: [seen values (0 elsewhere), seen mask, first guess] of `frames`."""
        frames = np.asarray(list(frames))
        seen = self.seen[frames]
        return np.concatenate([np.where(seen, self.values[frames], 0.0), seen, self.guess(frames)],
                              axis=1).astype(np.float32)

    def floor_variance(self) -> np.ndarray:
        """(B,) mean squared residual of the first guess on the training frames' hidden cells (normalised)."""
        tr = self.problem.splits["train"]
        frames = np.arange(tr.start, tr.stop)
        resid = self.values[frames] - self.guess(frames)
        hidden = ~self.seen[frames] & np.isfinite(self.visible[frames])
        out = np.array([np.mean(resid[:, b][hidden[:, b]] ** 2) if hidden[:, b].any() else 0.1
                        for b in range(self.bands)])
        return np.maximum(out, 1e-4)


def check_window(problem, window: int) -> None:
    """Clear errors for a window the splits cannot hold."""
    tr = problem.splits["train"]
    n_train, T = tr.stop - tr.start, problem.field.shape[0]
    if n_train < 2:
        raise DataError(f"--window needs at least 2 training frames and the split has {n_train}; give more "
                        "--num_frames_train")
    if window > n_train:
        raise DataError(f"--window {window} is longer than the {n_train} training frames; use --window {n_train} "
                        "or fewer, or more --num_frames_train")
    if window > T:
        raise DataError(f"--window {window} is longer than the field's {T} frames")


class TrainWindows(torch.utils.data.Dataset):
    """Training windows: every start in the training frames x `crops` square crops of side `patch`, each
    crop's place a pure function of (seed, index). Item: inputs (W, 3B, P, P), target residual (W, B, P, P)
    (0 where unknown) and its mask (W, B, P, P) float."""

    def __init__(self, frames: Frames, window: int, patch: int, seed: int):
        tr = frames.problem.splits["train"]
        self.frames, self.window, self.seed = frames, window, seed
        self.py, self.px = min(patch, frames.Y), min(patch, frames.X)
        self.starts = np.arange(tr.start, tr.stop - window + 1)
        self.crops = int(np.ceil(frames.Y / self.py) * np.ceil(frames.X / self.px))
        idx = np.arange(tr.start, tr.stop)
        truth = frames.normalizer.normalize(frames.visible[idx]).astype(np.float32)
        self.known = np.isfinite(truth)
        self.target = np.where(self.known, truth - frames.guess(idx), 0.0).astype(np.float32)
        self.inputs = frames.inputs(idx)
        self.offset = tr.start

    def __len__(self):
        return len(self.starts) * self.crops

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, i])
        t = self.starts[i % len(self.starts)] - self.offset
        y = int(rng.integers(0, self.frames.Y - self.py + 1))
        x = int(rng.integers(0, self.frames.X - self.px + 1))
        sl = (slice(t, t + self.window), slice(None), slice(y, y + self.py), slice(x, x + self.px))
        return (torch.from_numpy(self.inputs[sl].copy()), torch.from_numpy(self.target[sl].copy()),
                torch.from_numpy(self.known[sl].astype(np.float32)))


class WindowData(pl.LightningDataModule):
    def __init__(self, frames: Frames, window: int, patch: int, batch_size: int, args: dict):
        super().__init__()
        self.data = TrainWindows(frames, window, patch, int(args["seed"]))
        self.batch_size, self.args = batch_size, args
        log.info("%d training windows of %d frames (%d starts x %d crops of %d x %d)", len(self.data), window,
                 len(self.data.starts), self.data.crops, self.data.py, self.data.px)

    def train_dataloader(self):
        return lightning.train_loader(self.data, self.batch_size, self.args)


def covering_windows(frames, window: int, n_total: int) -> list[tuple[int, list[int]]]:
    """Windows (start, target frames) that reconstruct contiguous `frames`: targets in chunks of
    window // 2 (at least 1), each window ending at its chunk's end and so reaching back up to half a window
    into earlier frames (their observed cells only), shifted forward at the field's start."""
    frames = list(frames)
    step = max(1, window // 2)
    out = []
    for i in range(0, len(frames), step):
        chunk = frames[i:i + step]
        start = min(max(0, chunk[-1] + 1 - window), n_total - window)
        out.append((start, chunk))
    return out
