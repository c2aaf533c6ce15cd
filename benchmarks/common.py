"""What the benchmark scripts share: writing their records."""
from __future__ import annotations

import logging
from pathlib import Path

from gapfill.files import write_csv

log = logging.getLogger("benchmarks")


def write_rows(path: Path, rows: list[dict]) -> Path:
    """rows (dicts with the same keys) as a CSV at `path` (its folder made); returns the path."""
    write_csv(path, rows)
    log.info("wrote %s", path)
    return Path(path)


def replace_methods(obj, **methods) -> None:
    """Replace methods of one object by the given callables (a LightningModule stepped without a Trainer:
    no logging, its own optimizers); mypy rejects assigning to a method, setattr is the same thing."""
    for name, fn in methods.items():
        setattr(obj, name, fn)


def time_steps(step, steps: int, device: str, warmup: int = 1) -> tuple[float, float, str]:
    """(seconds per call, peak memory MB, device name) of `steps` calls of `step()` after `warmup` calls:
    the process's peak resident size on a CPU, the peak CUDA allocation on a GPU."""
    import platform
    import resource
    import time

    import torch
    for _ in range(warmup):
        step()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / steps, torch.cuda.max_memory_allocated() / 2**20, torch.cuda.get_device_name(0)
    secs = (time.perf_counter() - t0) / steps
    return secs, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, platform.processor() or "cpu"
