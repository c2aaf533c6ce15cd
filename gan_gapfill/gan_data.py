"""Chips for the cloud-gap GAN: `time_steps` consecutive frames x all bands stacked as channels, normalised
per band, with clouds at the `mask_position` dates (1-based).

- Training chips: a start in the training frames and a `chip_size` crop, a seeded subset of
  `--training_length` of them; every date shows its training-mask cells, and the masked dates lose a cloud
  drawn per (seed, epoch, chip, date) with a share from `--cloud_range`. The loss is on the hidden cells of
  the masked dates (training frames are complete ground truth).
- Whole frames for the common protocol (`frame_chip`): frame t at the first masked position, its
  neighbours as the model's view shows them (observed cells only).
- First guess at every cell (`--first_guess`): `time`: linear interpolation in time between the nearest
  other dates of the chip where the cell is seen (one side: that value), else the climatology;
  `climatology`; `none` (the band mean, i.e. 0: the reference code's zero fill). The generator gets it as
  input next to the chip, so at seen cells it reads how each date departs from it.

Arrays: values (D, B, Y, X) normalised; seen (D, B, Y, X) bool; chips are (D * B, P, P) date-major.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytorch_lightning as pl
import torch

from gapfill import lightning
from gapfill.data import DataError, Normalizer
from gapfill.floor import climatology
from gapfill.masks import make_mask

GUESSES = ("time", "climatology", "none")


def positions(mask_position, time_steps: int) -> list[tuple[int, ...]]:
    """The masked-date combinations (0-based): the one given, or every combination of the dates but all."""
    if mask_position:
        pos = tuple(sorted({int(p) - 1 for p in mask_position}))
        if pos[0] < 0 or pos[-1] >= time_steps:
            raise DataError(f"--mask_position {' '.join(map(str, mask_position))}: dates are 1 to {time_steps}")
        return [pos]
    n = max(time_steps - 1, 1)
    return [c for k in range(1, n + 1) for c in itertools.combinations(range(time_steps), k)]


def time_guess(values: np.ndarray, seen: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """(D, B, Y, X): each cell of each date linearly interpolated in time between the nearest other dates where
    it is seen (the nearest one where only one side has it; `fallback` (B, Y, X) where none). Seen cells get
    the interpolation too: their value minus it is what the date does differently, an input of the network."""
    D = values.shape[0]
    out = np.empty(values.shape, dtype=np.float64)
    for d in range(D):
        prev_v = np.full(values.shape[1:], np.nan)
        prev_d = np.full(values.shape[1:], np.nan)
        for e in range(d - 1, -1, -1):
            take = np.isnan(prev_v) & seen[e]
            prev_v[take], prev_d[take] = values[e][take], e
        next_v = np.full(values.shape[1:], np.nan)
        next_d = np.full(values.shape[1:], np.nan)
        for e in range(d + 1, D):
            take = np.isnan(next_v) & seen[e]
            next_v[take], next_d[take] = values[e][take], e
        with np.errstate(invalid="ignore", divide="ignore"):
            w = (d - prev_d) / (next_d - prev_d)
            both = prev_v + w * (next_v - prev_v)
        g = np.where(np.isfinite(both), both, np.where(np.isfinite(prev_v), prev_v, next_v))
        out[d] = np.where(np.isfinite(g), g, fallback)
    return out


class FieldChips:
    """The model's view of a problem for the GAN: normalised values, seen cells, climatology (B, Y, X)."""

    def __init__(self, problem, normalizer: Normalizer, time_steps: int, guess: str = "time"):
        if guess not in GUESSES:
            raise DataError(f"unknown first guess {guess!r}; choose one of {', '.join(GUESSES)}")
        T = problem.field.shape[0]
        if time_steps > T:
            raise DataError(f"--time_steps {time_steps} is more than the field's {T} frames")
        self.problem, self.normalizer, self.D, self.kind = problem, normalizer, time_steps, guess
        visible = problem.visible()
        self.seen = problem.observed[:, None] & np.isfinite(visible)                 # (T, B, Y, X)
        self.values = np.nan_to_num(normalizer.normalize(visible)).astype(np.float32)
        self.valid = np.isfinite(visible[problem.splits["train"]]).any(0) if problem.splits["train"].stop else \
            np.ones(visible.shape[1:], bool)                                          # (B, Y, X) not land
        clim = normalizer.normalize(climatology(visible, problem.splits["train"])[None])[0]
        self.clim = np.nan_to_num(clim).astype(np.float32)
        self.T, self.B, self.Y, self.X = visible.shape

    def guess(self, values: np.ndarray, seen: np.ndarray, clim: np.ndarray) -> np.ndarray:
        """(D, B, y, x) first guess of a chip (values and seen (D, B, y, x), climatology (B, y, x))."""
        if self.kind == "time":
            return time_guess(values, seen, clim).astype(np.float32)
        fill = clim if self.kind == "climatology" else np.zeros_like(clim)
        return np.broadcast_to(fill[None], values.shape).astype(np.float32)

    def frame_chip(self, t: int, pos: tuple[int, ...]) -> tuple[int, dict]:
        """Frame t's whole-frame chip, t at the first masked date (the date the network learned to fill); dates
        before the first frame or after the last are wholly unseen. Returns (date of t, chip dict); the
        model's view only."""
        idx = np.arange(t - pos[0], t - pos[0] + self.D)
        inside = (idx >= 0) & (idx < self.T)
        idx = np.clip(idx, 0, self.T - 1)
        v, seen = self.values[idx], self.seen[idx] & inside[:, None, None, None]
        return pos[0], make_chip(v, seen, self.guess(v, seen, self.clim), target=None)


