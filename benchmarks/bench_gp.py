"""Time the exact and the variational GP, and record peak memory, against the number of observed cells n
(doubling from --start). A model stops at the first size that fails, would pass --max_gb, or takes longer
than --max_seconds; each size and model runs in a fresh process so that its peak memory is its own.

    python -m benchmarks.bench_gp --out benchmarks/records                  # CSV + PDF plot, both models
    python -m benchmarks.bench_gp --sizes 1000 2000 --device cuda           # chosen sizes, on a GPU
    python -m benchmarks.bench_gp --grids 32 64 128 --out benchmarks/records  # whole grids: the table below

Both use product Matern x Matern, float64, on n random cells of a 365 x 64 x 64 grid.
exact: one marginal-likelihood step (forward + backward, Cholesky) on the n cells, and the posterior of
4,096 cells (a 64 x 64 frame) given them.
variational: one epoch over the n cells (PLL, Adam, batches of 1,024, 512 inducing points), and the sparse
posterior of the same 4,096 cells given all n cells through 512 inducing inputs.

--grids G...: one table against the grid 365 x G x G with 10% of the cells observed (a random fixed mask,
stations, or a random dynamic one), separable Matern x Matern, float64:
- kron_multiply: one multiply by the complete-grid covariance K_t (x) K_y (x) K_x (the floor of any exact
  method on the grid);
- kron_stations: the Kronecker path on stations (exact): one training step on every observed training cell
  (255 frames), then mean and variance of every cell of all 365 frames given every observed cell;
- kron_cg: the Kronecker path on the dynamic mask: one training step as train_exact_gp takes it (float32 CG
  on the data and 4 probes, cold start; the Lanczos log det of the logged value, taken on validation steps
  only, timed apart as logdet_s), then the mean of every cell (CG) and the pathwise variance (64 samples)
  of the 55 test frames;
- dense: one step on 2,000 cells and the posterior of one G x G frame given 3,000 context cells, the time
  of all 365 frames extrapolated from it;
- variational: one epoch over every observed training cell (batches 1,024, M = 512) and the sparse posterior
  of one G x G frame given 3,000 context cells (the test's default), all frames extrapolated.
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
GRID_MODELS = ("kron_multiply", "kron_stations", "kron_cg", "dense", "variational")


def one(model_name: str, n: int, device: str, precision: str, frame: int = 64, context: int | None = None) -> dict:
    """Measure one model at size n in this process; seconds and peak memory (MB). The posterior is of one
    `frame` x `frame` frame, given the first `context` of the n cells (default all)."""
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
    xs = torch.as_tensor(np.column_stack([np.full(frame * frame, 200.0), np.repeat(np.arange(float(frame)), frame),
                                          np.tile(np.arange(float(frame)), frame)]), dtype=dtype, device=device)
    xc, yc = (x, y) if context is None else (x[:context], y[:context])
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
        mean, var = posterior(model, lik, xc, yc, xs, "benchmark")
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
        mean, var = sparse_posterior(model.covar_module, model.mean_module, model.likelihood.noise.detach(), xc, yc, zt,
                                     xs, "benchmark")
    sync()
    predict_s = time.perf_counter() - t0
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    return {"model": model_name, "n": n, "train_s": round(train_s, 3), "predict_4096_s": round(predict_s, 3),
            "peak_memory_mb": round(peak_memory_mb(), 1), "device": device, "precision": precision}


def one_grid(model_name: str, G: int, device: str, precision: str) -> dict:
    """Measure one model on the grid 365 x G x G (see the module docstring) in this process."""
    import numpy as np
    import torch

    from exact_gp_related import kronecker as kr
    from exact_gp_related.exact_gp_utils import Grid
    from gapfill.system import peak_memory_mb
    dtype = torch.float64 if precision == "64" else torch.float32
    T, n_train, n_test = 365, 255, 55
    rng = np.random.default_rng(0)
    dynamic = model_name == "kron_cg"
    obs = rng.random((T, G, G)) < 0.1 if dynamic else np.broadcast_to(rng.random((G, G)) < 0.1, (T, G, G))
    t = np.arange(T, dtype=float)
    ax = np.arange(G, dtype=float)
    field = np.sin(t / 20)[:, None, None] + np.cos(ax / 8)[None, :, None] * np.sin(ax / 11)[None, None, :]
    vals = np.where(obs, field + 0.1 * rng.standard_normal(field.shape), np.nan)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = {"model": model_name, "grid": f"{T}x{G}x{G}", "cells": T * G * G, "observed": int(obs.sum())}
    if model_name.startswith("kron"):
        from exact_gp_related.exact_gp_utils import make_model
        args = dict(ARGS, geometry="auto")
        model, lik = make_model(args, Grid(t, ax, ax), dtype=dtype, device=device, separable=True)
        with torch.no_grad():
            for k in model.covar_module.modules():
                if hasattr(k, "raw_lengthscale"):
                    k.lengthscale = torch.tensor(8.0)
            lik.noise = torch.tensor(0.01)
        train_grid = Grid(t[:n_train], ax, ax)
        if model_name == "kron_multiply":
            mats = kr.factor_matrices(model.covar_module, Grid(t, ax, ax), dtype, device)
            v = torch.randn(1, T, G, G, dtype=dtype, device=device)
            kr.mode_products(v, mats)
            sync()
            t0 = time.perf_counter()
            for _ in range(5):
                kr.mode_products(v, mats)
            sync()
            out.update(train_step_s=round((time.perf_counter() - t0) / 5, 4), predict_all_s=None)
            return dict(out, peak_memory_mb=round(peak_memory_mb(), 1), device=device, precision=precision)
        data, mask = kr.to_grid(vals[:n_train], obs[:n_train], (n_train, G, G), dtype, device)
        n = float(mask.sum())
        t0 = time.perf_counter()
        mats = kr.factor_matrices(model.covar_module, train_grid, dtype, device)
        noise = lik.noise.reshape(())
        if model_name == "kron_stations":
            cells = kr.fixed_cells(mask)
            assert cells is not None, "kron_stations: the same cells observed in every frame"
            st = kr.StationSolver(mats, float(noise), cells)
            a = st.alpha(data.reshape(1, n_train, -1)[..., cells])[0]
            (st.surrogate(mats, noise, a) / n).backward()
            st.logdet()
        else:                       # as train_exact_gp: float32 solves (--train_cg_precision), float64 gradient
            probes = torch.randn((kr.PROBES, *mask.shape), dtype=dtype, device=device).sign() * mask   # Rademacher
            f32 = torch.float32
            solver = kr.Solver([m.detach().to(f32) for m in mats], float(noise), mask.to(f32),
                               kr.train_tol(kr.TRAIN_CG_TOL, float(noise)))
            _, a, res = solver.solve(torch.cat([data[None], probes]).to(f32))
            a = a.to(dtype)
            (kr.surrogate_loss(mats, noise, mask, a[0], probes, a[1:]) / n).backward()
            out["train_cg_iters"] = res.iters
            sync()
            t1 = time.perf_counter()
            solver.logdet(kr.PROBES)                   # the logged value's log det: on validation steps only
            sync()
            logdet_s = time.perf_counter() - t1
            out["logdet_s"], t0 = round(logdet_s, 3), t0 + logdet_s
        sync()
        out["train_step_s"], t0 = round(time.perf_counter() - t0, 3), time.perf_counter()
        with torch.no_grad():
            mats = kr.factor_matrices(model.covar_module, Grid(t, ax, ax), dtype, device)
            data, mask = kr.to_grid(vals, obs, (T, G, G), dtype, device)
            if model_name == "kron_stations":
                cells = kr.fixed_cells(mask)
                assert cells is not None
                st = kr.StationSolver(mats, float(noise), cells)
                mean = st.mean(st.alpha(data.reshape(1, T, -1)[..., st.cells]))
                var = st.variance()
            else:
                solver = kr.Solver(mats, float(noise), mask, 1e-4)
                mean, _, res = solver.solve(data[None])
                out["predict_cg_iters"] = res.iters
                test = slice(n_train + n_test - 15, T)                 # the test frames and 15 frames of context
                data, mask = kr.to_grid(vals[test], obs[test], (T - test.start, G, G), dtype, device)
                sub = kr.Solver(kr.factor_matrices(model.covar_module, Grid(t[test], ax, ax), dtype, device),
                                float(noise), mask, 1e-4)
                var = sub.variance(64, chunk=kr.rhs_chunk(mask.numel(), mask.element_size()))
        sync()
        assert torch.isfinite(mean).all() and torch.isfinite(var).all()
        out["predict_all_s"] = round(time.perf_counter() - t0, 3)
        return dict(out, peak_memory_mb=round(peak_memory_mb(), 1), device=device, precision=precision)
    # dense and variational: the existing per-frame measurement on this grid's observed count, x 365 frames
    dense = model_name == "dense"
    per_frame = one("exact" if dense else "variational", 2000 if dense else int(obs[:n_train].sum()), device,
                    precision, frame=G, context=3000)
    out.update(train_step_s=per_frame["train_s"], predict_all_s=round(per_frame["predict_4096_s"] * T, 1),
               peak_memory_mb=per_frame["peak_memory_mb"], device=device, precision=precision)
    return out


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
    p.add_argument("--grids", type=int, nargs="+", help="the whole-grid table on 365 x G x G grids (see above)")
    p.add_argument("--grid_models", nargs="+", default=list(GRID_MODELS), choices=GRID_MODELS)
    p.add_argument("--preconditioner", type=int, metavar="G",
                   help="print CG iterations with and without the preconditioner on 365 x G x G (see the function)")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    p.add_argument("--one_grid", nargs=2, metavar=("MODEL", "G"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.device, args.precision)))
        return 0
    if args.one_grid:
        print(json.dumps(one_grid(args.one_grid[0], int(args.one_grid[1]), args.device, args.precision)))
        return 0
    if args.grids:
        return grid_table(args)
    if args.preconditioner:
        print(json.dumps(preconditioner_iterations(args.preconditioner, args.precision)))
        return 0
    sizes = args.sizes or [args.start * 2**i for i in range(11)]
    rows = []
    for name in args.models:
        done: list[dict] = []
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


def preconditioner_iterations(G: int = 64, precision: str = "64") -> dict:
    """CG iterations to a relative residual of 1e-4 with and without the eigenbasis-diagonal preconditioner on
    365 x G x G, 10% observed at random in every frame (dynamic), length scales 10 frames and 8 cells,
    noise 0.01 (unit output scale)."""
    import numpy as np
    import torch

    from exact_gp_related import kronecker as kr
    from exact_gp_related.exact_gp_utils import Grid, make_model
    dtype = torch.float64 if precision == "64" else torch.float32
    t, ax = np.arange(365.0), np.arange(float(G))
    model, _ = make_model(dict(ARGS, geometry="auto"), Grid(t, ax, ax), dtype=dtype, separable=True)
    with torch.no_grad():
        for k in model.covar_module.modules():
            if hasattr(k, "raw_lengthscale"):
                k.lengthscale = torch.tensor(10.0 if k.active_dims.tolist() == [0] else 8.0)
        model.covar_module.outputscale = torch.tensor(1.0)
    mats = [m.detach() for m in kr.factor_matrices(model.covar_module, Grid(t, ax, ax), dtype, "cpu")]
    rng = np.random.default_rng(0)
    obs = rng.random((365, G, G)) < 0.1
    data, mask = kr.to_grid(rng.standard_normal(obs.shape), obs, obs.shape, dtype, "cpu")
    out: dict[str, float] = {}
    for name in ("preconditioned", "plain"):
        s = kr.Solver(mats, 0.01, mask, tol=1e-4, max_iters=5000)
        if name == "plain":
            s.precond = torch.ones_like(s.precond)
        t0 = time.perf_counter()
        out[name] = s.solve(data[None])[2].iters
        out[f"{name}_s"] = round(time.perf_counter() - t0, 1)
    return out


def grid_table(args) -> int:
    """The whole-grid table: every model on every grid, each in a fresh process; a failure is a row too."""
    from benchmarks.common import write_rows
    rows = []
    for G in args.grids:
        for name in args.grid_models:
            res = subprocess.run([sys.executable, "-m", "benchmarks.bench_gp", "--one_grid", name, str(G), "--device",
                                  args.device, "--precision", args.precision], capture_output=True, text=True)
            if res.returncode != 0:
                why = (res.stderr.strip().splitlines() or [""])[-1]
                log.warning("%s on 365 x %d x %d failed (exit %d): %s", name, G, G, res.returncode, why)
                rows.append({"model": name, "grid": f"365x{G}x{G}", "failed": why[:120]})
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            log.info("%s", rows[-1])
    path = Path(args.out) / f"gp_grids_{args.device.replace(':', '')}_float{args.precision}.csv"
    if path.exists():                                   # rows of other models and grids stay, in their order
        with open(path, newline="") as f:
            old = [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
        new = {(r["model"], r["grid"]): r for r in rows}
        rows = [new.pop((r["model"], r["grid"]), r) for r in old] + list(new.values())
    keys = list(dict.fromkeys(k for r in rows for k in r))
    write_rows(path, [{k: r.get(k) for k in keys} for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
