"""The cross-method benchmark: the sweep's cases, a reduced run (2 datasets x 2 masks x 3 methods) whose
leaderboard is checked against the runs' own metrics.json, and a kill midway after which a rerun runs
only the cases that were not done."""
from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import benchmark, leaderboard
from gapfill import registry
from gapfill.files import read_json, write_json
from gapfill.sweep import entries, load

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_lists_every_method_dataset_and_mask_of_the_issue():
    cases = benchmark.case_names()
    assert {c[0] for c in cases} == set(registry.methods())
    assert {c[1] for c in cases} == set(benchmark.DATASETS)
    assert {c[2] for c in cases} == set(benchmark.MASKS)       # random 50/80/90 fixed and dynamic, clouds, circle
    assert len(cases) == len(set(cases)) == len(entries(load(benchmark.SWEEP)))
    # every dataset has every method, so a method that cannot run is a listed n/a, never missing
    per_dataset = {d: {c[0] for c in cases if c[1] == d} for d in benchmark.DATASETS}
    assert all(ms == set(registry.methods()) for ms in per_dataset.values())
    assert benchmark.MASKS["clouds"]["cloud_range"] == [0.2, 0.6]


def _make_data(data_dir: Path) -> None:
    """A tiny synthetic field and a 24-pixel photograph under the benchmark's file names."""
    py = sys.executable
    subprocess.run([py, "-m", "data_generation.make_synthetic_field", "--out", str(data_dir / "synthetic_default.nc"),
                    "--n_time", "40", "--ny", "12", "--nx", "12"], check=True, capture_output=True)
    subprocess.run([py, "-m", "data_generation.prepare_real_datasets", "--out_dir", str(data_dir), "--only", "camera",
                    "--image_size", "24"], check=True, capture_output=True)


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_reduced_benchmark_matches_metrics_and_a_rerun_after_a_kill_runs_only_the_rest(tmp_path):
    data = tmp_path / "data"
    _make_data(data)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('script = "benchmarks/benchmark.py"\n[grid]\nmethod = ["baselines", "exact_gp", "variational_gp"]\n'
                     'case = ["synthetic/random80_dynamic", "camera/circle"]\n')      # one of each kind of data and mask
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.benchmark", "--sweep", str(sweep), "--budget", "smoke", "--out", str(out),
           "--checkpoint_root", str(tmp_path / "ckpt"), "--data_dir", str(data), "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")

    # first run: killed (the whole process group, as a lost node would) once two cases are done
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(list(out.glob("runs/*/*/*/*/case.json"))) < 2 and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/*/*/case.json")}
    assert 2 <= len(done) < 6, "the kill should land midway"
    assert not (out / "leaderboard.csv").exists()

    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    expect = f"6 case(s) selected at budget smoke: {len(done)} done, {6 - len(done)} to run (0 failed before)"
    assert expect in second.stdout + second.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in done.items()), "a done case ran again"
    assert len(list(out.glob("runs/*/*/*/*/case.json"))) == 6

    rows = _rows(out / "leaderboard.csv")
    by = {(r["dataset"], r["mask"], r["method"]): r for r in rows}
    cases = [("synthetic", "random80_dynamic"), ("camera", "circle")]
    for d, m in cases:
        # every learned row equals its own run's metrics.json; the floor rows equal the DINEOF run's floor
        dineof = read_json(out / by[d, m, "dineof"]["metrics"])
        floor = {k: v["overall"]["rmse"] for k, v in dineof["baselines"].items()}
        classical = {**floor, "dineof": dineof["metrics"]["overall"]["rmse"]}
        for method in ("dineof", "exact_gp", "variational_gp"):
            r = by[d, m, method]
            assert r["status"] == "ok", r
            rec = read_json(out / r["metrics"])
            assert rec["dataset"] == d if d != "synthetic" else rec["data_path"].endswith("synthetic_default.nc")
            for key in ("rmse", "mae", "r2", "n_scored"):
                assert math.isclose(float(r[key]), rec["metrics"]["overall"][key], rel_tol=1e-9), (method, key)
            assert math.isclose(float(r["train_seconds"]), rec["cost"]["train_seconds"], rel_tol=1e-9)
            assert int(r["n_scored"]) == dineof["metrics"]["overall"]["n_scored"]     # the same hidden cells
            assert float(r["peak_memory_mb"]) > 50
        for name, v in floor.items():
            assert math.isclose(float(by[d, m, name]["rmse"]), v, rel_tol=1e-9)
        best = min(classical, key=classical.get)
        ok = [r for (dd, mm, _), r in by.items() if (dd, mm) == (d, m) and r["status"] == "ok"]
        assert all(r["best_classical"] == best and math.isclose(float(r["best_classical_rmse"]), classical[best])
                   for r in ok)
        assert sorted(int(r["rank"]) for r in ok) == list(range(1, len(ok) + 1))
        assert min(ok, key=lambda r: float(r["rmse"]))["rank"] == "1"
        # probabilistic scores only where the method has a variance
        assert by[d, m, "exact_gp"]["crps"] and not by[d, m, "interpolation"]["crps"]
    assert len(rows) == 2 * (3 + 4)          # per case: 3 methods + 4 floor rows

    import pymupdf
    with pymupdf.open(out / "benchmark.pdf") as doc:
        assert doc.page_count == 4 + 1        # heatmap, missing rate, probabilistic, cost, one page of 2 cases
        text = doc[0].get_text()
    assert "exact_gp" in text and "variational_gp" in text
    table = leaderboard.markdown(leaderboard.collect(out), budget="smoke")
    assert table.count("\n") == 1 + 2 and "| camera | circle | " in table and "interpolation" in table


