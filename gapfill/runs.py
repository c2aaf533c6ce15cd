"""Run bookkeeping shared by every method: names, config capture, atomic files, resume, seeds, devices,
logging, and SLURM preemption (save `last`, requeue, resume).

A run lives in `<checkpoint_dir>/<run_name>/` with `config.json`, `best.*`, `last.*` and `train_log.csv`.
The run name is built from the options (no timestamp), so a requeued job finds its own run again.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent


def setup_logging(level: str = "INFO") -> None:
    """Timestamped one-line records that read well in SLURM log files (job and array ids prefixed)."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    tag = f"[job {job}{'_' + task if task else ''}] " if job else ""
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), force=True, stream=sys.stdout,
                        format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    for noisy in ("matplotlib", "PIL", "h5py", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and (when imported) torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        import torch
        torch.manual_seed(seed)


def resolve_device(device: str = "auto", local_rank: int | None = None) -> str:
    """'auto' -> 'cuda:<local_rank or 0>' when a GPU is visible, else 'cpu'; 'cuda' -> 'cuda:<local_rank or 0>'.

    A requested GPU that is not there is an error, not a silent fallback to the CPU.
    """
    device = (device or "auto").lower()
    if device == "cpu":
        return "cpu"
    try:
        import torch
        has_cuda = torch.cuda.is_available()
        n_gpu = torch.cuda.device_count() if has_cuda else 0
    except ImportError:
        has_cuda, n_gpu = False, 0
    if device == "auto":
        return f"cuda:{local_rank or 0}" if has_cuda else "cpu"
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not m:
        raise ValueError(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N")
    index = int(m.group(1)) if m.group(1) is not None else (local_rank or 0)
    if index >= n_gpu:
        raise ValueError(f"--device {device} asked for GPU {index} but {n_gpu} GPU(s) are visible")
    return f"cuda:{index}"


def _fmt(v) -> str:
    if isinstance(v, float):
        v = f"{v:g}"
    if isinstance(v, (list, tuple)):
        v = "-".join(_fmt(x) for x in v)
    return re.sub(r"[^A-Za-z0-9.+-]", "", str(v))


def make_run_name(method: str, dataset: str, parts: dict) -> str:
    """`<method>_<dataset>_<key><value>_...`: descriptive, stable, filesystem-safe, no timestamp."""
    items = [f"{k}{_fmt(v)}" for k, v in parts.items() if v is not None]
    return "_".join([method, _fmt(dataset)] + items)


@contextlib.contextmanager
def atomic_path(final):
    """Yield a temporary path next to `final`; rename it onto `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj) -> None:
    """Atomically write `obj` as indented JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def prepare_run(checkpoint_dir, run_name: str, overwrite: bool = False) -> tuple[Path, str]:
    """Create or find `<checkpoint_dir>/<run_name>`; returns (run_dir, state) with state new|resume|finished.

    A finished run is left alone unless `overwrite`; a run with a `last` checkpoint resumes.
    """
    run_dir = Path(checkpoint_dir) / run_name
    cfg = run_dir / "config.json"
    if cfg.exists() and overwrite:
        log.warning("--overwrite: starting %s again from scratch", run_dir)
        for f in run_dir.iterdir():
            if f.is_file():
                f.unlink()
    elif cfg.exists():
        if read_json(cfg).get("finished"):
            log.info("run %s is already finished; pass --overwrite to train it again", run_dir)
            return run_dir, "finished"
        if any(run_dir.glob("last.*")):
            log.info("resuming %s from its last checkpoint", run_dir)
            return run_dir, "resume"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_log.csv").unlink(missing_ok=True)     # rows of an attempt that never saved `last`
    return run_dir, "new"


def save_config(run_dir, method: str, run_name: str, args: dict, **extra) -> dict:
    """Write config.json: the resolved options, code version and whatever the method adds (normalisation...)."""
    cfg = {"method": method, "run_name": run_name, "args": args, "git_commit": git_commit(),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "finished": False, **extra}
    write_json(Path(run_dir) / "config.json", cfg)
    return cfg


def update_config(run_dir, **changes) -> dict:
    cfg = read_json(Path(run_dir) / "config.json")
    cfg.update(changes)
    write_json(Path(run_dir) / "config.json", cfg)
    return cfg


def note_restart(run_dir) -> float:
    """A resumed run: count the restart in config.json; returns the training seconds spent before it."""
    cfg = update_config(run_dir, restarts=read_json(Path(run_dir) / "config.json").get("restarts", 0) + 1)
    return float(cfg.get("train_seconds", 0.0))


class CsvLog:
    """Append-only training log; a resumed run keeps its earlier rows."""

    def __init__(self, path, fields: list[str]):
        self.path, self.fields = Path(path), fields
        if not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, fields).writeheader()

    def write(self, **row) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and peak CUDA memory when torch used a GPU), in MB.
    Linux: VmHWM of /proc/self/status, the peak of this program's own address space (ru_maxrss also counts
    the parent's memory at fork time: a run started from a large process would report the parent's size)."""
    try:
        with open("/proc/self/status") as f:
            mb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if "torch" in sys.modules:
        import torch
        if torch.cuda.is_available():
            mb += torch.cuda.max_memory_allocated() / 2**20
    return float(mb)


EXIT_RESUME = 75   # EX_TEMPFAIL: stopped early after saving `last`; the same command resumes


class RunError(RuntimeError):
    """A run that cannot go on, with a one-line reason for the user (numerical failure...): exit code 3."""


def run_cli(main, argv=None) -> int:
    """Run a script's main; bad input (DataError) ends with one clear log line and exit code 2, a run
    that cannot go on (RunError) with one line and exit code 3.

    A run stopped by `Preemption.check` has saved `last`: on SLURM's warning signal (USR1) it requeues its
    own job (exit 0; the job restarts and resumes); otherwise it exits with EXIT_RESUME.
    """
    from gapfill.data import DataError
    try:
        return main(argv) or 0
    except DataError as err:
        if not logging.getLogger().handlers:
            setup_logging()
        log.error("%s", err)
        return 2
    except RunError as err:
        if not logging.getLogger().handlers:
            setup_logging()
        log.error("%s", err)
        return 3
    except Preempted as stop:
        if stop.signal == "SIGUSR1" and Preemption.requeue():
            return 0
        log.warning("stopped on %s after saving `last`; run the same command again to resume", stop.signal)
        return EXIT_RESUME


class Preempted(Exception):
    """Raised by `Preemption.check` once `last` is saved; `signal` names the signal that asked for it."""

    def __init__(self, signal_name: str):
        super().__init__(f"stopped on {signal_name}")
        self.signal = signal_name


class Preemption:
    """Catch SLURM's warning signal (`--signal=B:USR1@90`) and SIGTERM; the training loop calls `check`.

    On USR1 (time limit near) the run saves `last` and requeues its own array task (`scontrol requeue`);
    on SIGTERM (scancel, preemption, `kill`) it saves `last` and exits without requeueing,
    since SLURM's own preemption requeues the job itself and a user's scancel must stay a cancel.
    The submit scripts `exec` Python, so the batch shell that `B:` signals is this process.
    """

    def __init__(self):
        self.requested: str | None = None
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.requested = signal.Signals(signum).name
        log.warning("received %s: will save `last` and stop", self.requested)

    def check(self, save_last) -> None:
        """Between two steps: if a signal came, call `save_last()` and raise Preempted."""
        if self.requested:
            save_last()
            log.warning("saved `last` after %s", self.requested)
            raise Preempted(self.requested)

    @staticmethod
    def requeue() -> bool:
        """Requeue this SLURM job (its own array task); False outside SLURM."""
        job = os.environ.get("SLURM_JOB_ID")
        if not job:
            log.info("not running under SLURM: stopping; run the same command again to resume")
            return False
        if os.environ.get("SLURM_ARRAY_TASK_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        res = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if res.returncode == 0:
            log.warning("requeued SLURM job %s: it restarts from `last`", job)
        else:
            log.error("scontrol requeue %s failed (rc %s): %s", job, res.returncode, res.stderr.strip())
        return res.returncode == 0
