"""The GINR network (Grattarola & Vandergheynst 2022) and its LightningModule for gap filling.

Input of one (frame, node): the node's spectral embedding (k Laplacian eigenvectors, unit mean square),
with --time the Fourier features of the frame's time, with --latents the frame's learned code (an
auto-decoder: each frame's code is fitted on its seen cells). Output: the residual over the first guess of
every band, normalised; the output layer starts at zero, so epoch 0 is the first guess.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from gapfill import cli, lightning
from gapfill.data import Normalizer
from gapfill.view import chosen_guess
from ginr.ginr_data import FitChunks, GraphFrames, seen_digest

log = logging.getLogger(__name__)


def add_mlp_args(g, omega_0: float = 3.0) -> None:
    """The MLP's options, with the reference code's names (argparse group or parser `g`)."""
    g.add_argument("--hidden_dim", type=cli.positive_int, default=512)
    g.add_argument("--n_layers", type=cli.positive_int, default=4)
    g.add_argument("--skip", type=cli.boolean, nargs="?", const=True, default=True,
                   help="join the input again at the middle layer (--skip False: no)")
    g.add_argument("--sine", type=cli.boolean, nargs="?", const=True, default=False, help="SIREN first layer")
    g.add_argument("--all_sine", type=cli.boolean, nargs="?", const=True, default=False, help="SIREN everywhere")
    g.add_argument("--omega_0", type=cli.positive_float, default=omega_0,
                   help="sine frequency (3 suits unit-RMS eigenvector inputs; SIREN's 30 is for coordinates in [-1, 1])")
    g.add_argument("--bn", type=cli.boolean, nargs="?", const=True, default=False, help="LayerNorm after each layer")
    g.add_argument("--dropout", type=cli.nonnegative_float, default=0.0)


def add_time_args(g, on: bool, freqs: int, freqs_help: str) -> None:
    """--time (Fourier features of a frame's time as input) and --time_freqs, with the caller's defaults."""
    g.add_argument("--time", type=cli.boolean, nargs="?", const=True, default=on,
                   help=f"Fourier features of the frame's time as input (--time {not on}: {'none' if on else 'on'})")
    g.add_argument("--time_freqs", type=cli.positive_int, default=freqs, help=freqs_help)


class Sine(nn.Module):
    def __init__(self, omega_0: float):
        super().__init__()
        self.omega_0 = omega_0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: any shape -> sin(omega_0 x), same shape."""
        return torch.sin(self.omega_0 * x)


class MLP(nn.Module):
    """(..., d_in) -> (..., d_out): `n_layers` hidden layers of `hidden_dim`, the input joined again at the
    middle layer (`skip`), ReLU or sine (`sine`: first layer, `all_sine`: every layer, SIREN initialisation),
    LayerNorm (`bn`) and dropout after each hidden layer."""

    def __init__(self, d_in: int, d_out: int, hidden_dim: int = 512, n_layers: int = 4, skip: bool = True,
                 sine: bool = False, all_sine: bool = False, omega_0: float = 30.0, bn: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.skip_at = n_layers // 2 if skip and n_layers > 1 else -1
        self.layers, self.acts, self.post = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(n_layers):
            d = d_in if i == 0 else hidden_dim + (d_in if i == self.skip_at else 0)
            lin = nn.Linear(d, hidden_dim)
            use_sine = all_sine or (sine and i == 0)
            if use_sine:                                         # SIREN (Sitzmann et al. 2020) initialisation
                bound = 1.0 / d if i == 0 else math.sqrt(6.0 / d) / omega_0
                nn.init.uniform_(lin.weight, -bound, bound)
            self.layers.append(lin)
            self.acts.append(Sine(omega_0) if use_sine else nn.ReLU())
            self.post.append(nn.Sequential(nn.LayerNorm(hidden_dim) if bn else nn.Identity(),
                                           nn.Dropout(dropout) if dropout > 0 else nn.Identity()))
        self.out = nn.Linear(hidden_dim if n_layers else d_in, d_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., d_in) -> (..., d_out)."""
        h = x
        for i, (lin, act, post) in enumerate(zip(self.layers, self.acts, self.post, strict=True)):
            if i == self.skip_at:
                h = torch.cat([h, x], dim=-1)
            h = post(act(lin(h)))
        return self.out(h)


def time_features(t: torch.Tensor, n_freq: int) -> torch.Tensor:
    """(...,) times in [0, 1] -> (..., 2 n_freq): sin and cos of 2 pi j t / 2 for j = 1..n_freq (the
    slowest one spans twice the record, so the first and last frames differ)."""
    j = torch.arange(1, n_freq + 1, device=t.device, dtype=t.dtype)
    a = math.pi * t[..., None] * j
    return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


class GINR(lightning.FieldModule):
    """GINR for gap filling; `data` (ginr_data.GraphFrames) is set before training and `reconstruct`."""

    features: torch.Tensor                  # buffers set by `attach`: (n_nodes, k) and (T,)
    times: torch.Tensor

    def __init__(self, bands: int, n_frames: int, n_fourier: int = 100, hidden_dim: int = 512, n_layers: int = 4,
                 skip: bool = True, sine: bool = False, all_sine: bool = False, omega_0: float = 3.0,
                 bn: bool = False, dropout: float = 0.0, time: bool = True, time_freqs: int = 64,
                 latents: bool = True, latent_dim: int = 64, lambda_latent: float = 1e-4, lr: float = 5e-4,
                 lr_patience: int = 3):
        super().__init__()
        self.save_hyperparameters()
        d_in = n_fourier + (2 * time_freqs if time else 0) + (latent_dim if latents else 0)
        self.net = MLP(d_in, bands, hidden_dim, n_layers, skip, sine, all_sine, omega_0, bn, dropout)
        self.codes = nn.Embedding(n_frames, latent_dim) if latents else None
        if self.codes is not None:
            nn.init.normal_(self.codes.weight, std=0.01)
        self.data: GraphFrames | None = None

    def attach(self, data: GraphFrames) -> GINR:
        """Give the module its GraphFrames (the features and times become buffers, not checkpointed)."""
        self.data = data
        self.register_buffer("features", torch.from_numpy(data.features), persistent=False)
        self.register_buffer("times", torch.from_numpy(data.times), persistent=False)
        return self

    def inputs(self, frames: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """frames (b, n) int64 and the nodes' features (b, n, k) -> network inputs (b, n, d_in)."""
        parts = [feats]
        if self.hparams.time:
            parts.append(time_features(self.times[frames], self.hparams.time_freqs))
        if self.codes is not None:
            parts.append(self.codes(frames))
        return torch.cat(parts, dim=-1)

    def forward(self, frames: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """frames, nodes: (b, n) int64 -> residual (b, n, B) normalised."""
        return self.net(self.inputs(frames, self.features[nodes]))

    def loss(self, batch):
        """batch: frames, nodes (b, n) int64, target, weight (b, n, B) -> (loss with the code penalty, mse)."""
        frames, nodes, target, weight = batch
        err = (self(frames, nodes) - target) ** 2 * weight
        mse = err.sum() / weight.sum().clamp_min(1.0)
        if self.codes is None:
            return mse, mse
        return mse + self.hparams.lambda_latent * (self.codes(frames) ** 2).sum(-1).mean(), mse

    def training_step(self, batch, batch_idx):
        loss, mse = self.loss(batch)
        self.log("train_loss", mse, on_step=False, on_epoch=True, batch_size=batch[0].shape[0])
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5,
                                                           patience=self.hparams.lr_patience)
        # the plateau watches the validation frames' hidden cells, never the training loss
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "valid_rmse", "interval": "epoch",
                                                   "strict": False}}

    @torch.no_grad()
    def residual(self, frames, feats: torch.Tensor, chunk: int = 65536) -> np.ndarray:
        """(len(frames), n, B) the network's residual at nodes with features `feats` (n, k), normalised."""
        out = []
        for t in frames:
            rows = []
            for s in range(0, len(feats), chunk):
                f = feats[s:s + chunk][None]
                fr = torch.full(f.shape[:2], int(t), dtype=torch.long, device=f.device)
                rows.append(self.net(self.inputs(fr, f))[0].float().cpu().numpy())
            out.append(np.concatenate(rows))
        return np.stack(out)

    def reconstruct(self, frames, keep_seen: bool = True):
        """(mean, None): each (len(frames), B, Y, X) in physical units; seen cells keep their values, cells
        outside the graph (never valid) the first guess."""
        D = self.data
        assert D is not None, "attach the GraphFrames first"
        frames = np.asarray(list(frames))
        res = self.residual(frames, self.features)                          # (n, N, B)
        cells = np.nonzero(D.cell_node >= 0)[0]
        flat = np.zeros((len(frames), D.bands, D.Y * D.X), np.float32)
        flat[:, :, cells] = res[:, D.cell_node[cells]].transpose(0, 2, 1)
        std = D.normalizer.std.reshape(1, -1, 1, 1)
        mean = D.guess_phys[frames] + flat.reshape(len(frames), D.bands, D.Y, D.X) * std   # zero: the guess exactly
        if keep_seen:
            mean = np.where(D.seen[frames], D.visible[frames], mean)
        return mean, None

    def fit_codes(self, frames, steps: int = 300, lr: float = 1e-2, seed: int = 0) -> None:
        """Refit the codes of `frames` on their seen cells with the network frozen (a test mask other than the
        one the run was trained with)."""
        if self.codes is None:
            return
        assert self.data is not None, "attach the GraphFrames first"
        chunks = FitChunks(self.data, 4096, seed, frames)
        idx = torch.as_tensor(np.asarray(list(frames)), device=self.codes.weight.device)
        with torch.no_grad():
            self.codes.weight[idx] = 0.0
        for p in self.net.parameters():
            p.requires_grad_(False)
        opt = torch.optim.Adam([self.codes.weight], lr=lr)
        dev = self.codes.weight.device
        keep = self.codes.weight.detach().clone()
        with torch.enable_grad():
            for s in range(steps):
                fr, nd, tg, w = (x.to(dev) for x in chunks[s % len(chunks)])
                opt.zero_grad()
                err = ((self(fr[None], nd[None])[0] - tg) ** 2 * w).sum() / w.sum().clamp_min(1.0)
                (err + self.hparams.lambda_latent * (self.codes(fr) ** 2).sum(-1).mean()).backward()
                opt.step()
        with torch.no_grad():                                               # other frames' codes stay
            mask = torch.ones(len(keep), dtype=torch.bool, device=dev)
            mask[idx] = False
            self.codes.weight[mask] = keep[mask]

    @classmethod
    def from_args(cls, args: dict, bands: int, n_frames: int) -> GINR:
        """The GINR of a run's options (a config's 'args')."""
        keys = ("n_fourier", "hidden_dim", "n_layers", "skip", "sine", "all_sine", "omega_0", "bn", "dropout", "time",
                "time_freqs", "latents", "latent_dim", "lambda_latent", "lr", "lr_patience")
        return cls(bands, n_frames, **{k: args[k] for k in keys})


def load_trained(problem, cfg: dict, run_dir, device: str = "cpu") -> GINR:
    """A run's best GINR on `device`, on the graph of `problem` (the model's view); the test frames' codes
    are refitted on their observed cells when the test mask is not the one the run was fitted with."""
    args = cfg["args"]
    data = GraphFrames(problem, Normalizer.from_dict(cfg["normalization"]), chosen_guess(cfg), args["n_fourier"],
                       args["laplacian"], args["neighbours"], args.get("cache_dir"), args.get("leave_out_guess", 0),
                       int(args["seed"]))
    module = lightning.load_module(GINR.from_args(args, data.bands, data.T), run_dir, "best", device).attach(data)
    module.to(device)
    if args["latents"] and seen_digest(problem) != cfg.get("seen_digest"):
        sl = problem.splits["test"]
        log.info("the test mask differs from the one the run was fitted with: refitting %d frame codes",
                 sl.stop - sl.start)
        module.fit_codes(range(sl.start, sl.stop), seed=int(args["seed"]))
    return module
