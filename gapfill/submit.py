"""Submit a method's training array and its test job to SLURM; with --wait, follow both and report.

    python -m gapfill.submit baselines --account ACC --partition PART        # prints the job ids, returns
    python -m gapfill.submit exact_gp                                        # a method's name or its folder
    python -m gapfill.submit baselines --wait                                # ... and reports the outcome
    python -m gapfill.submit baselines --sweep my.toml -- --time=02:00:00    # sbatch options after --

Submits `<m>/submit_train_<m>.sh` as a job array sized from the sweep file, then `<m>/submit_test_<m>.sh`
with `--dependency=afterok:<array> --kill-on-invalid-dep=yes`: a failed training task cancels the test
job instead of leaving it pending forever, and --wait names the task that failed and its log.
Environment variables (SWEEP_ARGS, TEST_ARGS, CHECKPOINT_DIR, RESULTS_DIR, PYTHON) reach the jobs.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gapfill import registry, system
from gapfill.cli import positive_float
from gapfill.entry import Parser, run_cli
from gapfill.errors import DataError
from gapfill.sweep import entries, load

log = logging.getLogger("gapfill.submit")
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
        "PREEMPTED", "SPECIAL_EXIT"}


class SlurmError(RuntimeError):
    """sbatch/scontrol failed; the message holds SLURM's own words."""


def sbatch(script, *options: str, env: dict | None = None, cwd=None) -> str:
    """Submit `script` with `options` from `cwd` (the job's working and log folder); returns the job id."""
    cmd = ["sbatch", "--parsable", *options, str(script)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if res.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout.strip().split(";")[0]


def job_records(job_id: str) -> list[dict]:
    """One dict per job (per array task) from `scontrol show job -o`; [] once SLURM has forgotten the job."""
    res = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if res.returncode != 0:
        if "Invalid job id" in res.stderr:
            return []
        raise SlurmError(f"scontrol show job {job_id}: {res.stderr.strip()}")
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in res.stdout.splitlines() if line.strip()]


def task_name(rec: dict) -> str:
    task = rec.get("ArrayTaskId", "N/A")
    return rec["JobId"] if task == "N/A" else f"{rec['ArrayJobId']}_{task}"


def pending(rec: dict) -> bool:
    """A record standing for array tasks not started yet (ArrayTaskId like "3-4" or "2,5")."""
    task = rec.get("ArrayTaskId", "N/A")
    return task != "N/A" and not task.isdigit()


def wait(job_ids: list[str], poll: float = 1.0, timeout: float | None = None) -> dict[str, dict]:
    """Poll until every job (every array task) has ended; logs each change of state.

    Returns {task name (e.g. '12_3' or '13'): last record}. Raises TimeoutError after `timeout` seconds.
    """
    t0 = time.time()
    seen: dict = {}
    last: dict = {}
    while True:
        recs = {task_name(r): r for j in job_ids for r in job_records(j)}
        for name, rec in recs.items():
            state = (rec["JobState"], rec.get("Restarts", "0"))
            if seen.get(name) != state:
                log.info("job %s: %s%s%s", name, rec["JobState"],
                         f" (restart {state[1]})" if state[1] != "0" else "",
                         f" reason {rec['Reason']}" if rec.get("Reason", "None") != "None" else "")
                seen[name] = state
        last = {**{k: r for k, r in last.items() if not pending(r)}, **recs}
        pending_tasks = any(pending(r) for r in recs.values())
        if recs and not pending_tasks and all(r["JobState"] in DONE for r in recs.values()):
            return last
        if not recs and last:
            return last
        if timeout is not None and time.time() - t0 > timeout:
            raise TimeoutError(f"jobs {', '.join(job_ids)} still running after {timeout:.0f} s")
        time.sleep(poll)


