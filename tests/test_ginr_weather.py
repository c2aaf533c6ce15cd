"""GINR's super-resolution experiments. Weather on the sphere: the moving field (an exact longitude shift for
one degree), the bilinear floor against scipy, the fine eigenvectors aligned to the coarse ones, the eval
script's scores recomputed from its own files (10-degree grid); at 4 degrees (slow) GINR beats the floor.
Meshes: the edge-midpoint floor exact on linear signals, the eval script's floor recomputed from the edges,
and (slow) GINR beating it on the bunny at 4-edge wavelengths."""
import json

import cv2
import numpy as np
import pytest
import torch
from scipy.interpolate import RegularGridInterpolator

from data_generation import make_graph_data as mgd
from gapfill import graphs
from ginr import eval_mesh_superres, eval_weather, train_graph_signals


@pytest.fixture(scope="module")
def weather_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("weather")
    mgd.main(["weather", "--out", str(out), "--resolution", "10", "--n_fourier", "16", "--n_frames", "9"])
    return out


def test_one_degree_drifts_as_a_whole_in_longitude():
    """Degree 1 alone moves at 1.5 x drift degrees a step: 20 degrees = two 10-degree cells."""
    lat, lon = mgd.sphere_grid(10.0)
    yy, xx = np.meshgrid(lat, lon, indexing="ij")
    f = mgd.weather_field(yy, xx, [0.0, 1.0], degree=1, drift=20 / 1.5).reshape(2, len(lat), len(lon))
    np.testing.assert_allclose(f[1], np.roll(f[0], 2, axis=1), atol=1e-9)
    assert np.ptp(f[0] - f[0].mean(1, keepdims=True)) > 1.0                   # it has something to move


def test_midpoints_is_bilinear_with_periodic_longitude():
    rng = np.random.default_rng(0)
    lat, lon = mgd.sphere_grid(10.0)
    c = rng.normal(size=(len(lat), len(lon)))
    flat, flon = mgd.sphere_grid(10.0, fine=True)
    ref = RegularGridInterpolator((lat, np.r_[lon, 360.0]), np.c_[c, c[:, :1]])   # the wrap as an extra column
    yy, xx = np.meshgrid(flat, flon, indexing="ij")
    np.testing.assert_allclose(eval_weather.midpoints(c), ref((yy, xx)), atol=1e-12)


def test_fine_eigenvectors_align_with_the_coarse_ones(weather_dir):
    coarse, fine = graphs.read_dataset(weather_dir), graphs.read_dataset(weather_dir / "fine")
    values = np.load(weather_dir / "values.npy")
    assert values[1:4] == pytest.approx([2.0] * 3, rel=0.05) and values[4:9] == pytest.approx([6.0] * 5, rel=0.05)
    Y, X = 18, 36
    at = (2 * np.arange(Y)[:, None] * 2 * X + 2 * np.arange(X)[None, :]).ravel()
    c, f = coarse["fourier"][0], fine["fourier"][0]
    R = graphs.align(c, f[at], values)
    err = np.linalg.norm(f[at] @ R - c, axis=0) / np.linalg.norm(c, axis=0)
    assert err.max() < 0.1, err                                                # unaligned: order 1 in the groups
    assert np.linalg.norm(f[at] - c, axis=0).max() / np.linalg.norm(c, axis=0).min() > 0.3


def test_eval_weather_scores_match_its_files(weather_dir, tmp_path):
    torch.manual_seed(0)
    ck = tmp_path / "ck"
    train_graph_signals.main(["--dataset_dir", str(weather_dir), "--time", "--train_every", "2", "--eval_every", "1",
                              "--n_fourier", "16", "--hidden_dim", "32", "--n_layers", "2", "--max_epochs", "3",
                              "--out_dir", str(ck)])
    out = tmp_path / "res"
    eval_weather.main(["--checkpoint", str(ck / "best.ckpt"), "--dataset_dir", str(weather_dir), "--out_dir", str(out)])
    m = json.loads((out / "metrics.json").read_text())
    # the floor at held-out times, recomputed: the coarse truth interpolated in time, then bilinearly in space
    coarse, fine = graphs.read_dataset(weather_dir), graphs.read_dataset(weather_dir / "fine")
    lat, lon = mgd.sphere_grid(10.0)
    flat, flon = mgd.sphere_grid(10.0, fine=True)
    c = coarse["target"][..., 0].reshape(9, 18, 36).astype(np.float64)
    truth = fine["target"][..., 0].reshape(9, 35, 72).astype(np.float64)
    yy, xx = np.meshgrid(flat, flon, indexing="ij")
    w = np.cos(np.radians(yy))
    sq = []
    for t in (1, 3, 5, 7):
        mid = (c[t - 1] + c[t + 1]) / 2
        interp = RegularGridInterpolator((lat, np.r_[lon, 360.0]), np.c_[mid, mid[:, :1]])((yy, xx))
        sq.append(np.sum(w * (interp - truth[t]) ** 2) / w.sum())
    assert m["super_resolution"]["held_out_times"]["floor"] == pytest.approx(np.sqrt(np.mean(sq)), rel=1e-5)
    assert m["fine_nodes"] == 35 * 72 and np.isfinite(m["super_resolution"]["held_out_times"]["ginr"])
    assert m["time_interpolation"]["interp"] < m["time_interpolation"]["node_mean"]
    cap = cv2.VideoCapture(str(out / "weather.mp4"))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    assert len(frames) == 9 and frames[0].shape[0] >= 240                      # one frame per time, enlarged
    assert (out / "weather.pdf").stat().st_size > 10_000


