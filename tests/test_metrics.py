"""Tests for gapfill.metrics against hand-computed numbers and independent references."""
import json
import math

import numpy as np
import pytest
from scipy import integrate, ndimage, stats
from skimage.metrics import structural_similarity

from gapfill import metrics as M


# ---------------------------------------------------------------- masks and point errors
def tiny():
    """truth [1,2,3,4], pred [1,3,2,6], first cell observed -> scored errors (pred-truth) = [1,-1,2]."""
    truth = np.array([1, 2, 3, 4], np.float32).reshape(1, 1, 1, 4)
    pred = np.array([1, 3, 2, 6], np.float32).reshape(1, 1, 1, 4)
    observed = np.array([True, False, False, False]).reshape(1, 1, 4)  # (T, Y, X)
    valid = np.ones((1, 1, 1, 4), bool)
    return truth, pred, M.scored_cells(observed, valid)


def test_scored_cells_hand_example():
    observed = np.array([[[True, False, False, True]]])  # (T=1, Y=1, X=4)
    valid = np.array([[[[True, True, False, True]], [[False, True, True, True]]]])  # (1, 2, 1, 4)
    s = M.scored_cells(observed, valid)
    assert s.shape == (1, 2, 1, 4)
    np.testing.assert_array_equal(s[0, 0, 0], [False, True, False, False])
    np.testing.assert_array_equal(s[0, 1, 0], [False, True, True, False])
    # 4-D observed gives the same answer as the broadcast 3-D one
    np.testing.assert_array_equal(M.scored_cells(np.repeat(observed[:, None], 2, axis=1), valid), s)
    with pytest.raises(ValueError):
        M.scored_cells(np.zeros((1, 1, 3), bool), valid)


def test_point_errors_hand_computed():
    truth, pred, scored = tiny()
    assert M.mae(truth, pred, scored) == pytest.approx(4 / 3)        # (1 + 1 + 2) / 3
    assert M.rmse(truth, pred, scored) == pytest.approx(math.sqrt(2))  # sqrt((1 + 1 + 4) / 3)
    assert M.bias(truth, pred, scored) == pytest.approx(2 / 3)        # (1 - 1 + 2) / 3
    # scored truth [2,3,4]: mean 3, SST = 2, SSE = 6 -> R2 = 1 - 6/2 = -2
    assert M.r2(truth, pred, scored) == pytest.approx(-2.0)
    assert M.r2(truth, truth, scored) == pytest.approx(1.0)


def test_point_errors_ignore_unscored_nan_and_broadcast_scored():
    truth, pred, scored = tiny()
    pred = pred.copy()
    pred[0, 0, 0, 0] = np.nan  # observed cell: not scored, must not matter
    assert M.mae(truth, pred, scored) == pytest.approx(4 / 3)
    # a (1, 1, 1, 4) mask broadcast against (2, 1, 1, 4) data
    t2, p2 = np.concatenate([truth, truth]), np.concatenate([pred, pred + 1])
    assert M.bias(t2, p2, scored) == pytest.approx((2 / 3 + 5 / 3) / 2)


def test_fail_loudly():
    truth, pred, scored = tiny()
    bad = pred.copy()
    bad[0, 0, 0, 2] = np.nan
    with pytest.raises(ValueError, match="prediction has 1 non-finite values on scored cells"):
        M.mae(truth, bad, scored)
    bad[0, 0, 0, 3] = np.inf
    with pytest.raises(ValueError, match="prediction has 2 non-finite"):
        M.rmse(truth, bad, scored)
    badt = truth.copy()
    badt[0, 0, 0, 1] = np.nan
    with pytest.raises(ValueError, match="truth has 1 non-finite"):
        M.bias(badt, pred, scored)
    with pytest.raises(ValueError, match="no cell is scored"):
        M.mae(truth, pred, np.zeros_like(scored))
    var = np.ones_like(truth)
    var[0, 0, 0, 3] = 0.0
    with pytest.raises(ValueError, match="non-positive"):
        M.gaussian_nll(truth, pred, var, scored)
    var[0, 0, 0, 3] = np.nan
    with pytest.raises(ValueError, match="variance has 1 non-finite"):
        M.crps_gaussian(truth, pred, var, scored)
    var[0, 0, 0, 3] = 1.0
    var[0, 0, 0, 0] = -1.0  # observed cell: not checked
    assert np.isfinite(M.coverage(truth, pred, var, scored))


