"""Tests for gapfill.report: page counts of the per-run PDF, summary.csv, leaderboard.csv, CLI."""
import csv
import json
import re

import numpy as np
import pytest
import xarray as xr

from gapfill import report
from gapfill.metrics import compute_metrics
from gapfill.report import __main__ as report_cli
from gapfill.report import summary


def page_count(path):
    return len(re.findall(rb"/Type\s*/Page[^s]", path.read_bytes()))


def make_prediction(rng, T=3, B=2, Y=8, X=10, variance=True, land=True):
    """A small prediction dataset as evaluate.py writes it, plus its arrays."""
    truth = rng.normal(280, 5, (T, B, Y, X)).astype(np.float32)
    if land:
        truth[:, :, :2, :3] = np.nan                                   # never observed
    mean = (truth + rng.normal(0, 1, truth.shape)).astype(np.float32)
    observed = (rng.random((T, Y, X)) > 0.6).astype(np.int8)
    valid = np.isfinite(truth).astype(np.int8)
    dims = ("time", "band", "y", "x")
    ds = xr.Dataset({"truth": (dims, truth), "mean": (dims, mean), "observed": (("time", "y", "x"), observed),
                     "valid": (dims, valid)},
                    coords={"time": ("time", np.arange(T, dtype=float) + 100,
                                     {"units": "days since 2000-01-01", "calendar": "standard"}),
                            "band": [f"b{i}" for i in range(B)], "y": np.linspace(40, 50, Y), "x": np.arange(X)},
                    attrs={"method": "m", "run_name": "r", "dataset": "d", "mask_label": "random 60%",
                           "units": ";".join(["K"] * B)})
    var = None
    if variance:
        var = rng.uniform(0.5, 2, truth.shape).astype(np.float32)
        ds["variance"] = (dims, var)
    return ds, truth, mean, observed, valid, var


def metrics_dict(rng, method, run_name, config, dataset="d", mask="random 60%", variance=True, baselines=True, **kw):
    ds, truth, mean, observed, valid, var = make_prediction(rng, variance=variance, **kw)
    bl = {}
    if baselines:
        for name, noise in [("climatology", 3.0), ("interpolation", 2.0)]:
            bl[name] = compute_metrics(truth, truth + rng.normal(0, noise, truth.shape), observed, valid)
    return ds, {"method": method, "run_name": run_name, "dataset": dataset, "data_path": f"/data/{dataset}.nc",
                "mask": {"kind": "random", "mode": "dynamic", "prob_masking": 0.6, "label": mask},
                "bands": list(ds.band.values), "units": ["K"] * ds.sizes["band"],
                "metrics": compute_metrics(truth, mean, observed, valid, var, list(ds.band.values)),
                "baselines": bl, "cost": {"train_seconds": 12.0, "test_seconds": 1.5, "peak_memory_mb": 100.0},
                "config": config}


@pytest.mark.parametrize("variance", [True, False])
def test_run_report_one_page_per_frame_plus_summary(tmp_path, variance):
    rng = np.random.default_rng(0)
    ds, m = metrics_dict(rng, "exact_gp", "run_a", {"seed": 0}, variance=variance, T=3, B=2, Y=8, X=8)
    out = report.run_report(tmp_path / "sub" / "run_a.pdf", ds, m)
    assert out == tmp_path / "sub" / "run_a.pdf"
    assert page_count(out) == 3 + 1


def test_run_report_single_image_many_bands_no_baselines(tmp_path):
    """One frame, 5 bands (only 4 drawn), images in [0,1] without NaN, bare compute_metrics dict."""
    rng = np.random.default_rng(1)
    ds, truth, mean, observed, valid, var = make_prediction(rng, T=1, B=5, Y=9, X=9, variance=False, land=False)
    ds = ds.assign_coords(y=np.arange(9))
    m = compute_metrics(truth, mean, observed, valid, None)
    out = report.run_report(tmp_path / "img.pdf", ds, m)
    assert page_count(out) == 1 + 1


