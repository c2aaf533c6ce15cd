"""Mask generators: kinds (random, shapes, circle, clouds, sources, band) x modes (fixed, dynamic).

Convention: ``observed == True`` where a value is given to the model; hidden cells are ``~observed``.
A mask is a pure function of (kind, mode, parameters, seed, shape):

- ``fixed``: one (Y, X) mask from ``default_rng([seed, kind_code])``, repeated for all T frames, so a
  train and a test mask with equal settings and seed hide the same cells whatever T or frame_offset.
- ``dynamic``: frame t comes from ``default_rng([seed, frame_offset + t, kind_code])``, so a frame's mask
  is the same whatever window it is generated in.
"""
import logging
import math
import numbers

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter

logger = logging.getLogger(__name__)

KINDS = ("random", "shapes", "circle", "clouds", "sources", "band")   # new kinds go last: the index seeds
MODES = ("fixed", "dynamic")

_KIND_CODE = {k: i for i, k in enumerate(KINDS)}  # part of every seed, so kinds never share draws
_SHAPES_OVERSHOOT = 0.02   # a shape may push the hidden share at most this far past the target
_SHAPES_MAX_TRIES = 5000   # then the last few cells are hidden one by one (tiny frames only)
_SOURCE_RADIUS = 1 / 24    # sources: largest radius, a share of the shorter side (64 px -> 2.7 px, CoMBInE-like)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_shape(shape) -> tuple[int, int, int]:
    try:
        ok = len(shape) == 3 and all(_is_int(s) and s > 0 for s in shape)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"shape must be 3 positive ints (T, Y, X), got {shape!r}.")
    t, y, x = (int(s) for s in shape)
    return t, y, x


def _check_prob(prob_masking) -> float:
    if not (_is_real(prob_masking) and 0.0 <= prob_masking < 1.0):
        raise ValueError(f"prob_masking must be in [0, 1) (1 would give the model nothing), got {prob_masking!r}.")
    return float(prob_masking)


def _check_cloud_range(cloud_range) -> tuple[float, float]:
    try:
        low, high = cloud_range
        ok = _is_real(low) and _is_real(high) and 0.0 <= low <= high <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:   # a frame wholly under cloud is a real case: the model has its other frames
        raise ValueError(f"cloud_range must be (low, high) with 0 <= low <= high <= 1, got {cloud_range!r}.")
    return float(low), float(high)


def _circle_radius(radius, prob_masking: float, Y: int, X: int) -> float:
    """The disc radius in cells: the given one, or the one hiding prob_masking of a (Y, X) frame."""
    half = min(Y, X) / 2
    if radius is None:
        r = math.sqrt(prob_masking * Y * X / math.pi)
        if r > half:
            raise ValueError(f"prob_masking={prob_masking!r} needs a circle of radius {r:.1f} cells, larger than half "
                             f"the {Y}x{X} frame ({half:g}); lower prob_masking or give radius.")
        return r
    if not (_is_real(radius) and 0 < radius <= half):
        raise ValueError(f"radius must be in (0, {half:g}] cells (half the {Y}x{X} frame), got {radius!r}.")
    return float(radius)


def _check_center(center, Y: int, X: int) -> tuple[float, float] | None:
    if center is None:
        return None
    try:
        cy, cx = center
        ok = _is_real(cy) and _is_real(cx) and 0 <= cy <= Y - 1 and 0 <= cx <= X - 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"center must be (row, col) inside the {Y}x{X} frame, got {center!r}.")
    return float(cy), float(cx)


def _hide_random(rng, Y: int, X: int, p: float) -> np.ndarray:
    """Exactly round(p*Y*X) cells hidden, chosen without replacement. Returns hidden (Y, X) bool."""
    n = Y * X
    hidden = np.zeros(n, dtype=bool)
    hidden[rng.choice(n, size=int(round(p * n)), replace=False)] = True
    return hidden.reshape(Y, X)


def _draw_shape(canvas: np.ndarray, rng, scale: float) -> None:
    """Draw one random line, circle or ellipse (value 1) onto canvas (Y, X) uint8, sized by scale."""
    Y, X = canvas.shape
    s = min(Y, X)
    size = max(1, int(scale * s / 4))              # radius / half-length in cells
    thick = int(rng.integers(1, max(1, int(scale * s / 10)) + 1))
    p0 = (int(rng.integers(0, X)), int(rng.integers(0, Y)))  # OpenCV points are (x, y)
    kind = rng.integers(3)
    if kind == 0:
        p1 = (p0[0] + int(rng.integers(-2 * size, 2 * size + 1)), p0[1] + int(rng.integers(-2 * size, 2 * size + 1)))
        cv2.line(canvas, p0, p1, 1, thick)
    elif kind == 1:
        fill = -1 if rng.random() < 0.5 else thick
        cv2.circle(canvas, p0, int(rng.integers(1, size + 1)), 1, fill)
    else:
        fill = -1 if rng.random() < 0.5 else thick
        axes = (int(rng.integers(1, size + 1)), int(rng.integers(1, size + 1)))
        cv2.ellipse(canvas, p0, axes, float(rng.uniform(0, 180)), 0, 360, 1, fill)


