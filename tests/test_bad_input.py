"""A hostile new user: every entry point meets missing, wrong and broken files and out-of-range options,
and answers with one line on stderr and exit code 2, leaving no run folder behind. A crafted pickle never
runs; one broken run never sinks a test job; test-time overrides are checked and kept apart.

A new method joins through its folder's method.toml (gapfill.registry): the options of its `[tests]` table."""
import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from additional_material import describe_dataset
from baselines import test_baselines, train_baselines
from data_generation import make_synthetic_field, prepare_real_datasets
from exact_gp_related import test_exact_gp, train_exact_gp
from gapfill import registry, submit, sweep
from gapfill.entry import run_cli
from gapfill.report import __main__ as report
from ginr import test_ginr, train_ginr
from pconv_inpainting import train_pconv

ROOT = Path(__file__).resolve().parents[1]

METHODS = list(registry.methods())          # every method folder's method.toml


def spec(method: str) -> tuple:
    """(train module, test module, train options a run needs besides --data_path, range-checked options it has)."""
    m = registry.get(method)
    return m.module("train"), m.module("test"), m.tests["bad_input"], tuple(m.tests["checked"])


# every option the parsers range-check, with values each must refuse
OPTION_CASES = [("--prob_masking", "0"), ("--prob_masking", "1"), ("--prob_masking", "1.5"), ("--prob_masking", "-0.1"),
                ("--prob_masking", "abc"), ("--max_iters", "0"), ("--max_iters", "-3"), ("--num_frames_train", "0"),
                ("--cloud_range", "0.6,0.2"), ("--device", "tpu"), ("--seed", "-1")]
METHOD_OPTION_CASES = [("--eval_every", "0"), ("--eval_every", "-1"), ("--batch_size", "-1")]
NO_GPU = not torch.cuda.is_available()


def bad_files(tmp: Path) -> dict[str, Path]:
    """The bad data files of the issue: missing, a directory, empty, a truncated NetCDF, a CSV named .nc."""
    tmp.mkdir(parents=True, exist_ok=True)
    good = tmp / "good.nc"
    xr.Dataset({"t": (("time", "lat", "lon"), np.ones((12, 4, 5), "f4"))},
               coords={"time": np.arange(12.0), "lat": np.arange(4.0), "lon": np.arange(5.0)}).to_netcdf(good)
    files = {"missing": tmp / "missing.nc", "directory": tmp / "folder.nc", "empty": tmp / "empty.nc",
             "truncated": tmp / "truncated.nc", "csv": tmp / "table.nc"}
    files["directory"].mkdir(exist_ok=True)
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["csv"].write_text("time,lat,lon,t\n0,0,0,1.5\n1,0,0,2.5\n")
    return files


