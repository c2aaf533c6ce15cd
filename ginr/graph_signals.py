"""GINR on graph signals (Grattarola & Vandergheynst 2022): a signal given on the nodes of one graph, one
sample per time (Gray-Scott snapshots on a mesh) or a single sample (SBM communities), or one graph per sample
(several graphs, of one size or not, told apart by learnt latent codes).

- `GraphSignals`: the LightningDataModule over a GINR dataset folder (`gapfill.graphs.read_dataset`). Training
  batches hold `batch_size` samples of `n_nodes_in_sample` random nodes each; an epoch covers each training
  sample's training nodes once, in an order fixed by (seed, epoch). Splits: `train_every`/`eval_every` pick
  samples by time (train on t % 10 == 0, evaluate on t % 5 == 0 and t % 10 != 0); `valid_fraction` and
  `test_fraction` pick nodes. Without a time split the validation and test nodes are never trained on; with
  one, training samples are seen whole and the node split divides the held-out samples into validation
  nodes (early stopping, learning-rate decay, best checkpoint) and test nodes (the reported scores).
- `SignalINR`: `ginr_model.MLP` from the node's eigenvectors (+ time features) to the signal, MSE on the
  standardised signal (the zero-initialised output layer starts at the training mean) or cross-entropy.
- `fit`: Lightning's Trainer with early stopping and the best checkpoint, whose weights end in the module.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from gapfill import graphs
from gapfill.errors import DataError
from gapfill.lightning import EpochShuffle
from ginr.ginr_model import MLP, time_features

if TYPE_CHECKING:
    from lightning_fabric.utilities.data import AttributeDict

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- graphs and scores
def nmi(a, b) -> float:
    """Normalised mutual information of two labelings (n,), arithmetic-mean normalisation (sklearn's default)."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    c = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(c, (ia, ib), 1.0)
    p = c / c.sum()
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum())
    ha, hb = -(pa * np.log(pa)).sum(), -(pb * np.log(pb)).sum()
    if ha == 0 or hb == 0:
        return 1.0 if ha == hb else 0.0
    return max(mi, 0.0) / ((ha + hb) / 2)


def select_times(n: int, times, train_every: int | None, eval_every: int | None):
    """(train, eval) indices of the n samples: t % train_every == 0, and t % eval_every == 0 but
    t % train_every != 0; every sample for both when `train_every` is None."""
    idx = np.arange(n)
    if train_every is None:
        return idx, idx
    if times is None:
        raise DataError("--train_every needs a dataset with times")
    t = np.rint(times).astype(int)
    train = idx[t % train_every == 0]
    ev = idx[(t % train_every != 0) & (t % (eval_every or 1) == 0)]
    if not len(train) or not len(ev):
        raise DataError(f"no {'training' if not len(train) else 'evaluation'} samples for train_every "
                         f"{train_every}, eval_every {eval_every} in times {t.min()}..{t.max()}")
    return train, ev


