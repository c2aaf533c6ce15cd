"""Exact GP inference on whole grids: Kronecker-structured covariance, every observed cell.

A product kernel on the complete grid (T, A, B) is K = K_t (x) K_a (x) K_b, with (A, B) = (Y, X) for a
separable space kernel and (Y * X, 1) for a dense space factor (an isotropic 2-D kernel, or one on the
sphere). With missing cells the data covariance is A = S K S^T + noise I (S gathers the observed cells),
and a multiply by K is three small dense mode products on the grid. Everything is solved in the whitened
eigenbasis of K = Q diag(lam) Q^T (Q = Q_t (x) Q_a (x) Q_b from the factors' eigendecompositions):

    B w = (I + lam^1/2 Q^T S^T S Q lam^1/2 / noise) w = lam^1/2 Q^T S^T y / noise,   f = Q lam^1/2 w,

where f is the posterior mean on the whole grid and A^-1 y = (y - S f) / noise. (When every frame observes
the same cells, `StationSolver` does all of it exactly instead, from the eigendecompositions of K_t and of
the space factor on the observed cells.) B's eigenvalues are at
least 1, and its exact diagonal, 1 + lam (Q^2)^T S^T 1 / noise (one mode product of the mask with the
squared eigenvectors), is the preconditioner of a batched conjugate-gradient solve (Jacobi in the
eigenbasis; it cuts the iterations several-fold, see exact_gp_related/README.md). Posterior variances come from pathwise
conditioning (Matheron's rule): prior samples Q lam^1/2 eps minus their own posterior means given noisy
observations of themselves. The marginal likelihood's gradient uses Hutchinson probes z through the same
solve: d(-log p)/dtheta = -a^T dA a / 2 + tr(A^-1 dA) / 2, with tr(A^-1 dA) ~ mean (A^-1 z)^T dA z, taken
by autograd through the kernel factors of a surrogate; its value uses a stochastic Lanczos log-determinant
from the coefficients of the preconditioned CG (log det A = n log noise + log det B).
Grid tensors are (R, T, A, B): R right-hand sides (mean, probes, samples) solved together.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import gpytorch
import numpy as np
import torch

from exact_gp_related.exact_gp_utils import Grid, context_width
from exact_gp_related.gp_training import Setup
from gapfill import cli
from gapfill.errors import RunError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ factors
def mode_products(v: torch.Tensor, mats, transpose: bool = False) -> torch.Tensor:
    """(M_0 (x) M_1 (x) M_2) v for v (R, T, A, B) and mats ((T, T), (A, A), (B, B)); M^T with `transpose`."""
    m0, m1, m2 = (m.mT for m in mats) if transpose else mats
    R, T, A, B = v.shape
    v = (m0 @ v.reshape(R, T, A * B)).reshape(R, T, A, B)
    v = m1 @ v
    return v @ m2.mT


def axis_points(grid, dims: tuple[int, ...]) -> torch.Tensor:
    """(n, 3) inputs of one factor's axis: the grid's coordinates on `dims`, zero elsewhere (a kernel part
    with those active dims sees only them); dims (1, 2) is the (Y * X) product of y and x."""
    coords = [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in grid]
    axes = torch.meshgrid(*(coords[d] for d in dims), indexing="ij")
    pts = torch.zeros(axes[0].numel(), 3, dtype=torch.float64)
    for d, a in zip(dims, axes, strict=True):
        pts[:, d] = a.reshape(-1)
    return pts


def _dims(k) -> tuple[int, ...]:
    d = getattr(k, "active_dims", None)
    if d is None and isinstance(k, gpytorch.kernels.ScaleKernel):
        d = k.base_kernel.active_dims
    return tuple(int(i) for i in d.tolist()) if d is not None else ()


def kernel_parts(kernel):
    """(outputscale, [parts]) of a product kernel ScaleKernel(ProductKernel(...)) or ScaleKernel(k): each part
    acts on dims (0,), (1,), (2,) or (1, 2); None when the kernel is not such a product."""
    if not isinstance(kernel, gpytorch.kernels.ScaleKernel):
        return None
    inner = kernel.base_kernel
    parts, stack = [], [inner]
    while stack:
        k = stack.pop(0)
        if isinstance(k, gpytorch.kernels.ProductKernel):
            stack[:0] = list(k.kernels)
        else:
            parts.append(k)
    dims = [_dims(k) for k in parts]
    if any(d not in ((0,), (1,), (2,), (1, 2)) for d in dims) or len(set(dims)) != len(dims):
        return None
    covered = sorted(i for d in dims for i in d)
    if len(covered) != len(set(covered)):
        return None
    return kernel.outputscale, parts


def factor_matrices(kernel, grid, dtype, device) -> list[torch.Tensor]:
    """[(T, T), (A, A), (B, B)] differentiable factor matrices of `kernel` on `grid`; the outputscale is in
    the first. A missing part (a spatial-only kernel, time 'disabled') is the identity; a (1, 2) part gives
    (A, B) = (Y * X, 1)."""
    scale, parts = kernel_parts(kernel)
    t, y, x = grid
    by_dims = {_dims(k): k for k in parts}
    sphere = (1, 2) in by_dims
    sizes = {(0,): len(t), (1,): len(y), (2,): len(x), (1, 2): len(y) * len(x)}
    order = [(0,), (1, 2), None] if sphere else [(0,), (1,), (2,)]
    mats = []
    for dims in order:
        if dims is None:
            mats.append(torch.ones(1, 1, dtype=dtype, device=device))
            continue
        k = by_dims.get(dims)
        if k is None:
            mats.append(torch.eye(sizes[dims], dtype=dtype, device=device))
            continue
        pts = axis_points(grid, dims).to(dtype=dtype, device=device)
        mats.append(k(pts, pts).to_dense())
    mats[0] = mats[0] * scale.reshape(())
    return mats


def eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues clamped at 0, eigenvectors) of a symmetric matrix, no gradient; on a CPU through numpy's
    LAPACK, several times faster than torch's there."""
    m = m.detach()
    lam, Q = np.linalg.eigh(m.cpu().numpy()) if m.device.type == "cpu" else torch.linalg.eigh(m)
    return torch.as_tensor(lam, device=m.device).clamp_min(0), torch.as_tensor(Q, device=m.device)


