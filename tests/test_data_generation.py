"""Synthetic generator statistics and the converters of package-shipped real data."""
import os

import numpy as np
import pytest
import xarray as xr

from data_generation import make_synthetic_field as msf
from data_generation import prepare_real_datasets as prd
from gapfill.data import open_field


def _lag1_time(d):
    """Mean over cells of corr(d_t, d_t+1), float64 numpy reference; d is (T, Y, X)."""
    a, b = d[:-1] - d[:-1].mean(0), d[1:] - d[1:].mean(0)
    return float(np.mean((a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))))


def _anomaly(seed_a, seed_b, **kw):
    """Difference of two seeds: the deterministic part (gradient, seasons) cancels exactly,
    leaving the difference of two independent anomaly fields with the same correlations."""
    fa = msf.make_field(seed=seed_a, **kw)["temperature"].values.astype(np.float64)
    fb = msf.make_field(seed=seed_b, **kw)["temperature"].values.astype(np.float64)
    return fa - fb


def test_deterministic_shape_and_plausible_values():
    a = msf.make_field(n_time=40, ny=20, nx=30, seed=3, extra_bands=2)
    b = msf.make_field(n_time=40, ny=20, nx=30, seed=3, extra_bands=2)
    c = msf.make_field(n_time=40, ny=20, nx=30, seed=4, extra_bands=2)
    assert list(a.data_vars) == ["temperature", "band1", "band2"]
    for v in a.data_vars:
        assert a[v].dims == ("time", "lat", "lon") and a[v].shape == (40, 20, 30)
        assert a[v].dtype == np.float32
        assert a[v].values.tobytes() == b[v].values.tobytes()          # bit-identical
        assert not np.array_equal(a[v].values, c[v].values)
    t = a["temperature"]
    assert t.attrs["units"] == "K" and t.attrs["standard_name"] == "air_temperature"
    assert a["lat"].attrs["units"] == "degrees_north" and a["lon"].attrs["units"] == "degrees_east"
    assert a["time"].attrs["units"] == "days since 2000-01-01"
    np.testing.assert_array_equal(a["time"].values, np.arange(40))
    assert 270 < float(t.mean()) < 300
    assert not np.isnan(t.values).any()


def test_default_mean_and_seasonal_cycle():
    t = msf.make_field()["temperature"].values.astype(np.float64)     # (365, 64, 64)
    assert t.shape == (365, 64, 64)
    assert 280 < t.mean() < 290
    dm = t.mean(axis=(1, 2))
    winter, summer = dm[:31].mean(), dm[181:212].mean()               # January vs July
    assert 10 < summer - winter < 22, (winter, summer)                # 2 x ~8 K amplitude
    # colder north: annual means differ by ~0.5 K/degree * 30 degrees = 15 K between the edge rows
    south, north = t[:, 0], t[:, -1]                                  # (365, 64) at 30 N and 60 N
    assert 12 < south.mean() - north.mean() < 18
    # larger seasonal cycle in the north (amplitude ~11 K vs ~5 K)
    north_range = north[181:212].mean() - north[:31].mean()
    south_range = south[181:212].mean() - south[:31].mean()
    assert north_range > south_range + 6, (north_range, south_range)


def test_land_mask_share_and_constant_in_time():
    ds = msf.make_field(n_time=10, land=True, extra_bands=1)
    nan = np.isnan(ds["temperature"].values)
    assert 0.18 < nan.mean() < 0.22
    assert (nan == nan[0]).all()                                       # same cells at every time
    np.testing.assert_array_equal(np.isnan(ds["band1"].values), nan)
    other_seed = np.isnan(msf.make_field(n_time=2, land=True, seed=9)["temperature"].values[0])
    np.testing.assert_array_equal(other_seed, nan[0])                  # the land does not move with --seed
    assert not np.isnan(msf.make_field(n_time=10)["temperature"].values).any()


@pytest.mark.parametrize("time_scale", [2.0, 5.0])
def test_temporal_autocorrelation_matches_ar1(time_scale):
    # Over 6 seed pairs the estimate was within 0.02 of exp(-1/time_scale) (it is biased low by
    # ~(1 + 4 phi) / T = 0.01); the tolerance is twice that.
    r = _lag1_time(_anomaly(10, 11, time_scale=time_scale))
    assert abs(r - np.exp(-1 / time_scale)) < 0.04, (r, np.exp(-1 / time_scale))


def test_spatial_correlation_grows_with_length_scale():
    corr = {}
    for ls in (2.0, 8.0):
        d = _anomaly(0, 1, n_time=40, length_scale=ls)
        corr[ls] = np.corrcoef(d[:, :, :-1].ravel(), d[:, :, 1:].ravel())[0, 1]
    # squared-exponential correlation at one cell: exp(-1 / (2 l^2)) = 0.882 (l=2), 0.992 (l=8)
    assert abs(corr[2.0] - np.exp(-1 / 8)) < 0.02
    assert abs(corr[8.0] - np.exp(-1 / 128)) < 0.01
    assert corr[8.0] > corr[2.0] + 0.05


