"""CF files as other projects write them open as they are: axes found by CF attributes, calendars and
`months since`, sorted and unique times, descending latitude, level axes, packed integers, +/-inf, all-NaN
training bands, longitudes across the 0/360 seam and around the globe; and each trains and tests end to end."""
import json
import logging

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr
from scores import check_rmse

from additional_material import describe_dataset as dd
from baselines import test_baselines, train_baselines
from exact_gp_related import exact_gp_utils as U
from exact_gp_related import train_exact_gp
from gapfill import evaluate, runs
from gapfill.data import DataError, open_field
from gapfill.floor import interpolation, reconstruct_floor
from gapfill.problem import build_problem
from gapfill.report import run_report
from gapfill.times import decode_times
from variational_gp_related import train_variational_gp

T, Y, X = 24, 6, 8
SPLIT = ["--num_frames_train", "16", "--num_frames_valid", "4", "--prob_masking", "0.5"]
NOLEAP_MONTHS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def signal(t=T, y=Y, x=X, seed=0) -> np.ndarray:
    """(t, y, x) float32: smooth in time and space plus a little noise."""
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(y), np.arange(x), indexing="ij")
    noise = np.random.default_rng(seed).normal(size=(t, y, x))
    return (np.sin(tt / 4 + xx / 2) + np.cos(yy / 2) + 0.1 * noise).astype("f4")


def write_raw(path, var, dims, values, coords, var_attrs=None, dtype="f4", fill=None):
    """A file written with netCDF4 as servers write it: coordinate variables with their attributes only,
    the data written as given (packed integers stay packed)."""
    with netCDF4.Dataset(path, "w") as nc:
        for d, n in zip(dims, values.shape, strict=True):
            nc.createDimension(d, n)
        for name, (vals, attrs) in coords.items():
            v = nc.createVariable(name, "f8", (name,))
            v.setncatts(attrs)
            v[:] = vals
        v = nc.createVariable(var, dtype, dims, fill_value=fill)
        v.set_auto_maskandscale(False)
        v.setncatts(var_attrs or {})
        v[:] = values
    return path


def geo(lat=None, lon=None, time=None, time_attrs=None, tname="time", yname="lat", xname="lon"):
    """Coordinates {name: (values, attrs)} with CF units (degrees_north/east) and days since 2000-01-01."""
    return {tname: (np.arange(T, dtype=float) if time is None else time,
                    time_attrs or {"units": "days since 2000-01-01"}),
            yname: (np.linspace(40, 50, Y) if lat is None else lat, {"units": "degrees_north"}),
            xname: (4.0 * np.arange(X) if lon is None else lon, {"units": "degrees_east"})}


def fnoc(path):
    return write_raw(path, "UWND", ("TIME", "FNOCY", "FNOCX"), signal(),
                     geo(time=6.0 * np.arange(T), time_attrs={"units": "hour since 1980-01-14"},
                         tname="TIME", yname="FNOCY", xname="FNOCX"), {"units": "m/s"})


def coads(path, calendar, n=T, seed=0):
    return write_raw(path, "sst", ("time", "COADSY", "COADSX"), signal(t=n, seed=seed),
                     geo(time=np.arange(n, dtype=float), yname="COADSY", xname="COADSX",
                         time_attrs={"units": "months since 1958-01-01", "calendar": calendar}), {"units": "deg C"})


WRAPPED = np.array([344.0, 348, 352, 356, 0, 4, 8, 12])                  # regional, across 0 degrees E
UNWRAPPED = np.array([344.0, 348, 352, 356, 360, 364, 368, 372])
GLOBAL = 10.0 * np.arange(36)                                             # 0..350


# ------------------------------------------------------------------ axes by CF attributes and time units
def test_fnoc_axes_found_by_units_and_hours_since(tmp_path):
    f = open_field(fnoc(tmp_path / "fnoc.nc"))
    assert f.bands == ["UWND"] and f.shape == (T, 1, Y, X) and (f.y_name, f.x_name) == ("FNOCY", "FNOCX")
    np.testing.assert_array_equal(f.values[:, 0], signal())
    np.testing.assert_array_equal(f.time_days, 0.25 * np.arange(T))      # 6-hourly
    assert f.dates()[5].isoformat() == "1980-01-15T06:00:00"             # 30 hours after the reference


