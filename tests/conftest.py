"""The session's SLURM cluster: tests marked `slurm` use the `slurm_cluster` fixture, which starts the
single-node cluster of tests/slurm/ once, points SLURM_CONF at it and stops it at the end.

Where the cluster cannot start (not root, no Debian packages) those tests skip, except in CI
(`CI=true` or `GAPFILL_REQUIRE_SLURM=1`, set by .ci/run), where they fail.
"""
import os
import signal
import subprocess
from pathlib import Path

import pytest

SLURM_DIR = Path(__file__).resolve().parent / "slurm"
# Train scripts default to W&B offline (files under the run folder); the suite skips it (2 s a run) except
# where a test asks for it with --wandb_mode offline.
os.environ.setdefault("WANDB_MODE", "disabled")


def _required() -> bool:
    return (os.environ.get("CI", "").lower() in ("1", "true", "yes")
            or os.environ.get("GAPFILL_REQUIRE_SLURM") == "1")


@pytest.fixture
def sigterm_after_epoch(monkeypatch):
    """`sigterm_after_epoch(n)`: the Lightning engine sends its process a real SIGTERM (as scancel does) at
    the end of epoch n; `sigterm_after_epoch(None)` takes it back."""
    from gapfill import lightning
    real = lightning._Validate.on_train_epoch_end

    def arm(epoch):
        def stop(self, trainer, pl_module):
            real(self, trainer, pl_module)
            if trainer.current_epoch + 1 == epoch:
                os.kill(os.getpid(), signal.SIGTERM)
        monkeypatch.setattr(lightning._Validate, "on_train_epoch_end", real if epoch is None else stop)
    return arm


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start (or reuse) the local cluster; yields the path of its slurm.conf."""
    try:
        res = subprocess.run(["bash", str(SLURM_DIR / "start_local_cluster.sh")], capture_output=True,
                             text=True, timeout=300)
    except subprocess.TimeoutExpired:
        res = subprocess.CompletedProcess([], 1, "", "start_local_cluster.sh timed out after 300 s")
    if res.returncode != 0 or "SLURM_CONF=" not in res.stdout:
        why = f"the local SLURM cluster did not start: {res.stderr.strip()[-2000:]}"
        if _required():
            pytest.fail(why)
        pytest.skip(why)
    conf = res.stdout.strip().splitlines()[-1].split("=", 1)[1]
    started_here = "reusing" not in res.stderr
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield conf
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old
    if started_here:
        subprocess.run(["bash", str(SLURM_DIR / "stop_local_cluster.sh")], capture_output=True, timeout=120,
                       env=dict(os.environ, SLURM_CONF=conf))
