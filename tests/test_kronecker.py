"""Kronecker inference of the exact GP: the same posterior mean, variance and marginal-likelihood gradient as
dense linear algebra on every observed cell of a small grid with missing and never-observed cells; the
preconditioner's effect; the sphere kernel across the date line."""
import math

import gpytorch
import numpy as np
import pytest
import torch

from exact_gp_related import exact_gp_utils as U
from exact_gp_related import kronecker as kr

ARGS = {"matern_nu": 1.5, "num_mixtures": 2, "mean_function": "climatology", "timekernel": "matern",
        "spacekernel": "matern", "kernel_combination": "product", "geometry": "auto"}
D = torch.float64


def small_problem(grid, seed=0, observed=0.15, ls=(4.0, 3.0, 2.5)):
    """A separable Matern model with set hyperparameters, a field drawn from it and a mask with 'land'."""
    model, lik = U.make_model(ARGS, grid, separable=True)
    with torch.no_grad():
        for k, ell in zip([m for m in model.covar_module.modules() if hasattr(m, "raw_lengthscale")], ls, strict=False):
            k.lengthscale = torch.tensor(ell)
        model.covar_module.outputscale = torch.tensor(1.3)
        lik.noise = torch.tensor(0.02)
    mats = [m.detach() for m in kr.factor_matrices(model.covar_module, grid, D, "cpu")]
    shape = tuple(m.shape[0] for m in mats)
    K = torch.kron(torch.kron(mats[0], mats[1]), mats[2])
    rng = np.random.default_rng(seed)
    f = np.linalg.cholesky(K.numpy() + 1e-9 * np.eye(len(K))) @ rng.standard_normal(len(K))
    obs = rng.random(shape) < observed
    obs[:, :2, :3] = False                                                    # land: never observed
    vals = np.where(obs, f.reshape(shape) + np.sqrt(0.02) * rng.standard_normal(shape), np.nan)
    return model, lik, K, vals, obs


def dense_reference(K, vals, obs, noise):
    """float64 numpy posterior mean and latent variance on the whole grid, and the index of observed cells."""
    idx = np.flatnonzero(obs.reshape(-1))
    Kn = K.numpy()
    Koo = Kn[np.ix_(idx, idx)] + noise * np.eye(len(idx))
    mean = Kn[:, idx] @ np.linalg.solve(Koo, vals.reshape(-1)[idx])
    var = np.diag(Kn) - np.einsum("ij,ji->i", Kn[:, idx], np.linalg.solve(Koo, Kn[idx]))
    return mean, var, idx


def test_posterior_mean_and_variance_match_dense_linear_algebra():
    grid = (np.arange(30.0), np.arange(9.0), np.arange(8.0))
    model, lik, K, vals, obs = small_problem(grid)
    noise = float(lik.noise.detach())
    ref_mean, ref_var, idx = dense_reference(K, vals, obs, noise)
    mats = [m.detach() for m in kr.factor_matrices(model.covar_module, grid, D, "cpu")]
    data, mask = kr.to_grid(vals, obs, obs.shape, D, "cpu")
    solver = kr.Solver(mats, noise, mask, tol=1e-10)
    f, a, _ = solver.solve(data[None])
    np.testing.assert_allclose(f[0].numpy().reshape(-1), ref_mean, rtol=0, atol=1e-4 * np.abs(ref_mean).max())
    assert np.linalg.norm(f[0].numpy().reshape(-1) - ref_mean) < 1e-4 * np.linalg.norm(ref_mean)
    # the dense path of exact_gp_utils on the same model gives the same mean at a few hidden cells
    x = U.cell_inputs(grid, np.arange(30), obs)
    hidden = np.zeros_like(obs)
    hidden[12, 4:6, :] = True
    m_dense, v_dense = U.posterior(model.eval(), lik, torch.tensor(x), torch.tensor(vals[obs]),
                                   torch.tensor(U.cell_inputs(grid, np.arange(30), hidden)), "test")
    np.testing.assert_allclose(f[0].numpy()[hidden], m_dense.numpy(), rtol=1e-4, atol=1e-6)
    # pathwise variance: Monte-Carlo error sqrt(2 / S) per cell; averaged over cells it is much smaller
    S = 128
    solver.tol = 1e-6
    var = solver.variance(S, seed=1, chunk=64).numpy().reshape(-1)
    ratio = var / ref_var
    assert abs(ratio.mean() - 1) < 0.03, ratio.mean()
    assert np.median(np.abs(ratio - 1)) < math.sqrt(2 / S), np.median(np.abs(ratio - 1))
    np.testing.assert_allclose(var[np.flatnonzero(hidden)] + noise, v_dense.numpy(), rtol=4 * math.sqrt(2 / S))
    # land cells: prior-like variance (no data there), far above that of observed cells
    assert ref_var.reshape(obs.shape)[:, :2, :3].mean() > 2 * ref_var[idx].mean()


