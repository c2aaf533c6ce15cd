"""DINEOF (Beckers & Rixen 2003): the strongest classical baseline on many fields, and a first guess
(`gapfill.floor.first_guess`). `visible` (T, B, Y, X) is as described in `gapfill.floor`, which also holds
the dispatch of the baseline scripts over every classical method (`reconstruct_baseline`).
"""
from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)


def _dineof_fit(X: np.ndarray, miss: np.ndarray, ranks, tol: float, max_iter: int, cv: np.ndarray | None,
                start: np.ndarray | None = None, search: bool = False, stop_early: bool = True,
                resume: dict | None = None, after_rank=None):
    """Iterative truncated SVD of X (N, M) with `miss` cells (and `cv` cells, held back and scored) filled,
    warm-started over increasing rank (from `start`'s values in the filled cells when given).

    With `search` the best rank is the one with the lowest cross-validation error and (with `stop_early`)
    the search ends once that error has risen twice in a row; otherwise it is the last rank. Returns (cv mse
    by rank, best rank, its reconstruction (N, M)). `after_rank(state)` is called after each rank with a
    state dict (arrays only) that `resume=state` continues from exactly, so a preempted search can be saved
    and resumed.
    """
    hide = miss | cv if cv is not None else miss
    Z = np.where(hide, 0.0 if start is None else start, X)
    curve, best, best_Z, done = {}, None, None, 0
    if resume is not None:
        Z, best_Z, done = resume["Z"].copy(), resume["best_Z"].copy(), int(resume["done"])
        curve = dict(zip(resume["curve_rank"].tolist(), resume["curve_mse"].tolist(), strict=True))
        best = int(resume["best"])
        log.info("DINEOF: resuming the rank search after rank %d", ranks[done - 1])
    for i in tqdm(range(done, len(ranks)), desc="DINEOF ranks", unit="rank", disable=None if len(ranks) > 1 else True):
        k = ranks[i]
        errs = list(curve.values())
        if search and stop_early and len(errs) >= 3 and errs[-1] > errs[-2] > errs[-3]:
            break                                   # cross-validation error rising: larger ranks overfit
        for _ in range(max_iter):
            # SVD through the smaller Gram matrix: Z = U S V^T, rank-k part is U_k U_k^T Z
            small_rows = Z.shape[0] <= Z.shape[1]
            _, vecs = np.linalg.eigh(Z @ Z.T if small_rows else Z.T @ Z)
            Uk = vecs[:, -k:]
            R = Uk @ (Uk.T @ Z) if small_rows else (Z @ Uk) @ Uk.T
            change = np.sqrt(np.mean((R[hide] - Z[hide]) ** 2)) / (np.sqrt(np.mean(R[hide] ** 2)) + 1e-12)
            Z[hide] = R[hide]
            if change < tol:
                break
        curve[k] = float(np.mean((Z[cv] - X[cv]) ** 2)) if cv is not None and cv.any() else float("nan")
        if not search or best is None or curve[k] < curve[best]:
            best, best_Z = k, Z.copy()
        if after_rank is not None:
            after_rank({"Z": Z, "best_Z": best_Z, "done": np.int64(i + 1), "best": np.int64(best),
                        "curve_rank": np.array(list(curve), dtype=np.int64),
                        "curve_mse": np.array(list(curve.values()))})
    return curve, best, best_Z


