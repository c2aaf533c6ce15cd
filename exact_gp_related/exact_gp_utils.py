"""Exact spatio-temporal GP (GPyTorch) for gappy fields: inputs, kernels, the model, and inpainting.

Inputs are the cells' real coordinates (time, y, x), each divided by its median grid spacing, so that
length scales read in frames and cells. Kernels act on time (dim 0) and space (dims 1, 2) and combine as
a product (separable space-time, the default) or a sum. The Kronecker path (`kronecker.py`) takes the space
kernel as one dense factor on the Y * X cells (the same isotropic 2-D kernel as the dense path) or as a
product over y and x (`separable`: for RBF the same kernel, for Matern the product of one-dimensional
Materns, rougher along the diagonals); `space_factor` chooses (--space_factor auto: dense on small grids).

On a periodic x (a whole circle of longitude, `Field.x_periodic`) with `--geometry sphere` (the default
there) an RBF or Matern space kernel acts on the chordal distance between the cells' unit vectors on the
sphere (`Chordal`: positive definite, close across the date line and around the poles); a periodic or
spectral space kernel is the kernel on y times a periodic kernel on x with the period fixed to the
circumference. `--geometry flat` ignores the wrap (plane distances in grid units).
The dense posterior for a frame conditions on the observed cells of the frames within `context_frames` of
it (Cholesky in float64 by default, chunked over the predicted cells so that a large frame never runs out
of memory).
"""
from __future__ import annotations

import copy
import logging
import math

import gpytorch
import numpy as np
import torch
from linear_operator.utils.errors import NanError, NotPSDError

from gapfill import cli
from gapfill.errors import RunError

log = logging.getLogger(__name__)

TIME_KERNELS = ("rbf", "matern", "periodic", "spectral", "softdisabled", "disabled")
SPACE_KERNELS = ("rbf", "matern", "periodic", "spectral")
COMBINATIONS = ("product", "additive")
JITTERS = (0.0, 1e-6, 1e-4, 1e-2)        # added to the diagonal (relative to its mean) when Cholesky fails


# --preset seed: the original GP repository's model (an old command trains what it trained there)
PRESETS = {"seed": {"kernel_combination": "additive", "mean_function": "constant", "inference": "dense",
                    "num_mixtures": 2, "time_lengthscale": 1e-5, "time_outputscale": 1e-5}}


def add_model_args(p) -> None:
    """The exact GP's own options (the variational GP shares them)."""
    g = p.add_argument_group("kernels")
    g.add_argument("--preset", choices=("none", *PRESETS), default="none",
                   help="seed: the original repository's defaults (additive kernels, constant mean, dense "
                        "inference, 2 spectral mixtures, soft-disabled length and output scale 1e-5); options "
                        "given on the command line override them")
    g.add_argument("--timekernel", choices=TIME_KERNELS, default="matern")
    g.add_argument("--spacekernel", choices=SPACE_KERNELS, default="matern")
    g.add_argument("--kernel_combination", choices=COMBINATIONS, default="product",
                   help="product: separable space-time kernel; additive: time kernel + space kernel")
    g.add_argument("--matern_nu", type=float, choices=(0.5, 1.5, 2.5), default=1.5)
    g.add_argument("--num_mixtures", type=cli.positive_int, default=4, help="spectral mixture components")
    g.add_argument("--time_lengthscale", type=cli.positive_float, default=100.0, help="softdisabled: fixed, in frames")
    g.add_argument("--time_outputscale", type=cli.positive_float, default=1.0, help="softdisabled: fixed")
    g.add_argument("--mean_function", choices=("climatology", "constant"), default="climatology",
                   help="climatology: model anomalies from the per-cell mean of the training frames")
    g.add_argument("--context_frames", type=cli.nonnegative_int, default=None,
                   help="frames either side a prediction conditions on (default: where the learned time "
                        "kernel keeps a correlation above 0.01, at most the training window)")
    g.add_argument("--max_context_points", type=cli.positive_int, default=3000,
                   help="cap on the observed cells one frame's posterior conditions on (farthest frames dropped)")
    g.add_argument("--precision", choices=("64", "32"), default="64", help="float64 or float32 linear algebra")
    g.add_argument("--geometry", choices=("auto", "sphere", "flat"), default="auto",
                   help="space distances on a global field (periodic longitude): sphere (chordal, the auto choice "
                        "there) or flat (grid units, no wrap); a regional field is always flat")