def make_chip(values, seen, guess, target=None) -> dict:
    """A chip's tensors: x (D*B, y, x) = seen values else the first guess; seen (D*B, y, x); mask (D, y, x) =
    any band seen;
    guess (D*B, y, x); hidden (D*B, y, x) = cells to fill; target (D*B, y, x) where known (0 elsewhere)."""
    D, B = values.shape[:2]
    x = np.where(seen, values, guess).reshape(D * B, *values.shape[2:])
    out = {"x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
           "seen": torch.from_numpy(seen.reshape(D * B, *values.shape[2:]).astype(np.float32)),
           "mask": torch.from_numpy(seen.any(1).astype(np.float32)),
           "guess": torch.from_numpy(guess.reshape(D * B, *values.shape[2:]).astype(np.float32)),
           "hidden": torch.from_numpy((~seen).reshape(D * B, *values.shape[2:]).astype(np.float32))}
    if target is not None:
        out["target"] = torch.from_numpy(np.nan_to_num(target).reshape(D * B, *values.shape[2:]).astype(np.float32))
    return out


class TrainChips(torch.utils.data.Dataset):
    """Training chips, indexed by (epoch, i): clouds are redrawn every epoch, from (seed, epoch, i, date)."""

    def __init__(self, data: FieldChips, chip_size: int, combos, cloud_range, training_length: int | None,
                 seed: int):
        tr = data.problem.splits["train"]
        starts = np.arange(tr.start, tr.stop - data.D + 1)
        if not len(starts):
            raise DataError(f"no training chip: {tr.stop - tr.start} training frames, --time_steps {data.D}")
        self.data, self.combos, self.cloud_range, self.seed = data, combos, tuple(cloud_range), seed
        self.P = min(chip_size, data.Y, data.X)                            # the model pads to 16s
        rng = np.random.default_rng([seed, 7])
        n = training_length or len(starts) * max(1, (data.Y // self.P) * (data.X // self.P))
        self.items = np.stack([rng.choice(starts, n), rng.integers(0, data.Y - self.P + 1, n),
                               rng.integers(0, data.X - self.P + 1, n)], 1)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, key):
        epoch, i = key
        s, y0, x0 = (int(v) for v in self.items[i])
        D, P = self.data, self.P
        win = (slice(s, s + D.D), slice(None), slice(y0, y0 + P), slice(x0, x0 + P))
        truth = D.values[win]                                                 # complete (training frames)
        seen = D.seen[win].copy()
        pos = self.combos[i % len(self.combos)]                              # cycled by sample index
        for d in pos:
            seed = int(np.random.default_rng([self.seed, epoch, i, d]).integers(2**31))
            cloud = ~make_mask("clouds", "fixed", (1, P, P), seed=seed, cloud_range=self.cloud_range,
                               cloud_scale=max(2.0, P / 16))[0]
            seen[d] &= ~cloud[None]
        valid = D.valid[:, y0:y0 + P, x0:x0 + P]
        target = np.where(valid[None], truth, np.nan)
        chip = make_chip(truth, seen, D.guess(truth, seen, D.clim[:, y0:y0 + P, x0:x0 + P]), target)
        masked = np.zeros((D.D, 1, 1, 1), bool)
        masked[list(pos)] = True
        loss = (~seen & masked & valid[None]).reshape(D.D * D.B, P, P)          # hidden cells of masked dates
        chip["hidden"] = torch.from_numpy(loss.astype(np.float32))
        return chip


class ChipData(pl.LightningDataModule):
    def __init__(self, chips: TrainChips, batch_size: int, args: dict):
        super().__init__()
        self.chips, self.batch_size, self.args = chips, batch_size, args

    def train_dataloader(self):
        return lightning.train_loader(self.chips, self.batch_size, self.args, with_epoch=True)
