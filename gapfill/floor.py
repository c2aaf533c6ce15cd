"""The classical floor every report shows, and the first guess neural methods refine: climatology,
persistence, spatial interpolation and anomaly interpolation.

Every function takes `visible` (T, B, Y, X): the field as the model may see it (training frames complete,
other frames NaN wherever hidden or never observed), and returns the reconstruction of the frames in
`target` (a slice), (T_target, B, Y, X) in the units of `visible`. None of them has a variance.
`x_periodic=True` (a field whose x is a whole circle of longitude, `Field.x_periodic`) makes the spatial
interpolation wrap across the seam: the last column neighbours the first.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.interpolate import griddata
from tqdm import tqdm

from gapfill.dineof import dineof, dineof_rank_mean

FLOOR = ("climatology", "persistence", "interpolation", "anomaly_interpolation")   # shown next to every run
BASELINES = (*FLOOR, "dineof")                   # what the baseline scripts run


def climatology(visible: np.ndarray, train: slice) -> np.ndarray:
    """Per-cell mean over the training frames, (B, Y, X). Cells never seen there take the band mean
    of all visible cells (a single-frame image has no training frames: its observed mean)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)                     # all-NaN cells: handled below
        clim = np.nanmean(visible[train], axis=0) if train.stop > train.start else np.full(visible.shape[1:], np.nan)
        band_mean = np.nanmean(visible, axis=(0, 2, 3))                       # (B,)
    return np.where(np.isfinite(clim), clim, band_mean[:, None, None])


def persistence(visible: np.ndarray, target: slice, clim: np.ndarray) -> np.ndarray:
    """Last visible value of each cell before or at each target frame (climatology if none)."""
    last = np.full(visible.shape[1:], np.nan)
    out = []
    for t in range(target.stop):
        seen = np.isfinite(visible[t])
        last[seen] = visible[t][seen]
        if t >= target.start:
            out.append(np.where(np.isfinite(last), last, clim))
    return np.stack(out)


def _interp_frame(frame: np.ndarray, x_periodic: bool = False) -> np.ndarray:
    """Fill NaN cells of one (Y, X) frame: linear inside the hull of the visible cells, nearest outside.
    Periodic x: the visible cells are repeated one period (X columns) either side, so that holes near the
    seam take their neighbours across it."""
    ok = np.isfinite(frame)
    if ok.all() or not ok.any():
        return frame.copy()
    pts = np.argwhere(ok)
    vals = frame[ok]
    holes = np.argwhere(~ok)
    if x_periodic:
        X = frame.shape[1]
        pts = np.concatenate([pts + [0, k * X] for k in (-1, 0, 1)])
        vals = np.tile(vals, 3)
    out = frame.copy()
    try:
        lin = griddata(pts, vals, holes, method="linear") if len(pts) >= 3 else np.full(len(holes), np.nan)
    except Exception:  # collinear points: Qhull cannot triangulate
        lin = np.full(len(holes), np.nan)
    far = ~np.isfinite(lin)
    if far.any():
        lin[far] = griddata(pts, vals, holes[far], method="nearest")
    out[~ok] = lin
    return out


def interpolation(visible: np.ndarray, target: slice, clim: np.ndarray, anomaly: bool = False,
                  x_periodic: bool = False) -> np.ndarray:
    """Per frame and band spatial interpolation of the visible cells (of anomalies from `clim` if asked);
    `x_periodic`: x wraps (see the module docstring)."""
    frames = visible[target] - (clim if anomaly else 0)
    out = np.empty_like(frames)
    for t in range(frames.shape[0]):
        for b in range(frames.shape[1]):
            f = _interp_frame(frames[t, b], x_periodic)
            out[t, b] = np.where(np.isfinite(f), f, 0.0 if anomaly else clim[b])
    return out + (clim if anomaly else 0)


def reconstruct_floor(method: str, visible: np.ndarray, train: slice, target: slice,
                      x_periodic: bool = False) -> np.ndarray:
    """One method of the floor: the reconstruction (T_target, B, Y, X) of the `target` frames; `x_periodic`:
    x wraps in the spatial interpolations."""
    clim = climatology(visible, train)
    if method == "climatology":
        return np.broadcast_to(clim, visible[target].shape).copy()
    if method == "persistence":
        return persistence(visible, target, clim)
    if method in ("interpolation", "anomaly_interpolation"):
        return interpolation(visible, target, clim, anomaly=method == "anomaly_interpolation", x_periodic=x_periodic)
    raise ValueError(f"unknown floor method {method!r}; choose one of {', '.join(FLOOR)}")


