"""Evaluate a time-conditioned GINR on the moving global field: time interpolation and a sphere twice as fine.

    python -m data_generation.make_graph_data weather --out data/weather
    python ginr/train_graph_signals.py --dataset_dir data/weather --time --train_every 2 --eval_every 1 \\
        --out_dir checkpoints/graph_signals/weather
    python ginr/eval_weather.py --checkpoint checkpoints/graph_signals/weather/best.ckpt \\
        --dataset_dir data/weather --out_dir results/graph_signals/weather

- time interpolation: at the held-out times (odd steps with the commands above), on the 1-degree test nodes,
  GINR against linear interpolation in time and each node's training mean (`held_out_times`).
- super-resolution: at every time, on the 0.5-degree sphere of `fine/` (every coarse node and the midpoints),
  the network reads the fine eigenvectors aligned to the coarse ones (`graphs.align`: orthogonal Procrustes
  within each group of near-repeated eigenvalues, the fine vectors read at the coarse nodes, which the fine
  grid contains). The floor is bilinear interpolation (longitude periodic) of what the floor knows on the
  coarse grid: the truth at training times, its linear interpolation in time at held-out times.
  Scores are area-weighted (cos latitude) RMSEs over every fine node.

Writes `rmse.csv` (one row per time), `metrics.json`, `weather.pdf` (maps of truth, GINR, floor and GINR's
error at one held-out time; RMSE against time) and `weather.mp4` (truth | GINR | floor on the fine sphere).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from gapfill import cli, graphs
from gapfill.entry import run_cli
from gapfill.errors import DataError
from gapfill.files import write_csv
from gapfill.report.video import labelled_row, rgb, write_mp4
from gapfill.system import setup_logging
from ginr.graph_signals import SignalINR, fine_prediction, held_out_times, interpolate, select_times

log = logging.getLogger(__name__)


def midpoints(c: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of (..., Y, X) lon/lat grids (longitude periodic) onto every node and the
    midpoints -> (..., 2 Y - 1, 2 X)."""
    rows = np.empty(c.shape[:-2] + (2 * c.shape[-2] - 1, c.shape[-1]))
    rows[..., ::2, :], rows[..., 1::2, :] = c, (c[..., :-1, :] + c[..., 1:, :]) / 2
    out = np.empty(rows.shape[:-1] + (2 * c.shape[-1],))
    out[..., ::2], out[..., 1::2] = rows, (rows + np.roll(rows, -1, axis=-1)) / 2
    return out


