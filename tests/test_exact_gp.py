"""Exact GP: the posterior against float64 numpy GP equations, inpainting that beats the classical floor
on a crop of the default field, every kernel pair of the sweep end to end, clear numerical errors, resume."""
import json
import math
import re
from pathlib import Path

import gpytorch
import numpy as np
import pytest
import torch
from sweep_checks import assert_gp_reports, signal_at_check

from data_generation.make_synthetic_field import make_field
from exact_gp_related import exact_gp_utils as U
from exact_gp_related import test_exact_gp, train_exact_gp
from gapfill import evaluate, identity, runs
from gapfill.errors import DataError, RunError
from gapfill.floor import reconstruct_baseline as reconstruct
from gapfill.metrics import rmse
from gapfill.problem import build_problem
from gapfill.sweep import entries, load

ARGS = {"matern_nu": 1.5, "num_mixtures": 2, "time_lengthscale": 50.0, "time_outputscale": 0.7,
        "mean_function": "climatology", "context_frames": None, "max_context_points": 3000, "precision": "64"}


# ------------------------------------------------------------------ float64 numpy reference
def np_rbf(a, b, ls):
    d2 = (((a[:, None, :] - b[None, :, :]) / ls) ** 2).sum(-1)
    return np.exp(-0.5 * d2)


def np_matern(a, b, ls, nu):
    d = np.sqrt((((a[:, None, :] - b[None, :, :]) / ls) ** 2).sum(-1))
    if nu == 0.5:
        return np.exp(-d)
    if nu == 1.5:
        return (1 + np.sqrt(3) * d) * np.exp(-np.sqrt(3) * d)
    return (1 + np.sqrt(5) * d + 5 / 3 * d**2) * np.exp(-np.sqrt(5) * d)


def np_periodic(a, b, ls, period):
    """GPyTorch's periodic kernel: exp(-2 sum_i sin^2(pi |a_i - b_i| / p_i) / l_i)."""
    s = np.sin(np.pi * np.abs(a[:, None, :] - b[None, :, :]) / period) ** 2
    return np.exp(-2 * (s / ls).sum(-1))


def hyper(k):
    return {n: p.detach().double().numpy().ravel() for n, p in
            (("ls", getattr(k, "lengthscale", None)), ("period", getattr(k, "period_length", None))) if p is not None}


def np_kernel(name, k, a, b):
    h = hyper(k)
    if name == "rbf":
        return np_rbf(a, b, h["ls"])
    if name == "matern":
        return np_matern(a, b, h["ls"], k.nu)
    return np_periodic(a, b, h["ls"], h["period"])


@pytest.mark.parametrize("combination, tk, sk", [("product", "matern", "rbf"), ("additive", "periodic", "matern"),
                                                 ("product", "rbf", "periodic")])
def test_posterior_matches_float64_numpy_gp_equations(combination, tk, sk):
    rng = np.random.default_rng(0)
    args = dict(ARGS, timekernel=tk, spacekernel=sk, kernel_combination=combination)
    grid = (np.arange(20.0), np.arange(12.0), np.arange(12.0))
    model, lik = U.make_model(args, grid)
    with torch.no_grad():                                  # hyperparameters away from their initial values
        for m in model.covar_module.modules():
            if getattr(m, "has_lengthscale", False) and m.raw_lengthscale.requires_grad:
                m.lengthscale = torch.as_tensor(rng.uniform(1.5, 5.0, m.lengthscale.shape))
            if isinstance(m, __import__("gpytorch").kernels.PeriodicKernel):
                m.period_length = torch.as_tensor(rng.uniform(4.0, 9.0, m.period_length.shape))
            if hasattr(m, "outputscale"):
                m.outputscale = torch.tensor(rng.uniform(0.5, 2.0))
        lik.noise = torch.tensor(0.07)
    xc = np.column_stack([rng.uniform(0, 19, 80), rng.uniform(0, 11, 80), rng.uniform(0, 11, 80)])
    xs = np.column_stack([rng.uniform(0, 19, 30), rng.uniform(0, 11, 30), rng.uniform(0, 11, 30)])
    yc = np.sin(xc[:, 0] / 3) + np.cos(xc[:, 1] / 2) + 0.1 * rng.normal(size=80)
    model.eval()
    mean, var = U.posterior(model, lik, torch.tensor(xc), torch.tensor(yc), torch.tensor(xs), "test", chunk=7)

    ck = model.covar_module
    if combination == "product":
        t_k, s_k = ck.base_kernel.kernels
        kfun = lambda a, b: float(ck.outputscale) * np_kernel(tk, t_k, a[:, :1], b[:, :1]) \
            * np_kernel(sk, s_k, a[:, 1:], b[:, 1:])                                         # noqa: E731
    else:
        t_s, s_s = ck.kernels
        kfun = lambda a, b: float(t_s.outputscale) * np_kernel(tk, t_s.base_kernel, a[:, :1], b[:, :1]) \
            + float(s_s.outputscale) * np_kernel(sk, s_s.base_kernel, a[:, 1:], b[:, 1:])    # noqa: E731
    noise = float(lik.noise)
    K = kfun(xc, xc) + noise * np.eye(80)
    Ks = kfun(xs, xc)
    ref_mean = Ks @ np.linalg.solve(K, yc)
    ref_var = np.diag(kfun(xs, xs)) - np.einsum("ij,ji->i", Ks, np.linalg.solve(K, Ks.T)) + noise
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-4, atol=1e-4 * np.abs(ref_mean).max())
    np.testing.assert_allclose(var.numpy(), ref_var, rtol=1e-4)
    assert ref_var.min() > noise and ref_var.max() < noise + kfun(xs[:1], xs[:1])[0, 0] + 1e-9