def test_extra_band_correlated_with_lagged_temperature():
    d = msf.make_field(n_time=200, extra_bands=1, noise=0.0, seed=5)
    t, b = d["temperature"].values.astype(np.float64), d["band1"].values.astype(np.float64)
    t = t - t.mean(axis=(1, 2), keepdims=True)                          # remove the domain-mean season
    t = t - t.mean(0)                                                  # and the mean map
    b = b - b.mean(0)
    same = np.corrcoef(t[1:-1].ravel(), b[1:-1].ravel())[0, 1]
    lagged = np.corrcoef(t[:-1].ravel(), b[1:].ravel())[0, 1]          # band1 at t vs temperature at t-1
    assert lagged > 0.5 and lagged > same


def test_cli_writes_file(tmp_path):
    out = msf.main(["--out", str(tmp_path / "s.nc"), "--n_time", "12", "--ny", "16", "--nx", "20",
                    "--land", "--extra_bands", "1", "--seed", "7"])
    f = open_field(out)
    assert f.values.shape == (12, 2, 16, 20)
    assert f.bands == ["temperature", "band1"] and f.units == ["K", "1"]
    assert f.y_name == "lat" and f.x_name == "lon"
    np.testing.assert_array_equal(f.time_days, np.arange(12.0))
    ref = msf.make_field(12, 16, 20, seed=7, land=True, extra_bands=1)
    np.testing.assert_array_equal(f.values[:, 0], ref["temperature"].values)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="ny"):
        msf.make_field(ny=1)
    with pytest.raises(ValueError, match="unknown dataset"):
        prd.prepare_one("nope", "/tmp")


# ---- real data shipped in packages ----

@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    paths = prd.prepare_all(out, image_size=64)
    assert [p.name for p in paths] == [f"{n}.nc" for n in prd.DATASETS]
    return out


def _source(name):
    package, filename, var, _ = prd.CLIMATE[name]
    with xr.open_dataset(prd.source_path(package, filename), decode_times=False) as ds:
        return ds[var].load(), ds["time"].load()


@pytest.mark.parametrize("name", ["A1B_north_america", "E1_north_america"])
def test_iris_samples_match_source(real_dir, name):
    src, src_time = _source(name)
    f = open_field(real_dir / f"{name}.nc")
    assert f.values.shape == (240, 1, 37, 49)
    assert f.bands == ["air_temperature"] and f.units == ["K"]
    assert (f.y_name, f.x_name) == ("latitude", "longitude")
    assert f.calendar == "360_day" and f.time_units == src_time.attrs["units"]
    np.testing.assert_array_equal(f.time, src_time.values)
    np.testing.assert_array_equal(f.values[:, 0], src.values)
    with xr.open_dataset(real_dir / f"{name}.nc") as ds:               # only the field and its coords
        assert list(ds.data_vars) == ["air_temperature"]
        assert set(ds.coords) == {"time", "latitude", "longitude"}
        assert type(ds.time.values[0]).__name__ == "Datetime360Day"     # decodes with its calendar


def test_sst_keeps_land_nan(real_dir):
    src, _ = _source("sst_ndjfm_anom")
    f = open_field(real_dir / "sst_ndjfm_anom.nc")
    assert f.values.shape == (50, 1, 18, 30)
    share = np.isnan(f.values).mean()
    assert share == np.isnan(src.values).mean() and 0.1 < share < 0.3   # source: 1/6 land
    np.testing.assert_array_equal(np.isnan(f.values[:, 0]), np.isnan(src.values))
    np.testing.assert_allclose(f.values[:, 0], src.values, rtol=1e-6, atol=1e-6)   # float64 -> float32


def test_hgt_pressure_squeezed(real_dir):
    src, _ = _source("hgt_djf")
    f = open_field(real_dir / "hgt_djf.nc")
    assert src.shape == (65, 1, 29, 49) and f.values.shape == (65, 1, 29, 49)
    assert f.bands == ["z"] and f.units == ["m"]
    with xr.open_dataset(real_dir / "hgt_djf.nc") as ds:
        assert ds["z"].dims == ("time", "latitude", "longitude")
    np.testing.assert_allclose(f.values[:, 0], src.values[:, 0], rtol=1e-6)
    assert 4500 < np.nanmean(f.values) < 6000                          # 500 hPa height in metres


def test_images(real_dir):
    import skimage.data
    f = open_field(real_dir / "astronaut.nc")
    assert f.values.shape == (1, 3, 64, 64) and f.bands == ["red", "green", "blue"]
    assert f.units == ["1"] * 3 and (f.y_name, f.x_name) == ("y", "x")
    assert 0.0 <= np.nanmin(f.values) and np.nanmax(f.values) <= 1.0
    # INTER_AREA by 8 is the mean of each 8x8 block
    ref = skimage.data.astronaut()[..., 0].astype(np.float64).reshape(64, 8, 64, 8).mean((1, 3)) / 255
    np.testing.assert_allclose(f.values[0, 0], ref, atol=1e-5)
    g = open_field(real_dir / "camera.nc")
    assert g.values.shape == (1, 1, 64, 64) and g.bands == ["gray"]
    c = open_field(real_dir / "coffee.nc")
    assert c.values.shape == (1, 3, round(400 * 64 / 600), 64)       # 400x600 source, aspect kept


def test_full_size_image_and_only(tmp_path):
    import skimage.data
    paths = prd.main(["--out_dir", str(tmp_path), "--only", "camera", "--image_size", "0"])
    assert [p.name for p in paths] == ["camera.nc"] and os.listdir(tmp_path) == ["camera.nc"]
    f = open_field(paths[0])
    np.testing.assert_array_equal(f.values[0, 0], skimage.data.camera().astype(np.float32) / 255)
