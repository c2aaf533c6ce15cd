"""Partial-convolution UNet: the layer against a brute-force loop and a short training on both Keras
backends, a stored short-training number, the UNet's shape rules, the VGG loss terms from a local weights
file, stage 2, the quality bar on the default field, the analyses pages and an RGB photograph."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scores import check_rmse
from sweep_checks import pdf_pages

from data_generation.make_synthetic_field import make_field
from gapfill import evaluate, identity
from gapfill.metrics import rmse
from gapfill.problem import build_problem
from pconv_inpainting import keras, test_pconv, train_pconv
from pconv_inpainting.pconv_data import channels
from pconv_inpainting.pconv_model import build_unet, make_loss, unet_depth, vgg_features

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--max_iters", "4", "--steps_per_epoch", "2", "--batch_size", "2", "--base_filters", "8",
         "--log_level", "WARNING"]


@pytest.mark.parametrize("backend", ["torch", pytest.param("tensorflow", marks=pytest.mark.slow)])  # TF: bench_pconv in CI
def test_layer_matches_brute_force_and_a_short_training_runs(backend, tmp_path):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run([sys.executable, str(ROOT / "tests" / "helpers" / "pconv_backend_check.py"), str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["backend"] == backend
    assert out["layer_rel_error"] < 1e-5
    assert len(out["losses"]) == 2 and all(np.isfinite(out["losses"]))
    assert np.isfinite(out["rmse"]) and np.isfinite(out["crps"])               # mean and variance heads


def test_unet_depth_and_shapes():
    assert unet_depth(128) == 7 and unet_depth(512) == 8 and unet_depth(64) == 6
    model = build_unet(bands=3, patch_size=32, context_frames=1, predict_variance=True, base_filters=8)
    assert channels(3, 1) == 3 * 3 + 3 + 1                                   # residuals x 3 frames, guess, distance
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 13)).astype("float32")
    m = np.ones_like(x)
    out = keras.ops.convert_to_numpy(model([x, m]))
    assert out.shape == (2, 32, 32, 6) and not out.any()                     # the output layer starts at zero
    assert "enc_bn_0" not in [layer.name for layer in model.layers]          # no BatchNorm on the first layer
    assert sum(layer.name.startswith("enc_pconv") for layer in model.layers) == 5


def test_paper_loss_and_nearest_upsampling_of_the_original_network():
    """--loss paper against a float64 numpy loss of Liu et al.'s terms (L1 valid x1, hole x6 per cell of the
    image; total variation x0.1 of the composite over neighbour pairs in the hole grown by one cell);
    --upsampling nearest: the same network with nearest-neighbour decoder upsampling, starting at zero."""
    from scipy.ndimage import maximum_filter
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(2, 12, 12, 1))
    hole = (rng.random(truth.shape) < 0.3).astype(float)
    known = np.ones_like(hole)
    known[:, :2, :2] = 0                                                   # outside the data
    guess = rng.normal(size=truth.shape)
    out = truth + 0.5 * rng.normal(size=truth.shape)
    h = hole * known
    comp = guess + np.where(h > 0, out, truth)
    grown = maximum_filter(h, size=(1, 3, 3, 1), mode="constant")
    px, py = grown[:, :, 1:] * grown[:, :, :-1], grown[:, 1:] * grown[:, :-1]
    tv = (np.sum(px * np.abs(np.diff(comp, axis=2))) / px.sum() + np.sum(py * np.abs(np.diff(comp, axis=1))) / py.sum())
    err = np.abs(out - truth)
    want = np.sum((1 - h) * known * err) / err.size + 6 * np.sum(h * err) / err.size + 0.1 * tv
    y_true = np.concatenate([truth, hole, known, guess], axis=-1).astype("float32")
    t = keras.ops.convert_to_tensor
    got = float(keras.ops.convert_to_numpy(make_loss(1, kind="paper")(t(y_true), t(out.astype("float32")))))
    assert got == pytest.approx(want, rel=1e-5)
    scaled = float(keras.ops.convert_to_numpy(make_loss(1, scale=[2.0], kind="paper")(t(y_true), t(out.astype("float32")))))
    assert scaled == pytest.approx(2 * want, rel=1e-5)                       # L1 in physical units: x std
    nearest = build_unet(bands=1, patch_size=16, base_filters=4, upsampling="nearest")
    bilinear = build_unet(bands=1, patch_size=16, base_filters=4)
    ups = [layer.get_config()["interpolation"] for layer in nearest.layers if layer.name.startswith("dec_up_")]
    assert ups and set(ups) == {"nearest"} and nearest.count_params() == bilinear.count_params()
    x = rng.normal(size=(1, 16, 16, 3)).astype("float32")
    assert not keras.ops.convert_to_numpy(nearest([x, np.ones_like(x)])).any()
    args = train_pconv.parse_args(["--data_path", "f.nc", "--loss", "paper", "--upsampling", "nearest"])
    assert (args.loss, args.upsampling) == ("paper", "nearest")
    assert "_losspaper_upnearest_" in identity.make_run_name("pconv", "f", train_pconv.name_parts(args))


def test_vgg_terms_load_from_a_local_weights_file(tmp_path, caplog):
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    vgg.save_weights(tmp_path / "vgg16.weights.h5")
    feats = vgg_features(str(tmp_path / "vgg16.weights.h5"))
    w = keras.ops.convert_to_numpy(feats.get_layer("block1_conv1").kernel)
    np.testing.assert_array_equal(w, keras.ops.convert_to_numpy(vgg.get_layer("block1_conv1").kernel))
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(2, 16, 16, 1)).astype("float32")
    hole = (rng.random((2, 16, 16, 1)) < 0.3).astype("float32")
    guess = rng.normal(size=truth.shape).astype("float32")
    y_true = np.concatenate([truth, hole, np.ones_like(hole), guess], axis=-1)
    y_pred = truth + 0.5 * rng.normal(size=truth.shape).astype("float32")
    t = keras.ops.convert_to_tensor
    plain = float(keras.ops.convert_to_numpy(make_loss(1)(t(y_true), t(y_pred))))
    full = float(keras.ops.convert_to_numpy(make_loss(1, feats)(t(y_true), t(y_pred))))
    assert np.isfinite(full) and full > plain                             # perceptual and style terms add
    mse = float(np.sum(hole * (y_pred - truth) ** 2) / hole.sum())           # hidden cells only
    assert plain == pytest.approx(mse, rel=1e-5)
    scaled = float(keras.ops.convert_to_numpy(make_loss(1, scale=[2.0])(t(y_true), t(y_pred))))
    assert scaled == pytest.approx(4 * mse, rel=1e-5)                        # physical units: x std**2
    assert vgg_features(None) is None


# slow (about 20 s): the fast suite's quality check is the stored regression below (1.60 from climatology's 5.10)
@pytest.mark.slow
def test_quality_bar_on_the_default_field_with_shapes_masks(tmp_path):
    """32 x 32 crop of the default field, shapes masks (30%): hole RMSE 30% or more below climatology."""
    make_field().isel(lat=slice(16, 48), lon=slice(16, 48)).to_netcdf(tmp_path / "crop.nc")
    train_pconv.main(["--data_path", str(tmp_path / "crop.nc"), "--max_iters", "150", "--steps_per_epoch", "50",
                      "--batch_size", "8", "--base_filters", "16", "--lr", "1e-3", "--checkpoint_dir",
                      str(tmp_path / "ck"), "--log_level", "WARNING"])
    run = next((tmp_path / "ck").iterdir())
    cfg = json.loads((run / "config.json").read_text())
    problem = build_problem(cfg["args"], {"num_frames_test": 20})
    mean, _ = test_pconv.predict(problem.for_model(), cfg, run, "cpu")
    sl, scored = problem.splits["test"], problem.scored("test")
    clim = np.nanmean(problem.field.values[problem.splits["train"]], axis=0)
    truth = problem.field.values[sl]
    model_rmse = rmse(truth, mean, scored)
    clim_rmse = rmse(truth, np.broadcast_to(clim, truth.shape), scored)
    assert model_rmse < 0.7 * clim_rmse, (model_rmse, clim_rmse)


# Stored from the torch backend on 2026-12-05 (2-core CPU; the run is deterministic there). Seeds 0, 1, 2
# gave best validation RMSE 1.60, 2.29, 2.08 from climatology's 5.10, 5.26, 5.22: a speed change that keeps
# the numerics keeps 1.5996; one that breaks training lands far from it.
REGRESSION = {"epoch0": 5.102879515765005, "best": 1.5996077776766664}


def test_short_training_on_a_crop_gives_the_stored_validation_rmse(tmp_path):
    """60 steps of a small UNet from climatology on a 120 x 32 x 32 crop of the default field (shapes masks)."""
    if keras.backend.backend() != "torch":
        pytest.skip("the stored numbers are the torch backend's")
    make_field().isel(time=slice(0, 120), lat=slice(16, 48), lon=slice(16, 48)).to_netcdf(tmp_path / "crop.nc")
    train_pconv.main(["--data_path", str(tmp_path / "crop.nc"), "--max_iters", "60", "--steps_per_epoch", "30",
                      "--batch_size", "4", "--base_filters", "8", "--lr", "1e-3", "--seed", "0", "--first_guess",
                      "climatology", "--checkpoint_dir", str(tmp_path / "ck"), "--log_level", "WARNING"])
    run = next((tmp_path / "ck").iterdir())
    valid = {int(r["step"]): float(r["valid_rmse"]) for r in csv.DictReader(open(run / "train_log.csv"))}
    assert sorted(valid) == [0, 1, 2]
    assert valid[0] == pytest.approx(REGRESSION["epoch0"], rel=1e-5)      # the guess: no training in it
    assert min(valid.values()) == pytest.approx(REGRESSION["best"], rel=0.05)


def test_stage_two_freezes_encoder_batchnorm_and_the_pdf_has_the_analyses(tmp_path):
    make_field(n_time=24, ny=32, nx=32, seed=1).to_netcdf(tmp_path / "f.nc")
    common = ["--data_path", str(tmp_path / "f.nc"), "--num_frames_train", "16", "--num_frames_valid", "4",
              "--checkpoint_dir", str(tmp_path / "ck")] + SMALL
    train_pconv.main(common)
    stage1 = next((tmp_path / "ck").iterdir())
    train_pconv.main(common + ["--stage", "2", "--init_from", str(stage1), "--analysis_every", "1"])
    stage2 = next(p for p in (tmp_path / "ck").iterdir() if "stage2" in p.name)
    # --analysis_every (CoMBInE's statistics): |difference| mean and std make up the logged validation RMSE,
    # and so do the per-frame RMSEs weighted by their hidden cells
    with open(stage2 / "analysis.csv") as fh:
        stats = list(csv.DictReader(fh))
    with open(stage2 / "analysis_frames.csv") as fh:
        per_frame = list(csv.DictReader(fh))
    with open(stage2 / "train_log.csv") as fh:
        logged = {r["step"]: float(r["valid_rmse"]) for r in csv.DictReader(fh)}       # step: the epoch here
    assert [r["epoch"] for r in stats] == list(logged) and len(stats) >= 2 and len(per_frame) == 4 * len(stats)
    for r in stats:
        v = logged[r["epoch"]]
        assert float(r["abs_mean"]) ** 2 + float(r["abs_std"]) ** 2 == pytest.approx(v ** 2, rel=1e-9)
        rows = [x for x in per_frame if x["epoch"] == r["epoch"]]
        n, e = (np.array([float(x[k]) for x in rows]) for k in ("cells", "rmse"))
        assert np.sqrt(np.sum(n * e ** 2) / n.sum()) == pytest.approx(v, rel=1e-9)
        assert all(0 < float(x["share"]) < 1 for x in rows) and 0 < float(r["pct_difference"]) < 100
    a = keras.models.load_model(stage1 / "best.keras", compile=False)
    b = keras.models.load_model(stage2 / "best.keras", compile=False)
    for name in [layer.name for layer in a.layers if layer.name.startswith("enc_bn_")]:
        for wa, wb in zip(a.get_layer(name).get_weights(), b.get_layer(name).get_weights(), strict=False):
            np.testing.assert_array_equal(wa, wb)                          # statistics, scale and shift kept
    moved = [not np.array_equal(wa, wb) for wa, wb in zip(a.get_layer("dec_pconv_out").get_weights(),
                                                           b.get_layer("dec_pconv_out").get_weights(), strict=False)]
    assert any(moved)                                                      # the rest trained on
    rec = evaluate.test_main("pconv", test_pconv.predict, ["--checkpoints", str(stage2), "--results_folder",
                               str(tmp_path / "res"), "--num_frames_test", "2"], analyses=test_pconv.analyses)[0]
    assert pdf_pages(tmp_path / "res" / rec["run_name"] / f"{rec['run_name']}.pdf") == 2 + 1 + 4   # + statistics


def test_rgb_photograph_single_frame(tmp_path):
    """The astronaut at 64 px, three bands, one frame: trained on its own observed pixels."""
    from data_generation.prepare_real_datasets import convert_image
    convert_image("astronaut", 64).to_netcdf(tmp_path / "astronaut.nc")
    train_pconv.main(["--data_path", str(tmp_path / "astronaut.nc"), "--checkpoint_dir", str(tmp_path / "ck"),
                      "--prob_masking", "0.2"] + SMALL)
    run = next((tmp_path / "ck").iterdir())
    rec = evaluate.test_main("pconv", test_pconv.predict, ["--checkpoints", str(run), "--results_folder",
                               str(tmp_path / "res")])[0]
    assert rec["bands"] == ["red", "green", "blue"]
    check_rmse(rec, tmp_path / "res" / rec["run_name"] / "prediction.nc", within=1.1)   # from the floor's guess
    assert len(rec["metrics"]["per_band"]) == 3


def test_signal_after_an_epoch_saves_last_and_the_rerun_goes_on(tmp_path, monkeypatch):
    from gapfill import checkpoints, runs
    make_field(n_time=24, ny=32, nx=32, seed=1).to_netcdf(tmp_path / "f.nc")
    argv = ["--data_path", str(tmp_path / "f.nc"), "--num_frames_train", "16", "--num_frames_valid", "4",
            "--checkpoint_dir", str(tmp_path / "ck"), "--max_iters", "6", "--steps_per_epoch", "2",
            "--batch_size", "2", "--base_filters", "8"]
    real = train_pconv.Keeper.on_epoch_end

    def signal_after_first(self, epoch, logs=None):
        real(self, epoch, logs)
        if epoch == 0:
            self.run._preempt.requested = "SIGTERM"

    monkeypatch.setattr(train_pconv.Keeper, "on_epoch_end", signal_after_first)
    assert runs.run_cli(train_pconv.main, argv) == runs.EXIT_RESUME
    run = next((tmp_path / "ck").iterdir())
    first = checkpoints.load_checkpoint(run, "last")                      # after epoch 1
    assert json.loads(str(first["state"]))["epoch"] == 1
    monkeypatch.setattr(train_pconv.Keeper, "on_epoch_end", real)
    assert train_pconv.main(argv) == 0                                     # the requeued run
    epochs = [line.split(",")[0] for line in (run / "train_log.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3"]                                  # the first guess, then each epoch once
    assert runs.read_json(run / "config.json")["restarts"] == 1
    # the requeued run went on from the saved weights and optimizer state, on the same patches: it ends
    # with the weights of a run never interrupted (not those of a fresh start, nor of the first epoch again)
    ref_dir = tmp_path / "ck_ref"
    assert train_pconv.main([*argv[:argv.index("--checkpoint_dir")], "--checkpoint_dir", str(ref_dir),
                             *argv[argv.index("--checkpoint_dir") + 2:]]) == 0
    got, ref = (checkpoints.load_checkpoint(r, "last") for r in (run, next(ref_dir.iterdir())))
    weights = sorted(k for k in ref if k.startswith("w_"))
    assert len(weights) > 10 and set(weights) == {k for k in got if k.startswith("w_")}
    for k in weights:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-6, err_msg=k)
    assert max(float(np.abs(ref[k] - first[k]).max()) for k in weights) > 1e-3   # training moved them after epoch 1


def test_training_data_holds_no_hidden_validation_cell_and_an_image_trains_only_on_its_visible_pixels(tmp_path):
    from data_generation.prepare_real_datasets import convert_image
    from pconv_inpainting.pconv_data import Data, Patches
    make_field(n_time=24, ny=32, nx=32, seed=1).to_netcdf(tmp_path / "f.nc")
    args = vars(train_pconv.parse_args(["--data_path", str(tmp_path / "f.nc"), "--num_frames_train", "16",
                                        "--num_frames_valid", "4"]))
    problem = build_problem(args)
    data = Data(args, problem.for_model(), kind="anomaly_interpolation")   # what the train script gets
    vs, hidden = problem.splits["valid"], problem.scored("valid")
    assert hidden.sum() > 0 and not data.truth_known[vs][hidden].any()      # no hidden validation cell known
    assert np.all(data.values[vs][hidden] == 0)                             # nor any of their values
    assert data.truth_known[vs][~hidden].all()                              # the observed ones are

    convert_image("astronaut", 32).to_netcdf(tmp_path / "a.nc")
    args = vars(train_pconv.parse_args(["--data_path", str(tmp_path / "a.nc"), "--prob_masking", "0.4"]))
    problem = build_problem(args)
    data = Data(args, problem.for_model(), kind="anomaly_interpolation")
    batch = Patches(data, 4, 1, {"kind": "shapes", "mode": "dynamic", "prob_masking": 0.2}, 3, 0)[0][1]
    known = batch[..., 6:9].astype(bool)                                     # (N, P, P, 3): where the loss looks
    assert data.patch == 32 and np.array_equal(known[0, ..., 0], problem.observed[0])   # the whole image
    assert abs(known.mean() - 0.6) < 0.05                                    # its 60% visible pixels, no more


@pytest.mark.slow
def test_residual_unet_beats_interpolation_on_the_default_field(tmp_path):
    """The README's budget (1,200 steps, about 5 min on 2 cores): 90% random fixed, 20 test frames, hidden-cell
    RMSE at most 0.95 x interpolation's on the same cells (measured: 0.53 K against 0.76 K)."""
    make_field().to_netcdf(tmp_path / "default.nc")
    assert train_pconv.main(["--data_path", str(tmp_path / "default.nc"), "--mask_kind", "random", "--mask_type", "fixed",
                             "--prob_masking", "0.9", "--base_filters", "16", "--lr", "1e-3", "--patch_size", "64",
                             "--steps_per_epoch", "100", "--max_iters", "1200", "--context_frames", "2",
                             "--first_guess", "interpolation", "--checkpoint_dir", str(tmp_path / "ck"),
                             "--log_level", "WARNING"]) == 0
    run = next((tmp_path / "ck").iterdir())
    rec = evaluate.test_main("pconv", test_pconv.predict, ["--checkpoints", str(run), "--results_folder",
                               str(tmp_path / "res"), "--num_frames_test", "20", "--log_level", "WARNING"])[0]
    ours, floor = rec["metrics"]["overall"]["rmse"], rec["baselines"]["interpolation"]["overall"]["rmse"]
    assert ours < 0.95 * floor, (ours, floor)