def test_marginal_likelihood_gradient_and_log_determinant_match_dense():
    grid = (np.arange(24.0), np.arange(8.0), np.arange(7.0))
    model, lik, K, vals, obs = small_problem(grid, seed=3, observed=0.3)
    data, mask = kr.to_grid(vals, obs, obs.shape, D, "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    idx = np.flatnonzero(obs.reshape(-1))
    y = data.reshape(-1)[idx]

    def dense_nll():
        mats = kr.factor_matrices(model.covar_module, grid, D, "cpu")
        Kf = torch.kron(torch.kron(mats[0], mats[1]), mats[2])
        Koo = Kf[idx][:, idx] + lik.noise * torch.eye(len(idx), dtype=D)
        return 0.5 * y @ torch.linalg.solve(Koo, y) + 0.5 * torch.linalg.slogdet(Koo)[1], Koo

    nll, Koo = dense_nll()
    g_ref = torch.autograd.grad(nll, params)
    mats = kr.factor_matrices(model.covar_module, grid, D, "cpu")
    noise = lik.noise.reshape(())
    solver = kr.Solver([m.detach() for m in mats], float(noise), mask, tol=1e-8)
    P = 200
    probes = torch.randn((P, *mask.shape), generator=torch.Generator().manual_seed(0), dtype=D) * mask
    _, a, _ = solver.solve(torch.cat([data[None], probes]))
    g = torch.autograd.grad(kr.surrogate_loss(mats, noise, mask, a[0], probes, a[1:]), params)
    for name, r, e in zip([n for n, p in model.named_parameters() if p.requires_grad], g_ref, g, strict=True):
        assert float(e) == pytest.approx(float(r), rel=0.05, abs=0.02 * max(abs(float(x)) for x in g_ref)), name
    logdet = len(idx) * math.log(float(noise)) + float(solver.logdet(64))
    exact = float(torch.linalg.slogdet(Koo)[1])
    assert logdet == pytest.approx(exact, abs=0.01 * abs(exact) + 5)


def test_preconditioner_cuts_the_iterations_several_fold():
    grid = (np.arange(60.0), np.arange(16.0), np.arange(16.0))
    model, lik = U.make_model(ARGS, grid, separable=True)
    with torch.no_grad():
        for k, ell in zip([m for m in model.covar_module.modules() if hasattr(m, "raw_lengthscale")], (8.0, 5, 5),
                        strict=False):
            k.lengthscale = torch.tensor(ell)
    mats = [m.detach() for m in kr.factor_matrices(model.covar_module, grid, D, "cpu")]
    obs = np.random.default_rng(0).random((60, 16, 16)) < 0.1
    data, mask = kr.to_grid(np.random.default_rng(1).standard_normal(obs.shape), obs, obs.shape, D, "cpu")
    iters = {}
    for pre in (True, False):
        s = kr.Solver(mats, 0.01, mask, tol=1e-4)
        if not pre:
            s.precond = torch.ones_like(s.precond)
        iters[pre] = s.solve(data[None])[2].iters
    assert iters[True] * 4 < iters[False], iters


def global_field(T=12, seed=0):
    """(T, Y, X) a smooth field on a 10-degree global grid, continuous across the date line: a sum of
    waves in 3-D position, drifting slowly in time."""
    lat = np.arange(-85.0, 90, 10)
    lon = np.arange(0.0, 360, 10)
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    p = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(6, 3)) * 2.5
    phase = rng.uniform(0, 2 * np.pi, 6)
    out = np.stack([sum(np.sin(p @ d + ph + 0.15 * t) for d, ph in zip(dirs, phase, strict=True))
                    for t in range(T)])
    return lat, lon, out