@dataclass
class Eigen:
    """K = Q diag(lam) Q^T of a Kronecker product: Q (three factors), lam (T, A, B) clamped at 0."""

    Q: list
    lam: torch.Tensor

    @classmethod
    def of(cls, mats) -> Eigen:
        """Of the factor matrices ((T, T), (A, A), (B, B))."""
        ls, Qs = zip(*(eigh(m) for m in mats), strict=True)
        return cls(list(Qs), ls[0][:, None, None] * ls[1][None, :, None] * ls[2][None, None, :])

    def fwd(self, v):
        """Q^T v: grid (R, T, A, B) -> eigen coefficients."""
        return mode_products(v, self.Q, transpose=True)

    def inv(self, w):
        """Q w: eigen coefficients (R, T, A, B) -> grid (R, T, A, B)."""
        return mode_products(w, self.Q)

    def project_diag(self, mask: torch.Tensor) -> torch.Tensor:
        """(T, A, B) the diagonal of Q^T diag(mask) Q for mask (T, A, B)."""
        return mode_products(mask[None], [q * q for q in self.Q], transpose=True)[0]


# ---------------------------------------------------------------------------------------------- CG
@dataclass
class CGResult:
    x: torch.Tensor            # (R, ...) solutions
    iters: int
    residual: torch.Tensor     # (R,) final relative residual norms
    alphas: list               # per iteration (R,) step sizes (for Lanczos)
    betas: list                # per iteration (R,)


