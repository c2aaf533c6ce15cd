"""GP-VAE training throughput (windows per second) and peak memory against the window length: each window
length (8, 16, 32, 64 frames) runs in a fresh process on 64 x 64 cells, one band, the default network (8
latent channels at stride 2, 32 filters, Matern-1/2 prior), with the same number of frames per step
(--frames 256: 32 windows of 8 ... 4 windows of 64), so the per-frame work of the conv nets is the same and
what changes is the window. Linear cost in the window means a constant step time and step memory (time and
memory per window proportional to its length); the table gives each against the 8-frame window's.
Memory is the step's own: the peak resident size during the steps minus the size before them (CPU), or the
peak CUDA allocation (GPU).

    python -m benchmarks.bench_gpvae                       # CPU
    python -m benchmarks.bench_gpvae --device cuda         # a GPU
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import replace_methods, write_rows

log = logging.getLogger("benchmarks.gpvae")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def one(window: int, steps: int, batch: int, size: int, device: str) -> dict:
    import torch

    from gapfill.system import peak_memory_mb
    from gpvae.gpvae_model import GPVAE
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    m = GPVAE(1, [0.2], window=window).to(device)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    replace_methods(m, log=lambda *a, **k: None)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, window, 3, size, size, generator=g).to(device)
    target = torch.randn(batch, window, 1, size, size, generator=g).to(device)
    known = torch.ones_like(target)

    def step():
        opt.zero_grad()
        loss = m.training_step((inputs, target, known), 0)
        loss.backward()
        opt.step()
        return float(loss)

    step()                                                       # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        mem = torch.cuda.max_memory_allocated() / 2**20 - base
        name = torch.cuda.get_device_name(0)
    else:
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
        mem = hwm - base
        name = f"cpu ({torch.get_num_threads()} threads)"
    seconds = time.perf_counter() - t0
    return {"device": name, "window": window, "batch": batch, "size": size, "steps": steps,
            "step_s": round(seconds / steps, 4), "windows_per_s": round(steps * batch / seconds, 2),
            "frames_per_s": round(steps * batch * window / seconds, 1), "step_memory_mb": round(mem, 1),
            "peak_memory_mb": round(peak_memory_mb(), 1), "loss_finite": bool(loss == loss)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--frames", type=int, default=256, help="frames per step: windows per batch = frames / window")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/records")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.one is not None:
        print(json.dumps(one(args.one, args.steps, max(1, args.frames // args.one), args.size, args.device)))
        return 0
    rows = []
    for w in args.windows:
        res = subprocess.run([sys.executable, "-m", "benchmarks.bench_gpvae", "--one", str(w), "--steps",
                              str(args.steps), "--frames", str(args.frames), "--size", str(args.size), "--device",
                              args.device], capture_output=True, text=True)
        if res.returncode != 0:
            log.error("window %d failed: %s", w, (res.stderr.strip().splitlines() or [""])[-1])
            return 1
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]) | {"host": platform.node()})
    first = rows[0]
    for r in rows:                 # linear cost in the window: the same step time and memory at every length
        r["step_time_vs_w8"] = round(r["step_s"] / first["step_s"], 2)
        r["step_memory_vs_w8"] = round(r["step_memory_mb"] / first["step_memory_mb"], 2)
        r["ms_per_window_frame"] = round(1000 * r["step_s"] / (r["batch"] * r["window"]), 2)
        log.info("window %3d x %2d windows: %7.2f windows/s, %.3f s per step (x%.2f), step memory %7.1f MB (x%.2f)",
                 r["window"], r["batch"], r["windows_per_s"], r["step_s"], r["step_time_vs_w8"], r["step_memory_mb"],
                 r["step_memory_vs_w8"])
    write_rows(Path(args.out) / f"gpvae_window_{'cpu' if args.device == 'cpu' else 'gpu'}.csv", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
