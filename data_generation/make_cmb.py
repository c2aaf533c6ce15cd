"""Flat patches of simulated cosmic microwave background (CMB) temperature skies, as in CoMBInE.

    python -m data_generation.make_cmb --out data/cmb_patches.nc
    python -m data_generation.make_cmb --out data/cmb_small.nc --nside 64 --reso_arcmin 60 --ny 32 --nx 32 --n_time 20

- spectrum: the lensed TT power spectrum C_ell (uK^2) of a flat LCDM cosmology from CAMB (Planck 2018
  parameters by default), ell = 0 .. lmax.
- skies: full-sky HEALPix maps (`--nside`) drawn from C_ell. The harmonic coefficients come from our own
  seeded stream (a_l0 ~ N(0, C_l), a_lm ~ N(0, C_l / 2) + i N(0, C_l / 2)) and `healpy.alm2map` makes the map,
  so the same seed gives the same skies.
- patches: `--patches_per_sky` patch centres per sky, uniform on the sphere, each at least a patch diagonal
  from the others so patches of one sky never overlap; a new independent sky after every `--patches_per_sky`.
  Each patch is a gnomonic (tangent-plane) projection, `--ny` x `--nx` pixels of `--reso_arcmin`, read from the
  sky by bilinear interpolation (`healpy.projector.GnomonicProj`, `healpy.get_interp_val`).
- file: `temperature(time, y, x)` float32 in uK, one frame per patch ("time" is the patch index); y and x
  are the offsets from the patch centre in degrees; `centre_lon(time)`, `centre_lat(time)` and `sky(time)`
  say where each patch lies; `cl_tt(ell)` is CAMB's spectrum, which the reports draw next to the patches'.

Masks are CoMBInE's through the usual options: point-source holes (`--mask_kind sources`) and a galactic
band (`--mask_kind band`). The contiguous splits put whole skies apart when --patches_per_sky divides them.
`lmax` defaults to the patch Nyquist multipole pi / reso (1080 at 10 arcmin), capped at 3 nside - 1. Maps
carry no beam and no pixel window; at the defaults (nside 1024, 3.4 arcmin HEALPix pixels under 10 arcmin patch
pixels) the patches' flat-sky spectrum (gapfill.report.sky) is within 12% of C_ell in every bin from ell 33 to
1046. Coarser HEALPix pixels under the patch pixels smooth it (nside 512: 60% of C_ell at ell 1000).
"""
from __future__ import annotations

import functools
import logging
import math
import time

import numpy as np
import xarray as xr

from gapfill import cli
from gapfill.data import write_dataset
from gapfill.entry import run_cli
from gapfill.files import check_output_file
from gapfill.system import setup_logging

log = logging.getLogger(__name__)

PLANCK_2018 = {"H0": 67.36, "ombh2": 0.02237, "omch2": 0.1200, "As": 2.100e-9, "ns": 0.9649, "tau": 0.0544}
MAX_TRIES = 20000           # centre draws per sky before giving up on --patches_per_sky


def camb_cl_tt(lmax: int) -> np.ndarray:
    """Lensed TT C_ell in uK^2 for ell = 0 .. lmax (C_0 = C_1 = 0) of PLANCK_2018 from CAMB -> (lmax + 1,)
    float64 (computed once per lmax in a process: CAMB takes seconds)."""
    return np.array(_camb_cl_tt(lmax))


@functools.lru_cache(maxsize=4)
def _camb_cl_tt(lmax: int) -> tuple[float, ...]:
    import camb
    pars = camb.set_params(**PLANCK_2018, lmax=lmax + 100)               # margin: lensing needs higher ell
    cls = camb.get_results(pars).get_cmb_power_spectra(pars, CMB_unit="muK", raw_cl=True)["total"]
    return tuple(np.asarray(cls[: lmax + 1, 0], dtype=np.float64))


