"""Super-resolution with a trained GINR run: evaluate the network on the embedding of a grid twice as fine.

The fine grid's Laplacian eigenvectors are aligned to the coarse ones (orthogonal Procrustes within each group
of near-repeated coarse eigenvalues, signs alone for simple ones; the fine eigenvectors read at the coarse
nodes), then the network gives the residual at every fine node for each test frame, over the coarse first
guess upsampled bicubically. Scored against the fine truth (`--fine_data`, e.g. from
`make_synthetic_field --fine_out`) on every valid fine cell of the test frames, next to bicubic upsampling of
GINR's coarse reconstruction and of the coarse truth itself.

    python ginr/eval_superres.py --checkpoint checkpoints/ginr/<run> --fine_data data/pair_fine.nc \\
        --out_dir results/ginr_superres [--html view.html]
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from scipy.interpolate import RegularGridInterpolator

from gapfill import cli, graphs
from gapfill.data import open_field
from gapfill.entry import run_cli
from gapfill.errors import DataError
from gapfill.evaluate import load_run
from gapfill.files import write_csv
from gapfill.problem import build_problem
from gapfill.system import resolve_device, setup_logging
from ginr.ginr_model import load_trained

log = logging.getLogger(__name__)


def refine(v: np.ndarray) -> np.ndarray:
    """(n,) increasing coordinates -> (2n - 1,): the midpoints inserted."""
    out = np.empty(2 * len(v) - 1)
    out[::2], out[1::2] = v, (v[:-1] + v[1:]) / 2
    return out


def bicubic(maps: np.ndarray, y, x, fy, fx) -> np.ndarray:
    """(..., Y, X) maps on (y, x) -> (..., FY, FX) on (fy, fx), piecewise cubic (NaN-free input)."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, *maps.shape[-2:])
    gy, gx = np.meshgrid(fy, fx, indexing="ij")
    pts = np.stack([gy.ravel(), gx.ravel()], -1)
    out = [RegularGridInterpolator((y, x), m, method="cubic", bounds_error=False, fill_value=None)(pts) for m in flat]
    return np.stack(out).reshape(*lead, len(fy), len(fx))


def fine_features(module, fine_valid: np.ndarray, fy, fx, coarse_field) -> tuple[np.ndarray, graphs.Graph]:
    """(n_fine, k) features of the fine graph, aligned to the coarse ones, and the fine graph."""
    D, args = module.data, module.hparams
    g = graphs.grid_graph(fine_valid, fy, fx, D.neighbours, lonlat=graphs.is_lonlat(coarse_field),
                          periodic_x=bool(coarse_field.x_periodic))
    assert g.cell_node is not None                                            # a grid's graph maps every cell
    _, vecs, scale = graphs.embed(g, args.n_fourier, D.laplacian)
    feats = vecs * scale
    # each coarse node's fine node: the fine cell at the same coordinates
    iy = np.searchsorted(fy, coarse_field.y)
    ix = np.searchsorted(fx, coarse_field.x)
    fine_cell = (iy[:, None] * len(fx) + ix[None, :]).ravel()                 # (Y*X,) coarse cell -> fine cell
    cells = np.nonzero(D.cell_node >= 0)[0]
    coarse_nodes, fine_nodes = D.cell_node[cells], g.cell_node[fine_cell[cells]]
    ok = fine_nodes >= 0
    R = graphs.align(D.features[coarse_nodes[ok]].astype(np.float64), feats[fine_nodes[ok]], D.eigenvalues)
    aligned = feats @ R
    err = np.sqrt(np.mean((aligned[fine_nodes[ok]] - D.features[coarse_nodes[ok]]) ** 2, axis=0))
    log.info("aligned %d fine eigenvectors: RMS difference at the coarse nodes %.3g (median), %.3g (worst)",
             len(err), np.median(err), err.max())
    return aligned.astype(np.float32), g


