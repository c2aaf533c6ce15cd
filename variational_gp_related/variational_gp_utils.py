"""Sparse variational GP (SVGP, GPyTorch) for gappy fields: inducing points, the model, sparse inpainting.

Inputs, kernels, the likelihood and the climatology mean are the exact GP's (exact_gp_related.exact_gp_utils).
Training maximises the ELBO of Hensman et al. (2013) on mini-batches of observed cells: q(u) = N(m, S) on M
inducing points, initialised by k-means on the observed inputs, so a step costs O(B M^2 + M^3) in time and
O(B M + M^2) in memory, whatever the size of the field.

Inpainting a frame refits q(u) with the hyperparameters frozen: M inducing points by k-means on the observed
cells of the frame and the frames around it, then the optimal Gaussian q(u) for those cells (Titsias 2009),
accumulated chunk by chunk. With as many inducing points as cells it is the exact GP posterior.
"""
from __future__ import annotations

import logging
import warnings

import gpytorch
import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from exact_gp_related.exact_gp_utils import cholesky

log = logging.getLogger(__name__)


def add_variational_args(p) -> None:
    """The variational GP's own options (kernel options come from exact_gp_utils.add_model_args)."""
    g = p.add_argument_group("variational")
    g.add_argument("--num_inducing_points", type=int, default=512,
                   help="M: inducing points of q(u) in training and around each inpainted frame")
    g.add_argument("--batch_size", type=int, default=1024, help="observed cells per step; 0 = all (full batch)")
    g.add_argument("--learn_inducing_locations", action="store_true",
                   help="optimise the inducing inputs (default: keep the k-means centres)")
    g.add_argument("--natural_gradient", action="store_true",
                   help="natural-gradient steps (--ngd_lr) for q(u), Adam (--lr) for the hyperparameters")
    g.add_argument("--ngd_lr", type=float, default=0.1, help="natural-gradient step (1 = exact, full batch)")


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 25, sample: int = 50_000) -> np.ndarray:
    """(min(k, N), D) k-means centres of x (N, D) (k-means++ start, on at most `sample` points);
    x itself when it has no more than k points."""
    if len(x) <= k:
        return x.copy()
    rng = np.random.default_rng(seed)
    sub = x[rng.choice(len(x), sample, replace=False)] if len(x) > sample else x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                   # "One of the clusters is empty": refilled below
        centres, labels = kmeans2(sub, k, iter=iters, minit="++", seed=rng)
    empty = np.setdiff1d(np.arange(k), labels)
    if empty.size:                                        # an empty cluster keeps a real input instead
        centres[empty] = sub[rng.choice(len(sub), empty.size, replace=False)]
    return centres


class SVGP(gpytorch.models.ApproximateGP):
    """Sparse variational GP on (N, 3) inputs with M inducing points; holds its likelihood so that one
    state_dict (and one parameter list) has everything."""

    def __init__(self, inducing: torch.Tensor, kernel, likelihood, constant_mean: bool, natural: bool,
                 learn_inducing: bool):
        dist = (gpytorch.variational.NaturalVariationalDistribution if natural
                else gpytorch.variational.CholeskyVariationalDistribution)(inducing.size(0))
        super().__init__(gpytorch.variational.VariationalStrategy(self, inducing, dist,
                                                                  learn_inducing_locations=learn_inducing))
        self.mean_module = gpytorch.means.ConstantMean() if constant_mean else gpytorch.means.ZeroMean()
        self.covar_module = kernel
        self.likelihood = likelihood

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def make_variational_model(args: dict, kernel, lik, inducing: np.ndarray, dtype=torch.float64, device="cpu") -> SVGP:
    """SVGP for one band from the run options, a kernel and likelihood (exact_gp_utils), inducing (M, 3)."""
    z = torch.as_tensor(inducing, dtype=dtype)
    model = SVGP(z, kernel, lik, args["mean_function"] == "constant", args["natural_gradient"],
                 args["learn_inducing_locations"])
    return model.to(device=device, dtype=dtype)


@torch.no_grad()
def sparse_posterior(kern, mean_fn, noise: torch.Tensor, xc: torch.Tensor, yc: torch.Tensor, z: torch.Tensor,
                     xs: torch.Tensor, what: str, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictive mean and variance (noise included) at xs (P, 3) under the optimal q(u) on inducing inputs
    z (M, 3) for the cells xc (N, 3), yc (N,) (Titsias 2009; the SGPR equations of GPflow). Both (P,).
    Memory O(M^2 + chunk M): the cells enter through A A^T and A r, summed chunk by chunk."""
    M, dt = len(z), z.dtype
    eye = torch.eye(M, dtype=dt, device=z.device)
    Kmm = kern(z, z).to_dense()
    Kmm = Kmm + (1e-6 if dt == torch.float64 else 1e-4) * Kmm.diagonal().mean() * eye
    L = cholesky(Kmm, what)
    sigma = noise.reshape(()).sqrt()
    AAt, Ar = torch.zeros(M, M, dtype=dt, device=z.device), torch.zeros(M, dtype=dt, device=z.device)
    for s in range(0, len(xc), chunk):
        xb = xc[s:s + chunk]
        A = torch.linalg.solve_triangular(L, kern(z, xb).to_dense(), upper=False) / sigma     # (M, n)
        AAt += A @ A.T
        Ar += A @ ((yc[s:s + chunk] - mean_fn(xb)) / sigma)
    LB = cholesky(eye + AAt, what)
    c = torch.linalg.solve_triangular(LB, Ar.unsqueeze(-1), upper=False).squeeze(-1)           # (M,)
    means, variances = [], []
    for s in range(0, len(xs), chunk):
        xq = xs[s:s + chunk]
        t1 = torch.linalg.solve_triangular(L, kern(z, xq).to_dense(), upper=False)             # (M, p)
        t2 = torch.linalg.solve_triangular(LB, t1, upper=False)
        means.append(mean_fn(xq) + t2.T @ c)
        var = kern(xq, diag=True) - (t1 * t1).sum(0) + (t2 * t2).sum(0)
        variances.append(var.clamp_min(0) + noise.reshape(()))
    return torch.cat(means), torch.cat(variances)


def frozen_solver(model, lik, num_inducing: int, seed: int, what: str):
    """solve(xc, yc, xs) for exact_gp_utils.inpaint: k-means inducing points on the frame's context cells,
    then the optimal q(u) with the trained hyperparameters."""
    def solve(xc, yc, xs):
        z = torch.as_tensor(kmeans(xc.cpu().numpy(), num_inducing, seed), dtype=xc.dtype, device=xc.device)
        return sparse_posterior(model.covar_module, model.mean_module, lik.noise, xc, yc, z, xs, what)
    return solve


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Cells of training step `step` (0-based): epochs are seeded permutations of range(n) cut into batches
    (the last one shorter), so that step s draws the same cells in an interrupted and a resumed run."""
    b = n if batch_size <= 0 else min(batch_size, n)
    per_epoch = -(-n // b)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * b:(k + 1) * b]
