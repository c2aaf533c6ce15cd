"""Evaluate a time-conditioned GINR on the Gray-Scott snapshots it never saw.

    python ginr/eval_gray_scott.py --checkpoint checkpoints/graph_signals/gray_scott/best.ckpt \\
        --dataset_dir data/gray_scott --out_dir results/graph_signals/gray_scott --html gray_scott.html

The checkpoint names its split (train on t % 10 == 0, evaluate on t % 5 == 0 between them; validation nodes
of those times chose the epoch). At every held-out time the GINR's v is scored on the test nodes (RMSE)
next to two baselines built from the training snapshots only: linear interpolation in time between the two
neighbouring training snapshots, and each node's mean over the training snapshots (constant in time).
Writes `rmse.csv` (one row per held-out time), `metrics.json`, `gray_scott.pdf` (the mesh in 3-D: truth,
GINR, interpolation at one held-out time; RMSE against time) and with --html a self-contained plotly view.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from gapfill import cli, graphs
from gapfill.entry import run_cli
from gapfill.errors import DataError
from gapfill.files import write_csv
from gapfill.system import setup_logging
from ginr.graph_signals import SignalINR, draw_mesh, held_out_times, rmse

log = logging.getLogger(__name__)


def plot(res: dict, vertices, faces, i: int, path) -> None:
    """One PDF page: truth, GINR and interpolation on the mesh at held-out sample i; RMSE against time."""
    fig = Figure(figsize=(15, 9))
    grid = fig.add_gridspec(2, 3, height_ratios=(2, 1))
    lo, hi = float(res["truth"][i].min()), float(res["truth"][i].max())
    for c, (key, title) in enumerate((("truth", "simulated v"), ("ginr", "GINR"), ("interp", "linear in time"))):
        nodes = res["test_nodes"]
        err = "" if key == "truth" else f"\nRMSE {rmse(res[key][i, nodes], res['truth'][i, nodes]):.4f}"
        draw_mesh(fig, grid[0, c], vertices, faces, res[key][i], lo, hi, f"{title}, t = {res['times'][i]:g}{err}")
    ax = fig.add_subplot(grid[1, :])
    t = [r["time"] for r in res["rows"]]
    for key, label in (("ginr", "GINR"), ("interp", "linear in time"), ("node_mean", "node mean (constant)")):
        ax.plot(t, [r[key] for r in res["rows"]], "o-", label=f"{label}: {res['overall'][key]:.4f}")
    ax.set_xlabel("held-out time")
    ax.set_ylabel("RMSE of v on test nodes")
    ax.legend()
    fig.savefig(path)


def write_html(res: dict, vertices, faces, i: int, path) -> None:
    """A self-contained plotly page (no network needed): truth, GINR and interpolation side by side."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    titles = ("simulated v", "GINR", "linear in time")
    fig = make_subplots(rows=1, cols=3, specs=[[{"type": "scene"}] * 3],
                        subplot_titles=[f"{s}, t = {res['times'][i]:g}" for s in titles])
    lo, hi = float(res["truth"][i].min()), float(res["truth"][i].max())
    for c, key in enumerate(("truth", "ginr", "interp")):
        fig.add_trace(go.Mesh3d(x=vertices[:, 0], y=vertices[:, 1], z=vertices[:, 2], i=faces[:, 0], j=faces[:, 1],
                                k=faces[:, 2], intensity=res[key][i], cmin=lo, cmax=hi, colorscale="Viridis",
                                showscale=c == 0, name=key), row=1, col=c + 1)
    fig.update_scenes(aspectmode="data")
    fig.write_html(str(path), include_plotlyjs=True)


def main(argv=None) -> int:
    p = cli.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="best.ckpt written by ginr/train_graph_signals.py")
    p.add_argument("--dataset_dir", required=True, help="the Gray-Scott dataset folder (with mesh.npz)")
    p.add_argument("--out_dir", default="results/graph_signals/gray_scott")
    p.add_argument("--plot_time", type=float, default=None, help="held-out time to draw (default: the middle one)")
    p.add_argument("--html", default=None, help="also write an interactive plotly view to this file")
    args = p.parse_args(argv)
    setup_logging()
    module = SignalINR.load_from_checkpoint(args.checkpoint, map_location="cpu")
    folder = Path(args.dataset_dir)
    if not (folder / "mesh.npz").exists():
        raise DataError(f"--dataset_dir {folder}: no mesh.npz (make it with data_generation.make_graph_data gray_scott)")
    data = graphs.read_dataset(folder)
    mesh = np.load(folder / "mesh.npz")
    res = held_out_times(module, data)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "rmse.csv", [{k: r[k] for k in ("time", "ginr", "interp", "node_mean")} for r in res["rows"]])
    (out / "metrics.json").write_text(json.dumps({"rmse": res["overall"], "n_test_nodes": len(res["test_nodes"]),
                                                  "times": res["times"].tolist()}, indent=1))
    log.info("held-out RMSE of v on %d test nodes\n%s", len(res["test_nodes"]),
             "\n".join([f"{'time':>8} {'GINR':>8} {'interp':>8} {'nodemean':>8}"]
                       + [f"{r['time']:8g} {r['ginr']:8.4f} {r['interp']:8.4f} {r['node_mean']:8.4f}" for r in res["rows"]]
                       + [f"{'all':>8} " + " ".join(f"{res['overall'][k]:8.4f}" for k in ("ginr", "interp", "node_mean"))]))
    i = len(res["times"]) // 2 if args.plot_time is None else int(np.argmin(np.abs(res["times"] - args.plot_time)))
    plot(res, mesh["vertices"], mesh["faces"], i, out / "gray_scott.pdf")
    if args.html:
        write_html(res, mesh["vertices"], mesh["faces"], i, args.html)
    log.info("wrote %s%s", out, f" and {args.html}" if args.html else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
