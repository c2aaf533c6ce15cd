"""Open a CF NetCDF field as (time, band, y, x), split it in time, normalise it per band.

Files from other projects open as they are. The time, Y, X (and level) axes are found the CF way
(cf_xarray: `axis`, `standard_name`, `units` such as `degrees_north`), then by time units `<unit> since
<date>`, then by name (TIME_NAMES, Y_NAMES, X_NAMES, LEVEL_NAMES): `var1(time, lat, lon)` in Kelvin,
`UWND(TIME, FNOCY, FNOCX)`, `t(timestep, lat, lon)`, an image stored as `red/green/blue(time, y, x)`.
Every chosen data variable becomes a band (each level `VAR@LEVEL` of a variable with a level axis, unless
`level` picks one). NaN means never observed: fill values and +/-inf read as NaN; packed integers
(`scale_factor`, `add_offset`) decode to float.

In memory every axis increases: frames are sorted by time (duplicate times are refused), a descending
latitude is flipped (`Field.y_descending`, undone by `Field.file_order` when writing), a longitude that
crosses the 0/360 seam is unwrapped (344..358, 0..14 -> 344..374; the file's values kept in `Field.x_file`
and written back as they were), and a global longitude is marked `Field.x_periodic` (a duplicated wrap
column is dropped). The time axis (units, calendars, sorting) is read by gapfill.times, so `Field.time_days`
is in real days for every CF calendar.
Bad input raises `DataError` with one line naming the file and the problem.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import numpy as np
import xarray as xr

from gapfill.errors import DataError
from gapfill.files import atomic_path
from gapfill.times import days_since_first, decode_times, sort_time, time_unit

log = logging.getLogger(__name__)
__all__ = ["DataError", "Field", "Normalizer", "check_training_frames", "open_field", "split_frames", "write_dataset"]

TIME_NAMES = ("time", "t")                         # name fallbacks when no CF attribute says what an axis is
Y_NAMES = ("lat", "latitude", "y", "rlat", "nav_lat")
X_NAMES = ("lon", "longitude", "x", "rlon", "nav_lon")
LEVEL_NAMES = ("level", "lev", "plev", "depth", "height", "pressure", "isobaric", "z")
LON_NAMES = ("lon", "longitude", "nav_lon")
LEVEL_RTOL = 1e-4                                  # --level matches a level within this relative tolerance


@dataclass
class Field:
    """A gappy field in memory. `values` is (T, B, Y, X) float32 with NaN where never observed; time, y and
    x increase. `y_descending`: the file stores y decreasing; `x_file` (X,): the file's x values where they
    differ from `x` (an unwrapped longitude); `x_periodic`: x is a whole circle of longitude (360 degrees)."""

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
    y_descending: bool = False
    x_periodic: bool = False
    x_file: np.ndarray | None = None   # (X,)

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

    def dates(self) -> np.ndarray | None:
        """(T,) cftime dates in the file's calendar, None when the time units are not '<unit> since <date>'."""
        return decode_times(self.time, self.time_units, self.calendar)

    @property
    def time_days(self) -> np.ndarray:
        """(T,) float64 days since the first frame in the file's calendar (frame index if the units are unknown)."""
        return days_since_first(self.time, self.time_units, self.calendar)

    def frames(self, sl: slice) -> Field:
        """The same field restricted to the frames in `sl`."""
        return dataclasses.replace(self, values=self.values[sl], time=self.time[sl], bands=list(self.bands),
                                   units=list(self.units), attrs=dict(self.attrs))

    def coords(self, time_slice: slice = slice(None)) -> dict:
        """xarray coordinates (in memory order) for (time, band, y, x) arrays of the frames in `time_slice`."""
        tattrs = {k: v for k, v in (("units", self.time_units), ("calendar", self.calendar)) if v}
        return {"time": ("time", self.time[time_slice], tattrs), "band": ("band", list(self.bands)),
                "y": ("y", self.y, {"long_name": self.y_name}), "x": ("x", self.x, {"long_name": self.x_name})}

    def file_order(self, ds: xr.Dataset) -> xr.Dataset:
        """`ds` on this field's (y, x) grid as the file stores it: y flipped back when the file's y decreases,
        x the file's own values (a longitude as written there, 344..358, 0..14 rather than 344..374)."""
        if self.y_descending and "y" in ds.dims:
            ds = ds.isel(y=slice(None, None, -1))
        if self.x_file is not None and "x" in ds.dims:
            ds = ds.assign_coords(x=("x", np.asarray(self.x_file), ds["x"].attrs))
        return ds


