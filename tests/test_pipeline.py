"""End to end: the baselines' sweep through its sbatch scripts (no SLURM), the run/result contract,
and the real eofs SST field with land NaN."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from sweep_checks import assert_sweep_outputs

from baselines import test_baselines, train_baselines
from data_generation.make_synthetic_field import make_field
from gapfill import evaluate
from gapfill.problem import build_problem

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """Small synthetic field (120 x 24 x 24), the real sweep file, both sbatch scripts run with bash."""
    tmp = tmp_path_factory.mktemp("sweep")
    make_field(n_time=120, ny=24, nx=24, length_scale=4.0, seed=3).to_netcdf(tmp / "small.nc")
    env = dict(os.environ, PYTHON=sys.executable, GAPFILL_ROOT=str(ROOT),
               SWEEP_ARGS=f"--data_path {tmp / 'small.nc'} --checkpoint_dir {tmp / 'ckpt'} "
                          "--num_frames_train 90 --num_frames_valid 15 --max_rank 15",
               CHECKPOINT_DIR=str(tmp / "ckpt"), RESULTS_DIR=str(tmp / "results"), TEST_ARGS="--num_frames_test 6")
    env.pop("SLURM_ARRAY_TASK_ID", None)
    for script in ("baselines/submit_train_baselines.sh", "baselines/submit_test_baselines.sh"):
        res = subprocess.run(["bash", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return tmp


def test_sweep_writes_every_checkpoint_result_and_the_leaderboard(sweep_run):
    assert_sweep_outputs(sweep_run / "ckpt", sweep_run / "results", n_test=6, ny=24, nx=24)


def test_rerun_skips_finished_runs(sweep_run):
    run = next((sweep_run / "ckpt").glob("*dineof*"))
    before = (run / "best.npz").stat().st_mtime_ns
    train_baselines.main(["--data_path", str(sweep_run / "small.nc"), "--checkpoint_dir", str(sweep_run / "ckpt"),
                          "--method", "dineof", "--num_frames_train", "90", "--num_frames_valid", "15",
                          "--max_rank", "15"])
    assert (run / "best.npz").stat().st_mtime_ns == before


def test_model_never_sees_hidden_cells(sweep_run):
    cfg = json.loads(next((sweep_run / "ckpt").glob("*dineof*/config.json")).read_text())
    problem = build_problem(cfg["args"])
    model_view = problem.for_model().field.values
    test = problem.splits["test"]
    hidden = ~problem.observed[test]
    assert np.isnan(model_view[test][:, 0][hidden]).all()
    assert np.isfinite(model_view[problem.splits["train"]]).all()         # training frames are ground truth


def test_real_sst_with_land_runs_end_to_end_and_never_scores_land(tmp_path):
    import eofs.examples
    src = eofs.examples.example_data_path("sst_ndjfm_anom.nc")
    ck, res = tmp_path / "ck", tmp_path / "res"
    for method in ("anomaly_interpolation", "dineof"):
        train_baselines.main(["--data_path", src, "--method", method, "--prob_masking", "0.5", "--mask_type",
                              "dynamic", "--checkpoint_dir", str(ck), "--max_rank", "10"])
    records = evaluate.test_main("baselines", test_baselines.predict,
                                       ["--checkpoints", *map(str, sorted(ck.iterdir())), "--results_folder", str(res)])
    land = np.isnan(xr.open_dataset(src)["sst"].values[0])
    assert 0.1 < land.mean() < 0.3
    for rec in records:
        pred = xr.open_dataset(res / rec["run_name"] / "prediction.nc")
        assert (pred["valid"].values[:, 0][:, land] == 0).all()
        scored = (pred["valid"].values == 1) & (pred["observed"].values[:, None] == 0)
        assert not scored[:, 0][:, land].any()
        assert rec["metrics"]["overall"]["n_scored"] == scored.sum()
        assert rec["metrics"]["overall"]["rmse"] < rec["baselines"]["climatology"]["overall"]["rmse"]


def test_test_mask_options_override_the_training_mask(sweep_run, tmp_path):
    run = next((sweep_run / "ckpt").glob("*interpolation*"))
    rec = evaluate.test_main("baselines", test_baselines.predict, [
        "--checkpoints", str(run), "--results_folder", str(tmp_path), "--test_mask_type", "dynamic",
        "--test_mask_kind", "clouds", "--test_cloud_range", "0.3,0.4", "--num_frames_test", "5"])[0]
    obs = xr.open_dataset(tmp_path / rec["run_name"] / "prediction.nc")["observed"].values
    hidden = 1 - obs.mean(axis=(1, 2))
    assert obs.shape == (5, 24, 24) and np.all((hidden > 0.25) & (hidden < 0.45))
    assert not (obs[0] == obs[1]).all()                                   # dynamic: a new mask per frame
    assert rec["mask"]["label"].startswith("clouds dynamic")



@pytest.mark.slow                                       # full-field reconstructions
def test_default_field_full_size(tmp_path):
    """`make demo`'s setting at full size (365 x 64 x 64, 90% random fixed): the README's numbers."""
    from gapfill.floor import reconstruct_baseline as reconstruct
    from gapfill.metrics import rmse
    make_field().to_netcdf(tmp_path / "default.nc")
    problem = build_problem({"data_path": str(tmp_path / "default.nc"), "mask_kind": "random", "mask_type": "fixed",
                             "prob_masking": 0.9, "seed": 0})
    vis, test = problem.visible(), problem.splits["test"]
    score = {}
    for m in ("climatology", "interpolation", "dineof"):
        mean = reconstruct(m, vis, problem.splits["train"], test)[0]
        score[m] = rmse(problem.field.values[test], mean, problem.scored("test"))
    assert score["dineof"] < 0.3 * score["climatology"]
    assert 0.6 < score["interpolation"] < 0.9                             # README: 0.755 K