def pcg(matmul, rhs: torch.Tensor, precond: torch.Tensor, x0: torch.Tensor | None = None, tol: float = 1e-6,
        max_iters: int = 1000, track: bool = False) -> CGResult:
    """Batched preconditioned conjugate gradients for M x = rhs, M SPD, rhs (R, ...), a diagonal
    preconditioner `precond` (broadcasts against one right-hand side); stops when every ||r|| / ||rhs||
    is below `tol`. `track` keeps the coefficients for stochastic Lanczos quadrature (needs x0 None)."""
    R = rhs.shape[0]
    shape = (R,) + (1,) * (rhs.dim() - 1)
    dot = lambda a, b: torch.einsum("ri,ri->r", a.reshape(R, -1), b.reshape(R, -1))   # noqa: E731
    tiny = torch.finfo(rhs.dtype).tiny                   # 1e-300 would be 0 in float32
    bnorm = rhs.reshape(R, -1).norm(dim=1).clamp_min(tiny)
    inv_pre = 1 / precond
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - matmul(x) if x0 is not None else rhs.clone()
    z = r * inv_pre
    p = z.clone()
    rz = dot(r, z)
    alphas, betas = [], []
    res = r.reshape(R, -1).norm(dim=1) / bnorm
    done = res < tol
    it = 0
    while it < max_iters and not bool(done.all()):
        Mp = matmul(p)
        alpha = torch.where(done, torch.zeros_like(rz), rz / dot(p, Mp).clamp_min(tiny))
        x.addcmul_(alpha.reshape(shape), p)
        r.addcmul_(alpha.reshape(shape), Mp, value=-1)
        torch.mul(r, inv_pre, out=z)
        rz_new = dot(r, z)
        beta = torch.where(done, torch.zeros_like(rz), rz_new / rz.clamp_min(tiny))
        if track:
            alphas.append(alpha)
            betas.append(beta)
        p.mul_(beta.reshape(shape)).add_(z)
        rz = rz_new
        it += 1
        res = r.reshape(R, -1).norm(dim=1) / bnorm
        done = done | (res < tol)
    return CGResult(x, it, res, alphas, betas)


def lanczos_logdet(alphas, betas, probe_sq: torch.Tensor) -> torch.Tensor:
    """Stochastic Lanczos quadrature: sum over probes i of ||z_i||^2 e1^T log(T_i) e1 / R, T_i the Lanczos
    tridiagonal of probe i from its CG coefficients (Saad 2003, sec. 6.7); probe_sq (R,) the ||z_i||^2."""
    R = probe_sq.shape[0]
    out = torch.zeros(R, dtype=probe_sq.dtype)
    for i in range(R):
        a = [float(v[i]) for v in alphas]
        b = [float(v[i]) for v in betas]
        m = next((k for k, v in enumerate(a) if v == 0.0), len(a))
        if m == 0:
            continue
        diag = np.empty(m)
        off = np.empty(max(m - 1, 0))
        for j in range(m):
            diag[j] = 1 / a[j] + (b[j - 1] / a[j - 1] if j > 0 else 0.0)
            if j < m - 1:
                off[j] = math.sqrt(max(b[j], 0.0)) / a[j]
        Tm = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
        theta, V = np.linalg.eigh(Tm)
        out[i] = float(probe_sq[i]) * float((V[0] ** 2 * np.log(np.clip(theta, 1e-300, None))).sum())
    return out.mean()


