"""Super-resolution on a mesh: a GINR trained on a coarse mesh, evaluated on its subdivision.

    python -m data_generation.make_graph_data mesh_superres --out data/bunny_superres --shape bunny
    python ginr/train_graph_signals.py --dataset_dir data/bunny_superres --valid_fraction 0.1 \\
        --out_dir checkpoints/graph_signals/bunny_superres
    python ginr/eval_mesh_superres.py --checkpoint checkpoints/graph_signals/bunny_superres/best.ckpt \\
        --dataset_dir data/bunny_superres --out_dir results/graph_signals/bunny_superres

The network reads the fine mesh's cotangent eigenvectors aligned to the coarse ones it was trained on
(`fine_prediction`: Procrustes per eigenvalue group; the subdivision keeps the coarse vertices first). It is
scored on the new vertices (the edge midpoints) against the truth there, next to the floor: linear
interpolation along the edge, the mean of the midpoint's two coarse neighbours. Writes `metrics.json` and
`mesh_superres.pdf` (truth, GINR, floor and GINR's error on the fine mesh).
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
from gapfill.system import setup_logging
from ginr.graph_signals import SignalINR, draw_mesh, fine_prediction, rmse

log = logging.getLogger(__name__)


def edge_midpoint_floor(coarse_values: np.ndarray, fine_vertices: np.ndarray, fine_faces: np.ndarray) -> np.ndarray:
    """(n_fine,) values: the coarse ones at the first n_coarse fine vertices, each newer vertex the mean of its
    two coarse neighbours on the fine mesh (linear along the split edge)."""
    n = len(coarse_values)
    adj = graphs.mesh_graph(fine_vertices, fine_faces).adjacency.tocsr()[n:, :n]
    counts = np.asarray(adj.sum(1)).ravel()
    if not np.all(counts == 2):
        raise DataError("fine/ is not the subdivision of the coarse mesh: a new vertex has "
                        f"{int(counts.min())}..{int(counts.max())} coarse neighbours, not 2")
    return np.r_[coarse_values, adj @ coarse_values / 2]


def main(argv=None) -> int:
    p = cli.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="best.ckpt written by ginr/train_graph_signals.py")
    p.add_argument("--dataset_dir", required=True, help="the mesh_superres dataset folder (with fine/)")
    p.add_argument("--out_dir", default="results/graph_signals/mesh_superres")
    args = p.parse_args(argv)
    setup_logging()
    folder = Path(args.dataset_dir)
    if not (folder / "fine" / "mesh.npz").exists():
        raise DataError(f"--dataset_dir {folder}: no fine/mesh.npz (make it with "
                        "data_generation.make_graph_data mesh_superres)")
    module = SignalINR.load_from_checkpoint(args.checkpoint, map_location="cpu")
    coarse, fine = graphs.read_dataset(folder), graphs.read_dataset(folder / "fine")
    mesh = np.load(folder / "fine" / "mesh.npz")
    n = coarse["fourier"].shape[1]
    pred = fine_prediction(module, coarse["fourier"][0], fine["fourier"][0], np.arange(n),
                           np.load(folder / "values.npy"))[0, :, 0]                 # (n_fine,)
    truth = fine["target"][0, :, 0].astype(np.float64)
    floor = edge_midpoint_floor(coarse["target"][0, :, 0].astype(np.float64), mesh["vertices"], mesh["faces"])
    new = np.arange(n, len(truth))
    metrics = {"new_vertices": len(new), "coarse_vertices": n,
               "rmse_new_vertices": {"ginr": rmse(pred[new], truth[new]), "edge_midpoint": rmse(floor[new], truth[new])},
               "rmse_coarse_vertices_ginr": rmse(pred[:n], truth[:n]), "truth_std": float(truth.std())}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    fig = Figure(figsize=(15, 10))
    grid = fig.add_gridspec(2, 2)
    lo, hi = float(truth.min()), float(truth.max())
    r = metrics["rmse_new_vertices"]
    for spec, values, title in ((grid[0, 0], truth, f"truth, {len(truth):,} vertices"),
                                (grid[0, 1], pred, f"GINR: RMSE {r['ginr']:.4f} on the {len(new):,} new vertices"),
                                (grid[1, 0], floor, f"linear along edges: RMSE {r['edge_midpoint']:.4f}")):
        draw_mesh(fig, spec, mesh["vertices"], mesh["faces"], values, lo, hi, title)
    e = float(np.abs(pred - truth).max())
    draw_mesh(fig, grid[1, 1], mesh["vertices"], mesh["faces"], pred - truth, -e, e, "GINR - truth")
    fig.savefig(out / "mesh_superres.pdf")
    log.info("new vertices: GINR RMSE %.4g, linear along edges %.4g (coarse vertices: GINR %.4g); wrote %s",
             r["ginr"], r["edge_midpoint"], metrics["rmse_coarse_vertices_ginr"], out)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
