"""Inputs of the partial-convolution UNet. The network learns the residual over the core's first guess
(`gapfill.floor.first_guess`, from the cells each frame shows): its input channels are, per band, the
observed residual of the frame (value - first guess on its seen cells), the observed residuals of
`context_frames` neighbours either side, the first guess itself, and the distance to the nearest seen cell.
A zero output reproduces the first guess exactly; training patches come from masks of the training family
(the training mask itself and redraws of it, some with extra cloud holes)."""
from __future__ import annotations

import math
from typing import cast

import numpy as np

from gapfill.data import Normalizer
from gapfill.floor import distance_to_seen
from gapfill.masks import make_mask
from gapfill.view import ModelView
from pconv_inpainting import keras  # the package sets the backend before Keras loads
from pconv_inpainting.pconv_model import unet_depth

DIST_SCALE = 10.0          # distance channel = cells to the nearest seen cell / DIST_SCALE (about 0..1)


def channels(bands: int, context: int) -> int:
    """Input channels: residuals of the frame and its 2k neighbours, the first guess, the distance."""
    return bands * (1 + 2 * context) + bands + 1


class Data:
    """The model's view of a problem (hidden cells of validation and test frames are NaN), normalised.

    `values` (T, B, Y, X) normalised, 0 where not visible; `visible_in` (T, B, Y, X) where a value is given;
    `truth_known` (the same: where the loss and the analyses may look); `seen0` (T, B, Y, X) the cells the
    model is given for each frame (the training mask on training frames, the observed cells elsewhere);
    `guess0`, `resid0` (T, B, Y, X) normalised first guess and observed residual under `seen0`."""

    def __init__(self, args: dict, problem, normalizer: Normalizer | None = None, frames=None,
                 kind: str | None = None):
        f, s = problem.field, problem.splits
        self.problem, self.args = problem, args
        self.kind = kind or args.get("first_guess") or "anomaly_interpolation"
        self.context = int(args.get("context_frames") or 0)
        self.view = view = ModelView(problem, self.kind, normalizer)       # the core's model view
        self.vis, self.normalizer, self.values = view.visible, view.normalizer, view.values
        self.train = s["train"]
        train = s["train"] if s["train"].stop > s["train"].start else slice(0, f.shape[0])
        self.train_frames = np.arange(train.start, train.stop)
        self.visible_in = view.known                                       # (T, B, Y, X)
        self.truth_known = self.visible_in
        self.seen0 = view.seen
        T, B, Y, X = f.shape
        self.bands = B
        self.patch = min(args["patch_size"], 2 ** int(math.log2(min(Y, X))))
        self.depth = unet_depth(self.patch)
        self.std = self.normalizer.std.astype(np.float32)                 # (B,) physical units per normalised unit
        need = np.arange(T) if frames is None else np.asarray(self.needed(frames))
        self.guess0 = np.zeros((T, B, Y, X), np.float32)
        self.guess0[need] = view.guess(need)
        self.resid0 = np.where(self.seen0, self.values - self.guess0, 0.0).astype(np.float32)

    def guess(self, frames, seen) -> np.ndarray:
        """(n, B, Y, X) first guess of `frames` in physical units from the cells `seen` (T, B, Y, X)."""
        return self.view.guess_physical(frames, seen)

    def needed(self, frames) -> list[int]:
        """`frames` and their context neighbours inside the series."""
        T = self.values.shape[0]
        return sorted({t + d for t in frames for d in range(-self.context, self.context + 1) if 0 <= t + d < T})

    def stack(self, t: int, resid_t, seen_t, guess_t, dist_t, resid, seen) -> tuple[np.ndarray, np.ndarray]:
        """Channels of frame t: x, m (Y, X, C). resid_t, seen_t, guess_t (B, Y, X) normalised and dist_t
        (Y, X) for frame t itself; neighbours from resid, seen (T, B, Y, X); frames outside the series are
        all holes."""
        T = self.values.shape[0]
        B, Y, X = resid_t.shape                                             # a patch or the whole frame
        xs, ms = [resid_t], [seen_t.astype(np.float32)]
        for d in [s * j for j in range(1, self.context + 1) for s in (-1, 1)]:
            f = t + d
            if 0 <= f < T:
                xs.append(resid[f])
                ms.append(seen[f].astype(np.float32))
            else:
                xs.append(np.zeros((B, Y, X), np.float32))
                ms.append(np.zeros((B, Y, X), np.float32))
        xs += [guess_t, dist_t[None] / DIST_SCALE]
        ms += [np.ones((B, Y, X), np.float32), np.ones((1, Y, X), np.float32)]
        return np.concatenate(xs).transpose(1, 2, 0), np.concatenate(ms).transpose(1, 2, 0)