def last_line(path) -> str:
    """Last non-empty line of a job log ('' when unreadable): usually the one-line error of a failed run."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def report(train: dict[str, dict], test: dict[str, dict]) -> bool:
    """Log the outcome: every failed training task with its log; True when the test job completed."""
    failed = {n: r for n, r in train.items() if r["JobState"] != "COMPLETED"}
    for name, rec in sorted(failed.items()):
        log.error("training task %s %s (exit code %s); log %s: %s", name, rec["JobState"], rec.get("ExitCode"),
                  rec.get("StdOut"), last_line(rec.get("StdOut", "")))
    ok = True
    for name, rec in test.items():
        if rec["JobState"] == "COMPLETED":
            log.info("test job %s completed; log %s", name, rec.get("StdOut"))
        elif rec.get("Reason") == "DependencyNeverSatisfied":
            ok = False
            log.error("test job %s cancelled: %d training task(s) failed, so afterok can never be satisfied",
                      name, len(failed))
        else:
            ok = False
            log.error("test job %s %s (exit code %s); log %s: %s", name, rec["JobState"], rec.get("ExitCode"),
                      rec.get("StdOut"), last_line(rec.get("StdOut", "")))
    if ok and not failed:
        log.info("all %d training task(s) and the test job completed", len(train))
    return ok and not failed


def parse_args(argv=None):
    p = Parser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog=__doc__)
    p.add_argument("method", help="method name or folder (gapfill.registry), e.g. exact_gp or exact_gp_related")
    p.add_argument("--sweep", help="sweep file (default <method>/sweep_<short>.toml from the submit script)")
    p.add_argument("--account")
    p.add_argument("--partition")
    p.add_argument("--wait", action="store_true", help="follow both jobs and report; exit 1 if anything failed")
    p.add_argument("--poll", type=positive_float, default=10.0, help="seconds between checks with --wait")
    p.add_argument("--timeout", type=positive_float, help="give up waiting after this many seconds")
    p.add_argument("--log_level", default="INFO")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    args.sbatch_options = argv[cut + 1:]                   # after --: passed to both sbatch calls
    return args


def scripts(method: str) -> tuple[Path, Path]:
    """(train script, test script) of a method, by its registry name or folder."""
    root = system.REPO_ROOT / registry.get(method).folder
    train, test = sorted(root.glob("submit_train_*.sh")), sorted(root.glob("submit_test_*.sh"))
    if len(train) != 1 or len(test) != 1:
        raise DataError(f"{root} must hold one submit_train_*.sh and one submit_test_*.sh "
                        f"(found {len(train)} and {len(test)})")
    return train[0], test[0]


def main(argv=None) -> int:
    args = parse_args(argv)
    system.setup_logging(args.log_level)
    try:
        return submit(args)
    except (SlurmError, TimeoutError) as err:
        log.error("%s", err)
        return 1


def submit(args) -> int:
    train_sh, test_sh = scripts(args.method)
    short = train_sh.stem.removeprefix("submit_train_")
    sweep = Path(args.sweep or train_sh.parent / f"sweep_{short}.toml")
    n = len(entries(load(sweep)))
    missing = [c for c in ("sbatch", "scontrol")[: 1 + args.wait] if shutil.which(c) is None]
    if missing:
        local = f"SWEEP_FILE={sweep} " * bool(args.sweep) + f"bash {train_sh.relative_to(system.REPO_ROOT)}"
        raise DataError(f"{' and '.join(missing)} not found on the PATH: no SLURM here; run the sweep on this machine "
                        f"with `{local}`")
    common = list(args.sbatch_options)
    common += [f"--account={args.account}"] * bool(args.account) + [f"--partition={args.partition}"] * bool(args.partition)
    env = dict(os.environ, SWEEP_FILE=str(sweep))
    train_id = sbatch(train_sh, f"--array=0-{n - 1}", *common, env=env)
    log.info("submitted %s: job array %s, %d task(s) from %s; logs logs/%s_%s_<task>.out",
             train_sh.name, train_id, n, sweep, train_sh.stem.removeprefix("submit_"), train_id)
    test_id = sbatch(test_sh, f"--dependency=afterok:{train_id}", "--kill-on-invalid-dep=yes", *common, env=env)
    log.info("submitted %s: job %s, starts once every task of %s succeeded; log logs/%s_%s.out",
             test_sh.name, test_id, train_id, test_sh.stem.removeprefix("submit_"), test_id)
    if not args.wait:
        log.info("follow with: squeue -j %s,%s", train_id, test_id)
        return 0
    states = wait([train_id, test_id], poll=args.poll, timeout=args.timeout)
    train = {k: v for k, v in states.items() if k.startswith(f"{train_id}_") or k == train_id}
    test = {k: v for k, v in states.items() if k == test_id}
    return 0 if report(train, test) else 1


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
