"""Graphs of grids, spheres and meshes, their Laplacian eigenvectors (the GINR input), Procrustes alignment
of a refined graph's eigenvectors, and the GINR dataset format (npz files).

- `field_graph(field)`: the graph of a field's grid. A whole circle of longitude (`Field.x_periodic`) is a
  sphere: neighbours across the date line, each pole row one node; otherwise the 4- or 8-neighbour grid.
  Cells never valid (land) are left out; a piece cut off by them is joined to its nearest node elsewhere.
- `mesh_graph(vertices, faces)`: any triangle mesh (trimesh's arrays).
- `laplacian(graph, kind)`: combinatorial L = D - A (no mass matrix), or the cotangent Laplacian and its
  lumped mass matrix (robust-laplacian), where the graph has triangles.
- `embed(graph, k, kind, cache_dir)`: the first k eigenpairs (eigsh in shift-invert mode), sorted, signs
  fixed by a seeded probe, the basis of an exactly repeated eigenvalue fixed too; cached by a hash of the
  Laplacian. Eigenvectors are orthonormal (in the mass inner product where there is one).
- `align(coarse, fine, values)`: rotate the fine eigenvectors onto the coarse ones within each group of
  (near-)repeated eigenvalues (orthogonal Procrustes; signs alone for simple ones).

Why our own code: no library builds a sphere graph from a lat/lon grid with merged poles, and the GINR
reference code's embedding (eigsh on the raw grid) has isolated pole copies and unaligned subspaces.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh

log = logging.getLogger(__name__)
LAPLACIANS = ("combinatorial", "cotangent")
VERSION = 1                            # part of the cache key: bump when the embedding changes
POLE_TOL = 1e-6                        # degrees from +-90 that count as a pole row


@dataclasses.dataclass
class Graph:
    """A graph with node coordinates. `points` (n, 3) or (n, 2); `adjacency` (n, n) symmetric sparse, unit
    weights; `faces` (F, 3) node indices or None; `cell_node` (Y*X,) the node of each grid cell, -1 where
    the cell is not in the graph (for graphs of grids; None for meshes)."""

    points: np.ndarray
    adjacency: sp.csr_matrix
    faces: np.ndarray | None = None
    cell_node: np.ndarray | None = None
    kind: str = "mesh"

    @property
    def n(self) -> int:
        return len(self.points)


def lonlat_to_xyz(lat, lon) -> np.ndarray:
    """(..., 3) points on the unit sphere from latitude and longitude in degrees."""
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def is_lonlat(field) -> bool:
    """A field on latitude and longitude (points go on the unit sphere), not on a plane or an image."""
    return bool(field.x_periodic or (np.abs(field.y).max() <= 90 and field.y_name.lower().startswith("lat")))


def _adjacency(n: int, pairs: np.ndarray) -> sp.csr_matrix:
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    a = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(np.float64)
    return sp.csr_matrix(a)


def grid_graph(valid: np.ndarray, y, x, neighbours: int = 4, periodic_x: bool = False, lonlat: bool = True) -> Graph:
    """The graph of a (Y, X) grid's `valid` cells: 4 or 8 neighbours, x wrapping when `periodic_x`; pole rows
    (|y| = 90 on a lon/lat grid) merged into one node each. Points on the unit sphere (lonlat) or the plane."""
    if neighbours not in (4, 8):
        raise ValueError(f"neighbours must be 4 or 8, got {neighbours}")
    Y, X = valid.shape
    ids = np.arange(Y * X).reshape(Y, X)
    cell_node = np.full(Y * X, -1)
    pole = np.zeros(Y, bool)
    if lonlat:
        pole = np.abs(np.abs(np.asarray(y, float)) - 90.0) < POLE_TOL
    # nodes: every valid cell, except that a pole row's valid cells share one node
    n = 0
    for r in range(Y):
        ok = np.nonzero(valid[r])[0]
        if not len(ok):
            continue
        if pole[r]:
            cell_node[ids[r, ok]] = n
            n += 1
        else:
            cell_node[ids[r, ok]] = np.arange(n, n + len(ok))
            n += len(ok)
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if neighbours == 8 else [])
    pairs = []
    for dy, dx in offsets:
        r0, r1 = slice(0, Y - dy), slice(dy, Y)
        a = ids[r0]
        b = np.roll(ids, -dx, axis=1)[r1]
        keep = np.ones_like(a, bool)
        if not periodic_x:
            cols = np.arange(X)
            keep &= ((cols + dx >= 0) & (cols + dx < X))[None, :]
        pa, pb = cell_node[a[keep]], cell_node[b[keep]]
        good = (pa >= 0) & (pb >= 0)
        pairs.append(np.stack([pa[good], pb[good]], 1))
    adj = _adjacency(n, np.concatenate(pairs))
    yy, xx = np.meshgrid(np.asarray(y, float), np.asarray(x, float), indexing="ij")
    first = np.full(n, -1)
    flat = np.nonzero(cell_node >= 0)[0]
    first[cell_node[flat][::-1]] = flat[::-1]                       # one cell per node (the first)
    pts = (lonlat_to_xyz(yy.ravel()[first], xx.ravel()[first]) if lonlat
           else np.stack([xx.ravel()[first], yy.ravel()[first]], 1))
    faces = _grid_faces(ids, cell_node, periodic_x)
    g = Graph(pts, adj, faces, cell_node, "sphere" if (periodic_x and lonlat) else "grid")
    return _join_pieces(g)


def _grid_faces(ids, cell_node, periodic_x: bool) -> np.ndarray:
    """Two triangles per grid quad whose corners are distinct nodes (one at a merged pole)."""
    Y, X = ids.shape
    cols = X if periodic_x else X - 1
    a = ids[:-1, :cols]
    b = np.roll(ids, -1, axis=1)[:-1, :cols]
    c = ids[1:, :cols]
    d = np.roll(ids, -1, axis=1)[1:, :cols]
    tris = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    t = cell_node[tris]
    ok = (t >= 0).all(1) & (t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2])
    return t[ok]


def _join_pieces(g: Graph) -> Graph:
    """Join every connected piece but the largest to its nearest node in the largest (one edge), so the
    graph is connected and its Laplacian has one zero eigenvalue."""
    k, labels = connected_components(g.adjacency, directed=False)
    if k == 1:
        return g
    main = np.argmax(np.bincount(labels))
    inside = np.nonzero(labels == main)[0]
    pairs = []
    for c in range(k):
        if c == main:
            continue
        members = np.nonzero(labels == c)[0]
        d = ((g.points[members, None, :] - g.points[None, inside, :]) ** 2).sum(-1)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        pairs.append((members[i], inside[j]))
    log.warning("the graph had %d pieces (cells cut off by never-valid cells); each joined to its nearest node", k)
    extra = _adjacency(g.n, np.array(pairs))
    return dataclasses.replace(g, adjacency=sp.csr_matrix(((g.adjacency + extra) > 0).astype(np.float64)))


def field_graph(field, neighbours: int = 4) -> Graph:
    """The graph of a gapfill Field's grid: cells valid in any frame and band are nodes."""
    valid = field.valid.any(axis=(0, 1))                                # (Y, X)
    if not valid.any():
        raise ValueError(f"{field.path}: no valid cell")
    return grid_graph(valid, field.y, field.x, neighbours, periodic_x=bool(field.x_periodic), lonlat=is_lonlat(field))