def test_softdisabled_time_kernel_is_fixed_and_disabled_is_spatial_only():
    grid = (np.arange(10.0), np.arange(8.0), np.arange(8.0))
    model, _ = U.make_model(dict(ARGS, timekernel="softdisabled", spacekernel="rbf", kernel_combination="product"), grid)
    t = U.time_factor(model.covar_module)
    assert float(t.base_kernel.lengthscale) == pytest.approx(50.0) and float(t.outputscale) == pytest.approx(0.7)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any("kernels.0" in n for n in trainable)                       # nothing of the time part trains
    model, _ = U.make_model(dict(ARGS, timekernel="disabled", spacekernel="rbf", kernel_combination="product"), grid)
    a, b = torch.tensor([[0.0, 2.0, 3.0]]), torch.tensor([[9.0, 2.0, 3.0]])
    assert U.time_factor(model.covar_module) is None
    assert float(model.covar_module(a, b).to_dense()) == pytest.approx(float(model.covar_module(a, a).to_dense()))
    assert U.context_width(model, {"timekernel": "disabled"}, 10) == 0


def test_cholesky_adds_jitter_then_names_the_kernel_pair():
    v = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    singular = v.T @ v                                                        # rank 1: needs jitter
    L = U.cholesky(singular, "exact GP rbfxrbf band 0")
    assert torch.isfinite(L).all()
    bad = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)       # indefinite: no jitter helps
    with pytest.raises(RunError, match=r"exact GP maternxspectral band 0: .*not positive definite"):
        U.cholesky(bad, "exact GP maternxspectral band 0")


def test_context_cells_nearest_frames_first_within_the_cap():
    obs = np.zeros((9, 4, 4), dtype=bool)
    obs[:, :2, :2] = True                                                     # 4 cells per frame
    ctx = U.context_cells(obs, np.ones_like(obs), frame=4, width=3, cap=13)
    assert ctx.sum(axis=(1, 2)).tolist() == [0, 0, 0, 4, 4, 4, 0, 0, 0]       # frame 4, then 3 and 5; 2 would pass 13
    ctx = U.context_cells(obs, np.ones_like(obs), frame=0, width=0, cap=3)
    assert ctx.sum() == 3 and ctx[0].sum() == 3                                # the frame alone, subsampled


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    """The default synthetic field (365 x 64 x 64), its first 20 x 20 cells."""
    path = tmp_path_factory.mktemp("gp") / "crop.nc"
    make_field().isel(lat=slice(0, 20), lon=slice(0, 20)).to_netcdf(path)
    return path


