"""GeoTIFF chips (HLS-style, multi-date and multi-band, with cloud masks) -> one CF NetCDF field, CRS kept.

    python -m data_generation.convert_geotiff --dataroot DIR --out data/site.nc
    python -m data_generation.convert_geotiff --dataroot DIR/chip_001_merged.tif --dates_per_file 3 --out data/chip.nc \\
        --cloud_masks DIR/cloud_mask --dates 2020-03-01 2020-06-15 2020-09-20

- input: every `--pattern` file of `--dataroot` (a folder, sorted by name) or one file. A file holds
  `--dates_per_file` dates x the bands, date-major (the reference GAN's `*_merged.tif`: 3 dates x 6 bands, 18
  bands), read with rioxarray (rasterio). Every file must lie on one grid (shape, transform and CRS): the
  field is one area through time, as every method here reads it. Chips of different places are different
  fields; convert them one at a time.
- dates: `--dates` (one per date), else a date in each file name (YYYY-MM-DD, YYYYMMDD or HLS's YYYYDDD), else
  the frame index (days since 2000-01-01, with a warning).
- values: DN x `--scale` (1e-4: HLS surface reflectance); `--nodata` (default: the file's, else -9999) -> NaN.
- cloud masks: `--cloud_masks` (a folder or files, sorted), one band per date in date order (or one
  file per date); a cell whose mask is not 0 becomes NaN (never observed), as the core's missing values.
- output: `Bxx(time, y, x)` float32 named by `--bands` (default HLS B02 B03 B04 B05 B07 B08 for 6 bands,
  else band1..), x and y the pixel centres in the CRS's units, the CRS as CF grid mapping `spatial_ref`
  (rioxarray `write_crs`: crs_wkt, spatial_ref), so `rioxarray.open_rasterio`-style tools read it back.
"""
from __future__ import annotations

import logging
import re
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import xarray as xr

from gapfill import cli
from gapfill.data import write_dataset
from gapfill.entry import run_cli
from gapfill.errors import DataError
from gapfill.files import check_output_file
from gapfill.system import setup_logging

log = logging.getLogger(__name__)
HLS_BANDS = ("B02", "B03", "B04", "B05", "B07", "B08")      # the reference GAN's six bands, in its order
EPOCH = np.datetime64("2000-01-01")


def tif_files(path, pattern: str = "*.tif") -> list[Path]:
    """The files of a folder matching `pattern`, sorted by name, or [path] for a file."""
    p = Path(path)
    if p.is_file():
        return [p]
    files = sorted(p.glob(pattern))
    if not files:
        raise DataError(f"{p}: no {pattern} files" if p.is_dir() else f"{p} does not exist")
    return files


def read_tif(path) -> xr.DataArray:
    """One GeoTIFF as (band, y, x) float64 with its CRS and transform (rioxarray, not masked)."""
    import rioxarray
    da = rioxarray.open_rasterio(path)
    assert isinstance(da, xr.DataArray)
    return da.load()


def file_date(name: str) -> np.datetime64 | None:
    """A date in a file name: YYYY-MM-DD, YYYYMMDD or HLS's YYYYDDD (day of year); None when there is none."""
    if m := re.search(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)", name):
        try:
            return np.datetime64(datetime(int(m[1]), int(m[2]), int(m[3])).date())
        except ValueError:
            pass
    if m := re.search(r"(?<!\d)(\d{4})(\d{3})(?!\d)", name):
        if 1 <= int(m[2]) <= 366:
            return np.datetime64(f"{m[1]}-01-01") + np.timedelta64(int(m[2]) - 1, "D")
    return None


