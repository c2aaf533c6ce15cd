"""The problem every method solves: the field, its splits and masks drawn from the options, and the model's view.

`build_problem` opens the data, splits it in time and draws the masks into a `Problem`; `Problem.for_model()`
is the same problem with the hidden cells of validation and test frames removed. `grid_signature` is what a
run records of the field's bands and grid (a test-time --data_path must share it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging

import numpy as np

from gapfill import cli
from gapfill.data import Field, check_training_frames, open_field, split_frames
from gapfill.errors import DataError
from gapfill.masks import describe_mask, make_mask
from gapfill.metrics import scored_cells

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Problem:
    """A field with its splits and the model's mask. `observed` (T, Y, X) covers every frame: on training
    frames it is the training mask (methods may subsample or mask with it; the frames themselves are
    complete ground truth), on validation and test frames it is all the model ever sees."""

    field: Field
    splits: dict
    observed: np.ndarray                  # (T, Y, X) bool
    masks: dict                           # split -> mask settings with a 'label'

    def visible(self) -> np.ndarray:
        """(T, B, Y, X): training frames complete, other frames NaN wherever not observed."""
        vis = self.field.values.copy()
        hidden = ~self.observed
        hidden[self.splits["train"]] = False
        vis[np.broadcast_to(hidden[:, None], vis.shape)] = np.nan
        return vis

    def for_model(self) -> Problem:
        """The same problem with hidden cells of validation and test frames removed from the field."""
        return dataclasses.replace(self, field=dataclasses.replace(self.field, values=self.visible()))

    def scored(self, split: str) -> np.ndarray:
        """(T_split, B, Y, X) bool: hidden valid cells of a split."""
        sl = self.splits[split]
        return scored_cells(self.observed[sl], self.field.valid[sl])


def _mask_for(opts: dict, n: int, shape_yx, seed: int, offset: int) -> np.ndarray:
    kw = {k: v for k, v in opts.items() if k not in ("kind", "mode", "label") and v is not None}
    return make_mask(opts["kind"], opts["mode"], (n,) + tuple(shape_yx), seed=seed, frame_offset=offset, **kw)


def build_problem(args: dict, test_args: dict | None = None) -> Problem:
    """Open the data and draw the masks from training options `args` (a config's 'args') and optional
    test-side overrides (`--test_mask_type`, `--num_frames_test`, `--data_path`)."""
    test_args = test_args or {}
    field = open_field(test_args.get("data_path") or args["data_path"], args.get("variable"), level=args.get("level"))
    T, _, Y, X = field.shape
    splits = split_frames(T, args.get("num_frames_train"), args.get("num_frames_valid"),
                          test_args.get("num_frames_test"), path=field.path)
    if splits["train"].stop > splits["train"].start:
        check_training_frames(field, splits["train"])
    train_opts = cli.mask_options(args)
    test_opts = {k: (v if v is not None else train_opts[k]) for k, v in cli.mask_options(test_args, test=True).items()}
    observed = np.ones((T, Y, X), dtype=bool)
    masks = {}
    for split, opts in (("train", train_opts), ("valid", train_opts), ("test", test_opts)):
        sl = splits[split]
        n = sl.stop - sl.start
        if n:
            try:
                observed[sl] = _mask_for(opts, n, (Y, X), int(args.get("seed", 0)), sl.start)
            except ValueError as err:
                raise DataError(f"{split} mask for {field.path}: {err}") from None
        masks[split] = dict(opts, label=describe_mask(opts["kind"], opts["mode"], opts["prob_masking"] or 0.0,
                                                      radius=opts["radius"], cloud_range=opts["cloud_range"] or (0.2, 0.6),
                                                      center=opts.get("center")))
    log.info("splits train/valid/test = %d/%d/%d frames; training mask %s; test mask %s",
             *(splits[s].stop - splits[s].start for s in ("train", "valid", "test")),
             masks["train"]["label"], masks["test"]["label"])
    return Problem(field, splits, observed, masks)


def grid_signature(field: Field) -> dict:
    """What a test-time --data_path must share with the training file: bands and the (Y, X) grid."""
    def digest(v):
        return hashlib.sha1(np.ascontiguousarray(np.asarray(v, dtype=np.float64)).tobytes()).hexdigest()[:16]
    return {"bands": list(field.bands), "shape_yx": [int(field.shape[2]), int(field.shape[3])],
            "y": digest(field.y), "x": digest(field.x)}