def test_a_method_that_cannot_run_is_listed_with_its_reason(tmp_path):
    args = benchmark.parse_args(["--out", str(tmp_path), "--budget", "smoke"])
    for method in ("gpvae", "gan"):
        rec = benchmark.run_case(method, "camera", "circle", args, None)      # decided before any data is read
        assert rec["status"] == "n/a" and rec["reason"]
    rows = {r["method"]: r for r in leaderboard.collect(tmp_path)}
    assert rows["gpvae"]["status"] == "n/a" and "time series" in rows["gpvae"]["reason"] and rows["gpvae"]["rmse"] == ""
    table = leaderboard.markdown(list(rows.values()), budget="smoke")
    assert "| mask | gpvae | gan |" in table and "| camera | circle | n/a | n/a |" in table
    assert "- gan n/a on camera: fills a date from the other dates of a chip" in table


@pytest.mark.parametrize("argv, message", [
    (["--only", "nonsense"], "invalid choice"),
    (["--case", "synthetic/none", "--list"], "no case of the sweep file matches"),
])
def test_bad_selection_is_one_clear_line(argv, message):
    res = subprocess.run([sys.executable, "-m", "benchmarks.benchmark", *argv], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and message in res.stderr


def _case(out: Path, budget: str, method: str, rmse: float, floor: dict | None = None, n: int = 100) -> None:
    """A finished case with a hand-made metrics.json (RMSE only) under out/runs/<budget>/sst/clouds/<method>."""
    folder = out / "runs" / budget / "sst" / "clouds" / method
    record = {"metrics": {"overall": {"rmse": rmse, "n_scored": n}}, "units": ["K"], "cost": {"train_seconds": 1.0},
              "baselines": {k: {"overall": {"rmse": v, "n_scored": n}} for k, v in (floor or {}).items()}}
    metrics = folder / "results" / "run" / "metrics.json"
    write_json(metrics, record)
    write_json(folder / "case.json", {"method": method, "dataset": "sst", "mask": "clouds", "budget": budget,
                                      "status": "ok", "metrics": str(metrics.relative_to(out))})


def test_a_larger_budget_run_is_held_against_the_default_floor_on_the_same_cells(tmp_path):
    _case(tmp_path, "default", "baselines", 0.5, {"climatology": 0.9, "anomaly_interpolation": 0.4})
    _case(tmp_path, "default", "ginr", 0.6)
    _case(tmp_path, "large", "ginr", 0.3)
    rows = {(r["budget"], r["method"]): r for r in leaderboard.collect(tmp_path)}
    assert rows["default", "ginr"]["rank"] == 3 and rows["default", "anomaly_interpolation"]["rank"] == 1
    large = rows["large", "ginr"]
    assert large["best_classical"] == "anomaly_interpolation" and large["best_classical_rmse"] == 0.4
    assert math.isclose(large["vs_best_classical"], 0.3 / 0.4 - 1)
    _case(tmp_path, "large", "ginr", 0.3, {"interpolation": 0.35}, n=99)   # other cells: the floor of its own test
    last = leaderboard.collect(tmp_path)[-1]
    assert (last["best_classical"], last["best_classical_rmse"]) == ("interpolation", 0.35)


@pytest.mark.slow     # about 60 s: the engine's max_time and patience are in the fast suite (test_lightning)
def test_converge_budget_stops_on_case_minutes_or_patience_and_the_leaderboard_says_why(tmp_path):
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "data_generation.make_synthetic_field", "--out",
                    str(data / "synthetic_default.nc"), "--n_time", "40", "--ny", "16", "--nx", "16"], check=True,
                   capture_output=True)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('script = "benchmarks/benchmark.py"\n[grid]\nmethod = ["baselines", "pconv", "ginr"]\n'
                     'case = ["synthetic/random90_dynamic"]\n')
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "benchmarks.benchmark", "--sweep", str(sweep), "--budget", "converge",
                          "--case_minutes", "0.1", "--out", str(out), "--checkpoint_root", str(tmp_path / "ck"),
                          "--data_dir", str(data), "--device", "cpu", "--markdown"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["method"]: r for r in _rows(out / "leaderboard.csv") if r["budget"] == "converge"}
    for m in ("pconv", "ginr"):
        r = rows[m]
        assert r["status"] == "ok" and r["device"] == "cpu" and int(r["steps"]) > 0, r
        assert r["stop_reason"] in ("max_time", "patience"), r               # never the epoch count
        assert r["first_guess"] in ("climatology", "interpolation", "anomaly_interpolation", "time_interpolation",
                                    "space_time", "dineof")
        assert float(r["train_seconds"]) < 6 + 60                          # 0.1 min, then one last epoch and test
        assert float(r["rmse"]) <= 1.02 * float(r["best_classical_rmse"])    # epoch 0 (the first guess) is a candidate
    assert "| synthetic | random90_dynamic |" in res.stdout                 # the converge table, with the guess tags
