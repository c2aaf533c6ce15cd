"""Process-level helpers every script shares: logging, seeds, devices, the DDP rank, peak memory, the code version
(a leaf module: it imports only gapfill.errors)."""
from __future__ import annotations

import logging
import os
import random
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


def job_cores() -> int:
    """The cores this job was given: SLURM's --cpus-per-task, else the CPUs this process may run on."""
    given = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                     # not Linux
        return os.cpu_count() or 1


def limit_threads() -> int:
    """Cap BLAS, OpenMP and torch threads at `job_cores()`: OpenBLAS sizes its pool by the node and its threads
    spin, so two jobs sharing a node would slow each other down many times over. Returns the cap."""
    from threadpoolctl import threadpool_limits
    n = job_cores()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))     # for the processes this one starts
    threadpool_limits(n)
    if "torch" in sys.modules:
        import torch
        if torch.get_num_threads() > n:
            torch.set_num_threads(n)
    return n


def cache_root() -> Path:
    """Our cache folder: $GAPFILL_CACHE, else $XDG_CACHE_HOME/gapfill, else ~/.cache/gapfill (never the data
    file's folder, which on a cluster is often shared or read-only)."""
    if os.environ.get("GAPFILL_CACHE"):
        return Path(os.environ["GAPFILL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gapfill"


def setup_logging(level: str = "INFO") -> None:
    """Timestamped one-line records that read well in SLURM log files (job and array ids prefixed)."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    tag = f"[job {job}{'_' + task if task else ''}] " if job else ""
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(lambda record: record.levelno < logging.ERROR)          # errors go to stderr, the rest to stdout
    err.setLevel(logging.ERROR)
    for h in (out, err):
        h.setFormatter(fmt)
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO), force=True, handlers=[out, err])
    for noisy in ("matplotlib", "PIL", "h5py", "fontTools", "wandb"):
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

    A requested GPU that is not there is a DataError, not a silent fallback to the CPU.
    """
    from gapfill.errors import DataError
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
        raise DataError(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N")
    index = int(m.group(1)) if m.group(1) is not None else (local_rank or 0)
    if index >= n_gpu:
        raise DataError(f"--device {device} asked for GPU {index} but {n_gpu} GPU(s) are visible"
                        + ("" if n_gpu else ": this machine has no GPU, use --device cpu or auto"))
    return f"cuda:{index}"


def global_rank() -> int:
    """This process's global rank under DDP (torchrun's RANK, srun's SLURM_PROCID, or the LOCAL_RANK that
    Lightning gives the processes it starts itself on one node), 0 otherwise."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    if os.environ.get("LOCAL_RANK", "").isdigit() and os.environ.get("WORLD_SIZE", "").isdigit():
        return int(os.environ["LOCAL_RANK"])      # several nodes always go through srun (SLURM_PROCID)
    return 0


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


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
