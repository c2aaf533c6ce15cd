"""Graph-signal datasets in the GINR format (Grattarola & Vandergheynst 2022).

    python -m data_generation.make_graph_data gray_scott --out data/gray_scott --shape bunny
    python -m data_generation.make_graph_data sbm --out data/sbm --sizes 100 100 --p_in 0.2 --p_out 0.02
    python -m data_generation.make_graph_data weather --out data/weather --resolution 1.0
    python -m data_generation.make_graph_data mesh_superres --out data/bunny_superres --shape bunny
    python -m data_generation.make_graph_data shapes --out data/shapes --n_shapes 20

gray_scott: Gray-Scott reaction-diffusion on a triangle mesh (icosphere, torus, or a bunny-like blob made by
marching cubes of a smooth union of spheres),
    u_t = Du Lap u - u v^2 + F (1 - u),    v_t = Dv Lap v + u v^2 - (F + k) v,
with Lap = -M^{-1} L (L the cotangent Laplacian, positive semi-definite, M its lumped mass matrix), stepped
semi-implicitly: (M + dt D L) u_new = M (u + dt reaction), each matrix factorised once. Du and Dv are the
classic grid values (0.16, 0.08 with unit grid spacing) times h^2, h = the mean edge length times
--pattern_scale, so the patterns are a few edges wide on any mesh. Start: u = 1, v = 0 except --n_seeds
small patches (u = 0.5, v = 0.25) at vertices drawn with --seed. Saved: v after --burn_in steps and then every
--steps_per_frame steps (--n_frames snapshots, time = snapshot index), the fourier features (the first
--n_fourier cotangent eigenvectors times their scale), the vertices, and `mesh.npz` (vertices, faces).

weather: a global temperature-like field on a cell-centred lon/lat grid (1 degree: 180 x 360 = 64,800 nodes)
that moves in time, with no download:
    T(lat, lon, t) = 288 K - 40 K sin^2(lat) + 8 K a(lat, lon, t) / std(a(., ., 0)),
    a = sum_{l=1..L} sum_{m=0..l} c_lm l^-1 P_lm(sin lat) cos(m (lon - w_l t) + phi_lm),
P_lm the orthonormal associated Legendre functions (scipy.special.sph_harm_y), c_lm ~ N(0, 1), phi_lm ~ U(0, 2
pi): each degree l drifts eastwards at w_l = --drift (0.5 + 1 / l) degrees a step (large patterns faster), so a
state is not the linear interpolation of its neighbours. Nodes: the grid graph (4 neighbours, longitude
periodic) with points on the unit sphere; fourier = the first --n_fourier cotangent-Laplacian eigenvectors
times their scale (100 = every spherical-harmonic-like group of degree 0..9). `fine/` holds the same field
on the grid twice as fine in latitude and longitude (every coarse node and the midpoints: 359 x 720 =
258,480 nodes at 0.5 degrees) with its own eigenvectors and eigenvalues, for super-resolution; `grid.npz`
holds lat, lon of both grids; `values.npy` the coarse eigenvalues.

mesh_superres: a smooth signal on a mesh (`--shape`) and on its subdivision (trimesh.remesh.subdivide: every
edge split at its midpoint, the coarse vertices first, 4x the faces, the same surface), each with its own
cotangent eigenvectors: f(p) = sum_j sin(k_j . p + phi_j) / sqrt(--n_waves), k_j of random direction and
length uniform up to 2 pi / (--wavelength mean coarse edges), phi_j ~ U(0, 2 pi). The coarse set is the
training data, `fine/` the truth at every fine vertex, `mesh.npz` and `fine/mesh.npz` the meshes.

shapes: several graphs, one per sample (a stand-in for the reference's proteins, for --latents): icospheres
(`--subdivisions`; several values: the shapes take them in turn, graphs of different sizes) pushed out and in
by 5 random Gaussian bumps (radius 1 + 0.3 sum_j a_j exp(-|p - c_j|^2 / 0.32), a_j ~ U(-1, 1)), each with its
own cotangent eigenvectors and its own plane-wave signal (as in mesh_superres, wavelengths down to the unit
sphere's diameter), all in the sample files; `faces_{d}.npy` holds the faces of subdivision level d.

sbm: a stochastic block model graph (networkx), fourier = combinatorial-Laplacian eigenvectors, target = the
one-hot community (n, blocks), one sample; `labels.npy` holds the communities. Same seed -> identical files.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import factorized
from scipy.special import logsumexp

from gapfill import cli, graphs
from gapfill.entry import run_cli
from gapfill.graphs import sbm_graph
from gapfill.system import setup_logging

log = logging.getLogger(__name__)

# ---- defaults (one reason each) ----
DU, DV = 0.16, 0.08          # the classic grid diffusivities (unit spacing, dt = 1)
FEED, KILL = 0.0367, 0.0649  # "mitosis": spots that grow and split, so the snapshots keep changing
SHAPES = ("icosphere", "torus", "bunny")
# the bunny-like blob: (centre x, y, z, radius) of the spheres joined smoothly
BUNNY = [(0.0, 0.0, 0.0, 1.0), (-0.55, 0.0, -0.05, 0.9), (0.95, 0.0, 0.55, 0.55), (-1.3, 0.0, 0.15, 0.3)] + [
    (0.85 - 0.08 * i, s * (0.18 + 0.05 * i), 1.0 + 0.2 * i, 0.17) for s in (-1, 1) for i in range(5)]


def make_mesh(shape: str = "bunny", subdivisions: int = 4, resolution: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (n, 3) float64, faces (F, 3) int64) of an icosphere, a torus or the bunny-like blob (marching
    cubes on a `resolution`^3 grid, smooth union of spheres, largest piece kept)."""
    import trimesh
    if shape == "icosphere":
        m = trimesh.creation.icosphere(subdivisions=subdivisions)
    elif shape == "torus":
        sec = 8 * 2 ** (subdivisions // 2)
        m = trimesh.creation.torus(major_radius=1.0, minor_radius=0.4, major_sections=2 * sec, minor_sections=sec)
    elif shape == "bunny":
        from skimage.measure import marching_cubes
        c = np.array(BUNNY)
        lo, hi = (c[:, :3] - c[:, 3:]).min(0) - 0.2, (c[:, :3] + c[:, 3:]).max(0) + 0.2
        step = (hi - lo).max() / resolution
        axes = [np.arange(a, b + step, step) for a, b in zip(lo, hi, strict=True)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)                   # (X, Y, Z, 3)
        d = np.linalg.norm(grid[..., None, :] - c[:, :3], axis=-1) - c[:, 3]     # (X, Y, Z, spheres)
        sdf = -0.08 * logsumexp(-d / 0.08, axis=-1)                               # smooth minimum
        verts, faces, _, _ = marching_cubes(sdf, level=0.0, spacing=(step,) * 3)
        m = trimesh.Trimesh(verts + lo, faces, process=True)
        pieces = m.split(only_watertight=False)
        m = max(pieces, key=lambda p: len(p.faces))
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    return np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64)


