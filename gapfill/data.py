"""Open a CF NetCDF field as (time, band, y, x), split it in time, normalise it per band.

Any file with a `time` dimension and two spatial dimensions recognised by name opens as it is:
`var1(time, lat, lon)` in Kelvin, `air_temperature(time, latitude, longitude)`, an image stored as
`red/green/blue(time, y, x)`. Every chosen data variable becomes a band; NaN means never observed.
Bad input raises `DataError` with one line naming the file and the problem.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np
import xarray as xr

from gapfill.errors import DataError
from gapfill.files import atomic_path

log = logging.getLogger(__name__)
__all__ = ["DataError", "Field", "Normalizer", "open_field", "split_frames", "write_dataset"]

TIME_NAMES = ("time", "t")
Y_NAMES = ("lat", "latitude", "y", "rlat", "nav_lat")
X_NAMES = ("lon", "longitude", "x", "rlon", "nav_lon")
_UNIT_DAYS = {"day": 1.0, "hour": 1 / 24, "minute": 1 / 1440, "second": 1 / 86400, "week": 7.0}


@dataclass
class Field:
    """A gappy field in memory. `values` is (T, B, Y, X) float32 with NaN where never observed."""

    values: np.ndarray                 # (T, B, Y, X)
    time: np.ndarray                   # (T,) numeric time in `time_units`
    y: np.ndarray                      # (Y,)
    x: np.ndarray                      # (X,)
    bands: list[str]
    units: list[str]
    path: str = ""
    time_units: str | None = None
    calendar: str | None = None
    y_name: str = "y"
    x_name: str = "x"
    attrs: dict = dc_field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        """(T, B, Y, X) bool, True where the field has a value."""
        return np.isfinite(self.values)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        t, b, y, x = self.values.shape
        return t, b, y, x

    @property
    def name(self) -> str:
        """Dataset name for run names and tables: the file stem."""
        return Path(self.path).stem if self.path else "field"

    @property
    def time_days(self) -> np.ndarray:
        """(T,) float64 days since the first frame (frame index if the units are unknown)."""
        t = np.asarray(self.time, dtype=np.float64)
        m = re.match(r"\s*(\w+?)s?\s+since", self.time_units or "")
        scale = _UNIT_DAYS.get(m.group(1).lower(), None) if m else None
        if scale is None:
            return np.arange(len(t), dtype=np.float64)
        return (t - t[0]) * scale

    def frames(self, sl: slice) -> Field:
        """The same field restricted to the frames in `sl`."""
        return Field(self.values[sl], self.time[sl], self.y, self.x, list(self.bands), list(self.units),
                     self.path, self.time_units, self.calendar, self.y_name, self.x_name, dict(self.attrs))

    def coords(self, time_slice: slice = slice(None)) -> dict:
        """xarray coordinates for (time, band, y, x) arrays of the frames in `time_slice`."""
        tattrs = {k: v for k, v in (("units", self.time_units), ("calendar", self.calendar)) if v}
        return {"time": ("time", self.time[time_slice], tattrs), "band": ("band", list(self.bands)),
                "y": ("y", self.y, {"long_name": self.y_name}), "x": ("x", self.x, {"long_name": self.x_name})}


def _fail(path, problem) -> DataError:
    return DataError(f"{path}: {problem}")


def _find_dim(dims, names):
    for d in dims:
        if d.lower() in names:
            return d
    return None


def _field_dims(da: xr.DataArray):
    """(time, y, x) dim names of a variable after dropping singleton extra dims, or None."""
    t, y, x = _find_dim(da.dims, TIME_NAMES), _find_dim(da.dims, Y_NAMES), _find_dim(da.dims, X_NAMES)
    if not (t and y and x):
        return None
    extra = [d for d in da.dims if d not in (t, y, x)]
    if any(da.sizes[d] != 1 for d in extra):
        return None
    return t, y, x


def open_field(path, variables: list[str] | str | None = None) -> Field:
    """Read a CF NetCDF file into a Field; `variables` picks bands (default: every field variable)."""
    path = str(path)
    if not Path(path).exists():
        raise _fail(path, "file does not exist")
    if Path(path).is_dir():
        raise _fail(path, "is a directory, not a NetCDF file")
    try:
        ds = xr.open_dataset(path, decode_times=False)
    except Exception as err:  # xarray raises many kinds for a non-NetCDF file
        raise _fail(path, f"not a readable NetCDF file ({type(err).__name__})") from None
    with ds:
        candidates = {name: dims for name, da in ds.data_vars.items() if (dims := _field_dims(da))}
        if isinstance(variables, str):
            variables = [variables]
        if variables:
            unknown = [v for v in variables if v not in ds.data_vars]
            if unknown:
                raise _fail(path, f"unknown variable {unknown[0]!r}; the file has {sorted(map(str, ds.data_vars))}")
            bad = [v for v in variables if v not in candidates]
            if bad:
                raise _fail(path, f"variable {bad[0]!r} has dims {ds[bad[0]].dims}, "
                                  "not (time, y/lat/latitude, x/lon/longitude)")
            names = list(variables)
        else:
            names = [str(n) for n in candidates]
        if not names:
            raise _fail(path, "no variable with a time dimension and two spatial dimensions "
                              f"(y/lat/latitude, x/lon/longitude); variables: "
                              f"{ {k: v.dims for k, v in ds.data_vars.items()} }")
        dims = {candidates[n] for n in names}
        if len(dims) > 1:
            raise _fail(path, f"variables {names} do not share dimensions ({sorted(dims)}); pick one with --variable")
        tdim, ydim, xdim = dims.pop()
        bands = []
        for n in names:
            da = ds[n].squeeze([d for d in ds[n].dims if d not in (tdim, ydim, xdim)], drop=True)
            bands.append(da.transpose(tdim, ydim, xdim).values.astype(np.float32))
        values = np.stack(bands, axis=1)                                   # (T, B, Y, X)
        tcoord = ds[tdim] if tdim in ds.coords else xr.DataArray(np.arange(ds.sizes[tdim]))
        fld = Field(values=values,
                    time=np.asarray(tcoord.values, dtype=np.float64),
                    y=np.asarray(ds[ydim].values if ydim in ds.coords else np.arange(ds.sizes[ydim])),
                    x=np.asarray(ds[xdim].values if xdim in ds.coords else np.arange(ds.sizes[xdim])),
                    bands=names, units=[str(ds[n].attrs.get("units", "")) for n in names], path=path,
                    time_units=tcoord.attrs.get("units"), calendar=tcoord.attrs.get("calendar"),
                    y_name=ydim, x_name=xdim, attrs=dict(ds.attrs))
    if values.shape[0] == 0 or values.shape[2] < 2 or values.shape[3] < 2:
        raise _fail(path, f"field is too small: (time, y, x) = {values.shape[0], values.shape[2], values.shape[3]}")
    for b, name in enumerate(names):
        if not np.isfinite(values[:, b]).any():
            raise _fail(path, f"variable {name!r} is NaN everywhere: nothing was ever observed")
    log.info("opened %s: bands %s, (T, Y, X) = %s, %.1f%% never observed", path, names,
             (values.shape[0], values.shape[2], values.shape[3]), 100 * (1 - np.isfinite(values).mean()))
    return fld


def split_frames(n_frames: int, num_frames_train: int | None = None, num_frames_valid: int | None = None,
                 num_frames_test: int | None = None, fractions=(0.7, 0.15, 0.15), path: str = "") -> dict:
    """Contiguous train/valid/test slices: by frame counts where given, else by `fractions`.

    Counts that are not given take the fraction's share, the test split takes the rest.
    A single-frame field (an image) is all test: methods see only its observed cells.
    """
    where = path or "split"
    if n_frames == 1 and not any((num_frames_train, num_frames_valid)):
        return {"train": slice(0, 0), "valid": slice(0, 0), "test": slice(0, 1)}
    n_train = num_frames_train if num_frames_train is not None else int(round(fractions[0] * n_frames))
    n_valid = num_frames_valid if num_frames_valid is not None else int(round(fractions[1] * n_frames))
    n_test = num_frames_test if num_frames_test is not None else n_frames - n_train - n_valid
    counts = {"train": n_train, "valid": n_valid, "test": n_test}
    for name, n in counts.items():
        if n <= 0:
            raise DataError(f"{where}: the {name} split has {n} frames (field has {n_frames} frames, "
                            f"train/valid/test = {n_train}/{n_valid}/{n_test}); every split needs at least one")
    if n_train + n_valid + n_test > n_frames:
        raise DataError(f"{where}: train/valid/test = {n_train}/{n_valid}/{n_test} frames "
                        f"but the field has only {n_frames}")
    return {"train": slice(0, n_train), "valid": slice(n_train, n_train + n_valid),
            "test": slice(n_train + n_valid, n_train + n_valid + n_test)}


def write_dataset(ds: xr.Dataset, out) -> Path:
    """Write a CF dataset atomically (temp file, then rename); NaN is the fill value, coordinates have none."""
    out = Path(out)
    enc = {v: {"_FillValue": np.float32(np.nan), "zlib": True, "complevel": 1} for v in ds.data_vars}
    enc.update({c: {"_FillValue": None} for c in ds.coords})
    with atomic_path(out) as tmp:
        ds.to_netcdf(tmp, encoding=enc)
    return out


@dataclass
class Normalizer:
    """Per-band z-score: x_norm = (x - mean[b]) / std[b]. mean, std are (B,)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, observed: np.ndarray | None = None) -> Normalizer:
        """Fit on the valid (and, if given, observed (T, Y, X)) cells of values (T, B, Y, X)."""
        ok = np.isfinite(values)
        if observed is not None:
            ok &= observed[:, None] if observed.ndim == 3 else observed
        mean = np.array([values[:, b][ok[:, b]].mean(dtype=np.float64) for b in range(values.shape[1])])
        std = np.array([values[:, b][ok[:, b]].std(dtype=np.float64) for b in range(values.shape[1])])
        return cls(mean, np.where(std > 0, std, 1.0))

    def _shape(self, a, x):
        return a.reshape((1, -1) + (1,) * (x.ndim - 2)).astype(x.dtype if x.dtype.kind == "f" else np.float64)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """x (T, B, ...) physical -> normalised."""
        return (x - self._shape(self.mean, x)) / self._shape(self.std, x)

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """x (T, B, ...) normalised -> physical units."""
        return x * self._shape(self.std, x) + self._shape(self.mean, x)

    def denormalize_variance(self, v: np.ndarray) -> np.ndarray:
        """Variance (T, B, ...) in normalised units -> physical units squared."""
        return v * self._shape(self.std, v) ** 2

    def to_dict(self) -> dict:
        return {"mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std]}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))
