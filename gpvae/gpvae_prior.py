"""The GP-VAE's probabilistic core (Fortuin et al. 2020), in torch for any float dtype.

Prior: per latent channel a Gaussian process over the window's T frames, covariance K (T, T) from
`kernel_matrix`. Posterior: per channel and latent cell a Gaussian with a banded precision
Lambda = B B^T, B lower-bidiagonal with diagonal d > 0 and signed sub-diagonal e (B[k+1, k] = e[k]), so
Sigma = Lambda^-1 = B^-T B^-1. Sampling and log q are O(T) recursions; the KL's trace term is one matrix
product with Sigma's separable factors (a closed form, O(T) memory per series: see `trace_prec_cov`).

Shapes: mu, d (N, T) and e (N, T-1) for N series; P = K^-1 (T, T).
"""
from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

KERNELS = ("cauchy", "rbf", "matern", "diffusion", "none")
MATERN_NU = (0.5, 1.5, 2.5)
JITTER = 1e-3            # relative diagonal term on every kernel (Fortuin et al. use 1e-3 on Cauchy): keeps K^-1 tame
CHUNK_ELEMENTS = 2 ** 22  # series x T x T per checkpointed chunk of the trace term


def kernel_matrix(kind: str, T: int, length_scale, sigma=1.0, nu: float = 1.5,
                  dtype=torch.float64, device=None) -> torch.Tensor:
    """(T, T) prior covariance over frames 0..T-1 (lag d in frames, length scale l, variance sigma^2):
    rbf exp(-d^2 / 2l^2); cauchy 1 / (1 + d^2 / l^2); matern nu = 1/2, 3/2, 5/2 in the usual form with
    r = d / l; diffusion: the heat kernel expm(-l^2/2 L) of the frames' chain graph (L its Laplacian),
    scaled to a unit diagonal (like an RBF of length l away from the window's ends); none: the identity
    (a N(0, I) prior). Each kernel gets JITTER * sigma^2 on the diagonal; `length_scale` and `sigma` may be
    tensors (learnable)."""
    if kind not in KERNELS:
        raise ValueError(f"unknown kernel {kind!r}; choose one of {', '.join(KERNELS)}")
    eye = torch.eye(T, dtype=dtype, device=device)
    if kind == "none":
        return eye
    ls = torch.as_tensor(length_scale, dtype=dtype, device=device)
    var = torch.as_tensor(sigma, dtype=dtype, device=device) ** 2
    t = torch.arange(T, dtype=dtype, device=device)
    lag = (t[:, None] - t[None, :]).abs()
    r = lag / ls
    if kind == "rbf":
        k = torch.exp(-0.5 * r ** 2)
    elif kind == "cauchy":
        k = 1.0 / (1.0 + r ** 2)
    elif kind == "matern":
        if nu == 0.5:
            k = torch.exp(-r)
        elif nu == 1.5:
            k = (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r)
        elif nu == 2.5:
            k = (1 + math.sqrt(5) * r + 5.0 / 3.0 * r ** 2) * torch.exp(-math.sqrt(5) * r)
        else:
            raise ValueError(f"matern nu must be one of {MATERN_NU}, got {nu}")
    else:                                            # diffusion on the chain graph of the frames
        lap = 2 * eye - torch.diag(torch.ones(T - 1, dtype=dtype, device=device), 1) \
            - torch.diag(torch.ones(T - 1, dtype=dtype, device=device), -1)
        lap[0, 0] = lap[-1, -1] = 1.0
        h = torch.linalg.matrix_exp(-0.5 * ls ** 2 * lap)
        dg = torch.sqrt(torch.diagonal(h))
        k = h / (dg[:, None] * dg[None, :])
    return var * (k + JITTER * eye)


class Prior:
    """A GP prior's K^-1 and log det K (float64 from K, then cast to `dtype`)."""

    def __init__(self, K: torch.Tensor, dtype=torch.float32):
        L = torch.linalg.cholesky(K.double())
        self.P = torch.cholesky_inverse(L).to(dtype)                              # (T, T)
        self.logdet = (2 * torch.log(torch.diagonal(L)).sum()).to(dtype)
        self.T = K.shape[-1]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, K) of series z (..., T) -> (...)."""
        quad = ((z @ self.P) * z).sum(-1)
        return -0.5 * (quad + self.logdet + self.T * math.log(2 * math.pi))


def sample(mu: torch.Tensor, d: torch.Tensor, e: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """mu + B^-T eps (..., N, T), a draw from N(mu, (B B^T)^-1) for standard normal eps (..., N, T): the
    back-substitution d[k] x[k] + e[k] x[k+1] = eps[k], O(T)."""
    T = mu.shape[-1]
    x = eps[..., T - 1] / d[..., T - 1]
    xs = [x]
    for k in range(T - 2, -1, -1):
        x = (eps[..., k] - e[..., k] * x) / d[..., k]
        xs.append(x)
    return mu + torch.stack(xs[::-1], dim=-1)


def log_q(z: torch.Tensor, mu: torch.Tensor, d: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, (B B^T)^-1) (..., N): eps = B^T (z - mu), log det Lambda = 2 sum log d."""
    u = z - mu
    eps = d * u
    eps = torch.cat([eps[..., :-1] + e * u[..., 1:], eps[..., -1:]], dim=-1)
    T = mu.shape[-1]
    return -0.5 * (eps ** 2).sum(-1) + torch.log(d).sum(-1) - 0.5 * T * math.log(2 * math.pi)