def test_method_summary_csv(tmp_path):
    rng = np.random.default_rng(2)
    runs = []
    for i, ls in enumerate([0.5, 1.0, 2.0]):
        cfg = {"timekernel": "matern", "lengthscale": ls, "prob_masking": 0.9,
               "checkpoint_dir": f"checkpoints/gp/run_{i}"}           # derived from run name: not a column
        runs.append(metrics_dict(rng, "gp", f"run_{i}", cfg, variance=(i != 1))[1])
    csv_path, pdf_path = report.method_summary(runs, tmp_path / "out", "gp")
    assert pdf_path.name == "summary_gp.pdf" and page_count(pdf_path) == 2   # errors page + uncertainty page
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 3
    assert "lengthscale" in rows[0]
    assert "timekernel" not in rows[0] and "prob_masking" not in rows[0] and "checkpoint_dir" not in rows[0]
    for row, m in zip(rows, runs, strict=False):
        assert row["run_name"] == m["run_name"] and row["mask"] == "random 60%"
        assert float(row["lengthscale"]) == m["config"]["lengthscale"]
        assert float(row["rmse"]) == pytest.approx(m["metrics"]["overall"]["rmse"], rel=1e-12)
        assert float(row["mae"]) == pytest.approx(m["metrics"]["overall"]["mae"], rel=1e-12)
        for b in ("climatology", "interpolation"):
            assert float(row[f"rmse_{b}"]) == pytest.approx(m["baselines"][b]["overall"]["rmse"], rel=1e-12)
        assert float(row["test_seconds"]) == 1.5
    assert rows[1]["crps"] == "" and float(rows[0]["crps"]) == pytest.approx(runs[0]["metrics"]["overall"]["crps"])
    # labels come from the varying option
    assert summary._run_labels(runs, ["lengthscale"]) == ["lengthscale=0.5", "lengthscale=1", "lengthscale=2"]


def test_method_summary_without_variance_single_run(tmp_path):
    rng = np.random.default_rng(3)
    run = metrics_dict(rng, "pconv", "only", {"epochs": 3}, variance=False, baselines=False)[1]
    csv_path, pdf_path = report.method_summary([run], tmp_path, "pconv")
    rows = list(csv.DictReader(open(csv_path)))
    assert len(rows) == 1 and "epochs" not in rows[0]
    assert page_count(pdf_path) == 1
    with pytest.raises(ValueError, match="no runs"):
        report.method_summary([], tmp_path, "pconv")


def _write_run(root, rel, m):
    d = root / rel
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(m))


