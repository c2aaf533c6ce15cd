"""A tiny method on the Lightning engine, for the engine's tests: a per-pixel MLP that corrects the core's
first guess (interpolation) from the guess itself and the distance to the nearest seen cell.

    python tests/helpers/lightning_reference.py --data_path F --checkpoint_dir D [engine options]
"""
from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch

from gapfill import cli, lightning, runs
from gapfill.data import Normalizer
from gapfill.floor import distance_to_seen, first_guess

FEATURES = 2


def features(problem, normalizer, frames, seen) -> tuple[np.ndarray, np.ndarray]:
    """(n, Y, X, 2) [normalised first guess, distance / 10] and the first guess (n, 1, Y, X) physical."""
    guess = first_guess("interpolation", problem.visible(), seen, problem.splits["train"], frames)
    dist = distance_to_seen(seen[frames]) / 10.0
    g = normalizer.normalize(guess)[:, 0]
    return np.stack([g, dist], axis=-1).astype(np.float32), guess


class PixelMLP(lightning.FieldModule):
    """x (N, 2) -> residual (N,) in normalised units; `reconstruct` adds it to the first guess."""

    def __init__(self, problem, normalizer, lr: float = 1e-2, hidden: int = 16):
        super().__init__()
        self.problem, self.normalizer, self.lr = problem, normalizer, lr
        self.net = torch.nn.Sequential(torch.nn.Linear(FEATURES, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.mean((self(x) - y) ** 2)
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def reconstruct(self, frames):
        frames = list(frames)
        x, guess = features(self.problem, self.normalizer, frames, self.problem.observed)
        with torch.no_grad():
            r = self(torch.as_tensor(x, device=self.device)).cpu().numpy().astype(np.float64)   # (n, Y, X)
        return guess + r[:, None] * self.normalizer.std[0], None


class PixelData(pl.LightningDataModule):
    """Hidden cells of the training frames under the training mask: features and the residual target."""

    def __init__(self, problem, normalizer, batch_size: int, args: dict):
        super().__init__()
        tr = problem.splits["train"]
        frames = list(range(tr.start, tr.stop))
        x, guess = features(problem, normalizer, frames, problem.observed)
        truth = normalizer.normalize(problem.field.values[tr])[:, 0]
        resid = truth - normalizer.normalize(guess)[:, 0]
        hidden = ~problem.observed[tr] & np.isfinite(truth)
        self.x, self.y = torch.as_tensor(x[hidden]), torch.as_tensor(resid[hidden].astype(np.float32))
        self.batch_size, self.args = batch_size, args

    def train_dataloader(self):
        return lightning.train_loader(torch.utils.data.TensorDataset(self.x, self.y), self.batch_size, self.args)


def main(argv=None) -> int:
    p = cli.train_parser("Reference pixel MLP on the Lightning engine")
    lightning.add_engine_args(p)
    p.add_argument("--batch_size", type=cli.positive_int, default=256)
    p.add_argument("--lr", type=cli.positive_float, default=1e-2)
    p.set_defaults(max_iters=0, mask_kind="random", prob_masking=0.8)
    args = p.parse_args(argv)
    run = runs.open_training(args, "reference", {"bs": args.batch_size, "seed": args.seed},
                             ["epoch", "train_loss", "valid_rmse", "valid_nll"])
    if run.status == "finished":
        return 0
    problem = run.problem
    normalizer = Normalizer.fit(problem.visible()[problem.splits["train"]])
    pl.seed_everything(args.seed, workers=True, verbose=False)
    module = PixelMLP(problem, normalizer, args.lr)
    lightning.fit(run, args, module, PixelData(problem, normalizer, args.batch_size, vars(args)))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(runs.run_cli(main))