# -------------------------------------------------------------------------------------------- solver
class Solver:
    """The whitened system of one set of hyperparameters on one grid (T, A, B) with observed cells `mask`.

    mats: factor matrices (factor_matrices), noise: the likelihood's noise; mask (T, A, B) float 0/1.
    """

    def __init__(self, mats, noise: float, mask: torch.Tensor, tol: float = 1e-4, max_iters: int = 1000,
                 warn: bool = True):
        self.eig = Eigen.of(mats)
        self.noise, self.mask, self.tol, self.max_iters, self.warn = float(noise), mask, tol, max_iters, warn
        self.sqlam = self.eig.lam.sqrt()
        self.weight = mask / self.noise
        self.precond = 1 + self.eig.lam * self.eig.project_diag(mask) / self.noise
        self.iters: list[int] = []

    def matmul(self, w):
        """B w for eigen coefficients w (R, T, A, B)."""
        g = self.eig.inv(self.sqlam * w).mul_(self.weight)
        return self.eig.fwd(g).mul_(self.sqlam).add_(w)

    def rhs(self, data_grid):
        """lam^1/2 Q^T S^T r / noise for data r scattered on the grid (R, T, A, B), zero off the mask."""
        return self.sqlam * self.eig.fwd(data_grid * self.mask) / self.noise

    def solve(self, data_grid, w0=None, track: bool = False) -> tuple[torch.Tensor, torch.Tensor, CGResult]:
        """(f, a, cg): f = K S^T A^-1 r, the posterior mean on the whole grid of data r (R, T, A, B) on the
        mask; a = A^-1 r on the grid (zero off the mask)."""
        res = pcg(self.matmul, self.rhs(data_grid), self.precond, w0, self.tol, self.max_iters, track)
        self.iters.append(res.iters)
        if self.warn and not bool((res.residual < self.tol).all()):
            log.warning("conjugate gradients stopped at %d iterations with relative residual %.2g (tolerance "
                        "%.0e)", res.iters, float(res.residual.max()), self.tol)
        f = self.eig.inv(self.sqlam * res.x)
        a = (data_grid - f) * self.mask / self.noise
        return f, a, res

    def prior_samples(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, T, A, B) samples of the prior N(0, K) on the grid."""
        eps = torch.randn((n, *self.sqlam.shape), generator=generator, dtype=self.sqlam.dtype).to(self.sqlam.device)
        return self.eig.inv(self.sqlam * eps)

    def variance(self, n: int, seed: int = 0, chunk: int = 16, progress: bool = False) -> torch.Tensor:
        """(T, A, B) Monte-Carlo posterior variance of the latent field at every cell from n pathwise samples
        (relative error about sqrt(2 / n)), solved `chunk` at a time."""
        from tqdm import tqdm
        gen = torch.Generator().manual_seed(seed)
        acc = torch.zeros_like(self.sqlam)
        done = 0
        bar = tqdm(total=n, desc="posterior samples", unit="sample", disable=not progress or None)
        while done < n:
            m = min(chunk, n - done)
            prior = self.prior_samples(m, gen)
            noise = torch.randn(prior.shape, generator=gen, dtype=prior.dtype).to(prior.device) * math.sqrt(self.noise)
            f, _, _ = self.solve((prior + noise) * self.mask)
            acc += ((prior - f) ** 2).sum(0)
            done += m
            bar.update(m)
        bar.close()
        return acc / n

    def logdet(self, probes: int, seed: int = 0, iters: int = 30) -> torch.Tensor:
        """Stochastic Lanczos estimate of log det B (B the whitened system), with `probes` Gaussian probes
        drawn from N(0, P) for the preconditioner P: log det B = log det P + log det P^-1/2 B P^-1/2; the
        quadrature converges long before the solve, so at most `iters` Lanczos steps."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn((probes, *self.sqlam.shape), generator=gen, dtype=self.sqlam.dtype).to(self.sqlam.device)
        res = pcg(self.matmul, z * self.precond.sqrt(), self.precond, None, 1e-3, iters, track=True)
        sq = (z.reshape(probes, -1) ** 2).sum(1).cpu()
        return self.precond.log().sum() + lanczos_logdet(res.alphas, res.betas, sq)


