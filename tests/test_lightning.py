"""The Lightning engine (gapfill/lightning.py) with a tiny per-pixel MLP (tests/helpers/lightning_reference.py):
checkpoints by hidden-cell validation RMSE, a finished run skipped, a stopped run resumed to the same weights,
W&B offline files under the run, and best.ckpt loaded without running code."""
import csv
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import lightning_reference as ref  # noqa: E402
from sweep_checks import logged_values  # noqa: E402

from data_generation.make_synthetic_field import make_field  # noqa: E402
from gapfill import lightning, runs  # noqa: E402
from gapfill.data import Normalizer  # noqa: E402
from gapfill.errors import DataError  # noqa: E402
from gapfill.metrics import rmse  # noqa: E402
from gapfill.problem import build_problem  # noqa: E402


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    path = tmp_path_factory.mktemp("lt") / "f.nc"
    make_field(n_time=40, ny=16, nx=16, length_scale=3.0, seed=4).to_netcdf(path)
    return path


def argv(field, ck, *extra):
    return ["--data_path", str(field), "--num_frames_train", "28", "--num_frames_valid", "6", "--checkpoint_dir",
            str(ck), "--max_epochs", "4", "--batch_size", "128", "--log_level", "WARNING", *extra]


def rows(run):
    with open(run / "train_log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_checkpoints_log_skip_and_loading_best(field, tmp_path):
    assert ref.main(argv(field, tmp_path)) == 0
    run = next(tmp_path.iterdir())
    log_rows = rows(run)
    assert [r["epoch"] for r in log_rows] == ["0", "1", "2", "3", "4"]          # 0: the untrained network
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["finished"] and cfg["best_valid"] == pytest.approx(min(float(r["valid_rmse"]) for r in log_rows), rel=1e-6)
    assert (run / "best.ckpt").exists() and (run / "last.ckpt").exists()
    before = (run / "last.ckpt").stat().st_mtime_ns
    assert ref.main(argv(field, tmp_path)) == 0                                  # finished: skipped
    assert (run / "last.ckpt").stat().st_mtime_ns == before
    # best.ckpt reproduces the best validation score, scored independently of the Run
    problem = build_problem(cfg["args"])
    normalizer = Normalizer.fit(problem.visible()[problem.splits["train"]])
    module = lightning.load_module(ref.PixelMLP(problem.for_model(), normalizer), run, "best")
    vs = problem.splits["valid"]
    mean, _ = module.reconstruct(range(vs.start, vs.stop))
    assert rmse(problem.field.values[vs], mean, problem.scored("valid")) == pytest.approx(cfg["best_valid"], rel=1e-6)


def test_a_stopped_run_resumes_from_last_to_the_same_weights(field, tmp_path, sigterm_after_epoch):
    assert ref.main(argv(field, tmp_path / "plain", "--run_name", "r")) == 0
    sigterm_after_epoch(2)                                       # a real SIGTERM (scancel), at the end of epoch 2
    assert runs.run_cli(ref.main, argv(field, tmp_path / "cut", "--run_name", "r")) == runs.EXIT_RESUME
    assert [r["epoch"] for r in rows(tmp_path / "cut" / "r")] == ["0", "1", "2"]
    sigterm_after_epoch(None)
    assert ref.main(argv(field, tmp_path / "cut", "--run_name", "r")) == 0       # the requeued run
    a, b = (torch.load(tmp_path / d / "r" / "last.ckpt", weights_only=True) for d in ("plain", "cut"))
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], atol=1e-6, rtol=0)
    ra, rb = rows(tmp_path / "plain" / "r"), rows(tmp_path / "cut" / "r")
    assert [r["epoch"] for r in rb] == ["0", "1", "2", "3", "4"]                  # each epoch once
    np.testing.assert_allclose([float(r["valid_rmse"]) for r in ra], [float(r["valid_rmse"]) for r in rb], atol=1e-6)
    assert json.loads((tmp_path / "cut" / "r" / "config.json").read_text())["restarts"] == 1


