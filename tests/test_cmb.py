"""CMB patches (data_generation.make_cmb, CAMB + HEALPix on a small nside): the spectrum CAMB gives, the
patches' flat-sky spectrum against it, non-overlapping patches, reproducibility; the flat-sky estimator on
white noise; PConv trained and tested on the patches with point-source holes, the PDF's spectrum page."""
import math

import numpy as np
import pytest
import xarray as xr
from sweep_checks import pdf_pages

from data_generation import make_cmb
from gapfill.data import open_field
from gapfill.report.sky import flat_sky_cl, spectrum_figure
from pconv_inpainting import test_pconv, train_pconv

SMALL = ["--nside", "64", "--reso_arcmin", "60", "--ny", "32", "--nx", "32", "--n_time", "20", "--patches_per_sky", "10"]


@pytest.fixture(scope="module")
def patches(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmb") / "cmb.nc"
    make_cmb.main(["--out", str(out), *SMALL])
    return out


def test_camb_spectrum_has_the_first_acoustic_peak_in_micro_kelvin():
    """Planck 2018 LCDM: D_ell = ell (ell + 1) C_ell / 2 pi peaks near ell 220 at about 5,700 uK^2."""
    cl = make_cmb.camb_cl_tt(400)
    ell = np.arange(len(cl))
    dl = ell * (ell + 1) * cl / (2 * math.pi)
    assert cl[0] == cl[1] == 0 and 200 <= 100 + np.argmax(dl[100:400]) <= 240
    assert 5300 < dl[220] < 6200


def test_patches_follow_camb_do_not_overlap_and_repeat_with_the_seed(patches, tmp_path):
    ds = xr.open_dataset(patches)
    t = ds["temperature"].values.astype(np.float64)                   # (20, 32, 32) uK
    assert t.shape == (20, 32, 32) and ds["temperature"].attrs["units"] == "uK" and np.isfinite(t).all()
    assert list(ds["sky"].values) == [0] * 10 + [1] * 10
    field = open_field(patches)                                       # the usual reader takes it as it is
    assert field.shape == (20, 1, 32, 32) and field.units == ["uK"]
    # flat-sky spectrum of the patches against CAMB's at ell 20..70 (below the pixels' smoothing)
    ell, c = flat_sky_cl(t, 60.0)
    cl = ds["cl_tt"].values
    ratio = c[1:6] / cl[np.rint(ell[1:6]).astype(int)]
    assert 0.8 < ratio.mean() < 1.1, ratio
    # the patches of one sky lie at least a patch diagonal (45.3 degrees) apart: they never overlap
    lon, lat = np.radians(ds["centre_lon"].values[:10]), np.radians(ds["centre_lat"].values[:10])
    v = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    sep = np.degrees(np.arccos(np.clip(v @ v.T, -1, 1)))[np.triu_indices(10, 1)]
    assert sep.min() >= math.hypot(32, 32) - 1e-6
    again = make_cmb.make_cmb(20, 32, 32, 64, 60.0, 0, 10)["temperature"].values
    other = make_cmb.make_cmb(10, 32, 32, 64, 60.0, 1, 10)["temperature"].values
    np.testing.assert_array_equal(again, ds["temperature"].values)
    assert np.abs(other - again[:10]).mean() > 10.0


def test_flat_sky_cl_of_white_noise_is_its_variance_times_the_pixel_area():
    """White noise of std s on pixels of d radians has C_ell = s^2 d^2 at every ell."""
    w = np.random.default_rng(0).normal(0, 3.0, size=(50, 32, 32))
    ell, c = flat_sky_cl(w, 30.0)
    flat = 9.0 * math.radians(0.5) ** 2
    assert ell[0] == pytest.approx(2 * math.pi / (32 * math.radians(0.5)))
    assert np.mean(c) == pytest.approx(flat, rel=0.03) and np.all(np.abs(c / flat - 1) < 0.2)
    fig = spectrum_figure(w, w, np.full(100, flat), 30.0, "noise", "uK")
    assert len(fig.axes) == 2


def test_pconv_fills_point_source_holes_and_its_pdf_has_the_spectrum_page(patches, tmp_path, monkeypatch):
    from gapfill.report import sky
    drawn = []
    monkeypatch.setattr(sky, "spectrum_figure", lambda *a: drawn.append(a) or spectrum_figure(*a))
    args = ["--data_path", str(patches), "--mask_kind", "sources", "--mask_type", "dynamic", "--prob_masking", "0.1",
            "--context_frames", "0", "--base_filters", "8", "--max_iters", "4", "--steps_per_epoch", "2",
            "--patch_size", "32", "--log_level", "WARNING", "--checkpoint_dir", str(tmp_path / "ck")]
    train_pconv.main(args)
    run = next((tmp_path / "ck").iterdir())
    assert "sources-dynamic-p0.1" in run.name
    test_pconv.main(["--checkpoints", str(run), "--results_folder", str(tmp_path / "res"), "--log_level", "WARNING"])
    out = tmp_path / "res" / run.name
    pred = xr.open_dataset(out / "prediction.nc")
    hidden = ~pred["observed"].values.astype(bool)
    assert 0.1 <= hidden.mean() < 0.2                                  # point-source holes, ~10% per frame
    truth, mean = pred["truth"].values[:, 0], pred["mean"].values[:, 0]      # (T, Y, X): one band
    (t, recon, cl, pixel, band, unit), = drawn                          # the page's reconstruction: the
    np.testing.assert_array_equal(t, truth)                             # prediction on each frame's own holes
    np.testing.assert_allclose(recon, np.where(hidden, mean, truth), rtol=1e-6, atol=1e-4)   # file: float32
    assert (pixel, band, unit) == (60.0, "temperature", "uK") and len(cl) == 181
    pdf = out / f"{run.name}.pdf"
    import pymupdf
    text = pymupdf.open(pdf)[pdf_pages(pdf) - 1].get_text()
    assert "flat-sky power spectrum of 3 test patches" in text and "CAMB" in text
