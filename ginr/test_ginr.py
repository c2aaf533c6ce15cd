"""Test GINR runs: reconstruct the test frames from the trained network and frame codes (refitted on the
test frames' observed cells when the test mask is not the one the run was fitted with), then the method's
pages: the reconstruction on the sphere or grid in 3-D, and the first Laplacian eigenvectors.

    python ginr/test_ginr.py --checkpoints checkpoints/ginr/* --results_folder results/ginr
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from gapfill import runs
from gapfill.evaluate import script_main
from ginr.ginr_model import load_trained

METHOD = "ginr"
A4 = (11.69, 8.27)


def predict(problem, cfg, run_dir, device):
    """(mean, None), (T_test, B, Y, X) physical units."""
    sl = problem.splits["test"]
    return load_trained(problem, cfg, run_dir, device).reconstruct(range(sl.start, sl.stop))


def analyses(problem, cfg, run_dir, device, mean) -> list:
    """The field on its graph in 3-D, and the first eigenvectors; mean (T_test, B, Y, X) the reconstruction."""
    module = load_trained(problem.for_model(), cfg, run_dir, device)
    return [graph_page(module.data, problem, mean), eigen_page(module.data)]


def _node_values(data, frame_map: np.ndarray) -> np.ndarray:
    """(n_nodes,) a (Y, X) map read at each node (a merged pole: its first cell)."""
    flat = frame_map.ravel()
    out = np.full(data.graph.n, np.nan)
    cells = np.nonzero(data.cell_node >= 0)[0][::-1]
    out[data.cell_node[cells]] = flat[cells]
    return out


def graph_page(data, problem, mean) -> Figure:
    """Truth and reconstruction of the first test frame (band 0) at the graph's nodes, in 3-D."""
    sl, f = problem.splits["test"], problem.field
    t = sl.start
    pts = data.graph.points
    if pts.shape[1] == 2:
        pts = np.c_[pts, np.zeros(len(pts))]
    fig = Figure(figsize=A4, layout="constrained")
    panels = [("truth", f.values[t, 0]), ("GINR reconstruction", mean[0, 0])]
    vals = [_node_values(data, p) for _, p in panels]
    lo, hi = np.nanpercentile(np.concatenate(vals), [1, 99])
    sc = None
    for i, ((name, _), v) in enumerate(zip(panels, vals, strict=True)):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        sc = ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=v, s=4, cmap="viridis", vmin=lo, vmax=hi)
        ax.set_title(f"{name}, frame {t}")
        ax.set_box_aspect((np.ptp(pts[:, 0]) or 1, np.ptp(pts[:, 1]) or 1, np.ptp(pts[:, 2]) or 1))
        ax.set_axis_off()
    assert sc is not None                                                     # two panels
    fig.colorbar(sc, ax=fig.axes, shrink=0.5, label=f"{f.bands[0]} ({f.units[0]})")
    fig.suptitle(f"the field on its graph ({data.graph.kind}, {data.graph.n} nodes)")
    return fig


def eigen_page(data) -> Figure:
    """The first 6 non-constant Laplacian eigenvectors on the grid, with their eigenvalues."""
    fig = Figure(figsize=A4, layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for i, ax in enumerate(axes):
        j = i + 1
        if j >= data.features.shape[1]:
            ax.axis("off")
            continue
        img = np.full(data.Y * data.X, np.nan)
        cells = np.nonzero(data.cell_node >= 0)[0]
        img[cells] = data.features[data.cell_node[cells], j]
        ax.imshow(img.reshape(data.Y, data.X), cmap="RdBu_r", origin="lower")
        ax.set_title(f"eigenvector {j}, eigenvalue {data.eigenvalues[j]:.4g}", fontsize=9)
        ax.axis("off")
    fig.suptitle("the network's input: Laplacian eigenvectors of the graph (unit mean square)")
    return fig


main = script_main(METHOD, predict, __doc__, analyses=analyses)


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