def baseline_options(args: dict, rank: int | None = None) -> dict:
    """Keyword options of `reconstruct_baseline` from a run's options (train_baselines' argparse names)."""
    if args["method"] != "dineof":
        return {}
    return {"rank": rank or None, "max_rank": args["max_rank"], "seed": args["seed"], "max_iter": args["max_iters"]}


def reconstruct_baseline(method: str, visible: np.ndarray, train: slice, target: slice, x_periodic: bool = False, **kw):
    """Run one classical method; returns (mean, variance or None, info) for the `target` frames."""
    if method in FLOOR:
        return reconstruct_floor(method, visible, train, target, x_periodic=x_periodic), None, {}
    if method == "dineof":
        return dineof(visible, target, climatology(visible, train), **kw)
    raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")


# ------------------------------------------------------------------------------ first guess
FIRST_GUESS = ("none", "frame_mean", "climatology", "interpolation", "anomaly_interpolation", "time_interpolation",
               "space_time", "dineof")
# what `--first_guess auto` chooses from, on the validation frames: the floor methods a frame's guess can be
# made of (persistence is time interpolation that looks one way only)
AUTO_CANDIDATES = ("climatology", "interpolation", "anomaly_interpolation", "time_interpolation", "space_time",
                   "dineof")
INTERPOLATING = ("interpolation", "anomaly_interpolation", "time_interpolation", "space_time", "dineof")
GUESS_TAG = {"none": "none", "frame_mean": "mean", "climatology": "clim", "interpolation": "interp",
             "anomaly_interpolation": "anom", "time_interpolation": "time", "space_time": "st", "dineof": "dineof",
             "auto": "auto"}                                        # the first guess in run names
TIME_REACH = 2            # space_time: its background in time comes from frames at most this far away
DINEOF_GUESS_RANK, DINEOF_GUESS_ITERS = 20, 30     # DINEOF as a first guess: averaged over ranks


def time_interpolation(anom: np.ndarray, reach: int | None = None, own: bool = True) -> np.ndarray:
    """(T, B, Y, X) NaN where unseen -> (T, B, Y, X): each cell linearly interpolated in time between the
    nearest frames (either side) where it is seen; the one seen value where only one side has one; NaN where
    neither side has one within `reach` frames (None: any distance). `own`: a seen cell keeps its value
    (otherwise each frame is interpolated from the other frames only)."""
    T = anom.shape[0]
    prev_v, next_v = np.full(anom.shape, np.nan), np.full(anom.shape, np.nan)
    prev_t, next_t = np.full(anom.shape, np.nan), np.full(anom.shape, np.nan)
    for order, vals, when in ((range(T), prev_v, prev_t), (range(T - 1, -1, -1), next_v, next_t)):
        v, d = np.full(anom.shape[1:], np.nan), np.full(anom.shape[1:], np.nan)
        for t in order:                                  # the nearest seen value before t (after t)
            vals[t], when[t] = v, d
            ok = np.isfinite(anom[t])
            v, d = np.where(ok, anom[t], v), np.where(ok, t, d)
    now = np.arange(T, dtype=np.float64).reshape(-1, 1, 1, 1)
    if reach is not None:
        far_p, far_n = ~(now - prev_t <= reach), ~(next_t - now <= reach)
        prev_v[far_p], next_v[far_n] = np.nan, np.nan
        prev_t[far_p], next_t[far_n] = np.nan, np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        w = (now - prev_t) / (next_t - prev_t)
        both = prev_v + w * (next_v - prev_v)
    out = np.where(np.isfinite(both), both, np.where(np.isfinite(prev_v), prev_v, next_v))
    return np.where(np.isfinite(anom), anom, out) if own else out


