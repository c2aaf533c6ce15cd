"""Sparse variational GP (SVGP, GPyTorch) for gappy fields: inducing points, the model, sparse inpainting.

Inputs, kernels, the likelihood and the climatology mean are the exact GP's (exact_gp_related.exact_gp_utils).
Training maximises the predictive log likelihood (PLL, Jankowiak et al. 2020) or the ELBO (Hensman et al.
2013) on mini-batches of observed cells: q(u) = N(m, S) on M inducing points, initialised by k-means on the
observed inputs, so a step costs O(B M^2 + M^3) in time and O(B M + M^2) in memory, whatever the size of the
field.

Inpainting a frame refits q(u) with the hyperparameters frozen, on the observed cells of the frame and of
the frames around it: M inducing inputs (the frame's own observed cells, then k-means centres of the
others), then the optimal q(u) with the FITC noise, accumulated chunk by chunk. With as many inducing
points as cells it is the exact GP posterior.
"""
from __future__ import annotations

import functools
import warnings

import gpytorch
import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from exact_gp_related.exact_gp_utils import cholesky, kernel_label, make_kernel, make_likelihood
from exact_gp_related.gp_training import Setup
from gapfill import cli
from gapfill.data import Normalizer


def add_variational_args(p) -> None:
    """The variational GP's own options (kernel options come from exact_gp_utils.add_model_args)."""
    g = p.add_argument_group("variational")
    g.add_argument("--num_inducing_points", type=cli.positive_int, default=512,
                   help="M: inducing points of q(u) in training and around each inpainted frame")
    g.add_argument("--batch_size", type=cli.nonnegative_int, default=1024,
                   help="observed cells per step; 0 = all (full batch)")
    g.add_argument("--learn_inducing_locations", action="store_true",
                   help="optimise the inducing inputs (default: keep the k-means centres)")
    g.add_argument("--natural_gradient", action="store_true",
                   help="natural-gradient steps (--ngd_lr) for q(u), Adam (--lr) for the hyperparameters "
                        "(needs --objective elbo)")
    g.add_argument("--objective", choices=("pll", "elbo"), default="pll",
                   help="pll: predictive log likelihood (Jankowiak et al. 2020), keeps the noise from absorbing what "
                        "the inducing points miss; elbo: the variational lower bound (Hensman et al. 2013)")
    g.add_argument("--ngd_lr", type=cli.positive_float, default=0.1, help="natural-gradient step (1 = exact, full batch)")
    g.add_argument("--select", choices=("valid_crps", "valid_nll", "valid_rmse"), default="valid_rmse",
                   help="validation score that picks the best state (valid_rmse: the mean alone, as the exact GP; "
                        "valid_crps picked a 12%% less accurate state on a1b stations, see the README)")
    g.add_argument("--variance_calibration", choices=("validation", "none"), default="validation",
                   help="validation: at every validation, the factor on the predictive variance of minimum NLL on "
                        "the validation frames, kept with the state and applied at test time (the PLL shrinks the "
                        "noise: the raw variance is too small); none: the raw variance")


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
        """x: (N, 3) scaled (t, y, x) -> the prior MultivariateNormal over the N points (mean (N,), covariance
        (N, N), lazy)."""
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
    """Predictive mean and variance (noise included) at xs (P, 3) given the cells xc (N, 3), yc (N,) through
    inducing inputs z (M, 3); both (P,). FITC (Snelson & Ghahramani 2006): the optimal Gaussian q(u) when
    each cell's noise is sigma^2 + k_ii - q_ii, what the inducing points miss of its prior variance (the
    same term the PLL objective puts in its predictive variance). Exact when z holds every cell of xc.
    Memory O(M^2 + chunk M): the cells enter through A A^T and A r, summed chunk by chunk."""
    M, dt = len(z), z.dtype
    eye = torch.eye(M, dtype=dt, device=z.device)
    Kmm = kern(z, z).to_dense()
    Kmm = Kmm + (1e-6 if dt == torch.float64 else 1e-4) * Kmm.diagonal().mean() * eye
    L = cholesky(Kmm, what)
    noise = noise.reshape(())
    AAt, Ar = torch.zeros(M, M, dtype=dt, device=z.device), torch.zeros(M, dtype=dt, device=z.device)
    for s in range(0, len(xc), chunk):
        xb = xc[s:s + chunk]
        A = torch.linalg.solve_triangular(L, kern(z, xb).to_dense(), upper=False)             # (M, n)
        lam = noise + (kern(xb, diag=True) - (A * A).sum(0)).clamp_min(0)                    # (n,) FITC noise
        A = A / lam.sqrt()
        AAt += A @ A.T
        Ar += A @ ((yc[s:s + chunk] - mean_fn(xb)) / lam.sqrt())
    LB = cholesky(eye + AAt, what)
    c = torch.linalg.solve_triangular(LB, Ar.unsqueeze(-1), upper=False).squeeze(-1)           # (M,)
    means, variances = [], []
    for s in range(0, len(xs), chunk):
        xq = xs[s:s + chunk]
        t1 = torch.linalg.solve_triangular(L, kern(z, xq).to_dense(), upper=False)             # (M, p)
        t2 = torch.linalg.solve_triangular(LB, t1, upper=False)
        means.append(mean_fn(xq) + t2.T @ c)
        var = kern(xq, diag=True) - (t1 * t1).sum(0) + (t2 * t2).sum(0)
        variances.append(var.clamp_min(0) + noise)
    return torch.cat(means), torch.cat(variances)


