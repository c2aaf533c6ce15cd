"""The test-time protocol every method shares: load a run, score its reconstruction, write its result files.

A run's problem (gapfill.problem) is rebuilt from its options with the test-side overrides, the model sees
only `Problem.for_model()`, and the reconstruction is scored on the hidden valid cells next to the classical
floor; prediction.nc, metrics.json and the PDF reports are written per run, then the method summary.

A method's test script is `test_main(method, predict)` with its own `predict(problem, cfg, run_dir, device)`
returning (mean, variance or None), both (T_test, B, Y, X) in physical units; a `predict` that also takes
`split` ('train', 'valid' or 'test') draws the other splits' frames with `--pages all`.
"""
from __future__ import annotations

import inspect
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from gapfill import cli, registry
from gapfill.data import Field
from gapfill.errors import DataError, RunError
from gapfill.files import atomic_path, check_writable, file_digest, read_json, write_json
from gapfill.floor import FLOOR, reconstruct_floor
from gapfill.metrics import compute_metrics, scored_cells
from gapfill.problem import Problem, build_problem, grid_signature
from gapfill.system import peak_memory_mb, resolve_device, setup_logging

log = logging.getLogger(__name__)


def reference_metrics(problem: Problem, split: str = "test") -> dict:
    """compute_metrics of the classical floor (gapfill.floor) on the hidden cells of `split`."""
    vis, sl, f = problem.visible(), problem.splits[split], problem.field
    out = {}
    for name in FLOOR:
        mean = reconstruct_floor(name, vis, problem.splits["train"], sl, x_periodic=f.x_periodic)
        out[name] = compute_metrics(f.values[sl], mean, problem.observed[sl], f.valid[sl], None, f.bands)
    return out


def prediction_dataset(problem: Problem, mean, variance, attrs: dict, split: str = "test") -> xr.Dataset:
    """The standard prediction file: truth, mean, variance, observed, valid on (time, band, y, x) of the frames
    of `split`, with y and x as the data file has them (a descending y flipped back, a longitude with the
    file's values)."""
    f, sl = problem.field, problem.splits[split]
    dims = ("time", "band", "y", "x")
    data = {"truth": (dims, f.values[sl]), "mean": (dims, mean.astype(np.float32)),
            "observed": (("time", "y", "x"), problem.observed[sl].astype(np.int8)),
            "valid": (dims, f.valid[sl].astype(np.int8))}
    if variance is not None:
        data["variance"] = (dims, variance.astype(np.float32))
    return f.file_order(xr.Dataset(data, coords=f.coords(sl), attrs={**attrs, "units": ";".join(f.units)}))


def load_run(run_dir, method: str | None = None, script: str | None = None) -> dict:
    """config.json of a run folder, with a clear error when the folder is not a run, or (given `method`,
    the method the calling `script` reads) a run of another method."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise DataError(f"{run_dir}: no such run folder")
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a folder; pass run folders written by a train script")
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise DataError(f"{run_dir}: not a run folder (no config.json); pass folders written by a train script")
    cfg = read_json(cfg_path, "run config")
    missing = [k for k in ("args", "run_name") if k not in cfg]
    if missing or not isinstance(cfg["args"], dict) or "data_path" not in cfg["args"]:
        raise DataError(f"{cfg_path}: not a run config of ours (no {', '.join(missing) or 'args.data_path'}); "
                        "train the run again with --overwrite")
    if method is not None and cfg.get("method") != method:
        wrote = cfg.get("method") or "unknown"
        reader = registry.test_script(wrote) or "the test script of the method that wrote it"
        script = script or registry.test_script(method) or method
        raise DataError(f"{run_dir}: written by the {wrote} method, not by {method}: {script} reads {method} runs only; "
                        f"test this one with {reader}")
    if not cfg.get("finished"):
        log.warning("%s: training did not finish; testing its best checkpoint so far (results marked partial)", run_dir)
    return cfg


def check_grid(cfg: dict, field: Field) -> None:
    """Refuse a test-time data file whose bands or grid differ from the training file's."""
    want = cfg.get("grid")
    if want is None:
        log.warning("%s: the run recorded no grid (trained before grids were recorded); cannot check %s",
                    cfg.get("run_name"), field.path)
        return
    have = grid_signature(field)
    diffs = [f"{k} {have[k]} (training: {want[k]})" for k in ("bands", "shape_yx") if have[k] != want.get(k)]
    diffs += [f"{k} coordinates differ" for k in ("y", "x") if not diffs and have[k] != want.get(k)]
    if diffs:
        raise DataError(f"--data_path {field.path} is not on the training grid of {cfg['run_name']}: "
                        f"{'; '.join(diffs)}")


def check_same_data(cfg: dict, path) -> None:
    """Refuse to test on the training file when its content changed since training (its fingerprint in the
    run's identity): its hidden cells would be scored as if they were the ones the run was trained around."""
    old = cfg.get("identity", {}).get("data", {})
    if "sha256" not in old or Path(path).resolve() != Path(old.get("path", "")).resolve():
        return
    if (now := file_digest(path)) != old["sha256"]:
        raise DataError(f"{path} changed since {cfg['run_name']} was trained on it (content fingerprint {now}, "
                        f"training {old['sha256']}): train the run again with --overwrite, or test on the new values "
                        "from a copy under another name with --data_path")


