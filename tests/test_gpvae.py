"""GP-VAE: the closed-form KL against dense float64 algebra for every kernel, posterior samples against
(B B^T)^-1, the importance-weighted bound against the ELBO, and a short CPU training on a crop at 90%
missing (random, dynamic) that beats climatology and per-cell interpolation in time."""
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from sweep_checks import pdf_pages

from data_generation.make_synthetic_field import make_field
from gapfill import runs
from gapfill.problem import build_problem
from gpvae import generate, test_gpvae, train_gpvae
from gpvae import gpvae_prior as gp
from gpvae.gpvae_model import GPVAE


def dense_kernel(kind: str, T: int, ls: float, sigma: float, nu: float = 1.5) -> np.ndarray:
    """The kernels written out in numpy float64 (an independent reference)."""
    t = np.arange(T, dtype=np.float64)
    r = np.abs(t[:, None] - t[None]) / ls
    if kind == "none":
        return np.eye(T)
    if kind == "rbf":
        k = np.exp(-0.5 * r ** 2)
    elif kind == "cauchy":
        k = 1 / (1 + r ** 2)
    elif kind == "matern":
        k = {0.5: np.exp(-r), 1.5: (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r),
             2.5: (1 + np.sqrt(5) * r + 5 * r ** 2 / 3) * np.exp(-np.sqrt(5) * r)}[nu]
    else:
        lap = np.diag(np.r_[1, 2 * np.ones(T - 2), 1]) - np.eye(T, k=1) - np.eye(T, k=-1)
        h = scipy.linalg.expm(-ls ** 2 / 2 * lap)
        k = h / np.sqrt(np.outer(np.diag(h), np.diag(h)))
    return sigma ** 2 * (k + gp.JITTER * np.eye(T))


def dense_kl(mu, d, e, K) -> float:
    B = np.diag(d) + np.diag(e, -1)
    S = np.linalg.inv(B @ B.T)
    Ki = np.linalg.inv(K)
    T = len(mu)
    return 0.5 * (np.trace(Ki @ S) + mu @ Ki @ mu - T + np.linalg.slogdet(K)[1] - np.linalg.slogdet(S)[1])


@pytest.mark.parametrize("kind, nu", [("cauchy", 1.5), ("rbf", 1.5), ("matern", 0.5), ("matern", 1.5),
                                      ("matern", 2.5), ("diffusion", 1.5), ("none", 1.5)])
def test_kl_matches_dense_float64_for_every_kernel(kind, nu):
    rng = np.random.default_rng(1)
    T, N = 10, 6
    mu, d = rng.normal(size=(N, T)), rng.uniform(0.4, 2.0, (N, T))
    e = rng.normal(size=(N, T - 1)) * d[:, :-1]                       # signed, some |e| > d as well
    K = dense_kernel(kind, T, 2.5, 1.3, nu)
    np.testing.assert_allclose(gp.kernel_matrix(kind, T, 2.5, 1.3, nu).numpy(), K, rtol=1e-12, atol=1e-12)
    prior = gp.Prior(torch.as_tensor(K), dtype=torch.float64)
    kl = gp.kl_divergence(*(torch.as_tensor(a) for a in (mu, d, e)), prior).numpy()
    ref = np.array([dense_kl(mu[n], d[n], e[n], K) for n in range(N)])
    np.testing.assert_allclose(kl, ref, rtol=1e-6)
    assert (ref > 0).all()


def test_kl_chunks_and_gradients_agree_with_one_pass(monkeypatch):
    """The band walk (the fallback) in checkpointed chunks gives the value and gradient of one unchunked pass,
    and the matrix-product trace gives the same again."""
    rng = np.random.default_rng(2)
    d0 = torch.tensor(rng.uniform(0.5, 1.5, (40, 12)), requires_grad=True)
    e0 = torch.tensor(rng.normal(size=(40, 11)) * 0.5, requires_grad=True)
    P = torch.as_tensor(np.linalg.inv(dense_kernel("rbf", 12, 3.0, 1.0)))
    full = gp._trace_chunk(d0, e0, P)
    g_full = torch.autograd.grad(full.sum(), (d0, e0))
    monkeypatch.setattr(gp, "CHUNK_ELEMENTS", 12 * 12 * 7)           # chunks of 7 series
    part = gp._trace_bands(d0, e0, P)
    g_part = torch.autograd.grad(part.sum(), (d0, e0))
    torch.testing.assert_close(part, full)
    for a, b in zip(g_part, g_full, strict=True):
        torch.testing.assert_close(a, b)
    gemm = gp.trace_prec_cov(d0, e0, P)
    for a, b in zip(torch.autograd.grad(gemm.sum(), (d0, e0)), g_full, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(gemm, full)


def test_trace_with_exact_zero_couplings_falls_back_and_stays_exact():
    """e = 0 in places (a diagonal block structure): Sigma's factors would overflow, those series take the band
    walk; the trace still equals the dense one."""
    rng = np.random.default_rng(4)
    T, N = 40, 3
    d = rng.uniform(0.5, 1.5, (N, T))
    e = rng.uniform(-0.9, 0.9, (N, T - 1)) * d[:, :-1]
    e[0, [5, 17, 30]] = 0.0                                         # three exact zeros: spread beyond 1300
    e[1, 9] = 0.0                                                   # one: the product still fits
    K = dense_kernel("matern", T, 4.0, 1.0, 1.5)
    P = np.linalg.inv(K)
    dt, et = torch.tensor(d, requires_grad=True), torch.tensor(e, requires_grad=True)
    out = gp.trace_prec_cov(dt, et, torch.as_tensor(P))
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out.sum(), (dt, et)))   # no NaN from the overflow
    tr = out.detach().numpy()
    for n in range(N):
        B = np.diag(d[n]) + np.diag(e[n], -1)
        assert tr[n] == pytest.approx(np.trace(P @ np.linalg.inv(B @ B.T)), rel=1e-9)