def call(main, argv, capsys) -> tuple[int, list[str]]:
    """Run a script's main as its __main__ does; (exit code, non-empty stderr lines)."""
    capsys.readouterr()
    try:
        rc = run_cli(main, argv)
    except SystemExit as stop:                     # argparse: the parser's own one-line error
        rc = stop.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def assert_one_line(rc, err, *words):
    assert rc == 2, (rc, err)
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and all(w in err[0] for w in words), err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return bad_files(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A small good field (30 frames of 8 x 8)."""
    path = tmp_path_factory.mktemp("field") / "small.nc"
    make_synthetic_field.make_field(n_time=30, ny=8, nx=8, length_scale=3.0, seed=1).to_netcdf(path)
    return path


SPLIT = ["--num_frames_train", "20", "--num_frames_valid", "4"]


# ------------------------------------------------------------------ train scripts
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", ["missing", "directory", "empty", "truncated", "csv"])
def test_train_script_refuses_bad_data_file(method, case, files, tmp_path, capsys):
    train, _, extra, _ = spec(method)
    rc, err = call(train.main, ["--data_path", str(files[case]), *extra, "--checkpoint_dir", str(tmp_path / "ck")],
                   capsys)
    assert_one_line(rc, err, str(files[case]))
    assert not (tmp_path / "ck").exists()                                 # no run folder left behind


@pytest.mark.parametrize("method", METHODS)
def test_train_script_refuses_out_of_range_options(method, field, tmp_path, capsys):
    train, _, extra, own = spec(method)
    cases = OPTION_CASES + [c for c in METHOD_OPTION_CASES if c[0] in own]
    cases += [("--device", "cuda")] if NO_GPU else []
    for option, value in cases:
        rc, err = call(train.main, ["--data_path", str(field), *SPLIT, *extra, option, value,
                                    "--checkpoint_dir", str(tmp_path / "ck")], capsys)
        assert_one_line(rc, err, option if option != "--device" else "device")
    assert not (tmp_path / "ck").exists()


def test_checkpoint_dir_that_is_a_file_is_refused_before_the_work(field, tmp_path, capsys):
    blocker = tmp_path / "ck"
    blocker.write_text("not a folder")
    rc, err = call(train_baselines.main, ["--data_path", str(field), *SPLIT, "--method", "climatology",
                                          "--checkpoint_dir", str(blocker / "sub")], capsys)
    assert_one_line(rc, err, "--checkpoint_dir", "is a file")


def test_all_nan_band_in_training_frames_names_the_band(tmp_path, capsys):
    v = np.random.default_rng(0).normal(size=(30, 6, 6)).astype("f4")
    w = v.copy()
    w[:20] = np.nan                                                       # never observed in training
    xr.Dataset({"sst": (("time", "lat", "lon"), v), "chl": (("time", "lat", "lon"), w)},
               coords={"time": np.arange(30.0), "lat": np.arange(6.0), "lon": np.arange(6.0)}).to_netcdf(tmp_path / "f.nc")
    rc, err = call(train_baselines.main, ["--data_path", str(tmp_path / "f.nc"), *SPLIT, "--method", "climatology",
                                          "--checkpoint_dir", str(tmp_path / "ck")], capsys)
    assert_one_line(rc, err, "chl")
    assert not (tmp_path / "ck").exists()


# ------------------------------------------------------------------ test scripts
@pytest.fixture(scope="module")
def trained(field, tmp_path_factory):
    """Three finished baseline runs on the small field."""
    ck = tmp_path_factory.mktemp("ck")
    for m in ("climatology", "interpolation", "persistence"):
        assert train_baselines.main(["--data_path", str(field), *SPLIT, "--method", m, "--checkpoint_dir", str(ck),
                                     "--run_name", m]) == 0
    return ck


def broken_runs(trained: Path, tmp: Path) -> dict[str, Path]:
    """Run folders broken in each way a user meets: copies of a good run with one thing wrong."""
    import shutil
    out = {}
    for case in ("no_config", "empty_config", "truncated_config", "csv_config", "no_best", "truncated_best"):
        d = tmp / case
        shutil.copytree(trained / "climatology", d)
        cfg = d / "config.json"
        if case == "no_config":
            cfg.unlink()
        elif case == "empty_config":
            cfg.write_text("")
        elif case == "truncated_config":
            cfg.write_text(cfg.read_text()[:100])
        elif case == "csv_config":
            cfg.write_text("a,b\n1,2\n")
        elif case == "no_best":
            (d / "best.npz").unlink()
        else:
            (d / "best.npz").write_bytes((d / "best.npz").read_bytes()[:50])
        out[case] = d
    out["missing"] = tmp / "missing_run"
    out["a_file"] = tmp / "a_file"
    out["a_file"].write_text("x")
    return out


@pytest.mark.parametrize("method", METHODS)
def test_test_script_refuses_bad_run_folders(method, trained, tmp_path, capsys):
    _, test, _, _ = spec(method)
    words = {"no_config": "no run folder", "empty_config": "not a valid JSON", "truncated_config": "not a valid JSON",
             "csv_config": "not a valid JSON", "no_best": "before its first", "truncated_best": "cannot be read",
             "missing": "no such run folder", "a_file": "not a folder"}
    for case, run in broken_runs(trained, tmp_path / "runs").items():
        if method != "baselines" and case in ("no_best", "truncated_best"):
            continue                                  # a baseline's checkpoint is not this method's
        results = tmp_path / "res" / case
        rc, err = call(test.main, ["--checkpoints", str(run), "--results_folder", str(results)], capsys)
        assert rc == 2 and "Traceback" not in "".join(err), (case, err)
        assert any(words[case] in line for line in err), (case, err)
        if case not in ("no_best", "truncated_best"):
            assert not results.exists(), case         # refused before the results folder is made


@pytest.mark.parametrize("method", METHODS)
def test_test_script_refuses_out_of_range_options(method, trained, tmp_path, capsys):
    _, test, _, _ = spec(method)
    for option, value in [("--test_prob_masking", "1"), ("--test_prob_masking", "0"), ("--num_frames_test", "0"),
                          ("--num_frames_test", "-2"), ("--device", "tpu")] + ([("--device", "cuda")] if NO_GPU else []):
        rc, err = call(test.main, ["--checkpoints", str(trained / "climatology"), option, value,
                                   "--results_folder", str(tmp_path / "res")], capsys)
        assert_one_line(rc, err, option if option != "--device" else "device")
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "truncated", "csv"])
def test_test_time_data_path_must_be_a_readable_file(case, files, trained, tmp_path, capsys):
    rc, err = call(test_baselines.main, ["--checkpoints", str(trained / "climatology"), "--data_path",
                                         str(files[case]), "--results_folder", str(tmp_path / "res")], capsys)
    assert_one_line(rc, err, str(files[case]))
    assert not (tmp_path / "res").exists()


def test_crafted_pickle_checkpoint_is_refused_without_running_code(field, tmp_path, capsys):
    """An exact-GP run whose best.pt would create a file when unpickled: refused, and the file is never made."""
    assert train_exact_gp.main(["--data_path", str(field), *SPLIT, "--max_iters", "2", "--max_train_points", "100",
                                "--checkpoint_dir", str(tmp_path), "--run_name", "evil"]) == 0
    run, marker = tmp_path / "evil", tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    for write in (lambda p: p.write_bytes(pickle.dumps({"bands": Payload()})),       # a bare pickle
                  lambda p: torch.save({"bands": Payload()}, p)):                      # the same through torch.save
        write(run / "best.pt")
        rc, err = call(test_exact_gp.main, ["--checkpoints", str(run), "--results_folder", str(tmp_path / "res")],
                       capsys)
        assert rc == 2 and any("best.pt: checkpoint cannot be read" in line for line in err), err
        assert not marker.exists()


def test_test_job_over_three_runs_one_broken_writes_the_rest_summary_and_comparison(trained, tmp_path):
    """The sbatch test script, run with bash: one broken run and one stray folder among the checkpoints."""
    import shutil
    ck = tmp_path / "ck"
    shutil.copytree(trained, ck)
    (ck / "persistence" / "best.npz").write_bytes(b"PK\x03\x04 broken")
    (ck / "notes").mkdir()                                                  # a stray folder: skipped
    env = dict(os.environ, PYTHON=sys.executable, GAPFILL_ROOT=str(ROOT), CHECKPOINT_DIR=str(ck),
               RESULTS_DIR=str(tmp_path / "results"), TEST_ARGS="--num_frames_test 1")
    res = subprocess.run(["bash", "baselines/submit_test_baselines.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "persistence" in res.stderr and "skipped, not a run folder" in res.stdout
    out = tmp_path / "results" / "baselines"
    for name in ("climatology", "interpolation"):
        assert json.loads((out / name / "metrics.json").read_text())["metrics"]["overall"]["n_scored"] > 0
    assert not (out / "persistence").exists()
    rows = {r["run_name"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["persistence"]["status"] == "failed" and "cannot be read" in rows["persistence"]["error"]
    assert rows["climatology"]["status"] == rows["interpolation"]["status"] == "ok"
    board = list(csv.DictReader(open(tmp_path / "results" / "comparison" / "leaderboard.csv")))
    assert sorted(r["run_name"] for r in board) == ["climatology", "interpolation"]


def test_overrides_are_checked_and_kept_apart_and_partial_runs_marked(field, trained, tmp_path, capsys):
    res = tmp_path / "res"
    assert test_baselines.main(["--checkpoints", str(trained / "interpolation"), "--results_folder", str(res),
                                "--num_frames_test", "1"]) == 0
    standard = (res / "interpolation" / "metrics.json").read_bytes()
    # another test mask: its own folder, the standard results untouched
    rec = test_baselines.main(["--checkpoints", str(trained / "interpolation"), "--results_folder", str(res),
                               "--num_frames_test", "1", "--test_mask_kind", "clouds", "--test_mask_type", "dynamic"])
    assert rec == 0 and (res / "interpolation" / "metrics.json").read_bytes() == standard
    other = json.loads((res / "interpolation+test_clouds-dynamic-c0.2-0.6" / "metrics.json").read_text())
    assert other["trained_run"] == "interpolation" and other["mask"]["kind"] == "clouds"
    # the same grid in another file: accepted, in its own folder; another grid: refused
    same = tmp_path / "same_grid.nc"
    xr.open_dataset(field).load().to_netcdf(same)
    assert test_baselines.main(["--checkpoints", str(trained / "interpolation"), "--results_folder", str(res),
                                "--num_frames_test", "1", "--data_path", str(same)]) == 0
    assert (res / "interpolation+data_same_grid" / "metrics.json").exists()
    shifted = tmp_path / "shifted.nc"
    ds = xr.open_dataset(field).load()
    ds.assign_coords(lon=ds["lon"] + 0.5).to_netcdf(shifted)
    rc, err = call(test_baselines.main, ["--checkpoints", str(trained / "interpolation"), "--results_folder",
                                         str(res), "--data_path", str(shifted)], capsys)
    assert_one_line(rc, err, "not on the training grid", "x coordinates differ")
    small = tmp_path / "small_grid.nc"
    ds.isel(lat=slice(0, 6)).to_netcdf(small)
    rc, err = call(test_baselines.main, ["--checkpoints", str(trained / "interpolation"), "--results_folder",
                                         str(res), "--data_path", str(small)], capsys)
    assert_one_line(rc, err, "shape_yx [6, 8] (training: [8, 8])")
    # an unfinished run: its results say partial
    import shutil
    shutil.copytree(trained / "climatology", tmp_path / "unfinished")
    cfg = json.loads((tmp_path / "unfinished" / "config.json").read_text())
    (tmp_path / "unfinished" / "config.json").write_text(json.dumps(dict(cfg, finished=False, run_name="unfinished")))
    test_baselines.main(["--checkpoints", str(tmp_path / "unfinished"), "--results_folder", str(res / "p"),
                         "--num_frames_test", "1"])
    assert json.loads((res / "p" / "unfinished" / "metrics.json").read_text())["partial"] is True
    assert next(csv.DictReader(open(res / "p" / "summary.csv")))["status"] == "partial"


# ------------------------------------------------------------------ the other entry points
def test_report_refuses_bad_folders_and_skips_one_corrupt_metrics_file(trained, tmp_path, capsys):
    res = tmp_path / "res"
    for m in ("climatology", "interpolation"):
        test_baselines.main(["--checkpoints", str(trained / m), "--results_folder", str(res), "--num_frames_test", "1"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    for argv, words in [(["compare", "--results", str(tmp_path / "missing")], "no such results folder"),
                        (["compare", "--results", str(tmp_path / "empty")], "no metrics.json"),
                        (["compare", "--results", str(tmp_path / "a_file")], "no such results folder"),
                        (["run", "--run_dir", str(tmp_path / "missing")], "no such results folder"),
                        (["run", "--run_dir", str(tmp_path / "empty")], "does not exist"),
                        (["bogus"], "invalid choice")]:
        rc, err = call(report.main, argv, capsys)
        assert_one_line(rc, err, words)
    (res / "interpolation" / "prediction.nc").write_bytes(b"CDF\x01 cut")
    rc, err = call(report.main, ["run", "--run_dir", str(res / "interpolation")], capsys)
    assert_one_line(rc, err, "prediction.nc", "not a readable prediction file")
    (res / "interpolation" / "metrics.json").write_text("{ cut")
    rc, err = call(report.main, ["compare", "--results", str(res), "--out", str(tmp_path / "cmp")], capsys)
    assert rc == 2 and len(err) == 1 and "interpolation/metrics.json" in err[0]      # one line for the bad file
    board = list(csv.DictReader(open(tmp_path / "cmp" / "leaderboard.csv")))
    assert [r["run_name"] for r in board] == ["climatology"]                          # the rest is still written


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "truncated", "csv"])
def test_describe_dataset_refuses_bad_files(case, files, tmp_path, capsys):
    rc, err = call(describe_dataset.main, [str(files[case]), "--out", str(tmp_path / "d.png")], capsys)
    assert_one_line(rc, err, str(files[case]))


def test_sweep_and_submit_refuse_bad_sweep_files(tmp_path, capsys):
    bad = {"missing": tmp_path / "none.toml", "directory": tmp_path, "empty": tmp_path / "empty.toml",
           "truncated": tmp_path / "cut.toml", "csv": tmp_path / "table.toml", "grid": tmp_path / "grid.toml"}
    bad["empty"].write_text("")
    bad["truncated"].write_text('script = "baselines/train_baselines.py"\n[grid]\nmethod = ["a", ')
    bad["csv"].write_text("a,b\n1,2\n")
    bad["grid"].write_text('script = "x.py"\n[grid]\nmethod = []\n')
    for path in bad.values():
        rc, err = call(sweep.main, [str(path), "--count"], capsys)
        assert_one_line(rc, err, str(path))
        rc, err = call(submit.main, ["baselines", "--sweep", str(path)], capsys)
        assert_one_line(rc, err, str(path))
    good = ROOT / "baselines" / "sweep_baselines.toml"
    n = len(sweep.entries(sweep.load(good)))
    for argv, words in [([str(good), "--args", str(n)], "out of range"), ([str(good)], "one of the arguments"),
                        ([str(good), "--args", "x"], "invalid int")]:
        rc, err = call(sweep.main, argv, capsys)
        assert_one_line(rc, err, words)
    for argv, words in [(["no_such_method"], "no method 'no_such_method'"), (["../etc"], "no method '../etc'"),
                        (["baselines", "--poll", "0"], "--poll")]:
        rc, err = call(submit.main, argv, capsys)
        assert_one_line(rc, err, words)


def test_data_generators_refuse_bad_options_and_outputs(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    for argv, words in [(["--ny", "1"], "--ny"), (["--n_time", "0"], "--n_time"), (["--noise", "-1"], "--noise"),
                        (["--length_scale", "0"], "--length_scale"), (["--out", str(tmp_path)], "is a directory"),
                        (["--out", str(tmp_path / "a_file" / "f.nc")], "is a file")]:
        rc, err = call(make_synthetic_field.main, argv, capsys)
        assert_one_line(rc, err, words)
    for argv, words in [(["--image_size", "-1"], "--image_size"), (["--only", "nope"], "invalid choice"),
                        (["--out_dir", str(tmp_path / "a_file")], "is a file")]:
        rc, err = call(prepare_real_datasets.main, argv, capsys)
        assert_one_line(rc, err, words)
    assert not list(tmp_path.glob("*.nc"))


# ------------------------------------------------------------------ real processes: nothing but one line
SCRIPTS = [[registry.get(k).script("train"), registry.get(k).script("test")] for k in METHODS]


SLOW = pytest.mark.slow          # the same path as a case kept in `make test`; run by `make test-slow`


@pytest.mark.parametrize("argv, words", [
    *[pytest.param([train, "--data_path", "missing.nc"], "missing.nc: file does not exist",
                   marks=() if "baselines" in train else SLOW) for train, _ in SCRIPTS],  # pconv: below
    *[pytest.param([test, "--checkpoints", "tests"], "no run folder", marks=() if "exact_gp" in test else SLOW)
      for _, test in SCRIPTS],
    (["additional_material/describe_dataset.py", "missing.nc"], "missing.nc: file does not exist"),
    (["-m", "gapfill.report", "compare", "--results", "missing"], "no such results folder"),
    (["-m", "gapfill.sweep", "missing.toml", "--count"], "does not exist"),
    (["-m", "gapfill.submit", "baselines", "--sweep", "missing.toml"], "does not exist"),
    (["data_generation/make_synthetic_field.py", "--ny", "0"], "--ny"),
    (["data_generation/prepare_real_datasets.py", "--image_size", "-5"], "--image_size"),
])
def test_real_process_prints_one_line_and_exits_2(argv, words, tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    res = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(err) == 1 and words in err[0], res.stdout[-1000:] + res.stderr[-2000:]


# ------------------------------------------------------------------ runs that cannot go on, run names, local sweeps
# method -> the option that makes it diverge at `inf`, after options that keep it short
FG = ["--first_guess", "climatology"]                          # not auto: no DINEOF fits first
DIVERGE = [m for m in METHODS if "diverge" in registry.get(m).tests]    # the options before "inf"


@pytest.mark.parametrize("method", DIVERGE)
def test_diverged_run_ends_in_one_line_exit_3_and_is_marked_failed(method, field, tmp_path, capsys):
    train, _, extra, _ = spec(method)
    argv = ["--data_path", str(field), *SPLIT, *extra, "--checkpoint_dir", str(tmp_path), "--run_name", "r"]
    rc, err = call(train.main, [*argv, *registry.get(method).tests["diverge"], "inf"], capsys)
    assert rc == 3 and len(err) == 1 and "Traceback" not in err[0] and "try a smaller" in err[0], (rc, err)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["finished"] is False and cfg["failed"] and cfg["failed"] in err[0]
    if method == "exact_gp":                     # the corrected command under that name: told what failed
        rc, err = call(train.main, [*argv, "--lr", "0.01"], capsys)
        assert_one_line(rc, err, "holds a failed run", "--lr inf (now 0.01)")


def test_a_finite_but_huge_learning_rate_is_divergence_too(field, tmp_path, capsys):
    """--lr 1e10 in float32: the loss stays finite, the next Cholesky meets NaNs (linear_operator's NanError)."""
    train, _, extra, _ = spec("variational_gp")
    rc, err = call(train.main, ["--data_path", str(field), *SPLIT, *extra, "--precision", "32", "--lr", "1e10",
                                "--checkpoint_dir", str(tmp_path), "--run_name", "r"], capsys)
    assert rc == 3 and len(err) == 1 and "training diverged" in err[0] and "Traceback" not in err[0], (rc, err)


def test_several_nodes_without_srun_is_refused_instead_of_waiting_forever(field, tmp_path, capsys, monkeypatch):
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    train, _, extra, _ = spec("ginr")
    rc, err = call(train.main, ["--data_path", str(field), *SPLIT, *extra, *FG, "--num_nodes", "2",
                                "--checkpoint_dir", str(tmp_path / "ck"), "--run_name", "r"], capsys)
    assert_one_line(rc, err, "--num_nodes 2", "srun")
    assert not (tmp_path / "ck" / "r").exists()


def test_diverged_run_in_a_real_process_prints_one_line_and_exits_3(field, tmp_path):
    argv = ["exact_gp_related/train_exact_gp.py", "--data_path", str(field), *SPLIT, "--max_iters", "2", "--lr", "inf",
            "--checkpoint_dir", str(tmp_path), "--run_name", "r"]
    res = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env=dict(os.environ, PYTHONWARNINGS="ignore"))
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 3 and len(err) == 1 and "training diverged" in err[0], res.stdout[-1000:] + res.stderr[-2000:]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["failed"] in err[0]


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a\nb", "a b", "a/b", "..", "temp\u00e9", "x" * 201])
def test_run_name_must_be_plain_and_is_refused_before_any_folder(name, field, tmp_path, capsys):
    rc, err = call(train_baselines.main, ["--data_path", str(field), *SPLIT, "--method", "climatology",
                                          "--checkpoint_dir", str(tmp_path / "ck"), f"--run_name={name}"], capsys)
    assert_one_line(rc, err, "--run_name", "letters, digits and '._-'")
    assert not (tmp_path / "ck").exists()


def test_local_sweep_runs_every_entry_lists_the_failed_and_exits_1(field, tmp_path):
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text('script = "baselines/train_baselines.py"\n[fixed]\nnum_frames_train = 20\n'
                          'num_frames_valid = 4\n[grid]\nmethod = ["climatology", "nope", "persistence"]\n')
    env = dict(os.environ, PYTHON=sys.executable, GAPFILL_ROOT=str(ROOT), SWEEP_FILE=str(sweep_file),
               SWEEP_ARGS=f"--data_path {field} --checkpoint_dir {tmp_path / 'ck'}", PYTHONWARNINGS="ignore")
    env.pop("SLURM_ARRAY_TASK_ID", None)
    res = subprocess.run(["bash", "baselines/submit_train_baselines.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert res.stderr.splitlines()[-1] == "1 of 3 sweep entries failed: entry 1 (exit code 2); the others ran"
    done = sorted(p.name.split("_")[2] for p in (tmp_path / "ck").iterdir()
                  if json.loads((p / "config.json").read_text())["finished"])
    assert done == ["climatology", "persistence"]


def test_submit_without_sbatch_on_the_path_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))                 # a machine without SLURM
    rc, err = call(submit.main, ["baselines"], capsys)
    assert_one_line(rc, err, "sbatch not found on the PATH", "bash baselines/submit_train_baselines.sh")


# ------------------------------------------------------------------ issue 29: kinds 2-9, 11, 13-15
def folders(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()}


def test_outputs_that_cannot_be_written_are_one_line_and_leave_nothing(field, trained, tmp_path, capsys):
    long = "x" * 300                                # the folder check passes; the file system refuses the name
    assert call(test_baselines.main, ["--checkpoints", str(trained / "climatology"), "--results_folder",
                                      str(tmp_path / "res")], capsys)[0] == 0
    before = folders(tmp_path)
    rc, err = call(train_baselines.main, ["--data_path", str(field), *SPLIT, "--method", "climatology",
                                          "--checkpoint_dir", str(tmp_path / long)], capsys)
    assert_one_line(rc, err, "File name too long")
    rc, err = call(test_baselines.main, ["--checkpoints", str(trained / "climatology"), "--results_folder",
                                         str(tmp_path / long)], capsys)
    assert rc == 2 and "Traceback" not in "".join(err) and "File name too long" in err[0], err
    rc, err = call(report.main, ["compare", "--results", str(tmp_path / "res"), "--out", str(tmp_path / long)], capsys)
    assert_one_line(rc, err, "File name too long")
    for out, words in ((tmp_path / f"{long}.png", "File name too long"), (tmp_path / "d.xyz", "not a figure format"),
                       (tmp_path, "is a folder")):
        rc, err = call(describe_dataset.main, [str(field), "--out", str(out)], capsys)
        assert_one_line(rc, err, words)
    assert folders(tmp_path) == before


@pytest.mark.parametrize("method", [m for m in METHODS if m != "baselines"])
def test_another_methods_run_folder_names_the_method_and_its_script(method, trained, tmp_path, capsys):
    _, test, _, _ = spec(method)
    rc, err = call(test.main, ["--checkpoints", str(trained / "climatology"), "--results_folder", str(tmp_path / "r")],
                   capsys)
    assert_one_line(rc, err, "written by the baselines method", f"not by {method}", "baselines/test_baselines.py")
    assert not (tmp_path / "r").exists()


def test_gan_and_gpvae_tools_refuse_another_methods_run(trained, tmp_path, capsys):
    from gan_gapfill import create_stats
    from gpvae import generate
    rc, err = call(create_stats.main, ["--checkpoint_dir", str(trained / "climatology"), "--out_dir", str(tmp_path)],
                   capsys)
    assert_one_line(rc, err, "written by the baselines method", "create_stats")
    rc, err = call(generate.main, ["--checkpoint", str(trained / "climatology")], capsys)
    assert_one_line(rc, err, "written by the baselines method", "gpvae/generate.py")
    from gan_gapfill import plot_stats, plot_training
    rc, err = call(plot_training.main, ["--checkpoint_dir", str(trained / "climatology"), "--out",
                                        str(tmp_path / "t.pdf")], capsys)
    assert_one_line(rc, err, "written by the baselines method", "plot_training.py")
    (tmp_path / "stats_per_image.csv").write_text("a,b\n1,2\n")              # someone else's table
    (tmp_path / "stats_per_band.csv").write_text("chip,band,rmse\n0,red,x\n")
    rc, err = call(plot_stats.main, ["--stats_dir", str(tmp_path)], capsys)
    assert_one_line(rc, err, "stats_per_image.csv", "not written by create_stats.py")
    assert not (tmp_path / "t.pdf").exists() and not (tmp_path / "stats.pdf").exists()


def test_a_damaged_or_foreign_embedding_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    from gapfill import graphs
    g = graphs.grid_graph(np.ones((6, 7), bool), np.arange(6.0), np.arange(7.0))
    fresh = graphs.embed(g, 8, "combinatorial", tmp_path)
    (cache,) = tmp_path.glob("embedding_*.npz")
    other = graphs.embed(graphs.grid_graph(np.ones((7, 6), bool), np.arange(7.0), np.arange(6.0)), 8)
    for damage in (cache.read_bytes()[:200],                         # truncated: BadZipFile
                   lambda fh: np.savez(fh, values=fresh[0], vectors=fresh[1][:, ::-1], scale=fresh[2]),  # not eigenpairs
                   lambda fh: np.savez(fh, values=other[0], vectors=other[1][:5], scale=1.0)):             # wrong shapes
        if isinstance(damage, bytes):
            cache.write_bytes(damage)
        else:
            with open(cache, "wb") as fh:
                damage(fh)
        caplog.clear()
        vals, vecs, scale = graphs.embed(g, 8, "combinatorial", tmp_path)
        assert "rebuilding it" in caplog.text
        np.testing.assert_allclose(vecs, fresh[1], atol=1e-10)
        assert scale == fresh[2]
        with np.load(cache) as z:                                    # rewritten good
            np.testing.assert_allclose(z["vectors"], fresh[1], atol=1e-10)


def test_ginr_caches_in_its_cache_folder_and_survives_a_truncated_cache(field, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GAPFILL_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.nc").write_bytes(field.read_bytes())
    _, _, extra, _ = spec("ginr")
    argv = ["--data_path", str(data / "f.nc"), *SPLIT, *extra, *FG, "--checkpoint_dir", str(tmp_path / "ck")]
    assert call(train_ginr.main, argv, capsys)[0] == 0
    assert sorted(p.name for p in data.iterdir()) == ["f.nc"]              # nothing next to the data file
    (cache,) = (tmp_path / "cache" / "ginr").glob("embedding_*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    rc, err = call(test_ginr.main, ["--checkpoints", *map(str, (tmp_path / "ck").iterdir()), "--results_folder",
                                    str(tmp_path / "res")], capsys)
    assert rc == 0 and not err, err
    with np.load(cache) as z:
        assert z["vectors"].shape == (64, 8)


def test_pconv_patch_that_is_not_a_power_of_two_is_refused_by_the_parser(field, tmp_path, capsys):
    for value in ("3", "2", "12"):
        rc, err = call(train_pconv.main, ["--data_path", str(field), "--patch_size", value,
                                          "--checkpoint_dir", str(tmp_path)], capsys)
        assert rc == 2 and len(err) == 1 and "power of two" in err[0], err
    assert not any(tmp_path.iterdir())


REFUSED_LATE = [m for m in METHODS if "refused_late" in registry.get(m).tests]   # refused once the data is loaded


@pytest.mark.parametrize("method", REFUSED_LATE)
def test_a_refusal_leaves_no_folder_and_the_corrected_command_runs(method, field, tmp_path, capsys):
    train, _, extra, _ = spec(method)
    argv = ["--data_path", str(field), *SPLIT, *extra, *FG, "--checkpoint_dir", str(tmp_path / "ck" / "sub"),
            "--run_name", "r"]
    late = registry.get(method).tests["refused_late"]
    bad, words = late["options"], late["words"]
    rc, err = call(train.main, [*argv, *bad], capsys)
    assert_one_line(rc, err, words)
    assert not (tmp_path / "ck").exists()
    assert call(train.main, argv, capsys)[0] == 0            # the corrected command is not blocked by a leftover
    assert json.loads((tmp_path / "ck" / "sub" / "r" / "config.json").read_text())["finished"]


def test_overwrite_removes_only_the_runs_own_files_and_never_a_foreign_folder(field, tmp_path, capsys):
    argv = ["--data_path", str(field), *SPLIT, "--method", "climatology", "--checkpoint_dir", str(tmp_path)]
    assert call(train_baselines.main, [*argv, "--run_name", "r"], capsys)[0] == 0
    mine = {"last.txt": "my notes", ".notes.tmp": "draft", "best.csv": "table", "train_log.csv.bak": "old"}
    for name, text in mine.items():
        (tmp_path / "r" / name).write_text(text)
    assert call(train_baselines.main, [*argv, "--run_name", "r", "--overwrite"], capsys)[0] == 0
    assert all((tmp_path / "r" / n).read_text() == t for n, t in mine.items())
    assert json.loads((tmp_path / "r" / "config.json").read_text())["finished"]
    for foreign in ({"lr": 0.1}, {"method": "another tool", "epochs": 3}):
        d = tmp_path / f"other{len(foreign)}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps(foreign))
        (d / "best.pt").write_bytes(b"their weights")
        rc, err = call(train_baselines.main, [*argv, "--run_name", d.name, "--overwrite"], capsys)
        assert_one_line(rc, err, "not written by a train script of ours", "left alone")
        assert sorted(p.name for p in d.iterdir()) == ["best.pt", "config.json"]
        assert (d / "best.pt").read_bytes() == b"their weights"


def test_two_runs_with_one_name_tested_into_one_folder_keep_the_first(field, trained, tmp_path, capsys):
    other = tmp_path / "ck2"
    assert call(train_baselines.main, ["--data_path", str(field), *SPLIT, "--method", "persistence",
                                       "--checkpoint_dir", str(other), "--run_name", "climatology"], capsys)[0] == 0
    res = tmp_path / "res"
    rc, err = call(test_baselines.main, ["--checkpoints", str(trained / "climatology"), str(other / "climatology"),
                                         "--results_folder", str(res)], capsys)
    assert rc == 2 and "holds the results of another run with the same name" in err[0], err
    record = json.loads((res / "climatology" / "metrics.json").read_text())
    assert record["checkpoint"] == str((trained / "climatology").resolve())
    rows = list(csv.DictReader(open(res / "summary.csv")))
    assert sorted(r.get("status", "") for r in rows) == ["failed", "ok"], rows


@pytest.mark.parametrize("method", METHODS)
def test_one_frame_field_is_refused_at_the_start_or_trained_and_testable(method, tmp_path, capsys):
    path = tmp_path / "image.nc"
    xr.Dataset({"t": (("time", "lat", "lon"), np.random.default_rng(0).normal(size=(1, 8, 8)).astype("f4"))},
               coords={"time": [0.0], "lat": np.arange(8.0), "lon": np.arange(8.0)}).to_netcdf(path)
    train, test, extra, _ = spec(method)
    rc, err = call(train.main, ["--data_path", str(path), *extra, "--checkpoint_dir", str(tmp_path / "ck")], capsys)
    if rc == 2:                                       # refused: one line, nothing left
        assert len(err) == 1 and not (tmp_path / "ck").exists(), err
        return
    assert rc == 0, err
    (run,) = (tmp_path / "ck").iterdir()
    assert json.loads((run / "config.json").read_text())["finished"]
    rc, err = call(test.main, ["--checkpoints", str(run), "--results_folder", str(tmp_path / "res")], capsys)
    assert rc == 0, err                               # finished means testable


def test_data_changed_since_training_is_refused_at_test_and_named_at_training(field, tmp_path, capsys):
    path = tmp_path / "f.nc"
    path.write_bytes(field.read_bytes())
    argv = ["--data_path", str(path), *SPLIT, "--method", "climatology", "--checkpoint_dir", str(tmp_path / "ck"),
            "--run_name", "r"]
    assert call(train_baselines.main, argv, capsys)[0] == 0
    stat = path.stat()
    with xr.open_dataset(path) as ds:
        changed = ds.load()
    changed[next(iter(changed.data_vars))] += 1.0                   # same path, grid and size; other values
    changed.to_netcdf(tmp_path / "g.nc")
    (tmp_path / "g.nc").replace(path)
    os.utime(path, (stat.st_atime, stat.st_mtime))                  # even with the old modification time
    rc, err = call(test_baselines.main, ["--checkpoints", str(tmp_path / "ck" / "r"), "--results_folder",
                                         str(tmp_path / "res")], capsys)
    assert rc == 2 and "changed since r was trained" in err[0], err
    assert not (tmp_path / "res" / "r").exists()
    rc, err = call(train_baselines.main, argv, capsys)
    assert_one_line(rc, err, "data file content (sha256)")


def test_errors_after_heavy_imports_are_the_only_line_in_a_real_process(field, tmp_path):
    path = tmp_path / "image.nc"
    xr.Dataset({"t": (("time", "lat", "lon"), np.ones((1, 8, 8), "f4"))},
               coords={"time": [0.0], "lat": np.arange(8.0), "lon": np.arange(8.0)}).to_netcdf(path)
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a model")
    cases = ((["gan_gapfill/train_gan.py", "--data_path", str(path)], "--time_steps"),
             (["pconv_inpainting/train_pconv.py", "--data_path", str(field), *SPLIT, "--stage", "2",
               "--patch_size", "8", "--base_filters", "4", *FG, "--init_from", str(bad)], "bad.keras"))
    procs = [subprocess.Popen([sys.executable, *argv, "--checkpoint_dir", str(tmp_path / "ck")], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv, _ in cases]  # both at once
    for proc, (_, words) in zip(procs, cases, strict=True):
        _, stderr = proc.communicate(timeout=300)       # no PYTHONWARNINGS: warnings count
        err = [line for line in stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(err) == 1 and words in err[0], stderr[-3000:]
    assert not (tmp_path / "ck").exists()


def test_a_leading_axis_without_attributes_is_taken_as_time(tmp_path, capsys):
    path = tmp_path / "Tstorm.cdf"                    # built like NCL's: t(timestep, lat, lon), timestep bare
    ds = xr.Dataset({"t": (("timestep", "lat", "lon"), np.random.default_rng(0).normal(size=(30, 8, 8)).astype("f4"),
                           {"units": "K"})},
                    coords={"timestep": np.arange(30, dtype="i4"),
                            "lat": ("lat", np.linspace(20, 50, 8), {"units": "degrees_north"}),
                            "lon": ("lon", np.linspace(250, 290, 8), {"units": "degrees_east"})})
    ds.to_netcdf(path)
    with xr.open_dataset(path) as check:
        assert check["timestep"].attrs == {}
    capsys.readouterr()
    rc = run_cli(train_baselines.main, ["--data_path", str(path), *SPLIT, "--method", "climatology",
                                        "--checkpoint_dir", str(tmp_path / "ck")])
    out, err = capsys.readouterr()
    assert rc == 0 and not err.strip(), err
    assert "WARNING" in out and "taking its leading axis 'timestep', which increases, as time" in out
    ds.assign_coords(timestep=np.arange(30)[::-1]).to_netcdf(tmp_path / "backwards.nc")  # not a time axis: refused
    rc, err = call(train_baselines.main, ["--data_path", str(tmp_path / "backwards.nc"), "--method", "climatology",
                                          "--checkpoint_dir", str(tmp_path / "ck2")], capsys)
    assert_one_line(rc, err, "no variable with a time dimension")


def test_blas_and_torch_threads_are_capped_at_the_jobs_cores():
    code = ("from gapfill.entry import run_cli; import torch; from threadpoolctl import threadpool_info; "
            "run_cli(lambda a: 0); print([i['num_threads'] for i in threadpool_info()], torch.get_num_threads())")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, SLURM_CPUS_PER_TASK="1"))
    pools, torch_threads = eval(res.stdout.strip().splitlines()[-1].replace("] ", "], "))
    assert pools and set(pools) == {1} and torch_threads == 1, res.stdout + res.stderr