def results_name(cfg: dict, test_args: dict) -> str:
    """The run's results folder name: its run name, plus `+test_<mask>` / `+data_<stem>` when the test mask
    or the data file is overridden, so results with overrides never replace the run's standard results."""
    name, train = cfg["run_name"], cfg["args"]
    def norm(opts):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()}
    trained = norm(cli.mask_options(train))
    given = {k: v for k, v in norm(cli.mask_options(test_args, test=True)).items() if v is not None}
    if any(v != trained[k] for k, v in given.items()):
        o = {**trained, **given}
        name += "+test_" + cli.mask_tag({"mask_kind": o["kind"], "mask_type": o["mode"], "prob_masking": o["prob_masking"],
                                         "radius": o["radius"], "cloud_range": o["cloud_range"], "center": o["center"]})
    data = test_args.get("data_path")
    if data and Path(data).resolve() != Path(train["data_path"]).resolve():
        name += f"+data_{Path(data).stem}"
    return name


def first_guess_rmse(problem: Problem, kind: str) -> float:
    """RMSE of the first guess `kind` alone (gapfill.view.ModelView, whole frames) on the test's hidden cells."""
    from gapfill.view import ModelView
    sl, f = problem.splits["test"], problem.field
    guess = ModelView(problem.for_model(), kind).guess_physical(range(sl.start, sl.stop))
    return float(compute_metrics(f.values[sl], guess, problem.observed[sl], f.valid[sl], None, f.bands)["overall"]["rmse"])


def evaluate_run(method: str, run_dir, predict: Callable, test_args: dict, results_folder,
                 analyses: Callable | None = None) -> dict:
    """Predict the test frames of one run, score them, write prediction.nc, metrics.json and the PDF.
    `analyses(problem, cfg, run_dir, device, mean)` returns extra Figures for the PDF: a method's own
    experiments on the test frames with masks of their own (it gets the whole problem and the prediction
    `mean` (T_test, B, Y, X) just made; the scores above never use it)."""
    from gapfill.report import run_report
    from gapfill.report.sky import sky_pages
    cfg = load_run(run_dir, method)
    problem = build_problem(cfg["args"], test_args)
    if test_args.get("data_path"):
        check_grid(cfg, problem.field)
    check_same_data(cfg, problem.field.path)
    device = resolve_device(test_args.get("device", "auto"), test_args.get("local_rank"))
    if test_args.get("pages") == "all" and "split" not in inspect.signature(predict).parameters:
        raise DataError(f"--pages all: {method} reconstructs the test frames only; the GPs draw every split")
    t0 = time.time()
    mean, variance = predict(problem.for_model(), cfg, Path(run_dir), device)
    test_seconds = time.time() - t0
    f, sl = problem.field, problem.splits["test"]
    if mean.shape != f.values[sl].shape or (variance is not None and variance.shape != mean.shape):
        raise ValueError(f"{method} returned shape {mean.shape}, expected {f.values[sl].shape} (T_test, B, Y, X)")
    metrics = compute_metrics(f.values[sl], mean, problem.observed[sl], f.valid[sl], variance, f.bands)
    name = results_name(cfg, test_args)
    out_dir = Path(results_folder) / name
    check_results_owner(out_dir, run_dir)
    record = {"method": cfg.get("display_name", method), "run_name": name, "trained_run": cfg["run_name"],
              "checkpoint": str(Path(run_dir).resolve()),
              "partial": not cfg.get("finished"), "dataset": f.name, "data_path": f.path,
              "mask": {k: v for k, v in problem.masks["test"].items()}, "bands": f.bands, "units": f.units,
              "metrics": metrics, "baselines": reference_metrics(problem),
              "cost": {"train_seconds": cfg.get("train_seconds"), "test_seconds": test_seconds,
                       "peak_memory_mb": peak_memory_mb()},
              "config": cfg["args"],
              "training": {k: cfg.get(k) for k in ("device", "steps", "stop_reason", "best_step", "first_guess_chosen")}}
    if cfg.get("first_guess_chosen"):                   # what training added: the first guess alone, same cells
        record["training"]["first_guess_rmse"] = first_guess_rmse(problem, cfg["first_guess_chosen"])
    pred = prediction_dataset(problem, mean, variance, {"method": record["method"], "run_name": name,
                                                        "dataset": f.name, "mask_label": record["mask"]["label"],
                                                        "partial": int(record["partial"])})
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "prediction.nc") as tmp:
        pred.to_netcdf(tmp)
    write_json(out_dir / "metrics.json", record)
    figures = list(analyses(problem, cfg, Path(run_dir), device, mean)) if analyses else []
    recon = np.where(scored_cells(problem.observed[sl], f.valid[sl]), mean, f.values[sl])   # (T_test, B, Y, X)
    figures += sky_pages(f.path, f.values[sl], recon, f.bands, f.units)  # CMB patches: power spectra
    before = []                                         # --pages all: the training and validation frames
    for split in ("train", "valid") if test_args.get("pages") == "all" else ():
        if _frames(problem, split):
            m, v = predict(problem.for_model(), cfg, Path(run_dir), device, split=split)
            before.append((split, prediction_dataset(problem, m, v, {"mask_label": problem.masks[split]["label"]}, split)))
    pdf = run_report(out_dir / f"{name}.pdf", pred, record, figures, show=test_args.get("show") or "std", before=before)
    floor = min(v["overall"]["rmse"] for v in record["baselines"].values())
    log.info("%s: RMSE %.4g %s (best classical floor %.4g) on %d hidden cells; wrote %s",
             name, metrics["overall"]["rmse"], f.units[0], floor, metrics["overall"]["n_scored"], pdf)
    return record