# ---------------------------------------------------------------- probabilistic scores
@pytest.mark.parametrize("mu,sigma,y", [(0.0, 1.0, 0.0), (1.0, 2.0, -1.5), (-3.0, 0.5, -2.2), (10.0, 3.0, 19.0)])
def test_crps_matches_numerical_integration(mu, sigma, y):
    F = lambda x: stats.norm.cdf(x, mu, sigma)  # noqa: E731
    below, _ = integrate.quad(lambda x: F(x) ** 2, -np.inf, y, epsabs=1e-12, epsrel=1e-12)
    above, _ = integrate.quad(lambda x: (1 - F(x)) ** 2, y, np.inf, epsabs=1e-12, epsrel=1e-12)
    got = M.crps_gaussian(np.array([y]), np.array([mu]), np.array([sigma**2]), np.array([True]))
    assert got == pytest.approx(below + above, rel=1e-6, abs=1e-9)


def test_crps_is_mean_over_cells():
    y, m, v = np.array([0.0, 1.0, 5.0]), np.array([0.5, 0.0, 2.0]), np.array([1.0, 4.0, 0.25])
    each = [M.crps_gaussian(y[i:i + 1], m[i:i + 1], v[i:i + 1], np.array([True])) for i in range(3)]
    assert M.crps_gaussian(y, m, v, np.ones(3, bool)) == pytest.approx(np.mean(each))


def test_nll_matches_scipy_logpdf():
    rng = np.random.default_rng(0)
    y, m = rng.normal(size=50), rng.normal(size=50)
    v = rng.uniform(0.1, 4, size=50)
    scored = rng.random(50) < 0.6
    ref = -np.mean(stats.norm.logpdf(y[scored], m[scored], np.sqrt(v[scored])))
    assert M.gaussian_nll(y.astype(np.float32), m, v, scored) == pytest.approx(ref, rel=1e-6)


def test_coverage_calibrated_and_level():
    rng = np.random.default_rng(1)
    n = 200_000
    m = rng.normal(size=n)
    v = rng.uniform(0.05, 5, size=n)
    y = m + np.sqrt(v) * rng.normal(size=n)
    s = np.ones(n, bool)
    assert abs(M.coverage(y, m, v, s) - 0.95) < 0.01
    assert abs(M.coverage(y, m, v, s, level=0.5) - 0.5) < 0.01
    assert abs(M.coverage(y, m, v, s, level=0.8) - 0.8) < 0.01
    # over-confident model (variance 4x too small) under-covers: interval +-1.96*sigma/2 -> 68%
    assert abs(M.coverage(y, m, v / 4, s) - 0.6753) < 0.01
    with pytest.raises(ValueError, match="level"):
        M.coverage(y, m, v, s, level=95)


def test_std_error_corr():
    rng = np.random.default_rng(2)
    n = 100_000
    m = rng.normal(size=n)
    sd = rng.uniform(0.1, 3, size=n)
    y = m + sd * rng.normal(size=n)
    s = np.ones(n, bool)
    hetero = M.std_error_corr(y, m, sd**2, s)
    assert hetero > 0.3
    assert hetero == pytest.approx(np.corrcoef(sd, np.abs(y - m))[0, 1], abs=1e-9)
    shuffled = rng.permutation(sd)  # predicted std unrelated to the actual error
    assert abs(M.std_error_corr(y, m, shuffled**2, s)) < 0.02
    assert math.isnan(M.std_error_corr(y, m, np.ones(n), s))  # constant std: undefined
    # a constant std that is not exactly representable (DINEOF's per-band variance) is still undefined,
    # not a round-off correlation of 1e-17
    assert math.isnan(M.std_error_corr(y, m, np.full(n, np.float32(0.7), dtype=np.float64), s))


# ---------------------------------------------------------------- SSIM
def ssim_map_reference(a, b, data_range, sigma=1.5):
    """Independent SSIM map (Wang et al. 2004, gaussian window, population covariance)."""
    g = lambda x: ndimage.gaussian_filter(x, sigma, truncate=3.5, mode="reflect")  # noqa: E731
    ux, uy = g(a), g(b)
    vx, vy, vxy = g(a * a) - ux**2, g(b * b) - uy**2, g(a * b) - ux * uy
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))


def smooth_field(rng, shape, sigma=2.0):
    return ndimage.gaussian_filter(rng.normal(size=shape), sigma) * 10 + 5


