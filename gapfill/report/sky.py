"""Angular power spectra of flat sky patches (data_generation.make_cmb): the test PDF's CMB page.

A data file that carries a reference spectrum `cl_tt(ell)` and its pixel size (`pixel_arcmin` attribute)
gets a page comparing, on the test frames, the flat-sky spectrum of the truth, of the reconstruction (truth
on observed cells, prediction on hidden ones) and the reference C_ell. Flat-sky estimate of a (Y, X) patch
with pixel d radians: C(ell) = d^2 |FFT|^2 / (Y X), binned at ell = 2 pi k / (min(Y, X) d) (gapfill.metrics
.radial_spectrum's integer wavenumbers k), averaged over frames; drawn as D_ell = ell (ell + 1) C_ell / 2 pi.
"""
from __future__ import annotations

import math

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from gapfill.metrics import radial_spectrum
from gapfill.report.common import PAGE


def flat_sky_cl(frames: np.ndarray, pixel_arcmin: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame-averaged flat-sky C_ell of (T, Y, X) patches -> (ell, C_ell), C_ell in (frame unit)^2 sr."""
    d = math.radians(pixel_arcmin / 60)
    k, _ = radial_spectrum(frames[0])
    power = np.mean([radial_spectrum(f)[1] for f in frames], axis=0)
    return 2 * math.pi * k / (min(frames.shape[1:]) * d), power * d * d


def reference_spectrum(path) -> tuple[np.ndarray, float] | None:
    """(cl_tt (lmax + 1,), pixel_arcmin) of a data file that carries them; None otherwise."""
    with xr.open_dataset(path, decode_times=False) as ds:      # any calendar: only cl_tt is read
        if "cl_tt" not in ds.variables or "pixel_arcmin" not in ds.attrs:
            return None
        return np.asarray(ds["cl_tt"].values, dtype=np.float64), float(ds.attrs["pixel_arcmin"])


def spectrum_figure(truth: np.ndarray, recon: np.ndarray, cl: np.ndarray, pixel_arcmin: float,
                    band: str, unit: str) -> Figure:
    """The page: D_ell of truth, reconstruction and reference (left); reconstruction / truth (right).
    truth, recon: (T, Y, X) test frames of one band in physical units."""
    ell, c_true = flat_sky_cl(truth, pixel_arcmin)
    _, c_rec = flat_sky_cl(recon, pixel_arcmin)
    dl = ell * (ell + 1) / (2 * math.pi)
    fig = Figure(figsize=PAGE, layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    ref = np.arange(2, len(cl))
    ax.plot(ref, ref * (ref + 1) * cl[2:] / (2 * math.pi), "0.5", lw=1, label="reference C_ell (CAMB)")
    ax.plot(ell, dl * c_true, "k-o", ms=3, label="truth patches")
    ax.plot(ell, dl * c_rec, "C0-o", ms=3, label="reconstruction")
    ax.set(xlabel="multipole ell", ylabel=f"ell (ell + 1) C_ell / 2 pi ({unit}^2)", xlim=(0, ell[-1] * 1.02),
           title=f"{band}: flat-sky power spectrum of {len(truth)} test patches ({pixel_arcmin:g} arcmin pixels)")
    ax.legend(fontsize=8)
    ax2.plot(ell, c_rec / c_true, "C0-o", ms=3)
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.set(xlabel="multipole ell", ylabel="C_ell reconstruction / C_ell truth",
            title="power kept by the reconstruction (1: all)")
    return fig


def sky_pages(path, truth: np.ndarray, recon: np.ndarray, bands: list[str], units: list[str]) -> list[Figure]:
    """One spectrum page per band when the data file at `path` carries a reference spectrum, else none.
    truth, recon: (T, B, Y, X) test frames."""
    ref = reference_spectrum(path)
    if ref is None:
        return []
    return [spectrum_figure(truth[:, b], recon[:, b], *ref, bands[b], units[b]) for b in range(len(bands))]
