"""GINR: the sphere graph of a 1-degree global grid and its embedding (one zero eigenvalue; with the cotangent
Laplacian the first 8 non-constant eigenvectors span the degree-1 and degree-2 spherical harmonics),
orthonormality, eigen-residuals, deterministic signs and bases, Procrustes alignment, the network's options,
and a short training on a synthetic crop at 90% missing against spatial interpolation, with super-resolution
on the same field at twice the resolution."""
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sweep_checks import pdf_pages

from data_generation import make_synthetic_field
from gapfill import graphs, runs
from gapfill.problem import build_problem
from ginr import eval_superres, test_ginr, train_ginr
from ginr.ginr_model import MLP, load_trained

LAT1 = np.arange(-90.0, 90.5, 1.0)          # 181 rows, both poles
LON1 = np.arange(0.0, 360.0, 1.0)           # 360 columns: 65,160 cells


@pytest.fixture(scope="module")
def sphere():
    return graphs.grid_graph(np.ones((181, 360), bool), LAT1, LON1, 4, periodic_x=True)


def real_harmonics(xyz: np.ndarray) -> np.ndarray:
    """(n, 8) the real spherical harmonics of degree 1 and 2 (unnormalised) at unit vectors xyz (n, 3)."""
    x, y, z = xyz.T
    return np.stack([x, y, z, x * y, y * z, x * z, x * x - y * y, 3 * z * z - 1], 1)


def test_sphere_graph_is_connected_with_one_node_per_pole_and_one_zero_eigenvalue(sphere):
    assert sphere.n == 179 * 360 + 2                                    # each pole row is one node
    assert sp.csgraph.connected_components(sphere.adjacency, directed=False)[0] == 1
    deg = np.asarray(sphere.adjacency.sum(1)).ravel()
    assert deg.min() == 4 and deg.max() == 360                          # the poles touch the whole next row
    L, M = graphs.laplacian(sphere, "combinatorial")
    vals, vecs = graphs.eigenpairs(L, M, 6)
    assert abs(vals[0]) < 1e-9 and vals[1] > 1e-4                       # exactly one zero eigenvalue
    assert np.allclose(vecs[:, 0], vecs[0, 0], atol=1e-8)               # its eigenvector is constant
    assert np.allclose(vecs.T @ vecs, np.eye(6), atol=1e-8)
    res = np.linalg.norm(L @ vecs - vecs * vals, axis=0)
    assert res.max() < 1e-6


def test_cotangent_eigenvectors_span_the_degree_one_and_two_harmonics(sphere):
    L, M = graphs.laplacian(sphere, "cotangent")
    vals, vecs = graphs.eigenpairs(L, M, 16)
    vecs3 = vecs[:, 9:16]                                               # degree 3
    vals, vecs = vals[:9], vecs[:, :9]
    assert abs(vals[0]) < 1e-8
    assert np.allclose(vals[1:4], 2.0, rtol=1e-3) and np.allclose(vals[4:9], 6.0, rtol=1e-3)   # l (l + 1)
    assert np.allclose(vecs.T @ (M @ vecs), np.eye(9), atol=1e-8)      # orthonormal in the mass inner product
    scale = np.abs(L).sum(1).max()
    res = np.linalg.norm(L @ vecs - (M @ vecs) * vals, axis=0) / (scale * np.linalg.norm(vecs, axis=0))
    assert res.max() < 1e-6
    Y = real_harmonics(sphere.points)                                   # (n, 8)
    Q, _ = np.linalg.qr(np.sqrt(M.diagonal())[:, None] * Y)             # M-orthonormal basis of the span
    V = np.sqrt(M.diagonal())[:, None] * vecs[:, 1:]
    resid = np.linalg.norm(V - Q @ (Q.T @ V), axis=0) / np.linalg.norm(V, axis=0)
    assert resid.max() < 0.05
    # and not any 8 vectors: degree 3 (the next 7) lies outside that span
    V3 = np.sqrt(M.diagonal())[:, None] * vecs3
    assert (np.linalg.norm(V3 - Q @ (Q.T @ V3), axis=0) / np.linalg.norm(V3, axis=0)).min() > 0.9