def test_product_matern_beats_every_classical_baseline_on_a_crop(crop, tmp_path):
    common = ["--data_path", str(crop), "--prob_masking", "0.9", "--mask_type", "fixed", "--num_frames_train", "255",
              "--num_frames_valid", "10"]
    train_exact_gp.main(common + ["--timekernel", "matern", "--spacekernel", "matern", "--max_iters", "30",
                                  "--max_train_points", "1500", "--checkpoint_dir", str(tmp_path)])
    run = next(tmp_path.iterdir())
    cfg = json.loads((run / "config.json").read_text())
    problem = build_problem(cfg["args"], {"num_frames_test": 20})
    mean, var = test_exact_gp.predict(problem.for_model(), cfg, run, "cpu")
    test, scored = problem.splits["test"], problem.scored("test")
    truth, vis = problem.field.values[test], problem.visible()
    gp = rmse(truth, mean, scored)
    floor = {m: rmse(truth, reconstruct(m, vis, problem.splits["train"], test, **({"max_rank": 30} if m == "dineof"
                                                                                     else {}))[0], scored)
             for m in ("climatology", "persistence", "interpolation", "anomaly_interpolation", "dineof")}
    assert gp < 0.92 * min(floor.values()), (gp, floor)
    z = (mean - truth)[scored] / np.sqrt(var[scored])
    assert 0.3 < np.std(z) < 1.5                                              # the variance is of the right size


def tiny_field(path):
    make_field(n_time=30, ny=10, nx=10, length_scale=3.0, seed=2).to_netcdf(path)


@pytest.mark.parametrize("every", [pytest.param(False, id="each-kernel-once"),
                                   pytest.param(True, id="all-24", marks=pytest.mark.slow)])
def test_every_kernel_pair_of_the_sweep_trains_and_tests(tmp_path, every):
    """The sweep's 6 x 4 kernel pairs (fast: 6 of them, every time and space kernel at least once) on a
    30 x 10 x 10 field: finite metrics and a full PDF for each."""
    spec = entries(load(Path(__file__).resolve().parents[1] / "exact_gp_related" / "sweep_exact_gp.toml"))
    pairs = sorted({(e["timekernel"], e["spacekernel"]) for e in spec})
    assert len(pairs) == 24 and len(spec) == 24 * 3 * 2
    if not every:
        spaces = sorted({sk for _, sk in pairs})
        pairs = [(tk, spaces[i % len(spaces)]) for i, tk in enumerate(sorted({tk for tk, _ in pairs}))]
    tiny_field(tmp_path / "tiny.nc")
    for tk, sk in pairs:
        train_exact_gp.main(["--data_path", str(tmp_path / "tiny.nc"), "--timekernel", tk, "--spacekernel", sk,
                             "--prob_masking", "0.5", "--num_frames_train", "20", "--num_frames_valid", "4",
                             "--max_iters", "4", "--eval_every", "2", "--max_train_points", "300",
                             "--checkpoint_dir", str(tmp_path / "ck"), "--num_mixtures", "2"])
    runs_ = sorted((tmp_path / "ck").iterdir())
    assert len(runs_) == len(pairs)
    records = evaluate.test_main("exact_gp", test_exact_gp.predict, [
        "--checkpoints", *map(str, runs_), "--results_folder", str(tmp_path / "res"), "--num_frames_test", "2"],
        summary_grid=test_exact_gp.SUMMARY_GRID)
    assert_gp_reports(records, tmp_path / "res", "exact_gp")


def test_pages_all_draws_the_training_and_validation_frames_and_scores_only_the_test_frames(tmp_path):
    """--pages all (the original GP scripts' PDF): a page per training and validation frame before the test
    frames, the scores unchanged; the training frames' hidden cells hold the posterior mean from the observed
    cells (closer to the truth than spatial interpolation of them); a predict without `split` refuses it."""
    tiny_field(tmp_path / "tiny.nc")
    train_exact_gp.main(["--data_path", str(tmp_path / "tiny.nc"), "--prob_masking", "0.5", "--num_frames_train", "10",
                         "--num_frames_valid", "3", "--max_iters", "4", "--eval_every", "2",
                         "--checkpoint_dir", str(tmp_path / "ck")])
    run = next((tmp_path / "ck").iterdir())
    for folder, extra in (("a", []), ("b", ["--pages", "all", "--show", "variance"])):
        test_exact_gp.main(["--checkpoints", str(run), "--num_frames_test", "3", "--results_folder", str(tmp_path / folder),
                            *extra])
    ma, mb = (json.loads((tmp_path / f / run.name / "metrics.json").read_text()) for f in "ab")
    assert ma["metrics"] == mb["metrics"] and mb["metrics"]["overall"]["n_scored"] > 0
    import pymupdf
    with pymupdf.open(tmp_path / "b" / run.name / f"{run.name}.pdf") as doc:
        assert doc.page_count == 10 + 3 + 3 + 1
        text = [doc[i].get_text() for i in (0, 9, 10, 13)]
    assert "training frame 1/10" in text[0] and "training frame 10/10" in text[1]
    assert "validation frame 1/3" in text[2] and "test frame 1/3" in text[3] and "predictive variance" in text[3]
    cfg = json.loads((run / "config.json").read_text())
    problem = build_problem(cfg["args"])
    mean, _ = test_exact_gp.predict(problem.for_model(), cfg, run, "cpu", split="train")
    train = problem.splits["train"]
    truth, seen = problem.field.values[train], problem.observed[train][:, None]
    hidden = ~seen & np.isfinite(truth)
    interp = reconstruct("interpolation", np.where(seen, truth, np.nan), train, train)[0]   # per frame, in space
    assert rmse(truth, mean, hidden) < 0.6 * rmse(truth, interp, hidden)            # measured: 0.26 against 1.17
    with pytest.raises(DataError, match="--pages all: exact_gp reconstructs the test frames only"):
        evaluate.evaluate_run("exact_gp", run, lambda problem, cfg, run_dir, device: None, {"pages": "all"},
                              tmp_path / "c")