@pytest.mark.parametrize("attrs, days", [
    ({"axis": "T", "units": "hours since 2000-01-01 00:00:00"}, 0.125 * np.arange(T)),
    ({"standard_name": "time", "units": "hours since 2000-01-01 00:00:00"}, 0.125 * np.arange(T)),
    ({"axis": "T"}, np.arange(T, dtype=float)),                          # no units: the frame index
])
def test_timestep_named_anything_is_time_by_its_attributes(tmp_path, attrs, days):
    v = signal()
    path = write_raw(tmp_path / "t.nc", "t", ("lat", "timestep", "lon"), v.transpose(1, 0, 2),
                     {"timestep": (3.0 * np.arange(T), attrs)}, {"units": "K"})
    f = open_field(path)
    assert f.shape == (T, 1, Y, X) and f.bands == ["t"]
    np.testing.assert_array_equal(f.values[:, 0], v)
    np.testing.assert_allclose(f.time_days, days)


@pytest.mark.parametrize("calendar", ["360_day", "noleap"])
def test_months_since_in_real_days_and_described_with_dates(tmp_path, calendar, capsys):
    path = coads(tmp_path / "coads.nc", calendar, n=229)
    f = open_field(path)
    if calendar == "360_day":
        expected = 30.0 * np.arange(229)
    else:                                                                 # month lengths of a 365-day year
        expected = np.concatenate([[0], np.cumsum(np.tile(NOLEAP_MONTHS, 20)[:228])]).astype(float)
    np.testing.assert_array_equal(f.time_days, expected)
    assert f.time_days[-1] == (6840.0 if calendar == "360_day" else 19 * 365.0)
    d = dd.main([str(path), "--out", str(tmp_path / "d.png")])
    logged = "".join(capsys.readouterr())                                  # the CLI logs to stdout
    assert d["time_span_days"] == f.time_days[-1]
    assert d["time_start"] == "1958-01-01T00:00:00" and d["time_end"] == "1977-01-01T00:00:00"   # 228 months on
    assert "1958-01-01T00:00:00 .. 1977-01-01T00:00:00" in logged and f"span {f.time_days[-1]:.1f} days" in logged


def test_decode_times_fractional_months_and_year_zero():
    half = decode_times(np.array([0.5, 1.5]), "months since 1958-01-01", "noleap")
    assert [d.isoformat() for d in half] == ["1958-01-16T12:00:00", "1958-02-15T00:00:00"]   # 31/2, 31 + 28/2 days
    jan31 = decode_times(np.array([1.0]), "months since 1958-01-31", "noleap")
    assert jan31[0].isoformat() == "1958-02-28T00:00:00"                    # the day clamped to the month
    assert decode_times(np.array([24.0]), "hour since 0000-01-01 00:00:00", None)[0].isoformat().endswith("01-02T00:00:00")
    assert decode_times(np.array([1.0]), "frames", None) is None


# ------------------------------------------------------------------ time order
def test_unsorted_time_is_sorted_with_a_warning_and_duplicates_are_refused(tmp_path, caplog):
    v = signal()
    order = np.random.default_rng(1).permutation(T)
    path = write_raw(tmp_path / "u.nc", "v", ("time", "lat", "lon"), v[order], geo(time=order.astype(float)))
    with caplog.at_level(logging.WARNING):
        f = open_field(path)
    assert "not sorted" in caplog.text
    np.testing.assert_array_equal(f.time, np.arange(T))
    np.testing.assert_array_equal(f.values[:, 0], v)
    time = np.arange(T, dtype=float)
    time[7] = 2.0
    path = write_raw(tmp_path / "d.nc", "v", ("time", "lat", "lon"), v, geo(time=time))
    with pytest.raises(DataError) as err:
        open_field(path)
    assert str(path) in str(err.value) and "duplicate time 2000-01-03T00:00:00" in str(err.value)
    assert "frames 2 and 7" in str(err.value)