def test_signs_and_repeated_eigenvalue_bases_are_deterministic(tmp_path):
    sphere2 = graphs.grid_graph(np.ones((91, 180), bool), np.linspace(-90, 90, 91), np.arange(0, 360, 2.0), 4,
                                periodic_x=True)                        # 2 degrees: quicker, the same symmetries
    L, M = graphs.laplacian(sphere2, "combinatorial")
    vals, a = graphs.eigenpairs(L, M, 8)
    b = graphs.eigenpairs(L, M, 8)[1]
    assert np.array_equal(a, b)
    # whatever basis the solver returns (flipped, rotated within the repeated eigenvalues), the same result
    groups = [g for g in graphs.eigen_groups(vals, 1e-9) if len(g) > 1]
    assert groups, "the sphere graph has repeated eigenvalues (cos and sin of each longitude wave)"
    rng = np.random.default_rng(3)
    scrambled = -a.copy()
    for g in groups:
        q, _ = np.linalg.qr(rng.standard_normal((len(g), len(g))))
        scrambled[:, g] = scrambled[:, g] @ q
    assert np.allclose(graphs._fix_basis(vals, scrambled, None), a, atol=1e-8)
    # the cache gives back what was computed, keyed by the Laplacian
    small = graphs.grid_graph(np.ones((20, 30), bool), np.linspace(30, 50, 20), np.linspace(0, 30, 30))
    v1 = graphs.embed(small, 10, "combinatorial", tmp_path)
    assert len(list(tmp_path.glob("embedding_*.npz"))) == 1
    v2 = graphs.embed(small, 10, "combinatorial", tmp_path)
    assert np.array_equal(v1[1], v2[1]) and v1[2] == v2[2] == np.sqrt(600)


def test_procrustes_alignment_undoes_a_rotation_within_repeated_eigenvalues():
    g = graphs.grid_graph(np.ones((40, 40), bool), np.linspace(0, 1, 40), np.linspace(0, 1, 40), lonlat=False)
    vals, vecs = graphs.eigenpairs(*graphs.laplacian(g, "combinatorial"), 12)
    groups = graphs.eigen_groups(vals, 1e-6)
    assert any(len(gr) == 2 for gr in groups)                            # a square grid: (a, b) and (b, a)
    rng = np.random.default_rng(0)
    Q = np.zeros((12, 12))
    for gr in groups:
        q, _ = np.linalg.qr(rng.standard_normal((len(gr), len(gr))))
        Q[np.ix_(gr, gr)] = q * rng.choice([-1, 1], len(gr))
    rotated = vecs @ Q
    R = graphs.align(vecs, rotated, vals, rtol=1e-6)
    assert np.abs(rotated @ R - vecs).max() < 1e-6
    assert np.allclose(R.T @ R, np.eye(12), atol=1e-10)


def test_poles_land_and_pieces():
    lat = np.linspace(-90, 90, 19)
    lon = np.arange(0, 360, 20.0)
    valid = np.ones((19, 18), bool)
    valid[5:8, :] = False                     # a band of land cuts the sphere in two
    g = graphs.grid_graph(valid, lat, lon, 4, periodic_x=True)
    assert g.n == valid[1:-1].sum() + 2
    assert sp.csgraph.connected_components(g.adjacency, directed=False)[0] == 1     # joined again
    assert (g.cell_node.reshape(19, 18)[0] == g.cell_node[0]).all()                # one node per pole
    assert (g.cell_node.reshape(19, 18)[5:8] == -1).all()                          # land is out
    mesh = graphs.mesh_graph(*_icosphere())
    L, M = graphs.laplacian(mesh, "cotangent")
    vals, _ = graphs.eigenpairs(L, M, 4)
    assert np.allclose(vals[1:4], 2.0, rtol=0.02)


def _icosphere():
    import trimesh
    m = trimesh.creation.icosphere(subdivisions=3)
    return m.vertices, m.faces


def test_mlp_options_and_skip_false():
    x = torch.randn(5, 7, 10)
    for kw in ({"skip": False}, {"skip": True, "sine": True}, {"all_sine": True, "bn": True, "dropout": 0.1}):
        net = MLP(10, 3, 16, 4, **kw)
        assert net(x).shape == (5, 7, 3)
        assert torch.equal(net(x), torch.zeros(5, 7, 3))                 # the output layer starts at zero
    args = train_ginr.parse_args(["--data_path", "x.nc", "--skip", "False", "--sine", "--latents", "no"])
    assert args.skip is False and args.sine is True and args.latents is False and args.time is True


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("ginr")
    assert make_synthetic_field.main(["--out", str(d / "coarse.nc"), "--fine_out", str(d / "fine.nc"), "--ny", "24",
                                      "--nx", "24", "--n_time", "90", "--seed", "1"])
    return d / "coarse.nc", d / "fine.nc"