def gray_scott(vertices, faces, n_frames: int = 101, steps_per_frame: int = 40, burn_in: int = 200,
               dt: float = 1.0, feed: float = FEED, kill: float = KILL, pattern_scale: float = 1.5,
               n_seeds: int = 4, seed: int = 0) -> np.ndarray:
    """(n_frames, n) float64 snapshots of v on the mesh (see the module docstring)."""
    g = graphs.mesh_graph(vertices, faces)
    L, M = graphs.laplacian(g, "cotangent")                  # L positive semi-definite, M lumped (diagonal)
    assert M is not None                                      # the cotangent Laplacian comes with its mass matrix
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    h = float(np.linalg.norm(vertices[e[:, 0]] - vertices[e[:, 1]], axis=1).mean()) * pattern_scale
    m = M.diagonal()
    solve_u = factorized(sp.csc_matrix(M + dt * DU * h * h * L))
    solve_v = factorized(sp.csc_matrix(M + dt * DV * h * h * L))
    rng = np.random.default_rng(seed)
    n = len(vertices)
    u, v = np.ones(n), np.zeros(n)
    for c in rng.choice(n, size=min(n_seeds, n), replace=False):
        near = np.linalg.norm(vertices - vertices[c], axis=1) < 3.0 * h
        u[near], v[near] = 0.5, 0.25
    frames = []
    for step in range(burn_in + (n_frames - 1) * steps_per_frame + 1):
        if step >= burn_in and (step - burn_in) % steps_per_frame == 0:
            frames.append(v.copy())
        uvv = u * v * v
        u, v = solve_u(m * (u + dt * (feed * (1.0 - u) - uvv))), solve_v(m * (v + dt * (uvv - (feed + kill) * v)))
    out = np.stack(frames)
    if not np.isfinite(out).all():
        raise FloatingPointError("the Gray-Scott simulation blew up; lower --dt")
    if out[-1].max() < 1e-3:
        log.warning("the pattern died out (max v %.2g): lower --pattern_scale or refine the mesh", out[-1].max())
    return out


