"""The cloud-gap GAN: a short CPU training on multispectral chips (6 bands, clouds at date 2) beats linear
interpolation in time between dates 1 and 3; create_stats gives finite numbers for every masked-date choice
and its rows match an independent recomputation (numpy, scikit-image SSIM); results do not depend on the
batch size at test time (eval mode); the networks' shapes and losses."""
import csv
import json

import numpy as np
import pytest
import torch
from scores import check_rmse
from skimage.metrics import structural_similarity
from sweep_checks import pdf_pages

from data_generation.make_multispectral import make_multispectral
from gan_gapfill import create_stats, plot_stats, plot_training, test_gan, train_gan, visualize_gan
from gan_gapfill.gan_data import positions
from gan_gapfill.gan_eval import load_trained
from gan_gapfill.gan_model import GAN, Discriminator, Generator, hinge_d, hinge_g
from gan_gapfill.visualize_gan import rgb_bands
from gapfill import lightning, runs
from gapfill.evaluate import load_run
from gapfill.floor import time_interpolation
from gapfill.problem import build_problem


def test_time_interpolation_is_linear_between_seen_dates_and_nearest_outside():
    v = np.arange(4, dtype=float)[:, None, None, None] * np.ones((4, 1, 2, 2)) * 10    # value = 10 x date
    a = v.copy()
    a[1:3, 0, 0, 0] = np.nan                                     # cell (0, 0) hidden at dates 2 and 3
    a[3, 0, 1, 1] = np.nan                                       # cell (1, 1) hidden at the last date
    g = time_interpolation(a)
    assert np.allclose(g[1:3, 0, 0, 0], [10, 20]) and g[3, 0, 1, 1] == 20
    assert g[0, 0, 1, 0] == 0 and g[1, 0, 1, 0] == 10                  # seen cells keep their values
    other = time_interpolation(a, own=False)                           # from the other dates only
    assert other[1, 0, 1, 0] == 10 and other[0, 0, 1, 0] == 10 and other[3, 0, 1, 0] == 20
    a[:, 0, 0, 1] = np.nan                                       # never seen: NaN (the caller's fallback)
    assert np.isnan(time_interpolation(a)[:, 0, 0, 1]).all()
    assert np.isnan(time_interpolation(a, reach=1)[1, 0, 0, 0]) is np.False_    # date 1 is one away
    assert positions(None, 3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)] and positions([1, 3], 3) == [(0, 2)]


@pytest.mark.parametrize("kind", ["global", "unet"])
def test_networks_shapes_and_zero_start(kind):
    G = Generator(2 * 18 + 3, 18, cap=4, n_res_blocks=2, skip=kind == "unet")
    x = torch.randn(2, 39, 32, 48)
    assert torch.equal(G(x), torch.zeros(2, 18, 32, 48))          # starts at the first guess
    # epoch 0 is validated in eval mode, where spectral norm runs no power iteration: settled at build, each
    # layer's effective weight has a largest singular value of 1 (not a division by a random small sigma)
    gan = GAN(bands=6, model_cap=16, n_res_blocks=2, generator=kind).eval()
    from torch.nn.utils.spectral_norm import SpectralNorm
    hooks = [(m, h) for m in gan.G.modules() for h in m._forward_pre_hooks.values() if isinstance(h, SpectralNorm)]
    assert len(hooks) > 10
    for m, h in hooks:
        w = h.compute_weight(m, do_power_iteration=False).detach()          # what eval mode uses
        w = w.transpose(0, 1) if h.dim == 1 else w
        top = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
        assert abs(float(top) - 1) < 0.05, (m, float(top))
    D = Discriminator(39 + 18, cap=8, n_scales=2)
    outs = D(torch.randn(2, 57, 32, 48))
    assert [o.shape[-2:] for o in outs] == [(4, 6), (2, 3)]
    cloud = torch.zeros(2, 1, 32, 48)
    cloud[0, 0, :8, :8] = 1                                       # one patch of the first chip only
    real, fake = [torch.full_like(o, 2.0) for o in outs], [torch.full_like(o, -2.0) for o in outs]
    assert float(hinge_d(real, fake, cloud)) == 0.0               # both beyond the margin
    assert float(hinge_d(fake, real, cloud)) == pytest.approx(6.0)
    assert float(hinge_g(real, cloud)) == pytest.approx(-2.0)


