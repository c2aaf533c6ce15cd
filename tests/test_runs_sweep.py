"""gapfill.runs, gapfill.identity and gapfill.sweep: names, atomic files, resume states, devices, sweep entries."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gapfill import entry, files, identity, runs, sweep, system

ROOT = Path(__file__).resolve().parents[1]


def test_run_name_is_stable_and_safe():
    a = identity.make_run_name("exact_gp", "synthetic default", {"t": "matern", "p": 0.9, "range": (0.2, 0.6)})
    assert a == "exact_gp_syntheticdefault_tmatern_p0.9_range0.2-0.6"
    assert a == identity.make_run_name("exact_gp", "synthetic default", {"t": "matern", "p": 0.9, "range": (0.2, 0.6)})


def test_mask_tag_names_the_parameter_that_matters():
    from gapfill.cli import mask_tag
    base = {"mask_type": "fixed", "prob_masking": 0.9, "radius": None, "cloud_range": (0.2, 0.6)}
    assert mask_tag(dict(base, mask_kind="random")) == "random-fixed-p0.9"
    assert mask_tag(dict(base, mask_kind="clouds", mask_type="dynamic")) == "clouds-dynamic-c0.2-0.6"
    assert mask_tag(dict(base, mask_kind="circle", radius=10.0)) == "circle-fixed-r10"


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "last.npz"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_device_resolution_on_cpu_machine():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this test describes a machine without GPU")
    assert system.resolve_device("auto") == "cpu" and system.resolve_device("cpu", 3) == "cpu"
    with pytest.raises(ValueError, match="GPU 0 but 0 GPU"):
        system.resolve_device("cuda")
    with pytest.raises(ValueError, match="not one of"):
        system.resolve_device("tpu")


def test_csv_log_appends_across_restarts(tmp_path):
    runs.CsvLog(tmp_path / "log.csv", ["it", "loss"]).write(it=1, loss=0.5)
    runs.CsvLog(tmp_path / "log.csv", ["it", "loss"]).write(it=2, loss=0.25)
    assert (tmp_path / "log.csv").read_text().split() == ["it,loss", "1,0.5", "2,0.25"]


def test_sweep_grid_product_and_includes(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('script = "x.py"\n[fixed]\nseed = 1\noverwrite = true\n'
                 '[grid]\nkernel = ["rbf", "matern"]\nprob_masking = [0.5, 0.9]\n'
                 '[[include]]\nkernel = "periodic"\nvariable = ["a", "b"]\n')
    items = sweep.entries(sweep.load(f))
    assert len(items) == 5
    assert items[1] == {"seed": 1, "overwrite": True, "kernel": "rbf", "prob_masking": 0.9}
    assert sweep.to_argv(items[4]) == ["--seed", "1", "--overwrite", "--kernel", "periodic", "--variable", "a", "b"]
    out = subprocess.run([sys.executable, "-m", "gapfill.sweep", str(f), "--args", "3"], capture_output=True, text=True)
    assert out.stdout.split() == ["--seed", "1", "--overwrite", "--kernel", "matern", "--prob_masking", "0.9"]
    bad = subprocess.run([sys.executable, "-m", "gapfill.sweep", str(f), "--args", "9"], capture_output=True, text=True)
    assert bad.returncode != 0 and "out of range" in bad.stderr


@pytest.mark.parametrize("script", sorted(ROOT.glob("*/submit_train_*.sh")), ids=lambda p: p.name)
def test_sbatch_array_matches_sweep_and_has_no_user_paths(script):
    text = script.read_text()
    sweep_file = re.search(r"SWEEP_FILE:-([^}]+)}", text).group(1)
    n = len(sweep.entries(sweep.load(ROOT / sweep_file)))
    assert f"#SBATCH --array=0-{n - 1}\n" in text
    for directive in ("--output=logs/%x_%A_%a.out", "--signal=B:USR1@90", "--requeue"):
        assert f"#SBATCH {directive}" in text
    assert not re.search(r"#SBATCH --(account|partition)|/home/|/scratch/", text)


def test_preemption_flag_set_by_usr1_and_no_requeue_outside_slurm(monkeypatch):
    import os
    import signal
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    old = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        p = runs.Preemption()
        assert not p.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert p.requested
        assert runs.Preemption.requeue() is False
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_preempted_run_requeues_only_on_usr1_under_slurm(monkeypatch):
    calls = []
    monkeypatch.setattr(entry.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or
                        entry.subprocess.CompletedProcess(cmd, 0, "", ""))
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")

    def stopped(sig):
        def main(argv):
            p = runs.Preemption.__new__(runs.Preemption)      # no handlers installed in the test process
            p.requested = sig
            saved = []
            p.check(lambda: saved.append(sig))
            return 0 if not saved else 99                      # not reached: check raises after saving
        return main

    assert runs.run_cli(stopped("SIGUSR1")) == 0 and calls == [["scontrol", "requeue", "40_3"]]
    assert runs.run_cli(stopped("SIGTERM")) == runs.EXIT_RESUME and len(calls) == 1   # scancel stays a cancel
    monkeypatch.delenv("SLURM_JOB_ID")
    assert runs.run_cli(stopped("SIGUSR1")) == runs.EXIT_RESUME and len(calls) == 1   # no SLURM: rerun resumes


def test_peak_memory_is_the_programs_own_not_its_parents():
    """A run started from a large process (pytest, a notebook) must not report the parent's memory, which
    ru_maxrss carries over a fork."""
    big = np.ones(300 * 2**20 // 8)                                        # 300 MB held by this process
    code = ("import numpy as np; from gapfill.system import peak_memory_mb; a = peak_memory_mb(); "
            "b = np.ones(200 * 2**20 // 8); print(a, peak_memory_mb())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after = map(float, out)
    assert before < 150 and 190 < after - before < 260, (before, after)
    assert big.sum() > 0