def write_gray_scott(out, shape="bunny", subdivisions=4, resolution=40, n_fourier=100, **sim) -> dict:
    """Simulate and write the dataset folder `out`; returns a summary (also written as `params.json`)."""
    vertices, faces = make_mesh(shape, subdivisions, resolution)
    v = gray_scott(vertices, faces, **sim)                                   # (T, n)
    _, vecs, scale = graphs.embed(graphs.mesh_graph(vertices, faces), n_fourier, "cotangent")
    out = Path(out)
    graphs.write_dataset(out, vecs * scale, vertices, list(v[:, :, None]), times=np.arange(len(v)))
    np.savez(out / "mesh.npz", vertices=vertices, faces=faces)
    info = {"kind": "gray_scott", "shape": shape, "subdivisions": subdivisions, "resolution": resolution,
            "n_fourier": n_fourier, "n_nodes": len(vertices), "n_faces": len(faces), **sim}
    (out / "params.json").write_text(json.dumps(info, indent=1))
    return info


def write_sbm(out, sizes=(100, 100), p_in=0.2, p_out=0.02, n_fourier=32, seed=0) -> dict:
    """Write one SBM sample into `out`: fourier (n, k), points (n, 2), one-hot target (n, blocks)."""
    fourier, points, labels = sbm_graph(sizes, p_in, p_out, n_fourier, seed)
    out = Path(out)
    graphs.write_dataset(out, fourier, points, [np.eye(len(sizes))[labels]])
    np.save(out / "labels.npy", labels)
    info = {"kind": "sbm", "sizes": list(sizes), "p_in": p_in, "p_out": p_out, "n_fourier": n_fourier, "seed": seed}
    (out / "params.json").write_text(json.dumps(info, indent=1))
    return info


def _harmonics(degree: int, seed: int):
    """(l, m, c_lm / l, phi_lm) of the weather anomaly, drawn in one seeded order."""
    rng = np.random.default_rng(seed)
    return [(ell, m, rng.standard_normal() / ell, rng.uniform(0, 2 * np.pi))
            for ell in range(1, degree + 1) for m in range(ell + 1)]


def _anomaly(lat, lon, times, degree: int, drift: float, seed: int) -> np.ndarray:
    """a(lat, lon, t) of the module docstring at (lat, lon) degrees (flattened) -> (T, n)."""
    from scipy.special import sph_harm_y
    theta, phi = np.radians(90.0 - np.ravel(lat)), np.radians(np.ravel(lon))
    t = np.asarray(times, float)[:, None]
    a = np.zeros((len(t), theta.size))
    for ell, m, c, phase in _harmonics(degree, seed):
        p = sph_harm_y(ell, m, theta, 0.0).real                              # orthonormal P_lm(cos theta)
        a += c * p[None] * np.cos(m * (phi[None] - np.radians(drift * (0.5 + 1.0 / ell)) * t) + phase)
    return a


