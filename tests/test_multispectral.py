"""The HLS-like multispectral generator: determinism, plausible reflectances, real seasonal change, band
correlation, haze, and the file as the core reads it."""
import numpy as np
import pytest

from data_generation import make_multispectral as mm
from gapfill.data import open_field

NOISE = 0.005
WATER, FOREST, CROP, SOIL, URBAN = range(5)      # indices into mm.CLASSES


@pytest.fixture(scope="module")
def clean():
    """The defaults (24 dates, 64 x 64, 5 classes, seed 0): 0.1 s."""
    return mm.make_multispectral(seed=0, noise=NOISE)


def _cube(ds) -> np.ndarray:
    """(T, B, Y, X) float64 in the order of mm.BANDS."""
    return np.stack([ds[b].values for b in mm.BANDS], axis=1).astype(np.float64)


def test_same_seed_identical_other_seed_differs(clean):
    again = mm.make_multispectral(seed=0, noise=NOISE)
    other = mm.make_multispectral(seed=1, noise=NOISE)
    assert list(clean.data_vars) == list(mm.BANDS)
    for b in mm.BANDS:
        assert clean[b].dims == ("time", "y", "x") and clean[b].shape == (24, 64, 64)
        assert clean[b].dtype == np.float32
        assert clean[b].values.tobytes() == again[b].values.tobytes()          # bit-identical
        assert not np.array_equal(clean[b].values, other[b].values)
    assert not np.array_equal(clean["surface_class"].values, other["surface_class"].values)


def test_cf_attributes(clean):
    assert clean["time"].attrs["units"] == "days since 2020-01-01" and clean["time"].attrs["axis"] == "T"
    assert np.array_equal(clean["time"].values, 16.0 * np.arange(24))
    for ax in ("y", "x"):
        c = clean[ax]
        assert c.attrs["units"] == "m" and c.attrs["axis"] == ax.upper()
        assert c.attrs["standard_name"] == f"projection_{ax}_coordinate"
        assert np.allclose(np.diff(c.values), 30.0)
    for b, colour, nm in zip(mm.BANDS, ("blue", "green", "red", "red edge", "SWIR 2", "NIR"),
                             (490, 560, 665, 705, 2190, 842), strict=True):
        assert clean[b].attrs["units"] == "1" and colour in clean[b].attrs["long_name"]
        assert clean[b].attrs["wavelength"] == nm


def test_plausible_reflectances(clean):
    a = _cube(clean)                                                   # (T, B, Y, X)
    cls = clean["surface_class"].values                                # (Y, X)
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
    assert a.max() <= 0.6                                              # surface reflectance, not clouds
    for k in range(5):
        assert 0.1 < (cls == k).mean() < 0.3                           # every class present, ~1/5 each
    nir, red = a[:, 5], a[:, 2]                                        # (T, Y, X)
    assert nir[:, cls == WATER].max() < 0.08 and nir[:, cls == WATER].mean() < 0.05     # water dark in NIR
    veg = (cls == FOREST) | (cls == CROP)
    peak = np.argmax(nir, axis=0)[None]                                # (1, Y, X) each pixel's peak date
    ndiff = (np.take_along_axis(nir, peak, 0) - np.take_along_axis(red, peak, 0))[0]
    assert ndiff[veg].min() > 0.15                                     # NIR >> red at peak season
    assert nir[:, veg].max() <= 0.6 and nir[:, veg].max() > 0.35


def test_seasonal_change_is_not_linear_in_time(clean):
    a = _cube(clean)
    cls = clean["surface_class"].values
    resid = a[1:-1, 5] - 0.5 * (a[:-2, 5] + a[2:, 5])                  # (T-2, Y, X) NIR, middle vs interpolation
    veg = (cls == FOREST) | (cls == CROP)
    static = (cls == WATER) | (cls == URBAN)
    rms_veg = float(np.sqrt(np.mean(resid[:, veg] ** 2)))              # 0.023 measured
    rms_static = float(np.sqrt(np.mean(resid[:, static] ** 2)))        # 0.007: noise (1.22 x 0.005) and g_t
    assert rms_veg > 3 * NOISE and rms_veg > 2.5 * rms_static
    # crops: peak dates differ between parcels, so change is not the same everywhere
    assert len(np.unique(np.argmax(a[:, 5][:, cls == CROP], axis=0))) >= 4


def test_blue_green_correlated(clean):
    a = _cube(clean)
    assert np.corrcoef(a[:, 0].ravel(), a[:, 1].ravel())[0, 1] > 0.8   # 0.93 measured
    veg = np.isin(clean["surface_class"].values, (FOREST, CROP))
    assert np.corrcoef(a[:, 2][:, veg].ravel(), a[:, 5][:, veg].ravel())[0, 1] < -0.3   # red falls, NIR rises


def test_haze_strongest_in_blue(clean):
    hazy = mm.make_multispectral(seed=0, noise=NOISE, haze=True)
    gain = {b: float(hazy[b].mean() - clean[b].mean()) for b in mm.BANDS}
    assert gain["B02"] > 0.005 and gain["B02"] > gain["B03"] > gain["B04"] > gain["B08"] > gain["B07"]
    assert gain["B02"] > 10 * abs(gain["B07"])


def test_cli_file_opens_as_field(tmp_path):
    out = tmp_path / "ms.nc"
    mm.main(["--out", str(out), "--n_time", "6", "--ny", "16", "--nx", "20", "--n_classes", "3", "--seed", "2"])
    f = open_field(out)
    assert f.bands == list(mm.BANDS) and f.shape == (6, 6, 16, 20)
    assert f.units == ["1"] * 6 and f.time_units == "days since 2020-01-01"
    assert np.isfinite(f.values).all()
    ds = mm.make_multispectral(n_time=6, ny=16, nx=20, n_classes=3, seed=2)
    assert np.array_equal(f.values, _cube(ds).astype(np.float32))
    with pytest.raises(SystemExit):
        mm.main(["--out", str(out), "--n_classes", "6"])