@pytest.mark.parametrize("inference, mask, rtol", [("dense", "fixed", 1e-10), ("kronecker", "fixed", 1e-10),
                                                   ("kronecker", "dynamic", 1e-3)])
def test_preempted_training_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, inference, mask, rtol):
    """Dense and Kronecker on stations (exact): the same numbers; Kronecker with conjugate gradients (a
    dynamic mask): the resumed run's first solve starts cold (the warm start is not saved), so it agrees to
    the solver's tolerance."""
    tiny_field(tmp_path / "tiny.nc")
    argv = ["--data_path", str(tmp_path / "tiny.nc"), "--timekernel", "rbf", "--spacekernel", "matern",
            "--num_frames_train", "20", "--num_frames_valid", "4", "--max_iters", "12", "--eval_every", "3",
            "--max_train_points", "300", "--inference", inference, "--mask_type", mask]
    train_exact_gp.main(argv + ["--checkpoint_dir", str(tmp_path / "plain")])
    signal_at_check(monkeypatch, 5)
    assert runs.run_cli(train_exact_gp.main, argv + ["--checkpoint_dir", str(tmp_path / "cut")]) == runs.EXIT_RESUME
    cut = next((tmp_path / "cut").iterdir())
    assert torch.load(cut / "last.pt", weights_only=True)["current"]["step"] == 5
    assert not json.loads((cut / "config.json").read_text())["finished"]
    train_exact_gp.main(argv + ["--checkpoint_dir", str(tmp_path / "cut")])      # the requeued run
    plain = next((tmp_path / "plain").iterdir())
    a, b = (torch.load(d / "best.pt", weights_only=True)["bands"][0]["model"] for d in (plain, cut))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=rtol * 1e-2)
    rows = (cut / "train_log.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == [str(i) for i in range(1, 13)]   # each step logged once


def test_bad_kernel_option_and_too_few_cells_are_one_line_errors(tmp_path):
    tiny_field(tmp_path / "tiny.nc")
    with pytest.raises(SystemExit):
        train_exact_gp.parse_args(["--data_path", "x.nc", "--timekernel", "cosine"])
    rc = runs.run_cli(train_exact_gp.main, ["--data_path", str(tmp_path / "tiny.nc"), "--prob_masking", "0.999",
                                            "--num_frames_train", "1", "--num_frames_valid", "1",
                                            "--checkpoint_dir", str(tmp_path / "ck")])
    assert rc == 2


def test_run_names_tell_sweep_entries_apart():
    spec = entries(load(Path(__file__).resolve().parents[1] / "exact_gp_related" / "sweep_exact_gp.toml"))
    names = {identity.make_run_name("exact_gp", "field", train_exact_gp.name_parts(train_exact_gp.parse_args(
        [a for k, v in e.items() for a in (f"--{k}", str(v))]))) for e in spec}
    assert len(names) == len(spec) and all(re.fullmatch(r"[A-Za-z0-9._+-]+", n) for n in names)


def test_training_step_that_fails_is_retried_with_jitter_then_stops_with_the_kernel_pair(tmp_path, monkeypatch,
                                                                                        capsys):
    from linear_operator.utils.errors import NotPSDError
    tiny_field(tmp_path / "tiny.nc")
    real = train_exact_gp.gpytorch.mlls.ExactMarginalLogLikelihood
    failures = {"left": 2}

    class Flaky(real):
        def forward(self, *a, **kw):
            if failures["left"]:
                failures["left"] -= 1
                raise NotPSDError("matrix not positive definite")
            return super().forward(*a, **kw)

    monkeypatch.setattr(train_exact_gp.gpytorch.mlls, "ExactMarginalLogLikelihood", Flaky)
    argv = ["--data_path", str(tmp_path / "tiny.nc"), "--timekernel", "periodic", "--spacekernel", "spectral",
            "--num_frames_train", "20", "--num_frames_valid", "4", "--max_iters", "3", "--max_train_points", "200",
            "--inference", "dense"]
    assert train_exact_gp.main(argv + ["--checkpoint_dir", str(tmp_path / "a")]) == 0    # two retries, then fine
    assert failures["left"] == 0
    failures["left"] = 10**6                                                  # never recovers
    rc = runs.run_cli(train_exact_gp.main, argv + ["--checkpoint_dir", str(tmp_path / "b")])
    assert rc == 3
    out, err = capsys.readouterr()                                              # log on stdout, errors on stderr
    assert "retrying with jitter 0.0001" in out
    assert "ERROR gapfill.entry: exact GP periodicxspectral band 0: matrix not positive definite at step 0 even " \
        "with jitter 0.01" in err


def test_conjugate_gradient_training_follows_the_exact_station_path(tmp_path, monkeypatch):
    """On stations the Kronecker path is exact; forced onto conjugate gradients, Hutchinson probes and pathwise
    variances (what it uses for any other mask) it reaches nearly the same hyperparameters and validation score."""
    from exact_gp_related import kronecker
    tiny_field(tmp_path / "tiny.nc")
    argv = ["--data_path", str(tmp_path / "tiny.nc"), "--num_frames_train", "20", "--num_frames_valid", "4",
            "--max_iters", "20", "--eval_every", "20", "--lr", "0.1"]   # 4 probes: log length scales within 0.06
    train_exact_gp.main(argv + ["--checkpoint_dir", str(tmp_path / "exact")])
    calls = []
    monkeypatch.setattr(kronecker, "fixed_cells", lambda mask: calls.append(1))
    train_exact_gp.main(argv + ["--checkpoint_dir", str(tmp_path / "cg")])
    assert calls                                                               # the CG path ran
    exact, cg = (next((tmp_path / d).iterdir()) for d in ("exact", "cg"))
    a, b = (torch.load(d / "best.pt", weights_only=True)["bands"][0]["model"] for d in (exact, cg))
    for k in a:
        if "raw" in k and "constraint" not in k:                             # measured: within 0.07
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=0.15, msg=k)    # (log length scales: 7%)
    va, vb = (json.loads((d / "config.json").read_text())["valid_rmse"] for d in (exact, cg))
    assert vb == pytest.approx(va, rel=0.04)                                  # measured: 1.8% apart
    rows = [[float(v or "nan") for v in r.split(",")[:4]] for r in (cg / "train_log.csv").read_text().splitlines()[1:]]
    exact_rows = [[float(v) for v in r.split(",")[:4]] for r in (exact / "train_log.csv").read_text().splitlines()[1:]]
    assert all(r[2] > 0 for r in rows) and all(r[2] == 0 for r in exact_rows)   # cg_iters: CG vs none
    valued = [i for i, r in enumerate(rows) if not math.isnan(r[3])]
    assert valued == [0, 19]                     # the Lanczos value on the first and the validation step only
    assert max(abs(rows[i][3] - exact_rows[i][3]) for i in valued) < 0.05      # Lanczos NLL per cell (0.03)