def test_sphere_kernel_sees_across_the_date_line_and_the_flat_kernel_does_not():
    """The same hidden cells (the four columns around the date line) inpainted twice: with the date line where
    it is (the grid's edge) and with the field and mask rolled 180 degrees (those columns in the middle)."""
    lat, lon, field = global_field()
    T, Y, X = field.shape
    grid = U.Grid(np.arange(T, dtype=float), np.arange(Y, dtype=float), np.arange(X, dtype=float), 36.0,
                  (float(lat[0]), 10.0))
    obs = np.random.default_rng(1).random(field.shape) < 0.25
    vals = field / field.std()
    edge = np.r_[0:2, X - 2:X]
    rmse = {}
    for geometry in ("sphere", "flat"):
        model, lik = U.make_model(dict(ARGS, geometry=geometry), grid, separable=True)
        with torch.no_grad():
            for k in model.covar_module.modules():
                if hasattr(k, "raw_lengthscale"):
                    k.lengthscale = torch.tensor(4.0 if k.active_dims is not None and k.active_dims.tolist() == [0] else 3.0)
        mats = [m.detach() for m in kr.factor_matrices(model.covar_module, grid, D, "cpu")]
        shape = tuple(m.shape[0] for m in mats)
        for shift in (0, X // 2):
            v, o = np.roll(vals, shift, axis=2), np.roll(obs, shift, axis=2)
            data, mask = kr.to_grid(v, o, shape, D, "cpu")
            f = kr.Solver(mats, 1e-2, mask, tol=1e-6).solve(data[None])[0][0].numpy().reshape(T, Y, X)
            err = np.roll(np.where(~o, f - v, np.nan), -shift, axis=2)[:, 1:-1, edge]
            rmse[geometry, "date line" if shift == 0 else "middle"] = float(np.sqrt(np.nanmean(err ** 2)))
    assert rmse["sphere", "date line"] < 1.02 * rmse["sphere", "middle"], rmse
    assert rmse["flat", "date line"] > 1.5 * rmse["flat", "middle"], rmse
    assert rmse["flat", "date line"] > 1.5 * rmse["sphere", "date line"], rmse


def test_chordal_kernel_is_positive_definite_and_continuous_at_the_seam_and_poles():
    lat, lon, _ = global_field(T=1)
    grid = U.Grid(np.zeros(1), np.arange(len(lat), dtype=float), np.arange(len(lon), dtype=float), 36.0,
                  (float(lat[0]), 10.0))
    model, _ = U.make_model(ARGS, grid)
    chordal = [k for k in model.covar_module.modules() if isinstance(k, U.Chordal)]
    assert len(chordal) == 1
    Ks = kr.factor_matrices(model.covar_module, grid, D, "cpu")[1].detach()
    assert float(torch.linalg.eigvalsh(Ks).min()) > -1e-8 * float(Ks.diagonal().max())
    Kg = Ks.reshape(len(lat), len(lon), len(lat), len(lon))
    eq = len(lat) // 2
    assert float(Kg[eq, 0, eq, len(lon) - 1]) == pytest.approx(float(Kg[eq, 0, eq, 1]), rel=1e-9)   # 350 E ~ 10 E
    assert float(Kg[-1, 0, -1, len(lon) // 2]) > 0.5 * float(Kg[-1, 0, -1, 0])                      # across the pole
    assert isinstance(kr.kernel_parts(model.covar_module)[1][0], gpytorch.kernels.MaternKernel)


def test_station_solver_is_exact_when_every_frame_observes_the_same_cells():
    grid = (np.arange(30.0), np.arange(9.0), np.arange(8.0))
    model, lik, K, vals, obs = small_problem(grid)
    obs[:] = obs[0]                                                           # stations: the same cells every frame
    vals = np.where(obs, np.nan_to_num(vals, nan=0.3), np.nan)
    noise = float(lik.noise.detach())
    ref_mean, ref_var, idx = dense_reference(K, vals, obs, noise)
    data, mask = kr.to_grid(vals, obs, obs.shape, D, "cpu")
    cells = kr.fixed_cells(mask)
    alternating = mask * (torch.arange(30) % 2 == 0)[:, None, None]          # every other frame empty
    assert cells is not None and kr.fixed_cells(alternating) is None
    many = torch.ones(2, 1, kr.MAX_STATIONS + 1)                               # a photograph's 13,000 cells: CG
    assert kr.fixed_cells(many) is None and kr.fixed_cells(many[..., 1:]).numel() == kr.MAX_STATIONS
    mats = kr.factor_matrices(model.covar_module, grid, D, "cpu")
    st = kr.StationSolver(mats, noise, cells)
    y = data.reshape(1, 30, -1)[..., cells]
    a = st.alpha(y)
    np.testing.assert_allclose(st.mean(a)[0].reshape(-1).detach().numpy(), ref_mean, atol=1e-9)
    np.testing.assert_allclose(st.variance().reshape(-1).detach().numpy(), ref_var, atol=1e-9)
    Koo = K.numpy()[np.ix_(idx, idx)] + noise * np.eye(len(idx))
    assert st.logdet() == pytest.approx(np.linalg.slogdet(Koo)[1], rel=1e-9)
    params = [p for p in model.parameters() if p.requires_grad]
    yv = torch.tensor(vals.reshape(-1)[idx])

    def dense_nll():
        m = kr.factor_matrices(model.covar_module, grid, D, "cpu")
        Kf = torch.kron(torch.kron(m[0], m[1]), m[2])
        Ko = Kf[idx][:, idx] + lik.noise * torch.eye(len(idx), dtype=D)
        return 0.5 * yv @ torch.linalg.solve(Ko, yv) + 0.5 * torch.linalg.slogdet(Ko)[1]

    g_ref = torch.autograd.grad(dense_nll(), params)
    mats = kr.factor_matrices(model.covar_module, grid, D, "cpu")
    g = torch.autograd.grad(st.surrogate(mats, lik.noise.reshape(()), a[0].detach()), params)
    for r, e in zip(g_ref, g, strict=True):
        assert float(e) == pytest.approx(float(r), rel=1e-8)


def test_space_factor_choice_and_the_dense_factor_is_isotropic():
    fixed, moving = dict(ARGS, space_factor="auto", mask_type="fixed"), dict(ARGS, space_factor="auto", mask_type="dynamic")
    assert U.space_factor(fixed, 64, 64) == "dense" and U.space_factor(fixed, 65, 64) == "separable"
    assert U.space_factor(moving, 32, 32) == "dense" and U.space_factor(moving, 33, 32) == "separable"
    assert U.space_factor(dict(fixed, spacekernel="rbf"), 8, 8) == "separable"      # the product already
    assert U.space_factor(ARGS, 8, 8) == "separable"                               # a config from before the option
    grid = U.Grid(np.arange(5.0), np.arange(9.0), np.arange(9.0))
    values = {}
    for choice in ("dense", "separable"):
        model, _ = U.make_model(dict(ARGS, space_factor=choice), grid, separable=True)
        with torch.no_grad():
            for k in model.covar_module.modules():
                if hasattr(k, "raw_lengthscale"):
                    k.lengthscale = torch.full_like(k.lengthscale, 3.0)
        mats = kr.factor_matrices(model.covar_module, grid, D, "cpu")
        Ks = torch.kron(mats[1], mats[2]).detach().numpy() / float(mats[0][0, 0].detach())   # (81, 81)
        values[choice] = (Ks[0, 3 * 9 + 4], Ks[0, 5 * 9 + 0])      # from (0, 0) to (3, 4) and to (5, 0): both 5 apart
    assert values["dense"][0] == pytest.approx(values["dense"][1], rel=1e-12)
    assert values["separable"][0] < 0.8 * values["separable"][1]                   # rougher along the diagonal


def test_station_solver_with_the_dense_space_factor_matches_the_dense_path():
    """The Kronecker path's isotropic factor is the dense path's 2-D Matern: same posterior mean."""
    grid = U.Grid(np.arange(20.0), np.arange(7.0), np.arange(6.0))
    rng = np.random.default_rng(4)
    obs = np.broadcast_to(rng.random((7, 6)) < 0.4, (20, 7, 6)).copy()
    t, y, x = np.meshgrid(*grid, indexing="ij")
    vals = np.where(obs, np.sin(t / 4) * np.cos(y / 3 + x / 2) + 0.1 * rng.standard_normal(obs.shape), np.nan)
    models = {}
    for kron in (True, False):
        model, lik = U.make_model(dict(ARGS, space_factor="dense"), grid, separable=kron)
        with torch.no_grad():
            for k in model.covar_module.modules():
                if hasattr(k, "raw_lengthscale"):
                    k.lengthscale = torch.tensor([[4.0]]) if k.lengthscale.numel() == 1 else torch.tensor([[2.0, 3.0]])
            lik.noise = torch.tensor(0.02)
        models[kron] = (model, lik)
    model, lik = models[True]
    assert sorted(kr._dims(k) for k in kr.kernel_parts(model.covar_module)[1]) == [(0,), (1, 2)]
    mats = kr.factor_matrices(model.covar_module, grid, D, "cpu")
    data, mask = kr.to_grid(vals, obs, (20, 42, 1), D, "cpu")
    st = kr.StationSolver(mats, 0.02, kr.fixed_cells(mask))
    mean = st.mean(st.alpha(data.reshape(1, 20, -1)[..., st.cells]))[0].detach().numpy().reshape(20, 7, 6)
    hidden = ~obs
    hidden[:, :, :] &= (np.arange(20) == 9)[:, None, None]
    dense, lik_d = models[False]
    m_dense, _ = U.posterior(dense.eval(), lik_d, torch.tensor(U.cell_inputs(grid, np.arange(20), obs)),
                             torch.tensor(vals[obs]), torch.tensor(U.cell_inputs(grid, np.arange(20), hidden)), "test")
    np.testing.assert_allclose(mean[hidden], m_dense.numpy(), rtol=1e-6, atol=1e-8)
