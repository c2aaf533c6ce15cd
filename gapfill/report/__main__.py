"""The command line of the reports: `python -m gapfill.report compare|run|video` (comparison, a run's PDF
re-drawn, or its mp4)."""
from __future__ import annotations

from pathlib import Path

import xarray as xr

from gapfill import report
from gapfill.cli import nonnegative_int, positive_float
from gapfill.entry import Parser, run_cli
from gapfill.errors import DataError
from gapfill.files import read_json
from gapfill.report.compare import compare
from gapfill.report.run_page import run_report
from gapfill.report.video import write_video
from gapfill.system import setup_logging


def _load(run_dir: Path) -> tuple[dict, xr.Dataset]:
    """(metrics.json, prediction.nc) of a results folder."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: no such results folder; pass a folder holding prediction.nc and metrics.json")
    metrics = read_json(run_dir / "metrics.json", "metrics file")
    try:
        with xr.open_dataset(run_dir / "prediction.nc", decode_times=False) as ds:     # any CF calendar
            prediction = ds.load()
    except Exception as err:  # netCDF4/h5netcdf raise many kinds for a bad file
        raise DataError(f"{run_dir / 'prediction.nc'}: not a readable prediction file ({type(err).__name__}); "
                        "test the run again") from None
    missing = [v for v in ("truth", "mean", "observed", "valid") if v not in prediction]
    if missing:
        raise DataError(f"{run_dir / 'prediction.nc'}: not a prediction file of ours (no {', '.join(missing)})")
    return metrics, prediction


def main(argv=None) -> int:
    parser = Parser(prog="python -m gapfill.report", description=report.__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="leaderboard.csv + comparison.pdf over every metrics.json")
    c.add_argument("--results", default="results", help="folder searched recursively for metrics.json")
    c.add_argument("--out", default="results/comparison", help="output folder")
    r = sub.add_parser("run", help="re-draw the per-run PDF from prediction.nc + metrics.json")
    r.add_argument("--run_dir", required=True, help="folder holding prediction.nc and metrics.json")
    v = sub.add_parser("video", help="an mp4 of a run's test frames: truth | reconstruction | error")
    v.add_argument("--run_dir", required=True, help="folder holding prediction.nc and metrics.json")
    v.add_argument("--band", type=nonnegative_int, default=0, help="band index")
    v.add_argument("--fps", type=positive_float, default=4.0, help="frames a second")
    v.add_argument("--out", default=None, help="default: <run_dir>/<run_name>_band<B>.mp4")
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == "compare":
        *_, failed = compare(args.results, args.out)
        return 2 if failed else 0
    run_dir = Path(args.run_dir)
    metrics, prediction = _load(run_dir)
    name = metrics.get("run_name") or run_dir.name
    if args.command == "video":
        write_video(prediction, args.out or run_dir / f"{name}_band{args.band}.mp4", args.band, args.fps)
    else:
        run_report(run_dir / f"{name}.pdf", prediction, metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