# ------------------------------------------------------------------ descending latitude
def test_descending_latitude_flipped_on_read_and_written_back_in_file_order(tmp_path):
    v = signal()
    lat = np.linspace(50, 40, Y)
    path = write_raw(tmp_path / "desc.nc", "v", ("time", "lat", "lon"), v, geo(lat=lat))
    f = open_field(path)
    assert f.y_descending and np.all(np.diff(f.y) > 0)
    np.testing.assert_array_equal(f.y, lat[::-1])
    np.testing.assert_array_equal(f.values[:, 0], v[:, ::-1])
    _, rec, pred = baseline(path, tmp_path)
    check_rmse(rec, pred)                                                   # scored on the file's own cells
    with opened(pred) as p:
        np.testing.assert_array_equal(p["y"].values, lat)                   # the file's own order
        np.testing.assert_array_equal(p["truth"].values[:, 0], v[20:24])
        obs = p["observed"].values.astype(bool)
        np.testing.assert_array_equal(p["mean"].values[:, 0][obs], v[20:24][obs])   # visible cells kept as seen
        pdf = run_report(tmp_path / "desc.pdf", p.load(), rec)                # the real report draws it (north up)
    assert pdf.stat().st_size > 10_000


# ------------------------------------------------------------------ level axes
def levels_file(path, dim="level", attrs=None):
    v = np.stack([signal(seed=k) + 10 * k for k in range(3)], axis=1)      # (T, 3, Y, X)
    coords = {**geo(), dim: (np.array([1000.0, 850.0, 500.0]), attrs or {"units": "hPa"})}
    return write_raw(path, "t", ("time", dim, "lat", "lon"), v, coords, {"units": "K"}), v


@pytest.mark.parametrize("dim, attrs", [("level", None), ("P", {"axis": "Z", "units": "hPa"})])
def test_levels_become_bands_or_one_is_chosen(tmp_path, dim, attrs):
    path, v = levels_file(tmp_path / "lev.nc", dim, attrs)
    f = open_field(path)
    assert f.bands == ["t@1000", "t@850", "t@500"] and f.units == ["K"] * 3
    np.testing.assert_array_equal(f.values, v)
    g = open_field(path, level=850)
    assert g.bands == ["t"] and g.shape == (T, 1, Y, X)
    np.testing.assert_array_equal(g.values[:, 0], v[:, 1])
    with pytest.raises(DataError, match=r"--level 700 is not a level of 't'; its '.+' levels are 1000, 850, 500"):
        open_field(path, level=700)
    args = {"data_path": str(path), "level": 500.0, "num_frames_train": 16, "num_frames_valid": 4,
            "mask_kind": "random", "mask_type": "fixed", "prob_masking": 0.5, "cloud_range": (0.2, 0.6)}
    problem = build_problem(args)
    np.testing.assert_array_equal(problem.field.values[:, 0], v[:, 2])


def test_an_extra_axis_that_is_not_a_level_is_named_with_its_size(tmp_path):
    v = np.stack([signal(), signal(seed=1)], axis=1)
    path = write_raw(tmp_path / "m.nc", "t", ("time", "member", "lat", "lon"), v, geo())
    for variables in (None, "t"):
        with pytest.raises(DataError, match=r"axis 'member' of size 2 is neither time, y, x nor a level axis"):
            open_field(path, variables)


# ------------------------------------------------------------------ values
def test_int16_with_scale_offset_and_fill_decodes_to_float_with_nan(tmp_path):
    rng = np.random.default_rng(0)
    packed = rng.integers(-3000, 3000, size=(T, Y, X)).astype("i2")
    packed[3, 2, 1] = packed[10, 0, 0] = -32767
    path = write_raw(tmp_path / "i16.nc", "sst", ("time", "lat", "lon"), packed, geo(), dtype="i2", fill=-32767,
                     var_attrs={"scale_factor": np.float32(0.01), "add_offset": np.float32(280.0), "units": "K"})
    f = open_field(path)
    assert f.values.dtype == np.float32
    expected = packed.astype(np.float64) * 0.01 + 280.0
    expected[packed == -32767] = np.nan
    np.testing.assert_allclose(f.values[:, 0], expected, rtol=0, atol=1e-4)
    assert np.isnan(f.values[:, 0]).sum() == 2


