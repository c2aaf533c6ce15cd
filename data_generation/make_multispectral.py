"""Synthetic HLS-like multispectral time series (surface reflectance, 6 bands) for cloud-gap filling.

    python -m data_generation.make_multispectral --out data/multispectral.nc
    python -m data_generation.make_multispectral --out data/multispectral_haze.nc --haze --seed 1

Harmonized Landsat-Sentinel-like chips: bands B02 B03 B04 B05 B07 B08 (blue 490 nm, green 560, red 665,
red edge 705, SWIR 2 2190, NIR 842), each `Bxx(time, y, x)` float32 surface reflectance (units "1"),
one date every 16 days from 2020-01-01, 30 m pixels on a UTM-like grid (y, x in metres).

reflectance(t, y, x, b) = clip(g_t * texture(y, x, b) * spectrum(class(y, x), t, y, x, b)
                               [+ haze_t(y, x) * (490 nm / wavelength_b) ** 2.5]  + noise * white noise, 0, 1)

- class(y, x): a fixed map of up to 5 surface classes (water, forest, cropland, bare soil, urban), the
  argmax of smooth random fields, so classes form coherent patches, each about 1 / n_classes of the chip
  (`surface_class(y, x)`, a coordinate with CF flag_values / flag_meanings, in the file).
- spectrum: per class a seeded spectrum (a textbook template, each band scaled by 1 + 5% noise, clipped
  to +/-10%). Forest and cropland mix a dormant (bare) and a peak-season spectrum, (1 - v) dormant +
  v peak, where v(t) in [0, 1] is a double-logistic phenology: NIR and red edge rise and red falls as v
  rises. Forest greens up around day 115 and senesces around day 285 (+/- 10 days, smooth in space), v
  from 0.2 to 1. Cropland is cut into parcels (Voronoi cells, ~10 x 10 px); each parcel has its own
  green-up day (70..170, over 5..9 days), season length (70..120 days) and peak vigour (0.7..1), then a
  harvest (a cut, over 1..3 days) back to bare soil. A 16-day revisit samples these steps coarsely, so a
  date is not the linear interpolation of its neighbours on crops and forest. Water, bare soil and urban
  are constant in time.
- texture: within-class smooth (3 px) multiplicative brightness variation (5% cropland .. 15% urban) common
  to all bands, plus 2% per band.
- g_t: a per-date illumination/atmosphere factor, 1 + 2% noise, clipped to [0.94, 1.06].
- haze (--haze): per date an additive smooth (16 px) field, mean amplitude 0..0.06 in blue, scaled by
  (490 / wavelength) ** 2.5: green 0.72, red 0.46, red edge 0.39, NIR 0.26, SWIR 2 0.02 of blue.
- noise: white sensor noise (std 0.005 by default); values are clipped to [0, 1] (dark water SWIR).

Each part draws from its own seeded stream: the same seed gives bit-identical values, and --haze adds the
haze to the very same clean field. Measured on the defaults (24 x 64 x 64, seed 0, no haze): over all
pixels and dates corr(B02, B03) = 0.93 (0.89..0.93 for seeds 1-3) and corr(B04, B08) = +0.32 (bright soil
and urban are bright in both), -0.60 on forest and cropland pixels alone (red falls as NIR rises). On
forest and cropland pixels the NIR of a date differs from the linear interpolation of its two neighbouring
dates by 0.023 RMS (cropland 0.029, forest 0.015; 0.022 without noise), against 0.007 on water and urban
(noise and g_t alone).
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
BANDS = ("B02", "B03", "B04", "B05", "B07", "B08")          # HLS names, the order of the file
COLOURS = ("blue", "green", "red", "red edge", "SWIR 2", "NIR")   # long_name words a plotting script looks for
WAVELENGTH_NM = (490.0, 560.0, 665.0, 705.0, 2190.0, 842.0)  # band centres (Sentinel-2 MSI)
CLASSES = ("water", "forest", "cropland", "bare_soil", "urban")  # the first --n_classes are used
SPECTRA = {                         # typical surface reflectance, B02 B03 B04 B05 B07 B08
    "water":          (0.050, 0.055, 0.035, 0.030, 0.008, 0.025),  # dark, NIR and SWIR absorbed
    "forest_dormant": (0.045, 0.065, 0.080, 0.110, 0.140, 0.180),  # leaf-off canopy, litter
    "forest_peak":    (0.025, 0.045, 0.025, 0.100, 0.060, 0.350),  # closed canopy: red absorbed, NIR plateau
    "crop_bare":      (0.070, 0.100, 0.130, 0.160, 0.230, 0.210),  # tilled field before green-up, after harvest
    "crop_peak":      (0.030, 0.065, 0.035, 0.160, 0.070, 0.420),  # full cover, higher NIR than forest
    "bare_soil":      (0.100, 0.140, 0.190, 0.220, 0.300, 0.260),  # bright dry soil, SWIR highest
    "urban":          (0.090, 0.100, 0.110, 0.120, 0.150, 0.150),  # grey, flat spectrum
}
TEXTURE = {"water": 0.05, "forest": 0.06, "cropland": 0.05, "bare_soil": 0.10, "urban": 0.15}
SPECTRUM_JITTER = 0.05      # per-seed relative change of each class's template, per band (clipped at 2 std)
BAND_TEXTURE = 0.02         # per-band share of the within-class texture
TEXTURE_SCALE = 3.0         # px, length of the within-class texture
CLASS_SCALE = 8.0           # px, length of the class patches (64 px chip -> a few patches per class)
CLASS_BALANCE_STEPS = 30    # offset updates that even out the class shares
PARCEL_PX = 100             # px per crop parcel (~10 x 10 px = 300 m fields)
FOREST_GREENUP, FOREST_SENESCENCE, FOREST_JITTER = 115.0, 285.0, 10.0   # day of year, +/- days in space
FOREST_MIN_V = 0.2          # evergreen share: forest never fully leaf-off
FOREST_STEEPNESS = 7.0      # days, logistic scale of leaf-out and leaf-fall
CROP_GREENUP = (70.0, 170.0)   # day of year, per parcel
CROP_SEASON = (70.0, 120.0)    # days from green-up to harvest, per parcel
CROP_GREENUP_DAYS = (5.0, 9.0)   # days, logistic scale of green-up
CROP_HARVEST_DAYS = (1.0, 3.0)   # days, logistic scale of harvest: a cut, nearly a step
CROP_VIGOUR = (0.7, 1.0)       # peak v per parcel
ILLUMINATION_STD = 0.02     # per-date global factor g_t = 1 + 2% noise
HAZE_MAX = 0.06             # largest mean blue haze of a date
HAZE_SCALE = 16.0           # px, length of the haze field
HAZE_EXPONENT = 2.5         # haze ~ wavelength ** -2.5 (aerosol + Rayleigh): ~0 at SWIR
REVISIT_DAYS = 16           # Landsat revisit
PIXEL_M = 30.0              # HLS pixel size
ORIGIN_M = (4_000_000.0, 500_000.0)   # (y, x) of the first pixel centre, UTM-like


def _smooth(rng: np.random.Generator, shape: tuple, scale: float) -> np.ndarray:
    """Gaussian-smoothed white noise over the last two axes, unit overall std."""
    e = gaussian_filter(rng.standard_normal(shape), sigma=(0.0,) * (len(shape) - 2) + (scale, scale), mode="reflect")
    return e / e.std()


def _double_logistic(day: np.ndarray, greenup, harvest, k_up, k_down) -> np.ndarray:
    """0 before green-up, 1 in season, 0 after harvest (logistic edges of scale k_up, k_down days)."""
    return 1.0 / (1.0 + np.exp(-(day - greenup) / k_up)) - 1.0 / (1.0 + np.exp(-(day - harvest) / k_down))


def class_map(rng: np.random.Generator, n_classes: int, ny: int, nx: int) -> np.ndarray:
    """(Y, X) int8 class index into CLASSES: argmax of n_classes smooth fields (coherent patches), each field
    offset so that every class covers about 1 / n_classes of the chip (no class vanishes by chance)."""
    f = _smooth(rng, (n_classes, ny, nx), CLASS_SCALE)                    # (C, Y, X)
    offset = np.zeros((n_classes, 1, 1))
    for _ in range(CLASS_BALANCE_STEPS):
        share = np.bincount(np.argmax(f + offset, axis=0).ravel(), minlength=n_classes) / (ny * nx)
        offset[:, 0, 0] += 2.0 * (1.0 / n_classes - share)
    return np.argmax(f + offset, axis=0).astype(np.int8)


def parcels(rng: np.random.Generator, ny: int, nx: int) -> np.ndarray:
    """(Y, X) int parcel id: Voronoi cells of random centres, one per PARCEL_PX pixels."""
    n = max(1, ny * nx // PARCEL_PX)
    cy, cx = rng.uniform(0, ny, n), rng.uniform(0, nx, n)
    yy, xx = np.mgrid[0:ny, 0:nx]
    d2 = (yy[..., None] - cy) ** 2 + (xx[..., None] - cx) ** 2      # (Y, X, n)
    return np.argmin(d2, axis=-1)


def make_multispectral(n_time: int = 24, ny: int = 64, nx: int = 64, n_classes: int = 5, seed: int = 0,
                       haze: bool = False, noise: float = 0.005) -> xr.Dataset:
    """Dataset with B02 B03 B04 B05 B07 B08 (time, y, x) float32 surface reflectance and surface_class(y, x)."""
    for name, v, low in (("n_time", n_time, 1), ("ny", ny, 2), ("nx", nx, 2), ("n_classes", n_classes, 1)):
        if int(v) < low:
            raise ValueError(f"{name} must be at least {low}, got {v}.")
    if n_classes > len(CLASSES):
        raise ValueError(f"n_classes must be at most {len(CLASSES)} ({', '.join(CLASSES)}), got {n_classes}.")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}.")
    # one stream per part: --haze leaves the clean field as it was
    r_class, r_spec, r_tex, r_phen, r_illum, r_haze, r_noise = (np.random.default_rng([seed, k]) for k in range(7))
    n_b = len(BANDS)
    day = REVISIT_DAYS * np.arange(n_time, dtype=np.float64)                  # (T,) days since 2020-01-01
    doy = np.mod(day, 365.25)[:, None, None]                                  # (T, 1, 1)

    cls = class_map(r_class, n_classes, ny, nx)                               # (Y, X)
    jit = SPECTRUM_JITTER
    spec = {k: np.asarray(v) * np.clip(1 + jit * r_spec.standard_normal(n_b), 1 - 2 * jit, 1 + 2 * jit)
            for k, v in SPECTRA.items()}                                      # (B,) each
    common = _smooth(r_tex, (ny, nx), TEXTURE_SCALE)                          # (Y, X)
    per_band = _smooth(r_tex, (n_b, ny, nx), TEXTURE_SCALE)                   # (B, Y, X)
    tex_std = np.array([TEXTURE[c] for c in CLASSES])[cls]                    # (Y, X)
    texture = np.clip(1 + tex_std * common + BAND_TEXTURE * per_band, 0.7, 1.3)   # (B, Y, X)

    # phenology v (T, Y, X) for forest (smooth in space) and crops (per parcel)
    g = FOREST_GREENUP + FOREST_JITTER * _smooth(r_phen, (ny, nx), CLASS_SCALE)
    s = FOREST_SENESCENCE + FOREST_JITTER * _smooth(r_phen, (ny, nx), CLASS_SCALE)
    v_forest = FOREST_MIN_V + (1 - FOREST_MIN_V) * _double_logistic(doy, g, s, FOREST_STEEPNESS, FOREST_STEEPNESS)
    pid = parcels(r_phen, ny, nx)                                             # (Y, X)
    n_p = int(pid.max()) + 1
    greenup = r_phen.uniform(*CROP_GREENUP, n_p)[pid]
    harvest = greenup + r_phen.uniform(*CROP_SEASON, n_p)[pid]
    k_up = r_phen.uniform(*CROP_GREENUP_DAYS, n_p)[pid]
    k_down = r_phen.uniform(*CROP_HARVEST_DAYS, n_p)[pid]
    vigour = r_phen.uniform(*CROP_VIGOUR, n_p)[pid]
    v_crop = vigour * _double_logistic(doy, greenup, harvest, k_up, k_down)

    refl = np.zeros((n_time, n_b, ny, nx))                                    # (T, B, Y, X)
    for k, name in enumerate(CLASSES[:n_classes]):
        m = cls == k
        if name == "forest":
            val = (1 - v_forest[..., None]) * spec["forest_dormant"] + v_forest[..., None] * spec["forest_peak"]
        elif name == "cropland":
            val = (1 - v_crop[..., None]) * spec["crop_bare"] + v_crop[..., None] * spec["crop_peak"]
        else:
            val = np.broadcast_to(spec[name], (n_time, ny, nx, n_b))
        refl += np.where(m[None, None], np.moveaxis(val, -1, 1), 0.0)
    illum = np.clip(1 + ILLUMINATION_STD * r_illum.standard_normal(n_time), 0.94, 1.06)   # (T,)
    refl *= illum[:, None, None, None] * texture[None]
    if haze:
        amp = HAZE_MAX * r_haze.uniform(0, 1, n_time) ** 2                     # (T,) many light, a few thick
        field = np.clip(1 + 0.5 * _smooth(r_haze, (n_time, ny, nx), HAZE_SCALE), 0, None)   # (T, Y, X)
        weight = (WAVELENGTH_NM[0] / np.asarray(WAVELENGTH_NM)) ** HAZE_EXPONENT            # (B,) blue = 1
        refl += amp[:, None, None, None] * weight[None, :, None, None] * field[:, None]
    refl += noise * r_noise.standard_normal(refl.shape)
    refl = np.clip(refl, 0.0, 1.0).astype(np.float32)

    dims = ("time", "y", "x")
    data_vars = {b: (dims, refl[:, i], {"units": "1", "standard_name": "surface_bidirectional_reflectance",
                                        "long_name": f"surface reflectance, {COLOURS[i]} (HLS {b})",
                                        "wavelength": WAVELENGTH_NM[i], "wavelength_units": "nm"})
                 for i, b in enumerate(BANDS)}
    y = ORIGIN_M[0] + PIXEL_M * np.arange(ny)
    x = ORIGIN_M[1] + PIXEL_M * np.arange(nx)
    return xr.Dataset(
        data_vars,
        coords={"time": ("time", day, {"units": "days since 2020-01-01", "calendar": "standard",
                                       "standard_name": "time", "axis": "T"}),
                "y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate", "axis": "Y"}),
                "x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate", "axis": "X"}),
                "surface_class": (("y", "x"), cls, {
                    "long_name": "surface class", "flag_values": np.arange(n_classes, dtype=np.int8),
                    "flag_meanings": " ".join(CLASSES[:n_classes])})},
        attrs={"Conventions": "CF-1.8", "title": "synthetic HLS-like multispectral time series",
               "source": (f"data_generation.make_multispectral seed={seed} n_classes={n_classes} haze={haze} "
                          f"noise={noise}")})


def main(argv=None):
    p = cli.Parser(description=__doc__.split("\n")[0])
    cli.add_generator_args(p, "data/multispectral.nc", 24, "number of dates, one every 16 days",
                           ("30 m pixels", "30 m pixels"))
    p.add_argument("--n_classes", type=int, choices=range(1, len(CLASSES) + 1), default=5,
                   help=f"surface classes, the first N of {', '.join(CLASSES)}")
    p.add_argument("--haze", action="store_true", help="add per-date smooth haze, strongest in blue, ~0 in SWIR")
    p.add_argument("--noise", type=cli.nonnegative_float, default=0.005, help="white sensor-noise std (reflectance)")
    args = p.parse_args(argv)
    setup_logging()
    check_output_file(args.out, "ms.nc")
    t0 = time.perf_counter()
    ds = make_multispectral(args.n_time, args.ny, args.nx, args.n_classes, args.seed, args.haze, args.noise)
    out = write_dataset(ds, args.out)
    ranges = ", ".join(f"{b} {float(ds[b].min()):.3f}..{float(ds[b].max()):.3f}" for b in BANDS)
    log.info("wrote %s: bands %s, (time, y, x) = %s, ranges %s, %.2f s", out, list(BANDS),
             tuple(ds[BANDS[0]].shape), ranges, time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