def test_ssim_perfect_and_full_frame():
    rng = np.random.default_rng(3)
    t = smooth_field(rng, (24, 20))
    p = t + rng.normal(scale=0.3, size=t.shape)
    allc = np.ones(t.shape, bool)
    assert M.ssim(t, t, allc) == pytest.approx(1.0, abs=1e-12)
    rng_ = t.max() - t.min()
    _, smap = structural_similarity(t, p, full=True, data_range=rng_, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    got = M.ssim(t.astype(np.float32), p.astype(np.float32), allc)
    assert got == pytest.approx(smap.mean(), abs=1e-5)  # float32 inputs, float64 maths
    assert M.ssim(t, p, allc) == pytest.approx(ssim_map_reference(t, p, rng_).mean(), abs=1e-10)
    assert 0.2 < got < 0.999


def test_ssim_restricted_to_scored_with_nan_fill():
    rng = np.random.default_rng(4)
    t = smooth_field(rng, (16, 16))
    p = t + rng.normal(scale=1.0, size=t.shape)
    t[:3, :3] = np.nan  # land
    p[:3, :3] = np.nan
    scored = rng.random(t.shape) < 0.4
    scored[:3, :3] = False
    p[~scored & np.isfinite(t)] = np.nan  # unscored prediction cells may be anything
    fill = np.nanmean(t)
    tf = np.where(np.isfinite(t), t, fill)
    pf = np.where(np.isfinite(p), p, fill)
    ref = ssim_map_reference(tf, pf, np.nanmax(t) - np.nanmin(t))[scored].mean()
    assert M.ssim(t, p, scored) == pytest.approx(ref, abs=1e-10)
    bad = p.copy()
    bad[scored] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        M.ssim(t, bad, scored)


def test_ssim_small_frames():
    t = np.arange(36.0).reshape(6, 6)
    assert math.isnan(M.ssim(t, t + 1, np.ones((6, 6), bool)))  # below 7x7: documented nan
    t8 = np.arange(64.0).reshape(8, 8)
    assert M.ssim(t8, t8, np.ones((8, 8), bool)) == pytest.approx(1.0)  # 7..10 still works
    assert M.ssim(np.ones((8, 8)), np.ones((8, 8)), np.ones((8, 8), bool)) == pytest.approx(1.0)  # range 0


# ---------------------------------------------------------------- spectrum
def test_radial_spectrum_sinusoid_peaks():
    yy, xx = np.mgrid[0:32, 0:32]
    k, p = M.radial_spectrum(np.sin(2 * np.pi * 5 * xx / 32) + 3.0)
    np.testing.assert_array_equal(k, np.arange(1, 17))
    assert k[np.argmax(p)] == 5
    assert p[4] > 1e6 * np.delete(p, 4).max()
    # all power sits in the two cells (0, +-5), each |F|^2/N = (N/2)^2/N = N/4 -> ring 5 holds N/2
    assert p[4] * ring_counts(32, 32)[5] == pytest.approx(32 * 32 / 2)
    k2, p2 = M.radial_spectrum(np.cos(2 * np.pi * (3 * yy + 4 * xx) / 32))  # |k| = 5 diagonally
    assert k2[np.argmax(p2)] == 5
    rect = np.sin(2 * np.pi * 3 * np.mgrid[0:20, 0:30][0] / 20)  # non-square frame, along y
    k3, p3 = M.radial_spectrum(rect)
    assert len(k3) == 10 and k3[np.argmax(p3)] == 3


def ring_counts(ny, nx):
    """Brute-force cell count per integer radial wavenumber (signed wavenumbers)."""
    counts = {}
    for i in range(ny):
        for j in range(nx):
            ky = i if i <= ny // 2 else i - ny
            kx = j if j <= nx // 2 else j - nx
            r = int(round(math.hypot(ky, kx)))
            counts[r] = counts.get(r, 0) + 1
    return counts


def test_radial_spectrum_parseval_and_brute_force():
    rng = np.random.default_rng(5)
    ny, nx = 12, 12
    f = rng.normal(size=(ny, nx))
    k, p = M.radial_spectrum(f)
    # brute-force DFT power per ring
    fc = f - f.mean()
    yy, xx = np.mgrid[0:ny, 0:nx]
    ring_sum = {}
    for i in range(ny):
        for j in range(nx):
            c = np.sum(fc * np.exp(-2j * np.pi * (i * yy / ny + j * xx / nx)))
            ky = i if i <= ny // 2 else i - ny
            kx = j if j <= nx // 2 else j - nx
            r = int(round(math.hypot(ky, kx)))
            ring_sum[r] = ring_sum.get(r, 0.0) + abs(c) ** 2 / (ny * nx)
    counts = ring_counts(ny, nx)
    np.testing.assert_allclose(p, [ring_sum[r] / counts[r] for r in k], rtol=1e-10)
    # Parseval: a field band-limited to |k| <= 6 has all its variance in the returned bins
    band = ndimage.gaussian_filter(rng.normal(size=(32, 32)), 3.0, mode="wrap")
    kb, pb = M.radial_spectrum(band)
    counts = ring_counts(32, 32)
    total = sum(pb[i] * counts[r] for i, r in enumerate(kb))
    assert total == pytest.approx(np.sum((band - band.mean()) ** 2), rel=1e-3)


def test_radial_spectrum_scaling_slope_and_nan():
    rng = np.random.default_rng(6)
    f = ndimage.gaussian_filter(rng.normal(size=(48, 48)), 2.0, mode="wrap")
    k, p = M.radial_spectrum(f)
    _, p2 = M.radial_spectrum(2 * f + 7)
    np.testing.assert_allclose(p2, 4 * p, rtol=1e-10)
    assert p[:3].mean() > 100 * p[-3:].mean()  # smooth field: red spectrum
    g = f.copy()
    g[5:9, 5:9] = np.nan
    _, pn = M.radial_spectrum(g)
    assert np.all(np.isfinite(pn))
    with pytest.raises(ValueError):
        M.radial_spectrum(np.full((8, 8), np.nan))


# ---------------------------------------------------------------- compute_metrics
def example(seed=7):
    rng = np.random.default_rng(seed)
    T, B, Y, X = 3, 2, 16, 16
    truth = np.stack([[smooth_field(rng, (Y, X)) + 10 * b for b in range(B)] for _ in range(T)])
    truth[:, 1, :2, :4] = np.nan  # never-observed cells in band 1
    valid = np.isfinite(truth)
    sd = rng.uniform(0.2, 2.0, size=truth.shape)
    mean = truth + sd * rng.normal(size=truth.shape)
    observed = rng.random((T, Y, X)) < 0.3
    mean[np.broadcast_to(observed[:, None], truth.shape)] = np.nan  # unscored: must be ignored
    mean[~valid] = np.nan
    return truth.astype(np.float32), mean.astype(np.float32), sd.astype(np.float32) ** 2, observed, valid


def test_compute_metrics_matches_elementwise():
    truth, mean, var, observed, valid = example()
    out = M.compute_metrics(truth, mean, observed, valid, variance=var, band_names=["t2m", "sst"])
    json.dumps(out, allow_nan=False)
    s = M.scored_cells(observed, valid)
    ov = out["overall"]
    assert out["has_variance"] is True
    assert ov["n_scored"] == int(s.sum()) and isinstance(ov["n_scored"], int)
    assert ov["mae"] == pytest.approx(M.mae(truth, mean, s))
    assert ov["rmse"] == pytest.approx(M.rmse(truth, mean, s))
    assert ov["bias"] == pytest.approx(M.bias(truth, mean, s))
    assert ov["r2"] == pytest.approx(M.r2(truth, mean, s))
    assert ov["nll"] == pytest.approx(M.gaussian_nll(truth, mean, var, s))
    assert ov["crps"] == pytest.approx(M.crps_gaussian(truth, mean, var, s))
    assert ov["coverage95"] == pytest.approx(M.coverage(truth, mean, var, s))
    assert ov["std_error_corr"] == pytest.approx(M.std_error_corr(truth, mean, var, s))
    assert ov["mean_variance"] == pytest.approx(float(np.mean(var[s].astype(np.float64))))
    assert 0.85 < ov["coverage95"] < 1.0 and ov["std_error_corr"] > 0.2  # calibrated by construction
    recon = np.where(s, mean, truth)
    ssims = np.array([[M.ssim(truth[t, b], recon[t, b], s[t, b]) for b in range(2)] for t in range(3)])
    assert ov["ssim"] == pytest.approx(ssims.mean())
    assert set(out["per_band"]) == {"t2m", "sst"}
    for b, name in enumerate(["t2m", "sst"]):
        pb, sb = out["per_band"][name], s[:, b]
        assert pb["n_scored"] == int(sb.sum())
        assert pb["mae"] == pytest.approx(np.mean(np.abs(mean[:, b][sb] - truth[:, b][sb])))
        assert pb["rmse"] == pytest.approx(M.rmse(truth[:, b], mean[:, b], sb))
        assert pb["crps"] == pytest.approx(M.crps_gaussian(truth[:, b], mean[:, b], var[:, b], sb))
        assert pb["ssim"] == pytest.approx(ssims[:, b].mean())
        assert set(pb) == set(ov)
    assert [f["frame"] for f in out["per_frame"]] == [0, 1, 2]
    for t, pf in enumerate(out["per_frame"]):
        st = s[t]
        err = mean[t][st].astype(np.float64) - truth[t][st]
        assert pf["n_scored"] == int(st.sum())
        assert pf["mae"] == pytest.approx(np.mean(np.abs(err)))
        assert pf["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
        assert pf["bias"] == pytest.approx(np.mean(err))
        assert pf["ssim"] == pytest.approx(ssims[t].mean())
        assert pf["crps"] == pytest.approx(M.crps_gaussian(truth[t], mean[t], var[t], st))
        assert pf["coverage95"] == pytest.approx(M.coverage(truth[t], mean[t], var[t], st))
    spec = out["spectrum"]
    assert spec["k"] == list(range(1, 9))
    ref_t = np.mean([M.radial_spectrum(truth[t, b])[1] for t in range(3) for b in range(2)], axis=0)
    ref_p = np.mean([M.radial_spectrum(recon[t, b])[1] for t in range(3) for b in range(2)], axis=0)
    np.testing.assert_allclose(spec["truth"], ref_t, rtol=1e-6)
    np.testing.assert_allclose(spec["pred"], ref_p, rtol=1e-6)
    assert spec["pred"][-1] > spec["truth"][-1]  # white prediction noise adds high-k power


def test_compute_metrics_without_variance_and_defaults():
    truth, mean, _, observed, valid = example()
    out = M.compute_metrics(truth, mean, np.repeat(observed[:, None], 2, axis=1), valid)
    json.dumps(out, allow_nan=False)
    assert out["has_variance"] is False
    assert set(out["overall"]) == {"mae", "rmse", "bias", "r2", "ssim", "n_scored"}
    assert set(out["per_band"]) == {"band0", "band1"}
    assert "crps" not in out["per_frame"][0]
    # observed cells of the prediction never count: NaN there or garbage there gives the same scores
    garbage = np.where(np.isnan(mean) & valid, truth + 100.0, mean)
    out_g = M.compute_metrics(truth, garbage, observed, valid)
    assert out_g["overall"] == out["overall"] and out_g["spectrum"] == out["spectrum"]
    with pytest.raises(ValueError, match="band_names"):
        M.compute_metrics(truth, mean, observed, valid, band_names=["only_one"])


def test_compute_metrics_empty_frame_and_errors():
    truth, mean, var, observed, valid = example()
    observed = observed.copy()
    observed[2] = True  # frame 2 fully observed: nothing to score there
    out = M.compute_metrics(truth, mean, observed, valid, variance=var)
    json.dumps(out, allow_nan=False)
    f2 = out["per_frame"][2]
    assert f2["n_scored"] == 0 and f2["mae"] is None and f2["ssim"] is None and f2["crps"] is None
    s = M.scored_cells(observed, valid)
    assert out["overall"]["mae"] == pytest.approx(M.mae(truth, mean, s))
    with pytest.raises(ValueError, match="no cell is scored"):
        M.compute_metrics(truth, mean, np.ones_like(observed), valid)
    bad = mean.copy()
    bad[0, 0][s[0, 0]] = np.nan
    with pytest.raises(ValueError, match=f"prediction has {int(s[0, 0].sum())} non-finite values on scored"):
        M.compute_metrics(truth, bad, observed, valid)
    badv = var.copy()
    badv[s] = 0.0
    with pytest.raises(ValueError, match="non-positive"):
        M.compute_metrics(truth, mean, observed, valid, variance=badv)


def test_clean_replaces_nan():
    out = M._clean({"a": np.float32(np.nan), "b": [np.int64(3), np.inf], "c": np.array([1.5, np.nan]),
                    "d": np.bool_(True)})
    assert out == {"a": None, "b": [3, None], "c": [1.5, None], "d": True}
    json.dumps(out, allow_nan=False)
