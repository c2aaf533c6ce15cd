"""GINR costs: (1) embedding a 1-degree global grid (181 x 360 = 65,160 cells; 64,442 nodes once each pole
row is one node) with k = 100 Laplacian eigenvectors, time and peak memory, combinatorial and cotangent;
(2) training throughput of the default network (k = 100, hidden 512, 4 layers, skip, frame codes of 64,
time features of 64 frequencies) in (frame, node) cells per second, forward, backward and Adam step, at
batches of 4 x 1000 cells. Each measurement runs in a fresh process; memory is that process's peak resident
size (CPU) or peak CUDA allocation (GPU).

    python -m benchmarks.bench_ginr                       # CPU
    python -m benchmarks.bench_ginr --device cuda         # a GPU (throughput only; the embedding is CPU)
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import replace_methods, time_steps, write_rows

log = logging.getLogger("benchmarks.ginr")


def embed_one(kind: str, k: int, degrees: float = 1.0) -> dict:
    import numpy as np

    from gapfill import graphs
    lat, lon = np.arange(-90.0, 90.0 + degrees / 2, degrees), np.arange(0.0, 360.0, degrees)
    t0 = time.perf_counter()
    g = graphs.grid_graph(np.ones((lat.size, lon.size), bool), lat, lon, 4, periodic_x=True)
    vals, vecs, _ = graphs.embed(g, k, kind)
    secs = time.perf_counter() - t0
    return {"what": f"embed {degrees:g}-degree sphere, {kind}", "cells": lat.size * lon.size, "nodes": g.n, "k": k,
            "seconds": round(secs, 2), "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "largest_eigenvalue": float(vals[-1]), "device": "cpu"}


def train_one(device: str, steps: int, n_nodes: int = 64442, n_frames: int = 365) -> dict:
    import torch

    from ginr.ginr_model import GINR
    torch.manual_seed(0)
    m = GINR(1, n_frames).to(device)
    m.register_buffer("features", torch.randn(n_nodes, 100, device=device), persistent=False)
    m.register_buffer("times", torch.linspace(0, 1, n_frames, device=device), persistent=False)
    replace_methods(m, log=lambda *a, **k: None)
    opt = torch.optim.Adam(m.parameters(), lr=5e-4)
    g = torch.Generator().manual_seed(0)
    b, n = 4, 1000
    batch = (torch.randint(0, n_frames, (b, n), generator=g).to(device),
             torch.randint(0, n_nodes, (b, n), generator=g).to(device),
             torch.randn(b, n, 1, generator=g).to(device), torch.ones(b, n, 1, device=device))

    def step():
        opt.zero_grad()
        loss = m.training_step(batch, 0)
        loss.backward()
        opt.step()

    secs, mem, name = time_steps(step, steps, device, warmup=3)
    return {"what": "train step, default network", "cells": b * n, "nodes": n_nodes, "k": 100,
            "seconds": round(secs, 4), "peak_mb": round(mem, 1), "cells_per_second": round(b * n / secs),
            "threads": torch.get_num_threads(), "device": f"{device} ({name})",
            "params": int(sum(p.numel() for p in m.parameters()))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--degrees", type=float, default=1.0, help="grid spacing of the embedded sphere")
    p.add_argument("--nodes", type=int, default=64442, help="graph nodes of the training step")
    p.add_argument("--frames", type=int, default=365, help="frames of the training step")
    p.add_argument("--out", default=None, help="CSV (default benchmarks/records/ginr_<cpu|gpu>.csv)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)         # internal: one measurement
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.one:
        kind, _, arg = args.one.partition(":")
        row = (embed_one(arg, args.k, args.degrees) if kind == "embed"
               else train_one(args.device, args.steps, args.nodes, args.frames))
        sys.stdout.write(json.dumps(row) + "\n")
        return 0
    jobs = [] if args.device.startswith("cuda") else ["embed:combinatorial", "embed:cotangent"]
    rows = []
    for job in jobs + ["train:"]:
        res = subprocess.run([sys.executable, "-m", "benchmarks.bench_ginr", "--one", job, "--device", args.device,
                              "--k", str(args.k), "--steps", str(args.steps), "--degrees", str(args.degrees),
                              "--nodes", str(args.nodes), "--frames", str(args.frames)],
                             capture_output=True, text=True, check=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        log.info("%s", row)
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[-1]).index(k) if k in rows[-1] else 99)
    rows = [{k: r.get(k, "") for k in keys} for r in rows]
    out = Path(args.out or f"benchmarks/records/ginr_{'gpu' if args.device.startswith('cuda') else 'cpu'}.csv")
    write_rows(out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
