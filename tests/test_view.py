"""The model's view (gapfill.view), built once for the four neural methods: a sentinel in every hidden cell
changes none of its arrays; each method's untrained network returns its first guess bit for bit;
`--first_guess auto` picks the candidate with the lowest validation RMSE, recomputed here independently."""
import json

import numpy as np
import pytest
import torch

from data_generation.make_synthetic_field import make_field
from gapfill import runs
from gapfill.floor import AUTO_CANDIDATES, FIRST_GUESS, first_guess
from gapfill.metrics import rmse
from gapfill.problem import build_problem
from gapfill.view import ModelView

ARGS = {"num_frames_train": 20, "num_frames_valid": 6, "mask_kind": "random", "mask_type": "dynamic",
        "prob_masking": 0.8, "seed": 0}


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    p = tmp_path_factory.mktemp("view") / "f.nc"
    make_field(n_time=32, ny=16, nx=16, seed=3).to_netcdf(p)
    return p


@pytest.fixture(scope="module")
def problem(path):
    return build_problem({"data_path": str(path), **ARGS})


@pytest.mark.parametrize("kind", [k for k in FIRST_GUESS if k != "dineof"] + [pytest.param("dineof")])
def test_a_sentinel_in_every_hidden_cell_leaves_the_view_unchanged(problem, kind):
    """+1000 in every hidden valid cell of the validation and test frames of the full problem (whose truth
    the view never receives): values, seen and known cells, first guess and distance are the same."""
    poisoned = problem.field.values.copy()
    for split in ("valid", "test"):
        sl = problem.splits[split]
        block = poisoned[sl]
        block[problem.scored(split)] = 1000.0
        poisoned[sl] = block
    bad = type(problem)(problem.field.__class__(**{**problem.field.__dict__, "values": poisoned}), problem.splits,
                        problem.observed, problem.masks)
    a, b = ModelView(problem, kind), ModelView(bad, kind)
    frames = range(problem.field.shape[0])
    for name in ("values", "seen", "known"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.guess(frames), b.guess(frames))
    np.testing.assert_array_equal(a.distance(frames), b.distance(frames))
    np.testing.assert_array_equal(a.normalizer.mean, b.normalizer.mean)
    assert np.abs(a.values).max() < 50 and np.isfinite(a.guess_physical(frames)).all()


def _pconv(problem, kind):
    from pconv_inpainting.pconv_data import Data, inpaint
    from pconv_inpainting.pconv_model import build_unet
    data = Data({"patch_size": 16, "context_frames": 1}, problem, kind=kind)
    model = build_unet(data.bands, data.patch, 1, False, base_filters=4)
    return data.view, lambda frames: inpaint(model, data, data.seen0, frames)[0]


def _gpvae(problem, kind):
    from gpvae import train_gpvae
    from gpvae.gpvae_data import Frames
    from gpvae.gpvae_model import GPVAE
    args = vars(train_gpvae.parse_args(["--data_path", "x", "--window", "4", "--filters", "4", "--n_samples", "2"]))
    frames = Frames(problem, None, kind)
    module = GPVAE.from_args(args, frames.bands, frames.floor_variance()).eval()
    module.frames = frames
    return frames.view, lambda f: module.reconstruct(f)[0]


def _ginr(problem, kind):
    from ginr import train_ginr
    from ginr.ginr_data import GraphFrames
    from ginr.ginr_model import GINR
    args = vars(train_ginr.parse_args(["--data_path", "x", "--n_fourier", "8", "--hidden_dim", "8"]))
    data = GraphFrames(problem, None, kind, 8)
    module = GINR.from_args(args, data.bands, data.T).attach(data).eval()
    return data.view, lambda f: module.reconstruct(f)[0]


def _gan(problem, kind):
    from gan_gapfill import train_gan
    from gan_gapfill.gan_data import FieldChips
    from gan_gapfill.gan_model import GAN
    args = vars(train_gan.parse_args(["--data_path", "x", "--model_cap", "4", "--disc_cap", "4", "--n_res_blocks", "1",
                                      "--mask_position", "2"]))
    module = GAN.from_args(args, problem.field.shape[1]).eval()
    module.data = FieldChips(problem, None, 3, kind)
    return module.data.view, lambda f: module.reconstruct(f)[0]


