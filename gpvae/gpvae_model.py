"""The GP-VAE (Fortuin et al. 2020) on frames, as a LightningModule of the core's training engine.

Encoder: per frame a conv net over (seen values, mask, first guess) down to a latent map at 1/stride
resolution, then a temporal conv over the window gives, per latent channel and cell, the posterior mean
and the bidiagonal precision factor B (diagonal d > 0, signed sub-diagonal e with |e_k| < d_k, so that
neighbouring frames may be positively or negatively correlated and sampling never blows up) of its time
series.
Prior: a GP over time per channel (gpvae_prior), channels split over `kernel_scales` length scales
(l, l/2, l/4...). Decoder: per frame a conv net from the latent map (and the frame's first guess and mask)
to the residual over the first guess and, with --heteroscedastic, its log-variance; otherwise a fixed
per-band variance (the first guess's mean squared residual on the training frames).
"""
from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
from torch import nn

from gapfill import lightning
from gpvae import gpvae_prior as gp
from gpvae.gpvae_data import Frames, covering_windows


def _conv(i, o, stride=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, stride=stride, padding=1), nn.GELU())


class Encoder(nn.Module):
    """(N, W, 3B, Y, X) -> mu and the raw d, e of the latent series, each (N, C, h, w, W) (e: W-1)."""

    def __init__(self, bands: int, filters: int, latent: int, stride: int):
        super().__init__()
        levels = int(round(math.log2(stride)))
        self.stride, self.latent = stride, latent
        self.frame = nn.Sequential(_conv(3 * bands, filters), *[_conv(filters, filters, 2) for _ in range(levels)],
                                   _conv(filters, filters))
        self.time = nn.Sequential(nn.Conv3d(filters, filters, (3, 1, 1), padding=(1, 0, 0)), nn.GELU(),
                                  nn.Conv3d(filters, 3 * latent, (3, 1, 1), padding=(1, 0, 0)))
        head = cast(nn.Conv3d, self.time[-1])
        assert head.bias is not None
        nn.init.normal_(head.weight, std=1e-3)
        nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, W, 3B, Y, X) -> mu, raw d (N, C, h, w, W), raw e (N, C, h, w, W-1); h = ceil(Y / stride),
        w = ceil(X / stride)."""
        N, W, ch, Y, X = x.shape
        s = self.stride
        x = nn.functional.pad(x.reshape(N * W, ch, Y, X), (0, (-X) % s, 0, (-Y) % s))
        f = self.frame(x)                                                  # (N W, F, h, w)
        f = f.reshape(N, W, *f.shape[1:]).transpose(1, 2)                  # (N, F, W, h, w)
        out = self.time(f).permute(0, 1, 3, 4, 2)                          # (N, 3C, h, w, W)
        C = self.latent
        return out[:, :C], out[:, C:2 * C], out[:, 2 * C:, ..., :-1]


class Decoder(nn.Module):
    """z (M, C, h, w) and the frame's [first guess, mask] (M, 2B, Y, X) -> residual (M, B, Y, X) and
    log-variance (M, B, Y, X) or None."""

    def __init__(self, bands: int, filters: int, latent: int, stride: int, heteroscedastic: bool, logvar0):
        super().__init__()
        levels = int(round(math.log2(stride)))
        self.up = nn.ModuleList([_conv(filters, filters) for _ in range(levels)])
        self.inp = _conv(latent, filters)
        self.mix = _conv(filters + 2 * bands, filters)
        self.out = nn.Conv2d(filters, 2 * bands if heteroscedastic else bands, 1)
        self.bands = bands
        bias = self.out.bias
        assert bias is not None                                            # Conv2d(bias=True)
        nn.init.zeros_(self.out.weight)                                    # starts at the first guess
        nn.init.zeros_(bias)
        if heteroscedastic:
            with torch.no_grad():
                bias[bands:] = torch.as_tensor(logvar0, dtype=torch.float32)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z: (M, C, h, w), cond: (M, 2B, Y, X) -> residual (M, B, Y, X), log-variance (M, B, Y, X) or None."""
        h = self.inp(z)
        for conv in self.up:
            h = conv(nn.functional.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False))
        Y, X = cond.shape[-2:]
        o = self.out(self.mix(torch.cat([h[..., :Y, :X], cond], dim=1)))
        B = self.bands
        return o[:, :B], (o[:, B:].clamp(-12, 6) if o.shape[1] > B else None)