def area_rmse(a: np.ndarray, b: np.ndarray, lat: np.ndarray) -> float:
    """RMSE of (..., Y, X) grids weighted by cos(latitude) (lat (Y,) degrees)."""
    w = np.broadcast_to(np.cos(np.radians(lat))[:, None], a.shape[-2:])
    return float(np.sqrt(np.sum(w * (a - b) ** 2) / (w.sum() * (a.size // w.size))))


def super_resolution(module: SignalINR, data: dict, fine: dict, grid: dict, values: np.ndarray) -> dict:
    """GINR and the bilinear floor on the fine grid at every time: {'truth', 'ginr', 'floor' (S, Yf, Xf),
    'held_out' (S,) bool, 'rows'}."""
    lat, lon, flat = grid["coarse_lat"], grid["coarse_lon"], grid["fine_lat"]
    Y, X = len(lat), len(lon)
    if (len(flat), len(grid["fine_lon"])) != (2 * Y - 1, 2 * X):
        raise DataError("fine/ is not the grid twice as fine (every coarse node and the midpoints)")
    split = module.hparams.split or {}
    S = len(data["time"])
    train, ev = select_times(S, data["time"], split.get("train_every"), split.get("eval_every"))
    coarse = data["target"][..., 0].reshape(S, Y, X)
    known = coarse.copy()                                       # what the floor knows at every time
    known[ev] = interpolate(data["time"], data["target"][..., 0], train, ev).reshape(len(ev), Y, X)
    at_coarse = (2 * np.arange(Y)[:, None] * 2 * X + 2 * np.arange(X)[None, :]).ravel()
    pred = fine_prediction(module, data["fourier"][0], fine["fourier"][0], at_coarse, values, data["time"])[..., 0]
    shape = (S, 2 * Y - 1, 2 * X)
    res = {"truth": fine["target"][..., 0].reshape(shape), "ginr": pred.reshape(shape), "floor": midpoints(known),
           "held_out": np.isin(np.arange(S), ev), "times": data["time"]}
    res["rows"] = [{"time": float(t), "held_out": bool(res["held_out"][s]),
                    "superres_ginr": area_rmse(res["ginr"][s], res["truth"][s], flat),
                    "superres_bilinear": area_rmse(res["floor"][s], res["truth"][s], flat)}
                   for s, t in enumerate(data["time"])]
    return res


def overall(sr: dict, lat: np.ndarray) -> dict:
    """Area-weighted RMSE of GINR and the floor on the fine sphere: at the training times, the held-out ones."""
    out = {}
    for name, sel in (("trained_times", ~sr["held_out"]), ("held_out_times", sr["held_out"])):
        out[name] = {k: area_rmse(sr[k][sel], sr["truth"][sel], lat) for k in ("ginr", "floor")} if sel.any() else {}
    return out


def plot(sr: dict, held: dict, grid: dict, s: int, path) -> None:
    """weather.pdf: maps at time index s (truth, GINR, floor, GINR - truth) and the RMSEs against time."""
    ext = (0, 360, grid["fine_lat"][0], grid["fine_lat"][-1])
    lo, hi = np.percentile(sr["truth"][s], [1, 99])
    with PdfPages(path) as pdf:
        fig = Figure(figsize=(11.69, 8.27), layout="constrained")
        for ax, key, title in zip(fig.subplots(2, 2).ravel(), ("truth", "ginr", "floor", "error"),
                                  ("truth (0.5 degree)", "GINR on the aligned fine eigenvectors",
                                   "floor: bilinear of the coarse (time-interpolated) field", "GINR - truth"), strict=True):
            img = sr["ginr"][s] - sr["truth"][s] if key == "error" else sr[key][s]
            e = float(np.abs(img).max()) if key == "error" else 0.0
            im = ax.imshow(img, origin="lower", extent=ext, cmap="RdBu_r" if key == "error" else "viridis",
                           vmin=-e if key == "error" else lo, vmax=e if key == "error" else hi, aspect="auto")
            ax.set(title=f"{title}, t = {sr['times'][s]:g}", xlabel="longitude", ylabel="latitude")
            fig.colorbar(im, ax=ax, shrink=0.8, label="K")
        pdf.savefig(fig)
        fig = Figure(figsize=(11.69, 8.27), layout="constrained")
        ax, ax2 = fig.subplots(2, 1)
        t = [r["time"] for r in held["rows"]]
        for key, label in (("ginr", "GINR"), ("interp", "linear in time"), ("node_mean", "node mean")):
            ax.plot(t, [r[key] for r in held["rows"]], "o-", label=f"{label}: {held['overall'][key]:.4g} K")
        ax.set(xlabel="held-out time", ylabel="RMSE (K), coarse test nodes", title="time interpolation")
        ax.legend()
        for key, label in (("superres_ginr", "GINR"), ("superres_bilinear", "bilinear floor")):
            ax2.plot(sr["times"], [r[key] for r in sr["rows"]], "o-", label=label)
        ax2.plot(sr["times"][sr["held_out"]], [r["superres_ginr"] for r in sr["rows"] if r["held_out"]], "kx",
                 label="held-out times")
        ax2.set(xlabel="time", ylabel="area-weighted RMSE (K), 0.5-degree sphere", title="super-resolution")
        ax2.legend()
        pdf.savefig(fig)


def video(sr: dict, path, fps: float = 4.0) -> Path:
    """weather.mp4: truth | GINR | floor on the fine sphere, north up, one frame per time."""
    lo, hi = np.percentile(sr["truth"], [1, 99])
    k = max(1, -(-240 // sr["truth"].shape[1]))
    frames = [labelled_row([rgb(sr[key][s][::-1], lo, hi, "viridis") for key in ("truth", "ginr", "floor")],
                           [f"truth t={t:g}{' (held out)' if sr['held_out'][s] else ''}", "GINR", "bilinear floor"], k)
              for s, t in enumerate(sr["times"])]
    return write_mp4(np.stack(frames), path, fps)


def main(argv=None) -> int:
    p = cli.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="best.ckpt written by ginr/train_graph_signals.py --time")
    p.add_argument("--dataset_dir", required=True, help="the weather dataset folder (with fine/ and grid.npz)")
    p.add_argument("--out_dir", default="results/graph_signals/weather")
    p.add_argument("--fps", type=cli.positive_float, default=4.0, help="video frames a second")
    args = p.parse_args(argv)
    setup_logging()
    folder = Path(args.dataset_dir)
    if not (folder / "grid.npz").exists() or not (folder / "fine").is_dir():
        raise DataError(f"--dataset_dir {folder}: no grid.npz or fine/ (make it with "
                        "data_generation.make_graph_data weather)")
    module = SignalINR.load_from_checkpoint(args.checkpoint, map_location="cpu")
    data, fine = graphs.read_dataset(folder), graphs.read_dataset(folder / "fine")
    grid = dict(np.load(folder / "grid.npz"))
    held = held_out_times(module, data)
    sr = super_resolution(module, data, fine, grid, np.load(folder / "values.npy"))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    interp = {r["time"]: r for r in held["rows"]}
    write_csv(out / "rmse.csv", [{**r, **{f"time_{k}": interp.get(r["time"], {}).get(k, "")
                                          for k in ("ginr", "interp", "node_mean")}} for r in sr["rows"]])
    metrics = {"time_interpolation": held["overall"], "n_test_nodes": len(held["test_nodes"]),
               "super_resolution": overall(sr, grid["fine_lat"]), "fine_nodes": int(sr["truth"][0].size)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    s = int(np.flatnonzero(sr["held_out"])[len(held["rows"]) // 2])
    plot(sr, held, grid, s, out / "weather.pdf")
    video(sr, out / "weather.mp4", args.fps)
    log.info("time interpolation (K, coarse test nodes): GINR %.4g, linear in time %.4g, node mean %.4g; "
             "super-resolution (K, area-weighted): %s; wrote %s", held["overall"]["ginr"], held["overall"]["interp"],
             held["overall"]["node_mean"], metrics["super_resolution"], out)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