def local_inducing(xc: np.ndarray, xs: np.ndarray, m: int, seed: int) -> np.ndarray:
    """(<= m, 3) inducing inputs for predicting xs (P, 3) from xc (N, 3): the cells of xc in xs's frames
    first (k-means of them when more than m), then k-means centres of the other cells for the rest."""
    own = np.isin(xc[:, 0], np.unique(xs[:, 0]))
    if own.sum() >= m:
        return kmeans(xc[own], m, seed)
    rest = xc[~own]
    return np.concatenate([xc[own], kmeans(rest, m - int(own.sum()), seed)]) if len(rest) else xc[own]


def frozen_solver(model, lik, num_inducing: int, seed: int, what: str):
    """solve(xc, yc, xs) for exact_gp_utils.inpaint: q(u) refitted on a frame's context cells with the
    trained hyperparameters frozen, inducing inputs from local_inducing."""
    def solve(xc, yc, xs):
        """xc (N, 3), yc (N,), xs (P, 3) -> mean (P,), variance (P,) (sparse_posterior)."""
        zn = local_inducing(xc.cpu().numpy(), xs.cpu().numpy(), num_inducing, seed)
        z = torch.as_tensor(zn, dtype=xc.dtype, device=xc.device)
        return sparse_posterior(model.covar_module, model.mean_module, lik.noise, xc, yc, z, xs, what)
    return solve


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Cells of training step `step` (0-based): epochs are seeded permutations of range(n) cut into batches
    (the last one shorter), so that step s draws the same cells in an interrupted and a resumed run."""
    b = n if batch_size <= 0 else min(batch_size, n)
    epoch, k = divmod(step, -(-n // b))
    return _permutation(n, seed, epoch)[k * b:(k + 1) * b]


@functools.lru_cache(maxsize=1)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The seeded order of an epoch, drawn once per epoch rather than once per step (read-only)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.flags.writeable = False
    return perm


class VariationalSetup(Setup):
    """The exact GP's Setup (normalisation, targets, validation) with the sparse posterior for inpainting."""

    def __init__(self, args: dict, problem, normalizer: Normalizer | None = None, score_valid=None):
        super().__init__(args, problem, normalizer, score_valid)
        self.label = f"variational GP {kernel_label(args)}"

    def solver(self, b: int, model, lik):
        return frozen_solver(model, lik, self.args["num_inducing_points"], self.args["seed"] + b,
                             f"{self.label} band {b}")

    def new_model(self, b: int, inducing: np.ndarray, device, x=None, y=None):
        """An untrained SVGP for band b on inducing inputs (M, 3); spectral kernels start from (x, y)."""
        def tt(a):
            return None if a is None else torch.as_tensor(a, dtype=self.dtype, device=device)
        kernel = make_kernel(self.args, self.grid, tt(x), tt(y))
        model = make_variational_model(self.args, kernel, make_likelihood(), inducing, self.dtype, device)
        return model, model.likelihood