class GPVAE(lightning.FieldModule):
    """The GP-VAE; `frames` (gpvae_data.Frames) is set before `reconstruct` (validation and test)."""

    noise_logvar: torch.Tensor                           # buffers (register_buffer)
    d_offset: torch.Tensor
    e_offset: torch.Tensor

    def __init__(self, bands: int, floor_var, window: int = 16, latent_dim: int = 8, latent_stride: int = 2,
                 filters: int = 32, kernel: str = "matern", length_scale: float = 5.0, sigma: float = 1.0,
                 kernel_scales: int = 1, matern_nu: float = 0.5, learn_prior: bool = False, beta: float = 1.0,
                 iwae_samples: int = 1, heteroscedastic: bool = False, lr: float = 1e-3, n_samples: int = 32,
                 seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        logvar0 = np.log(np.asarray(floor_var, dtype=np.float64))
        self.encoder = Encoder(bands, filters, latent_dim, latent_stride)
        self.decoder = Decoder(bands, filters, latent_dim, latent_stride, heteroscedastic, logvar0)
        self.register_buffer("noise_logvar", torch.as_tensor(logvar0, dtype=torch.float32))
        scales = min(kernel_scales, latent_dim)
        self.log_length = nn.Parameter(torch.log(torch.tensor([length_scale / 2 ** i for i in range(scales)],
                                                              dtype=torch.float64)), requires_grad=learn_prior)
        self.log_sigma = nn.Parameter(torch.full((scales,), math.log(sigma), dtype=torch.float64),
                                      requires_grad=learn_prior)
        per = latent_dim // scales                       # as Fortuin et al.: the first scale takes the remainder
        counts = [per + latent_dim - per * scales] + [per] * (scales - 1)
        self.groups = np.split(np.arange(latent_dim), np.cumsum(counts)[:-1])
        # the posterior's starting point per channel: d = softplus(raw + d_offset), e = d[:-1] tanh(raw + e_offset);
        # d = 1, e = 0 until `start_at_prior` sets the banded fit of the prior
        self.register_buffer("d_offset", torch.full((latent_dim, window), 0.5413))         # softplus(0.5413) = 1
        self.register_buffer("e_offset", torch.zeros(latent_dim, window - 1))
        self.frames: Frames | None = None
        self.variance_scale = 1.0

    def start_at_prior(self) -> None:
        """Offset the encoder's precision factor to the banded posterior closest to each channel's prior
        (gpvae_prior.banded_fit): the KL starts small, not at the thousands a unit posterior has under a
        smooth prior."""
        for idx, prior in zip(self.groups, self.priors(self.hparams.window), strict=True):
            if self.hparams.kernel == "none":
                break
            d, r = gp.banded_fit(prior)
            d = (d - 1e-3).clamp_min(1e-4)
            self.d_offset[idx] = (d + torch.log(-torch.expm1(-d))).float()   # softplus^-1
            self.e_offset[idx] = r.float()

    @classmethod
    def from_args(cls, args: dict, bands: int, floor_var) -> GPVAE:
        """The GPVAE of a run's options (a config's 'args')."""
        keys = ("window", "latent_dim", "latent_stride", "filters", "kernel", "length_scale", "sigma",
                "kernel_scales", "matern_nu", "learn_prior", "beta", "iwae_samples", "heteroscedastic", "lr",
                "n_samples", "seed")
        return cls(bands, [float(v) for v in floor_var], **{k: args[k] for k in keys})

    # ----------------------------------------------------------------------------------- prior and posterior
    def kernels(self, T: int) -> list[torch.Tensor]:
        """The prior covariance (T, T) of each channel group (float64)."""
        hp = self.hparams
        return [gp.kernel_matrix(hp.kernel, T, torch.exp(self.log_length[i]), torch.exp(self.log_sigma[i]),
                                 hp.matern_nu, device=self.device) for i in range(len(self.groups))]

    def priors(self, T: int) -> list[gp.Prior]:
        """The GP prior over T frames of each channel group."""
        return [gp.Prior(K) for K in self.kernels(T)]

    def _grouped(self, fn, priors, *series):
        """sum over channels and cells of fn(group series (n, T)..., prior) -> (..., N) per window, in float32
        even under mixed precision (K^-1 has entries near 1e3)."""
        with torch.autocast(series[0].device.type, enabled=False):
            return self._grouped32(fn, priors, *(s.float() for s in series))

    def _grouped32(self, fn, priors, *series):
        total = 0.0
        for idx, prior in zip(self.groups, priors, strict=True):
            parts = [s[..., idx, :, :, :] for s in series]
            lead = parts[0].shape[:-4]
            flat = [p.reshape(-1, p.shape[-1]) for p in parts]
            total = total + fn(*flat, prior).reshape(*lead, -1).sum(-1)
        return total

    def kl(self, mu, d, e, priors):
        """(N,) KL of each window's latent posterior from the prior (closed form)."""
        return self._grouped(lambda m, dd, ee, p: gp.kl_divergence(m, dd, ee, p), priors, mu, d, e)

    def log_prior_minus_q(self, z, mu, d, e, priors):
        """(K, N) log p(z) - log q(z) for samples z (K, N, C, h, w, W)."""
        with torch.autocast(z.device.type, enabled=False):
            lq = gp.log_q(z.float(), mu.float(), d.float(), e.float()).flatten(2).sum(-1)
        lp = self._grouped(lambda zz, p: p.log_prob(zz), priors, z)
        return lp - lq

    # ----------------------------------------------------------------------------------- networks
    def encode(self, inputs):
        """inputs (N, W, 3B, Y, X) -> mu, d (N, C, h, w, W), e (N, C, h, w, W-1): d > 0 and e signed with
        |e_k| < d_k (neighbouring frames may correlate either way; B^-T never blows up)."""
        mu, rd, re = self.encoder(inputs)
        C, W = self.d_offset.shape
        d = nn.functional.softplus(rd + self.d_offset.view(1, C, 1, 1, W)) + 1e-3
        e = d[..., :-1] * torch.tanh(re + self.e_offset.view(1, C, 1, 1, W - 1))
        return mu, d, e

    def decode(self, z, cond):
        """z (M, C, h, w, W), cond (M, W, 2B, Y, X) -> residual, log-variance, each (M, W, B, Y, X)."""
        M, C, h, w, W = z.shape
        zf = z.permute(0, 4, 1, 2, 3).reshape(M * W, C, h, w)
        mean, logvar = self.decoder(zf, cond.reshape(M * W, *cond.shape[2:]))
        if logvar is None:
            logvar = self.noise_logvar.view(1, -1, 1, 1).expand_as(mean)
        return mean.reshape(M, W, *mean.shape[1:]), logvar.reshape(M, W, *logvar.shape[1:])

    @staticmethod
    def cond_of(inputs):
        """inputs (N, W, 3B, Y, X) -> the decoder's condition [first guess, mask] (N, W, 2B, Y, X)."""
        B = inputs.shape[2] // 3
        return torch.cat([inputs[:, :, 2 * B:], inputs[:, :, B:2 * B]], dim=2)      # [guess, mask]

    # ----------------------------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        """batch: inputs (N, W, 3B, P, P), target residual and its known mask (N, W, B, P, P) -> the loss
        (negative ELBO, or IWAE bound with iwae_samples > 1, per known cell)."""
        inputs, target, known = batch                    # (N, W, 3B, P, P), (N, W, B, P, P) x 2
        hp = self.hparams
        N, W = inputs.shape[:2]
        mu, d, e = self.encode(inputs)
        priors = self.priors(W)
        K = hp.iwae_samples
        # noise from (seed, rank, step), not the global RNG: a resumed run draws what an uninterrupted one drew
        g = torch.Generator(device=mu.device).manual_seed((hp.seed * 1009 + self.global_rank) * 1_000_003
                                                          + self.global_step)
        z = gp.sample(mu, d, e, torch.randn((K,) + mu.shape, device=mu.device, dtype=mu.dtype, generator=g))
        cond = self.cond_of(inputs)
        mean, logvar = self.decode(z.reshape(K * N, *z.shape[2:]), cond.repeat(K, 1, 1, 1, 1))
        mean, logvar = mean.reshape(K, N, *mean.shape[1:]), logvar.reshape(K, N, *logvar.shape[1:])
        nll = 0.5 * ((target - mean) ** 2 * torch.exp(-logvar) + logvar + math.log(2 * math.pi))
        loglik = -(nll * known).flatten(2).sum(-1)                               # (K, N)
        cells = known.flatten(1).sum(-1).clamp_min(1)                            # (N,)
        if K == 1:
            kl = self.kl(mu, d, e, priors)
            loss = ((-loglik[0] + hp.beta * kl) / cells).mean()
            self.log("train_kl", (kl / cells).mean(), on_step=False, on_epoch=True, sync_dist=True)
        else:                                            # importance-weighted bound (Burda et al.)
            logw = loglik + hp.beta * self.log_prior_minus_q(z, mu, d, e, priors)
            loss = (-(torch.logsumexp(logw, 0) - math.log(K)) / cells).mean()
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr)

    # ----------------------------------------------------------------------------------- imputation
    @torch.no_grad()
    def impute_window(self, start: int, n_samples: int, seed: int = 0, keep_samples: int = 0) -> dict:
        """One window [start, start + W) from its seen cells, normalised units: 'mean' (W, B, Y, X) the
        decoded posterior mean, 'var' (W, B, Y, X) the variance of `n_samples` decoded posterior draws plus
        the likelihood's, the posterior 'mu', 'var_z' (C, h, w, W) and the first `keep_samples` 'samples'."""
        W = self.hparams.window
        assert self.frames is not None, "set .frames first"
        x = torch.from_numpy(self.frames.inputs(range(start, start + W)))[None].to(self.device)
        mu, d, e = self.encode(x)
        cond = self.cond_of(x)
        mean, logvar = self.decode(mu, cond)
        g = torch.Generator(device="cpu").manual_seed(int(seed) * 100003 + start)
        s1 = torch.zeros_like(mean[0])
        s2 = torch.zeros_like(mean[0])
        lik = torch.zeros_like(mean[0])
        kept: list[torch.Tensor] = []
        for i in range(0, n_samples, 8):
            k = min(8, n_samples - i)
            eps = torch.randn((k,) + mu.shape[1:], generator=g, dtype=mu.dtype).to(self.device)
            z = gp.sample(mu[0], d[0], e[0], eps)                                # (k, C, h, w, W)
            m, lv = self.decode(z, cond.expand(k, *cond.shape[1:]))
            s1, s2, lik = s1 + m.sum(0), s2 + (m ** 2).sum(0), lik + torch.exp(lv).sum(0)
            kept.extend(m[: max(0, keep_samples - len(kept))])
        n = max(n_samples, 1)
        spread = (s2 - s1 ** 2 / n) / max(n - 1, 1) if n_samples > 1 else torch.zeros_like(s1)
        var = spread.clamp_min(0) + (lik / n if n_samples else torch.exp(logvar[0]))
        s, _ = gp.marginal_variance_and_ratio(d[0], e[0])
        return {"mean": mean[0].cpu().numpy(), "var": var.cpu().numpy(), "mu": mu[0].cpu().numpy(),
                "var_z": s.cpu().numpy(), "samples": [k.cpu().numpy() for k in kept]}

    def reconstruct(self, frames, n_samples: int | None = None, seed: int = 0):
        """(mean, variance) (len(frames), B, Y, X) physical units for contiguous `frames`: first guess plus
        the decoded posterior mean; seen cells keep their values (variance 0 there)."""
        frames = list(frames)
        n = self.hparams.n_samples if n_samples is None else n_samples
        F = self.frames
        assert F is not None, "set .frames first"
        W = self.hparams.window
        mean = np.empty((len(frames), F.bands, F.Y, F.X))
        var = np.empty_like(mean)
        pos = {t: i for i, t in enumerate(frames)}
        for start, chunk in covering_windows(frames, W, F.visible.shape[0]):
            out = self.impute_window(start, n, seed)
            for t in chunk:
                mean[pos[t]] = out["mean"][t - start]
                var[pos[t]] = out["var"][t - start]
        std = F.normalizer.std.reshape(1, -1, 1, 1)
        mean = F.view.guess_physical(frames) + mean * std          # a zero residual: the first guess exactly
        var = F.normalizer.denormalize_variance(var) * self.variance_scale
        seen = F.seen[frames]
        return np.where(seen, F.visible[frames], mean), np.where(seen, 0.0, var)