def test_wandb_offline_summary_under_the_run_and_none_when_disabled(field, tmp_path):
    assert ref.main(argv(field, tmp_path / "off", "--wandb_mode", "offline", "--max_epochs", "2")) == 0
    run = next((tmp_path / "off").iterdir())
    files = list(run.glob("wandb/offline-run-*/*.wandb"))
    assert len(files) == 1
    deadline = time.time() + 30                               # wandb's service may still be flushing the file
    while not logged_values(files[0], "best_valid") and time.time() < deadline:
        time.sleep(0.2)
    best = json.loads((run / "config.json").read_text())["best_valid"]
    assert logged_values(files[0], "best_valid")[-1] == pytest.approx(best, rel=1e-12)          # the summary
    assert min(logged_values(files[0], "valid_rmse")) == pytest.approx(best, rel=1e-6)         # the history
    assert ref.main(argv(field, tmp_path / "dis", "--wandb_mode", "disabled", "--max_epochs", "3", "--val_every", "2")) == 0
    assert not list((tmp_path / "dis").rglob("wandb"))
    run = next((tmp_path / "dis").iterdir())
    assert [r["epoch"] for r in rows(run)] == ["0", "2"]             # --val_every 2: epochs 0 and 2 only
    assert (run / "best.ckpt").exists() and torch.load(run / "last.ckpt", weights_only=True)["epoch"] == 2


def test_a_crafted_checkpoint_is_refused_without_running_code(field, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    (tmp_path / "best.ckpt").write_bytes(pickle.dumps({"state_dict": Payload()}))
    problem = build_problem({"data_path": str(field), "num_frames_train": 28, "num_frames_valid": 6,
                             "mask_kind": "random", "mask_type": "fixed", "prob_masking": 0.8})
    module = ref.PixelMLP(problem, Normalizer(np.zeros(1), np.ones(1)))
    with pytest.raises(DataError, match="checkpoint cannot be read"):
        lightning.load_module(module, tmp_path, "best")
    assert not marker.exists()
    # the same payload as the last.ckpt of an unfinished run: resuming refuses it
    assert ref.main(argv(field, tmp_path / "ck", "--max_epochs", "1", "--run_name", "r")) == 0
    cfg_path = tmp_path / "ck" / "r" / "config.json"
    cfg_path.write_text(json.dumps(dict(json.loads(cfg_path.read_text()), finished=False)))
    (tmp_path / "ck" / "r" / "last.ckpt").write_bytes(pickle.dumps({"state_dict": Payload()}))
    assert runs.run_cli(ref.main, argv(field, tmp_path / "ck", "--max_epochs", "1", "--run_name", "r")) == 2
    assert not marker.exists()


def test_patience_ends_a_run_at_its_best_validation_plus_patience(field, tmp_path):
    assert ref.main(argv(field, tmp_path, "--max_epochs", "80", "--patience", "2", "--lr", "0.3")) == 0
    run = next(tmp_path.iterdir())
    cfg = json.loads((run / "config.json").read_text())
    scores = [float(r["valid_rmse"]) for r in rows(run)]
    assert cfg["stop_reason"] == "patience" and len(scores) < 81
    best = int(np.argmin(scores))
    assert len(scores) - 1 - best == 2                                   # two validations without a better one
    assert cfg["best_valid"] == pytest.approx(scores[best], rel=1e-9) and cfg["best_step"] == int(rows(run)[best]["step"])


def test_max_time_stops_a_run_and_a_requeued_run_goes_on_counting(field, tmp_path, sigterm_after_epoch):
    """A run cut by SIGTERM after epoch 2 has its training time in config.json; with that time set to just
    under --max_time, the requeued run stops after one more step, for max_time."""
    sigterm_after_epoch(2)
    opts = argv(field, tmp_path, "--run_name", "r", "--max_time", "5", "--max_epochs", "40")
    assert runs.run_cli(ref.main, opts) == runs.EXIT_RESUME
    sigterm_after_epoch(None)
    run = tmp_path / "r"
    cfg = json.loads((run / "config.json").read_text())
    cut = torch.load(run / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < cfg["train_seconds"] < 60
    cfg["train_seconds"] = 5 * 60 - 1e-3                                   # as if the first attempt took 5 minutes
    (run / "config.json").write_text(json.dumps(cfg))
    assert ref.main(opts) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["finished"] and cfg["stop_reason"] == "max_time" and cfg["steps"] == cut + 1
    assert [r["epoch"] for r in rows(run)] == ["0", "1", "2", "3"]        # the stopped epoch is validated
    # without a time limit the same run would have gone on (patience or 40 epochs)
    assert ref.main(argv(field, tmp_path / "free", "--max_epochs", "4")) == 0
    assert json.loads((next((tmp_path / "free").iterdir()) / "config.json").read_text())["stop_reason"] == "max_epochs"


def test_val_every_steps_validates_by_optimizer_steps(field, tmp_path):
    assert ref.main(argv(field, tmp_path, "--max_epochs", "2", "--val_every_steps", "20",
                         "--accumulate_grad_batches", "2")) == 0
    run = next(tmp_path.iterdir())
    steps = [int(r["step"]) for r in rows(run)]
    total = json.loads((run / "config.json").read_text())["steps"]
    assert steps == list(range(0, total + 1, 20)) and total >= 40          # step 0, then every 20 steps, once each
