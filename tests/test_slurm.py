"""The sbatch scripts on a real single-node SLURM cluster (tests/slurm/): the baselines' sweep as a job
array with the test job after it (afterok), a failing task that cancels the test job, and a DINEOF run
that is signalled mid-search, requeues itself and ends with the same result as an uninterrupted run."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scores import check_rmse
from sweep_checks import assert_sweep_outputs, job_env, pdf_pages

from baselines import test_baselines
from data_generation.make_synthetic_field import make_field
from gapfill import evaluate, submit

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
SPLIT = "--num_frames_train 60 --num_frames_valid 10"


def run_submit(tmp: Path, env: dict, *argv: str, method: str = "baselines") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gapfill.submit", method, "--wait", "--poll", "0.5",
                           "--timeout", "400", *argv], cwd=tmp, env=env, capture_output=True, text=True, timeout=500)


@pytest.fixture(scope="module")
def small_field(tmp_path_factory):
    path = tmp_path_factory.mktemp("slurm_data") / "small.nc"
    make_field(n_time=80, ny=16, nx=16, length_scale=4.0, seed=4).to_netcdf(path)
    return path


def test_sweep_as_job_array_then_test_job_after_it(slurm_cluster, small_field, tmp_path):
    env = job_env(tmp_path, SWEEP_ARGS=f"--data_path {small_field} --checkpoint_dir {tmp_path / 'ckpt'} "
                                       f"{SPLIT} --max_rank 10",
                  CHECKPOINT_DIR=str(tmp_path / "ckpt"), RESULTS_DIR=str(tmp_path / "results"),
                  TEST_ARGS="--num_frames_test 4")
    res = run_submit(tmp_path, env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "all 5 training task(s) and the test job completed" in out
    train_logs = sorted((tmp_path / "logs").glob("train_baselines_*_*.out"))   # %x_%A_%a: one per task
    array_id = train_logs[0].stem.split("_")[2]
    assert [p.name for p in train_logs] == [f"train_baselines_{array_id}_{i}.out" for i in range(5)]
    for i, p in enumerate(train_logs):
        assert f"[job {array_id}_{i}]" in p.read_text() and "wrote" in p.read_text()
    test_log = next((tmp_path / "logs").glob("test_baselines_*.out")).read_text()
    assert "leaderboard" in test_log.lower()
    assert_sweep_outputs(tmp_path / "ckpt", tmp_path / "results", n_test=4, ny=16, nx=16)


@pytest.mark.parametrize("short, extra_pages", [
    pytest.param("exact_gp", 0, marks=pytest.mark.slow),
    pytest.param("variational_gp", 0, marks=pytest.mark.slow),
    pytest.param("pconv", 3, marks=pytest.mark.slow),   # the shared shell: the baselines above
    pytest.param("gpvae", 3, marks=pytest.mark.slow),
    pytest.param("ginr", 2, marks=pytest.mark.slow),
    pytest.param("gan", 0, marks=pytest.mark.slow)])
def test_gpu_method_sweep_as_job_array_then_test_job(slurm_cluster, tmp_path, short, extra_pages):
    """A method's own sbatch scripts with a 2-entry sweep file (tests/sweeps/); they ask for --gres=gpu:1
    (the test node has one fake GPU; torch runs on the CPU)."""
    make_field(n_time=30, ny=32, nx=32, length_scale=3.0, seed=2).to_netcdf(tmp_path / "f.nc")
    env = job_env(tmp_path, SWEEP_ARGS=f"--data_path {tmp_path / 'f.nc'} --checkpoint_dir {tmp_path / 'ckpt'}",
                  CHECKPOINT_DIR=str(tmp_path / "ckpt"), RESULTS_DIR=str(tmp_path / "results"),
                  TEST_ARGS="--num_frames_test 2")
    res = run_submit(tmp_path, env, "--sweep", str(ROOT / "tests" / "sweeps" / f"{short}_small.toml"), method=short)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = sorted((tmp_path / "ckpt").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "config.json").read_text())["finished"]
        m = json.loads((tmp_path / "results" / short / run.name / "metrics.json").read_text())
        check_rmse(m, tmp_path / "results" / short / run.name / "prediction.nc", within=1.2)
        assert pdf_pages(tmp_path / "results" / short / run.name / f"{run.name}.pdf") == 2 + 1 + extra_pages
    board = (tmp_path / "results" / "comparison" / "leaderboard.csv").read_text()
    assert sum(r.name in board for r in runs) == 2
    log = next((tmp_path / "logs").glob(f"train_{short}_*_0.out")).read_text()
    assert "cpus 4 gpus 0" in log                                              # the job got its GPU


def test_failing_task_cancels_the_test_job_with_a_clear_line(slurm_cluster, small_field, tmp_path):
    sweep = tmp_path / "bad.toml"
    sweep.write_text(f'script = "baselines/train_baselines.py"\n[fixed]\nmethod = "climatology"\n'
                     f'checkpoint_dir = "{tmp_path / "ckpt"}"\n'
                     f'[grid]\ndata_path = ["{small_field}", "{tmp_path / "missing.nc"}"]\n')
    env = job_env(tmp_path, SWEEP_ARGS=SPLIT, RESULTS_DIR=str(tmp_path / "results"),
                  CHECKPOINT_DIR=str(tmp_path / "ckpt"))
    t0 = time.time()
    res = run_submit(tmp_path, env, "--sweep", str(sweep))
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    assert time.time() - t0 < 60                                            # cancelled, not left pending
    assert "_1 FAILED (exit code 2:0)" in out and "missing.nc: file does not exist" in out
    assert "cancelled: 1 training task(s) failed, so afterok can never be satisfied" in out
    assert not list((tmp_path / "logs").glob("test_baselines_*.out"))     # the test job never ran
    assert len(list((tmp_path / "ckpt").iterdir())) == 1                   # the good task still finished


# slow: tests/test_lightning_slurm.py requeues a job-array task in the fast suite
@pytest.mark.slow
def test_signal_requeue_and_resume_give_the_uninterrupted_result(slurm_cluster, tmp_path):
    """Two identical DINEOF runs side by side (one CPU each); one gets SLURM's warning signal after two
    ranks of its search."""
    make_field(n_time=300, ny=48, nx=48, length_scale=4.0, seed=5).to_netcdf(tmp_path / "field.nc")
    sweep = tmp_path / "dineof.toml"
    sweep.write_text(f'script = "baselines/train_baselines.py"\n[fixed]\nmethod = "dineof"\n'
                     f'data_path = "{tmp_path / "field.nc"}"\nmax_rank = 40\n'
                     f'num_frames_train = 250\nnum_frames_valid = 25\n')
    jobs = {}
    for name in ("plain", "signalled"):
        env = job_env(tmp_path, SWEEP_FILE=str(sweep), SWEEP_ARGS=f"--checkpoint_dir {tmp_path / name}")
        jobs[name] = submit.sbatch(ROOT / "baselines" / "submit_train_baselines.sh", "--array=0",
                                   "--cpus-per-task=1", f"--job-name=train_{name}", env=env, cwd=tmp_path)
    log_csv = tmp_path / "signalled"
    deadline = time.time() + 120
    while time.time() < deadline:                     # wait until two ranks of the search are done
        rows = [ln for p in log_csv.glob("*/train_log.csv") for ln in p.read_text().splitlines()[1:]]
        if len(rows) >= 2:
            break
        time.sleep(0.1)
    assert len(rows) >= 2, "the signalled run never started its rank search"
    sig = subprocess.run(["scancel", "--batch", "--signal=USR1", f"{jobs['signalled']}_0"],
                         capture_output=True, text=True)
    assert sig.returncode == 0, sig.stderr
    states = submit.wait(list(jobs.values()), poll=0.5, timeout=300)
    assert {s["JobState"] for s in states.values()} == {"COMPLETED"}
    assert states[f"{jobs['signalled']}_0"]["Restarts"] == "1" and states[f"{jobs['plain']}_0"]["Restarts"] == "0"

    slurm_log = (tmp_path / "logs" / f"train_signalled_{jobs['signalled']}_0.out").read_text()
    assert "received SIGUSR1" in slurm_log and "requeued SLURM job" in slurm_log
    assert "resuming the rank search after rank" in slurm_log
    run = {name: next((tmp_path / name).iterdir()) for name in jobs}
    cfg = {name: json.loads((run[name] / "config.json").read_text()) for name in jobs}
    assert cfg["signalled"]["restarts"] == 1 and "restarts" not in cfg["plain"]
    ranks = {name: [ln.split(",")[0] for ln in (run[name] / "train_log.csv").read_text().splitlines()[1:]]
             for name in jobs}
    assert ranks["signalled"] == ranks["plain"] and len(set(ranks["plain"])) == len(ranks["plain"]) > 4
    assert cfg["signalled"]["rank"] == cfg["plain"]["rank"]
    assert cfg["signalled"]["valid_rmse"] == pytest.approx(cfg["plain"]["valid_rmse"], rel=1e-9)
    a, b = [evaluate.test_main("baselines", test_baselines.predict, [
        "--checkpoints", str(run[name]), "--results_folder", str(tmp_path / "res" / name),
        "--num_frames_test", "3"])[0]["metrics"]["overall"]
        for name in jobs]
    for key in ("rmse", "mae", "r2", "crps", "n_scored"):
        assert a[key] == pytest.approx(b[key], rel=1e-9), key
