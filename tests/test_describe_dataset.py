"""describe() numbers on hand-built fields, and the CLI's log and figure."""
import numpy as np
import pytest

from additional_material import describe_dataset as dd
from data_generation.make_synthetic_field import make_field
from gapfill.data import Field, write_dataset


def _field(values, time=None, units=None, time_units="days since 2000-01-01"):
    T, B, Y, X = values.shape
    return Field(values=values.astype(np.float32), time=np.arange(T, dtype=float) if time is None else time,
                 y=np.linspace(10.0, 20.0, Y), x=np.arange(X, dtype=float), bands=[f"b{i}" for i in range(B)],
                 units=units or ["K"] * B, path="hand.nc", time_units=time_units, calendar="standard",
                 y_name="lat", x_name="lon")


def test_ramp_in_time_with_known_nan_share():
    T, Y, X = 6, 4, 5
    v = np.broadcast_to(np.arange(T, dtype=float)[:, None, None], (T, Y, X)).copy()
    v += np.arange(Y)[:, None] * 10 + np.arange(X)                      # per-cell offsets
    v[:, 0, 0] = np.nan                                                 # one land cell: 1/20 of the cells
    v[2, 1, 1] = np.nan                                                 # one outage: 1 of 120 values
    d = dd.describe(_field(v[:, None]))
    s = d["bands"]["b0"]
    assert d["shape"] == (6, 1, 4, 5)
    assert s["nan_share"] == pytest.approx(7 / 120)                     # 6 land + 1 outage
    assert d["nan_share"] == pytest.approx(7 / 120)
    assert s["lag1_time"] == pytest.approx(1.0, abs=1e-12)               # a ramp: corr(x_t, x_t+1) = 1
    assert s["min"] == 1.0 and s["max"] == 5 + 30 + 4                    # v[0,0,1] and v[5,3,4]
    ok = v[np.isfinite(v)]
    assert s["mean"] == pytest.approx(ok.mean()) and s["std"] == pytest.approx(ok.std())
    assert d["time_span_days"] == 5.0 and d["time_start"].startswith("2000-01-01")
    assert d["time_end"].startswith("2000-01-06")
    assert d["y_range"] == (10.0, 20.0) and d["x_range"] == (0.0, 4.0)
    assert (d["y_name"], d["x_name"]) == ("lat", "lon") and s["units"] == "K"


def test_alternating_series_and_brute_force_reference():
    rng = np.random.default_rng(0)
    T, Y, X = 8, 3, 4
    alt = np.where(np.arange(T) % 2 == 0, 1.0, -1.0)
    v = np.stack([np.broadcast_to(alt[:, None, None], (T, Y, X)), rng.standard_normal((T, Y, X))], axis=1)
    v[3, 1, 2, 2] = np.nan
    v = v.astype(np.float32).astype(np.float64)                          # the Field holds float32
    d = dd.describe(_field(v))
    assert d["bands"]["b0"]["lag1_time"] == pytest.approx(-1.0, abs=1e-12)
    # brute force: loop over cells, keep pairs where both are finite, np.corrcoef per cell
    r = []
    for i in range(Y):
        for j in range(X):
            a, b = v[:-1, 1, i, j], v[1:, 1, i, j]
            m = np.isfinite(a) & np.isfinite(b)
            r.append(np.corrcoef(a[m], b[m])[0, 1])
    assert d["bands"]["b1"]["lag1_time"] == pytest.approx(np.mean(r), abs=1e-10)
    # spatial: pooled over frames, pairs with both ends finite
    w = v[:, 1]
    for key, a, b in (("lag1_x", w[:, :, :-1], w[:, :, 1:]), ("lag1_y", w[:, :-1, :], w[:, 1:, :])):
        m = np.isfinite(a) & np.isfinite(b)
        assert d["bands"]["b1"][key] == pytest.approx(np.corrcoef(a[m], b[m])[0, 1], abs=1e-10)


def test_spatial_lag1_hand_computed():
    # one frame [[1, 2, 4], [3, 5, 9]]: horizontal pairs (1,2) (2,4) (3,5) (5,9), vertical (1,3) (2,5) (4,9)
    v = np.array([[1.0, 2, 4], [3, 5, 9]])[None, None]
    s = dd.describe(_field(v))["bands"]["b0"]
    # horizontal: a = [1,2,3,5] (mean 2.75), b = [2,4,5,9] (mean 5): cov sum 15, ss 8.75 and 26
    assert s["lag1_x"] == pytest.approx(15 / np.sqrt(8.75 * 26), abs=1e-12)
    # vertical: a = [1,2,4] (mean 7/3), b = [3,5,9] (mean 17/3): cov sum 14, ss 14/3 and 56/3 -> r = 1
    assert s["lag1_y"] == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(s["lag1_time"])                                     # one frame: undefined
    v2 = np.array([[1.0, -1, 1, -1]] * 3)[None, None]                   # checkerboard in x only
    s2 = dd.describe(_field(v2))["bands"]["b0"]
    assert s2["lag1_x"] == pytest.approx(-1.0, abs=1e-12)
    assert s2["lag1_y"] == pytest.approx(1.0, abs=1e-12)               # identical rows


def test_synthetic_file_cli_log_and_figure(tmp_path, capsys):
    path = write_dataset(make_field(n_time=60, ny=24, nx=32, land=True, extra_bands=1, time_scale=5.0),
                       tmp_path / "synth.nc")
    fig = tmp_path / "figs" / "synth.png"
    d = dd.main([str(path), "--out", str(fig)])
    logged = "".join(capsys.readouterr())                              # the CLI logs to stdout/stderr
    assert fig.exists() and fig.stat().st_size > 10_000
    assert d["shape"] == (60, 2, 24, 32) and list(d["bands"]) == ["temperature", "band1"]
    t = d["bands"]["temperature"]
    assert 0.18 < t["nan_share"] < 0.22 and t["units"] == "K" and 270 < t["mean"] < 300
    assert t["lag1_x"] > 0.95 and t["lag1_y"] > 0.95                   # length scale 8 cells
    assert 0.6 < d["bands"]["band1"]["lag1_time"] < 0.9                # AR(1) with exp(-1/5) = 0.82
    assert "lag-1 corr" in logged and "synth.png" in logged and "20.0" in logged
    pdf = tmp_path / "one.pdf"
    d1 = dd.main([str(path), "--variable", "band1", "--out", str(pdf)])
    assert list(d1["bands"]) == ["band1"] and pdf.stat().st_size > 10_000