def test_compare_leaderboard_sorted_and_complete(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "results"
    expected = {}
    for method in ("gp", "gan"):
        for i in range(3):
            for dataset in ("sst", "temp"):
                name = f"{method}_{dataset}_{i}"
                m = metrics_dict(rng, method, name, {"i": i}, dataset=dataset, variance=(method == "gp"))[1]
                m["metrics"]["overall"]["rmse"] = float(rng.uniform(0.5, 3))
                _write_run(root, f"{method}/deep/{i}/{name}" if i == 2 else f"{method}/{name}", m)
                expected[name] = m["metrics"]["overall"]["rmse"]
    csv_path, pdf_path, failed = report.compare(root, tmp_path / "cmp")
    assert failed == []
    rows = list(csv.DictReader(open(csv_path)))
    assert {r["run_name"] for r in rows} == set(expected) and len(rows) == len(expected)
    for r in rows:
        assert float(r["rmse"]) == pytest.approx(expected[r["run_name"]], rel=1e-12)
    assert [r["dataset"] for r in rows] == ["sst"] * 6 + ["temp"] * 6
    for ds in ("sst", "temp"):
        vals = [float(r["rmse"]) for r in rows if r["dataset"] == ds]
        assert vals == sorted(vals)
    assert rows[0]["crps"] != "" or rows[0]["method"] == "gan"
    assert page_count(pdf_path) == 2 + 1                                      # 2 groups + 1 table page


def test_compare_empty_raises(tmp_path):
    (tmp_path / "results").mkdir()
    with pytest.raises(ValueError, match="no metrics.json"):
        report.compare(tmp_path / "results", tmp_path / "out")
    with pytest.raises(ValueError, match="no such results folder"):
        report.compare(tmp_path / "missing", tmp_path / "out")


@pytest.fixture
def restore_logging():
    """main() reconfigures the root logger (force=True): put it back afterwards."""
    import logging
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_compare_and_run(tmp_path, capsys, restore_logging):
    rng = np.random.default_rng(5)
    ds, m = metrics_dict(rng, "gp", "run_cli", {"a": 1}, T=2)
    run_dir = tmp_path / "results" / "gp" / "run_cli"
    _write_run(tmp_path / "results", "gp/run_cli", m)
    ds.to_netcdf(run_dir / "prediction.nc")
    assert report_cli.main(["compare", "--results", str(tmp_path / "results"),
                            "--out", str(tmp_path / "results" / "comparison")]) == 0
    csv_path, pdf_path = (tmp_path / "results" / "comparison" / n for n in ("leaderboard.csv", "comparison.pdf"))
    logged = capsys.readouterr()
    assert csv_path.exists() and pdf_path.exists()
    assert str(csv_path) in logged.out + logged.err and str(pdf_path) in logged.out + logged.err
    (run_dir / "run_cli.pdf").unlink(missing_ok=True)
    assert report_cli.main(["run", "--run_dir", str(run_dir)]) == 0
    assert page_count(run_dir / "run_cli.pdf") == 2 + 1


def test_run_report_shows_the_variance_on_request(tmp_path, monkeypatch):
    """--show variance (test scripts) draws the predictive variance, the default its square root."""
    from gapfill import cli
    from gapfill.report import run_page
    rng = np.random.default_rng(2)
    ds, m = metrics_dict(rng, "exact_gp", "run_a", {"seed": 0}, variance=True, T=2, B=1, Y=6, X=6)
    drawn: dict = {}
    draw = run_page._FramePages.draw
    def record(self, pdf, t, pf):                     # the uncertainty panel's image as drawn on each page
        draw(self, pdf, t, pf)
        drawn.setdefault(self.p["show"], []).append(np.ma.filled(self.images[0]["spread"].get_array(), np.nan))
    monkeypatch.setattr(run_page._FramePages, "draw", record)
    report.run_report(tmp_path / "a.pdf", ds, m)
    report.run_report(tmp_path / "b.pdf", ds, m, show="variance")
    var = ds["variance"].transpose("time", "band", "y", "x").values.astype(np.float64)[:, 0]
    valid = ds["valid"].transpose("time", "band", "y", "x").values.astype(bool)[:, 0]
    assert valid.sum() > 20 and len(drawn["variance"]) == len(drawn["std"]) == 2      # both frames
    np.testing.assert_allclose(np.asarray(drawn["variance"])[valid], var[valid])
    np.testing.assert_allclose(np.asarray(drawn["std"])[valid], np.sqrt(var[valid]))
    p = cli.test_parser("x")
    assert p.parse_args(["--checkpoints", "c", "--show", "variance"]).show == "variance"
    assert p.parse_args(["--checkpoints", "c"]).show == "std"


def test_video_frames_and_the_mp4_of_a_run(tmp_path, restore_logging):
    """`python -m gapfill.report video`: a video frame per test frame, truth | reconstruction | |error|; the
    reconstruction shows the truth on observed cells and the mean on hidden ones, the error panel is grey
    off the hidden cells, land is grey, north is up; the mp4 reads back with every frame."""
    import cv2

    from gapfill.errors import DataError
    from gapfill.report.video import GREY, video_frames
    rng = np.random.default_rng(6)
    ds, m = metrics_dict(rng, "gp", "run_v", {"a": 1}, T=3, B=2, Y=8, X=10)
    frames = video_frames(ds, band=1, min_height=80)                   # each cell 10 x 10 pixels
    assert frames.shape == (3, 24 + 80, 3 * 100 + 2 * 8, 3)
    truth, observed = ds["truth"].values[:, 1], ds["observed"].values.astype(bool)
    def px(t, panel, r, c):                                             # cell (r, c) in file order; y ascends
        return frames[t, 24 + (7 - r) * 10 + 5, panel * 108 + c * 10 + 5]
    t = 2
    cells = [(r, c) for r in range(8) for c in range(10) if np.isfinite(truth[t, r, c])]
    seen = [rc for rc in cells if observed[t][rc]]
    hid = [rc for rc in cells if not observed[t][rc]]
    assert len(seen) > 10 and len(hid) > 10
    assert all((px(t, 0, *rc) == px(t, 1, *rc)).all() for rc in seen)
    assert sum((px(t, 0, *rc) != px(t, 1, *rc)).any() for rc in hid) > 0.8 * len(hid)
    assert all((px(t, 2, *rc) == GREY).all() for rc in seen) and not any((px(t, 2, *rc) == GREY).all() for rc in hid)
    assert (px(t, 0, 0, 0) == GREY).all() and (px(t, 1, 1, 2) == GREY).all() and not (px(t, 0, 7, 0) == GREY).all()
    run_dir = tmp_path / "results" / "gp" / "run_v"
    _write_run(tmp_path / "results", "gp/run_v", m)
    ds.to_netcdf(run_dir / "prediction.nc")
    assert report_cli.main(["video", "--run_dir", str(run_dir), "--band", "1", "--fps", "2"]) == 0
    cap = cv2.VideoCapture(str(run_dir / "run_v_band1.mp4"))
    n, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
    ok, first = cap.read()
    cap.release()
    want = cv2.cvtColor(video_frames(ds, band=1)[0], cv2.COLOR_RGB2BGR)
    assert (n, fps, ok, first.shape) == (3, 2.0, True, want.shape)
    assert np.abs(first.astype(float) - want).mean() < 12                 # mp4v is lossy
    with pytest.raises(DataError, match="--band 2: the prediction has bands 0 to 1"):
        report_cli.main(["video", "--run_dir", str(run_dir), "--band", "2"])
