"""The cross-method benchmark: every method on every case (dataset x mask) at a stated budget, one
leaderboard and one PDF.

    python -m benchmarks.benchmark                       # make benchmark: every missing case, then the report
    python -m benchmarks.benchmark --only ginr --datasets sst synthetic --masks clouds
    python -m benchmarks.benchmark --list                # the cases and whether each is done
    python -m benchmarks.benchmark --budget large --only gpvae --datasets sst      # a larger budget, rows marked
    python -m benchmarks.benchmark --budget converge --case sst/random80_dynamic --case_minutes 20   # to convergence
    python -m benchmarks.benchmark --stage cases --method ginr --case sst/clouds    # one job-array task
    python -m benchmarks.benchmark --stage report        # the leaderboard and the PDF from what is done

The cases are the entries of `benchmarks/sweep_benchmark.toml` (method x case); `submit_train_benchmark.sh`
runs one per array task, `submit_test_benchmark.sh` writes the report. A case runs the method's own train
and test scripts (subprocesses, their options below) with checkpoints in checkpoints/benchmark/<budget>/...
and results in results/benchmark/runs/<budget>/...; it is done when its case.json exists. A rerun after a
crash, a kill or a requeue skips the done cases and resumes an interrupted training from its `last`
checkpoint. A method that cannot run on a case is a case.json with status "n/a" and the reason.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import leaderboard
from gapfill import registry, system
from gapfill.entry import Parser, Preempted, Preemption, run_cli
from gapfill.errors import DataError
from gapfill.files import read_json, write_json
from gapfill.sweep import entries, load, to_argv

log = logging.getLogger("benchmarks.benchmark")
SWEEP = system.REPO_ROOT / "benchmarks" / "sweep_benchmark.toml"
BUDGETS = registry.BUDGETS

# dataset -> (file name, command that makes it from packages or generators, no network; {out}: its path)
_REAL = ["-m", "data_generation.prepare_real_datasets", "--out_dir", "{dir}", "--only"]
DATASETS = {
    "synthetic": ("synthetic_default.nc", ["-m", "data_generation.make_synthetic_field", "--out", "{out}"]),
    "multiband": ("multispectral.nc", ["-m", "data_generation.make_multispectral", "--out", "{out}"]),
    "a1b": ("A1B_north_america.nc", [*_REAL, "A1B_north_america"]),
    "sst": ("sst_ndjfm_anom.nc", [*_REAL, "sst_ndjfm_anom"]),
    "hgt": ("hgt_djf.nc", [*_REAL, "hgt_djf"]),
    "astronaut": ("astronaut.nc", [*_REAL, "astronaut"]),
    "camera": ("camera.nc", [*_REAL, "camera"]),
    "coffee": ("coffee.nc", [*_REAL, "coffee"]),
}
PHOTOS = ("astronaut", "camera", "coffee")

MASKS: dict[str, dict] = {f"random{int(p * 100)}_{mode}": {"mask_kind": "random", "mask_type": mode, "prob_masking": p}
         for p in (0.5, 0.8, 0.9) for mode in ("fixed", "dynamic")}
MASKS["clouds"] = {"mask_kind": "clouds", "mask_type": "dynamic", "cloud_range": [0.2, 0.6]}
MASKS["circle"] = {"mask_kind": "circle", "mask_type": "dynamic", "prob_masking": 0.2}    # one disc, 20% of a frame

# Each method's options per budget, where it does not apply and whether it takes --max_time are in its
# folder's method.toml (gapfill.registry). smoke: the tests; default: `make benchmark` on 2 CPU cores (88 min
# in all); large: 5 to 13 times the steps, the runs benchmarks/README.md quotes where a learned method loses;
# converge: the neural methods train until validation stops improving (--patience) or --case_minutes run out
# (their --max_time), with epochs high enough that one of the two ends the run.


def case_names(spec: dict | None = None) -> list[tuple[str, str, str]]:
    """(method, dataset, mask) of every entry of the sweep file, in its order."""
    out = []
    for e in entries(spec or load(SWEEP)):
        dataset, _, mask = str(e.get("case", "")).partition("/")
        if e.get("method") not in registry.methods() or dataset not in DATASETS or mask not in MASKS:
            raise DataError(f"sweep entry {e}: needs method in {list(registry.methods())} and case DATASET/MASK "
                            f"with DATASET in {list(DATASETS)} and MASK in {list(MASKS)}")
        out.append((e["method"], dataset, mask))
    return out


def data_path(dataset: str, data_dir: Path) -> Path:
    """The dataset's NetCDF file, made once when missing (a new file would change every run's identity)."""
    name, cmd = DATASETS[dataset]
    path = data_dir / name
    if not path.exists():
        log.info("making %s", path)
        subprocess.run([sys.executable, *(c.format(out=path, dir=data_dir) for c in cmd)], check=True)
    if not path.is_file():
        raise DataError(f"{path} is not a file; remove it and run again")
    return path


def _run(cmd: list[str], log_file: Path, timeout: float, stop: Preemption) -> tuple[int, float, float]:
    """Run `cmd` with its output appended to `log_file`; (exit code, seconds, peak resident MB of the child).
    SLURM's warning (USR1) or a SIGTERM that reaches this process is passed on to the child, which saves
    `last` and stops (requeueing its task under SLURM); then Preempted stops the benchmark too."""
    t0 = time.time()
    sent = False
    with open(log_file, "a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                if stop.requested:
                    raise Preempted(stop.requested)
                return proc.returncode, time.time() - t0, usage.ru_maxrss / 1024
            if stop.requested and not sent:
                proc.send_signal(getattr(signal, stop.requested))
                sent = True
            if time.time() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return 124, time.time() - t0, usage.ru_maxrss / 1024
            time.sleep(0.2)


def run_case(method: str, dataset: str, mask: str, args, stop: Preemption) -> dict:
    """Train and test `method` on `dataset` under `mask` (or record why it cannot run); writes case.json."""
    folder = case_dir(args, method, dataset, mask)
    record = {"method": method, "dataset": dataset, "mask": mask, "budget": args.budget}
    spec = registry.get(method)
    kind = "photo" if dataset in PHOTOS else "series"
    if kind in spec.not_applicable:
        record.update(status="n/a", reason=spec.not_applicable[kind])
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "case.json", record)
        return record
    ckpt = Path(args.checkpoint_root) / args.budget / dataset / mask / method
    budget = spec.options(args.budget, dynamic=MASKS[mask]["mask_type"] == "dynamic")
    if args.budget == "converge" and spec.timed:
        budget["max_time"] = args.case_minutes
    options = {"data_path": str(data_path(dataset, Path(args.data_dir))), **MASKS[mask], **budget,
               "seed": args.seed, "checkpoint_dir": str(ckpt), "device": args.device}
    train = [sys.executable, "-m", spec.train, *to_argv(options)]
    folder.mkdir(parents=True, exist_ok=True)
    log_file = folder / "case.log"
    timeout = max(args.case_timeout, 60 * args.case_minutes + 900) if args.budget == "converge" else args.case_timeout
    code, train_wall, train_mb = _run(train, log_file, timeout, stop)
    runs = sorted(p.parent for p in ckpt.glob("*/config.json"))
    if code == 0 and len(runs) == 1:
        test = [sys.executable, "-m", spec.test, "--checkpoints", str(runs[0]),
                "--results_folder", str(folder / "results"), "--device", args.device]
        code, test_wall, test_mb = _run(test, log_file, timeout, stop)
        record.update(train_wall_seconds=train_wall, test_wall_seconds=test_wall, peak_memory_mb=max(train_mb, test_mb))
    metrics = sorted((folder / "results").glob("*/metrics.json"))
    if code == 0 and len(runs) == 1 and len(metrics) == 1:
        record.update(status="ok", metrics=str(metrics[0].relative_to(args.out)))
    else:
        why = {124: "ran past --case_timeout", 0: f"{len(runs)} run folders in {ckpt}, expected 1"}.get(
            code, f"exit code {code}")
        record.update(status="failed", reason=f"{why}; see {log_file}")
    write_json(folder / "case.json", record)      # last: a case without it runs again
    return record


def run_cases(cases: list[tuple[str, str, str]], args) -> list[dict]:
    """Every case not done yet (or failed before), in turn; a failed case is recorded and the others still run."""
    state = {c: read_json(p)["status"] for c in cases if (p := case_dir(args, *c) / "case.json").exists()}
    order = {k: i for i, k in enumerate(dict.fromkeys(c[1:] for c in cases))}
    todo = sorted((c for c in cases if state.get(c, "failed") == "failed"), key=lambda c: order[c[1:]])  # case by case
    log.info("%d case(s) selected at budget %s: %d done, %d to run (%d failed before)", len(cases), args.budget,
             len(cases) - len(todo), len(todo), sum(s == "failed" for s in state.values()))
    t0, out, stop = time.time(), [], Preemption()
    for i, (method, dataset, mask) in enumerate(todo, 1):
        t1 = time.time()
        rec = run_case(method, dataset, mask, args, stop)
        eta = (time.time() - t0) / i * (len(todo) - i)
        log.info("case %d/%d %s on %s/%s: %s%s in %.0f s (about %.0f min left)", i, len(todo), method, dataset, mask,
                 rec["status"], f" ({rec['reason']})" if rec.get("reason") else "", time.time() - t1, eta / 60)
        out.append(rec)
    return out


def case_dir(args, method: str, dataset: str, mask: str) -> Path:
    return Path(args.out) / "runs" / args.budget / dataset / mask / method


def select(cases, args) -> list[tuple[str, str, str]]:
    """The cases matching --only/--datasets/--masks/--case (each unset: all)."""
    want_case = set(args.case or [])
    return [c for c in cases if (not args.only or c[0] in args.only) and (not args.datasets or c[1] in args.datasets)
            and (not args.masks or c[2] in args.masks) and (not want_case or f"{c[1]}/{c[2]}" in want_case)]


def parse_args(argv=None):
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=("all", "cases", "report"), default="all",
                   help="cases: run the selected cases; report: leaderboard and PDF only; all: both")
    p.add_argument("--only", "--method", nargs="+", choices=list(registry.methods()), help="these methods only")
    p.add_argument("--datasets", "--dataset", nargs="+", choices=list(DATASETS), help="these datasets only")
    p.add_argument("--masks", "--mask", nargs="+", choices=list(MASKS), help="these masks only")
    p.add_argument("--case", nargs="+", metavar="DATASET/MASK", help="these cases only")
    p.add_argument("--budget", choices=BUDGETS, default="default", help="iterations and sizes (each method's method.toml)")
    p.add_argument("--sweep", default=str(SWEEP), help="the sweep file listing the cases (method x case)")
    p.add_argument("--list", action="store_true", help="list the selected cases and whether each is done")
    p.add_argument("--out", default="results/benchmark", help="leaderboard.csv, benchmark.pdf and runs/")
    p.add_argument("--checkpoint_root", default="checkpoints/benchmark")
    p.add_argument("--data_dir", default="data/benchmark", help="the datasets, made here when missing")
    p.add_argument("--case_timeout", type=float, default=1800.0, help="seconds a train or test step may take")
    p.add_argument("--case_minutes", type=float, default=20.0,
                   help="converge budget: minutes of training per neural case (its --max_time)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (passed to every script)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", action="store_true", help="print benchmarks/README.md's results table")
    p.add_argument("--log_level", default="INFO")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    system.setup_logging(args.log_level)
    cases = select(case_names(load(args.sweep)), args)
    if not cases:
        raise DataError("no case of the sweep file matches --only/--datasets/--masks/--case")
    if args.list:
        for c in cases:
            path = case_dir(args, *c) / "case.json"
            state = read_json(path)["status"] if path.exists() else "to run"
            print(f"{c[0]:15s} {c[1]:10s} {c[2]:17s} {state}")
        return 0
    failed = []
    if args.stage in ("all", "cases"):
        failed = [r for r in run_cases(cases, args) if r["status"] == "failed"]
    if args.stage in ("all", "report"):
        rows = leaderboard.write(Path(args.out))
        if args.markdown:
            print(leaderboard.markdown(rows, args.budget))
    if failed:
        log.error("%d case(s) failed: %s", len(failed), "; ".join(f"{r['method']} {r['dataset']}/{r['mask']}: "
                                                                  f"{r['reason']}" for r in failed))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
