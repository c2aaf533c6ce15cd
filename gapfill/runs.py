"""The Run object: one training run's folder, identity, checkpoints, log, preemption and end.

A train script is: parse options, `run = open_training(args, method, name_parts)`, build the model from
`run.problem` (the model's view: hidden cells of the validation and test frames are NaN), loop with
`run.log`, `run.score_valid`, `run.save_best`, `run.save_last` and `run.check`, then `run.finish()`.

A run lives in `<checkpoint_dir>/<run_name>/` with `config.json`, `best.*`, `last.*` and `train_log.csv`.
The run name is built from the options (no timestamp), so a requeued job finds its own run again; the
run's identity is a hash of every option that changes the result and of the data file (path and a
fingerprint of its content), kept in config.json: a finished run with the same hash is skipped, an unfinished one
resumes, a different hash under the same name is refused with the options that differ. Names and
identities are made in gapfill.identity, checkpoint files written and read in gapfill.checkpoints.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gapfill.checkpoints import load_checkpoint, save_object
from gapfill.entry import ACTIVE_RUNS, EXIT_RESUME, Preempted, Preemption, run_cli  # noqa: F401  (scripts use runs.run_cli)
from gapfill.errors import DataError, RunError
from gapfill.files import atomic_path, check_writable, read_json, write_json
from gapfill.identity import check_run_name, identity, identity_diff, make_run_name
from gapfill.metrics import coverage, crps_gaussian, difference_stats, gaussian_nll, rmse
from gapfill.problem import Problem, build_problem, grid_signature
from gapfill.system import git_commit, global_rank, peak_memory_mb, resolve_device, seed_everything, setup_logging

log = logging.getLogger(__name__)

# The manifest of what a run writes into its folder, the only files --overwrite removes: anything else
# there (a user's `last.txt`, notes) is left alone. Checkpoints are `best`/`last` in the formats of
# `save_object` and Lightning's; temporary files are atomic_path's `.<name>.<random>.tmp` of those.
_CKPT = [f"{w}.{ext}" for w in ("best", "last") for ext in ("keras", "npz", "pt", "ckpt")]
RUN_FILES = ("config.json", "train_log.csv", "analysis*.csv", ".lock", *_CKPT, "best.ckpt.tmp", "hpc_ckpt_*.ckpt",
             *[f".{n}.*.tmp" for n in ("config.json", "train_log.csv", *_CKPT)])
RUN_DIRS = ("wandb",)


# --------------------------------------------------------------------------------------------- logs
class CsvLog:
    """Append-only training log; a resumed run keeps its earlier rows."""

    def __init__(self, path, fields: list[str]):
        self.path, self.fields = Path(path), fields
        if not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, fields).writeheader()

    def write(self, **row) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="raise").writerow(row)

    def rows(self) -> int:
        with open(self.path, newline="") as f:
            return max(0, sum(1 for _ in f) - 1)

    def truncate(self, n: int) -> None:
        """Keep the header and the first n rows (rows written after the `last` a run resumes from)."""
        lines = self.path.read_text().splitlines(keepends=True)
        if len(lines) > n + 1:
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(lines[: n + 1]))


# ---------------------------------------------------------------------------------------------- Run
_HELD: dict[str, int] = {}      # run folder -> file descriptor of its lock, held by this process


def _ours(path: Path) -> bool:
    return any(path.match(p) for p in RUN_FILES) if path.is_file() else path.name in RUN_DIRS


class Run:
    """One training run. Made by `open_training`; see the module docstring for the order of calls.

    Attributes: `problem` (the model's view), `name`, `dir`, `status` (new | resume | finished),
    `resume_state` (the object saved by the last `save_last`, or None), `device`, `rank`, `args` (dict).
    """

    def __init__(self, args: dict, method: str, full: Problem, name: str, run_dir: Path, log_fields: list[str]):
        self.args, self.method, self._full, self.name, self.dir = args, method, full, name, run_dir
        self.problem: Problem = full.for_model()
        self.rank = global_rank()
        self.writer = self.rank == 0
        self.device = resolve_device(args.get("device", "auto"), args.get("local_rank"))
        self.identity = identity(args)
        self.status = "new"
        self.resume_state: Any = None
        self._lock: int | None = None
        self._fields = ["step", *log_fields, "seconds"]
        self._wandb: Any = None
        self._preempt = Preemption()                    # signal handlers from the start
        self._t0 = time.time()
        made = [q for q in (run_dir, *run_dir.parents) if not q.exists()]
        self._made_root = made[-1] if made else None    # the top folder this run creates: a refusal removes it

    # ---- opening
    def _open(self, overwrite: bool) -> None:
        d, cfg_path = self.dir, self.dir / "config.json"
        if d.exists() and not cfg_path.exists() and any(not _ours(p) for p in d.iterdir()):
            raise DataError(f"{d} exists and is not a run folder (no config.json) but holds other files; "
                            "choose another --run_name or --checkpoint_dir")
        self._refuse_foreign(cfg_path)          # before the lock file: a folder not ours gets nothing
        if self.writer:
            d.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
        try:
            cfg = read_json(cfg_path, "run config") if cfg_path.exists() else None
        except DataError:
            if not overwrite or any(not _ours(p) for p in d.iterdir()):
                raise                                   # a damaged config.json next to files not ours: hands off
            cfg = {"method": None}                      # a damaged config.json of a run of ours: --overwrite starts anew
        if cfg is not None and "identity" not in cfg and not overwrite:
            raise DataError(f"{d}: config.json has no run identity (written by an older version or not by us); "
                            "pass --overwrite to train it anew or choose another --run_name")
        if cfg is not None and overwrite:
            if self.writer:
                log.warning("--overwrite: starting %s again from scratch", d)
                self._remove_run_files()
            cfg = None
        if cfg is not None and cfg["identity"]["hash"] != self.identity["hash"]:
            diff = "; ".join(identity_diff(cfg["identity"], self.identity))
            if not diff:                    # only options added since, at their off/None defaults: the same run
                log.info("%s: run identity written by an older version; updated", d)
                if self.writer:
                    self.record(identity=self.identity)
                cfg["identity"] = self.identity
        if cfg is not None and cfg["identity"]["hash"] != self.identity["hash"]:
            verb = "finished" if cfg.get("finished") else "failed" if cfg.get("failed") else "unfinished"
            raise DataError(f"{d} holds a {verb} run with other options: {diff}. Pass --overwrite to train it "
                            "anew or a new --run_name")
        if cfg is not None and cfg.get("finished"):
            self.status = "finished"
            log.info("run %s is already finished; pass --overwrite to train it again", d)
            return
        last = [p for p in self._checkpoints() if p.name.startswith("last.")]
        last += list(d.glob("hpc_ckpt_*.ckpt")) if d.exists() else []        # Lightning's, on SLURM's signal
        if cfg is not None and last:
            self.status = "resume"
            ckpt = [p for p in last if p.suffix == ".ckpt"]
            # a Lightning run resumes through the Trainer (gapfill.lightning), from the newest .ckpt
            self.resume_state = max(ckpt, key=os.path.getmtime) if ckpt else load_checkpoint(d, "last")
            self._t0 -= float(cfg.get("train_seconds", 0.0))
            log.info("resuming %s from its last checkpoint", d)
            if self.writer:
                self.record(restarts=cfg.get("restarts", 0) + 1, **({"failed": None} if cfg.get("failed") else {}))
                self._csv().truncate(int(cfg.get("log_rows", 0)))
            return
        if self.writer:
            (d / "train_log.csv").unlink(missing_ok=True)       # rows of an attempt that never saved `last`
            f = self._full.field
            write_json(cfg_path, {"method": self.method, "run_name": self.name, "args": self.args,
                                  "identity": self.identity, "git_commit": git_commit(),
                                  "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "finished": False,
                                  "bands": f.bands, "units": f.units, "grid": grid_signature(f), "device": self.device})

    def _refuse_foreign(self, cfg_path: Path) -> None:
        """DataError for a folder whose config.json (valid JSON) was not written by a train script of ours."""
        try:
            cfg = read_json(cfg_path, "run config") if cfg_path.exists() else None
        except DataError:
            return                              # damaged: judged in _open, under the lock
        if cfg is not None and not {"method", "run_name", "args"} <= set(cfg):
            raise DataError(f"{self.dir}: its config.json was not written by a train script of ours; the folder is "
                            "left alone: choose another --run_name or --checkpoint_dir")

    def _acquire_lock(self) -> None:
        key = str(self.dir.resolve())
        if key in _HELD:                       # this process opened the run before (a test calling main twice)
            os.close(_HELD.pop(key))
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataError(f"{self.dir} is being trained by another process right now; wait for it or choose "
                            "another --run_name") from None
        except OSError as err:                 # a file system without flock (some Lustre mounts)
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            log.warning("%s: no file locks on this file system; two identical commands would collide", self.dir)
        self._lock = _HELD[key] = fd

    def _remove_run_files(self) -> None:
        for p in self.dir.iterdir():
            if p.name == ".lock" or not _ours(p):
                continue
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    def _csv(self) -> CsvLog:
        return CsvLog(self.dir / "train_log.csv", self._fields)

    # ---- during training
    def record(self, **items) -> dict:
        """Add items to config.json (normalisation, display name...); rank 0 only."""
        if not self.writer:
            return {}
        cfg_path = self.dir / "config.json"
        cfg = read_json(cfg_path)
        cfg.update(items)
        write_json(cfg_path, cfg)
        return cfg

    def seconds(self) -> float:
        """Training seconds so far, earlier attempts of a resumed run included."""
        return time.time() - self._t0

    def log(self, step: int, **values) -> None:
        """One row of train_log.csv (and of W&B when enabled); `values` are among the declared log fields."""
        if not self.writer:
            return
        row = {"step": step, **values, "seconds": round(self.seconds(), 2)}
        self._csv().write(**row)
        if self.args.get("wandb_mode", "disabled") != "disabled":
            self._wandb_run().log({k: v for k, v in row.items() if v is not None and v != ""})

    def _wandb_run(self):
        if self._wandb is None:
            import wandb
            self._wandb = wandb.init(project=self.args.get("wandb_project") or "gapfill", name=self.name,
                                     id=f"{self.name[:100]}-{self.identity['hash']}"[-128:], resume="allow",
                                     dir=str(self.dir), mode=self.args["wandb_mode"], config=self.args,
                                     settings=wandb.Settings(silent=True, console="off"))
        return self._wandb

    def score_valid(self, mean: np.ndarray, variance: np.ndarray | None = None, frames=None, bands=None,
                    ssim: bool = False, calibration: bool = False, details: bool = False) -> dict:
        """Score a reconstruction of validation frames on their hidden valid cells, physical units.

        mean, variance: (len(frames), len(bands), Y, X); `frames` index the validation split (default all),
        `bands` the bands (default all). Returns {'valid_rmse'}, with a variance 'valid_nll' (and with
        `calibration` 'valid_crps' and 'valid_coverage95'), with `ssim` 'valid_ssim' (metrics.ssim of the
        filled frames, truth outside the hidden cells, averaged over frames and bands), with `details`
        metrics.difference_stats. The truth of those cells stays here: a train script sees only this score.
        """
        p, sl = self._full, self._full.splits["valid"]
        idx = np.arange(sl.start, sl.stop) if frames is None else sl.start + np.asarray(frames)
        bidx = np.arange(p.field.shape[1]) if bands is None else np.asarray(bands)
        truth = p.field.values[idx][:, bidx]
        scored = p.scored("valid")[idx - sl.start][:, bidx]
        if mean.shape != truth.shape:
            raise ValueError(f"score_valid: mean has shape {mean.shape}, expected {truth.shape}")
        for what, a in (("mean", mean), ("variance", variance)):
            bad = 0 if a is None or not scored.any() else int((~np.isfinite(np.broadcast_to(a, scored.shape)[scored])).sum())
            if bad:
                raise RunError(f"{self.method}: training diverged: the predicted {what} of the validation frames has "
                               f"{bad} non-finite values on hidden cells; try a smaller learning rate")
        out = {"valid_rmse": rmse(truth, mean, scored), **(difference_stats(truth, mean, scored) if details else {})}
        if variance is not None:
            out["valid_nll"] = gaussian_nll(truth, mean, variance, scored)
            if calibration:
                out["valid_crps"] = crps_gaussian(truth, mean, variance, scored)
                out["valid_coverage95"] = coverage(truth, mean, variance, scored, 0.95)
        if ssim:
            from gapfill.metrics import ssim as ssim_frame
            recon = np.where(scored, mean, truth)
            vals = [ssim_frame(truth[t, b], recon[t, b], scored[t, b]) for t in range(len(truth))
                    for b in range(truth.shape[1]) if scored[t, b].any()]
            finite = [v for v in vals if np.isfinite(v)]         # nan: frames too small for SSIM's window
            out["valid_ssim"] = float(np.mean(finite)) if finite else float("nan")
        return out

    def variance_scale(self, mean: np.ndarray, variance: np.ndarray, frames=None, bands=None) -> float:
        """The factor on `variance` that minimises the validation NLL of (mean, variance), each
        (len(frames), len(bands), Y, X) physical units, `frames` and `bands` as in `score_valid` (default
        all); 1.0 without validation frames. A network trained on patches or crops, or a sparse GP whose
        noise shrank, is over- or under-confident; the truth stays here, as in `score_valid`."""
        from scipy.optimize import minimize_scalar
        sl = self._full.splits["valid"]
        if sl.stop == sl.start:
            return 1.0
        def nll(a):
            return self.score_valid(mean, variance * np.exp(a), frames, bands)["valid_nll"]
        res = minimize_scalar(nll, bounds=(-9, 9), method="bounded", options={"xatol": 1e-3})
        scale = float(np.exp(res.x))
        log.info("predictive variance calibrated on the validation frames: x %.3g (NLL %.4g -> %.4g)", scale,
                 nll(0.0), res.fun)
        return scale

    def save_best(self, obj) -> None:
        """The best state so far, atomically (`best.keras`, `.npz` or `.pt` by type); rank 0 only."""
        if self.writer:
            save_object(self.dir / "best", obj)

    def save_last(self, obj) -> None:
        """The state to resume from, atomically, with the training time and log rows so far; rank 0 only."""
        if self.writer:
            save_object(self.dir / "last", obj)
            self.record(train_seconds=self.seconds(), log_rows=self._csv().rows())

    def check(self, save_last: Callable[[], Any]) -> None:
        """Between two steps: on SLURM's warning (USR1) or SIGTERM call `save_last()` and stop (Preempted)."""
        self._preempt.check(save_last)

    @property
    def stop_requested(self) -> bool:
        """True once a signal asked the run to stop (for loops that stop themselves, then `check`)."""
        return self._preempt.requested is not None

    def finish(self, **results) -> None:
        """Mark the run finished: train time, peak memory and `results` (validation score...) in config.json.
        A run without a best checkpoint cannot be tested, so it is not finished: RunError (marked failed)."""
        if self.writer and not any(p.name.startswith("best.") for p in self._checkpoints()):
            raise RunError(f"{self.method}: training ended without a best checkpoint (no validation ever ran), so "
                           "there is nothing to test; give it more steps or validation frames")
        if self.writer:
            self.record(finished=True, train_seconds=self.seconds(), peak_memory_mb=peak_memory_mb(), **results)
            if self._wandb is not None:
                self._wandb.summary.update({k: v for k, v in results.items() if v is not None})
            log.info("wrote %s", self.dir)
        self.close()

    def discard(self) -> None:
        """Undo a run refused before its first checkpoint (bad options found once the data is loaded): the
        folder goes if this run made it, else the files it wrote at the start; then close it."""
        if self.writer and self.status == "new" and not self._checkpoints():
            if self._made_root is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                for q in self.dir.parents:          # the empty folders above it that this run made
                    if q == self._made_root.parent or not q.is_dir() or any(q.iterdir()):
                        break
                    q.rmdir()
            else:
                for name in ("config.json", "train_log.csv"):
                    (self.dir / name).unlink(missing_ok=True)
        self.close()

    def _checkpoints(self) -> list[Path]:
        return [p for p in map(self.dir.joinpath, _CKPT) if p.exists()]

    def fail(self, reason: str) -> None:
        """Mark the run failed (`failed`: the reason, in config.json) and close it: a RunError ended it."""
        if self.writer and (self.dir / "config.json").exists():
            self.record(failed=reason)
        self.close()

    @property
    def log_fields(self) -> list[str]:
        """The columns of train_log.csv besides step and seconds."""
        return self._fields[1:-1]

    def close(self) -> None:
        if self in ACTIVE_RUNS:
            ACTIVE_RUNS.remove(self)
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._lock is not None:
            _HELD.pop(str(self.dir.resolve()), None)
            os.close(self._lock)
            self._lock = None


def open_training(args, method: str, name_parts: dict, log_fields: tuple | list = (), **config) -> Run:
    """The start of every train_<m>.py: logging, seeds, the problem, the run folder, its identity and lock.

    `name_parts` build the default run name (`make_run_name(method, dataset, name_parts)`), `log_fields`
    are the columns of train_log.csv besides step and seconds, `config` goes into config.json (display
    name...). The returned Run has `status` new, resume or finished (then the script returns at once).
    """
    args = vars(args) if not isinstance(args, dict) else args
    setup_logging(args.get("log_level", "INFO"))
    seed_everything(args.get("seed", 0))
    given = args.get("run_name")
    if given is not None:
        check_run_name(given)                   # before any work: "" or "-x" is refused, never replaced
    check_writable(args.get("checkpoint_dir") or f"checkpoints/{method}", "--checkpoint_dir")
    full = build_problem(args)
    name = given if given is not None else make_run_name(method, full.field.name, name_parts)
    run = Run(args, method, full, name, Path(args.get("checkpoint_dir") or f"checkpoints/{method}") / name,
              list(log_fields))
    existed = run.dir.exists()
    try:
        run._open(bool(args.get("overwrite")))
    except BaseException:
        run.close()
        if not existed and run.dir.exists() and not (run.dir / "config.json").exists():
            shutil.rmtree(run.dir, ignore_errors=True)          # no empty run folder left behind
        raise
    if run.status == "finished":
        run.close()
        return run
    ACTIVE_RUNS.append(run)
    if run.status == "new" and config:
        run.record(**config)
    return run