def weather_field(lat, lon, times, degree: int = 10, drift: float = 5.0, seed: int = 0) -> np.ndarray:
    """The weather field (module docstring) at (lat, lon) degrees (any equal shapes, flattened) -> (T, n) K;
    the anomaly's unit is its area-weighted std at t = 0 on a 1-degree grid, so every grid gets one field."""
    glat, glon = np.meshgrid(*sphere_grid(1.0), indexing="ij")
    a0 = _anomaly(glat, glon, [0.0], degree, drift, seed)[0]
    w = np.cos(np.radians(glat.ravel()))
    unit = np.sqrt(np.sum(w * a0 ** 2) / w.sum())
    return (288.0 - 40.0 * np.sin(np.radians(np.ravel(lat)))[None] ** 2
            + 8.0 * _anomaly(lat, lon, times, degree, drift, seed) / unit)


def sphere_grid(resolution: float, fine: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centred (lat, lon) of a global grid; fine: every node and the midpoints (2 Y - 1 rows, 2 X columns)."""
    lat, lon = np.arange(-90 + resolution / 2, 90, resolution), np.arange(0.0, 360.0, resolution)
    if fine:
        lat, lon = np.arange(lat[0], lat[-1] + 1e-9, resolution / 2), np.arange(0.0, 360.0, resolution / 2)
    return lat, lon


def write_weather(out, resolution=1.0, n_frames=25, degree=10, drift=5.0, n_fourier=100, seed=0) -> dict:
    """Write the weather dataset folder `out` (and `out/fine`); returns a summary (also `params.json`)."""
    out = Path(out)
    info = {"kind": "weather", "resolution": resolution, "n_frames": n_frames, "degree": degree, "drift": drift,
            "n_fourier": n_fourier, "seed": seed}
    times = np.arange(n_frames, dtype=float)
    grids = {}
    for name, folder, fine in (("coarse", out, False), ("fine", out / "fine", True)):
        lat, lon = sphere_grid(resolution, fine)
        yy, xx = np.meshgrid(lat, lon, indexing="ij")
        g = graphs.grid_graph(np.ones(yy.shape, bool), lat, lon, periodic_x=True)
        vals, vecs, scale = graphs.embed(g, n_fourier, "cotangent")
        v = weather_field(yy, xx, times, degree, drift, seed)                 # (T, n) in cell order = node order
        graphs.write_dataset(folder, vecs * scale, g.points, list(v[:, :, None]), times=times)
        np.save(folder / "values.npy", vals)
        grids.update({f"{name}_lat": lat, f"{name}_lon": lon})
        info[f"{name}_nodes"] = g.n
    np.savez(out / "grid.npz", **grids)  # type: ignore[arg-type]
    (out / "params.json").write_text(json.dumps(info, indent=1))
    return info


def wave_signal(points: np.ndarray, n_waves: int, k_max: float, seed) -> np.ndarray:
    """mesh_superres's signal at (n, 3) points -> (n,); `seed` an int or a sequence of ints."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n_waves, 3))
    k = d / np.linalg.norm(d, axis=1, keepdims=True) * rng.uniform(0, k_max, (n_waves, 1))
    return np.sin(points @ k.T + rng.uniform(0, 2 * np.pi, n_waves)).sum(1) / np.sqrt(n_waves)


def write_mesh_superres(out, shape="bunny", subdivisions=3, resolution=30, n_fourier=100, n_waves=20,
                        wavelength=8.0, seed=0) -> dict:
    """Write the mesh super-resolution folder `out` (and `out/fine`); returns a summary (also `params.json`)."""
    import trimesh
    V, F = make_mesh(shape, subdivisions, resolution)
    Vf, Ff = trimesh.remesh.subdivide(V, F)
    edge = float(np.linalg.norm(V[F[:, [1, 2, 0]]] - V[F], axis=2).mean())
    out = Path(out)
    info = {"kind": "mesh_superres", "shape": shape, "subdivisions": subdivisions, "resolution": resolution,
            "n_fourier": n_fourier, "n_waves": n_waves, "wavelength": wavelength, "seed": seed,
            "mean_coarse_edge": edge}
    for name, folder, v, f in (("coarse", out, V, F), ("fine", out / "fine", Vf, Ff)):
        vals, vecs, scale = graphs.embed(graphs.mesh_graph(v, f), n_fourier, "cotangent")
        signal = wave_signal(v, n_waves, 2 * np.pi / (wavelength * edge), seed)
        graphs.write_dataset(folder, vecs * scale, v, [signal[:, None]])
        np.save(folder / "values.npy", vals)
        np.savez(folder / "mesh.npz", vertices=v, faces=f)
        info[f"{name}_nodes"] = len(v)
    (out / "params.json").write_text(json.dumps(info, indent=1))
    return info


def write_shapes(out, n_shapes=20, subdivisions=(3,), n_fourier=32, n_waves=10, seed=0) -> dict:
    """Write the several-graphs folder `out` (shape s an icosphere of subdivisions[s % len(subdivisions)]: several
    values give graphs of different sizes, as the reference's proteins); returns a summary (also `params.json`)."""
    import trimesh
    levels = [int(d) for d in np.atleast_1d(subdivisions)]
    level = [levels[s % len(levels)] for s in range(n_shapes)]            # each shape's subdivisions
    spheres = {d: trimesh.creation.icosphere(subdivisions=d) for d in set(levels)}
    fouriers, points, targets, sizes = [], [], [], []
    for s in range(n_shapes):
        rng = np.random.default_rng([seed, s])
        unit, faces = np.asarray(spheres[level[s]].vertices), np.asarray(spheres[level[s]].faces)
        c = rng.standard_normal((5, 3))
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        bumps = np.exp(-((unit[:, None] - c[None]) ** 2).sum(-1) / 0.32) @ rng.uniform(-1, 1, 5)
        v = unit * (1 + 0.3 * bumps)[:, None]
        _, vecs, scale = graphs.embed(graphs.mesh_graph(v, faces), n_fourier, "cotangent")
        fouriers.append(vecs * scale)
        points.append(v)
        targets.append(wave_signal(v, n_waves, 2 * np.pi / 2.0, [seed, s, 1])[:, None])
        sizes.append(len(v))
    graphs.write_dataset(out, fouriers, points, targets)
    for d, m in spheres.items():
        np.save(Path(out) / f"faces_{d}.npy", np.asarray(m.faces))     # the faces of the shapes of level d
    info = {"kind": "shapes", "n_shapes": n_shapes, "subdivisions": level,
            "n_fourier": n_fourier, "n_waves": n_waves, "seed": seed, "n_nodes": sizes}
    (Path(out) / "params.json").write_text(json.dumps(info, indent=1))
    return info


def _dataset_parser(sub, kind: str, help: str, n_fourier: int, formatter):
    """A subcommand with the options every dataset has: --out, --n_fourier, --seed."""
    sp = sub.add_parser(kind, help=help, formatter_class=formatter)
    sp.add_argument("--out", default=f"data/{kind}", help="dataset folder")
    sp.add_argument("--n_fourier", type=cli.positive_int, default=n_fourier, help="eigenvectors stored per node")
    sp.add_argument("--seed", type=cli.nonnegative_int, default=0, help="seeds the dataset's random parts")
    return sp


def main(argv=None) -> int:
    p = cli.Parser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    fmt = p.formatter_class
    gs = _dataset_parser(sub, "gray_scott", "reaction-diffusion snapshots on a mesh", 100, fmt)
    gs.add_argument("--shape", choices=SHAPES, default="bunny")
    gs.add_argument("--subdivisions", type=cli.nonnegative_int, default=4, help="icosphere/torus refinement")
    gs.add_argument("--resolution", type=cli.positive_int, default=40, help="bunny voxel grid (~1.5 n^2 vertices)")
    gs.add_argument("--n_frames", type=cli.positive_int, default=101, help="snapshots of v (time 0..n-1)")
    gs.add_argument("--steps_per_frame", type=cli.positive_int, default=40, help="time steps between snapshots")
    gs.add_argument("--burn_in", type=cli.nonnegative_int, default=200, help="steps before the first snapshot")
    gs.add_argument("--dt", type=cli.positive_float, default=1.0, help="time step (semi-implicit diffusion)")
    gs.add_argument("--feed", type=cli.positive_float, default=FEED, help="F")
    gs.add_argument("--kill", type=cli.positive_float, default=KILL, help="k")
    gs.add_argument("--pattern_scale", type=cli.positive_float, default=1.5,
                    help="length unit in mean edges: larger, fewer and smoother spots (too large on a small mesh: none)")
    gs.add_argument("--n_seeds", type=cli.positive_int, default=4, help="initial patches of v (placed by --seed)")
    sb = _dataset_parser(sub, "sbm", "a stochastic block model graph and its communities", 32, fmt)
    sb.add_argument("--sizes", type=cli.positive_int, nargs="+", default=[100, 100], help="nodes per block")
    sb.add_argument("--p_in", type=cli.probability, default=0.2, help="edge probability within a block")
    sb.add_argument("--p_out", type=cli.probability, default=0.02, help="edge probability between blocks")
    we = _dataset_parser(sub, "weather", "a moving global field on a lon/lat grid and on the grid twice as fine", 100, fmt)
    we.add_argument("--resolution", type=cli.positive_float, default=1.0, help="grid step in degrees (fine: half)")
    we.add_argument("--n_frames", type=cli.positive_int, default=25, help="states (time 0..n-1)")
    we.add_argument("--degree", type=cli.positive_int, default=10, help="highest spherical-harmonic degree L")
    we.add_argument("--drift", type=cli.positive_float, default=5.0, help="degrees a step (times 0.5 + 1 / l)")
    ms = _dataset_parser(sub, "mesh_superres", "a smooth signal on a mesh and on its subdivision", 100, fmt)
    ms.add_argument("--shape", choices=SHAPES, default="bunny")
    ms.add_argument("--subdivisions", type=cli.nonnegative_int, default=3, help="icosphere/torus refinement")
    ms.add_argument("--resolution", type=cli.positive_int, default=30, help="bunny voxel grid")
    ms.add_argument("--n_waves", type=cli.positive_int, default=20, help="plane waves summed")
    ms.add_argument("--wavelength", type=cli.positive_float, default=8.0,
                    help="shortest wavelength in mean coarse edges")
    sh = _dataset_parser(sub, "shapes", "several graphs (bumpy spheres), each with its own signal", 32, fmt)
    sh.add_argument("--n_shapes", type=cli.positive_int, default=20, help="graphs (samples)")
    sh.add_argument("--subdivisions", type=cli.nonnegative_int, nargs="+", default=[3],
                    help="icosphere refinement (3: 642 nodes); several: the shapes take them in turn (sizes differ)")
    sh.add_argument("--n_waves", type=cli.positive_int, default=10, help="plane waves summed per shape")
    args = vars(p.parse_args(argv))
    setup_logging()
    t0 = time.perf_counter()
    kind = args.pop("kind")
    write: dict[str, Callable[..., dict]] = {"gray_scott": write_gray_scott, "sbm": write_sbm, "weather": write_weather,
                                             "mesh_superres": write_mesh_superres, "shapes": write_shapes}
    info = write[kind](**args)
    log.info("wrote %s in %.1f s: %s", args["out"], time.perf_counter() - t0, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