class StationSolver:
    """Exact inference when every frame observes the same cells (a fixed mask: stations, land never seen).

    The data covariance is then itself a Kronecker product, A = K_t (x) K_oo + noise I with K_oo the space
    factor on the n observed cells, and its eigendecomposition (Q_t (x) V, lam_t mu_j + noise) gives the
    solve, the log-determinant, the marginal likelihood's exact gradient and the posterior variance of
    every cell in O(T^2 n + T n S) with no iteration and no sampling. mats: factor matrices ((T, T), (A, A),
    (B, B)); cells: (n,) flat indices in A * B of the observed cells.
    """

    def __init__(self, mats, noise: float, cells: torch.Tensor):
        mats = [m.detach() for m in mats]
        A, B = mats[1].shape[0], mats[2].shape[0]
        self.cells, self.noise, self.Kt = cells, float(noise), mats[0]
        self.ia, self.ib = ia, ib = cells // B, cells % B
        self.Kso = (mats[1][:, ia][:, None, :] * mats[2][:, ib][None, :, :]).reshape(A * B, len(cells))    # (S, n)
        self.lam_t, self.Qt = eigh(mats[0])
        self.mu, self.V = eigh(self.Kso[cells])
        self.denom = self.lam_t[:, None] * self.mu[None, :] + self.noise                                 # (T, n)
        self.Kt_diag, self.Ks_diag = mats[0].diagonal(), (mats[1].diagonal()[:, None] * mats[2].diagonal()[None]).reshape(-1)

    def alpha(self, y: torch.Tensor) -> torch.Tensor:
        """A^-1 y for y (R, T, n) on the observed cells."""
        return self.Qt @ ((self.Qt.mT @ y @ self.V) / self.denom) @ self.V.mT

    def mean(self, alpha: torch.Tensor) -> torch.Tensor:
        """(R, T, S) posterior mean of every cell from alpha = A^-1 y (R, T, n)."""
        return self.Kt @ alpha @ self.Kso.mT

    def logdet(self) -> float:
        """log det A (A: the (T n, T n) data covariance on the observed cells)."""
        return float(self.denom.log().sum())

    def variance(self, frames=slice(None)) -> torch.Tensor:
        """(T_frames, S) exact posterior variance of the latent field at every cell of `frames`."""
        G = (self.Qt[frames] * self.lam_t) ** 2                               # (T_frames, T): (Q_t lam_t)^2
        H = (self.Kso @ self.V) ** 2                                          # (S, n)
        return (self.Kt_diag[frames, None] * self.Ks_diag[None] - G @ (1 / self.denom) @ H.mT).clamp_min(0)

    def surrogate(self, mats, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """A scalar whose gradient in the hyperparameters is the negative log marginal likelihood's, exactly:
        -a^T A a / 2 + tr(A^-1 A) / 2 with a = A^-1 y (T, n) and A^-1 held fixed."""
        ia, ib = self.ia, self.ib
        Koo = mats[1][ia][:, ia] * mats[2][ib][:, ib]
        fit = (mats[0] @ alpha @ Koo * alpha).sum() + noise * (alpha * alpha).sum()
        dt = torch.einsum("tk,ts,sk->k", self.Qt, mats[0], self.Qt)            # diag(Q_t^T K_t Q_t)
        ds = torch.einsum("ij,ik,kj->j", self.V, Koo, self.V)                  # diag(V^T K_oo V)
        trace = (dt[:, None] * ds[None, :] / self.denom).sum() + noise * (1 / self.denom).sum()
        return -0.5 * fit + 0.5 * trace


MAX_STATIONS = 2048   # above, StationSolver's (n x n) eigendecomposition (1.2 s at 2,048, 5.6 s at 3,277) loses to CG


def fixed_cells(mask: torch.Tensor) -> torch.Tensor | None:
    """(n,) flat indices of the cells observed in every frame when every frame of mask (T, A, B) observes the
    same n <= MAX_STATIONS cells (StationSolver applies); None otherwise (CG)."""
    first = mask[0]
    if not bool((mask == first).all()) or not bool(first.any()) or int(first.sum()) > MAX_STATIONS:
        return None
    return torch.nonzero(first.reshape(-1)).reshape(-1)


def data_matmul(mats, noise: torch.Tensor, mask: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A v = S K S^T v + noise v on the grid, differentiable in the factor matrices and the noise; v (R, T, A, B)
    zero off the mask."""
    return mode_products(v * mask, mats) * mask + noise.reshape(()) * v


def surrogate_loss(mats, noise, mask, alpha: torch.Tensor, probes: torch.Tensor, solved: torch.Tensor):
    """A scalar whose gradient in the hyperparameters is the negative log marginal likelihood's:
    -a^T A a / 2 + mean_i u_i^T A z_i / 2, with a = A^-1 y, u_i = A^-1 z_i held fixed (all (., T, A, B) grids)."""
    Aa = data_matmul(mats, noise, mask, alpha[None])[0]
    Az = data_matmul(mats, noise, mask, probes)
    return -0.5 * (alpha * Aa).sum() + 0.5 * (solved * Az).sum() / probes.shape[0]


def to_grid(values: np.ndarray, observed: np.ndarray, eig_shape, dtype, device):
    """(T, Y, X) values with NaN off `observed` -> (data grid, mask) tensors of shape (T, A, B)."""
    ok = observed & np.isfinite(values)
    data = np.where(ok, values, 0.0).reshape(eig_shape)
    mask = ok.reshape(eig_shape).astype(np.float64)
    return (torch.as_tensor(data, dtype=dtype, device=device), torch.as_tensor(mask, dtype=dtype, device=device))




# ----------------------------------------------------------------------------------- runs and options
PROBES = 4                      # --probes: right-hand sides besides the data in a training step's solve
TRAIN_CG_TOL = 1e-3     # training solves' relative residual, at most; see train_tol
TRAIN_CG_ITERS = 150    # training solves' iteration cap (moving clouds on 365x64x64 needed 540 at noise 0.0016)


def train_tol(cap: float, noise: float) -> float:
    """Relative CG residual of a training step's solves: min(cap, noise / 50). A^-1 y = (y - S f) / noise
    carries the solve's error divided by the noise; on 365x64x64 (moving mask) the fit drifted away once
    tol / noise passed about 0.2 (at 1e-3 from noise 0.005, at 3e-4 from 0.0013)."""
    return min(cap, noise / 50)


def add_inference_args(p) -> None:
    """The exact GP's inference options (train script)."""
    g = p.add_argument_group("inference")
    g.add_argument("--inference", choices=("auto", "kronecker", "dense"), default="auto",
                   help="kronecker: every observed cell of the grid on the Kronecker-structured covariance, exact "
                        "on stations (a fixed mask), conjugate gradients otherwise (auto: for a product kernel); "
                        "dense: Cholesky on --max_train_points and on --max_context_points around each frame")
    g.add_argument("--space_factor", choices=("auto", "dense", "separable"), default="auto",
                   help="kronecker on a flat grid: dense, one isotropic 2-D space kernel on the Y * X cells; "
                        "separable, a y kernel times an x kernel; auto: dense for Matern and spectral kernels up to "
                        "4,096 cells under a fixed mask and 1,024 under a moving one (see exact_gp_related/README.md)")
    g.add_argument("--cg_tol", type=cli.positive_float, default=1e-6,
                   help="kronecker: CG relative residual of the posterior mean's solve (10x for the variance's "
                        "samples); at a learned noise of 1e-4, 1e-4 left the mean 10%% off, 1e-6 0.1%%")
    g.add_argument("--train_cg_tol", type=cli.positive_float, default=TRAIN_CG_TOL,
                   help="kronecker: CG relative residual of the training gradient's solves, at most (warm-started; "
                        "min(this, noise / 50): a fixed 1e-3 sent the fit astray on the default field's moving "
                        "mask as the learned noise fell)")
    g.add_argument("--train_cg_precision", choices=("32", "64"), default="32",
                   help="kronecker: float32 or float64 arithmetic in the training gradient's CG solves (the "
                        "gradient itself is taken in --precision); float32 halves a step")
    g.add_argument("--max_cg_iters", type=cli.positive_int, default=1000,
                   help="kronecker: CG iteration cap of the posterior's solves")
    g.add_argument("--max_train_cg_iters", type=cli.positive_int, default=TRAIN_CG_ITERS,
                   help="kronecker: CG iteration cap of a training step's (warm-started) solves; logged when reached")
    g.add_argument("--probes", type=cli.positive_int, default=PROBES,
                   help="kronecker: Rademacher probes of the gradient's trace term (drawn once: the same every step) "
                        "and Lanczos probes of log det; 4 moved the log length scales of a 20-step fit by 0.06 "
                        "from the exact ones, 8 by 0.04, 2 by 0.39")
    g.add_argument("--variance_samples", type=cli.positive_int, default=64,
                   help="kronecker: pathwise samples of the posterior variance (relative error about sqrt(2 / S))")
    g.add_argument("--valid_variance_samples", type=cli.positive_int, default=8,
                   help="kronecker: pathwise samples of the variance in validation (its NLL only)")


def use_kronecker(args: dict) -> bool:
    """Whether a run's options choose the Kronecker path (configs from before it existed: dense)."""
    inference = args.get("inference", "dense")
    if inference == "auto":
        return args["kernel_combination"] == "product"
    return inference == "kronecker"


def rhs_chunk(cells: int, itemsize: int, budget: float = 2e9) -> int:
    """Right-hand sides solved together on a grid of `cells` cells: about a dozen grid copies each within
    `budget` bytes, at most 16."""
    return int(max(1, min(16, budget // (cells * itemsize * 12))))


def window(frames: np.ndarray, width: int, T: int) -> slice:
    """The frames within `width` of any of `frames`, as one slice of 0..T."""
    return slice(max(0, int(frames.min()) - width), min(T, int(frames.max()) + width + 1))


class KroneckerSetup(Setup):
    """gp_training.Setup with Kronecker inference: a band's posterior mean conditions on every observed cell
    of every frame (one warm-started solve on the whole grid), its variance on every observed cell of the
    frames within the kernel's reach of the frames asked for (`context_width`)."""

    def __init__(self, args: dict, problem, normalizer=None, score_valid=None):
        super().__init__(args, problem, normalizer, score_valid)
        self.label = f"{self.label} (Kronecker)"
        self.samples = args["valid_variance_samples"] if score_valid is not None else args["variance_samples"]
        self.warm: dict = {}
        # the frames a posterior conditions on: training, validation and test (frames past the test window,
        # shown whole by the core when --num_frames_test cuts the record short, are none of them)
        self.frames = max((sl.stop for sl in problem.splits.values()), default=0) or self.observed.shape[0]

    def grid_of(self, sl: slice) -> Grid:
        """The scaled Grid of frames `sl`: t (len,), y (Y,), x (X,)."""
        t, y, x = self.grid
        return Grid(t[sl], y, x, self.grid.x_period, self.grid.lat)

    def band_data(self, b: int, model, sl: slice = slice(None), device="cpu"):
        """(factor matrices, data, mask) of band b on the frames `sl`: the factors with the model's current
        hyperparameters (no gradients), data and mask (T_sl, A, B) shaped like them."""
        with torch.no_grad():
            mats = factor_matrices(model.covar_module, self.grid_of(sl), self.dtype, device)
        T = len(self.grid[0][sl])
        data, mask = to_grid(self.target(b)[sl], self.observed[sl], (T, mats[1].shape[0], mats[2].shape[0]),
                             self.dtype, device)
        if not bool(mask.any()):
            raise RunError(f"{self.label} band {b}: no observed cell to condition on")
        return mats, data, mask

    def solver(self, b: int, model, lik, sl: slice = slice(None), device="cpu") -> Solver:
        """The CG solver of band b on the frames `sl` with the model's hyperparameters."""
        mats, _, mask = self.band_data(b, model, sl, device)
        return Solver(mats, lik.noise.item(), mask, self.args["cg_tol"], self.args["max_cg_iters"])

    @torch.no_grad()
    def inpaint(self, b: int, model, lik, frames, device, only=None, progress: bool = False):
        """Posterior mean and variance (len(frames), Y, X) of band b in physical units (see the class)."""
        frames = np.asarray(list(frames), dtype=int)
        _, Y, X = self.observed.shape
        T = self.frames
        c = float(model.mean_module.constant) if hasattr(model.mean_module, "constant") else 0.0
        mats, data, mask = self.band_data(b, model, slice(0, T), device)
        cells = fixed_cells(mask)
        if cells is not None:                                     # the same cells in every frame: exact
            st = StationSolver(mats, lik.noise.item(), cells)
            f = st.mean(st.alpha(((data - c) * mask).reshape(1, T, -1)[..., cells]))[0]
            mean = f[frames].reshape(-1, Y, X).cpu().numpy() + c
            var = st.variance(torch.as_tensor(frames)).reshape(-1, Y, X).cpu().numpy() + st.noise
        else:
            solver = Solver(mats, lik.noise.item(), mask, self.args["cg_tol"], self.args["max_cg_iters"])
            f, _, res = solver.solve(((data - c) * mask)[None], self.warm.get(b))
            self.warm[b] = res.x
            mean = f[0].reshape(T, Y, X)[frames].cpu().numpy() + c
            width = context_width(model, self.args, self.train.stop - self.train.start, self.dtype)
            sl = window(frames, width, T)
            sub = self.solver(b, model, lik, sl, device) if (sl.start, sl.stop) != (0, T) else solver
            sub.tol = 10 * solver.tol                         # samples: their Monte-Carlo error dominates
            chunk = rhs_chunk(sub.mask.numel(), sub.mask.element_size())
            v = sub.variance(self.samples, seed=self.args["seed"] + b, chunk=chunk, progress=progress)
            var = v.reshape(-1, Y, X)[frames - sl.start].cpu().numpy() + solver.noise
        if only is not None:
            mean, var = np.where(only, mean, np.nan), np.where(only, var, np.nan)
        return self.to_physical(b, mean, var)