def test_posterior_samples_have_the_banded_covariance_with_signed_off_diagonals():
    T, n = 6, 1000
    d = torch.tensor([1.0, 0.8, 1.2, 0.9, 1.1, 1.0], dtype=torch.float64)
    e = torch.tensor([0.7, -0.6, 0.5, -0.7, 0.6], dtype=torch.float64)     # both signs
    mu = torch.linspace(-1, 1, T, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    z = gp.sample(mu, d, e, torch.randn(n, T, generator=g, dtype=torch.float64)).numpy()
    B = np.diag(d.numpy()) + np.diag(e.numpy(), -1)
    S = np.linalg.inv(B @ B.T)
    emp = np.cov(z.T)
    se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S ** 2) / (n - 1))   # sampling std of each entry
    assert np.all(np.abs(emp - S) < 4 * se), np.max(np.abs(emp - S) / se)
    assert np.all(np.abs(z.mean(0) - mu.numpy()) < 4 * np.sqrt(np.diag(S) / n))
    # the signs come through: e > 0 -> neighbours anti-correlated, e < 0 -> positively correlated
    off = np.diag(S, 1)
    assert (off[::2] < 0).all() and (off[1::2] > 0).all()
    assert np.all(np.sign(np.diag(emp, 1)) == np.sign(off))
    s, _ = gp.marginal_variance_and_ratio(d[None], e[None])
    np.testing.assert_allclose(s[0].numpy(), np.diag(S), rtol=1e-12)
    # log q against torch's dense multivariate normal
    dense = torch.distributions.MultivariateNormal(mu, precision_matrix=torch.as_tensor(B @ B.T))
    zz = torch.as_tensor(z[:5])
    torch.testing.assert_close(gp.log_q(zz, mu, d, e), dense.log_prob(zz))


def test_importance_weighted_bound_is_tighter_than_the_elbo():
    """With the same module and batch: the K = 64 bound is at least the ELBO (a loss no larger)."""
    torch.manual_seed(0)
    B, W, P = 1, 6, 8
    m = GPVAE(B, [0.2], window=W, latent_dim=2, latent_stride=2, filters=4, kernel="matern", length_scale=3.0)
    with torch.no_grad():                                            # a decoder that uses z
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    inputs = torch.randn(2, W, 3 * B, P, P)
    target, known = torch.randn(2, W, B, P, P), torch.ones(2, W, B, P, P)
    m.log = lambda *a, **k: None
    with torch.no_grad():
        elbo = np.mean([float(m.training_step((inputs, target, known), 0)) for _ in range(64)])
        m.hparams.iwae_samples = 64
        iwae = float(m.training_step((inputs, target, known), 0))
    assert iwae <= elbo + 1e-3