def _fail(path, problem) -> DataError:
    return DataError(f"{path}: {problem}")


_CF_KEYS = (("T", "T", "time"), ("Y", "Y", "latitude"), ("X", "X", "longitude"), ("Z", "Z", "vertical"))
_NAMES = {"T": TIME_NAMES, "Y": Y_NAMES, "X": X_NAMES, "Z": LEVEL_NAMES}


def _axis_roles(da: xr.DataArray) -> dict[str, str]:
    """{role: dim} for roles T, Y, X, Z (level) among the dims of `da`: CF attributes of the dims' 1-D
    coordinates first (cf_xarray axes and coordinates), then time units '<unit> since <date>', then names."""
    roles: dict[str, str] = {}
    taken: set = set()

    def claim(role, dim):
        if role not in roles and dim not in taken:
            roles[role] = dim
            taken.add(dim)
    try:
        axes, coordinates = da.cf.axes, da.cf.coordinates
    except Exception:  # cf_xarray could not read the attributes: names decide
        axes, coordinates = {}, {}
    for role, axis_key, coord_key in _CF_KEYS:
        for name in [*axes.get(axis_key, []), *coordinates.get(coord_key, [])]:
            c = da.coords[name]
            if c.ndim == 1 and c.dims[0] in da.dims:
                claim(role, c.dims[0])
    for d in da.dims:
        if d in da.coords and time_unit(str(da[d].attrs.get("units", "")))[0] is not None:
            claim("T", d)
    for role, names in _NAMES.items():
        for d in da.dims:
            if str(d).lower() in names:
                claim(role, d)
    if "T" not in roles and "Y" in roles and "X" in roles and da.ndim >= 3 and _increasing(da, da.dims[0]):
        claim("T", da.dims[0])        # NCL's Tstorm.cdf: t(timestep, lat, lon), `timestep` without attributes
        roles["T_guessed"] = str(da.dims[0])
    return roles


def _increasing(da: xr.DataArray, dim) -> bool:
    """True when `dim` has no coordinate or a 1-D numeric one that strictly increases (it can be time)."""
    if dim not in da.coords:
        return True
    v = da.coords[dim].values
    return v.ndim == 1 and np.issubdtype(v.dtype, np.number) and bool(np.all(np.diff(v.astype(np.float64)) > 0))


def _field_dims(da: xr.DataArray) -> tuple[tuple | None, str]:
    """((time, y, x, level or None) dim names, '') of a variable, or (None, why not). Extra singleton dims
    are dropped; a singleton level axis counts as none."""
    roles = _axis_roles(da)
    t, y, x, z = (roles.get(r) for r in "TYXZ")
    if not (t and y and x):
        return None, "no time and two spatial axes"
    if "T_guessed" in roles:
        log.warning("variable %r %s: no axis is marked as time (no units 'since', axis T or time name); taking its "
                    "leading axis %r, which increases, as time", da.name, da.dims, t)
    if z is not None and da.sizes[z] == 1:
        z = None
    extra = [d for d in da.dims if d not in (t, y, x, z) and da.sizes[d] != 1]
    if extra:
        return None, (f"axis {extra[0]!r} of size {da.sizes[extra[0]]} is neither time, y, x nor a level axis "
                      f"({'/'.join(LEVEL_NAMES[:4])} or CF axis Z); select one of its values before use")
    return (t, y, x, z), ""


def _is_longitude(ds: xr.Dataset, dim: str) -> bool:
    """True when x is a longitude: cf_xarray says so (standard_name, units degrees_east), or its name."""
    if dim in ds.coords and dim in ds[dim].cf.coordinates.get("longitude", []):
        return True
    return str(dim).lower() in LON_NAMES


