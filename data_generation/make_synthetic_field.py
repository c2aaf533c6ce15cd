"""Synthetic temperature-like field (Kelvin) with known spatial and temporal correlation.

    python -m data_generation.make_synthetic_field --out data/synthetic_default.nc
    python data_generation/make_synthetic_field.py --out data/synth_land.nc --land --extra_bands 1

temperature(time, lat, lon) = 285 K
    - 0.5 K/degree * (lat - 45)                         latitude gradient, colder north
    + 1.5 K * sin(2 pi (lon - lon0) / lon_span)         a gentle zonal wave
    - A(lat) * cos(2 pi (day - 15) / 365.25)            seasonal cycle, coldest mid-January,
                                                        A = 8 K at 45 N, 5 K at 30 N, 11 K at 60 N
    + anomaly                                           2 K std, see below
    + noise * white noise                               0.1 K by default

The anomaly is Gaussian-smoothed white noise (std sigma = length_scale / sqrt(2) cells, so its
spatial correlation is exp(-r^2 / (2 length_scale^2)) with r in cells), scaled to unit variance and
pushed through an AR(1) in time, a_t = phi a_{t-1} + sqrt(1 - phi^2) e_t with phi = exp(-1/time_scale):
the lag-1 autocorrelation of the anomaly at every cell is phi. Same seed -> bit-identical values.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter

from gapfill import cli
from gapfill.data import write_dataset
from gapfill.entry import run_cli
from gapfill.files import check_output_file
from gapfill.system import setup_logging

log = logging.getLogger(__name__)

# ---- defaults (one reason each) ----
BASE_K = 285.0          # mid-latitude annual mean near the surface
LAT_GRADIENT = -0.5     # K per degree north: colder poleward
SEASONAL_AMP = 8.0      # K at 45 N; grows by 0.2 K per degree northward (continental north)
ANOMALY_STD = 2.0       # K, synoptic-scale weather anomalies
LAND_FRACTION = 0.2     # share of cells masked as land when --land is given
LAND_SEED = 12345       # the land mask depends on the grid only, not on --seed
LAT_RANGE = (30.0, 60.0)
LON_RANGE = (0.0, 40.0)


def smooth_noise(rng: np.random.Generator, n: int, ny: int, nx: int, length_scale: float) -> np.ndarray:
    """(n, ny, nx) float64 Gaussian-smoothed white noise, scaled to unit overall std."""
    e = rng.standard_normal((n, ny, nx))
    if length_scale > 0:
        sigma = length_scale / np.sqrt(2.0)
        e = gaussian_filter(e, sigma=(0.0, sigma, sigma), mode="reflect", truncate=4.0)
    return e / e.std()


def ar1(e: np.ndarray, time_scale: float) -> np.ndarray:
    """AR(1) in time over the first axis of e (T, ...): unit-variance, lag-1 correlation exp(-1/time_scale)."""
    phi = float(np.exp(-1.0 / time_scale)) if time_scale > 0 else 0.0
    a = np.empty_like(e)
    a[0] = e[0]                                   # start in the stationary distribution
    c = np.sqrt(1.0 - phi * phi)
    for t in range(1, len(e)):
        a[t] = phi * a[t - 1] + c * e[t]
    return a


def land_mask(ny: int, nx: int, fraction: float = LAND_FRACTION) -> np.ndarray:
    """(ny, nx) bool, True on land: smooth blobs covering `fraction` of the cells, same for any --seed."""
    rng = np.random.default_rng(LAND_SEED)
    blob = gaussian_filter(rng.standard_normal((ny, nx)), sigma=max(ny, nx) / 8.0, mode="reflect")
    return blob > np.quantile(blob, 1.0 - fraction)


def make_field(n_time: int = 365, ny: int = 64, nx: int = 64, length_scale: float = 4.0,
               time_scale: float = 5.0, seed: int = 0, land: bool = False, extra_bands: int = 0,
               noise: float = 0.1) -> xr.Dataset:
    """Dataset with `temperature(time, lat, lon)` float32 in K and `band1..bandN` correlated extra bands."""
    for name, v in (("n_time", n_time), ("ny", ny), ("nx", nx)):
        if int(v) < (1 if name == "n_time" else 2):
            raise ValueError(f"{name} must be at least {1 if name == 'n_time' else 2}, got {v}.")
    if length_scale < 0 or time_scale < 0 or noise < 0 or extra_bands < 0:
        raise ValueError(f"length_scale, time_scale, noise and extra_bands must be >= 0, got "
                         f"{length_scale}, {time_scale}, {noise}, {extra_bands}.")
    rng = np.random.default_rng(seed)
    lat = np.linspace(*LAT_RANGE, ny)
    lon = np.linspace(*LON_RANGE, nx)
    day = np.arange(n_time, dtype=np.float64)

    lat2 = lat[:, None]                                                   # (Y, 1)
    mean_map = (BASE_K + LAT_GRADIENT * (lat2 - 45.0)
                + 1.5 * np.sin(2 * np.pi * (lon[None, :] - lon[0]) / (lon[-1] - lon[0] + 1e-9)))  # (Y, X)
    amp = SEASONAL_AMP + 0.2 * (lat2 - 45.0)                              # (Y, 1)
    season = -np.cos(2 * np.pi * (day - 15.0) / 365.25)                   # (T,)
    anomaly = ar1(smooth_noise(rng, n_time, ny, nx, length_scale), time_scale)   # (T, Y, X) unit std
    temp = (mean_map[None] + amp[None] * season[:, None, None] + ANOMALY_STD * anomaly
            + noise * rng.standard_normal((n_time, ny, nx)))

    mask = land_mask(ny, nx) if land else np.zeros((ny, nx), bool)
    dims = ("time", "lat", "lon")
    data_vars = {"temperature": (dims, np.where(mask, np.nan, temp).astype(np.float32),
                                 {"units": "K", "standard_name": "air_temperature",
                                  "long_name": "synthetic near-surface air temperature"})}
    for k in range(1, extra_bands + 1):
        # Band k: 70% temperature anomaly lagged by k days, 30% its own AR(1) field with half the
        # length scale, in other units (a relative-humidity-like share in [0, 1]).
        own = ar1(smooth_noise(rng, n_time, ny, nx, length_scale / 2), time_scale)
        lagged = anomaly[np.clip(np.arange(n_time) - k, 0, None)]         # frame t holds anomaly t-k
        mix = 0.7 * lagged + np.sqrt(1 - 0.7 ** 2) * own
        val = 0.6 + 0.1 * mix + 0.005 * noise * rng.standard_normal((n_time, ny, nx))
        data_vars[f"band{k}"] = (dims, np.where(mask, np.nan, val).astype(np.float32),
                                 {"units": "1", "long_name": f"synthetic band correlated with temperature "
                                                             f"anomalies lagged by {k} day(s)"})
    ds = xr.Dataset(
        data_vars,
        coords={"time": ("time", day, {"units": "days since 2000-01-01", "calendar": "standard",
                                       "standard_name": "time", "axis": "T"}),
                "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}),
                "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude", "axis": "X"})},
        attrs={"Conventions": "CF-1.8", "title": "synthetic gappy-field benchmark",
               "source": (f"data_generation.make_synthetic_field seed={seed} length_scale={length_scale} "
                          f"time_scale={time_scale} land={land} extra_bands={extra_bands} noise={noise}")})
    return ds



def main(argv=None):
    p = cli.Parser(description=__doc__.split("\n")[0])
    cli.add_generator_args(p, "data/synthetic_default.nc", 365, "number of daily frames", ("latitudes", "longitudes"))
    p.add_argument("--length_scale", type=cli.positive_float, default=4.0, help="anomaly correlation length in cells")
    p.add_argument("--time_scale", type=cli.positive_float, default=5.0, help="anomaly correlation time in days")
    p.add_argument("--land", action="store_true", help="mask ~20%% of cells as land (NaN at all times)")
    p.add_argument("--extra_bands", type=cli.nonnegative_int, default=0, help="number of correlated extra bands band1..")
    p.add_argument("--noise", type=cli.nonnegative_float, default=0.1, help="white-noise std in K")
    p.add_argument("--fine_out", default=None,
                   help="also write the same field on a grid twice as fine ((2 ny - 1) x (2 nx - 1), every other node "
                        "the --out grid's): the truth for super-resolution")
    args = p.parse_args(argv)
    setup_logging()
    check_output_file(args.out, "field.nc")
    t0 = time.perf_counter()
    if args.fine_out:                   # one field at two resolutions: the coarse grid is every other fine node
        fine = make_field(args.n_time, 2 * args.ny - 1, 2 * args.nx - 1, 2 * args.length_scale, args.time_scale,
                          args.seed, args.land, args.extra_bands, args.noise)
        fine.attrs["source"] += " (fine grid of a two-resolution pair)"
        log.info("wrote %s: the fine grid, %s", write_dataset(fine, args.fine_out), dict(fine.sizes))
        ds = fine.isel(lat=slice(None, None, 2), lon=slice(None, None, 2))
        ds.attrs["source"] = ds.attrs["source"].replace("fine grid", "coarse grid")
    else:
        ds = make_field(args.n_time, args.ny, args.nx, args.length_scale, args.time_scale, args.seed,
                        args.land, args.extra_bands, args.noise)
    out = write_dataset(ds, args.out)
    log.info("wrote %s: variables %s, (time, lat, lon) = %s, %.1f%% NaN, %.2f s", out, list(ds.data_vars),
             tuple(ds["temperature"].shape), 100 * float(np.isnan(ds["temperature"].values).mean()),
             time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
