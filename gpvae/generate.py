"""Draw sequences from a trained GP-VAE's prior and decode them: one PDF page, a row per sequence.

Each latent channel and cell is a draw of the GP prior over the window's frames (spatially independent,
as the model assumes); the decoder turns it into frames over the training climatology, with no cell
observed. What the notebook's "samples from the prior" meant, on the real model.

    python -m gpvae.generate --checkpoint checkpoints/gpvae/RUN --n 8 --out generated.pdf
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gapfill import lightning
from gapfill.cli import positive_int
from gapfill.data import Normalizer
from gapfill.entry import Parser, run_cli
from gapfill.evaluate import load_run
from gapfill.files import check_figure_path
from gapfill.floor import climatology
from gapfill.problem import build_problem
from gapfill.system import setup_logging
from gpvae.gpvae_model import GPVAE

log = logging.getLogger("gpvae.generate")


def draw(module, clim_norm: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(n, W, B, Y, X) normalised frames decoded from prior draws; clim_norm (B, Y, X) the decoder's
    first guess."""
    W = module.hparams.window
    B, Y, X = clim_norm.shape
    cond = torch.cat([torch.as_tensor(clim_norm, dtype=torch.float32), torch.zeros(B, Y, X)])  # [guess, no mask]
    cond = cond.expand(n, W, 2 * B, Y, X).to(module.device)
    s = module.hparams.latent_stride
    h, w = -(-Y // s), -(-X // s)
    g = torch.Generator().manual_seed(seed)
    z = torch.empty(n, module.hparams.latent_dim, h, w, W)
    for idx, K in zip(module.groups, module.kernels(W), strict=True):
        L = torch.linalg.cholesky(K.detach().cpu()).float()                  # (W, W)
        z[:, idx] = torch.randn(n, len(idx), h, w, W, generator=g) @ L.T      # each series ~ N(0, K)
    with torch.no_grad():
        mean, _ = module.decode(z.to(module.device), cond)
    return clim_norm[None, None] + mean.cpu().numpy()


def main(argv=None) -> int:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a GP-VAE run folder")
    p.add_argument("--n", type=positive_int, default=8, help="sequences to draw")
    p.add_argument("--frames", type=positive_int, default=6, help="frames of each sequence shown")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="PDF (default: <checkpoint>/generated.pdf)")
    p.add_argument("--log_level", default="INFO")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    cfg = load_run(args.checkpoint, "gpvae", "gpvae/generate.py")
    out = Path(args.out) if args.out else Path(args.checkpoint) / "generated.pdf"
    check_figure_path(out, "--out", ("pdf",))
    problem = build_problem(cfg["args"])
    norm = Normalizer.from_dict(cfg["normalization"])
    clim = norm.normalize(climatology(problem.visible(), problem.splits["train"])[None])[0]
    clim = np.nan_to_num(clim).astype(np.float32)
    module = lightning.load_module(GPVAE.from_args(cfg["args"], len(norm.mean), cfg["floor_var"]), args.checkpoint)
    frames = norm.denormalize(draw(module, clim, args.n, args.seed).reshape(-1, *clim.shape))
    frames = frames.reshape(args.n, -1, *clim.shape)[:, : args.frames, 0]      # (n, frames, Y, X) band 0
    fig = Figure(figsize=(11.69, 8.27), layout="constrained")
    axes = fig.subplots(args.n, frames.shape[1], squeeze=False)
    lo, hi = np.nanpercentile(frames, [1, 99])
    for i in range(args.n):
        for j in range(frames.shape[1]):
            im = axes[i, j].imshow(frames[i, j], vmin=lo, vmax=hi, origin="lower", cmap="viridis")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(f"frame {j}", fontsize=8)
        axes[i, 0].set_ylabel(f"draw {i + 1}", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.6, label=f"{cfg['bands'][0]} ({cfg['units'][0]})")
    fig.suptitle(f"{args.n} sequences from the GP prior ({cfg['args']['kernel']}), decoded")
    with PdfPages(out) as pdf:
        pdf.savefig(fig)
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
