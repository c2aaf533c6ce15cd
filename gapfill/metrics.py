"""Masked scores for gap-filled fields: point errors, probabilistic scores, SSIM, spectra.

Every score is computed here once and only on *scored* cells (``valid & ~observed``), in
physical units. Inputs may be float32; all arithmetic is float64. Scores fail loudly: a
non-finite prediction (or variance) on a scored cell raises ``ValueError`` instead of being
silently skipped, so a broken model can never look good.
"""
import logging
import math

import numpy as np
from scipy.special import ndtr, ndtri
from skimage.metrics import structural_similarity

logger = logging.getLogger(__name__)

SSIM_MIN_SIZE = 7  # smallest frame side scored by SSIM; smaller frames give nan


# ---------------------------------------------------------------- helpers
def scored_cells(observed, valid):
    """observed (T, Y, X) or (T, B, Y, X) bool, valid (T, B, Y, X) bool -> (T, B, Y, X) valid & ~observed."""
    observed = np.asarray(observed, dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    if valid.ndim != 4:
        raise ValueError(f"valid must be (T, B, Y, X), got shape {valid.shape}.")
    if observed.ndim == 3:
        observed = observed[:, None]
    if observed.ndim != 4 or observed.shape[0] != valid.shape[0] or observed.shape[2:] != valid.shape[2:] \
            or observed.shape[1] not in (1, valid.shape[1]):
        raise ValueError(f"observed shape {observed.shape} does not match valid shape {valid.shape}.")
    return valid & ~observed


def _gather(scored, **arrays):
    """Broadcast ``arrays`` against ``scored`` and return their scored values as 1-D float64 arrays.

    Raises ValueError when nothing is scored or a named array has non-finite values on scored cells.
    """
    scored = np.asarray(scored, dtype=bool)
    arrs = [np.asarray(a) for a in arrays.values()]
    try:
        shape = np.broadcast_shapes(scored.shape, *(a.shape for a in arrs))
    except ValueError:
        shapes = {k: np.shape(a) for k, a in arrays.items()}
        raise ValueError(f"array shapes do not match the scored mask {scored.shape}: {shapes}.") from None
    scored = np.broadcast_to(scored, shape)
    n = int(scored.sum())
    if n == 0:
        raise ValueError("no cell is scored (scored mask is all False).")
    out = []
    for name, a in zip(arrays, arrs, strict=False):
        vals = np.broadcast_to(a, shape)[scored].astype(np.float64)
        bad = int((~np.isfinite(vals)).sum())
        if bad:
            raise ValueError(f"{name} has {bad} non-finite values on scored cells.")
        out.append(vals)
    return out


def _gather_var(scored, truth, mean, var):
    """Scored (y, m, v) as float64 1-D arrays, checking v > 0."""
    y, m, v = _gather(scored, truth=truth, prediction=mean, variance=var)
    nonpos = int((v <= 0).sum())
    if nonpos:
        raise ValueError(f"variance has {nonpos} non-positive values on scored cells (min {v.min():g}).")
    return y, m, v


def _clean(obj):
    """Recursively turn numpy scalars/arrays into plain Python and NaN/inf into None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


# ---------------------------------------------------------------- point errors
def mae(truth, pred, scored):
    """Mean absolute error over scored cells; arrays of one shape (scored broadcastable)."""
    y, p = _gather(scored, truth=truth, prediction=pred)
    return float(np.mean(np.abs(p - y)))


def rmse(truth, pred, scored):
    """Root mean squared error over scored cells: truth, pred and scored (bool) of shapes that broadcast
    (e.g. (T, B, Y, X) each)."""
    y, p = _gather(scored, truth=truth, prediction=pred)
    return float(np.sqrt(np.mean((p - y) ** 2)))


def difference_stats(truth, pred, scored) -> dict:
    """CoMBInE's per-epoch statistics of a reconstruction on the `scored` cells, arrays (T, ...) with frames
    first: 'abs_mean' and 'abs_std' of |pred - truth|, 'pct_difference' = 100 x mean |difference| / mean
    |truth - its mean| (relative to the field's own spread: a CMB patch has mean near zero), and per frame
    'frame_cells' (scored cells), 'frame_share' (their share of the frame) and 'frame_rmse' (error against
    mask size)."""
    y, p = _gather(scored, truth=truth, prediction=pred)
    d = np.abs(p - y)
    scored = np.asarray(scored, bool)
    per = scored.reshape(len(scored), -1)
    frame_cells = per.sum(1)
    sq = np.where(scored, (np.asarray(pred, np.float64) - np.asarray(truth, np.float64)) ** 2, 0.0)
    frame_rmse = np.sqrt(sq.reshape(len(scored), -1).sum(1) / np.maximum(frame_cells, 1))
    return {"abs_mean": float(d.mean()), "abs_std": float(d.std()),
            "pct_difference": float(100 * d.mean() / max(np.abs(y - y.mean()).mean(), 1e-300)),
            "frame_cells": frame_cells.tolist(), "frame_share": (frame_cells / per.shape[1]).tolist(),
            "frame_rmse": np.where(frame_cells > 0, frame_rmse, np.nan).tolist()}


def bias(truth, pred, scored):
    """Mean of (pred - truth) over scored cells."""
    y, p = _gather(scored, truth=truth, prediction=pred)
    return float(np.mean(p - y))


def r2(truth, pred, scored):
    """1 - SSE/SST over scored cells (SST about the scored truth mean); nan if the scored truth is constant."""
    y, p = _gather(scored, truth=truth, prediction=pred)
    sst = np.sum((y - y.mean()) ** 2)
    if sst == 0:
        return float("nan")
    return float(1.0 - np.sum((p - y) ** 2) / sst)


# ---------------------------------------------------------------- structure
def ssim(truth2d, pred2d, scored2d):
    """SSIM of one (Y, X) frame averaged over scored cells.

    Non-finite cells of truth and of pred outside the scored cells are filled with the truth's
    finite mean; the SSIM map is skimage's (gaussian window sigma 1.5, population covariance,
    data_range = truth max - min over finite cells, 1.0 if zero). Frames with a side smaller
    than 7 return nan (the window does not fit).
    """
    truth2d = np.asarray(truth2d, dtype=np.float64)
    pred2d = np.asarray(pred2d, dtype=np.float64)
    scored2d = np.broadcast_to(np.asarray(scored2d, dtype=bool), truth2d.shape)
    if truth2d.ndim != 2 or pred2d.shape != truth2d.shape:
        raise ValueError(f"ssim needs two (Y, X) frames of one shape, got {truth2d.shape} and {pred2d.shape}.")
    _gather(scored2d, truth=truth2d, prediction=pred2d)  # checks: something scored, finite there
    if min(truth2d.shape) < SSIM_MIN_SIZE:
        return float("nan")
    finite = np.isfinite(truth2d)
    fill = truth2d[finite].mean()
    rng = float(truth2d[finite].max() - truth2d[finite].min())
    if rng == 0:
        rng = 1.0
    t = np.where(finite, truth2d, fill)
    p = np.where(np.isfinite(pred2d), pred2d, fill)
    # win_size only sets the minimum frame size and the border crop of skimage's own mean (unused
    # here); the gaussian filter itself is set by sigma.
    _, smap = structural_similarity(t, p, full=True, data_range=rng, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, win_size=SSIM_MIN_SIZE)
    return float(smap[scored2d].mean())


# ---------------------------------------------------------------- probabilistic scores
def gaussian_nll(truth, mean, var, scored):
    """Mean Gaussian negative log-likelihood 0.5*log(2 pi var) + (y - m)^2 / (2 var) over scored cells."""
    y, m, v = _gather_var(scored, truth, mean, var)
    return float(np.mean(0.5 * np.log(2 * np.pi * v) + (y - m) ** 2 / (2 * v)))


def crps_gaussian(truth, mean, var, scored):
    """Mean closed-form CRPS of N(m, var) at y (Gneiting et al. 2005) over scored cells."""
    y, m, v = _gather_var(scored, truth, mean, var)
    s = np.sqrt(v)
    z = (y - m) / s
    pdf = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
    crps = s * (z * (2 * ndtr(z) - 1) + 2 * pdf - 1 / np.sqrt(np.pi))
    return float(np.mean(crps))


def coverage(truth, mean, var, scored, level=0.95):
    """Share of scored truths inside the central ``level`` interval m +- z * sqrt(var)."""
    if not 0 < level < 1:
        raise ValueError(f"coverage level must be in (0, 1), got {level}.")
    y, m, v = _gather_var(scored, truth, mean, var)
    z = ndtri(0.5 + level / 2)
    return float(np.mean(np.abs(y - m) <= z * np.sqrt(v)))


def std_error_corr(truth, mean, var, scored):
    """Pearson correlation of sqrt(var) with |y - m| over scored cells; nan if either is constant."""
    y, m, v = _gather_var(scored, truth, mean, var)
    s, e = np.sqrt(v), np.abs(y - m)
    if np.ptp(s) <= 1e-9 * np.abs(s).max() or np.ptp(e) == 0:
        return float("nan")                       # constant std (homoscedastic): no correlation to speak of
    s, e = s - s.mean(), e - e.mean()
    den = np.sqrt(np.sum(s**2) * np.sum(e**2))
    if den == 0:
        return float("nan")
    return float(np.sum(s * e) / den)


# ---------------------------------------------------------------- spectra
def radial_spectrum(frame2d):
    """Radially averaged power spectrum of a (Y, X) frame -> (k, power), k = 1 .. min(Y, X) // 2.

    NaN cells are filled with the frame's finite mean, the mean is removed, power is
    |FFT|^2 / (Y * X) and is averaged over bins k = round(sqrt(ky^2 + kx^2)) with integer
    wavenumbers ky, kx (cycles per frame side).
    """
    f = np.asarray(frame2d, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"radial_spectrum needs a (Y, X) frame, got shape {f.shape}.")
    finite = np.isfinite(f)
    if not finite.any():
        raise ValueError("radial_spectrum got a frame with no finite value.")
    ny, nx = f.shape
    f = np.where(finite, f, f[finite].mean())
    f = f - f.mean()
    power = np.abs(np.fft.fft2(f)) ** 2 / (ny * nx)
    ky = np.fft.fftfreq(ny) * ny
    kx = np.fft.fftfreq(nx) * nx
    kr = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(int)
    k = np.arange(1, min(ny, nx) // 2 + 1)
    sums = np.bincount(kr.ravel(), weights=power.ravel(), minlength=k[-1] + 1 if len(k) else 1)
    counts = np.bincount(kr.ravel(), minlength=len(sums))
    return k, sums[k] / counts[k]


# ---------------------------------------------------------------- everything at once
def _point_scores(truth, mean, var, scored):
    """mae, rmse, bias, n_scored (+ crps, coverage95 with var) on scored cells; nan when none."""
    n = int(np.sum(scored))
    keys = ["mae", "rmse", "bias"] + (["crps", "coverage95"] if var is not None else [])
    if n == 0:
        return {**{k: float("nan") for k in keys}, "n_scored": 0}
    out = {"mae": mae(truth, mean, scored), "rmse": rmse(truth, mean, scored), "bias": bias(truth, mean, scored)}
    if var is not None:
        out["crps"] = crps_gaussian(truth, mean, var, scored)
        out["coverage95"] = coverage(truth, mean, var, scored, 0.95)
    out["n_scored"] = n
    return out


def _summary_scores(truth, mean, var, scored, ssims):
    """Full key set for 'overall' / 'per_band' entries; ssims are the per-frame SSIMs to average."""
    n = int(np.sum(scored))
    keys = ["mae", "rmse", "bias", "r2", "ssim"]
    if var is not None:
        keys += ["nll", "crps", "coverage95", "std_error_corr", "mean_variance"]
    if n == 0:
        return {**{k: float("nan") for k in keys}, "n_scored": 0}
    out = {"mae": mae(truth, mean, scored), "rmse": rmse(truth, mean, scored), "bias": bias(truth, mean, scored),
           "r2": r2(truth, mean, scored), "ssim": _nanmean(ssims)}
    if var is not None:
        out["nll"] = gaussian_nll(truth, mean, var, scored)
        out["crps"] = crps_gaussian(truth, mean, var, scored)
        out["coverage95"] = coverage(truth, mean, var, scored, 0.95)
        out["std_error_corr"] = std_error_corr(truth, mean, var, scored)
        out["mean_variance"] = float(np.mean(np.asarray(var, dtype=np.float64)[scored]))
    out["n_scored"] = n
    return out


def _nanmean(values):
    vals = np.asarray(values, dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if vals.size else float("nan")


def compute_metrics(truth, mean, observed, valid, variance=None, band_names=None):
    """Every score of one reconstruction, as a JSON-ready dict (NaN written as None).

    truth, mean, variance: (T, B, Y, X); observed: (T, Y, X) or (T, B, Y, X); valid: (T, B, Y, X).
    SSIM and the spectrum use the reconstruction (truth on observed cells, mean on scored cells).
    Raises ValueError when nothing is scored or mean/variance are non-finite on a scored cell.
    """
    truth = np.asarray(truth, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    if truth.ndim != 4 or mean.shape != truth.shape:
        raise ValueError(f"truth and mean must both be (T, B, Y, X), got {truth.shape} and {mean.shape}.")
    if np.shape(valid) != truth.shape:
        raise ValueError(f"valid shape {np.shape(valid)} does not match truth shape {truth.shape}.")
    var = None if variance is None else np.asarray(variance, dtype=np.float64)
    if var is not None and var.shape != truth.shape:
        raise ValueError(f"variance shape {var.shape} does not match truth shape {truth.shape}.")
    T, B = truth.shape[:2]
    if band_names is None:
        band_names = [f"band{b}" for b in range(B)]
    if len(band_names) != B:
        raise ValueError(f"band_names has {len(band_names)} names for {B} bands: {list(band_names)}.")
    scored = scored_cells(observed, valid)
    if not scored.any():
        raise ValueError("no cell is scored: every valid cell is observed.")
    if var is None:  # fail on bad predictions before any per-frame work, with whole-array counts
        _gather(scored, truth=truth, prediction=mean)
    else:
        _gather_var(scored, truth, mean, var)

    recon = np.where(scored, mean, truth)  # (T, B, Y, X), NaN where never observed
    ssim_tb = np.full((T, B), np.nan)
    for t in range(T):
        for b in range(B):
            if scored[t, b].any():
                ssim_tb[t, b] = ssim(truth[t, b], recon[t, b], scored[t, b])

    def sel(a, idx):
        return None if a is None else a[idx]

    overall = _summary_scores(truth, mean, var, scored, ssim_tb.ravel())
    per_band = {name: _summary_scores(truth[:, b], mean[:, b], sel(var, np.s_[:, b]), scored[:, b], ssim_tb[:, b])
                for b, name in enumerate(band_names)}
    per_frame = []
    for t in range(T):
        entry = {"frame": t, **_point_scores(truth[t], mean[t], sel(var, t), scored[t]), "ssim": _nanmean(ssim_tb[t])}
        per_frame.append(entry)

    spec_t, spec_p, k = [], [], None
    for t in range(T):
        for b in range(B):
            if np.isfinite(truth[t, b]).any():
                k, pt = radial_spectrum(truth[t, b])
                spec_t.append(pt)
                spec_p.append(radial_spectrum(recon[t, b])[1])
    spectrum = {"k": [] if k is None else k,
                "truth": np.mean(spec_t, axis=0) if spec_t else [],
                "pred": np.mean(spec_p, axis=0) if spec_p else []}
    logger.debug("scored %d cells over %d frames x %d bands", overall["n_scored"], T, B)
    return _clean({"overall": overall, "per_band": per_band, "per_frame": per_frame,
                   "spectrum": spectrum, "has_variance": var is not None})
