"""Time the exact and the variational GP, and record peak memory, against the number of observed cells n
(doubling from --start). A model stops at the first size that fails, would pass --max_gb, or takes longer
than --max_seconds; each size and model runs in a fresh process so that its peak memory is its own.

    python -m benchmarks.bench_gp --out benchmarks/records                  # CSV + PDF plot, both models
    python -m benchmarks.bench_gp --sizes 1000 2000 --device cuda           # chosen sizes, on a GPU

Both use product Matern x Matern, float64, on n random cells of a 365 x 64 x 64 grid.
exact: one marginal-likelihood step (forward + backward, Cholesky) on the n cells, and the posterior of
4,096 cells (a 64 x 64 frame) given them.
variational: one epoch over the n cells (PLL, Adam, batches of 1,024, 512 inducing points), and the sparse
posterior of the same 4,096 cells given all n cells through 512 inducing inputs.
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

log = logging.getLogger("benchmarks.gp")
ARGS = {"timekernel": "matern", "spacekernel": "matern", "kernel_combination": "product", "matern_nu": 1.5,
        "num_mixtures": 4, "time_lengthscale": 100.0, "time_outputscale": 1.0, "mean_function": "climatology",
        "natural_gradient": False, "learn_inducing_locations": False}
BATCH, INDUCING = 1024, 512


def one(model_name: str, n: int, device: str, precision: str) -> dict:
    """Measure one model at size n in this process; seconds and peak memory (MB)."""
    import gpytorch
    import numpy as np
    import torch

    from exact_gp_related.exact_gp_utils import make_kernel, make_likelihood, make_model, posterior
    from gapfill.system import peak_memory_mb
    from variational_gp_related.variational_gp_utils import (
        batch_indices,
        kmeans,
        make_variational_model,
        sparse_posterior,
    )
    dtype = torch.float64 if precision == "64" else torch.float32
    rng = np.random.default_rng(0)
    grid = (np.arange(365.0), np.arange(64.0), np.arange(64.0))
    x = torch.as_tensor(np.column_stack([rng.integers(0, 365, n), rng.integers(0, 64, n), rng.integers(0, 64, n)])
                        + rng.uniform(0, 0.01, (n, 3)), dtype=dtype, device=device)
    y = torch.sin(x[:, 0] / 10) + torch.cos(x[:, 1] / 8) + 0.1 * torch.randn(n, dtype=dtype, device=device)
    xs = torch.as_tensor(np.column_stack([np.full(4096, 200.0), np.repeat(np.arange(64.0), 64),
                                          np.tile(np.arange(64.0), 64)]), dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t0 = time.perf_counter()
    if model_name == "exact":
        model, lik = make_model(ARGS, grid, x, y, dtype, device)
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
        model.train()
        with gpytorch.settings.max_cholesky_size(10**8):
            loss = -mll(model(x), y)
            loss.backward()
        sync()
        train_s, t0 = time.perf_counter() - t0, time.perf_counter()
        model.eval()
        mean, var = posterior(model, lik, x, y, xs, "benchmark")
    else:
        z = kmeans(x.cpu().numpy(), INDUCING, 0)
        model = make_variational_model(ARGS, make_kernel(ARGS, grid), make_likelihood(), z, dtype, device)
        pll = gpytorch.mlls.PredictiveLogLikelihood(model.likelihood, model, num_data=n)
        opt = torch.optim.Adam(model.parameters(), lr=0.03)
        model.train()
        for step in range(-(-n // BATCH)):
            idx = torch.as_tensor(batch_indices(n, BATCH, step, 0), device=device)
            opt.zero_grad()
            loss = -pll(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        sync()
        train_s, t0 = time.perf_counter() - t0, time.perf_counter()
        model.eval()
        zt = torch.as_tensor(z, dtype=dtype, device=device)
        mean, var = sparse_posterior(model.covar_module, model.mean_module, model.likelihood.noise.detach(), x, y, zt,
                                     xs, "benchmark")
    sync()
    predict_s = time.perf_counter() - t0
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    return {"model": model_name, "n": n, "train_s": round(train_s, 3), "predict_4096_s": round(predict_s, 3),
            "peak_memory_mb": round(peak_memory_mb(), 1), "device": device, "precision": precision}


def plot(rows: list[dict], pdf) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4), layout="constrained")
    a, b = fig.subplots(1, 2)
    for name, mark, what in (("exact", "o", "exact: marginal-likelihood step"),
                             ("variational", "s", f"variational: epoch (batches {BATCH}, M={INDUCING})")):
        r = [row for row in rows if row["model"] == name]
        if not r:
            continue
        n = [row["n"] for row in r]
        a.loglog(n, [row["train_s"] for row in r], mark + "-", label=what)
        a.loglog(n, [row["predict_4096_s"] for row in r], mark + "--", label=f"{name}: posterior of 64 x 64 cells")
        b.loglog(n, [row["peak_memory_mb"] / 1024 for row in r], mark + "-", label=name)
    a.set(xlabel="observed cells n", ylabel="seconds", title="time")
    b.set(xlabel="observed cells n", ylabel="GB", title="peak memory (process)")
    for ax in (a, b):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"GP scaling, product Matern x Matern, float{rows[0]['precision']}, {rows[0]['device']}, "
                 f"{platform.node()}", fontsize=10)
    fig.savefig(pdf)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=("exact", "variational"), default=["exact", "variational"])
    p.add_argument("--sizes", type=int, nargs="+", help="default: 1000, 2000, 4000, ... until a limit")
    p.add_argument("--start", type=int, default=1000)
    p.add_argument("--max_seconds", type=float, default=300, help="stop a model after a size slower than this")
    p.add_argument("--max_gb", type=float, default=20, help="stop a model before a size expected to pass this")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("64", "32"), default="64")
    p.add_argument("--out", default="benchmarks/records")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.device, args.precision)))
        return 0
    sizes = args.sizes or [args.start * 2**i for i in range(11)]
    rows = []
    for name in args.models:
        done = []
        for n in sizes:
            growth = 2 if name == "exact" else 0                   # memory ~ n^2 for the exact GP, flat otherwise
            if done and done[-1]["peak_memory_mb"] / 1024 * (n / done[-1]["n"]) ** growth > args.max_gb:
                log.info("%s: n=%d would pass --max_gb %g: stopping", name, n, args.max_gb)
                break
            res = subprocess.run([sys.executable, "-m", "benchmarks.bench_gp", "--one", name, str(n), "--device",
                                  args.device, "--precision", args.precision], capture_output=True, text=True)
            if res.returncode != 0:
                log.warning("%s: n=%d failed (exit %d): %s", name, n, res.returncode,
                            (res.stderr.strip().splitlines() or [""])[-1])
                break
            done.append(json.loads(res.stdout.strip().splitlines()[-1]))
            log.info("%-11s n=%8d  training %8.2f s  posterior of 4096 cells %7.2f s  peak %7.0f MB", name, n,
                     done[-1]["train_s"], done[-1]["predict_4096_s"], done[-1]["peak_memory_mb"])
            if done[-1]["train_s"] + done[-1]["predict_4096_s"] > args.max_seconds:
                log.info("%s: n=%d took longer than --max_seconds %g: stopping", name, n, args.max_seconds)
                break
        rows += done
    if not rows:
        log.error("no size ran")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gp_{args.device.replace(':', '')}_float{args.precision}"
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / f"{stem}.pdf")
    log.info("wrote %s and %s", out / f"{stem}.csv", out / f"{stem}.pdf")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