def train(d, extra) -> tuple:
    """A GAN run on a 32 x 32 multispectral field of 40 dates (low sensor noise: the dates' departures from
    linear interpolation in time are the signal, not the noise)."""
    make_multispectral(n_time=40, ny=32, nx=32, seed=0, noise=0.001).to_netcdf(d / "ms.nc")
    argv = ["--data_path", str(d / "ms.nc"), "--checkpoint_dir", str(d / "ck"), "--batch_size", "4", "--model_cap", "8",
            "--disc_cap", "8", "--n_res_blocks", "2", "--generator", "unet", "--mask_input", "--mask_position", "2",
            "--cloud_range", "0.2", "0.6", "--chip_size", "32", "--n_bands", "6", *extra]
    assert runs.run_cli(train_gan.main, argv) == 0
    return next((d / "ck").iterdir()), d


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train(tmp_path_factory.mktemp("gan"), ["--epochs", "2", "--training_length", "16", "--alpha", "50",
                                                   "--generator_lr", "1e-3", "--discriminator_lr", "1e-3"])


@pytest.mark.slow     # about 80 s a seed: 8 epochs of 64 steps
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_short_training_beats_linear_interpolation_in_time(tmp_path, seed):
    """The reference's chip protocol (dates 1 and 3 clear, clouds on date 2): the GAN on the space-time first
    guess (time background from dates 1 and 3, date 2's own clear cells for the departures) is at least 10%
    below linear interpolation in time, for every seed."""
    run, _ = train(tmp_path, ["--epochs", "8", "--training_length", "256", "--alpha", "50", "--generator_lr", "1e-3",
                              "--discriminator_lr", "1e-3", "--first_guess", "space_time", "--seed", str(seed)])
    gan, base = chip_rmse(run, tmp_path / "stats")
    assert gan < 0.9 * base, (gan, base)


def chip_rmse(run, out) -> tuple[float, float]:
    """(GAN, linear interpolation in time) RMSE on the cloud cells of date 2 of create_stats' test chips."""
    assert runs.run_cli(create_stats.main, ["--checkpoint_dir", str(run), "--out_dir", str(out), "--save_chips",
                                            "--device", "cpu"]) == 0
    z = np.load(out / "chips.npz")
    assert list(z["masked"]) == [1]                                        # date 2, the run's
    cloud = np.broadcast_to(z["cloud"][:, 1][:, None], z["truth"][:, 1].shape)
    truth, filled = z["truth"][:, 1], z["filled"][:, 1]                    # (N, B, P, P)
    interp = 0.5 * (z["truth"][:, 0] + z["truth"][:, 2])                   # independent of the code's guess
    return float(np.sqrt(np.mean((filled - truth)[cloud] ** 2))), float(np.sqrt(np.mean((interp - truth)[cloud] ** 2)))


def test_a_short_run_on_a_crop_beats_linear_interpolation_in_time(tmp_path):
    """The fast quality bar: the slow test's data and first guess at 2 epochs of 16 chips is at least 10%
    below linear interpolation in time on the chip protocol (what the network adds must not undo it)."""
    run, _ = train(tmp_path, ["--epochs", "2", "--training_length", "16", "--alpha", "50", "--generator_lr", "1e-3",
                              "--discriminator_lr", "1e-3", "--first_guess", "space_time"])
    gan, base = chip_rmse(run, tmp_path / "stats")
    assert gan < 0.9 * base, (gan, base)