def marginal_variance_and_ratio(d: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigma's diagonal s (N, T) and band ratios rho (N, T-1) with Sigma[i, j+1] = Sigma[i, j] rho[j] (i <= j).

    With c[m] = -e[m-1] / d[m] (B^-1's column recursion) and R[j] = 1 + c[j+1]^2 R[j+1], R[T-1] = 1:
    Sigma[i, j] = (prod_{m=i+1..j} c[m]) R[j] / (d[i] d[j]); every factor is finite (R >= 1, d > 0)."""
    T = d.shape[-1]
    c = -e / d[..., 1:]                                                    # (N, T-1): c[m] at index m-1
    R = [torch.ones_like(d[..., 0])]
    for j in range(T - 2, -1, -1):
        R.append(1 + c[..., j] ** 2 * R[-1])
    Rt = torch.stack(R[::-1], dim=-1)                                      # (N, T)
    s = Rt / d ** 2
    rho = c * d[..., :-1] / d[..., 1:] * Rt[..., 1:] / Rt[..., :-1]
    return s, rho


def _trace_chunk(d, e, P):
    s, rho = marginal_variance_and_ratio(d, e)
    T = d.shape[-1]
    tr = (s * torch.diagonal(P)).sum(-1)
    band = s
    for k in range(1, T):                                                  # band k of Sigma: Sigma[i, i+k]
        band = band[..., : T - k] * rho[..., k - 1:]
        tr = tr + 2 * (band * torch.diagonal(P, k)).sum(-1)
    return tr


def _trace_bands(d, e, P):
    """tr(P Sigma) by walking Sigma's bands in checkpointed chunks: O(T^2) elementwise work, O(T) memory
    per series; the fallback of `trace_prec_cov`."""
    T = d.shape[-1]
    n = max(1, CHUNK_ELEMENTS // (T * T))
    if not torch.is_grad_enabled() or not (d.requires_grad or e.requires_grad or P.requires_grad):
        return torch.cat([_trace_chunk(d[i:i + n], e[i:i + n], P) for i in range(0, d.shape[0], n)])
    return torch.cat([checkpoint(_trace_chunk, d[i:i + n], e[i:i + n], P, use_reentrant=False)
                      for i in range(0, d.shape[0], n)])


def trace_prec_cov(d: torch.Tensor, e: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """tr(P Sigma) (N,) for Sigma = (B B^T)^-1, as one matrix product.

    Sigma is the covariance of a Gauss-Markov chain, so for i <= j it factorises: Sigma[i, j] = u_i v_j
    with v_j = sign_j exp(L_j - c), u_i = s_i sign_i exp(c - L_i), L_j = sum_{m<j} log|rho_m| (float64,
    centred by c). Then tr(P Sigma) = sum_i u_i (P' v)_i with P' = diag(P) + 2 triu(P, 1): one (N, T) x (T, T)
    product, O(T) memory per series. Series whose factors would overflow float64 (a spread of log|rho|
    beyond 1300: exact zeros or extreme couplings) take the band walk instead."""
    T = d.shape[-1]
    if T == 1:
        return P[0, 0] / d[..., 0] ** 2
    s, rho = marginal_variance_and_ratio(d, e)
    f64 = torch.float64
    lr = torch.log(rho.to(f64).abs().clamp_min(1e-300))                     # (N, T-1)
    zero = torch.zeros_like(lr[..., :1])
    L = torch.cat([zero, torch.cumsum(lr, -1)], -1)                          # (N, T)
    sign = torch.cat([zero + 1, torch.cumprod(torch.where(rho < 0, -1.0, 1.0).to(f64), -1)], -1)
    hi, lo = L.max(-1, keepdim=True).values, L.min(-1, keepdim=True).values
    c = (hi + lo) / 2
    Pp = (torch.diag(torch.diagonal(P)) + 2 * torch.triu(P, 1)).to(f64)     # (T, T)
    x = (L - c).clamp(-700, 700)              # a no-op where the spread is <= 1300; keeps the others finite
    v = sign * torch.exp(x)
    u = s.to(f64) * sign * torch.exp(-x)
    tr = (u * (v @ Pp.T)).sum(-1)
    bad = (hi - lo)[..., 0] > 1300
    if bool(bad.any()):
        tr = tr.masked_scatter(bad, _trace_bands(d[bad], e[bad], P).to(f64))
    return tr.to(d.dtype)


def kl_divergence(mu: torch.Tensor, d: torch.Tensor, e: torch.Tensor, prior: Prior) -> torch.Tensor:
    """KL(N(mu, (B B^T)^-1) || N(0, K)) per series (N,), closed form:
    0.5 [tr(K^-1 Sigma) + mu^T K^-1 mu - T + log det K + 2 sum log d]."""
    T = mu.shape[-1]
    quad = ((mu @ prior.P) * mu).sum(-1)
    return 0.5 * (trace_prec_cov(d, e, prior.P) + quad - T + prior.logdet + 2 * torch.log(d).sum(-1))


def banded_fit(prior: Prior, steps: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """The zero-mean banded posterior closest to the prior, argmin KL(q || p) over d (T,) and e = d[:-1] tanh(r)
    (r (T-1,)): returns (d, r), float64. The encoder starts there, so training starts with a small KL instead of
    spending its first epochs making the posterior as smooth as the prior."""
    T = prior.T
    P = prior.P.double()
    logd = torch.zeros(T, dtype=torch.float64, requires_grad=True)
    r = torch.zeros(T - 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logd, r], lr=0.05)
    zero = torch.zeros(1, T, dtype=torch.float64)
    pr = Prior.__new__(Prior)
    pr.P, pr.logdet, pr.T = P, prior.logdet.double(), T
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            d = torch.exp(logd)
            kl = kl_divergence(zero, d[None], (d[:-1] * torch.tanh(r))[None], pr).sum()
            kl.backward()
            opt.step()
    return torch.exp(logd).detach(), r.detach()
