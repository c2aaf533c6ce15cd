"""How every script starts and ends: `Parser` makes a bad option one line on stderr (exit code 2),
`run_cli` does the same for bad input found later, and turns a run stopped by a signal (SLURM's
warning, SIGTERM) into a requeue or exit code 75. Light on imports, so small tools start fast."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from gapfill.errors import DataError, RunError
from gapfill.system import limit_threads, setup_logging

log = logging.getLogger(__name__)
EXIT_RESUME = 75   # EX_TEMPFAIL: stopped early after saving `last`; the same command resumes
ACTIVE_RUNS: list = []    # training runs open in this process (gapfill.runs.Run): run_cli calls .fail(reason) on a RunError


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (`prog: error: ...; see --help`), exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}; see {self.prog} --help\n")
        raise SystemExit(2)


class Preempted(Exception):
    """Raised by `Run.check` once `last` is saved; `signal` names the signal that asked for it."""

    def __init__(self, signal_name: str):
        super().__init__(f"stopped on {signal_name}")
        self.signal = signal_name


class Preemption:
    """Catch SLURM's warning signal (`--signal=B:USR1@90`) and SIGTERM; the training loop calls `check`.

    On USR1 (time limit near) the run saves `last` and requeues its own array task (`scontrol requeue`);
    on SIGTERM (scancel, preemption, `kill`) it saves `last` and exits without requeueing,
    since SLURM's own preemption requeues the job itself and a user's scancel must stay a cancel.
    The submit scripts `exec` Python, so the batch shell that `B:` signals is this process.
    """

    def __init__(self):
        self.requested: str | None = None
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        self.requested = signal.Signals(signum).name
        log.warning("received %s: will save `last` and stop", self.requested)

    def check(self, save_last: Callable[[], Any]) -> None:
        """Between two steps: if a signal came, call `save_last()` and raise Preempted."""
        if self.requested:
            save_last()
            log.warning("saved `last` after %s", self.requested)
            raise Preempted(self.requested)

    @staticmethod
    def requeue() -> bool:
        """Requeue this SLURM job (its own array task); False outside SLURM."""
        job = os.environ.get("SLURM_JOB_ID")
        if os.environ.get("SLURM_PROCID", "0") != "0":
            return True                         # one task of an srun job step: rank 0 requeues the job
        if not job:
            log.info("not running under SLURM: stopping; run the same command again to resume")
            return False
        if os.environ.get("SLURM_ARRAY_TASK_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        res = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if res.returncode == 0:
            log.warning("requeued SLURM job %s: it restarts from `last`", job)
        else:
            log.error("scontrol requeue %s failed (rc %s): %s", job, res.returncode, res.stderr.strip())
        return res.returncode == 0


def _one_line(err: BaseException) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "stream", None) is sys.stderr for h in root.handlers):
        setup_logging(logging.getLevelName(min(root.level, logging.INFO)))   # the error before any setup_logging
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = " ".join(str(err).split())
    log.error("%s", text)


def run_cli(main, argv=None) -> int:
    """Run a script's main; bad input, a refused run (DataError) or a file that cannot be read or written
    (OSError) ends with one clear log line and exit code 2 (a run it refused before its first checkpoint
    is removed again), a run that cannot go on (RunError) with one line and exit code 3, the training run it stopped
    marked failed with that line (`failed` in its config.json).

    A run stopped by `Run.check` has saved `last`: on SLURM's warning signal (USR1) it requeues its
    own job (exit 0; the job restarts and resumes); otherwise it exits with EXIT_RESUME.
    """
    ACTIVE_RUNS.clear()                                # runs left open by an earlier main in this process
    limit_threads()                                    # no more threads than the cores the job was given
    try:
        code = main(argv)
        return code if type(code) is int else 0       # mains may return what they wrote (a path, records)
    except (DataError, OSError) as err:              # bad input, a refused run, a path that cannot be written
        _one_line(err)
        for run in list(ACTIVE_RUNS):
            run.discard()                              # a refusal leaves no run folder behind
        return 2
    except RunError as err:
        _one_line(err)
        for run in list(ACTIVE_RUNS):
            run.fail(" ".join(str(err).split()))
        return 3
    except Preempted as stop:
        if stop.signal == "SIGUSR1" and Preemption.requeue():
            return 0
        log.warning("stopped on %s after saving `last`; run the same command again to resume", stop.signal)
        return EXIT_RESUME
