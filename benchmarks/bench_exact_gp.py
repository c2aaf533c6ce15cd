"""Time the exact GP's training step and prediction, and record peak memory, against the number of
observed cells it conditions on (doubling from --start until a size fails, runs out of --max_gb or takes
longer than --max_seconds). Each size runs in a fresh process so that its peak memory is its own.

    python -m benchmarks.bench_exact_gp --out benchmarks/records            # CSV + PDF plot
    python -m benchmarks.bench_exact_gp --sizes 1000 2000 --device cuda     # chosen sizes, on a GPU

Per size: one exact marginal-likelihood step (forward + backward, Cholesky, product Matern x Matern,
float64) on n points, and the posterior mean and variance of 4,096 cells (a 64 x 64 frame) given n points.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("benchmarks.exact_gp")


def one(n: int, device: str, precision: str) -> dict:
    """Measure size n in this process; returns seconds and peak memory (MB)."""
    import gpytorch
    import numpy as np
    import torch

    from exact_gp_related.exact_gp_utils import make_model, posterior
    from gapfill.runs import peak_memory_mb
    dtype = torch.float64 if precision == "64" else torch.float32
    rng = np.random.default_rng(0)
    grid = (np.arange(365.0), np.arange(64.0), np.arange(64.0))
    x = torch.as_tensor(np.column_stack([rng.integers(0, 365, n), rng.integers(0, 64, n), rng.integers(0, 64, n)])
                        + rng.uniform(0, 0.01, (n, 3)), dtype=dtype, device=device)
    y = torch.sin(x[:, 0] / 10) + torch.cos(x[:, 1] / 8) + 0.1 * torch.randn(n, dtype=dtype, device=device)
    args = {"timekernel": "matern", "spacekernel": "matern", "kernel_combination": "product", "matern_nu": 1.5,
            "num_mixtures": 4, "time_lengthscale": 100.0, "time_outputscale": 1.0, "mean_function": "climatology"}
    model, lik = make_model(args, grid, x, y, dtype, device)
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    model.train()
    t0 = time.perf_counter()
    with gpytorch.settings.max_cholesky_size(10**8):
        loss = -mll(model(x), y)
        loss.backward()
    sync()
    train_s = time.perf_counter() - t0
    model.eval()
    xs = torch.as_tensor(np.column_stack([np.full(4096, 200.0), np.repeat(np.arange(64.0), 64),
                                          np.tile(np.arange(64.0), 64)]), dtype=dtype, device=device)
    t0 = time.perf_counter()
    mean, var = posterior(model, lik, x, y, xs, "benchmark")
    sync()
    predict_s = time.perf_counter() - t0
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    return {"n": n, "train_step_s": round(train_s, 3), "predict_4096_s": round(predict_s, 3),
            "peak_memory_mb": round(peak_memory_mb(), 1), "device": device, "precision": precision}


def plot(rows: list[dict], pdf) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 4), layout="constrained")
    a, b = fig.subplots(1, 2)
    n = [r["n"] for r in rows]
    a.loglog(n, [r["train_step_s"] for r in rows], "o-", label="training step (MLL + gradient)")
    a.loglog(n, [r["predict_4096_s"] for r in rows], "s-", label="posterior of a 64 x 64 frame")
    a.set(xlabel="observed cells n", ylabel="seconds", title="time")
    a.legend(fontsize=8)
    b.loglog(n, [r["peak_memory_mb"] / 1024 for r in rows], "o-")
    b.set(xlabel="observed cells n", ylabel="GB", title="peak memory (process)")
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"exact GP, product Matern x Matern, float{rows[0]['precision']}, {rows[0]['device']}, "
                 f"{platform.node()}", fontsize=10)
    fig.savefig(pdf)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", help="default: 1000, 2000, 4000, ... until a limit")
    p.add_argument("--start", type=int, default=1000)
    p.add_argument("--max_seconds", type=float, default=300, help="stop after a size slower than this")
    p.add_argument("--max_gb", type=float, default=20, help="stop before a size expected to pass this")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("64", "32"), default="64")
    p.add_argument("--out", default="benchmarks/records")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.one:
        print(json.dumps(one(args.one, args.device, args.precision)))
        return 0
    sizes = args.sizes or [args.start * 2**i for i in range(12)]
    rows = []
    for n in sizes:
        if rows and rows[-1]["peak_memory_mb"] / 1024 * (n / rows[-1]["n"]) ** 2 > args.max_gb:
            log.info("n=%d would need about %.0f GB (> --max_gb %g): stopping", n,
                     rows[-1]["peak_memory_mb"] / 1024 * (n / rows[-1]["n"]) ** 2, args.max_gb)
            break
        res = subprocess.run([sys.executable, "-m", "benchmarks.bench_exact_gp", "--one", str(n), "--device",
                              args.device, "--precision", args.precision], capture_output=True, text=True)
        if res.returncode != 0:
            log.warning("n=%d failed (exit %d): %s", n, res.returncode, (res.stderr.strip().splitlines() or [""])[-1])
            break
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        log.info("n=%6d  training step %8.2f s  posterior of 4096 cells %8.2f s  peak %7.0f MB", n,
                 rows[-1]["train_step_s"], rows[-1]["predict_4096_s"], rows[-1]["peak_memory_mb"])
        if rows[-1]["train_step_s"] + rows[-1]["predict_4096_s"] > args.max_seconds:
            log.info("n=%d took longer than --max_seconds %g: stopping", n, args.max_seconds)
            break
    if not rows:
        log.error("no size ran")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"exact_gp_{args.device.replace(':', '')}_float{args.precision}"
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / f"{stem}.pdf")
    log.info("wrote %s and %s", out / f"{stem}.csv", out / f"{stem}.pdf")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
