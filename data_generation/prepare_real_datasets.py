"""Convert real data shipped inside installed packages (no network) into the project's NetCDF format.

    python -m data_generation.prepare_real_datasets --out_dir data/real [--image_size 128] [--only NAME]

Every output is CF NetCDF with `time` plus two spatial dims and one float32 variable per band:
  A1B_north_america, E1_north_america  iris-sample-data, air_temperature(time, latitude, longitude) in K,
                                       240 x 37 x 49, 360_day calendar kept as in the source
  sst_ndjfm_anom                       eofs, sst(time, latitude, longitude) anomalies in K, land = NaN
  hgt_djf                              eofs, z(time, latitude, longitude) 500 hPa geopotential height in m
  astronaut, coffee                    scikit-image, red/green/blue(time=1, y, x) in [0, 1]
  camera                               scikit-image, gray(time=1, y, x) in [0, 1]
Bounds and auxiliary variables are dropped; time keeps its units and calendar.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import xarray as xr

from gapfill import cli
from gapfill.data import write_dataset
from gapfill.entry import run_cli
from gapfill.files import check_writable
from gapfill.system import setup_logging

log = logging.getLogger(__name__)

# name -> (package, file, variable, units to set where the source has none)
CLIMATE = {
    "A1B_north_america": ("iris", "A1B_north_america.nc", "air_temperature", None),
    "E1_north_america": ("iris", "E1_north_america.nc", "air_temperature", None),
    "sst_ndjfm_anom": ("eofs", "sst_ndjfm_anom.nc", "sst", "K"),   # an anomaly: K and degC agree
    "hgt_djf": ("eofs", "hgt_djf.nc", "z", "m"),                   # NCEP 500 hPa height, metres
}
IMAGES = {"astronaut": ("red", "green", "blue"), "camera": ("gray",), "coffee": ("red", "green", "blue")}
DATASETS = list(CLIMATE) + list(IMAGES)
KEEP_ATTRS = ("standard_name", "long_name", "units", "calendar", "axis", "positive", "cell_methods")


def source_path(package: str, filename: str) -> Path:
    """Path of a data file shipped inside an installed package."""
    if package == "iris":
        import iris_sample_data
        return Path(os.path.dirname(iris_sample_data.__file__)) / "sample_data" / filename
    import eofs.examples
    return Path(eofs.examples.example_data_path(filename))


def _attrs(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if k in KEEP_ATTRS}


def convert_climate(name: str) -> xr.Dataset:
    """Dataset with one variable (time, latitude, longitude) float32; time numeric with its units/calendar."""
    package, filename, var, units = CLIMATE[name]
    src = source_path(package, filename)
    with xr.open_dataset(src, decode_times=False) as ds:   # numeric time: the calendar stays untouched
        da = ds[var].load()
    extra = [d for d in da.dims if d not in ("time", "latitude", "longitude")]
    da = da.squeeze(extra, drop=True).transpose("time", "latitude", "longitude")   # hgt: drop pressure=1
    da = da.reset_coords(drop=True)
    attrs = _attrs(da.attrs)
    if units and "units" not in attrs:
        attrs["units"] = units
    if extra:
        attrs["comment"] = f"singleton dimension(s) {extra} removed"
    coords = {c: (c, da[c].values, _attrs(da[c].attrs)) for c in ("time", "latitude", "longitude")}
    # "hours since 1-1-1" -> "hours since 0001-1-1": the same date, without cftime's ambiguity warning
    coords["time"][2]["units"] = re.sub(r"since (\d{1,3})-", lambda m: f"since {int(m.group(1)):04d}-",
                                        coords["time"][2]["units"])
    out = xr.Dataset({var: (da.dims, da.values.astype(np.float32), attrs)}, coords=coords,
                     attrs={"Conventions": "CF-1.8", "source": f"{package} package file {filename}",
                            "history": "converted by data_generation.prepare_real_datasets"})
    return out


def _load_image(name: str) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] from the photographs shipped with scikit-image."""
    import skimage.data
    img = getattr(skimage.data, name)()
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    return img[..., None] if img.ndim == 2 else img


def convert_image(name: str, image_size: int = 128) -> xr.Dataset:
    """Single-frame field: one variable per channel (time=1, y, x) float32 in [0, 1], units "1".

    image_size > 0 scales the longest side down to it (aspect kept, cv2 INTER_AREA); 0 keeps full size.
    """
    img = _load_image(name)                                            # (H, W, C)
    if image_size < 0:
        raise ValueError(f"image_size must be >= 0 (0 keeps full size), got {image_size}.")
    if image_size and image_size < max(img.shape[:2]):               # only ever downscale
        import cv2
        h, w = img.shape[:2]
        scale = image_size / max(h, w)
        size = (max(2, round(w * scale)), max(2, round(h * scale)))    # cv2 wants (width, height)
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        img = img[..., None] if img.ndim == 2 else img
    img = np.clip(img, 0.0, 1.0)
    h, w = img.shape[:2]
    data = {ch: (("time", "y", "x"), img[None, :, :, c].astype(np.float32),
                 {"units": "1", "long_name": f"{ch} intensity of the scikit-image '{name}' photograph"})
            for c, ch in enumerate(IMAGES[name])}
    coords = {"time": ("time", [0.0], {"units": "days since 2000-01-01", "calendar": "standard", "axis": "T"}),
              "y": ("y", np.arange(h, dtype=np.float64), {"units": "pixel", "long_name": "row, top to bottom"}),
              "x": ("x", np.arange(w, dtype=np.float64), {"units": "pixel", "long_name": "column"})}
    return xr.Dataset(data, coords=coords, attrs={"Conventions": "CF-1.8",
                                                  "source": f"skimage.data.{name}()",
                                                  "history": "converted by data_generation.prepare_real_datasets"})


def prepare_one(name: str, out_dir, image_size: int = 128) -> Path:
    """Convert dataset `name` into out_dir/<name>.nc and return its path."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}.")
    ds = convert_climate(name) if name in CLIMATE else convert_image(name, image_size)
    out = write_dataset(ds, Path(out_dir) / f"{name}.nc")
    first = next(iter(ds.data_vars.values()))
    nan = np.mean([np.isnan(v.values).mean() for v in ds.data_vars.values()])
    log.info("wrote %s: %s %s, variables %s, %.1f%% NaN", out, first.dims, first.shape,
             list(ds.data_vars), 100 * nan)
    return out


def prepare_all(out_dir, image_size: int = 128, only: list[str] | None = None) -> list[Path]:
    """Convert every dataset (or those in `only`) into out_dir; returns the written paths."""
    return [prepare_one(name, out_dir, image_size) for name in (only or DATASETS)]



def main(argv=None):
    p = cli.Parser(description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", default="data/real", help="folder for the converted NetCDF files")
    p.add_argument("--image_size", type=cli.nonnegative_int, default=128,
                   help="longest image side after INTER_AREA downscaling; 0 keeps full size")
    p.add_argument("--only", action="append", choices=DATASETS, metavar="NAME",
                   help=f"convert only this dataset (repeatable); one of {DATASETS}")
    args = p.parse_args(argv)
    setup_logging()
    check_writable(args.out_dir, "--out_dir")
    return prepare_all(args.out_dir, args.image_size, args.only)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