def first_guess(kind: str, visible: np.ndarray, seen: np.ndarray, train: slice, frames=None,
                x_periodic: bool = False, clim: np.ndarray | None = None) -> np.ndarray:
    """The first guess a neural method refines, (n, B, Y, X) for `frames` (default: all), in the units of
    `visible`. Each frame's guess reads only the `seen` cells (seen (T, Y, X) or (T, B, Y, X) bool: the
    training mask on training frames, the observed cells elsewhere); the climatology is the per-cell mean of
    the training frames of `visible` (complete ground truth there, as DESIGN allows for a prior mean), or
    `clim` (B, Y, X) when given.

    none: the training band mean; frame_mean: the frame's observed mean per band; climatology;
    interpolation and anomaly_interpolation: of the frame's seen cells, as in the floor; time_interpolation:
    of each cell's anomaly, between the nearest frames that see it; space_time: a background interpolated in
    time from the other frames at most TIME_REACH away (the climatology where none sees the cell), and the
    frame's own seen departures from it interpolated in space (anomaly interpolation about that
    background); dineof: DINEOF (gapfill.dineof.dineof_rank_mean, averaged over ranks up to DINEOF_GUESS_RANK) of
    the seen cells of every frame, and for frames outside training of the complete training frames too. The interpolating
    kinds return a seen cell's value exactly. Every value is finite (cells out of reach take the
    climatology)."""
    if kind not in FIRST_GUESS:
        raise ValueError(f"unknown first guess {kind!r}; choose one of {', '.join(FIRST_GUESS)}")
    frames = np.arange(visible.shape[0]) if frames is None else np.asarray(frames)
    seen = seen[:, None] if seen.ndim == 3 else seen
    outside = np.ones(visible.shape[0], bool)
    outside[train] = False
    visible = np.where(outside[:, None, None, None] & ~seen, np.nan, visible)  # only what frames show
    clim = climatology(visible, train) if clim is None else clim              # (B, Y, X)
    band_mean = np.nanmean(clim, axis=(1, 2))                                 # (B,)
    shown = np.where(np.broadcast_to(seen, visible.shape) & np.isfinite(visible), visible, np.nan)   # (T, B, Y, X)
    if kind == "time_interpolation":
        timed = (time_interpolation(shown - clim) + clim)[frames]
    if kind == "space_time" and len(frames):                 # the background: the other frames close in time
        sub = np.arange(max(0, frames.min() - TIME_REACH), min(visible.shape[0], frames.max() + TIME_REACH + 1))
        near = time_interpolation(shown[sub] - clim, TIME_REACH, own=False)[frames - sub[0]]
        background = clim + np.nan_to_num(near)
    if kind == "dineof":
        out = _dineof_guess(visible, shown, outside, clim, frames)
    else:
        out = np.empty((len(frames),) + visible.shape[1:], dtype=np.float64)
    slow = kind in ("interpolation", "anomaly_interpolation", "space_time") and len(frames) > 50
    for i, t in enumerate(tqdm(frames, desc=f"first guess ({kind})", unit="frame", disable=None if slow else True)):
        frame = shown[t]                                                      # (B, Y, X): what it may read
        if kind == "none":
            out[i] = band_mean[:, None, None]
        elif kind == "climatology":
            out[i] = clim
        elif kind == "frame_mean":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)               # a frame with no cell: below
                m = np.nanmean(frame, axis=(1, 2))
            out[i] = np.asarray(np.where(np.isfinite(m), m, band_mean))[:, None, None]
        elif kind == "time_interpolation":
            out[i] = timed[i]
        elif kind == "space_time":
            out[i] = interpolation(frame[None], slice(0, 1), background[i], anomaly=True, x_periodic=x_periodic)[0]
        elif kind in ("interpolation", "anomaly_interpolation"):
            out[i] = interpolation(frame[None], slice(0, 1), clim, anomaly=kind == "anomaly_interpolation",
                                   x_periodic=x_periodic)[0]
    out = np.where(np.isfinite(out), out, clim)
    if kind in INTERPOLATING:                                                 # a seen cell: its value, exactly
        out = np.where(np.isfinite(shown[frames]), shown[frames], out)
    return out


def _dineof_guess(visible, shown, outside, clim, frames) -> np.ndarray:
    """(n, B, Y, X) DINEOF guesses of `frames`: a training frame's from every frame's shown cells only (its own
    hidden cells unread); the other frames' from the complete training frames (ground truth, as the DINEOF
    baseline reads them) and the other frames' shown cells. One fit for each kind of frame asked for."""
    out = np.empty((len(frames),) + visible.shape[1:])
    for in_train in (True, False):
        pick = outside[frames] != in_train
        if not pick.any():
            continue
        data = shown if in_train else np.where(outside[:, None, None, None], shown, visible)
        if not np.isfinite(data).any():
            out[pick] = clim
            continue
        whole = dineof_rank_mean(data, clim, DINEOF_GUESS_RANK, DINEOF_GUESS_ITERS)
        out[pick] = whole[frames[pick]]
    return out


def distance_to_seen(seen: np.ndarray) -> np.ndarray:
    """(n, Y, X) float32: each cell's distance in cells to the nearest seen cell of its frame (seen (n, Y, X)
    bool; a frame with none seen: the frame's diagonal everywhere)."""
    from scipy.ndimage import distance_transform_edt
    out = np.empty(seen.shape, dtype=np.float32)
    for i, s in enumerate(seen):
        out[i] = distance_transform_edt(~s) if s.any() else float(np.hypot(*s.shape))
    return out