def _frames(problem: Problem, split: str) -> int:
    """The number of frames in `split`."""
    sl = problem.splits[split]
    return sl.stop - sl.start


def check_results_owner(out_dir: Path, run_dir) -> None:
    """Refuse to write the results of `run_dir` over those of another run folder with the same run name
    (two checkpoint folders tested into one results folder): its metrics.json names the run it scored."""
    if not (out_dir / "metrics.json").exists():
        return
    try:
        owner = read_json(out_dir / "metrics.json", "metrics file").get("checkpoint")
    except DataError:
        return                                      # a damaged metrics file of ours: replaced
    if owner and Path(owner) != Path(run_dir).resolve():
        raise DataError(f"{out_dir} holds the results of another run with the same name ({owner}); test {run_dir} "
                        "into another --results_folder, or rename one of the runs")


def _try_load(run_dir: Path) -> dict | None:
    try:
        return load_run(run_dir)
    except DataError:
        return None


def _run_folders(paths: list[str]) -> list[Path]:
    """The run folders among `paths`; a folder without config.json is skipped with a warning, and the
    rest are tested (a missing path fails in its turn, with the others still tested)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir() and not (p / "config.json").exists() and not p.name.startswith("."):
            log.warning("%s: skipped, not a run folder (no config.json)", p)
            continue
        out.append(p)
    if not out:
        raise DataError(f"no run folder (with a config.json) among {' '.join(paths)}; pass folders written by a "
                        "train script")
    return out


def test_main(method: str, predict: Callable, argv=None, description: str | None = None,
              summary_grid: tuple[list[str], list[str]] | None = None, analyses: Callable | None = None) -> list[dict]:
    """Shared body of every test_<method>.py: test each checkpoint, then write the method summary
    (with heatmaps by `summary_grid` = (row options, column options) when given).

    A run whose test fails is one error line and a `failed` row in summary.csv (its traceback, for a
    failure that is not bad input, in <results>/<run>.error.log); the other runs are still tested. Then
    DataError is raised naming the failed runs, so the script ends with exit code 2 after writing all."""
    from gapfill.report import method_summary
    args = cli.test_parser(description or f"Test {method} runs: inpainting of the test frames").parse_args(argv)
    setup_logging(args.log_level)
    folders = _run_folders(args.checkpoints)
    if len(folders) == 1:                          # bad input fails before the results folder is touched
        load_run(folders[0], method)
    if args.data_path:                             # the override is checked once, on the first readable run
        first = next((cfg for cfg in map(_try_load, folders) if cfg is not None), None)
        if first is not None:
            check_grid(first, build_problem(first["args"], vars(args)).field)
    results = check_writable(args.results_folder or Path("results") / method, "--results_folder")
    records, failed = [], []
    for d in folders:
        try:
            records.append(evaluate_run(method, d, predict, vars(args), results, analyses))
        except (DataError, RunError) as err:
            log.error("%s failed: %s", d, err)
            failed.append({"run_name": d.name, "error": str(err)})
        except Exception as err:  # one broken run never sinks the job; its traceback goes to a file
            trace = results / f"{d.name}.error.log"
            results.mkdir(parents=True, exist_ok=True)
            trace.write_text(traceback.format_exc())
            log.error("%s failed: %s: %s (traceback in %s)", d, type(err).__name__, err, trace)
            failed.append({"run_name": d.name, "error": f"{type(err).__name__}: {err}"})
    csv_path, pdf_path = method_summary(records, results, method, grid=summary_grid, failed=failed)
    log.info("summary of %d run(s): %s and %s", len(records), csv_path, pdf_path)
    if failed:
        names = ", ".join(e["run_name"] for e in failed)
        raise DataError(f"{len(failed)} of {len(folders)} run(s) failed their test ({names}); the others are in "
                        f"{results}, listed with the failures in {csv_path}")
    return records


def script_main(method: str, predict: Callable, doc: str | None, **options) -> Callable[..., int]:
    """The `main(argv)` of a test_<method>.py: `test_main` under the script's first docstring line."""
    def main(argv=None) -> int:
        test_main(method, predict, argv, doc.splitlines()[0] if doc else None, **options)
        return 0
    return main