# ---------------------------------------------------------------- data
class _Chunks(Dataset):
    """Item (epoch, j): the j-th chunk of `size` training nodes, counted over the training samples in turn, each
    sample's training nodes permuted by (seed, epoch, sample). `size`: n_nodes_in_sample, or the fewest training
    nodes of a sample (graphs of different sizes: every chunk has one size, a larger graph has more chunks)."""

    def __init__(self, dm: GraphSignals):
        self.dm = dm
        self.nodes = [dm.own(dm.train_nodes, s) for s in dm.train_samples]
        self.size = min(dm.n_nodes_in_sample, *(len(x) for x in self.nodes))
        self.starts = np.concatenate([[0], np.cumsum([len(x) // self.size for x in self.nodes])])

    def __len__(self):
        return int(self.starts[-1])

    def __getitem__(self, key):
        epoch, j = key
        i = int(np.searchsorted(self.starts, j, side="right")) - 1
        s, c = int(self.dm.train_samples[i]), j - int(self.starts[i])
        perm = np.random.default_rng([self.dm.seed, epoch, s]).permutation(self.nodes[i])
        nodes = torch.from_numpy(perm[c * self.size:(c + 1) * self.size])
        return self.dm.fourier[s, nodes], self.dm.target[s, nodes], self.dm.time[s], s


class _Fixed(Dataset):
    """Item i: sample `samples[i]` at those of `nodes` it has: (fourier (n, k), target (n, m), time (), index ()).
    A graph too small to have any of `nodes` is left out (its loss would be the mean of nothing)."""

    def __init__(self, dm: GraphSignals, samples, nodes):
        self.dm, self.nodes = dm, np.asarray(nodes)
        self.samples = [int(s) for s in samples if len(dm.own(self.nodes, int(s)))]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = int(self.samples[i])
        nodes = torch.from_numpy(self.dm.own(self.nodes, s))
        return self.dm.fourier[s, nodes], self.dm.target[s, nodes], self.dm.time[s], s


class GraphSignals(pl.LightningDataModule):
    """Samples of a GINR dataset (`data`: read_dataset's dict) split by time and by node (module docstring).
    Graphs of different sizes (`data['n_nodes']`, padded arrays): the node split is drawn over the largest
    graph's node numbers and sample s keeps the nodes below its n_nodes[s] (`own`)."""

    def __init__(self, data: dict, n_nodes_in_sample: int = 1000, batch_size: int = 1, n_fourier: int | None = None,
                 valid_fraction: float = 0.0, test_fraction: float = 0.0, train_every: int | None = None,
                 eval_every: int | None = None, seed: int = 0):
        super().__init__()
        S, n, k = data["fourier"].shape
        self.fourier = torch.as_tensor(data["fourier"][..., :n_fourier or k], dtype=torch.float32)   # (S, n, k)
        self.target = torch.as_tensor(data["target"], dtype=torch.float32)                         # (S, n, m)
        self.n_nodes = np.asarray(data["n_nodes"] if data.get("n_nodes") is not None else np.full(S, n))   # (S,)
        self.same_size = bool((self.n_nodes == n).all())
        times = data.get("time")
        self.time = torch.full((S,), float("nan")) if times is None else torch.as_tensor(times, dtype=torch.float32)
        self.t_range = (0.0, 1.0) if times is None else (float(np.min(times)), float(np.max(times)))
        self.n_nodes_in_sample, self.batch_size, self.seed = n_nodes_in_sample, batch_size, seed
        self.split = {"valid_fraction": valid_fraction, "test_fraction": test_fraction, "train_every": train_every,
                      "eval_every": eval_every, "seed": seed}
        self.train_samples, self.eval_samples = select_times(S, times, train_every, eval_every)
        perm = np.random.default_rng(seed).permutation(n)
        nv, nt = int(round(valid_fraction * n)), int(round(test_fraction * n))
        if train_every is not None:                    # held-out times: nodes split them into valid / test
            self.train_nodes, self.valid_nodes, self.test_nodes = np.arange(n), perm[:nv], perm[nv:]
        else:
            self.valid_nodes, self.test_nodes, self.train_nodes = perm[:nv], perm[nv:nv + nt], perm[nv + nt:]
        if min(len(self.own(self.train_nodes, s)) for s in self.train_samples) == 0:
            raise DataError(f"no training nodes left by valid_fraction {valid_fraction}, test_fraction {test_fraction}"
                            f"{'' if self.same_size else ' in the smallest graph'}")
        if not len(self.valid_nodes):
            self.valid_nodes = self.test_nodes if len(self.test_nodes) else self.train_nodes
            log.warning("no validation nodes: early stopping and the best checkpoint watch the %s nodes",
                        "test" if len(self.test_nodes) else "training")
        self.valid_nodes, self.test_nodes, self.train_nodes = (np.sort(a) for a in
                                                               (self.valid_nodes, self.test_nodes, self.train_nodes))
        tr = self.target[self.train_samples][:, self.train_nodes][torch.as_tensor(self.has(self.train_samples,
                                                                                       self.train_nodes))]
        self.target_mean, self.target_std = tr.mean(0).tolist(), tr.std(0).clamp_min(1e-8).tolist()

    @classmethod
    def from_folder(cls, folder, cut: int | None = None, **kwargs) -> GraphSignals:
        """The data module of a dataset folder's samples (the first `cut` files when given)."""
        try:
            data = graphs.read_dataset(Path(folder), cut)
        except (FileNotFoundError, KeyError, ValueError) as err:
            raise DataError(f"--dataset_dir: {err}") from None
        return cls(data, **kwargs)

    def own(self, nodes: np.ndarray, s: int) -> np.ndarray:
        """The ones of `nodes` that sample s's graph has."""
        return nodes[nodes < self.n_nodes[s]]

    def has(self, samples, nodes) -> np.ndarray:
        """(len(samples), len(nodes)) bool: whether each sample's graph has each node."""
        return np.asarray(nodes)[None, :] < self.n_nodes[np.asarray(samples)][:, None]

    @property
    def n_fourier(self) -> int:
        return self.fourier.shape[-1]

    @property
    def d_out(self) -> int:
        return self.target.shape[-1]

    def train_dataloader(self):
        ds = _Chunks(self)
        return DataLoader(ds, batch_size=self.batch_size, sampler=EpochShuffle(len(ds), self.seed, with_epoch=True))

    def val_dataloader(self):       # graphs of different sizes: one sample a batch (their node counts differ)
        return DataLoader(_Fixed(self, self.eval_samples, self.valid_nodes), batch_size=self._eval_batch)

    def test_dataloader(self):
        return DataLoader(_Fixed(self, self.eval_samples, self.test_nodes), batch_size=self._eval_batch)

    @property
    def _eval_batch(self) -> int:
        return self.batch_size if self.same_size else 1


# ---------------------------------------------------------------- model
class SignalINR(pl.LightningModule):
    """fourier (b, n, k) [+ time (b,)] [+ the sample's latent code] -> signal (b, n, m): standardised values
    (regression) or logits. `latents`: an auto-decoder (the reference's --latents): one learnt code of
    `latent_dim` per training sample (normal init), joined to every node's input, its norm penalised by
    `lambda_latent`; the codes exist for the dataset's samples only, so a latent model splits by node."""

    mean: torch.Tensor                      # buffers (m,): the training targets' mean and std
    std: torch.Tensor

    if TYPE_CHECKING:
        # save_hyperparameters() stores an AttributeDict (attribute access); Lightning types the property
        # as `AttributeDict | MutableMapping`, which has no attributes
        @property
        def hparams(self) -> AttributeDict: ...

    def __init__(self, n_fourier: int, d_out: int, hidden_dim: int = 512, n_layers: int = 4, skip: bool = True,
                 sine: bool = False, all_sine: bool = False, omega_0: float = 30.0, bn: bool = False,
                 dropout: float = 0.0, time: bool = False, time_freqs: int = 6, t_range=(0.0, 1.0),
                 classify: bool = False, target_mean=None, target_std=None, lr: float = 5e-4,
                 lr_patience: int = 10, split: dict | None = None, latents: bool = False, latent_dim: int = 256,
                 lambda_latent: float = 1e-4, n_samples: int = 1):
        super().__init__()
        self.save_hyperparameters()
        d_in = n_fourier + (2 * time_freqs if time else 0) + (latent_dim if latents else 0)
        self.net = MLP(d_in, d_out, hidden_dim, n_layers, skip, sine, all_sine, omega_0, bn, dropout)
        self.codes = torch.nn.Embedding(n_samples, latent_dim) if latents else None
        self.register_buffer("mean", torch.tensor(target_mean or [0.0] * d_out, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(target_std or [1.0] * d_out, dtype=torch.float32))

    @classmethod
    def for_data(cls, dm: GraphSignals, **kwargs) -> SignalINR:
        """The module for a data module's sizes, time range, target statistics and split."""
        classify = kwargs.pop("classify", False)
        stats: dict[str, Any] = {} if classify else {"target_mean": dm.target_mean, "target_std": dm.target_std}
        if kwargs.get("latents") and dm.split["train_every"] is not None:
            raise DataError("--latents learns a code per training sample: held-out times would have none; "
                            "split by nodes (--valid_fraction, --test_fraction) instead of --train_every")
        return cls(dm.n_fourier, dm.d_out, t_range=dm.t_range, classify=classify, split=dm.split,
                   n_samples=len(dm.time), **stats, **kwargs)

    def forward(self, fourier: torch.Tensor, t: torch.Tensor | None = None,
                sample: torch.Tensor | None = None) -> torch.Tensor:
        """fourier: (b, n, k >= n_fourier), t: (b,) times (read with --time only), sample: (b,) sample indices
        (read with latents only) -> (b, n, m)."""
        x = fourier[..., :self.hparams.n_fourier]
        if self.hparams.time:
            assert t is not None, "a module with time features needs the times"
            lo, hi = self.hparams.t_range
            tf = time_features((t.to(x.dtype) - lo) / max(hi - lo, 1e-12), self.hparams.time_freqs)   # (b, 2f)
            x = torch.cat([x, tf[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)
        if self.codes is not None:
            assert sample is not None, "a module with latent codes needs the sample indices"
            x = torch.cat([x, self.codes(sample.long())[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)
        return self.net(x)

    def loss(self, batch):
        """batch: fourier (b, n, k), target (b, n, m), t (b,), sample (b,) -> MSE on the standardised target,
        or the cross-entropy against target.argmax(-1) (classify); + lambda_latent x mean code norm."""
        fourier, target, t, sample = batch
        out = self(fourier, t, sample)
        if self.hparams.classify:
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), target.argmax(-1).reshape(-1))
        else:
            loss = F.mse_loss(out, (target - self.mean) / self.std)
        if self.codes is not None:
            loss = loss + self.hparams.lambda_latent * self.codes(sample.long()).norm(dim=-1).mean()
        return loss

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=batch[0].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("valid_loss", self.loss(batch), on_epoch=True, batch_size=batch[0].shape[0])

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.loss(batch), on_epoch=True, batch_size=batch[0].shape[0])

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=self.hparams.lr_patience)
        # the plateau watches the held-out nodes / times, never the training loss
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "valid_loss", "interval": "epoch"}}

    @torch.no_grad()
    def predict(self, fourier, times=None, chunk: int = 65536, samples=None) -> np.ndarray:
        """(S, n, m) numpy: the signal in its own units (regression) or class probabilities, from fourier
        (S, n, k) or (n, k) shared by all samples, times (S,) (None: one sample, no time) and the samples'
        indices in the dataset (S,) (their latent codes; default 0..S-1)."""
        was = self.training
        self.eval()
        f = torch.as_tensor(np.asarray(fourier), dtype=torch.float32, device=self.device)
        S = 1 if times is None else len(times)
        f = f[None].expand(S, -1, -1) if f.ndim == 2 else f
        t = torch.as_tensor(np.full(S, np.nan) if times is None else np.asarray(times, float),
                            dtype=torch.float32, device=self.device)
        idx = torch.as_tensor(np.arange(S) if samples is None else np.asarray(samples), device=self.device)
        out = []
        for s in range(S):
            rows = [self(f[s:s + 1, a:a + chunk], t[s:s + 1], idx[s:s + 1])[0] for a in range(0, f.shape[1], chunk)]
            out.append(torch.cat(rows))
        y = torch.stack(out)
        y = torch.softmax(y, -1) if self.hparams.classify else y * self.std + self.mean
        self.train(was)
        return y.float().cpu().numpy()


def held_out_scores(module: SignalINR, dm: GraphSignals) -> dict:
    """Scores on the test split (each sample's own test nodes): RMSE (regression) or accuracy and NMI."""
    s, nodes = dm.eval_samples, dm.test_nodes
    has = dm.has(s, nodes)                                                # (E, n_test)
    pred = module.predict(dm.fourier[s].numpy(), dm.time[s].numpy(), samples=s)[:, nodes][has]   # time NaN: unused
    truth = dm.target[s][:, nodes].numpy()[has]
    if module.hparams.classify:
        a, b = truth.argmax(-1).ravel(), pred.argmax(-1).ravel()
        return {"accuracy": float((a == b).mean()), "nmi": nmi(a, b), "n_test": int(a.size)}
    return {"rmse": float(np.sqrt(((pred - truth) ** 2).mean())), "n_test": int(truth.size)}


def accelerator(device: str = "auto") -> tuple[str, int | list[int]]:
    """Lightning's (accelerator, devices) for --device auto|cpu|cuda|cuda:N."""
    from gapfill.system import resolve_device
    dev = resolve_device(device)
    return ("cpu", 1) if dev == "cpu" else ("gpu", [int(dev.split(":")[1])])


def wandb_logger(out_dir, args: dict, name: str | None = None):
    """Lightning's W&B logger under `out_dir/wandb` (args' --wandb_mode, offline by default; nothing sent
    offline), or False for --wandb_mode disabled."""
    if args.get("wandb_mode", "disabled") == "disabled":
        return False
    import wandb
    from pytorch_lightning.loggers import WandbLogger
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(save_dir=str(out_dir), project=args.get("wandb_project") or "gapfill",
                       name=name or Path(out_dir).name, mode=args["wandb_mode"], config=args,
                       settings=wandb.Settings(silent=True, console="off"))


def finish_logger(logger, scores: dict) -> None:
    """The test scores into the W&B run's summary (`test_rmse`...), then close it; nothing for False."""
    if logger:
        logger.experiment.summary.update({f"test_{k}": v for k, v in scores.items()})
        logger.experiment.finish()


def fit(module: SignalINR, dm: GraphSignals, out_dir, max_epochs: int = 200, patience: int = 30,
        device: str = "auto", logger=False) -> Path:
    """Train with Lightning (early stopping and the best checkpoint on `valid_loss`); the best checkpoint's
    weights are loaded into `module`. Returns the checkpoint's path (`out_dir/best.ckpt`). `logger`: a
    Lightning logger (`wandb_logger`) that gets every epoch's losses, or False."""
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    ckpt = ModelCheckpoint(dirpath=out_dir, filename="best", monitor="valid_loss", mode="min", save_top_k=1,
                           save_weights_only=True, enable_version_counter=False)
    accel, devices = accelerator(device)
    trainer = pl.Trainer(logger=logger, enable_progress_bar=sys.stdout.isatty(), deterministic=True,
                         max_epochs=max_epochs, callbacks=[EarlyStopping("valid_loss", patience=patience), ckpt],
                         accelerator=accel, devices=devices, default_root_dir=out_dir, num_sanity_val_steps=0,
                         enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    best = Path(ckpt.best_model_path)
    from gapfill.checkpoints import read_torch
    module.load_state_dict(read_torch(best)["state_dict"])             # tensors only: no code unpickled
    assert ckpt.best_model_score is not None                            # set with best_model_path
    log.info("best checkpoint %s: valid_loss %.5g after %d epochs", best, float(ckpt.best_model_score),
             trainer.current_epoch)
    return best


# ---------------------------------------------------------------- held-out times
def interpolate(times, values, train, targets) -> np.ndarray:
    """(len(targets), n): values (S, n) at the `train` samples linearly interpolated in time to the times of
    samples `targets` (held at the nearest training time outside their range)."""
    tt = times[train]
    order = np.argsort(tt)
    tt, vv = tt[order], values[train][order]
    out = []
    for t in times[targets]:
        j = int(np.clip(np.searchsorted(tt, t), 1, len(tt) - 1)) if len(tt) > 1 else 0
        i = max(j - 1, 0)
        w = 0.0 if tt[j] == tt[i] else float(np.clip((t - tt[i]) / (tt[j] - tt[i]), 0, 1))
        out.append((1 - w) * vv[i] + w * vv[j])
    return np.stack(out)


def rmse(a, b) -> float:
    """Root mean squared difference of two arrays of one shape."""
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def held_out_times(module: SignalINR, data: dict) -> dict:
    """A time-split checkpoint at its held-out times (read_dataset's `data`), scored on its test nodes against
    linear interpolation in time and each node's training mean. Predictions and scores: {'times', 'truth',
    'ginr', 'interp', 'node_mean' (E, n);
    'test_nodes'; 'rows' (per time); 'overall'}."""
    split = module.hparams.split or {}
    dm = GraphSignals(data, n_fourier=module.hparams.n_fourier, **split)
    if split.get("train_every") is None:
        raise DataError("the checkpoint was not trained with a time split (--train_every)")
    v = data["target"][..., 0]                                            # (S, n)
    ev, nodes = dm.eval_samples, dm.test_nodes
    res = {"times": data["time"][ev], "truth": v[ev], "test_nodes": nodes,
           "ginr": module.predict(data["fourier"][ev][..., :module.hparams.n_fourier], data["time"][ev])[..., 0],
           "interp": interpolate(data["time"], v, dm.train_samples, ev),
           "node_mean": np.broadcast_to(v[dm.train_samples].mean(0), v[ev].shape)}
    res["rows"] = [{"time": float(t), **{k: rmse(res[k][i, nodes], res["truth"][i, nodes])
                                         for k in ("ginr", "interp", "node_mean")}} for i, t in enumerate(res["times"])]
    res["overall"] = {k: rmse(res[k][:, nodes], res["truth"][:, nodes]) for k in ("ginr", "interp", "node_mean")}
    return res


# ---------------------------------------------------------------- super-resolution
def fine_prediction(module: SignalINR, coarse_fourier: np.ndarray, fine_fourier: np.ndarray, at_coarse: np.ndarray,
                    values: np.ndarray, times=None) -> np.ndarray:
    """The network on a finer graph of the same domain -> (S, n_fine, m). The fine eigenvectors (n_fine, k)
    are aligned to the coarse ones (n_coarse, k) it was trained on (`graphs.align`: orthogonal Procrustes per
    group of near-repeated coarse eigenvalues `values`), reading them at the fine nodes `at_coarse` (n_coarse,)
    that are the coarse nodes; both embeddings scaled alike (graphs.embed)."""
    k = module.hparams.n_fourier
    ff = fine_fourier[:, :k]
    R = graphs.align(coarse_fourier[:, :k], ff[at_coarse], values[:k])
    return module.predict(ff @ R, times)


def draw_mesh(fig, spec, vertices: np.ndarray, faces: np.ndarray, values: np.ndarray, lo: float, hi: float,
              title: str):
    """A 3-D panel of a mesh coloured by its (n,) vertex values (a face takes the mean of its corners) on
    [lo, hi], with a colour bar; `spec` is the figure's subplot spec. Returns the axes."""
    ax = fig.add_subplot(spec, projection="3d")
    surf = ax.plot_trisurf(*vertices.T, triangles=faces, cmap="viridis", linewidth=0, antialiased=False)
    surf.set_array(values[faces].mean(1))
    surf.set_clim(lo, hi)
    ax.set_box_aspect(np.ptp(vertices, axis=0), zoom=1.4)
    ax.set_axis_off()
    ax.set_title(title)
    fig.colorbar(surf, ax=ax, shrink=0.6)
    return ax