def mesh_graph(vertices, faces) -> Graph:
    """The graph of a triangle mesh (vertices (n, 3), faces (F, 3)): its edges."""
    faces = np.asarray(faces, dtype=np.int64)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return _join_pieces(Graph(np.asarray(vertices, float), _adjacency(len(vertices), e), faces, None, "mesh"))


def laplacian(g: Graph, kind: str = "combinatorial") -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """(L, M): combinatorial D - A with M None, or cotangent (robust-laplacian, needs triangles) with its
    lumped mass matrix M."""
    if kind == "combinatorial":
        deg = np.asarray(g.adjacency.sum(1)).ravel()
        return sp.csr_matrix(sp.diags(deg) - g.adjacency), None
    if kind != "cotangent":
        raise ValueError(f"unknown Laplacian {kind!r}; choose one of {', '.join(LAPLACIANS)}")
    import robust_laplacian
    if g.faces is None or not len(g.faces):
        L, M = robust_laplacian.point_cloud_laplacian(np.asarray(g.points, float))
    else:
        pts = g.points if g.points.shape[1] == 3 else np.c_[g.points, np.zeros(g.n)]
        L, M = robust_laplacian.mesh_laplacian(np.asarray(pts, float), np.asarray(g.faces, np.int64))
    return sp.csr_matrix(L), sp.csr_matrix(M)