def test_sampled_log_prior_minus_log_q_averages_to_minus_the_closed_form_kl():
    """The IWAE's weights use log p(z) - log q(z) of samples; their mean is -KL (Monte Carlo, 4 std errors)."""
    rng = np.random.default_rng(3)
    T = 8
    mu, d = torch.tensor(rng.normal(size=(1, T))), torch.tensor(rng.uniform(0.6, 1.5, (1, T)))
    e = torch.tensor(rng.uniform(-0.9, 0.9, (1, T - 1))) * d[:, :-1]
    prior = gp.Prior(gp.kernel_matrix("matern", T, 3.0, 1.0, 2.5), dtype=torch.float64)
    z = gp.sample(mu, d, e, torch.randn(20000, 1, T, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    w = (prior.log_prob(z) - gp.log_q(z, mu, d, e))[:, 0].numpy()
    kl = float(gp.kl_divergence(mu, d, e, prior)[0])
    assert abs(w.mean() + kl) < 4 * w.std() / np.sqrt(len(w)), (w.mean(), kl)


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpvae") / "crop.nc"
    make_field(n_time=120, ny=32, nx=32, length_scale=4.0, seed=1).to_netcdf(path)
    return path


def time_interpolation(problem) -> np.ndarray:
    """Per-cell linear interpolation in time of the observed cells of every frame, (T, B, Y, X)."""
    seen = problem.observed[:, None] & np.isfinite(problem.visible())
    vals = problem.visible()
    t = np.arange(vals.shape[0])
    out = np.empty_like(vals)
    for b in range(vals.shape[1]):
        for y in range(vals.shape[2]):
            for x in range(vals.shape[3]):
                s = seen[:, b, y, x]
                out[:, b, y, x] = np.interp(t, t[s], vals[s, b, y, x])
    return out


def test_short_cpu_training_beats_climatology_and_interpolation_in_time(crop, tmp_path):
    ck, res = tmp_path / "ck", tmp_path / "res"
    argv = ["--data_path", str(crop), "--checkpoint_dir", str(ck), "--max_epochs", "6", "--latent_stride", "2",
            "--n_samples", "16", "--mask_type", "dynamic", "--prob_masking", "0.9", "--mask_kind", "random"]
    assert runs.run_cli(train_gpvae.main, argv) == 0
    run = next(ck.iterdir())
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["finished"] and 0.2 < cfg["variance_scale"] < 5
    assert runs.run_cli(test_gpvae.main, ["--checkpoints", str(run), "--results_folder", str(res)]) == 0
    m = json.loads((res / run.name / "metrics.json").read_text())
    overall, base = m["metrics"]["overall"], m["baselines"]
    problem = build_problem(cfg["args"])
    sl, scored = problem.splits["test"], problem.scored("test")
    truth = problem.field.values[sl]
    t_interp = float(np.sqrt(np.mean((time_interpolation(problem)[sl] - truth)[scored] ** 2)))
    assert overall["rmse"] < 0.5 * base["climatology"]["overall"]["rmse"]
    assert overall["rmse"] < 0.8 * t_interp
    assert overall["rmse"] < base["anomaly_interpolation"]["overall"]["rmse"]      # it learned over its start
    assert 0.85 < overall["coverage95"] <= 1.0 and math.isfinite(overall["crps"]) and overall["crps"] > 0
    assert pdf_pages(res / run.name / f"{run.name}.pdf") == (sl.stop - sl.start) + 1 + 3   # frames, summary, own
    # the variance's samples are distinct posterior draws, not copies of the mean
    module = test_gpvae.load(problem, cfg, run, "cpu")
    out = module.impute_window(sl.start, 8, keep_samples=3)
    a, b, c = out["samples"]
    assert not np.allclose(a, b) and not np.allclose(b, c) and not np.allclose(a, out["mean"])
    assert (out["var"] > np.exp(module.noise_logvar.numpy())[:, None, None]).mean() > 0.5    # spread adds to it
    # the prior's draws, decoded: distinct sequences on one page
    out = tmp_path / "gen.pdf"
    assert runs.run_cli(generate.main, ["--checkpoint", str(run), "--n", "3", "--out", str(out)]) == 0
    assert pdf_pages(out) == 1


# slow: the engine's resume is in the fast suite (tests/test_lightning.py)
@pytest.mark.slow
def test_a_signalled_run_resumes_to_the_weights_of_an_uninterrupted_one(crop, tmp_path, sigterm_after_epoch):
    """SIGTERM at the end of epoch 2 of 3, then the same command: the weights match an uninterrupted run's
    (the sampling noise is drawn from (seed, step), the crops from (seed, index))."""
    argv = lambda d: ["--data_path", str(crop), "--checkpoint_dir", str(d), "--run_name", "r", "--max_epochs", "3",  # noqa: E731
                      "--window", "6", "--filters", "4", "--latent_dim", "2", "--n_samples", "2", "--patch_size", "16",
                      "--num_frames_train", "30", "--num_frames_valid", "6"]
    assert runs.run_cli(train_gpvae.main, argv(tmp_path / "plain")) == 0
    sigterm_after_epoch(2)
    assert runs.run_cli(train_gpvae.main, argv(tmp_path / "cut")) == runs.EXIT_RESUME
    sigterm_after_epoch(None)
    assert runs.run_cli(train_gpvae.main, argv(tmp_path / "cut")) == 0
    a, b = (torch.load(tmp_path / d / "r" / "last.ckpt", weights_only=True) for d in ("plain", "cut"))
    assert a["global_step"] == b["global_step"] > 0
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], atol=1e-6, rtol=0)
    cfg = [json.loads((tmp_path / d / "r" / "config.json").read_text()) for d in ("plain", "cut")]
    assert cfg[1]["restarts"] == 1 and cfg[0]["variance_scale"] == pytest.approx(cfg[1]["variance_scale"], rel=1e-5)