def dineof_matrix(visible: np.ndarray, clim: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Anomaly matrix (N, M) with a missing mask: rows are frames (or image rows for < 3 frames)."""
    anom = visible - clim                                                   # (T, B, Y, X)
    T, B, Y, X = anom.shape
    mat = anom.reshape(T, -1) if T >= 3 else anom.transpose(0, 2, 1, 3).reshape(T * Y, B * X)
    live = np.isfinite(mat).any(axis=0)                                     # drop never-observed columns
    return mat[:, live], live, (T, B, Y, X)


def dineof_unmatrix(mat: np.ndarray, live: np.ndarray, shape: tuple, clim: np.ndarray) -> np.ndarray:
    """The inverse of dineof_matrix: mat (N, live columns), live (M,) bool, shape (T, B, Y, X), clim
    broadcasting to it -> the field (T, B, Y, X), 0 anomaly in the dropped columns, plus `clim`."""
    T, B, Y, X = shape
    full = np.zeros((mat.shape[0], live.size))
    full[:, live] = mat
    anom = full.reshape(T, B, Y, X) if T >= 3 else full.reshape(T, Y, B, X).transpose(0, 2, 1, 3)
    return anom + clim


def fixed_pattern(miss: np.ndarray, rows: np.ndarray) -> bool:
    """Whether the rows flagged by `rows` all miss the same cells, some of them (a fixed mask of stations)."""
    cand = miss[rows]
    return len(cand) > 0 and bool(cand[0].any()) and bool((cand == cand[0]).all())


def cv_cells(miss: np.ndarray, rows: np.ndarray, share: float, seed: int, station_share: float = 0.1,
             min_stations: int = 10, stations: np.ndarray | None = None) -> np.ndarray:
    """Cells of the rows flagged by `rows` (N,) held back for cross-validation.

    Under a fixed mask (every flagged row misses the same cells) the real gaps are cells that no flagged
    row ever shows, so whole stations are held back: `station_share` of the observed stations (at least
    `min_stations`, at most half), in every flagged row; `stations` (M,) names the station of each column
    (bands of one cell share it; default: one column each). Otherwise, as in DINEOF, about `share` of the
    visible cells, each row copying the gap pattern of another row (clouds of another image), topped up
    with random cells.
    """
    rng = np.random.default_rng(seed)
    if fixed_pattern(miss, rows):
        seen = ~miss[np.flatnonzero(rows)[0]]
        stations = np.arange(miss.shape[1]) if stations is None else stations
        ids = np.unique(stations[seen])
        n = min(max(int(round(station_share * ids.size)), min_stations), ids.size // 2)
        cv = np.zeros_like(miss)
        cv[np.ix_(rows, seen & np.isin(stations, rng.choice(ids, n, replace=False)))] = True
        log.info("DINEOF: fixed mask, cross-validating on %d of %d observed stations held back", n, ids.size)
        return cv
    cand = np.flatnonzero(rows)
    target = share * (~miss[cand]).sum()
    cv, count = np.zeros_like(miss), 0
    for i in rng.permutation(cand):
        if count >= target:
            break
        cv[i] = miss[rng.choice(cand)] & ~miss[i]
        count += int(cv[i].sum())
    if count < target / 2:
        cv |= ~miss & rows[:, None] & (rng.random(miss.shape) < share)
    return cv


def rank_grid(max_rank: int) -> list[int]:
    """Ranks tried by cross-validation: every rank up to 6, then steps of about 25%."""
    ranks, k = [], 1
    while k <= max_rank:
        ranks.append(k)
        k = k + 1 if k < 6 else int(np.ceil(k * 1.25))
    return ranks


def dineof_rank_mean(visible: np.ndarray, clim: np.ndarray, max_rank: int = 20, max_iter: int = 30,
                     tol: float = 1e-3) -> np.ndarray:
    """(T, B, Y, X): DINEOF's reconstruction of every frame averaged over the ranks of `rank_grid(max_rank)`,
    one warm-started pass over increasing rank with no cell held back. On a few dozen small frames the
    cross-validated rank is noisy (one or two hundred held-back cells pick it); the average over ranks is
    steadier, and it is what `gapfill.floor.first_guess('dineof')` returns. Clipped to the visible range."""
    mat, live, shape = dineof_matrix(visible, clim)
    miss = ~np.isfinite(mat)
    ranks = rank_grid(max(1, min(max_rank, min(mat.shape) - 1)))
    total = np.zeros(mat.shape)

    def add(state: dict) -> None:
        total[:] += state["Z"]

    _dineof_fit(np.where(miss, 0.0, mat), miss, ranks, tol, max_iter, None, after_rank=add)
    mean = dineof_unmatrix(total / len(ranks), live, shape, clim)
    lo, hi = np.nanmin(visible, axis=(0, 2, 3)), np.nanmax(visible, axis=(0, 2, 3))
    return np.clip(mean, lo[:, None, None], hi[:, None, None])


def dineof(visible: np.ndarray, target: slice, clim: np.ndarray, rank: int | None = None, max_rank: int = 100,
           cv_share: float = 0.03, cv_stations: float = 0.1, seed: int = 0, tol: float = 1e-3, max_iter: int = 50,
           resume: dict | None = None, after_rank=None):
    """DINEOF (Beckers & Rixen 2003). Rank chosen by cross-validation on held-back visible cells of the
    gappy frames unless given (whole stations, `cv_stations` of them, under a fixed mask; else `cv_share`
    of the cells: see `cv_cells`). Variance: the cross-validated squared error at that rank, per band,
    assumed the same for every cell (a homoscedastic estimate, not a posterior). `resume`/`after_rank`:
    save and continue the rank search (see `_dineof_fit`).

    Returns (mean (T_target, B, Y, X), variance (T_target, B, Y, X), info dict).
    """
    mat, live, shape = dineof_matrix(visible, clim)
    miss = ~np.isfinite(mat)
    X = np.where(miss, 0.0, mat)
    gappy = miss.any(axis=1)
    rows = gappy if gappy.any() else np.ones_like(gappy)
    n_t, n_b, n_y, n_x = shape                           # the station (cell) of each column: bands share it
    stations = np.tile(np.arange(n_y * n_x) if n_t >= 3 else np.arange(n_x), n_b)[live]
    fixed = fixed_pattern(miss, rows)
    cv = cv_cells(miss, rows, cv_share, seed, station_share=cv_stations, stations=stations)
    max_rank = max(1, min(max_rank, min(mat.shape) - 1))
    ranks = [k for k in rank_grid(rank) if k < rank] + [rank] if rank else rank_grid(max_rank)
    # held-back stations: the error can rise over a stretch of ranks and fall again, so every rank is tried
    curve, best, cv_fit = _dineof_fit(X, miss, ranks, tol, max_iter, cv, search=not rank, stop_early=not fixed,
                                      resume=resume, after_rank=after_rank)
    # final pass at the chosen rank with the held-back cells given back, warm-started from the CV fit
    final = _dineof_fit(X, miss, [best], tol, max_iter, None, start=cv_fit)[2]
    mean = dineof_unmatrix(final, live, shape, clim)[target]
    # keep the filled cells inside the visible range per band: with large holes (single images, rows as
    # the matrix) the rank-k fill can overshoot wildly where a whole stretch of rows is missing
    lo, hi = np.nanmin(visible, axis=(0, 2, 3)), np.nanmax(visible, axis=(0, 2, 3))
    mean = np.clip(mean, lo[:, None, None], hi[:, None, None])
    # per-band CV error as a homoscedastic variance
    cv_err = dineof_unmatrix(np.where(cv, (cv_fit - X) ** 2, 0.0), live, shape, 0 * clim)
    cv_n = dineof_unmatrix(cv.astype(float), live, shape, 0 * clim)
    band_var = cv_err.sum(axis=(0, 2, 3)) / np.maximum(cv_n.sum(axis=(0, 2, 3)), 1)
    var = np.broadcast_to(band_var[None, :, None, None], mean.shape).copy()
    log.info("DINEOF: rank %d (cv mse by rank %s)", best, {k: round(v, 4) for k, v in curve.items()})
    return mean, var, {"rank": int(best), "cv_mse": {int(k): float(v) for k, v in curve.items()}}