def parse_with_preset(p, argv=None):
    """p.parse_args(argv), with the defaults of --preset (those options p has) under the command line's."""
    known, _ = p.parse_known_args(argv)
    if known.preset != "none":
        dests = {a.dest for a in p._actions}
        p.set_defaults(**{k: v for k, v in PRESETS[known.preset].items() if k in dests})
    return p.parse_args(argv)


def kernel_label(args: dict) -> str:
    t, s = args["timekernel"], args["spacekernel"]
    return s if t == "disabled" else f"{t}{'x' if args['kernel_combination'] == 'product' else '+'}{s}"


# ------------------------------------------------------------------------------------------- inputs
class Grid(tuple):
    """(t (T,), y (Y,), x (X,)) float64 scaled coordinates; `x_period`: the circumference of a periodic x
    in the same units (None: x does not wrap); `lat`: (first latitude, y spacing) in degrees when it does."""

    x_period: float | None
    lat: tuple[float, float] | None

    def __new__(cls, t, y, x, x_period: float | None = None, lat: tuple[float, float] | None = None):
        grid = super().__new__(cls, (t, y, x))
        grid.x_period, grid.lat = x_period, lat
        return grid


def _step(v: np.ndarray) -> float:
    step = float(np.median(np.abs(np.diff(v)))) if v.size > 1 else 1.0
    return step if step > 0 else 1.0


def grid_inputs(field) -> Grid:
    """Grid (t (T,), y (Y,), x (X,)) float64: coordinates in units of their median spacing, starting at 0;
    for a periodic x (`field.x_periodic`, degrees of longitude) `x_period` = 360 / spacing."""
    def scaled(v):
        v = np.asarray(v, dtype=np.float64)
        return (v - v[0]) / _step(v)
    periodic = getattr(field, "x_periodic", False)
    period = 360.0 / _step(np.asarray(field.x, dtype=np.float64)) if periodic else None
    lat = (float(field.y[0]), _step(np.asarray(field.y, dtype=np.float64))) if periodic else None
    return Grid(scaled(field.time_days), scaled(field.y), scaled(field.x), period, lat)


