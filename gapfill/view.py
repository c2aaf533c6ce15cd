"""The model's view of a problem, built once for every neural method: the normalised visible values, the
cells each frame shows, the first guess and the distance channel.

Hidden cells of validation and test frames are NaN in `problem.visible()` and never read here, whatever
problem is given (the full one or `Problem.for_model()`): a value planted in them changes nothing
(`tests/test_view.py`). `--first_guess auto` is resolved here too: the floor method whose guess scores
best on the validation frames' hidden cells, scored by the Run (which alone holds their truth).
"""
from __future__ import annotations

import hashlib
import logging

import numpy as np

from gapfill.data import Normalizer
from gapfill.files import read_json
from gapfill.floor import AUTO_CANDIDATES, distance_to_seen, first_guess

log = logging.getLogger(__name__)
FALLBACK_GUESS = "anomaly_interpolation"        # auto without validation frames (a photograph)


class ModelView:
    """What a neural method sees of `problem`, normalised per band on the training frames' valid cells.

    `visible` (T, B, Y, X) physical, NaN where not given; `values` (T, B, Y, X) float32 normalised, 0 where
    not given; `known` (T, B, Y, X) bool: where a value is given (training frames: every valid cell, ground
    truth; other frames: their observed cells); `seen` (T, B, Y, X) bool: what each frame shows the model
    (the training mask on training frames, the observed cells elsewhere); `guess(frames, seen)` (n, B, Y, X)
    float32 normalised first guess; `distance(frames, seen)` (n, Y, X) cells to the nearest seen cell."""

    def __init__(self, problem, first_guess_kind: str, normalizer: Normalizer | None = None):
        if first_guess_kind == "auto":
            raise ValueError("resolve --first_guess auto first (gapfill.view.resolve_first_guess)")
        f, s = problem.field, problem.splits
        self.problem, self.kind = problem, first_guess_kind
        self.visible = problem.visible()                                     # (T, B, Y, X) physical
        self.train = s["train"]
        fit = s["train"] if s["train"].stop > s["train"].start else slice(0, f.shape[0])
        self.normalizer = normalizer or Normalizer.fit(self.visible[fit])
        self.values = np.nan_to_num(self.normalizer.normalize(self.visible)).astype(np.float32)
        self.known: np.ndarray = np.isfinite(self.visible)
        self.seen: np.ndarray = self.known & problem.observed[:, None]
        self.T, self.bands, self.Y, self.X = self.visible.shape
        self.x_periodic = bool(getattr(f, "x_periodic", False))
        self._cache: dict[str, dict[int, np.ndarray]] = {}

    def guess_physical(self, frames, seen: np.ndarray | None = None) -> np.ndarray:
        """(n, B, Y, X) float64 first guess of `frames` in physical units, each frame from the cells `seen`
        (T, B, Y, X) shows (default: `self.seen`); cached per mask."""
        frames = [int(t) for t in frames]
        seen = self.seen if seen is None else seen
        key = hashlib.sha1(np.packbits(seen).tobytes()).hexdigest()
        cache = self._cache.setdefault(key, {})
        todo = [t for t in dict.fromkeys(frames) if t not in cache]
        if todo:
            ask = todo
            if self.kind == "dineof":                        # one fit per kind of frame: keep all of that kind
                train = set(range(self.T)[self.train])
                kinds = {t in train for t in todo}
                ask = [t for t in range(self.T) if (t in train) in kinds]
            out = first_guess(self.kind, self.visible, seen, self.train, ask, self.x_periodic)
            cache.update(zip(ask, out, strict=True))
        if not frames:
            return np.zeros((0, self.bands, self.Y, self.X))
        return np.stack([cache[t] for t in frames])

    def guess(self, frames, seen: np.ndarray | None = None) -> np.ndarray:
        """(n, B, Y, X) float32: the first guess of `frames`, normalised."""
        return self.normalizer.normalize(self.guess_physical(frames, seen)).astype(np.float32)

    def guess_left_out(self, frames, folds: int, seed: int = 0) -> np.ndarray:
        """(n, B, Y, X) float32 normalised first guess of `frames` in which every seen cell's value comes from
        the frame's other seen cells: the seen cells are dealt into `folds` folds (by `seed`) and each fold's
        guess reads the others. Elsewhere the usual guess. A residual fitted on seen cells over this guess
        learns what the guess misses where it does not see the cell, as on hidden cells; over the usual guess
        an interpolating kind leaves it nothing (a seen cell's guess is its value)."""
        frames = np.asarray(list(frames), dtype=int)
        out = self.guess(frames)
        if folds < 2:
            return out
        fold = np.random.default_rng(seed).integers(0, folds, size=self.seen.shape)     # (T, B, Y, X)
        for k in range(folds):
            held = self.seen & (fold == k)
            out = np.where(held[frames], self.guess(frames, self.seen & ~held), out)
        return out

    def distance(self, frames, seen: np.ndarray | None = None) -> np.ndarray:
        """(n, Y, X) float32: cells to the nearest cell a frame shows in any band."""
        seen = self.seen if seen is None else seen
        return distance_to_seen(seen[np.asarray(list(frames), dtype=int)].any(axis=1))


def resolve_first_guess(run, kind: str) -> str:
    """`kind`, or for 'auto' the candidate (gapfill.floor.AUTO_CANDIDATES) with the lowest validation RMSE of
    its guess, scored through `run.score_valid`; the choice and every score go into config.json
    (`first_guess_chosen`, `first_guess_scores`), so a resumed run and the test reuse it."""
    if kind != "auto":
        return kind
    cfg_path = run.dir / "config.json"
    done = read_json(cfg_path, "run config").get("first_guess_chosen") if cfg_path.exists() else None
    if done:                                                  # a resumed run keeps its choice
        return done
    vs = run.problem.splits["valid"]
    if vs.stop == vs.start:
        log.info("--first_guess auto: no validation frames; taking %s", FALLBACK_GUESS)
        run.record(first_guess_chosen=FALLBACK_GUESS, first_guess_scores={})
        return FALLBACK_GUESS
    scores = {}
    for cand in AUTO_CANDIDATES:
        view = ModelView(run.problem, cand)
        mean = view.guess_physical(range(vs.start, vs.stop))
        scores[cand] = float(run.score_valid(mean)["valid_rmse"])
    best = min(scores, key=lambda k: (not np.isfinite(scores[k]), scores[k]))
    log.info("--first_guess auto: %s (validation RMSE %s)", best,
             ", ".join(f"{k} {v:.4g}" for k, v in sorted(scores.items(), key=lambda kv: kv[1])))
    run.record(first_guess_chosen=best, first_guess_scores=scores)
    return best


def chosen_guess(cfg: dict) -> str:
    """The first guess a trained run used (its `auto` choice where it had one), from its config.json."""
    return cfg.get("first_guess_chosen") or cfg["args"].get("first_guess") or FALLBACK_GUESS