def _hide_shapes(rng, Y: int, X: int, p: float) -> np.ndarray:
    """Lines, circles, ellipses until the hidden share reaches p (at most 2 points past it).

    A shape that would overshoot is rejected and later shapes are drawn smaller. Returns hidden (Y, X) bool."""
    n = Y * X
    target = int(round(p * n))
    limit = target + int(_SHAPES_OVERSHOOT * n)
    canvas = np.zeros((Y, X), dtype=np.uint8)
    count, scale, tries = 0, 1.0, 0
    while count < target and tries < _SHAPES_MAX_TRIES:
        tries += 1
        trial = canvas.copy()
        _draw_shape(trial, rng, scale)
        c = int(np.count_nonzero(trial))
        if c <= limit:
            canvas, count = trial, c
        else:
            scale *= 0.8
    hidden = canvas.astype(bool)
    if count < target:  # only on frames so small that even the smallest shape overshoots
        free = np.flatnonzero(~hidden)
        hidden.flat[rng.choice(free, size=target - count, replace=False)] = True
    return hidden


def _hide_circle(rng, Y: int, X: int, radius: float, center) -> np.ndarray:
    """Hide cells with (r-cy)^2 + (c-cx)^2 <= radius^2; center None: drawn so the disc lies inside the frame."""
    if center is None:
        cy = rng.uniform(radius - 0.5, Y - 0.5 - radius)
        cx = rng.uniform(radius - 0.5, X - 0.5 - radius)
    else:
        cy, cx = center
    r = np.arange(Y, dtype=np.float64)[:, None]
    c = np.arange(X, dtype=np.float64)[None, :]
    return (r - cy) ** 2 + (c - cx) ** 2 <= radius ** 2


def _hide_sources(rng, Y: int, X: int, p: float, radius: float | None) -> np.ndarray:
    """Point-source holes: discs of radius ~ U(0.5, r_max) cells at uniform centres until the hidden share
    reaches p (the last disc may pass it); r_max = radius, default max(1, min(Y, X) / 24). Returns (Y, X) bool."""
    r_max = float(radius) if radius is not None else max(1.0, min(Y, X) * _SOURCE_RADIUS)
    target = int(round(p * Y * X))
    rows = np.arange(Y, dtype=np.float64)[:, None]
    cols = np.arange(X, dtype=np.float64)[None, :]
    hidden = np.zeros((Y, X), dtype=bool)
    while np.count_nonzero(hidden) < target:
        cy, cx, r = rng.uniform(-0.5, Y - 0.5), rng.uniform(-0.5, X - 0.5), rng.uniform(0.5, r_max)
        hidden |= (rows - cy) ** 2 + (cols - cx) ** 2 <= r * r
    return hidden


def _hide_band(rng, Y: int, X: int, p: float) -> np.ndarray:
    """A galactic band: the round(p*Y*X) cells nearest a straight line at a uniform angle through a point
    drawn in the central half of the frame. Returns (Y, X) bool."""
    cy, cx = rng.uniform(0.25, 0.75) * (Y - 1), rng.uniform(0.25, 0.75) * (X - 1)
    angle = rng.uniform(0.0, math.pi)
    rows = np.arange(Y, dtype=np.float64)[:, None] - cy
    cols = np.arange(X, dtype=np.float64)[None, :] - cx
    dist = np.abs(rows * math.cos(angle) - cols * math.sin(angle))   # distance to the line (cells)
    hidden = np.zeros(Y * X, dtype=bool)
    if k := int(round(p * Y * X)):
        hidden[np.argsort(dist, axis=None, kind="stable")[:k]] = True
    return hidden.reshape(Y, X)


def _hide_clouds(rng, Y: int, X: int, cloud_range, cloud_scale: float) -> np.ndarray:
    """Smoothed white noise; the round(f*Y*X) largest cells are hidden, f ~ U(cloud_range). Returns (Y, X) bool."""
    noise = gaussian_filter(rng.standard_normal((Y, X)), sigma=cloud_scale, mode="wrap")
    frac = rng.uniform(*cloud_range)
    k = int(round(frac * Y * X))
    hidden = np.zeros(Y * X, dtype=bool)
    if k:
        hidden[np.argsort(noise, axis=None, kind="stable")[-k:]] = True
    return hidden.reshape(Y, X)