class Patches(keras.utils.PyDataset):
    """Random training patches of `frames` (default: the training frames) under `variants` masks each:
    variant 0 is the frame's own mask (the training mask, or a later frame's observed cells), the others
    redraws of its kind (every second one with extra cloud holes), all over the cells the model may see:
    on a validation or test frame the loss looks only at its observed cells hidden by a redraw.
    Yields ([x, mask], y_true) with y_true = concat(residual truth, hole, known,
    first guess) (see pconv_model.make_loss). Deterministic for a seed, epoch and batch index."""

    def __init__(self, data: Data, batch: int, steps: int, mask_kwargs: dict, variants: int, seed: int,
                 frames=None, **kw):
        super().__init__(**kw)
        self.data, self.batch, self.steps, self.seed, self.epoch = data, batch, steps, seed, 0
        self.frames = frames = data.train_frames if frames is None else np.asarray(frames)
        n, (_, _, Y, X) = len(frames), data.values.shape
        seen = [data.seen0[frames]]
        for v in range(1, variants):
            keep = make_mask(shape=(n, Y, X), seed=seed * 7919 + v, **mask_kwargs)
            if v % 2 == 0:                                                  # an augmentation: clouds on top
                keep &= make_mask("clouds", "dynamic", (n, Y, X), seed=seed * 7919 + 100 + v, cloud_range=(0.1, 0.3))
            seen.append(data.visible_in[frames] & keep[:, None])
        self.seen = np.stack(seen, axis=1)                                   # (n, V, B, Y, X)
        guesses, dists = [], []
        for v in range(variants):
            full = data.seen0.copy()
            full[frames] = self.seen[:, v]
            guesses.append(data.normalizer.normalize(data.guess(frames, full)).astype(np.float32))
            # (n, B, Y, X) -> (n, Y, X); numpy's stubs type a reduction over one axis as "scalar or array"
            dists.append(distance_to_seen(cast(np.ndarray, self.seen[:, v].any(axis=1))))
        self.guess = np.stack(guesses, axis=1)                               # (n, V, B, Y, X) normalised
        self.dist = np.stack(dists, axis=1)                                  # (n, V, Y, X)

    def __len__(self):
        return self.steps

    def on_epoch_end(self):
        self.epoch += 1

    def __getitem__(self, idx):
        d = self.data
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        n, V, B, Y, X = self.seen.shape
        P = d.patch
        xs, ms, ys = [], [], []
        for _ in range(self.batch):
            i, v = int(rng.integers(n)), int(rng.integers(V))
            t = int(self.frames[i])
            y0, x0 = int(rng.integers(0, Y - P + 1)), int(rng.integers(0, X - P + 1))
            win = (slice(None), slice(y0, y0 + P), slice(x0, x0 + P))
            seen, guess = self.seen[i, v][win], self.guess[i, v][win]
            resid = np.where(seen, d.values[t][win] - guess, 0.0).astype(np.float32)
            sub = (slice(None),) + win
            x, m = d.stack(t, resid, seen, guess, self.dist[i, v][win[1:]], d.resid0[sub], d.seen0[sub])
            known = d.visible_in[t][win]
            truth = np.where(known, d.values[t][win] - guess, 0.0)
            hole = known & ~seen
            xs.append(x)
            ms.append(m)
            ys.append(np.concatenate([truth, hole, known, guess]).transpose(1, 2, 0).astype(np.float32))
        return (np.stack(xs), np.stack(ms)), np.stack(ys)


def pad_to(a: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad (N, Y, X, C) at the bottom/right to multiples of `multiple`; returns it and (Y, X)."""
    _, Y, X, _ = a.shape
    py, px = (-Y) % multiple, (-X) % multiple
    return np.pad(a, ((0, 0), (0, py), (0, px), (0, 0))), (Y, X)


def frame_inputs(data: Data, seen: np.ndarray, frames) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, tuple]:
    """Whole frames for validation and test: ([x, mask] padded to the UNet's multiple, first guess
    (n, B, Y, X) in physical units, (Y, X)); each frame and its neighbours from their cells `seen` (T, B, Y, X)."""
    need = data.needed(frames)
    phys = dict(zip(need, data.guess(need, seen), strict=True))
    T, B, Y, X = data.values.shape
    guess = np.zeros((T, B, Y, X), np.float32)
    resid = np.zeros((T, B, Y, X), np.float32)
    for t in need:
        guess[t] = data.normalizer.normalize(phys[t][None])[0]
        resid[t] = np.where(seen[t], data.values[t] - guess[t], 0.0)
    dist = distance_to_seen(seen[frames].any(axis=1))
    xs, ms = zip(*(data.stack(int(t), resid[t], seen[t], guess[t], dist[i], resid, seen) for i, t in enumerate(frames)),
                 strict=True)
    (x, shape), (m, _) = (pad_to(np.stack(a), 2 ** data.depth) for a in (xs, ms))
    return (x, m), np.stack([phys[t] for t in frames]), shape


def inpaint(model, data: Data, seen: np.ndarray, frames, batch: int = 8, variance_scale: float = 1.0):
    """Mean and variance or None, (len(frames), B, Y, X) physical units, given the cells `seen` (T, B, Y, X):
    the first guess plus the predicted residual (a zero residual gives the first guess exactly)."""
    frames = list(frames)
    (x, m), guess, (Y, X) = frame_inputs(data, seen, frames)
    out = np.asarray(model.predict([x, m], batch_size=batch, verbose=0))[:, :Y, :X]     # (n, Y, X, C)
    B = data.bands
    std = data.normalizer.std.reshape(1, -1, 1, 1)
    mean = guess + out[..., :B].transpose(0, 3, 1, 2).astype(np.float64) * std          # first guess + residual
    var = None
    if out.shape[-1] == 2 * B:
        logvar = np.clip(out[..., B:], -10, 10).transpose(0, 3, 1, 2).astype(np.float64)
        var = variance_scale * np.exp(logvar) * std ** 2
    return mean, var


def keras_device(device: str) -> str:
    """'cpu' / 'cuda:N' (gapfill.system.resolve_device) as Keras names them on both backends: 'cpu' / 'gpu:N'
    (not 'cpu:0': under that scope Keras 3 on torch finds no gradients)."""
    return "cpu" if device == "cpu" else device.replace("cuda", "gpu")