def test_inf_is_not_valid_and_a_baseline_scores_around_it(tmp_path, caplog):
    v = signal()
    v[2, 1, 1], v[21, 3, 4], v[22, 0, 7] = np.inf, -np.inf, np.inf       # a training and two test cells
    path = write_raw(tmp_path / "inf.nc", "v", ("time", "lat", "lon"), v, geo())
    with caplog.at_level(logging.WARNING):
        f = open_field(path)
    assert "3 cells are +/-inf" in caplog.text
    assert np.isnan(f.values[[2, 21, 22], 0, [1, 3, 0], [1, 4, 7]]).all() and np.isfinite(f.values).sum() == v.size - 3
    _, rec, pred = baseline(path, tmp_path, method="anomaly_interpolation")
    check_rmse(rec, pred)                                                   # the inf cells are not scored
    assert rec["baselines"]["anomaly_interpolation"]["overall"]["rmse"] == rec["metrics"]["overall"]["rmse"]
    with opened(pred) as p:
        assert p["valid"].values[1, 0, 3, 4] == 0 and p["valid"].values[2, 0, 0, 7] == 0
        assert int(p["valid"].values.sum()) == 4 * Y * X - 2
        assert np.isfinite(p["mean"].values).all()


def test_band_without_valid_training_cells_is_one_line_naming_it(tmp_path, capsys):
    a, b = signal(), signal(seed=1)
    b[:16] = np.nan                                                        # the training frames of band b
    ds = xr.Dataset({"a": (("time", "lat", "lon"), a), "b": (("time", "lat", "lon"), b)},
                    coords={k: (k, vals, attrs) for k, (vals, attrs) in geo().items()})
    ds.to_netcdf(tmp_path / "nan.nc")
    args = {"data_path": str(tmp_path / "nan.nc"), "num_frames_train": 16, "num_frames_valid": 4,
            "mask_kind": "random", "mask_type": "fixed", "prob_masking": 0.5, "cloud_range": (0.2, 0.6)}
    with pytest.raises(DataError, match=r"band 'b' has no valid cell in the 16 training frames"):
        build_problem(args)
    argv = ["--data_path", str(tmp_path / "nan.nc"), "--method", "climatology", *SPLIT,
            "--checkpoint_dir", str(tmp_path / "ck")]
    assert runs.run_cli(train_baselines.main, argv) == 2
    out = "".join(capsys.readouterr())
    assert "band 'b' has no valid cell" in out and str(tmp_path / "nan.nc") in out


# ------------------------------------------------------------------ longitude
def test_regional_longitude_across_the_seam_is_unwrapped_and_written_back(tmp_path):
    path = write_raw(tmp_path / "wrapped.nc", "v", ("time", "lat", "lon"), signal(), geo(lon=WRAPPED))
    f = open_field(path)
    np.testing.assert_array_equal(f.x, UNWRAPPED)
    np.testing.assert_array_equal(f.x_file, WRAPPED)
    assert not f.x_periodic
    grid = U.grid_inputs(f)
    np.testing.assert_array_equal(grid[2], np.arange(X)) and grid.x_period is None
    _, _, pred = baseline(path, tmp_path)
    with opened(pred) as p:
        np.testing.assert_array_equal(p["x"].values, WRAPPED)               # the file's own longitudes


