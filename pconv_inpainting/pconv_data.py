"""Inputs of the partial-convolution UNet: normalised frames with their masks (and neighbouring frames as
extra channels), random training patches with gapfill.masks holes, and padding of whole frames."""
from __future__ import annotations

import math

import numpy as np

from gapfill.data import Normalizer
from gapfill.masks import make_mask
from pconv_inpainting import keras  # the package sets the backend before Keras loads
from pconv_inpainting.pconv_model import unet_depth


def stack_context(values: np.ndarray, known: np.ndarray, t: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame t and the k frames either side as channels. values (T, B, Y, X) normalised (any fill),
    known (T, B, Y, X) bool. Returns x, m (Y, X, B * (1 + 2k)); frames outside the series are all holes."""
    T = values.shape[0]
    xs, ms = [], []
    for d in [0] + [s * j for j in range(1, k + 1) for s in (-1, 1)]:
        f = t + d
        if 0 <= f < T:
            m = known[f].astype(np.float32)
            xs.append(np.where(known[f], values[f], 0.0).astype(np.float32))
            ms.append(m)
        else:
            xs.append(np.zeros(values.shape[1:], np.float32))
            ms.append(np.zeros(values.shape[1:], np.float32))
    x = np.concatenate(xs, axis=0).transpose(1, 2, 0)
    m = np.concatenate(ms, axis=0).transpose(1, 2, 0)
    return x, m


class Patches(keras.utils.PyDataset):
    """Random training patches: frame t of `frames`, a `patch` x `patch` window, a hole from gapfill.masks
    over the cells the model may see (`visible` (T, B, Y, X), which is also where the loss looks: a single
    image trains on its own visible pixels only). Yields ([x, mask], y_true) with y_true = concat(truth,
    hole, known) (see pconv_model.make_loss). Deterministic for a seed, epoch and batch index."""

    def __init__(self, values, visible, frames, patch: int, batch: int, steps: int, context: int,
                 mask_kwargs: dict, seed: int, **kw):
        super().__init__(**kw)
        self.values, self.visible = values, visible
        self.frames, self.patch, self.batch, self.steps, self.context = frames, patch, batch, steps, context
        self.mask_kwargs, self.seed, self.epoch = mask_kwargs, seed, 0

    def __len__(self):
        return self.steps

    def on_epoch_end(self):
        self.epoch += 1

    def __getitem__(self, idx):
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        T, B, Y, X = self.values.shape
        P = self.patch
        xs, ms, ys = [], [], []
        for _ in range(self.batch):
            t = int(rng.choice(self.frames))
            y0, x0 = int(rng.integers(0, Y - P + 1)), int(rng.integers(0, X - P + 1))
            x, m = stack_context(self.values, self.visible, t, self.context)
            x, m = x[y0:y0 + P, x0:x0 + P], m[y0:y0 + P, x0:x0 + P]
            keep = make_mask(seed=int(rng.integers(2**31)), shape=(1, P, P), **self.mask_kwargs)[0]
            hole = np.repeat((~keep)[..., None], B, axis=-1).astype(np.float32)
            m[..., :B] *= 1.0 - hole                                     # hide the hole in frame t only
            x[..., :B] *= 1.0 - hole
            known = self.visible[t][:, y0:y0 + P, x0:x0 + P].transpose(1, 2, 0).astype(np.float32)
            truth = np.where(known > 0, self.values[t][:, y0:y0 + P, x0:x0 + P].transpose(1, 2, 0), 0.0)
            xs.append(x)
            ms.append(m)
            ys.append(np.concatenate([truth, hole * known, known], axis=-1).astype(np.float32))
        return (np.stack(xs), np.stack(ms)), np.stack(ys)


def pad_to(a: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pad (N, Y, X, C) at the bottom/right to multiples of `multiple`; returns it and (Y, X)."""
    _, Y, X, _ = a.shape
    py, px = (-Y) % multiple, (-X) % multiple
    return np.pad(a, ((0, 0), (0, py), (0, px), (0, 0))), (Y, X)


def frame_batch(values, visible_in, truth_known, frames, context: int, multiple: int):
    """Whole frames for validation and test: ([x, mask], y_true) padded to `multiple`.
    The hole is every known cell the model does not see."""
    B = values.shape[1]
    xs, ms, ys = [], [], []
    for t in frames:
        x, m = stack_context(values, visible_in, int(t), context)
        kn = truth_known[t].transpose(1, 2, 0).astype(np.float32)
        hole = kn * (1.0 - m[..., :B])
        truth = np.where(kn > 0, values[t].transpose(1, 2, 0), 0.0)
        xs.append(x)
        ms.append(m)
        ys.append(np.concatenate([truth, hole, kn], axis=-1).astype(np.float32))
    (x, shape), (m, _), (y, _) = (pad_to(np.stack(a), multiple) for a in (xs, ms, ys))
    return (x, m), y, shape


class Data:
    """The model's view of a problem (hidden cells of validation and test frames are NaN), normalised:
    `values` (T, B, Y, X) with 0 where not visible, `visible_in` (T, B, Y, X) where a value is given,
    `truth_known` (the same: where the loss and the analyses may look), the patch size and UNet depth."""

    def __init__(self, args: dict, problem, normalizer: Normalizer | None = None):
        f, s = problem.field, problem.splits
        self.problem, self.args = problem, args
        vis = problem.visible()
        train = s["train"] if s["train"].stop > s["train"].start else slice(0, f.shape[0])
        self.train_frames = np.arange(train.start, train.stop)
        self.normalizer = normalizer or Normalizer.fit(vis[train])
        self.values = np.nan_to_num(self.normalizer.normalize(vis)).astype(np.float32)
        self.visible_in = np.isfinite(vis)                                # (T, B, Y, X)
        self.truth_known = self.visible_in
        T, B, Y, X = f.shape
        self.bands = B
        self.patch = min(args["patch_size"], 2 ** int(math.log2(min(Y, X))))
        self.depth = unet_depth(self.patch)


def inpaint(model, data: Data, seen: np.ndarray, frames, batch: int = 8):
    """Mean and variance or None, (len(frames), B, Y, X) physical units, given the cells `seen` (T, B, Y, X)."""
    (x, m), _, (Y, X) = frame_batch(data.values, seen, data.truth_known, frames, data.args["context_frames"],
                                    2 ** data.depth)
    out = np.asarray(model.predict([x, m], batch_size=batch, verbose=0))[:, :Y, :X]     # (n, Y, X, C)
    B = data.bands
    mean = data.normalizer.denormalize(out[..., :B].transpose(0, 3, 1, 2).astype(np.float64))
    var = None
    if out.shape[-1] == 2 * B:
        var = data.normalizer.denormalize_variance(np.exp(np.clip(out[..., B:], -10, 10)).transpose(0, 3, 1, 2))
    return mean, var


def keras_device(device: str) -> str:
    """'cpu' / 'cuda:N' (gapfill.system.resolve_device) as Keras names them on both backends: 'cpu' / 'gpu:N'
    (not 'cpu:0': under that scope Keras 3 on torch finds no gradients)."""
    return "cpu" if device == "cpu" else device.replace("cuda", "gpu")
