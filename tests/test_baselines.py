"""Classical floor: each method against a hand-computed or brute-force reference."""
import numpy as np
import pytest

from gapfill.dineof import _dineof_fit, dineof, dineof_matrix, dineof_unmatrix
from gapfill.floor import climatology, interpolation, persistence
from gapfill.floor import reconstruct_baseline as reconstruct


def test_climatology_is_training_mean_with_band_fallback():
    v = np.arange(2 * 1 * 2 * 2, dtype=float).reshape(2, 1, 2, 2)        # two training frames
    v = np.concatenate([v, np.full((1, 1, 2, 2), np.nan)])              # one hidden test frame
    v[:2, 0, 1, 1] = np.nan                                             # a cell never seen in training
    clim = climatology(v, slice(0, 2))
    assert clim[0, 0, 0] == 2.0 and clim[0, 0, 1] == 3.0 and clim[0, 1, 0] == 4.0
    assert clim[0, 1, 1] == pytest.approx(np.nanmean(v))


def test_persistence_carries_last_visible_value():
    v = np.full((4, 1, 1, 2), np.nan)
    v[0, 0, 0] = [1.0, 2.0]
    v[2, 0, 0, 0] = 5.0                                                  # cell 0 seen again at t=2
    out = persistence(v, slice(2, 4), clim=np.zeros((1, 1, 2)))
    assert out[:, 0, 0, 0].tolist() == [5.0, 5.0] and out[:, 0, 0, 1].tolist() == [2.0, 2.0]


def test_interpolation_exact_on_a_plane_and_nearest_outside_hull():
    yy, xx = np.mgrid[0:10, 0:10].astype(float)
    plane = 2 * yy - 3 * xx + 1
    v = np.full((1, 1, 10, 10), np.nan)
    keep = np.zeros((10, 10), bool)
    keep[2:8:2, 2:8:2] = True                                            # a grid of stations inside
    v[0, 0][keep] = plane[keep]
    out = interpolation(v, slice(0, 1), clim=np.zeros((1, 10, 10)))[0, 0]
    inside = (yy >= 2) & (yy <= 6) & (xx >= 2) & (xx <= 6)
    np.testing.assert_allclose(out[inside], plane[inside], atol=1e-9)
    assert out[0, 0] == plane[2, 2] and out[9, 9] == plane[6, 6]           # nearest station outside


def test_anomaly_interpolation_adds_climatology_back():
    clim = np.full((1, 4, 4), 10.0)
    clim[0, :, 2:] = 20.0                                                # a sharp step in the mean
    v = np.full((1, 1, 4, 4), np.nan)
    v[0, 0, :, [0, 3]] = (clim[0, :, [0, 3]] + 1.0)                      # anomaly of +1 everywhere seen
    out = interpolation(v, slice(0, 1), clim, anomaly=True)[0, 0]
    np.testing.assert_allclose(out, clim[0] + 1.0)                        # plain interpolation could not


def test_dineof_recovers_low_rank_field_and_picks_its_rank():
    rng = np.random.default_rng(0)
    T, Y, X = 60, 12, 12
    modes = rng.normal(size=(3, Y * X))
    amps = rng.normal(size=(T, 3)) * [5, 3, 2]
    truth = (amps @ modes).reshape(T, 1, Y, X) + 0.3 * rng.normal(size=(T, 1, Y, X))   # rank 3 + noise
    vis = truth.copy()
    hidden = rng.random((T - 40, 1, Y, X)) < 0.6                          # frames 40.. gappy
    vis[40:][hidden] = np.nan
    clim = np.zeros((1, Y, X))
    mean, var, info = dineof(vis, slice(40, T), clim, max_rank=10, seed=0, tol=1e-6, max_iter=300)
    err = np.sqrt(np.mean((mean - truth[40:])[hidden] ** 2))
    assert info["rank"] == 3                                             # the true rank
    assert err < 0.45                                                    # noise floor 0.3, signal std ~5
    assert var.shape == mean.shape and np.all(var == var.flat[0])        # homoscedastic
    assert 0.5 * err**2 < var.flat[0] < 2 * err**2                       # the CV error predicts the real one
    # a rank given by training is used as is, even past the point where the CV error rises
    mean6, _, info6 = dineof(vis, slice(40, T), clim, rank=6, seed=0, tol=1e-6, max_iter=300)
    assert info6["rank"] == 6 and list(info6["cv_mse"]) == [1, 2, 3, 4, 5, 6]
    assert np.sqrt(np.mean((mean6 - truth[40:])[hidden] ** 2)) > err      # overfitting costs accuracy


def test_dineof_search_stopped_after_a_rank_resumes_to_the_same_result():
    """What a preempted run does: save the search state after rank 3, stop, resume from the saved copy."""
    rng = np.random.default_rng(1)
    T, Y, X = 50, 10, 10
    truth = (rng.normal(size=(T, 4)) @ rng.normal(size=(4, Y * X))).reshape(T, 1, Y, X)
    vis = truth + 0.2 * rng.normal(size=truth.shape)
    vis[30:][rng.random((T - 30, 1, Y, X)) < 0.7] = np.nan
    clim, target = np.zeros((1, Y, X)), slice(30, T)
    plain = dineof(vis, target, clim, max_rank=12, seed=0, max_iter=40)
    saved = []

    def stop_after_third(state):
        if int(state["done"]) == 3:
            saved.append({k: np.array(v, copy=True) for k, v in state.items()})   # what np.savez keeps
            raise KeyboardInterrupt                                             # the run ends here

    with pytest.raises(KeyboardInterrupt):
        dineof(vis, target, clim, max_rank=12, seed=0, max_iter=40, after_rank=stop_after_third)
    seen = []
    resumed = dineof(vis, target, clim, max_rank=12, seed=0, max_iter=40, resume=saved[0],
                     after_rank=lambda st: seen.append(int(st["curve_rank"][-1])))
    assert seen[0] == 4 and resumed[2] == plain[2]                  # ranks 4.. only; same rank and CV curve
    np.testing.assert_array_equal(resumed[0], plain[0])
    np.testing.assert_array_equal(resumed[1], plain[1])
    assert len(plain[2]["cv_mse"]) > 4


def test_dineof_on_a_single_image_keeps_fills_in_the_visible_range():
    """One frame: image rows form the matrix; a large hole makes the raw rank-6 fill overshoot."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 32
    img = (np.sin(6 * yy) * np.cos(5 * xx) + 0.5 * np.sin(13 * xx * yy) + 0.1 * rng.normal(size=(32, 32)))[None, None]
    vis = img.copy()
    vis[0, 0, 8:24, 6:26] = np.nan
    lo, hi = np.nanmin(vis), np.nanmax(vis)
    clim = climatology(vis, slice(0, 0))
    assert np.allclose(clim, np.nanmean(vis))                            # no training frames: the band mean
    mat, live, shape = dineof_matrix(vis, clim)
    raw = dineof_unmatrix(_dineof_fit(np.nan_to_num(mat), np.isnan(mat), [6], 1e-4, 300, None)[2], live, shape, clim)
    assert raw.max() > hi + 0.05                                         # the premise: unclipped fill overshoots
    mean, _, info = dineof(vis, slice(0, 1), clim, rank=6, tol=1e-4, max_iter=300)
    assert info["rank"] == 6 and lo <= mean.min() and mean.max() <= hi


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown baseline 'krig'"):
        reconstruct("krig", np.zeros((2, 1, 3, 3)), slice(0, 1), slice(1, 2))