def _level_bands(path, name: str, da: xr.DataArray, orig: xr.DataArray, z: str | None,
                 level: float | None) -> list[tuple[str, xr.DataArray]]:
    """[(band name, da without its level axis)]: one band per level (`name@level`), or the level `level`.
    `orig` is the variable as in the file (its singleton level, if any, must then be `level`)."""
    zc = da[z] if z is not None and z in da.coords else None
    if z is None:
        if level is not None:
            zs = _axis_roles(orig).get("Z")
            have = np.asarray(orig[zs].values, dtype=np.float64).ravel() if zs in orig.coords else np.array([])
            if not np.isclose(have, level, rtol=LEVEL_RTOL).any():
                raise _fail(path, f"--level {level:g} given but variable {name!r} {orig.dims} has no level axis with "
                                  "that level" + (f" ({zs!r} = {', '.join(f'{v:g}' for v in have)})" if have.size else ""))
        return [(name, da)]
    levels = np.asarray(zc.values, dtype=np.float64) if zc is not None else np.arange(da.sizes[z], dtype=np.float64)
    if level is None:
        return [(f"{name}@{lv:g}", da.isel({z: k})) for k, lv in enumerate(levels)]
    hit = np.flatnonzero(np.isclose(levels, level, rtol=LEVEL_RTOL, atol=1e-9))
    if hit.size == 0:
        raise _fail(path, f"--level {level:g} is not a level of {name!r}; its {z!r} levels are "
                          f"{', '.join(f'{lv:g}' for lv in levels)}")
    return [(name, da.isel({z: int(hit[0])}))]


def open_field(path, variables: list[str] | str | None = None, level: float | None = None) -> Field:
    """Read a CF NetCDF file into a Field; `variables` picks bands (default: every field variable), `level`
    one level of a variable with a level axis (default: every level, each a band `VAR@LEVEL`)."""
    path = str(path)
    if not Path(path).exists():
        raise _fail(path, "file does not exist")
    if Path(path).is_dir():
        raise _fail(path, "is a directory, not a NetCDF file")
    try:
        ds = xr.open_dataset(path, decode_times=False, decode_timedelta=False, mask_and_scale=True)
    except Exception as err:  # xarray raises many kinds for a non-NetCDF file
        raise _fail(path, f"not a readable NetCDF file ({type(err).__name__})") from None
    with ds:
        found = {str(name): _field_dims(da) for name, da in ds.data_vars.items()}
        candidates = {name: dims for name, (dims, _) in found.items() if dims}
        if isinstance(variables, str):
            variables = [variables]
        if variables:
            unknown = [v for v in variables if v not in ds.data_vars]
            if unknown:
                raise _fail(path, f"unknown variable {unknown[0]!r}; the file has {sorted(map(str, ds.data_vars))}")
            bad = [v for v in variables if v not in candidates]
            if bad:
                why = found[bad[0]][1]
                raise _fail(path, f"variable {bad[0]!r} has dims {ds[bad[0]].dims}: " + (
                    why if why.startswith("axis") else "not (time, y/lat/latitude, x/lon/longitude)"))
            names = list(variables)
        else:
            names = list(candidates)
        if not names:
            axis_errors = [f"variable {n!r} {ds[n].dims}: {why}" for n, (_, why) in found.items() if why.startswith("axis")]
            if axis_errors:
                raise _fail(path, axis_errors[0])
            raise _fail(path, "no variable with a time dimension and two spatial dimensions "
                              f"(y/lat/latitude, x/lon/longitude); variables: "
                              f"{ {k: v.dims for k, v in ds.data_vars.items()} }")
        dims = {candidates[n] for n in names}
        if len(dims) > 1:
            raise _fail(path, f"variables {names} do not share dimensions ({sorted(dims, key=str)}); "
                              "pick one with --variable")
        tdim, ydim, xdim, zdim = dims.pop()
        bands, band_names, units = [], [], []
        for n in names:
            da = ds[n].squeeze([d for d in ds[n].dims if d not in (tdim, ydim, xdim, zdim)], drop=True)
            for band, sub in _level_bands(path, n, da, ds[n], zdim, level):
                bands.append(sub.transpose(tdim, ydim, xdim).values.astype(np.float32))
                band_names.append(band)
                units.append(str(ds[n].attrs.get("units", "")))
        values = np.stack(bands, axis=1)                                   # (T, B, Y, X)
        tcoord = ds[tdim] if tdim in ds.coords else xr.DataArray(np.arange(ds.sizes[tdim]))
        time = np.asarray(tcoord.values, dtype=np.float64)
        y = np.asarray(ds[ydim].values if ydim in ds.coords else np.arange(ds.sizes[ydim]))
        x = np.asarray(ds[xdim].values if xdim in ds.coords else np.arange(ds.sizes[xdim]))
        lon = _is_longitude(ds, xdim)
        time_units, calendar = tcoord.attrs.get("units"), tcoord.attrs.get("calendar")
        attrs = dict(ds.attrs)
    if values.shape[0] == 0 or values.shape[2] < 2 or values.shape[3] < 2:
        raise _fail(path, f"field is too small: (time, y, x) = {values.shape[0], values.shape[2], values.shape[3]}")
    values, time = sort_time(path, values, time, time_units, calendar)
    n_inf = int(np.isinf(values).sum())
    if n_inf:
        log.warning("%s: %d cells are +/-inf (or beyond float32); they count as never observed", path, n_inf)
        values[np.isinf(values)] = np.nan
    y_desc = y.size > 1 and bool(np.all(np.diff(y) < 0))
    if y_desc:                                                         # in memory y increases
        y, values = y[::-1].copy(), values[:, :, ::-1].copy()
        log.info("%s: %s decreases in the file; flipped on read (written back in the file's order)", path, ydim)
    x, x_file, periodic, values = _longitude(path, x, values) if lon else (x, None, False, values)
    for b, name in enumerate(band_names):
        if not np.isfinite(values[:, b]).any():
            raise _fail(path, f"variable {name!r} is NaN everywhere: nothing was ever observed")
    fld = Field(values=values, time=time, y=y, x=x, bands=band_names, units=units, path=path, time_units=time_units,
                calendar=calendar, y_name=ydim, x_name=xdim, attrs=attrs, y_descending=y_desc, x_periodic=periodic,
                x_file=x_file)
    log.info("opened %s: bands %s, (T, Y, X) = %s, %.1f%% never observed", path, band_names,
             (values.shape[0], values.shape[2], values.shape[3]), 100 * (1 - np.isfinite(values).mean()))
    return fld