@pytest.mark.parametrize("wrap_column", [False, True])
def test_global_longitude_is_periodic_and_wrap_column_dropped(tmp_path, wrap_column, caplog):
    lon = np.append(GLOBAL, 360.0) if wrap_column else GLOBAL
    v = np.tile(signal(x=36), (1, 1, 2))[..., :lon.size] if wrap_column else signal(x=36)
    path = write_raw(tmp_path / "g.nc", "v", ("time", "lat", "lon"), v, geo(lon=lon))
    with caplog.at_level(logging.INFO):
        f = open_field(path)
    assert f.x_periodic and f.shape == (T, 1, Y, 36)
    np.testing.assert_array_equal(f.x, GLOBAL)
    assert ("wrap column" in caplog.text) == wrap_column
    grid = U.grid_inputs(f)
    assert grid.x_period == 36.0
    args = {"matern_nu": 1.5, "num_mixtures": 2, "mean_function": "climatology", "timekernel": "matern",
            "spacekernel": "matern", "kernel_combination": "product"}
    pts = torch.tensor([[0.0, 2, 0], [0.0, 2, 1], [0.0, 2, 35], [0.0, 2, 18]], dtype=torch.float64)
    for space in ("matern", "periodic"):                  # chordal on the sphere; y x a circle in x
        model, _ = U.make_model(dict(args, spacekernel=space), grid)
        K = model.covar_module(pts).to_dense().detach()
        assert K[0, 2] == pytest.approx(float(K[0, 1]), rel=1e-9) and K[0, 3] < 0.5 * K[0, 1]   # 350 E is next to 0 E


def test_floor_interpolation_takes_the_neighbour_across_the_seam():
    vis = np.tile(np.arange(36.0), (3, 1))[None, None].copy()              # value = column index, 0..35
    vis[0, 0, :, 0] = np.nan                                                # a hole at 0 E
    clim = np.zeros((1, 3, 36))
    assert interpolation(vis, slice(0, 1), clim)[0, 0, :, 0].tolist() == [1.0] * 3       # nearest: one side only
    wrapped = interpolation(vis, slice(0, 1), clim, x_periodic=True)[0, 0, :, 0]
    np.testing.assert_allclose(wrapped, (35.0 + 1.0) / 2)                  # linear between 350 E and 10 E
    two = np.concatenate([vis, vis])
    out = reconstruct_floor("interpolation", two, slice(0, 1), slice(1, 2), x_periodic=True)
    np.testing.assert_allclose(out[0, 0, :, 0], 18.0)
    np.testing.assert_array_equal(out[0, 0, :, 1:], vis[0, 0, :, 1:])


# ------------------------------------------------------------------ every file trains and tests
@pytest.fixture(autouse=True)
def no_pdf(monkeypatch):
    """The PDF reports (6 s a run here, tested in test_report.py) are not drawn; prediction.nc and metrics are."""
    monkeypatch.setattr("gapfill.report.run_report", lambda path, *a, **kw: path)
    monkeypatch.setattr("gapfill.report.method_summary", lambda records, results, *a, **kw:
                        (results / "summary.csv", results / "summary.pdf"))


def opened(pred):
    """prediction.nc with numeric time (xarray cannot decode 'months since' in a noleap calendar)."""
    return xr.open_dataset(pred, decode_times=False)


def baseline(path, tmp, method="interpolation", extra=()):
    """Train and test a baseline on `path`; (run folder, metrics record, prediction.nc path)."""
    ck, res = tmp / "ck_baseline", tmp / "res_baseline"
    assert train_baselines.main(["--data_path", str(path), "--method", method, *SPLIT, "--checkpoint_dir", str(ck),
                                 *extra]) == 0
    run = next(ck.iterdir())
    rec = evaluate.test_main("baselines", test_baselines.predict,
                                   ["--checkpoints", str(run), "--results_folder", str(res), "--num_frames_test", "4"])[0]
    return run, rec, res / rec["run_name"] / "prediction.nc"


GP_BOUND = 0.3     # validation RMSE after 10 steps on signal() (std ~0.9, noise 0.1): measured 0.10-0.11 (exact GP)


def exact_gp_valid_rmse(path, tmp) -> float:
    ck = tmp / "ck_gp"
    assert train_exact_gp.main(["--data_path", str(path), *SPLIT, "--max_iters", "10", "--eval_every", "5",
                                "--max_train_points", "400", "--checkpoint_dir", str(ck)]) == 0
    cfg = json.loads((next(ck.iterdir()) / "config.json").read_text())
    assert cfg["finished"]
    return cfg["valid_rmse"]