@pytest.mark.slow
def test_ginr_beats_the_bilinear_floor_on_the_half_resolution_sphere(tmp_path):
    """The README's 4-degree run (135 s): held-out super-resolution 0.216 K against the floor's 0.237 K."""
    mgd.main(["weather", "--out", str(tmp_path / "wx"), "--resolution", "4"])
    train_graph_signals.main(["--dataset_dir", str(tmp_path / "wx"), "--time", "--train_every", "2", "--eval_every",
                              "1", "--hidden_dim", "256", "--lr", "1e-3", "--max_epochs", "150",
                              "--out_dir", str(tmp_path / "ck")])
    eval_weather.main(["--checkpoint", str(tmp_path / "ck" / "best.ckpt"), "--dataset_dir", str(tmp_path / "wx"),
                       "--out_dir", str(tmp_path / "res")])
    m = json.loads((tmp_path / "res" / "metrics.json").read_text())
    held = m["super_resolution"]["held_out_times"]
    assert held["ginr"] < held["floor"]
    assert m["time_interpolation"]["ginr"] < 2 * m["time_interpolation"]["interp"]


def test_edge_midpoint_floor_is_exact_on_linear_signals():
    import trimesh
    V, F = mgd.make_mesh("torus", subdivisions=2)
    Vf, Ff = trimesh.remesh.subdivide(V, F)
    a = np.array([0.3, -1.2, 2.0])
    floor = eval_mesh_superres.edge_midpoint_floor(V @ a + 0.5, Vf, Ff)
    np.testing.assert_allclose(floor, Vf @ a + 0.5, atol=1e-12)
    with pytest.raises(Exception, match="not the subdivision"):
        eval_mesh_superres.edge_midpoint_floor(V[:-1] @ a, Vf, Ff)


def test_eval_mesh_superres_floor_from_the_edges(tmp_path):
    from scipy.spatial import cKDTree
    data = tmp_path / "ico"
    mgd.main(["mesh_superres", "--out", str(data), "--shape", "icosphere", "--subdivisions", "2", "--n_fourier", "16",
              "--wavelength", "3"])
    train_graph_signals.main(["--dataset_dir", str(data), "--n_fourier", "16", "--hidden_dim", "32", "--n_layers", "2",
                              "--max_epochs", "3", "--out_dir", str(tmp_path / "ck")])
    eval_mesh_superres.main(["--checkpoint", str(tmp_path / "ck" / "best.ckpt"), "--dataset_dir", str(data),
                             "--out_dir", str(tmp_path / "res")])
    m = json.loads((tmp_path / "res" / "metrics.json").read_text())
    coarse, fine = np.load(data / "mesh.npz"), np.load(data / "fine" / "mesh.npz")
    fc = graphs.read_dataset(data)["target"][0, :, 0].astype(np.float64)
    ff = graphs.read_dataset(data / "fine")["target"][0, :, 0].astype(np.float64)
    F = coarse["faces"]
    edges = np.unique(np.sort(np.r_[F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]], axis=1), axis=0)   # (E, 2)
    mids = coarse["vertices"][edges].mean(1)
    dist, idx = cKDTree(fine["vertices"]).query(mids)
    assert dist.max() < 1e-9 and len(edges) == len(ff) - len(fc) == m["new_vertices"] == 480
    ref = np.sqrt(np.mean((fc[edges].mean(1) - ff[idx]) ** 2))
    assert m["rmse_new_vertices"]["edge_midpoint"] == pytest.approx(ref, rel=1e-5)
    assert np.isfinite(m["rmse_new_vertices"]["ginr"]) and (tmp_path / "res" / "mesh_superres.pdf").stat().st_size > 10_000


@pytest.mark.slow
def test_ginr_beats_linear_along_edges_on_the_bunny(tmp_path):
    """The README's bunny run at 4-edge wavelengths (30 s): GINR 0.036 against 0.061 on the new vertices."""
    mgd.main(["mesh_superres", "--out", str(tmp_path / "b"), "--wavelength", "4"])
    train_graph_signals.main(["--dataset_dir", str(tmp_path / "b"), "--hidden_dim", "256", "--lr", "1e-3",
                              "--max_epochs", "300", "--out_dir", str(tmp_path / "ck")])
    eval_mesh_superres.main(["--checkpoint", str(tmp_path / "ck" / "best.ckpt"), "--dataset_dir", str(tmp_path / "b"),
                             "--out_dir", str(tmp_path / "res")])
    r = json.loads((tmp_path / "res" / "metrics.json").read_text())["rmse_new_vertices"]
    assert r["ginr"] < 0.8 * r["edge_midpoint"]
