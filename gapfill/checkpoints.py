"""Checkpoint files (written atomically in their object's format, read back as data only) and the divergence check.

`save_object` writes `best`/`last` as `.keras` (a Keras model), `.npz` (a dict of arrays and numbers) or
`.pt` (anything else, torch.save); `load_checkpoint` reads any of them and Lightning's `.ckpt`. Nothing is
unpickled; a corrupt, truncated or crafted file is a DataError naming it. `check_diverged` is the one divergence
check of every training loop: a loss or a parameter no longer finite is a RunError.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gapfill.errors import DataError, RunError
from gapfill.files import atomic_path


def _is_arrays(obj) -> bool:
    return isinstance(obj, dict) and all(isinstance(v, np.ndarray | np.generic | int | float | str) for v in obj.values())


def save_object(stem: Path, obj) -> Path:
    """Write `obj` atomically next to `stem` (`.../best`), its format by its type: a Keras model ->
    `.keras`, a dict of numpy arrays and numbers -> `.npz`, anything else -> `.pt` (torch.save)."""
    if hasattr(obj, "save") and type(obj).__module__.startswith("keras"):
        path = stem.with_suffix(".keras")
        with atomic_path(path) as tmp:
            obj.save(str(tmp) + ".keras")           # Keras insists on the suffix
            Path(str(tmp) + ".keras").replace(tmp)
    elif _is_arrays(obj):
        path = stem.with_suffix(".npz")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **obj)
    else:
        import torch
        path = stem.with_suffix(".pt")
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    return path


def _unreadable(path: Path, err: BaseException) -> DataError:
    why = (str(err).splitlines() or [""])[0][:200]
    return DataError(f"{path}: checkpoint cannot be read ({type(err).__name__}: {why}); it is corrupt, truncated "
                     "or not ours: train the run again with --overwrite")


def load_keras(path: Path):
    """A Keras model file, with `safe_mode=True` (no Python lambdas run); a bad file is a DataError."""
    import keras  # the method's package has set the backend
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as err:
        raise _unreadable(Path(path), err) from None


def check_diverged(what: str, step: int, losses: dict, named_parameters) -> None:
    """RunError (exit code 3, the run marked failed) when a loss (name -> float) or a parameter (an iterable
    of (name, torch tensor)) is no longer finite: the one divergence check of every training loop."""
    import torch
    bad = [f"{k} {v}" for k, v in losses.items() if not np.isfinite(v)]
    bad += [f"{n} is not finite" for n, p in named_parameters if not torch.isfinite(p).all()][:1]
    if bad:
        raise RunError(f"{what}: training diverged by step {step} ({bad[0]}); try a smaller learning rate")


def read_torch(path):
    """A torch checkpoint (.pt, Lightning's .ckpt) as tensors and plain containers (`weights_only=True`):
    nothing is unpickled; a corrupt, truncated or crafted file is a DataError naming it."""
    import torch
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:
        raise _unreadable(Path(path), err) from None


def load_checkpoint(run_dir, which: str = "best"):
    """`best` or `last` of a run folder, whichever format it was saved in (see `save_object`).

    Nothing is unpickled: torch checkpoints load with `weights_only=True` (tensors, numbers, strings,
    containers), Keras models with `safe_mode=True`, npz files without pickles. A corrupt, truncated or
    crafted file is a DataError naming the file."""
    run_dir = Path(run_dir)
    if (p := run_dir / f"{which}.keras").exists():
        return load_keras(p)
    if (p := run_dir / f"{which}.npz").exists():
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as err:
            raise _unreadable(p, err) from None
    if (p := run_dir / f"{which}.pt").exists():
        return read_torch(p)
    if (p := run_dir / f"{which}.ckpt").exists():                       # a Lightning method's
        return read_torch(p)
    if which == "best":
        raise DataError(f"{run_dir}: no best checkpoint: the run stopped before its first validation; "
                        "run its train command again to resume it")
    raise DataError(f"{run_dir}: no {which}.* checkpoint")
