"""Training throughput of the partial-convolution UNet: patches per second at 128 x 128, batch 8, the
paper's network (7 levels, 64 to 512 filters), one band, the loss without VGG terms. Each backend runs
in a fresh process (Keras fixes its backend at import).

    python -m benchmarks.bench_pconv                        # torch and tensorflow, CPU
    python -m benchmarks.bench_pconv --backends torch --steps 20     # on a machine with a GPU: uses it
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import write_rows

log = logging.getLogger("benchmarks.pconv")


def one(steps: int, batch: int, patch: int) -> dict:
    import numpy as np

    from gapfill.system import peak_memory_mb
    from pconv_inpainting import keras
    from pconv_inpainting.pconv_model import build_unet, make_loss
    rng = np.random.default_rng(0)
    model = build_unet(bands=1, patch_size=patch)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_loss(1), jit_compile=False)
    x = rng.normal(size=(batch, patch, patch, 1)).astype("float32")
    m = (rng.random((batch, patch, patch, 1)) > 0.3).astype("float32")
    y = np.concatenate([x, 1 - m, np.ones_like(m)], axis=-1)
    model.train_on_batch([x * m, m], y)                                   # warm-up (graph building)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch([x * m, m], y)
    seconds = time.perf_counter() - t0
    device = "cpu"
    if keras.backend.backend() == "torch":
        import torch
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return {"backend": keras.backend.backend(), "device": device, "patch": patch, "batch": batch, "steps": steps,
            "step_s": round(seconds / steps, 3), "patches_per_s": round(steps * batch / seconds, 2),
            "params": model.count_params(), "peak_memory_mb": round(peak_memory_mb(), 1),
            "loss_finite": bool(np.isfinite(float(np.asarray(loss).ravel()[0])))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", default=["torch", "tensorflow"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--out", default="benchmarks/records")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.one:
        print(json.dumps(one(args.steps, args.batch, args.patch)))
        return 0
    rows = []
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        res = subprocess.run([sys.executable, "-m", "benchmarks.bench_pconv", "--one", "--steps", str(args.steps),
                              "--batch", str(args.batch), "--patch", str(args.patch)], env=env,
                             capture_output=True, text=True)
        if res.returncode != 0:
            log.error("%s failed: %s", backend, (res.stderr.strip().splitlines() or [""])[-1])
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]) | {"host": platform.node()})
        log.info("%-10s %-8s %6.2f patches/s (%.2f s per batch of %d at %d x %d), peak %.0f MB", backend,
                 rows[-1]["device"], rows[-1]["patches_per_s"], rows[-1]["step_s"], args.batch, args.patch,
                 args.patch, rows[-1]["peak_memory_mb"])
    if not rows:
        return 1
    write_rows(Path(args.out) / f"pconv_throughput_{rows[0]['device'].replace(' ', '_')}.csv", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