def main(argv=None) -> int:
    p = cli.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a GINR run folder")
    p.add_argument("--fine_data", default=None, help="the same field on the fine grid (its truth); without it, "
                                                     "the fine grid is the coarse one with midpoints, unscored")
    p.add_argument("--out_dir", default="results/ginr_superres")
    p.add_argument("--html", default=None, help="also write an interactive HTML view of one fine frame (plotly)")
    p.add_argument("--device", type=cli.device_name, default="auto")
    p.add_argument("--log_level", default="INFO")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    cfg = load_run(args.checkpoint, "ginr", "ginr/eval_superres.py")
    problem = build_problem(cfg["args"])
    f = problem.field
    module = load_trained(problem.for_model(), cfg, args.checkpoint, resolve_device(args.device))
    D = module.data
    assert D is not None                                                      # load_trained attaches it
    if args.fine_data:
        fine = open_field(args.fine_data)
        if fine.shape[0] != f.shape[0] or fine.shape[1] != f.shape[1]:
            raise DataError(f"{args.fine_data}: {fine.shape[0]} frames of {fine.shape[1]} bands, the run's field has "
                            f"{f.shape[0]} of {f.shape[1]}")
        fy, fx = fine.y, fine.x
        if not (np.isin(f.y, fy).all() and np.isin(f.x, fx).all()):
            raise DataError(f"{args.fine_data}: its grid does not contain the coarse grid's nodes")
        tr = problem.splits["train"]
        fine_valid = np.isfinite(fine.values[tr]).any(axis=(0, 1)) if tr.stop > tr.start else np.ones(fine.shape[2:], bool)
    else:
        fine, fy, fx = None, refine(f.y), refine(f.x)
        fine_valid = np.ones((len(fy), len(fx)), bool)
    feats, g = fine_features(module, fine_valid, fy, fx, f)
    assert g.cell_node is not None
    sl = problem.splits["test"]
    frames = np.arange(sl.start, sl.stop)
    import torch
    with torch.no_grad():
        res = module.residual(frames, torch.from_numpy(feats).to(module.device))      # (n, N_fine, B)
    guess_fine = bicubic(D.guess[frames], f.y, f.x, fy, fx)                         # (n, B, FY, FX) normalised
    flat = np.zeros((len(frames), D.bands, len(fy) * len(fx)), np.float32)
    cells = np.nonzero(g.cell_node >= 0)[0]
    flat[:, :, cells] = res[:, g.cell_node[cells]].transpose(0, 2, 1)
    ginr_fine = D.normalizer.denormalize(guess_fine + flat.reshape(guess_fine.shape))
    coarse_mean, _ = module.reconstruct(frames)
    bic_pred = bicubic(np.nan_to_num(coarse_mean), f.y, f.x, fy, fx)
    rows = []
    if fine is not None:
        truth = fine.values[frames]
        coarse_truth = np.where(np.isfinite(f.values[frames]), f.values[frames], coarse_mean)
        bic_truth = bicubic(coarse_truth, f.y, f.x, fy, fx)
        ok = np.isfinite(truth)
        new = np.ones(truth.shape[-2:], bool)
        new[np.ix_(np.isin(fy, f.y), np.isin(fx, f.x))] = False                  # fine nodes between coarse ones
        for name, pred in (("GINR on the fine graph", ginr_fine), ("bicubic of GINR's coarse reconstruction", bic_pred),
                           ("bicubic of the coarse truth (reference)", bic_truth)):
            err = (pred - truth)[ok]
            err_new = (pred - truth)[ok & new]
            rows.append({"method": name, "rmse": float(np.sqrt(np.mean(err ** 2))),
                         "rmse_new_nodes": float(np.sqrt(np.mean(err_new ** 2))), "n_cells": int(ok.sum())})
            log.info("%-42s fine-grid RMSE %.4f %s (%.4f on the new nodes), %d cells", name, rows[-1]["rmse"],
                     f.units[0], rows[-1]["rmse_new_nodes"], rows[-1]["n_cells"])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        write_csv(out / "superres.csv", rows)
    panels = [("GINR, fine graph", ginr_fine[0, 0]), ("bicubic of GINR coarse", bic_pred[0, 0])]
    if fine is not None:
        panels = [("fine truth", fine.values[frames[0], 0])] + panels
    with PdfPages(out / "superres.pdf") as pdf:
        pdf.savefig(superres_page(panels, f, int(frames[0]), rows))
    if args.html:
        write_html(args.html, ginr_fine[0, 0], fy, fx, f"GINR on the fine grid, frame {frames[0]}")
    log.info("wrote %s", out)
    return 0


def superres_page(panels, f, t: int, rows) -> Figure:
    """One page of (name, (Y', X') map) panels on a shared colour scale, titled with frame t and `rows`' RMSEs."""
    fig = Figure(figsize=(11.69, 8.27), layout="constrained")
    axes = fig.subplots(1, len(panels))
    lo, hi = np.nanpercentile(np.concatenate([p.ravel() for _, p in panels]), [1, 99])
    im = None
    for ax, (name, img) in zip(np.atleast_1d(axes), panels, strict=True):
        im = ax.imshow(img, vmin=lo, vmax=hi, origin="lower", cmap="viridis")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    assert im is not None                                                     # panels is never empty
    fig.colorbar(im, ax=list(np.atleast_1d(axes)), shrink=0.6, label=f"{f.bands[0]} ({f.units[0]})")
    text = "; ".join(f"{r['method']}: {r['rmse']:.3f}" for r in rows)
    fig.suptitle(f"super-resolution, test frame {t}" + (f"\nfine-grid RMSE: {text}" if text else ""), fontsize=10)
    return fig


def write_html(path, img: np.ndarray, fy, fx, title: str) -> None:
    """An interactive heatmap (plotly, the library inlined: opens with no network)."""
    import plotly.graph_objects as go
    fig = go.Figure(go.Heatmap(z=img, x=fx, y=fy, colorscale="Viridis"))
    fig.update_layout(title=title)
    fig.write_html(str(path), include_plotlyjs=True)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