def test_kronecker_bands_are_fitted_apart_and_frames_past_the_test_window_stay_out(tmp_path, monkeypatch):
    """Two bands, the second 2 x the first + 1: normalised per band they are the same problem, so the physical
    RMSE of the second is exactly twice the first's. The test window (2 frames) ends before the record: the
    frames after it (which the core shows whole) are not conditioned on, so the stations stay exact (no CG)."""
    from exact_gp_related import kronecker
    ds = make_field(n_time=30, ny=10, nx=10, length_scale=3.0, seed=2)
    ds["double"] = 2 * ds["temperature"] + 1
    ds.to_netcdf(tmp_path / "two.nc")
    train_exact_gp.main(["--data_path", str(tmp_path / "two.nc"), "--num_frames_train", "20", "--num_frames_valid", "4",
                         "--max_iters", "6", "--eval_every", "3", "--checkpoint_dir", str(tmp_path / "ck")])
    run = next((tmp_path / "ck").iterdir())
    cfg = json.loads((run / "config.json").read_text())
    problem = build_problem(cfg["args"], {"num_frames_test": 2})
    assert problem.splits["test"].stop < problem.field.shape[0]
    monkeypatch.setattr(kronecker, "Solver", lambda *a, **kw: pytest.fail("conjugate gradients on stations"))
    mean, var = test_exact_gp.predict(problem.for_model(), cfg, run, "cpu")
    test, scored = problem.splits["test"], problem.scored("test")
    assert mean.shape == (2, 2, 10, 10) and np.isfinite(mean).all() and (var > 0).all()
    truth = problem.field.values[test]
    r = [rmse(truth[:, b:b + 1], mean[:, b:b + 1], scored[:, b:b + 1]) for b in (0, 1)]
    assert r[1] == pytest.approx(2 * r[0], rel=1e-6), r
    np.testing.assert_allclose(var[:, 1], 4 * var[:, 0], rtol=1e-6)