FILES = {
    "fnoc": (fnoc, [], 1),
    "timestep": (lambda p: write_raw(p, "t", ("timestep", "lat", "lon"), signal(),
                                     geo(tname="timestep", time_attrs={"axis": "T"})), [], 1),
    "coads_360": (lambda p: coads(p, "360_day"), [], 1),
    "coads_noleap": (lambda p: coads(p, "noleap"), [], 1),
    "descending": (lambda p: write_raw(p, "v", ("time", "lat", "lon"), signal(), geo(lat=np.linspace(50, 40, Y))),
                   [], 1),
    "levels": (lambda p: levels_file(p)[0], [], 3),
    "level_850": (lambda p: levels_file(p)[0], ["--level", "850"], 1),
    "int16": (lambda p: write_raw(p, "sst", ("time", "lat", "lon"), (signal() * 100).astype("i2"), geo(), dtype="i2",
                                  fill=-32767, var_attrs={"scale_factor": np.float32(0.01)}), [], 1),
    "wrapped_lon": (lambda p: write_raw(p, "v", ("time", "lat", "lon"), signal(), geo(lon=WRAPPED)), [], 1),
    "global_lon": (lambda p: write_raw(p, "v", ("time", "lat", "lon"), signal(x=36), geo(lon=GLOBAL)), [], 1),
}


@pytest.mark.parametrize("name", list(FILES))
def test_each_file_trains_and_tests_a_baseline(tmp_path, name):
    make, extra, n_bands = FILES[name]
    path = make(tmp_path / f"{name}.nc")
    _, rec, pred = baseline(path, tmp_path, method="climatology", extra=extra)
    assert len(rec["bands"]) == n_bands
    assert rec["metrics"]["overall"]["n_scored"] > 0
    assert check_rmse(rec, pred) == rec["baselines"]["climatology"]["overall"]["rmse"]   # the floor's own number
    with opened(pred) as p:
        assert p["mean"].shape[:2] == (4, n_bands)


def test_exact_gp_on_fnoc_and_wrapped_longitude_same_as_unwrapped(tmp_path):
    assert exact_gp_valid_rmse(fnoc(tmp_path / "fnoc.nc"), tmp_path / "fnoc") < GP_BOUND
    rmse = {}
    for tag, lon in (("wrapped", WRAPPED), ("unwrapped", UNWRAPPED)):
        path = write_raw(tmp_path / f"{tag}.nc", "v", ("time", "lat", "lon"), signal(), geo(lon=lon))
        rmse[tag] = exact_gp_valid_rmse(path, tmp_path / tag)
    assert rmse["wrapped"] == pytest.approx(rmse["unwrapped"], rel=0.01), rmse


def test_both_gps_train_on_a_global_grid_on_the_sphere(tmp_path):
    path = FILES["global_lon"][0](tmp_path / "global.nc")
    assert exact_gp_valid_rmse(path, tmp_path) < GP_BOUND
    run = next((tmp_path / "ck_gp").iterdir())
    cfg = json.loads((run / "config.json").read_text())
    model, _ = U.make_model(cfg["args"], U.grid_inputs(open_field(path)), separable=True)
    model.load_state_dict(torch.load(run / "best.pt", weights_only=True)["bands"][0]["model"])
    sphere = [k for k in model.covar_module.modules() if isinstance(k, U.Chordal)]
    assert len(sphere) == 1 and sphere[0].x_period == pytest.approx(36.0)              # 360 degrees / 10
    ck = tmp_path / "ck_vgp"
    assert train_variational_gp.main(["--data_path", str(path), *SPLIT, "--max_iters", "10", "--eval_every", "5",
                                      "--num_inducing_points", "64", "--batch_size", "256",
                                      "--checkpoint_dir", str(ck)]) == 0
    assert json.loads((next(ck.iterdir()) / "config.json").read_text())["valid_rmse"] < GP_BOUND