def draw_sky(cl: np.ndarray, nside: int, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian full-sky map with power spectrum cl (ell = 0 .. lmax) -> (12 nside^2,) float64, RING order."""
    import healpy as hp
    lmax = len(cl) - 1
    ell, m = hp.Alm.getlm(lmax)
    sd = np.sqrt(cl[ell] / np.where(m == 0, 1.0, 2.0))
    alm = sd * rng.standard_normal(ell.size) + 1j * np.where(m == 0, 0.0, sd * rng.standard_normal(ell.size))
    return hp.alm2map(alm, nside, lmax=lmax)


def patch_centres(n: int, min_sep_deg: float, rng: np.random.Generator) -> np.ndarray:
    """n (lon, lat) degrees, uniform on the sphere, pairwise at least min_sep_deg apart -> (n, 2)."""
    vecs: list[np.ndarray] = []
    cos_sep = math.cos(math.radians(min_sep_deg))
    for _ in range(MAX_TRIES):
        v = rng.standard_normal(3)
        v /= np.linalg.norm(v)
        if not vecs or np.max(np.asarray(vecs) @ v) < cos_sep:
            vecs.append(v)
            if len(vecs) == n:
                break
    else:
        raise ValueError(f"only {len(vecs)} patches {min_sep_deg:.1f} degrees apart fit on one sky "
                         f"(asked {n}): lower --patches_per_sky or make the patches smaller")
    v = np.asarray(vecs)
    return np.stack([np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360, np.degrees(np.arcsin(v[:, 2]))], axis=1)


def gnomonic_patch(sky: np.ndarray, lon: float, lat: float, ny: int, nx: int, reso_arcmin: float) -> np.ndarray:
    """The (ny, nx) tangent-plane patch of `sky` centred on (lon, lat) degrees, rows going north, bilinear."""
    import healpy as hp
    proj = hp.projector.GnomonicProj(rot=(lon, lat, 0.0), xsize=nx, ysize=ny, reso=reso_arcmin)
    x, y = proj.ij2xy()
    theta, phi = proj.xy2ang(x.ravel(), y.ravel())
    return np.asarray(hp.get_interp_val(sky, theta, phi), dtype=np.float64).reshape(ny, nx)


def make_cmb(n_patches: int, ny: int, nx: int, nside: int, reso_arcmin: float, seed: int,
             patches_per_sky: int = 100, lmax: int | None = None) -> xr.Dataset:
    """The patch dataset described in the module docstring."""
    nyquist = int(math.pi / math.radians(reso_arcmin / 60))
    lmax = lmax or min(nyquist, 3 * nside - 1)
    cl = camb_cl_tt(lmax)
    diag = math.hypot(ny, nx) * reso_arcmin / 60
    frames, centres, skies = [], [], []
    for s in range(math.ceil(n_patches / patches_per_sky)):
        rng = np.random.default_rng([seed, s])
        sky = draw_sky(cl, nside, rng)
        k = min(patches_per_sky, n_patches - s * patches_per_sky)
        for lon, lat in patch_centres(k, diag, rng):
            frames.append(gnomonic_patch(sky, lon, lat, ny, nx, reso_arcmin))
            centres.append((lon, lat))
            skies.append(s)
        log.info("sky %d: %d patches", s, k)
    offset = lambda n: (np.arange(n) - (n - 1) / 2) * reso_arcmin / 60       # noqa: E731
    c = np.asarray(centres)
    return xr.Dataset(
        {"temperature": (("time", "y", "x"), np.asarray(frames, dtype=np.float32),
                         {"units": "uK", "long_name": "CMB temperature anisotropy"})},
        coords={"time": ("time", np.arange(len(frames)), {"axis": "T", "long_name": "patch index"}),
                "y": ("y", offset(ny), {"axis": "Y", "units": "degree", "long_name": "gnomonic offset north of the centre"}),
                "x": ("x", offset(nx), {"axis": "X", "units": "degree", "long_name": "gnomonic offset east of the centre"}),
                "centre_lon": ("time", c[:, 0], {"units": "degrees_east", "long_name": "patch centre longitude"}),
                "centre_lat": ("time", c[:, 1], {"units": "degrees_north", "long_name": "patch centre latitude"}),
                "sky": ("time", np.asarray(skies), {"long_name": "index of the full-sky realisation"}),
                "cl_tt": ("ell", cl, {"units": "uK2", "long_name": "CAMB lensed TT angular power spectrum C_ell"}),
                "ell": ("ell", np.arange(lmax + 1), {"long_name": "multipole"})},
        attrs={"Conventions": "CF-1.8", "title": "simulated CMB temperature patches",
               "pixel_arcmin": reso_arcmin,
               "source": f"data_generation.make_cmb seed={seed} nside={nside} lmax={lmax} reso_arcmin={reso_arcmin} "
                         f"patches_per_sky={patches_per_sky} CAMB Planck 2018 LCDM"})


def main(argv=None):
    p = cli.Parser(description=__doc__.split("\n")[0])
    cli.add_generator_args(p, "data/cmb_patches.nc", 300, "number of patches (frames)", ("north", "east"))
    p.add_argument("--nside", type=cli.positive_int, default=1024,
                   help="HEALPix resolution of the skies (1024: 3.4 arcmin pixels)")
    p.add_argument("--reso_arcmin", type=cli.positive_float, default=10.0, help="patch pixel size in arcmin")
    p.add_argument("--patches_per_sky", type=cli.positive_int, default=100,
                   help="non-overlapping patches cut from one sky before the next independent sky")
    p.add_argument("--lmax", type=cli.positive_int, default=None,
                   help="highest multipole drawn (default: the patch Nyquist pi / reso, at most 3 nside - 1)")
    args = p.parse_args(argv)
    setup_logging()
    check_output_file(args.out, "cmb.nc")
    t0 = time.perf_counter()
    ds = make_cmb(args.n_time, args.ny, args.nx, args.nside, args.reso_arcmin, args.seed, args.patches_per_sky,
                  args.lmax)
    out = write_dataset(ds, args.out)
    log.info("wrote %s: %d patches of %d x %d at %g arcmin, %.1f uK rms, %.1f s", out, args.n_time, args.ny, args.nx,
             args.reso_arcmin, float(ds["temperature"].std()), time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