def convert(files: list[Path], dates_per_file: int = 1, bands=None, scale: float = 1e-4, nodata=None,
            cloud_files: list[Path] | None = None, dates=None) -> xr.Dataset:
    """The field of `files` (module docstring) -> Dataset of `Bxx(time, y, x)` with `spatial_ref`."""
    arrays, grid = [], None
    for f in files:
        da = read_tif(f)
        g = (da.shape[1:], tuple(da.rio.transform()), da.rio.crs)
        if grid is None:
            grid, first = g, da
        elif g != grid:
            raise DataError(f"{f} is not on the grid of {files[0]} (shape, transform or CRS differ): one field "
                            "is one area; convert chips of other places into files of their own")
        if da.shape[0] % dates_per_file:
            raise DataError(f"{f}: {da.shape[0]} bands do not split into --dates_per_file {dates_per_file} dates")
        miss = nodata if nodata is not None else (da.rio.nodata if da.rio.nodata is not None else -9999)
        v = np.where(da.values == miss, np.nan, da.values.astype(np.float64) * scale)
        arrays.append(v.reshape(dates_per_file, -1, *v.shape[1:]))                  # (dates, bands, y, x)
    values = np.concatenate(arrays)                                                 # (T, B, Y, X)
    T, B = values.shape[:2]
    if cloud_files:
        clouds = np.concatenate([read_tif(c).values for c in cloud_files]).astype(bool)
        if clouds.shape != (T,) + values.shape[2:]:
            raise DataError(f"cloud masks give {clouds.shape[0]} dates of {clouds.shape[1:]}, the chips "
                            f"{T} of {values.shape[2:]}")
        values = np.where(clouds[:, None], np.nan, values)
    names = list(bands) if bands else (list(HLS_BANDS) if B == 6 else [f"band{i + 1}" for i in range(B)])
    if len(names) != B:
        raise DataError(f"--bands names {len(names)} bands, the files hold {B} per date")
    times = time_axis(files, dates_per_file, dates, T)
    ds = xr.Dataset({n: (("time", "y", "x"), values[:, b].astype(np.float32),
                         {"units": "1", "long_name": f"{n} surface reflectance (DN x {scale:g})"})
                     for b, n in enumerate(names)},
                    coords={"time": ("time", times, {"standard_name": "time", "axis": "T"}),
                            "y": ("y", first["y"].values, {"axis": "Y", "standard_name": "projection_y_coordinate"}),
                            "x": ("x", first["x"].values, {"axis": "X", "standard_name": "projection_x_coordinate"})},
                    attrs={"Conventions": "CF-1.8", "title": f"GeoTIFF chips from {files[0].parent}",
                           "source": "data_generation.convert_geotiff " + " ".join(f.name for f in files[:5])
                                     + (" ..." if len(files) > 5 else "")})
    ds = ds.rio.write_crs(first.rio.crs).rio.write_transform(first.rio.transform())
    for n in names:                        # as an attribute: write_dataset's encoding would drop rioxarray's
        ds[n].encoding.pop("grid_mapping", None)
        ds[n].attrs["grid_mapping"] = "spatial_ref"
    unit = first.rio.crs.linear_units if first.rio.crs is not None and first.rio.crs.is_projected else None
    for c in ("x", "y"):
        ds[c].attrs["units"] = "m" if unit in ("metre", "meter") else ds[c].attrs.get("units", unit or "1")
    return ds


def time_axis(files, dates_per_file: int, dates, T: int) -> np.ndarray:
    """(T,) datetime64[ns]: --dates, else the dates in the file names (one name per file needs
    dates_per_file 1), else EPOCH + frame index days."""
    if dates:
        if len(dates) != T:
            raise DataError(f"--dates gives {len(dates)} dates for {T} frames")
        return np.array(dates, dtype="datetime64[D]").astype("datetime64[ns]")
    found = [file_date(f.name) for f in files]
    if dates_per_file == 1 and all(d is not None for d in found):
        return np.array(found, dtype="datetime64[D]").astype("datetime64[ns]")
    log.warning("no date per frame in the file names: time is the frame index (days since 2000-01-01); give --dates")
    return (EPOCH + np.arange(T).astype("timedelta64[D]")).astype("datetime64[ns]")


def main(argv=None):
    p = cli.Parser(description=__doc__.split("\n")[0])
    p.add_argument("--dataroot", required=True, help="a folder of GeoTIFFs (or one GeoTIFF)")
    p.add_argument("--out", required=True, help="output NetCDF path")
    p.add_argument("--pattern", default="*.tif", help="files of the folder to read (e.g. '*_merged.tif')")
    p.add_argument("--dates_per_file", type=cli.positive_int, default=1, help="dates stacked in each file's bands")
    p.add_argument("--bands", nargs="+", default=None, help="band names (default HLS B02..B08 for 6 bands)")
    p.add_argument("--scale", type=cli.positive_float, default=1e-4, help="value = DN x scale")
    p.add_argument("--nodata", type=float, default=None, help="DN of missing cells (default: the file's, or -9999)")
    p.add_argument("--cloud_masks", default=None, help="folder (or file) of cloud masks: not 0 = cloud = NaN")
    p.add_argument("--dates", nargs="+", default=None, help="YYYY-MM-DD per date, in order")
    args = p.parse_args(argv)
    setup_logging()
    check_output_file(args.out, "field.nc")
    t0 = time.perf_counter()
    files = tif_files(args.dataroot, args.pattern)
    clouds = tif_files(args.cloud_masks) if args.cloud_masks else None
    ds = convert(files, args.dates_per_file, args.bands, args.scale, args.nodata, clouds, args.dates)
    out = write_dataset(ds, args.out)
    log.info("wrote %s: %d files -> %s, CRS %s, %.1f%% NaN, %.1f s", out, len(files), dict(ds.sizes),
             ds.rio.crs, 100 * float(np.isnan(ds[list(ds.data_vars)[0]].values).mean()), time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
