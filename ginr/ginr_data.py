"""What GINR sees of a field: the graph of its grid with the Laplacian eigenvectors of each node, and the
fit cells: every seen cell (the training mask on training frames, the observed cells of validation and
test frames), with the residual of its value over the first guess (normalised per band).

The nodes are the cells valid in any training frame (all cells of a field without training frames), so
the graph depends on the land, never on a mask: train and test build the same one.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from gapfill import graphs, lightning
from gapfill.data import Normalizer
from gapfill.system import cache_root
from gapfill.view import ModelView

log = logging.getLogger(__name__)


def cache_dir(option: str | None = None) -> Path:
    """Where embeddings are cached: --cache_dir, else `ginr/` under our cache folder (gapfill.system.cache_root);
    entries are keyed by the graph's Laplacian, so every data file and run can share one folder."""
    return Path(option) if option else cache_root() / "ginr"


def node_cells(problem) -> np.ndarray:
    """(Y, X) bool: the cells that are nodes (valid in any training frame; all cells without training frames)."""
    tr = problem.splits["train"]
    f = problem.field
    if tr.stop > tr.start:
        return np.isfinite(f.values[tr]).any(axis=(0, 1))
    return np.ones(f.shape[2:], bool)


def seen_digest(problem) -> str:
    """A hash of the seen cells of the frames after the training frames: the frame codes were fitted on
    them, so a test with another mask refits the test frames' codes."""
    return hashlib.sha1(np.packbits(problem.observed[problem.splits["train"].stop:]).tobytes()).hexdigest()[:16]


def time_axis(field) -> np.ndarray:
    """(T,) the frames' times scaled to [0, 1] (frame numbers where times do not increase)."""
    t = np.asarray(field.time, dtype=np.float64)
    if len(t) < 2 or not np.all(np.diff(t) > 0):
        t = np.arange(len(t), dtype=np.float64)
    return (t - t[0]) / max(t[-1] - t[0], 1e-12)


class GraphFrames:
    """The core's model view (gapfill.view.ModelView) on the graph of the grid. `features` (n_nodes, k)
    float32: eigenvectors times their scale (unit mean square); `cell_node` (Y*X,); `guess` (T, B, Y, X)
    normalised; `fit` (T, B, Y, X) bool: the cells fitted (every valid cell of a training frame, which is
    ground truth; the seen cells of the other frames); `target` (T, B, Y, X) normalised residual over the
    guess, NaN outside `fit` (with `leave_out` folds a seen cell's over the guess of its frame's other folds:
    `ModelView.guess_left_out`)."""

    def __init__(self, problem, normalizer: Normalizer | None, kind: str, n_fourier: int,
                 laplacian: str = "combinatorial", neighbours: int = 4, cache: str | None = None,
                 leave_out: int = 0, seed: int = 0):
        self.view = view = ModelView(problem, kind, normalizer)
        self.problem, self.normalizer = problem, view.normalizer
        self.laplacian, self.neighbours = laplacian, neighbours
        f = problem.field
        self.graph = graphs.grid_graph(node_cells(problem), f.y, f.x, neighbours, periodic_x=bool(f.x_periodic),
                                       lonlat=graphs.is_lonlat(f))
        self.eigenvalues, vecs, self.scale = graphs.embed(self.graph, n_fourier, laplacian, cache_dir(cache))
        self.features = (vecs * self.scale).astype(np.float32)
        assert self.graph.cell_node is not None                            # a grid's graph maps every cell
        self.cell_node: np.ndarray = self.graph.cell_node
        self.times = time_axis(f).astype(np.float32)
        self.T, self.bands, self.Y, self.X = view.visible.shape
        self.seen, self.visible = view.seen, view.visible                   # (T, B, Y, X)
        self.guess_phys = view.guess_physical(range(self.T))               # (T, B, Y, X) physical
        self.guess = view.guess(range(self.T))
        self.fit = self.seen.copy()
        self.fit[problem.splits["train"]] = view.known[problem.splits["train"]]
        self.values = np.where(self.seen, view.values, np.nan).astype(np.float32)
        fit_guess = view.guess_left_out(range(self.T), leave_out, seed) if leave_out > 1 else self.guess
        self.target = np.where(self.fit, view.values - fit_guess, np.nan).astype(np.float32)

    def fit_cells(self, frames=None) -> tuple[np.ndarray, np.ndarray]:
        """(frame, cell) index pairs of every cell with a fitted band in `frames` (default all), cell flat."""
        frames = np.arange(self.T) if frames is None else np.asarray(frames)
        any_fit = self.fit[frames].any(1).reshape(len(frames), -1) & (self.cell_node >= 0)[None]
        t, c = np.nonzero(any_fit)
        return frames[t], c


class FitChunks(torch.utils.data.Dataset):
    """The fit cells, shuffled once by the seed and cut into chunks of `n` (the last padded with weight 0).
    Item: frames (n,) int64, nodes (n,) int64, target (n, B) float32 (0 where unknown), weight (n, B)."""

    def __init__(self, data: GraphFrames, n: int, seed: int, frames=None):
        t, c = data.fit_cells(frames)
        order = np.random.default_rng(seed).permutation(len(t))
        t, c = t[order], c[order]
        pad = (-len(t)) % n
        self.frames = np.concatenate([t, np.zeros(pad, int)]).reshape(-1, n)
        cells = np.concatenate([c, np.zeros(pad, int)]).reshape(-1, n)
        tgt = data.target.reshape(data.T, data.bands, -1)[t, :, c]          # (N, B)
        tgt = np.concatenate([tgt, np.full((pad, data.bands), np.nan, np.float32)])
        self.nodes = np.maximum(data.cell_node[cells], 0)
        self.weight = np.isfinite(tgt).astype(np.float32).reshape(-1, n, data.bands)
        self.target = np.nan_to_num(tgt).reshape(-1, n, data.bands)
        if pad:
            self.weight[-1, n - pad:] = 0.0

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        return (torch.from_numpy(self.frames[i]), torch.from_numpy(self.nodes[i]), torch.from_numpy(self.target[i]),
                torch.from_numpy(self.weight[i]))


class FitData(pl.LightningDataModule):
    """Batches of `batch_size` chunks of `n_nodes_in_sample` fit cells, shuffled by (seed, epoch)."""

    def __init__(self, data: GraphFrames, n_nodes_in_sample: int, batch_size: int, args: dict):
        super().__init__()
        self.data = FitChunks(data, n_nodes_in_sample, int(args["seed"]))
        self.batch_size, self.args = batch_size, args
        log.info("%d fit cells in %d chunks of %d", int(self.data.weight.any(-1).sum()), len(self.data), n_nodes_in_sample)

    def train_dataloader(self):
        return lightning.train_loader(self.data, self.batch_size, self.args)
