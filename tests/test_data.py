"""gapfill.data: files from other projects open as they are; bad input gets one clear line."""
import numpy as np
import pytest
import xarray as xr

from gapfill.data import DataError, Normalizer, open_field, split_frames


def _write(path, **variables):
    xr.Dataset(variables).to_netcdf(path)
    return path


def test_var1_kelvin_time_lat_lon(tmp_path):
    rng = np.random.default_rng(0)
    v = (280 + rng.normal(size=(6, 4, 5))).astype("f4")
    ds = xr.Dataset({"var1": (("time", "lat", "lon"), v, {"units": "K"})},
                    coords={"time": np.arange(6.0), "lat": np.linspace(40, 43, 4), "lon": np.arange(5.0)})
    ds.to_netcdf(tmp_path / "a.nc")
    f = open_field(tmp_path / "a.nc")
    assert f.shape == (6, 1, 4, 5) and f.bands == ["var1"] and f.units == ["K"]
    np.testing.assert_array_equal(f.values[:, 0], v)
    np.testing.assert_allclose(f.y, np.linspace(40, 43, 4))


def test_air_temperature_latitude_longitude_order_and_extra_singleton(tmp_path):
    """dims in another order and a singleton height dim: transposed to (time, band, y, x)."""
    v = np.arange(2 * 3 * 4 * 1, dtype="f4").reshape(3, 4, 2, 1)          # (latitude, longitude, time, height)
    ds = xr.Dataset({"air_temperature": (("latitude", "longitude", "time", "height"), v),
                     "time_bnds": (("time", "bnds"), np.zeros((2, 2)))},
                    coords={"time": ("time", [0.0, 24.0], {"units": "hours since 2000-01-01", "calendar": "360_day"})})
    ds.to_netcdf(tmp_path / "b.nc")
    f = open_field(tmp_path / "b.nc")
    assert f.bands == ["air_temperature"] and f.shape == (2, 1, 3, 4)
    np.testing.assert_array_equal(f.values[1, 0], v[:, :, 1, 0])
    assert f.calendar == "360_day" and list(f.time_days) == [0.0, 1.0]   # hours -> days


def test_real_iris_file_opens_unchanged():
    import os

    import iris_sample_data
    path = os.path.join(os.path.dirname(iris_sample_data.__file__), "sample_data", "A1B_north_america.nc")
    f = open_field(path)
    assert f.shape == (240, 1, 37, 49) and f.bands == ["air_temperature"] and f.units == ["K"]
    assert 200 < np.nanmean(f.values) < 310
    assert f.time_days[1] == pytest.approx(360.0)                        # annual, 360-day calendar


def test_multiband_and_variable_choice(tmp_path):
    a, b = np.zeros((3, 2, 2), "f4"), np.ones((3, 2, 2), "f4")
    _write(tmp_path / "m.nc", red=(("time", "y", "x"), a), blue=(("time", "y", "x"), b))
    assert open_field(tmp_path / "m.nc").bands == ["red", "blue"]
    f = open_field(tmp_path / "m.nc", ["blue"])
    assert f.bands == ["blue"] and f.values.min() == 1


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("not_netcdf", "not a readable NetCDF file"),
    ("no_field_var", "no variable with a time dimension and two spatial dimensions"),
    ("unknown_variable", "unknown variable 'nope'"),
    ("all_nan", "NaN everywhere"),
])
def test_bad_input_gets_one_clear_line(tmp_path, case, message):
    path = tmp_path / "f.nc"
    variable = None
    if case == "not_netcdf":
        path.write_text("time,lat,lon\n1,2,3\n")
    elif case == "no_field_var":
        _write(path, series=(("time",), np.arange(4.0)), station=(("time", "station"), np.zeros((4, 3))))
    elif case == "unknown_variable":
        _write(path, t2m=(("time", "lat", "lon"), np.zeros((2, 3, 3))))
        variable = "nope"
    elif case == "all_nan":
        _write(path, t2m=(("time", "lat", "lon"), np.full((2, 3, 3), np.nan)))
    with pytest.raises(DataError) as err:
        open_field(path, variable)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_splits_by_fraction_and_by_count():
    s = split_frames(100)
    assert (s["train"], s["valid"], s["test"]) == (slice(0, 70), slice(70, 85), slice(85, 100))
    s = split_frames(100, num_frames_train=50, num_frames_valid=10, num_frames_test=10)
    assert (s["train"], s["valid"], s["test"]) == (slice(0, 50), slice(50, 60), slice(60, 70))
    assert split_frames(1)["test"] == slice(0, 1)                          # an image: all test


@pytest.mark.parametrize("kw, message", [
    ({"num_frames_train": 0}, "the train split has 0 frames"),
    ({"num_frames_train": 8, "num_frames_valid": 2}, "the test split has 0 frames"),
    ({"num_frames_train": 8, "num_frames_valid": 2, "num_frames_test": 5}, "has only 10"),
])
def test_split_errors(kw, message):
    with pytest.raises(DataError, match=message):
        split_frames(10, path="f.nc", **kw)


def test_normalizer_roundtrip_and_fit_on_valid_cells():
    rng = np.random.default_rng(1)
    x = np.stack([rng.normal(5, 2, (50, 6, 6)), rng.normal(-3, 0.5, (50, 6, 6))], axis=1)
    x[:, 0, 0, 0] = np.nan
    n = Normalizer.fit(x)
    ref0 = x[:, 0][np.isfinite(x[:, 0])]
    assert n.mean[0] == pytest.approx(ref0.mean()) and n.std[1] == pytest.approx(x[:, 1].std())
    z = n.normalize(x)
    assert np.nanmean(z[:, 1]) == pytest.approx(0, abs=1e-9) and np.nanstd(z[:, 1]) == pytest.approx(1)
    np.testing.assert_allclose(n.denormalize(z), x)
    np.testing.assert_allclose(n.denormalize_variance(np.ones_like(z))[:, 1], 0.25, rtol=0.05)
    assert Normalizer.from_dict(n.to_dict()).std.tolist() == n.std.tolist()


def test_frames_keep_the_grid_flags(tmp_path):
    lon = np.array([350.0, 355, 0, 5])
    xr.Dataset({"v": (("time", "lat", "lon"), np.arange(24, dtype="f4").reshape(2, 3, 4))},
               coords={"time": [0.0, 1.0], "lat": ("lat", [30.0, 20, 10], {"units": "degrees_north"}),
                       "lon": ("lon", lon, {"units": "degrees_east"})}).to_netcdf(tmp_path / "g.nc")
    f = open_field(tmp_path / "g.nc").frames(slice(1, 2))
    assert f.shape == (1, 1, 3, 4) and f.y_descending and f.y.tolist() == [10.0, 20, 30]
    assert f.x.tolist() == [350.0, 355, 360, 365] and f.x_file.tolist() == lon.tolist() and not f.x_periodic
    np.testing.assert_array_equal(f.values[0, 0], np.arange(12, 24).reshape(3, 4)[::-1])