@pytest.mark.parametrize("method", ["pconv", "gpvae", "ginr", "gan"])
@pytest.mark.parametrize("kind", ["space_time", "climatology"])
def test_each_untrained_network_returns_its_first_guess_bit_for_bit(problem, method, kind):
    """Zero training steps: the reconstruction of the test frames is the core's first guess exactly (at seen
    cells the methods that keep observed values give those, which an interpolating guess passes through)."""
    torch.manual_seed(0)
    view, reconstruct = {"pconv": _pconv, "gpvae": _gpvae, "ginr": _ginr, "gan": _gan}[method](problem.for_model(), kind)
    sl = problem.splits["test"]
    frames = list(range(sl.start, sl.stop))
    mean = reconstruct(frames)
    expected = view.guess_physical(frames)
    if method != "pconv":                                 # these keep every observed value as it is
        expected = np.where(view.seen[frames], view.visible[frames], expected)
    np.testing.assert_array_equal(mean, expected)
    truth, scored = problem.field.values[sl], problem.scored("test")
    assert rmse(truth, mean, scored) < 0.9 * rmse(truth, np.broadcast_to(view.normalizer.mean[:, None, None],
                                                                          truth.shape), scored)


def test_auto_picks_the_candidate_with_the_lowest_validation_rmse_and_the_test_reuses_it(path, tmp_path):
    from pconv_inpainting import test_pconv, train_pconv
    argv = ["--data_path", str(path), *[f"--{k}={v}" for k, v in ARGS.items() if k != "seed"],
            "--checkpoint_dir", str(tmp_path / "ck"), "--patch_size", "16", "--base_filters", "4", "--batch_size", "2",
            "--steps_per_epoch", "1", "--max_iters", "1", "--mask_variants", "1"]
    assert runs.run_cli(train_pconv.main, argv) == 0
    run = next((tmp_path / "ck").iterdir())
    cfg = json.loads((run / "config.json").read_text())
    assert "_fgauto_" in run.name and set(cfg["first_guess_scores"]) == set(AUTO_CANDIDATES)
    problem = build_problem(cfg["args"])
    vs, vis = problem.splits["valid"], problem.visible()
    seen = problem.observed
    mine = {k: rmse(problem.field.values[vs], first_guess(k, vis, seen, problem.splits["train"],
                                                          range(vs.start, vs.stop)), problem.scored("valid"))
            for k in ("climatology", "anomaly_interpolation", "time_interpolation")}
    for k, v in mine.items():
        assert cfg["first_guess_scores"][k] == pytest.approx(v, rel=1e-9)
    assert cfg["first_guess_chosen"] == min(cfg["first_guess_scores"], key=cfg["first_guess_scores"].get)
    assert cfg["first_guess_scores"]["climatology"] > cfg["first_guess_scores"][cfg["first_guess_chosen"]]
    res = tmp_path / "res"
    assert runs.run_cli(test_pconv.main, ["--checkpoints", str(run), "--results_folder", str(res)]) == 0
    m = json.loads(next(res.glob("*/metrics.json")).read_text())
    assert m["metrics"]["overall"]["rmse"] <= 1.02 * min(b["overall"]["rmse"] for b in m["baselines"].values())


def test_left_out_guess_reads_every_seen_cell_from_its_frames_other_folds(problem):
    """A seen cell's left-out guess is the guess of its frame without its fold (brute force, one first_guess
    per fold), never its own value; an unseen cell's is the usual guess."""
    view = ModelView(problem, "anomaly_interpolation")
    frames = np.arange(problem.field.shape[0])
    out = view.guess_left_out(frames, folds=4, seed=1)
    fold = np.random.default_rng(1).integers(0, 4, size=view.seen.shape)
    want = view.guess(frames).astype(np.float64)
    for k in range(4):
        held = view.seen & (fold == k)
        g = first_guess("anomaly_interpolation", view.visible, view.seen & ~held, view.train)
        want = np.where(held, view.normalizer.normalize(g), want)
    np.testing.assert_allclose(out, want, atol=1e-5)
    seen_err = np.abs(out - view.values)[view.seen]
    assert seen_err.mean() > 0.05                                  # a real prediction, not the value itself
    assert np.abs(view.guess(frames) - view.values)[view.seen].max() < 1e-5   # the usual guess: the value
    np.testing.assert_array_equal(out[~view.seen], view.guess(frames)[~view.seen])
    np.testing.assert_array_equal(view.guess_left_out(frames, folds=1), view.guess(frames))