def test_preset_seed_builds_the_original_repositorys_model_and_the_command_line_overrides_it():
    from variational_gp_related import train_variational_gp
    base = ["--data_path", "x.nc", "--timekernel", "softdisabled", "--spacekernel", "spectral"]
    a = vars(train_exact_gp.parse_args([*base, "--preset", "seed"]))
    assert (a["kernel_combination"], a["mean_function"], a["inference"], a["num_mixtures"]) == \
        ("additive", "constant", "dense", 2)
    assert a["time_lengthscale"] == a["time_outputscale"] == 1e-5
    default = vars(train_exact_gp.parse_args(base))                           # today's model without it
    assert (default["kernel_combination"], default["mean_function"], default["num_mixtures"]) == \
        ("product", "climatology", 4)
    over = vars(train_exact_gp.parse_args([*base, "--preset", "seed", "--num_mixtures", "3"]))
    assert over["num_mixtures"] == 3 and over["kernel_combination"] == "additive"
    v = vars(train_variational_gp.parse_args([*base, "--preset", "seed"]))    # shares the kernels, no --inference
    assert v["kernel_combination"] == "additive" and "inference" not in v
    grid = (np.arange(10.0), np.arange(6.0), np.arange(6.0))
    model, _ = U.make_model(a, grid)
    k = model.covar_module                                                    # time + space, two output scales
    assert isinstance(k, gpytorch.kernels.AdditiveKernel) and len(k.kernels) == 2
    t, s = k.kernels
    assert float(t.base_kernel.lengthscale) == pytest.approx(1e-5) and float(t.outputscale) == pytest.approx(1e-5)
    assert not t.base_kernel.raw_lengthscale.requires_grad and not t.raw_outputscale.requires_grad
    assert isinstance(s.base_kernel, gpytorch.kernels.SpectralMixtureKernel) and s.base_kernel.num_mixtures == 2
    assert isinstance(model.mean_module, gpytorch.means.ConstantMean)


def test_training_cg_tolerance_follows_the_noise_and_a_capped_solve_is_logged_once(tmp_path, monkeypatch):
    import logging

    from exact_gp_related import kronecker
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())             # type: ignore[method-assign]
    logging.getLogger("exact_gp.train").addHandler(handler)                   # the entry point resets the root's
    assert kronecker.train_tol(1e-3, 0.5) == 1e-3 and kronecker.train_tol(1e-3, 0.01) == pytest.approx(2e-4)
    tiny_field(tmp_path / "tiny.nc")
    monkeypatch.setattr(kronecker, "fixed_cells", lambda mask: None)           # CG, as under a moving mask
    try:
        train_exact_gp.main(["--data_path", str(tmp_path / "tiny.nc"), "--num_frames_train", "20",
                             "--num_frames_valid", "4", "--max_iters", "4", "--eval_every", "4",
                             "--max_train_cg_iters", "2", "--checkpoint_dir", str(tmp_path / "ck")])
    finally:
        logging.getLogger("exact_gp.train").removeHandler(handler)
    capped = [m for m in seen if "training CG capped at 2 iterations" in m]
    assert len(capped) == 1 and "from step 0" in capped[0], seen               # once per band
    run = next((tmp_path / "ck").iterdir())
    iters = [int(r.split(",")[2]) for r in (run / "train_log.csv").read_text().splitlines()[1:]]
    assert iters == [2, 2, 2, 2]
