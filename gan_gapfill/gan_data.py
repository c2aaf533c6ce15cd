"""Chips for the cloud-gap GAN: `time_steps` consecutive frames x all bands stacked as channels, normalised
per band (the core's model view, gapfill.view), with gaps at the `mask_position` dates (1-based).

- First guess at every cell: the core's (`--first_guess`, default auto: the floor method whose guess scores
  best on the validation frames), computed on whole frames from the cells each frame shows. The generator
  gets it as input next to the chip and predicts the residual over it.
- Training chips are shaped like the test: a start in the training frames and a `chip_size` crop, a seeded
  subset of `--training_length` of them. Every date shows what the common protocol shows (its training-mask
  cells); a masked date shows one of `--mask_variants` masks of the training family (the training mask
  itself, then redraws of its kind), drawn per (seed, epoch, chip, date), with the first guess of that mask
  (precomputed per variant). The loss is on the hidden cells of the masked dates (training frames are
  complete ground truth).
- Whole frames for the common protocol (`frame_chip`): frame t at the first masked position, its
  neighbours as the model's view shows them (observed cells only).

Arrays: values (D, B, Y, X) normalised; seen (D, B, Y, X) bool; chips are (D * B, P, P) date-major.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from gapfill import lightning
from gapfill.data import DataError, Normalizer
from gapfill.floor import climatology, first_guess
from gapfill.masks import make_mask
from gapfill.view import ModelView

log = logging.getLogger(__name__)


MAX_ALL_COMBINATIONS = 10          # --time_steps up to which every clouded-date combination is trained (1022)


def check_time_steps(time_steps: int, n_frames: int) -> None:
    """DataError for a sequence longer than the field."""
    if time_steps > n_frames:
        raise DataError(f"--time_steps {time_steps} is more than the field's {n_frames} frames")


def data_file(path: str, flag: str = "--dataroot") -> str:
    """`path` if it is a file; a folder (the reference's GeoTIFF chips) is one clear DataError."""
    if Path(path).is_dir():
        raise DataError(f"{flag} {path} is a folder (the reference's GeoTIFF chips): this GAN reads one NetCDF "
                        "field of dates x bands; make it with python -m data_generation.convert_geotiff --dataroot "
                        f"{path} --out FIELD.nc (one area through time) and give that file")
    return path


def positions(mask_position, time_steps: int) -> list[tuple[int, ...]]:
    """The masked-date combinations (0-based): the one given, or every combination of the dates but all."""
    if mask_position:
        pos = tuple(sorted({int(p) - 1 for p in mask_position}))
        if pos[0] < 0 or pos[-1] >= time_steps:
            raise DataError(f"--mask_position {' '.join(map(str, mask_position))}: dates are 1 to {time_steps}")
        return [pos]
    if time_steps > MAX_ALL_COMBINATIONS:
        raise DataError(f"--time_steps {time_steps} without --mask_position would train on all {2 ** time_steps - 2} "
                        f"combinations of clouded dates; give --mask_position, or at most {MAX_ALL_COMBINATIONS} "
                        "--time_steps")
    n = max(time_steps - 1, 1)
    return [c for k in range(1, n + 1) for c in itertools.combinations(range(time_steps), k)]


class FieldChips:
    """The model's view of a problem for the GAN (gapfill.view.ModelView): normalised values, seen cells,
    climatology (B, Y, X) and the first guess of every frame, `guess0` (T, B, Y, X) normalised; with
    `mask_kwargs`, `variants` - 1 redrawn masks of the training frames and their guesses (see TrainChips)."""

    def __init__(self, problem, normalizer: Normalizer | None, time_steps: int, guess: str,
                 mask_kwargs: dict | None = None, variants: int = 1, seed: int = 0):
        check_time_steps(time_steps, problem.field.shape[0])
        self.view = view = ModelView(problem, guess, normalizer)
        self.problem, self.normalizer, self.D, self.kind = problem, view.normalizer, time_steps, guess
        self.seen, self.values = view.seen, view.values                              # (T, B, Y, X)
        tr = problem.splits["train"]
        self.valid = view.known[tr].any(0) if tr.stop > tr.start else np.ones(view.seen.shape[1:], bool)
        clim = self.normalizer.normalize(climatology(view.visible, tr)[None])[0]
        self.clim = np.nan_to_num(clim).astype(np.float32)
        self.T, self.B, self.Y, self.X = view.visible.shape
        self.guess0 = view.guess(range(self.T))                                       # (T, B, Y, X)
        self.train_frames = np.arange(tr.start, tr.stop)
        n = len(self.train_frames)
        self.seen_v, self.guess_v = [self.seen[tr]], [self.guess0[tr]]               # variant 0: the mask itself
        redraw = mask_kwargs or {}
        for v in range(1, variants if redraw and n else 1):
            keep = make_mask(shape=(n, self.Y, self.X), seed=seed * 7919 + v, **redraw)
            full = self.seen.copy()
            full[tr] = view.known[tr] & keep[:, None]
            self.seen_v.append(full[tr])
            self.guess_v.append(view.guess(self.train_frames, full))
        log.info("first guess %s on %d frames, %d mask variant(s) of the training frames", guess, self.T,
                 len(self.seen_v))

    def chip_guess(self, values: np.ndarray, seen: np.ndarray, clim: np.ndarray) -> np.ndarray:
        """(D, B, y, x) first guess of a chip on its own (values and seen (D, B, y, x) normalised, climatology
        (B, y, x)): the run's kind on the chip's dates alone (a chip of the reference protocol)."""
        return first_guess(self.kind, np.where(seen, values, np.nan), seen, slice(0, 0), clim=clim).astype(np.float32)

    def frame_chip(self, t: int, pos: tuple[int, ...]) -> tuple[int, dict]:
        """Frame t's whole-frame chip, t at the first masked date (the date the network learned to fill); dates
        before the first frame or after the last are wholly unseen. Returns (date of t, chip dict); the
        model's view only."""
        idx = np.arange(t - pos[0], t - pos[0] + self.D)
        inside = (idx >= 0) & (idx < self.T)
        idx = np.clip(idx, 0, self.T - 1)
        v, seen = self.values[idx], self.seen[idx] & inside[:, None, None, None]
        guess = np.where(inside[:, None, None, None], self.guess0[idx], self.clim[None])
        return pos[0], make_chip(v, seen, guess, target=None)


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
    """Training chips, indexed by (epoch, i): each masked date's mask variant is drawn from (seed, epoch, i,
    date)."""

    def __init__(self, data: FieldChips, chip_size: int, combos, training_length: int | None, seed: int):
        tr = data.problem.splits["train"]
        starts = np.arange(tr.start, tr.stop - data.D + 1)
        if not len(starts):
            raise DataError(f"no training chip: {tr.stop - tr.start} training frames, --time_steps {data.D}")
        self.data, self.combos, self.seed = data, combos, seed
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
        seen, guess = D.seen[win].copy(), D.guess0[win].copy()
        pos = self.combos[i % len(self.combos)]                              # cycled by sample index
        t0 = D.train_frames[0]
        for d in pos:
            v = int(np.random.default_rng([self.seed, epoch, i, d]).integers(len(D.seen_v)))
            seen[d] = D.seen_v[v][s + d - t0][:, y0:y0 + P, x0:x0 + P]
            guess[d] = D.guess_v[v][s + d - t0][:, y0:y0 + P, x0:x0 + P]
        valid = D.valid[:, y0:y0 + P, x0:x0 + P]
        target = np.where(valid[None], truth, np.nan)
        chip = make_chip(truth, seen, guess, target)
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