def _longitude(path, x: np.ndarray, values: np.ndarray):
    """(x (X',), x_file (X',) or None, periodic, values (T, B, Y, X')) for a longitude x (X,): unwrapped to
    increase across the 0/360 seam (x_file: the file's values), a global axis periodic, a duplicated wrap
    column (x[-1] = x[0] + 360) dropped."""
    x = np.asarray(x, dtype=np.float64)
    x_file = None
    if x.size > 1 and np.any(np.diff(x) <= 0):
        xu = np.unwrap(x, period=360.0)
        if np.all(np.diff(xu) > 0):
            x_file, x = x, xu
            log.info("%s: longitude crosses the 0/360 seam; unwrapped to %g..%g in memory", path, x[0], x[-1])
    if x.size < 3 or not np.all(np.diff(x) > 0):
        return x, x_file, False, values
    step = float(np.median(np.diff(x)))
    span = float(x[-1] - x[0])
    tol = 0.05 * step
    if abs(span - 360.0) <= tol:                                       # the first column repeated at the end
        log.info("%s: longitude %g repeats %g (a wrap column); dropped on read", path, x[-1], x[0])
        x, values = x[:-1], values[..., :-1]
        x_file = None if x_file is None else x_file[:-1]
        span -= step
    periodic = abs(span + step - 360.0) <= tol
    if periodic:
        log.info("%s: longitude covers the globe (%g..%g step %g): x is periodic", path, x[0], x[-1], step)
    return x, x_file, periodic, values


def check_training_frames(field: Field, train: slice) -> None:
    """DataError naming the first band with no valid cell in the training frames `train`."""
    ok = np.isfinite(field.values[train]).any(axis=(0, 2, 3))         # (B,)
    if not ok.all():
        b = int(np.flatnonzero(~ok)[0])
        raise _fail(field.path, f"band {field.bands[b]!r} has no valid cell in the {train.stop - train.start} training "
                                f"frames ({train.start}..{train.stop - 1}); methods cannot learn it (more training "
                                "frames or another --variable)")


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
