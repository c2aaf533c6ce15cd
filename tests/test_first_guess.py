"""The first guess neural methods refine (gapfill.floor.first_guess): it reads only the cells a frame shows,
and the PConv UNet, untrained, returns it exactly."""
import numpy as np
import pytest

from data_generation.make_synthetic_field import make_field
from gapfill.floor import FIRST_GUESS, climatology, distance_to_seen, first_guess, interpolation
from gapfill.problem import build_problem


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    path = tmp_path_factory.mktemp("fg") / "f.nc"
    make_field(n_time=30, ny=12, nx=14, length_scale=3.0, seed=2, land=True).to_netcdf(path)
    return build_problem({"data_path": str(path), "num_frames_train": 20, "num_frames_valid": 5, "mask_kind": "random",
                          "mask_type": "dynamic", "prob_masking": 0.8, "seed": 0})


@pytest.mark.parametrize("kind", FIRST_GUESS)
def test_a_sentinel_in_every_hidden_cell_leaves_the_first_guess_unchanged(problem, kind):
    """+1000 in every cell a frame does not show, training frames included: only the climatology (of the
    complete training frames, which DESIGN allows as a prior mean) may read their hidden cells, so with the
    climatology given, no guess changes."""
    vis = problem.visible()                                                      # (T, B, Y, X) the model's view
    seen = problem.observed
    train = problem.splits["train"]
    clim = climatology(vis, train)
    plain = first_guess(kind, vis, seen, train)
    np.testing.assert_array_equal(first_guess(kind, vis, seen, train, clim=clim), plain)
    poisoned = problem.field.values.copy()
    hidden = ~np.broadcast_to(seen[:, None], poisoned.shape).copy()
    if kind == "dineof":                       # like the DINEOF baseline it reads complete training frames,
        hidden[train] = False                  # for the other frames' guesses (checked below for its own)
    poisoned[hidden] = 1000.0
    assert np.isfinite(plain).all()
    np.testing.assert_array_equal(first_guess(kind, poisoned, seen, train, clim=clim), plain)
    if kind == "dineof":                       # a training frame's guess never reads its own hidden cells
        poisoned[:train.stop][~np.broadcast_to(seen[:train.stop, None], poisoned[:train.stop].shape)] = 1000.0
        frames = range(train.start, train.stop)
        np.testing.assert_array_equal(first_guess(kind, poisoned, seen, train, frames, clim=clim), plain[frames])


def test_first_guess_values_against_hand_computed_ones(problem):
    vis, seen, train = problem.visible(), problem.observed, problem.splits["train"]
    t = 27                                                                       # a test frame
    cells = seen[t] & np.isfinite(vis[t, 0])
    fm = first_guess("frame_mean", vis, seen, train, [t])[0, 0]
    assert np.allclose(fm, vis[t, 0][cells].mean())
    clim = climatology(vis, train)
    np.testing.assert_array_equal(first_guess("climatology", vis, seen, train, [t])[0], clim)
    frame = np.where(seen[t], vis[t], np.nan)[None]
    np.testing.assert_allclose(first_guess("anomaly_interpolation", vis, seen, train, [t]),
                               interpolation(frame, slice(0, 1), clim, anomaly=True))
    np.testing.assert_allclose(first_guess("interpolation", vis, seen, train, [t]),
                               interpolation(frame, slice(0, 1), clim))
    none = first_guess("none", vis, seen, train, [t])[0, 0]
    assert np.allclose(none, np.nanmean(clim))
    with pytest.raises(ValueError, match="unknown first guess"):
        first_guess("kriging", vis, seen, train)


def test_distance_to_the_nearest_seen_cell():
    seen = np.zeros((2, 3, 5), bool)
    seen[0, 1, 1] = True
    d = distance_to_seen(seen)
    assert d[0, 1, 1] == 0 and d[0, 1, 4] == 3 and d[0, 0, 0] == pytest.approx(np.sqrt(2))
    assert np.all(d[1] == pytest.approx(np.hypot(3, 5)))                          # nothing seen: the diagonal


@pytest.mark.parametrize("predict_variance", [False, True])
def test_untrained_pconv_reproduces_the_first_guess_exactly(problem, predict_variance):
    from pconv_inpainting.pconv_data import Data, inpaint
    from pconv_inpainting.pconv_model import build_unet
    args = {"patch_size": 8, "context_frames": 1, "first_guess": "anomaly_interpolation"}
    model_view = problem.for_model()
    data = Data(args, model_view)
    model = build_unet(data.bands, data.patch, 1, predict_variance, base_filters=4)
    frames = range(problem.splits["test"].start, problem.splits["test"].stop)
    mean, var = inpaint(model, data, data.seen0, frames)
    expected = first_guess("anomaly_interpolation", model_view.visible(), problem.observed, problem.splits["train"], frames)
    np.testing.assert_array_equal(mean, expected)
    if predict_variance:                                                           # log variance 0: the band's variance
        np.testing.assert_allclose(var, np.broadcast_to(data.normalizer.std[None, :, None, None] ** 2, var.shape))


def test_training_patches_hold_the_residual_over_their_own_first_guess(problem):
    """Patches smaller than the frame, a context frame either side (frame 0 has none before it): the input's
    first channel is the residual on the seen cells, the target plus the first guess is the field, and the
    hole is every known cell the sample does not show."""
    from pconv_inpainting.pconv_data import Data, Patches
    data = Data({"patch_size": 8, "context_frames": 1, "first_guess": "interpolation"}, problem.for_model())
    patches = Patches(data, batch=16, steps=1, mask_kwargs={"kind": "random", "mode": "dynamic", "prob_masking": 0.8},
                      variants=3, seed=0)
    (x, m), y = patches[0]
    assert x.shape == (16, 8, 8, 1 * 3 + 1 + 1) and y.shape == (16, 8, 8, 4)
    truth, hole, known, guess = (y[..., i] for i in range(4))
    seen = m[..., 0].astype(bool)
    np.testing.assert_array_equal(x[..., 0], np.where(seen, truth, 0.0))          # residual where seen
    np.testing.assert_array_equal(x[..., 3], guess)                                 # the guess channel
    assert np.array_equal(hole.astype(bool), known.astype(bool) & ~seen) and hole.sum() > 0
    assert (m[..., 3:] == 1).all()                                                  # guess and distance: everywhere
    assert np.all(x[..., 4][seen] == 0) and np.all(x[..., 4][~seen] > 0)            # distance to the nearest seen cell
    # the target is the field: residual + first guess = the normalised value on known cells
    field = data.values[data.train_frames]
    assert np.isin(np.round((truth + guess)[known.astype(bool)], 4), np.round(field, 4)).all()


def test_first_guess_rmse_is_the_guess_scored_on_the_test_cells_by_hand(problem):
    """metrics.json's training.first_guess_rmse (what training added is its gap to the method's RMSE)."""
    from gapfill.evaluate import first_guess_rmse
    sl, truth = problem.splits["test"], problem.field.values
    clim = climatology(problem.visible(), problem.splits["train"])               # (B, Y, X)
    hidden = ~problem.observed[sl][:, None] & np.isfinite(truth[sl])
    by_hand = np.sqrt(np.mean((clim[None] - truth[sl])[hidden] ** 2))
    assert np.isclose(first_guess_rmse(problem, "climatology"), by_hand, rtol=1e-6)
    assert first_guess_rmse(problem, "anomaly_interpolation") < 0.9 * by_hand