def _key(L, M, k: int) -> str:
    h = hashlib.sha1(f"v{VERSION} k{k}".encode())
    for m in (L, M):
        if m is not None:
            m = sp.csr_matrix(m)
            m.sort_indices()
            for a in (m.indptr, m.indices, m.data):
                h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _fix_basis(vals, vecs, M, rtol: float = 1e-9) -> np.ndarray:
    """Deterministic eigenvectors: within an exactly repeated eigenvalue, the basis Gram-Schmidt makes of a
    seeded probe's projections; then each sign such that the vector's product with the probe is positive."""
    n, k = vecs.shape
    probe = np.random.default_rng(20221128).standard_normal((n, k))
    Mv = (lambda v: M @ v) if M is not None else (lambda v: v)   # noqa: E731
    out = vecs.copy()
    i = 0
    while i < k:
        j = i + 1
        while j < k and abs(vals[j] - vals[i]) <= rtol * max(abs(vals[i]), 1.0):
            j += 1
        if j - i > 1:
            V = out[:, i:j]
            P = V @ (V.T @ Mv(probe[:, : j - i]))                       # projections onto the eigenspace
            for c in range(j - i):
                p = P[:, c] - out[:, i:i + c] @ (out[:, i:i + c].T @ Mv(P[:, c]))
                out[:, i + c] = p / np.sqrt(p @ Mv(p))
        i = j
    s = np.sign(np.einsum("nk,nk->k", out, Mv(probe)))
    return out * np.where(s == 0, 1.0, s)


