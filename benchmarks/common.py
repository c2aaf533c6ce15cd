"""What the benchmark scripts share: writing their records."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger("benchmarks")


def write_rows(path: Path, rows: list[dict]) -> Path:
    """rows (dicts with the same keys) as a CSV at `path` (its folder made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    log.info("wrote %s", path)
    return path


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