def test_short_training_beats_spatial_interpolation_then_super_resolution(pair, tmp_path):
    coarse, fine = pair
    ck, res = tmp_path / "ck", tmp_path / "res"
    argv = ["--data_path", str(coarse), "--checkpoint_dir", str(ck), "--n_fourier", "48", "--hidden_dim", "128",
            "--n_layers", "3", "--max_epochs", "25", "--batch_size", "2", "--n_nodes_in_sample", "400", "--lr", "1e-3",
            "--sine", "--omega_0", "3", "--first_guess", "climatology",
            "--laplacian", "cotangent", "--mask_kind", "random", "--mask_type", "dynamic", "--prob_masking", "0.9"]
    assert runs.run_cli(train_ginr.main, argv) == 0
    run = next(ck.iterdir())
    assert runs.run_cli(test_ginr.main, ["--checkpoints", str(run), "--results_folder", str(res)]) == 0
    m = json.loads((res / run.name / "metrics.json").read_text())
    rmse, base = m["metrics"]["overall"]["rmse"], m["baselines"]
    assert rmse < 0.85 * base["interpolation"]["overall"]["rmse"]
    assert rmse < 0.2 * base["climatology"]["overall"]["rmse"]          # its first guess
    cfg = json.loads((run / "config.json").read_text())
    sl = build_problem(cfg["args"]).splits["test"]
    assert pdf_pages(res / run.name / f"{run.name}.pdf") == (sl.stop - sl.start) + 1 + 2
    # another test mask: the test frames' codes are refitted on its observed cells, and still beat interpolation
    res2 = tmp_path / "res2"
    assert runs.run_cli(test_ginr.main, ["--checkpoints", str(run), "--results_folder", str(res2),
                                         "--test_prob_masking", "0.8"]) == 0
    m2 = json.loads(next(res2.glob("*/metrics.json")).read_text())
    assert m2["metrics"]["overall"]["rmse"] < 0.85 * m2["baselines"]["interpolation"]["overall"]["rmse"]
    # super-resolution: the network on the aligned fine embedding agrees with bicubic upsampling of its
    # coarse reconstruction; without the alignment it does not
    out = tmp_path / "sr"
    assert runs.run_cli(eval_superres.main, ["--checkpoint", str(run), "--fine_data", str(fine), "--out_dir", str(out),
                                             "--html", str(out / "view.html")]) == 0
    rows = {r.split(",")[0]: float(r.split(",")[1]) for r in (out / "superres.csv").read_text().splitlines()[1:]}
    ginr_fine, bic = rows["GINR on the fine graph"], rows["bicubic of GINR's coarse reconstruction"]
    assert ginr_fine < 1.1 * bic and rows["bicubic of the coarse truth (reference)"] < 0.5 * bic
    assert (out / "view.html").stat().st_size > 1_000_000 and b"cdn.plot.ly" not in (out / "view.html").read_bytes()[:5000]
    problem = build_problem(cfg["args"]).for_model()
    module = load_trained(problem, cfg, run)
    from gapfill.data import open_field
    ff = open_field(fine)
    feats, g = eval_superres.fine_features(module, np.ones(ff.shape[2:], bool), ff.y, ff.x, problem.field)
    raw = graphs.embed(g, module.hparams.n_fourier, "cotangent")
    unaligned = (raw[1] * raw[2]).astype(np.float32)
    t = sl.start
    with torch.no_grad():
        r_al = module.residual([t], torch.from_numpy(feats))[0, :, 0]
        r_un = module.residual([t], torch.from_numpy(unaligned))[0, :, 0]
    coarse_cells = g.cell_node.reshape(ff.shape[2:])[::2, ::2].ravel()
    ref = module.residual([t], module.features)[0, module.data.cell_node, 0]   # the coarse nodes' residual
    err_al = np.sqrt(np.mean((r_al[coarse_cells] - ref) ** 2))
    err_un = np.sqrt(np.mean((r_un[coarse_cells] - ref) ** 2))
    assert err_al < 0.25 * err_un