def cell_inputs(grid, frames: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(N, 3) [t, y, x] of the True cells of `cells` (n, Y, X), frame k of which is frame `frames[k]`."""
    t, y, x = grid
    k, i, j = np.nonzero(cells)
    return np.stack([t[frames[k]], y[i], x[j]], axis=1)


# ------------------------------------------------------------------------------------------ kernels
def _base(name: str, dims: tuple, args: dict, extent: float):
    """An unscaled kernel on input `dims`; initial length scales of about 3 frames or cells."""
    ard = len(dims)
    if name == "rbf":
        k = gpytorch.kernels.RBFKernel(ard_num_dims=ard, active_dims=dims)
    elif name == "matern":
        k = gpytorch.kernels.MaternKernel(nu=args["matern_nu"], ard_num_dims=ard, active_dims=dims)
    elif name == "periodic":
        k = gpytorch.kernels.PeriodicKernel(ard_num_dims=ard, active_dims=dims)
        k.period_length = torch.full_like(k.period_length, max(extent / 2, 2.0))
    elif name == "spectral":
        return gpytorch.kernels.SpectralMixtureKernel(num_mixtures=args["num_mixtures"], ard_num_dims=ard,
                                                      active_dims=dims)
    else:
        raise ValueError(f"unknown kernel {name!r}")
    k.lengthscale = torch.full_like(k.lengthscale, 3.0)
    return k


def _circle(period: float, cells: float = 3.0):
    """Kernel on x (dim 2) for a periodic x: GPyTorch's periodic kernel exp(-2 sin^2(pi d / p) / l) with p
    fixed to the circumference, l such that near cells correlate as in an RBF of length scale `cells`."""
    k = gpytorch.kernels.PeriodicKernel(active_dims=(2,))
    k.period_length = torch.full_like(k.period_length, float(period))
    k.raw_period_length.requires_grad_(False)
    k.lengthscale = torch.full_like(k.lengthscale, 4 * math.pi ** 2 * cells ** 2 / float(period) ** 2)
    return k


class Chordal(gpytorch.kernels.Kernel):
    """An isotropic RBF or Matern `base` on the sphere, acting on (y, x) (dims 1, 2): cells become points
    R (cos lat cos lon, cos lat sin lon, sin lat), R = x_period / (2 pi), so the distance is the chord,
    in x spacings at the equator (close to the grid distance for near cells). A stationary kernel of the
    3-D distance restricted to the sphere stays positive definite (unlike one of the great-circle distance)."""

    def __init__(self, base, x_period: float, lat: tuple[float, float]):
        super().__init__(active_dims=torch.tensor([1, 2]))
        self.base, self.x_period, self.lat0, self.dlat = base, float(x_period), float(lat[0]), float(lat[1])

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """(..., n, 2) scaled [y, x] -> (..., n, 3) points on the sphere of radius x_period / (2 pi)."""
        lat = torch.deg2rad(self.lat0 + z[..., 0] * self.dlat)
        lon = z[..., 1] * (2 * math.pi / self.x_period)
        r = self.x_period / (2 * math.pi)
        return r * torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1)

    def forward(self, x1, x2, diag=False, **params):
        """x1: (..., n, 2), x2: (..., m, 2) scaled [y, x] (active dims 1, 2) -> covariance (..., n, m), or its
        diagonal (..., n) with `diag`."""
        return self.base.forward(self.embed(x1), self.embed(x2), diag=diag, **params)


def space_kernel(args: dict, extent_s: float, x_period: float | None = None, lat=None, separable: bool = False):
    """The space kernel over (y, x) (see the module docstring); `separable`: a product of a y and an x kernel
    where the geometry allows (the Kronecker path)."""
    name, geometry = args["spacekernel"], args.get("geometry")      # None: a config from before --geometry
    sphere = x_period is not None and geometry != "flat"
    if not sphere:
        if separable:
            return _base(name, (1,), args, extent_s) * _base(name, (2,), args, extent_s)
        return _base(name, (1, 2), args, extent_s)
    assert x_period is not None                                     # sphere
    if name in ("rbf", "matern") and lat is not None and geometry is not None:
        base = _base(name, (0,), args, extent_s)
        base.active_dims = None
        base.ard_num_dims = None
        return Chordal(base, x_period, lat)
    return _base(name, (1,), args, extent_s) * _circle(x_period)


def build_kernel(args: dict, extent_t: float, extent_s: float, x_period: float | None = None, lat=None,
                 separable: bool = False):
    """Covariance module over (t, y, x) from the run options (see the module docstring); `x_period`: the
    circumference of a periodic x in input units (None: x does not wrap), `lat` its (first latitude,
    spacing) in degrees; `separable`: space as a product over y and x (the Kronecker path)."""
    space = space_kernel(args, extent_s, x_period, lat, separable)
    tk = args["timekernel"]
    if tk == "disabled":
        return gpytorch.kernels.ScaleKernel(space)
    if tk == "softdisabled":
        time = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(active_dims=(0,)))
        time.base_kernel.lengthscale = torch.tensor(float(args["time_lengthscale"]))
        time.outputscale = torch.tensor(float(args["time_outputscale"]))
        time.base_kernel.raw_lengthscale.requires_grad_(False)
        time.raw_outputscale.requires_grad_(False)
    else:
        time = _base(tk, (0,), args, extent_t)
    if args["kernel_combination"] == "product":
        return gpytorch.kernels.ScaleKernel(time * space)
    return (time if tk == "softdisabled" else gpytorch.kernels.ScaleKernel(time)) + gpytorch.kernels.ScaleKernel(space)


def time_factor(kernel):
    """The time part of a kernel from build_kernel (None for a spatial-only model)."""
    inner = kernel.base_kernel if isinstance(kernel, gpytorch.kernels.ScaleKernel) else kernel
    parts = getattr(inner, "kernels", None)
    if not parts:
        return None
    first = parts[0].base_kernel if isinstance(parts[0], gpytorch.kernels.ScaleKernel) else parts[0]
    dims = first.active_dims
    return parts[0] if dims is not None and dims.tolist() == [0] else None    # not the y part of a periodic x


class ExactGP(gpytorch.models.ExactGP):
    """Exact GP on (N, 3) inputs; zero mean on climatology anomalies, a learned constant otherwise."""

    def __init__(self, x, y, likelihood, kernel, constant_mean: bool):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean() if constant_mean else gpytorch.means.ZeroMean()
        self.covar_module = kernel

    def forward(self, x):
        """x: (N, 3) scaled (t, y, x) -> the prior MultivariateNormal over the N points (mean (N,), covariance
        (N, N), lazy)."""
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


DENSE_SPACE_CELLS = {"fixed": 4096, "dynamic": 1024}    # --space_factor auto: a dense factor up to these grids


def space_factor(args: dict, ny: int, nx: int) -> str:
    """The Kronecker path's space factor on a flat grid: 'dense', one 2-D kernel on the Y * X cells (isotropic,
    as the dense path's), or 'separable', a y kernel times an x kernel (two small factors). --space_factor auto:
    dense for Matern and spectral kernels, whose 2-D form is no product over y and x (a product of 1-D Materns
    is rougher along the diagonals), up to 4,096 cells under a fixed mask (the station solver's cost grows with
    the stations) and 1,024 under a moving one (CG multiplies by the (Y X)^2 factor every iteration); separable
    above, and for RBF and periodic kernels, which are that product already. Configs from before the option:
    separable."""
    choice = args.get("space_factor", "separable")
    if choice != "auto":
        return choice
    if args["spacekernel"] in ("rbf", "periodic"):
        return "separable"
    limit = DENSE_SPACE_CELLS["fixed" if args.get("mask_type") == "fixed" else "dynamic"]
    return "dense" if ny * nx <= limit else "separable"


def make_kernel(args: dict, grid, x=None, y=None, separable: bool = False):
    """Covariance module for the run options on this grid; spectral kernels initialised from (x, y) when
    given; `separable`: the Kronecker path's form (see build_kernel and space_factor)."""
    t, gy, gx = grid
    if separable and (getattr(grid, "x_period", None) is None or args.get("geometry") == "flat"):
        choice = space_factor(args, len(gy), len(gx))
        log.info("Kronecker space factor: %s on %d x %d cells (--space_factor %s)", choice, len(gy), len(gx),
                  args.get("space_factor", "separable"))
        separable = choice == "separable"
    kernel = build_kernel(args, extent_t=float(t[-1] - t[0]) or 1.0,
                          extent_s=float(max(gy[-1] - gy[0], gx[-1] - gx[0])) or 1.0,
                          x_period=getattr(grid, "x_period", None), lat=getattr(grid, "lat", None),
                          separable=separable)
    if x is not None:
        for k in kernel.modules():
            if isinstance(k, gpytorch.kernels.SpectralMixtureKernel):
                k.initialize_from_data(x, y)
    return kernel


def log_lengthscales(kernel) -> None:
    """Learn every trainable length scale of `kernel` as its logarithm (Adam's steps are then relative: a step
    of 0.05 moves a length scale by 5%, from 3 to 30 cells in 50 steps rather than 500 under softplus)."""
    for k in kernel.modules():
        raw = getattr(k, "raw_lengthscale", None)
        if raw is None or not raw.requires_grad:
            continue
        value = k.lengthscale.detach().clone()
        k.register_constraint("raw_lengthscale", gpytorch.constraints.Positive(transform=torch.exp,
                                                                               inv_transform=torch.log))
        k.lengthscale = value


def make_likelihood():
    """Gaussian likelihood, noise 0.05 (of a unit-variance normalised field) to start, at least 1e-5."""
    lik = gpytorch.likelihoods.GaussianLikelihood(noise_constraint=gpytorch.constraints.GreaterThan(1e-5))
    lik.noise = torch.tensor(0.05)
    return lik


def make_model(args: dict, grid, x=None, y=None, dtype=torch.float64, device="cpu", separable: bool = False):
    """Model + likelihood for one band; spectral kernels are initialised from (x, y) when given;
    `separable`: the Kronecker path's kernel."""
    lik = make_likelihood()
    kernel = make_kernel(args, grid, x, y, separable)
    if separable:
        log_lengthscales(kernel)
    model = ExactGP(x, y, lik, kernel, args["mean_function"] == "constant")
    return model.to(device=device, dtype=dtype), lik.to(device=device, dtype=dtype)


def context_width(model, args: dict, n_train: int, dtype=torch.float64) -> int:
    """Frames either side a posterior conditions on: --context_frames, or where the time factor's
    correlation stays above 0.01 (the whole training window for periodic or spectral kernels)."""
    if args["timekernel"] == "disabled":
        return 0
    if args.get("context_frames") is not None:
        return int(args["context_frames"])
    tf = time_factor(model.covar_module)
    lags = torch.arange(0, max(n_train, 1) + 1, dtype=dtype, device=next(model.parameters()).device)
    pts = torch.zeros(len(lags), 3, dtype=dtype, device=lags.device)
    pts[:, 0] = lags
    with torch.no_grad():
        corr = tf(pts[:1], pts).to_dense()[0]
    corr = (corr / corr[0]).cpu().numpy()
    above = np.flatnonzero(np.abs(corr) >= 0.01)
    return int(above.max()) if above.size else 0


def robust_step(step_fn, objs, cur: dict, what: str, step: int, dtype=torch.float64) -> torch.Tensor:
    """loss = step_fn(jitter): one optimiser step. A failed Cholesky or a non-finite loss restores `objs`
    (models, optimisers) as they were and retries with the next of JITTERS (kept in cur['jitter'] for the
    rest of the run); past the last, or on NaNs in a covariance, RunError naming `what`."""
    snapshot = [copy.deepcopy(o.state_dict()) for o in objs]
    while True:
        jitter = max(JITTERS[cur["jitter"]], 1e-8 if dtype == torch.float64 else 1e-6)
        try:
            loss = step_fn(jitter)
            if not torch.isfinite(loss):
                raise FloatingPointError("loss is not finite")
            return loss
        except NanError:                    # NaN parameters: no jitter helps
            raise RunError(f"{what}: training diverged by step {step} (NaN in the covariance); "
                           "try a smaller learning rate") from None
        except (NotPSDError, FloatingPointError, torch.linalg.LinAlgError) as err:
            for o, s in zip(objs, snapshot, strict=False):
                o.load_state_dict(s)
            if cur["jitter"] + 1 >= len(JITTERS):
                raise RunError(f"{what}: {err} at step {step} even with jitter {jitter:g}; "
                               f"try a smaller --lr or another kernel pair") from None
            cur["jitter"] += 1
            log.warning("%s: %s at step %d; retrying with jitter %g", what, type(err).__name__, step,
                        JITTERS[cur["jitter"]])


# ---------------------------------------------------------------------------------------- posterior
def cholesky(K: torch.Tensor, what: str) -> torch.Tensor:
    """Cholesky factor with growing jitter; RunError naming `what` when even the largest fails."""
    scale = K.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
    for j in JITTERS:
        L, info = torch.linalg.cholesky_ex(K + j * scale * eye)
        if int(info) == 0 and torch.isfinite(L).all():
            if j:
                log.warning("%s: covariance needed jitter %.0e to factorise", what, j)
            return L
    raise RunError(f"{what}: the covariance matrix is not positive definite even with jitter "
                   f"{JITTERS[-1]:g} x its mean diagonal; try another kernel pair or --precision 64")


def context_cells(observed: np.ndarray, finite: np.ndarray, frame: int, width: int, cap: int) -> np.ndarray:
    """(T, Y, X) bool: observed cells of the frames within `width` of `frame`, nearest frames first until
    `cap` cells; the frame itself always (a random `cap` of its cells if it alone has more)."""
    T = observed.shape[0]
    usable = observed & finite
    out = np.zeros_like(usable)
    order = sorted(range(max(0, frame - width), min(T, frame + width + 1)), key=lambda f: (abs(f - frame), f))
    total = 0
    for f in order:
        n = int(usable[f].sum())
        if f != frame and total + n > cap:
            break
        out[f] = usable[f]
        total += n
    if total > cap:                          # the frame alone is larger than the cap
        idx = np.flatnonzero(out[frame])
        keep = np.random.default_rng(frame).choice(idx, cap, replace=False)
        out[frame] = False
        out[frame].flat[keep] = True
    return out


@torch.no_grad()
def posterior(model, lik, xc: torch.Tensor, yc: torch.Tensor, xs: torch.Tensor, what: str,
              chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictive mean and variance (of a new observation, noise included) at xs (M, 3) given (xc (N, 3),
    yc (N,)); both (M,). Kernel blocks are built chunk by chunk."""
    kern, mean_fn = model.covar_module, model.mean_module
    noise = lik.noise.reshape(())
    K = kern(xc, xc).to_dense() + noise * torch.eye(len(xc), dtype=xc.dtype, device=xc.device)
    L = cholesky(K, what)
    alpha = torch.cholesky_solve((yc - mean_fn(xc)).unsqueeze(-1), L).squeeze(-1)
    means, variances = [], []
    for s in range(0, len(xs), chunk):
        xq = xs[s:s + chunk]
        Kqc = kern(xq, xc).to_dense()
        v = torch.linalg.solve_triangular(L, Kqc.T, upper=False)
        means.append(mean_fn(xq) + Kqc @ alpha)
        variances.append((kern(xq, diag=True) - (v * v).sum(0)).clamp_min(0) + noise)
    return torch.cat(means), torch.cat(variances)


def inpaint(model, lik, grid, anomaly: np.ndarray, observed: np.ndarray, frames, width: int, cap: int,
            what: str, dtype=torch.float64, device="cpu", progress: bool = False, only: np.ndarray | None = None,
            solve=None):
    """Posterior mean and variance of every cell of `frames` given the observed cells around each.

    anomaly (T, Y, X): the model's target (NaN where not visible); observed (T, Y, X) bool; `only`
    (len(frames), Y, X) bool: predict just those cells (NaN elsewhere). `solve(xc (N, 3), yc (N,), xs (M, 3))`
    -> (mean (M,), var (M,)) replaces the exact posterior (the variational GP's sparse one).
    Returns two (len(frames), Y, X).
    """
    from tqdm import tqdm
    T, Y, X = anomaly.shape
    finite = np.isfinite(anomaly)
    mean, var = np.full((len(frames), Y, X), np.nan), np.full((len(frames), Y, X), np.nan)
    tt = lambda a: torch.as_tensor(a, dtype=dtype, device=device)      # noqa: E731
    for n, f in enumerate(tqdm(frames, desc=f"posterior {what}", unit="frame", disable=not progress)):
        ctx = context_cells(observed, finite, int(f), width, cap)
        xc = cell_inputs(grid, np.arange(T), ctx)
        if len(xc) == 0:
            raise RunError(f"{what}: frame {f} and the frames around it have no observed cell to condition on")
        want = np.ones((1, Y, X), dtype=bool) if only is None else only[n][None]
        if not want.any():
            continue
        xs = cell_inputs(grid, np.array([f]), want)
        if solve is None:
            m, v = posterior(model, lik, tt(xc), tt(anomaly[ctx]), tt(xs), what)
        else:
            m, v = solve(tt(xc), tt(anomaly[ctx]), tt(xs))
        mean[n][want[0]], var[n][want[0]] = m.cpu().numpy(), v.cpu().numpy()
    return mean, var


def band_targets(values: np.ndarray, clim: np.ndarray | None) -> np.ndarray:
    """(T, Y, X) what the GP models for one band: normalised values minus the normalised climatology."""
    return values - clim[None] if clim is not None else values.copy()

