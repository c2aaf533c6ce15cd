"""Hidden cells stay hidden by construction, for every method's training:
- a sentinel (+1000) in every hidden test cell leaves every checkpoint bit-identical;
- a sentinel in every hidden validation cell, with `Run.score_valid` replaced by a score that never reads
  the truth, also leaves them bit-identical: validation truth reaches a train script only through it.
And the module graph: the core imports no method folder, no two core modules import each other, no
script imports another script."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from baselines import train_baselines
from data_generation.make_synthetic_field import make_field
from gapfill import checkpoints, registry, runs
from gapfill.problem import build_problem

ROOT = Path(__file__).resolve().parents[1]
METHODS = list(registry.methods())                # every method folder's method.toml
METHOD_DIRS = [m.folder for m in registry.methods().values()] + ["data_generation", "additional_material", "benchmarks"]
SPLIT = ["--num_frames_train", "16", "--num_frames_valid", "4"]


def train_spec(method: str) -> tuple:
    """(train module, the options of a short run from its method.toml's [tests] leakage)."""
    m = registry.get(method)
    return m.module("train"), m.tests["leakage"]


def same(a, b, where="") -> None:
    """Assert two checkpoints hold identical values, bit for bit (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif hasattr(a, "get_weights"):                                              # a Keras model
        same(a.get_weights(), b.get_weights(), where)
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert a == b, where


def sentinel_copy(src: Path, dst: Path, split: str, method: str) -> None:
    """dst: src with +1000 on every hidden cell of `split` (the masks of the method's options)."""
    module, extra = train_spec(method)
    problem = build_problem(vars(module.parse_args(["--data_path", str(src), *SPLIT, *extra])))
    hidden = np.zeros_like(problem.observed)
    hidden[problem.splits[split]] = ~problem.observed[problem.splits[split]]
    assert hidden.sum() > 0.3 * hidden[problem.splits[split]].size        # the sentinel covers real cells
    ds = xr.load_dataset(src)
    ds["temperature"].values[hidden] += 1000.0
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(dst)


def train_twice(tmp_path, method: str, split: str):
    module, extra = train_spec(method)
    make_field(n_time=26, ny=16, nx=16, length_scale=3.0, seed=3).to_netcdf(tmp_path / "clean" / "f.nc")
    sentinel_copy(tmp_path / "clean" / "f.nc", tmp_path / "sentinel" / "f.nc", split, method)
    out = []
    for which in ("clean", "sentinel"):
        argv = ["--data_path", str(tmp_path / which / "f.nc"), *SPLIT, *extra, "--checkpoint_dir",
                str(tmp_path / which / "ck")]
        assert runs.run_cli(module.main, argv) == 0
        run = next((tmp_path / which / "ck").iterdir())
        ckpts = {k: checkpoints.load_checkpoint(run, k) for k in ("best", "last")}
        for k, c in ckpts.items():                  # Lightning's: the weights and optimizer state (not paths)
            if isinstance(c, dict) and "state_dict" in c:
                ckpts[k] = {"state_dict": c["state_dict"], "optimizer_states": c["optimizer_states"],
                            "global_step": c["global_step"]}
        out.append(ckpts)
    return out


@pytest.fixture
def tmp_data(tmp_path):
    (tmp_path / "clean").mkdir()
    return tmp_path


@pytest.mark.parametrize("method", METHODS)
def test_hidden_test_cells_never_reach_training(tmp_data, method):
    clean, sentinel = train_twice(tmp_data, method, "test")
    same(clean, sentinel, method)


@pytest.mark.parametrize("method", METHODS)
def test_hidden_validation_cells_reach_training_only_through_score_valid(tmp_data, method, monkeypatch):
    def blind(self, mean, variance=None, frames=None, bands=None, ssim=False, calibration=False, details=False):
        """A validation score that never reads the truth: the spread of the prediction."""
        out = {"valid_rmse": float(np.nanstd(mean))}
        if variance is not None:
            out["valid_nll"] = float(np.nanmean(variance))
            if calibration:
                out["valid_crps"] = out["valid_coverage95"] = float(np.nanmean(np.sqrt(variance)))
        if ssim:
            out["valid_ssim"] = float(np.nanmean(mean))
        return out

    monkeypatch.setattr(runs.Run, "score_valid", blind)
    clean, sentinel = train_twice(tmp_data, method, "valid")
    same(clean, sentinel, method)


def test_the_model_view_of_a_run_has_no_hidden_cell(tmp_path):
    make_field(n_time=26, ny=16, nx=16, seed=3).to_netcdf(tmp_path / "f.nc")
    args = train_baselines.parse_args(["--data_path", str(tmp_path / "f.nc"), *SPLIT, "--checkpoint_dir",
                                       str(tmp_path / "ck")])
    run = runs.open_training(args, "baselines", {"": "x"})
    full = build_problem(vars(args))
    for split in ("valid", "test"):
        sl = full.splits[split]
        assert np.isnan(run.problem.field.values[sl][full.scored(split)]).all()
        assert np.isfinite(full.field.values[sl][full.scored(split)]).all()
    np.testing.assert_array_equal(run.problem.field.values[full.splits["train"]], full.field.values[full.splits["train"]])
    run.close()


def _imports(path: Path) -> set[str]:
    """Top-level and dotted names a file imports anywhere (function bodies included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_core_imports_no_method_folder_and_its_modules_form_no_cycle():
    def module(p: Path) -> str:                        # gapfill/report/run_page.py -> report.run_page
        parts = p.relative_to(ROOT / "gapfill").with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    core = {module(p): _imports(p) for p in (ROOT / "gapfill").rglob("*.py") if module(p)}
    assert {"report", "report.run_page", "runs", "problem"} <= set(core)      # packages are walked too
    for name, imported in core.items():
        bad = {m for m in imported if m.split(".")[0] in METHOD_DIRS}
        assert not bad, f"gapfill/{name} imports {bad}"

    def target(m: str) -> str | None:                 # gapfill.report.common._num -> report.common
        parts = m.split(".")[1:]
        return next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in core), None)

    graph = {n: {t for m in imp if m.startswith("gapfill.") and (t := target(m)) and t != n}
             for n, imp in core.items()}
    state: dict[str, int] = {}

    def visit(n, path):
        assert state.get(n) != 1, f"import cycle in gapfill/: {' -> '.join(path + [n])}"
        if state.get(n) == 2:
            return
        state[n] = 1
        for m in graph[n]:
            visit(m, path + [n])
        state[n] = 2

    for n in graph:
        visit(n, [])


def test_no_script_imports_a_script():
    scripts = {f"{p.parent.name}.{p.stem}" for d in METHOD_DIRS for p in (ROOT / d).glob("*.py")
               if p.stem.startswith(("train_", "test_"))}
    for d in METHOD_DIRS:
        for p in (ROOT / d).glob("*.py"):
            bad = _imports(p) & scripts
            assert not bad, f"{d}/{p.name} imports the script(s) {bad}"


def test_core_imports_with_the_method_folders_gone(tmp_path):
    """`import gapfill.evaluate` (and every core module) with the method packages made unimportable."""
    code = ("import importlib, sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {METHOD_DIRS!r}:\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "for m in ['evaluate', 'runs', 'report', 'floor', 'data', 'masks', 'metrics', 'cli', 'sweep', 'submit']:\n"
            "    importlib.import_module('gapfill.' + m)\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