def test_stats_are_finite_for_every_masked_date_and_match_a_recomputation(trained, tmp_path):
    run, _ = trained
    cfg = load_run(run)
    assert cfg["finished"]
    out = {}
    for mp in (["1"], ["2"], ["3"], ["1", "3"]):
        o = tmp_path / "-".join(mp)
        assert runs.run_cli(create_stats.main, ["--checkpoint_dir", str(run), "--mask_position", *mp, "--out_dir", str(o),
                                                "--save_chips", "--device", "cpu"]) == 0
        rows = list(csv.DictReader(open(o / "stats_per_image.csv")))
        bands = list(csv.DictReader(open(o / "stats_per_band.csv")))
        assert rows and len(bands) == 6 * len(rows)
        for r in rows + bands:
            assert all(np.isfinite(float(r[k])) for k in ("ssim", "mse", "mae", "rmse", "cloud_fraction"))
        assert rows[0]["masked_dates"] == " ".join(mp)
        out[tuple(mp)] = (o, rows, bands)
    # one per-image row and one per-band row of the date-2 stats, recomputed with numpy and scikit-image
    o, rows, bands = out[("2",)]
    z = np.load(o / "chips.npz")
    cloud = z["cloud"][:, 1]                                               # (N, P, P)
    truth, filled = z["truth"][:, 1], z["filled"][:, 1]                    # (N, B, P, P)
    i, b = 1, 3
    r = rows[i]
    c = cloud[i]
    err = (filled[i] - truth[i])[:, c]
    assert float(r["rmse"]) == pytest.approx(np.sqrt(np.mean(err ** 2)), rel=1e-9)
    assert float(r["mae"]) == pytest.approx(np.mean(np.abs(err)), rel=1e-9)
    assert float(r["cloud_fraction"]) == pytest.approx(c.mean(), rel=1e-12)
    rb = next(x for x in bands if int(x["chip"]) == int(r["chip"]) and x["band"] == "B05")
    t = truth[i, b].astype(np.float64)
    p = np.where(c, filled[i, b], t)
    _, smap = structural_similarity(t, p, data_range=t.max() - t.min(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    assert float(rb["ssim"]) == pytest.approx(smap[c].mean(), rel=1e-9)
    assert float(rb["mse"]) == pytest.approx(np.mean((filled[i, b] - t)[c] ** 2), rel=1e-9)
    ssims = []
    for bb in range(6):
        tt = truth[i, bb].astype(np.float64)
        _, sm = structural_similarity(tt, np.where(c, filled[i, bb], tt), data_range=tt.max() - tt.min(),
                                      gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
        ssims.append(sm[c].mean())
    assert float(r["ssim"]) == pytest.approx(np.mean(ssims), rel=1e-9)
    assert 0 < float(r["time_gap"]) <= 16 + 1e-9                          # the next date, 16 days away
    # the pictures and plots: an RGB composite from B04 B03 B02, one page per chip and masked date
    assert rgb_bands(["B02", "B03", "B04", "B05", "B07", "B08"]) == [2, 1, 0] and rgb_bands(["t", "u"]) is None
    pics = tmp_path / "pics"
    assert runs.run_cli(visualize_gan.main, ["--checkpoint_dir", str(run), "--mask_position", "1", "3", "--n_chips", "1",
                                             "--out_dir", str(pics), "--device", "cpu"]) == 0
    assert sorted(p.name for p in pics.glob("*.png")) == ["chip000_date1.png", "chip000_date3.png"]
    assert pdf_pages(pics / "chips.pdf") == 2
    assert runs.run_cli(plot_stats.main, ["--stats_dir", str(o), "--out", str(tmp_path / "s.pdf")]) == 0
    assert runs.run_cli(plot_training.main, ["--checkpoint_dir", str(run), "--out", str(tmp_path / "t.pdf")]) == 0
    assert pdf_pages(tmp_path / "s.pdf") == 2 and pdf_pages(tmp_path / "t.pdf") == 1


def test_results_do_not_depend_on_the_batch_size_at_test_time(trained, tmp_path):
    run, _ = trained
    cfg = load_run(run)
    problem = build_problem(cfg["args"]).for_model()
    module = load_trained(problem, cfg, run)
    frames = range(problem.splits["test"].start, problem.splits["test"].stop)
    a, _ = module.reconstruct(frames, batch_size=1)
    b, _ = module.reconstruct(frames, batch_size=5)
    assert np.allclose(a, b, atol=1e-5)
    lightning.load_module(module, run, "last")           # trained weights (best may be epoch 0: the first guess)
    module.train()                                                         # BatchNorm on batch statistics
    c, _ = module.reconstruct(frames, batch_size=1)
    d, _ = module.reconstruct(frames, batch_size=5)
    assert not np.allclose(c, d, atol=1e-5)                                # the check has teeth
    # and the common protocol: prediction file, metrics and PDF
    res = tmp_path / "res"
    assert runs.run_cli(test_gan.main, ["--checkpoints", str(run), "--results_folder", str(res),
                                        "--num_frames_test", "2"]) == 0
    m = json.loads(next(res.glob("*/metrics.json")).read_text())
    assert len(m["metrics"]["per_band"]) == 6
    check_rmse(m, next(res.glob("*/prediction.nc")), within=1.1)          # it starts at the floor's guess


def test_the_reference_commands_run_with_its_options(trained, tmp_path, capsys):
    """The reference README's create_stats and visualize commands (our script names, the data file as
    --dataroot); --split valid cuts the chips from the validation frames; the train command's --dataroot and
    --visualization; a folder as --dataroot is one clear error."""
    run, d = trained
    cfg = load_run(run)
    ref = ["--model_cap", "64", "--batch_size", "16", "--dataset", "gapfill", "--dataroot", str(d / "ms.nc"),
           "--mask_position", "2", "--cloud_range", "0.01", "1.0", "--local_rank", "0", "--checkpoint_dir", str(run)]
    capsys.readouterr()
    assert runs.run_cli(create_stats.main, [*ref, "--split", "valid", "--out_dir", str(tmp_path / "v"), "--save_chips"]) == 0
    assert "--model_cap 64: " in "".join(capsys.readouterr())             # the run's network (cap 8) is used
    problem = build_problem(cfg["args"])
    sl, P = problem.splits["valid"], int(cfg["chip_size"])
    rows = list(csv.DictReader(open(tmp_path / "v" / "stats_per_image.csv")))
    assert rows and all(sl.start <= int(r["start_frame"]) <= sl.stop - 3 for r in rows)
    z = np.load(tmp_path / "v" / "chips.npz")
    r = rows[-1]
    s, y0, x0 = int(r["start_frame"]), int(r["y0"]), int(r["x0"])
    np.testing.assert_array_equal(z["truth"][int(r["chip"])], problem.field.values[s:s + 3, :, y0:y0 + P, x0:x0 + P])
    pics = tmp_path / "pics"
    assert runs.run_cli(visualize_gan.main, [*ref, "--n_chips", "1", "--out_dir", str(pics)]) == 0
    assert [p.name for p in pics.glob("*.png")] == ["chip000_date2.png"]
    bad = [*ref[:7], str(d), *ref[8:]]                                     # the reference's folder of GeoTIFFs
    assert runs.run_cli(create_stats.main, [*bad, "--out_dir", str(tmp_path / "x")]) == 2
    assert "is a folder (the reference's GeoTIFF chips)" in (err := "".join(capsys.readouterr()))
    assert "data_generation.convert_geotiff --dataroot" in err
    args = train_gan.parse_args(["--epochs", "200", "--batch_size", "16", "--model_cap", "64", "--dataset", "gapfill",
                                 "--dataroot", str(d / "ms.nc"), "--mask_position", "2", "--visualization", "image",
                                 "--alpha", "0.2", "--local_rank", "0"])
    assert (args.data_path, args.max_epochs, args.visualization, args.local_rank) == (str(d / "ms.nc"), 200, "image", 0)
    assert runs.run_cli(train_gan.main, ["--dataroot", str(d), "--checkpoint_dir", str(tmp_path / "ck")]) == 2
    assert "is a folder" in "".join(capsys.readouterr()) and not (tmp_path / "ck").exists()