def make_mask(kind: str, mode: str, shape: tuple[int, int, int], *, prob_masking: float = 0.5,
              seed: int = 0, frame_offset: int = 0, radius: float | None = None,
              center: tuple[float, float] | None = None,
              cloud_range: tuple[float, float] = (0.2, 0.6), cloud_scale: float = 8.0) -> np.ndarray:
    """Observed mask (T, Y, X) bool, True = value given to the model; shape = (T, Y, X).

    random: round(prob_masking*Y*X) cells hidden per frame. shapes: OpenCV lines/circles/ellipses up to
    prob_masking (within 2 points). circle: one disc of radius (default: the one hiding prob_masking) at center
    (row, col; default frame centre, or random per frame in dynamic mode). clouds: Gaussian-smoothed noise
    (sigma=cloud_scale) thresholded to hide a fraction drawn from U(cloud_range); prob_masking is unused.
    sources: point-source holes (discs, radius ~ U(0.5, radius or min(Y, X) / 24)) until prob_masking is hidden.
    band: a straight band of round(prob_masking*Y*X) cells at a random angle (a galactic plane).
    fixed: one (Y, X) mask for all frames, independent of T and frame_offset. dynamic: frame t is seeded by
    (seed, frame_offset + t). Parameters a kind does not use are not checked.
    """
    if kind not in KINDS:
        raise ValueError(f"mask kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    if mode not in MODES:
        raise ValueError(f"mask mode must be one of {', '.join(MODES)}, got {mode!r}.")
    T, Y, X = _check_shape(shape)
    p = _check_prob(prob_masking)
    if not (_is_int(seed) and seed >= 0):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
    if not (_is_int(frame_offset) and frame_offset >= 0):
        raise ValueError(f"frame_offset must be a non-negative int, got {frame_offset!r}.")

    if kind == "random":
        def hide(rng):
            return _hide_random(rng, Y, X, p)
    elif kind == "shapes":
        def hide(rng):
            return _hide_shapes(rng, Y, X, p)
    elif kind == "circle":
        ctr = _check_center(center, Y, X)
        if radius is None and p == 0.0:
            def hide(rng):
                return np.zeros((Y, X), dtype=bool)
        else:
            rad = _circle_radius(radius, p, Y, X)
            if ctr is None and mode == "fixed":
                ctr = ((Y - 1) / 2, (X - 1) / 2)

            def hide(rng):
                return _hide_circle(rng, Y, X, rad, ctr)
    elif kind == "sources":
        if radius is not None and not (_is_real(radius) and 0.5 < radius <= min(Y, X) / 2):
            raise ValueError(f"radius (the largest source hole) must be in (0.5, {min(Y, X) / 2:g}] cells, "
                             f"got {radius!r}.")

        def hide(rng):
            return _hide_sources(rng, Y, X, p, radius)
    elif kind == "band":
        def hide(rng):
            return _hide_band(rng, Y, X, p)
    else:
        cr = _check_cloud_range(cloud_range)
        if not (_is_real(cloud_scale) and cloud_scale > 0):
            raise ValueError(f"cloud_scale must be a positive number of cells, got {cloud_scale!r}.")

        def hide(rng):
            return _hide_clouds(rng, Y, X, cr, float(cloud_scale))

    code = _KIND_CODE[kind]
    if mode == "fixed":
        hidden = hide(np.random.default_rng([seed, code]))
        return np.repeat(~hidden[None], T, axis=0)  # (T, Y, X)
    observed = np.empty((T, Y, X), dtype=bool)
    for t in range(T):
        observed[t] = ~hide(np.random.default_rng([seed, frame_offset + t, code]))
    return observed


def missing_fraction(observed: np.ndarray) -> float:
    """Share of False (hidden) cells in a bool observed mask of any shape, e.g. (T, Y, X)."""
    observed = np.asarray(observed)
    if observed.dtype != bool or observed.size == 0:
        raise ValueError(f"observed must be a non-empty bool array, got dtype {observed.dtype} with size {observed.size}.")
    return float(1.0 - observed.mean())


def _pct(x: float) -> str:
    return f"{round(100 * x, 1):g}%"


def describe_mask(kind: str, mode: str, prob_masking: float = 0.5, *, radius: float | None = None,
                  cloud_range: tuple[float, float] = (0.2, 0.6), center=None, **_ignored) -> str:
    """Short label for plots and tables, e.g. 'random dynamic 90%', 'circle fixed r=10', 'clouds fixed 20-60%'.

    Extra keyword arguments (seed, center, ...) are accepted so make_mask's options can be passed as they are."""
    if kind == "clouds":
        low, high = cloud_range
        amount = _pct(low) if low == high else f"{round(100 * low, 1):g}-{_pct(high)}"
    elif kind == "circle" and radius is not None:
        amount = f"r={radius:g}"
    elif kind == "sources" and radius is not None:
        amount = f"{_pct(prob_masking)} r<={radius:g}"
    else:
        amount = _pct(prob_masking)
    at = " at ({:g}, {:g})".format(*center) if kind == "circle" and center is not None else ""
    return f"{kind} {mode} {amount}{at}"