def eigenpairs(L, M, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest eigenpairs of L v = lambda M v (M None: identity), (k,) and (n, k), sorted, orthonormal
    in M, deterministic signs."""
    n = L.shape[0]
    if k >= n:
        raise ValueError(f"{k} eigenvectors asked of a graph with {n} nodes; use --n_fourier {n - 1} or fewer")
    scale = float(np.abs(L.diagonal()).mean() / (M.diagonal().mean() if M is not None else 1.0))
    v0 = np.random.default_rng(0).standard_normal(n)
    if n <= 400:                                                          # dense is faster and exact
        from scipy.linalg import eigh
        vals, vecs = eigh(L.toarray(), None if M is None else M.toarray())
        vals, vecs = vals[:k], vecs[:, :k]
    else:
        vals, vecs = eigsh(L.astype(np.float64), k=k, M=None if M is None else M.astype(np.float64),
                           sigma=-1e-3 * scale, which="LM", v0=v0, tol=1e-12)
    order = np.argsort(vals)
    vals, vecs = vals[order], vecs[:, order]
    if M is not None:                                                     # M-orthonormal
        vecs = vecs / np.sqrt(np.einsum("nk,nk->k", vecs, M @ vecs))
    else:
        vecs = vecs / np.linalg.norm(vecs, axis=0)
    return vals, _fix_basis(vals, vecs, M)


def embed(g: Graph, k: int, kind: str = "combinatorial", cache_dir=None) -> tuple[np.ndarray, np.ndarray, float]:
    """(eigenvalues (k,), eigenvectors (n, k), scale): the first k eigenpairs of the graph's Laplacian, cached
    in `cache_dir` by a hash of the Laplacian. `scale` = sqrt(n) or sqrt(total mass): eigenvectors times scale
    have unit mean square, the same at any resolution (the network's input)."""
    L, M = laplacian(g, kind)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"embedding_{kind}_{_key(L, M, k)}.npz"
        if path.exists() and (cached := _read_cache(path, L, M, k, g.n)) is not None:
            return cached
    t0 = time.time()
    vals, vecs = eigenpairs(L, M, k)
    scale = float(np.sqrt(M.diagonal().sum() if M is not None else g.n))
    log.info("embedding: %d eigenvectors of a %d-node %s Laplacian in %.1f s", k, g.n, kind, time.time() - t0)
    if path is not None:
        from gapfill.files import atomic_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, values=vals, vectors=vecs, scale=scale)
        except OSError as err:                  # a cache is a convenience: the run goes on without it
            log.warning("embedding cache %s not written (%s); set --cache_dir or $GAPFILL_CACHE", path, err.strerror)
    return vals, vecs, scale


def _read_cache(path: Path, L, M, k: int, n: int) -> tuple[np.ndarray, np.ndarray, float] | None:
    """A cached embedding, verified: readable (no pickles), the right shapes, finite, and eigenpairs of this
    Laplacian (||L v - lambda M v|| small); None, with a warning, for any other file (it is then rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            vals, vecs, scale = np.asarray(z["values"], np.float64), np.asarray(z["vectors"], np.float64), float(z["scale"])
        if vals.shape != (k,) or vecs.shape != (n, k) or not (np.isfinite(vals).all() and np.isfinite(vecs).all()):
            raise ValueError(f"shapes {vals.shape}, {vecs.shape} (want ({k},), ({n}, {k})) or non-finite values")
        mv = vecs if M is None else M @ vecs
        resid = np.abs(L @ vecs - mv * vals).max() / max(1.0, np.abs(vals).max())
        if not resid < 1e-6:
            raise ValueError(f"not eigenpairs of this graph's Laplacian (residual {resid:.2g})")
        return vals, vecs, scale
    except Exception as err:
        log.warning("embedding cache %s is damaged or not ours (%s: %s): rebuilding it", path, type(err).__name__,
                    str(err).splitlines()[0][:120] if str(err) else "")
        return None


def eigen_groups(values, rtol: float = 0.02) -> list[np.ndarray]:
    """Indices of runs of (near-)repeated eigenvalues: neighbours within rtol of each other (relative)."""
    groups, cur = [], [0]
    for i in range(1, len(values)):
        if abs(values[i] - values[cur[-1]]) <= rtol * max(abs(values[i]), 1e-12):
            cur.append(i)
        else:
            groups.append(np.array(cur))
            cur = [i]
    groups.append(np.array(cur))
    return groups


def align(coarse: np.ndarray, fine_at_coarse: np.ndarray, values, rtol: float = 0.02) -> np.ndarray:
    """(k, k) block-orthogonal R such that fine_vectors @ R matches the coarse eigenvectors: per group of
    near-repeated coarse eigenvalues, the orthogonal Procrustes rotation of `fine_at_coarse` (the fine
    eigenvectors read at the coarse nodes, scaled alike, (n_coarse, k)) onto `coarse` (n_coarse, k)."""
    k = coarse.shape[1]
    R = np.zeros((k, k))
    for g in eigen_groups(values, rtol):
        if len(g) == 1:
            R[g[0], g[0]] = 1.0 if coarse[:, g[0]] @ fine_at_coarse[:, g[0]] >= 0 else -1.0
            continue
        u, _, vt = np.linalg.svd(fine_at_coarse[:, g].T @ coarse[:, g])
        R[np.ix_(g, g)] = u @ vt
    return R


# ---------------------------------------------------------------- the GINR dataset format (npz files)
def write_dataset(folder, fourier, points, targets, times=None, per_sample: bool = False) -> list[Path]:
    """Write `folder/npz_files/data_{i}.npz`, one per sample: key target (n, m) and time (scalar) when given,
    with the graph shared in `folder/fourier.npy` (n, k) and `folder/points.npy` (n, c); `per_sample`: also
    fourier and points in every sample file (the reference code's per-sample layout, n k floats each). Lists
    of fourier and points: one graph per sample (several graphs), in the sample files only."""
    out = Path(folder) / "npz_files"
    out.mkdir(parents=True, exist_ok=True)
    several = isinstance(fourier, list)
    if not several:
        np.save(Path(folder) / "fourier.npy", fourier.astype(np.float32))
        np.save(Path(folder) / "points.npy", points.astype(np.float32))
    paths = []
    for i, tgt in enumerate(targets):
        f, pts = (fourier[i], points[i]) if several else (fourier, points)
        kw: dict[str, np.ndarray] = {"target": np.asarray(tgt, np.float32).reshape(len(f), -1)}
        if per_sample or several:
            kw.update(fourier=f.astype(np.float32), points=pts.astype(np.float32))
        if times is not None:
            kw["time"] = np.asarray(times[i], np.float32)
        p = out / f"data_{i}.npz"
        np.savez(p, **kw)  # type: ignore[arg-type]
        paths.append(p)
    return paths


def read_dataset(folder, cut: int | None = None) -> dict:
    """The samples of a GINR dataset folder (the first `cut` files when given): {'fourier': (S, n, k), 'points':
    (S, n, c), 'target': (S, n, m), 'time': (S,) or None, 'n_nodes': (S,)}. A sample without fourier/points
    takes the folder's fourier.npy/points.npy; graphs of different sizes are zero-padded to the largest n
    (sample s has its nodes 0..n_nodes[s]-1)."""
    folder = Path(folder)
    files = sorted((folder / "npz_files").glob("*.npz"), key=lambda p: (len(p.stem), p.stem))[:cut]
    if not files:
        raise FileNotFoundError(f"{folder}: no npz_files/*.npz")
    shared = {k: np.load(folder / f"{k}.npy") for k in ("fourier", "points") if (folder / f"{k}.npy").exists()}
    out: dict = {"fourier": [], "points": [], "target": [], "time": []}
    for f in files:
        z = np.load(f)
        for key in ("fourier", "points"):
            if key in z:
                out[key].append(z[key])
            elif key in shared:
                out[key].append(shared[key])
            else:
                raise KeyError(f"{f}: no {key!r} and no {folder / (key + '.npy')}")
        out["target"].append(z["target"].reshape(len(out["fourier"][-1]), -1))
        out["time"].append(float(z["time"]) if "time" in z else np.nan)
    sizes = np.array([len(f) for f in out["fourier"]])
    res: dict[str, np.ndarray | None] = {k: _padded(v, sizes.max()) for k, v in out.items() if k != "time"}
    t = np.array(out["time"])
    res["time"] = None if np.isnan(t).all() else t
    res["n_nodes"] = sizes
    return res


def _padded(arrays: list, n: int) -> np.ndarray:
    """(S, n, ...) from S arrays (n_s, ...), zeros after each one's rows."""
    first = np.asarray(arrays[0])
    if all(len(a) == n for a in arrays):
        return np.stack(arrays)
    res = np.zeros((len(arrays), n, *first.shape[1:]), first.dtype)
    for i, a in enumerate(arrays):
        res[i, :len(a)] = a
    return res


def sbm_graph(sizes, p_in: float, p_out: float, n_fourier: int, seed: int = 0):
    """A stochastic block model graph: (fourier (n, k) combinatorial eigenvectors times their scale, points
    (n, 2) spectral layout, labels (n,) int community)."""
    import networkx as nx
    probs = np.full((len(sizes), len(sizes)), p_out)
    np.fill_diagonal(probs, p_in)
    G = nx.stochastic_block_model(list(sizes), probs.tolist(), seed=int(seed))
    labels = np.array([G.nodes[i]["block"] for i in range(G.number_of_nodes())])
    adj = sp.csr_matrix(nx.to_scipy_sparse_array(G, nodelist=range(len(labels)), format="csr", dtype=np.float64))
    _, vecs, scale = embed(Graph(np.zeros((len(labels), 2)), adj, kind="sbm"), n_fourier,
                       "combinatorial")
    points = vecs[:, 1:3] * scale if n_fourier >= 3 else np.zeros((len(labels), 2))
    return vecs * scale, points, labels
