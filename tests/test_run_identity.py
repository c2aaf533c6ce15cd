"""The Run's identity and safety: a run name means one set of options and one data file; a run folder is
trained by one process at a time; --overwrite removes only our files; --run_name is one folder name;
files honour the umask; non-ASCII dataset names; W&B offline files under the run folder."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_checks import signal_at_check

from baselines import train_baselines
from data_generation.make_synthetic_field import make_field
from exact_gp_related import train_exact_gp
from gapfill import files, identity, runs

ROOT = Path(__file__).resolve().parents[1]
GP = ["--timekernel", "rbf", "--spacekernel", "rbf", "--num_frames_train", "20", "--num_frames_valid", "4",
      "--max_iters", "4", "--eval_every", "2", "--max_train_points", "200"]


@pytest.fixture
def field(tmp_path):
    make_field(n_time=30, ny=10, nx=10, length_scale=3.0, seed=2).to_netcdf(tmp_path / "f.nc")
    return tmp_path / "f.nc"


def gp(field, ck, *extra):
    return runs.run_cli(train_exact_gp.main, ["--data_path", str(field), *GP, "--checkpoint_dir", str(ck),
                                              "--run_name", "r", *extra])


def test_changed_options_or_data_under_the_same_name_are_refused_with_what_differs(field, tmp_path, capsys):
    ck = tmp_path / "ck"
    assert gp(field, ck) == 0
    cfg = json.loads((ck / "r" / "config.json").read_text())
    assert cfg["finished"] and len(cfg["identity"]["hash"]) == 16
    assert gp(field, ck) == 0 and "already finished" in capsys.readouterr().out               # same options: skipped
    for extra, named in ((["--lr", "0.1"], "--lr 0.05 (now 0.1)"),
                         (["--num_frames_valid", "5"], "--num_frames_valid 4 (now 5)")):
        capsys.readouterr()
        rc = runs.run_cli(train_exact_gp.main, ["--data_path", str(field), *GP, *extra, "--checkpoint_dir",
                                                str(ck), "--run_name", "r"])          # the last value wins
        out = capsys.readouterr().err                                        # errors go to stderr
        assert rc == 2 and named in out and "--overwrite" in out
    other = tmp_path / "other" / "f.nc"                                      # same file name, other folder
    other.parent.mkdir()
    shutil.copy(field, other)
    capsys.readouterr()
    assert gp(other, ck) == 2 and "data file path" in capsys.readouterr().err
    os.utime(field, (1e9, 1e9))                                              # touched, or copied: the same data
    assert gp(field, ck) == 0 and "already finished" in capsys.readouterr().out
    make_field(n_time=30, ny=10, nx=10, length_scale=3.0, seed=3).to_netcdf(field)   # rewritten: other values
    capsys.readouterr()
    assert gp(field, ck) == 2 and "data file content (sha256)" in capsys.readouterr().err
    assert gp(field, ck, "--overwrite") == 0                                 # asked for: trained anew
    data = json.loads((ck / "r" / "config.json").read_text())["identity"]["data"]
    assert data["sha256"] == files.file_digest(field) != "" and data["size"] == field.stat().st_size


def test_an_interrupted_run_resumes_only_with_its_own_options(field, tmp_path, monkeypatch, capsys):
    ck = tmp_path / "ck"
    signal_at_check(monkeypatch, 1)
    assert gp(field, ck) == runs.EXIT_RESUME
    monkeypatch.undo()
    capsys.readouterr()
    assert gp(field, ck, "--lr", "0.2") == 2
    assert "unfinished run with other options: --lr 0.05 (now 0.2)" in capsys.readouterr().err
    assert gp(field, ck) == 0                                                # the same command resumes
    cfg = json.loads((ck / "r" / "config.json").read_text())
    assert cfg["finished"] and cfg["restarts"] == 1


def test_two_identical_commands_at_once_leave_one_complete_log(field, tmp_path):
    cmd = [sys.executable, str(ROOT / "exact_gp_related" / "train_exact_gp.py"), "--data_path", str(field),
           *GP, "--max_iters", "20", "--eval_every", "10", "--checkpoint_dir", str(tmp_path / "ck"), "--run_name", "r"]
    env = dict(os.environ, WANDB_MODE="disabled")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    # the second either found the folder locked (exit 2) or, if it came after the end, the run finished
    assert codes in ([0, 2], [0, 0]), outs
    if codes == [0, 2]:
        assert any("is being trained by another process" in o for o in outs)
    steps = [line.split(",")[0] for line in (tmp_path / "ck" / "r" / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [str(i) for i in range(1, 21)]                           # every step once, in order


def test_overwrite_leaves_foreign_files_and_folders_without_our_config(field, tmp_path, capsys):
    ck = tmp_path / "ck"
    assert gp(field, ck) == 0
    (ck / "r" / "notes.txt").write_text("mine")
    assert gp(field, ck, "--overwrite") == 0
    assert (ck / "r" / "notes.txt").read_text() == "mine" and (ck / "r" / "best.pt").exists()
    stranger = ck / "s"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("years of work")
    capsys.readouterr()
    assert gp(field, ck, "--run_name", "s", "--overwrite") == 2
    assert "not a run folder" in capsys.readouterr().err
    assert sorted(p.name for p in stranger.iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "."])
def test_run_name_is_one_folder_name(field, tmp_path, capsys, bad):
    assert gp(field, tmp_path / "ck", "--run_name", bad) == 2
    assert "one folder name" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("umask, mode", [(0o002, 0o664), (0o077, 0o600)])
def test_written_files_honour_the_umask(field, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert runs.run_cli(train_baselines.main, ["--data_path", str(field), "--method", "climatology",
                                                   "--checkpoint_dir", str(tmp_path / "ck")]) == 0
    finally:
        os.umask(old)
    run = next((tmp_path / "ck").iterdir())
    for name in ("config.json", "best.npz", "last.npz", "train_log.csv"):
        assert (run / name).stat().st_mode & 0o777 == mode, name


def test_non_ascii_dataset_names_give_distinct_readable_run_names():
    assert identity.make_run_name("m", "données", {}) == "m_donnees"
    a, b = identity.make_run_name("m", "温度", {}), identity.make_run_name("m", "気温", {})
    assert a != b and a.startswith("m_data") and len(a) == len("m_data") + 8


def test_wandb_offline_writes_under_the_run_folder(field, tmp_path):
    assert gp(field, tmp_path / "ck", "--wandb_mode", "offline") == 0
    offline = list((tmp_path / "ck" / "r" / "wandb").glob("offline-run-*/*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0


def test_options_added_since_at_their_defaults_are_the_same_run():
    old = {"options": {"lr": 0.05}, "data": {"path": "f.nc", "size": 1, "mtime": 2}}
    new = {"options": {"lr": 0.05, "level": None, "all_frames": False}, "data": old["data"]}
    assert identity.identity_diff(old, new) == []
    new["options"]["all_frames"] = True
    assert identity.identity_diff(old, new) == ["--all_frames None (now True)"]
