"""The training engine of the neural methods: a method is a `FieldModule` (a LightningModule that can
reconstruct frames) and a data module; `fit(run, args, module, datamodule)` does the rest with PyTorch
Lightning on the core's Run.

- Validation: every `--val_every` epochs the module reconstructs the validation frames from the model's
  view and the Run scores them on their hidden cells (`Run.score_valid`, the only holder of their truth);
  `valid_rmse` (or the module's `monitor`, e.g. the GAN's `valid_ssim`) drives `best.ckpt`, early stopping
  (`--patience`) and the log.
- Checkpoints in the run folder: `best.ckpt` (best monitored score) and `last.ckpt` (every validation, and
  when a signal stops the run), with optimizer, scheduler, epoch, step and RNG state; a run resumes from
  `last.ckpt` (or from Lightning's newer `hpc_ckpt_*.ckpt` after a SLURM requeue: see Run).
- Logs: one row of train_log.csv per validation through `Run.log` (and W&B offline by default, its files
  under the run folder), one log line per validation (step of max, scores, time left); Lightning's
  progress bar on a terminal only.
- Several GPUs or nodes: `--devices N --num_nodes M --strategy ddp` under `srun`; rank 0 alone writes.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pytorch_lightning as pl
import torch

from gapfill.checkpoints import check_diverged, read_torch
from gapfill.cli import nonnegative_int, positive_float, positive_int
from gapfill.errors import DataError

if TYPE_CHECKING:
    from lightning_fabric.utilities.data import AttributeDict

log = logging.getLogger(__name__)
for _name in ("pytorch_lightning", "lightning_fabric"):          # its start-up tips and device lines: warnings only
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*`srun` command is available.*")   # we decide where srun is used
warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")      # the run folder holds config.json
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)`? is deprecated.*")  # Lightning vs torch 2.x
warnings.filterwarnings("ignore", message=r".*ReduceLROnPlateau conditioned on.*not available.*")  # no validation frames
PRECISIONS = ("32", "16-mixed", "bf16-mixed")


def add_engine_args(p) -> None:
    """The options every Lightning method shares (besides cli.train_parser's)."""
    g = p.add_argument_group("training engine (PyTorch Lightning)")
    g.add_argument("--max_epochs", type=positive_int, default=20, help="epochs (--max_iters caps the optimizer steps)")
    g.add_argument("--val_every", type=positive_int, default=1, help="epochs between validations")
    g.add_argument("--val_every_steps", type=positive_int, default=None,
                   help="validate every N optimizer steps instead of every --val_every epochs")
    g.add_argument("--patience", type=positive_int, default=5, help="validations without improvement before stopping")
    g.add_argument("--max_time", type=positive_float, default=None,
                   help="minutes of training (a requeued run goes on counting); then the run finishes")
    g.add_argument("--devices", type=positive_int, default=1, help="GPUs (or CPU processes) per node")
    g.add_argument("--num_nodes", type=positive_int, default=1, help="nodes (one srun task per device and node)")
    g.add_argument("--strategy", choices=("auto", "ddp"), default="auto", help="ddp: data parallel over devices")
    g.add_argument("--precision", choices=PRECISIONS, default="32", help="mixed precision on GPUs")
    g.add_argument("--accumulate_grad_batches", type=positive_int, default=1)
    g.add_argument("--gradient_clip_val", type=positive_float, default=None)
    g.add_argument("--num_workers", type=nonnegative_int, default=0, help="data loader worker processes")


class FieldModule(pl.LightningModule):
    """Base of a neural method: `training_step` and `configure_optimizers` as in Lightning, plus
    `reconstruct(frames) -> (mean, variance or None)`, each (len(frames), B, Y, X) in physical units,
    from the model's view of the problem (`self.problem`, set by the method)."""

    monitor = ("valid_rmse", "min")          # the validation score that picks best.ckpt and stops early

    if TYPE_CHECKING:
        # save_hyperparameters() stores an AttributeDict (attribute access); Lightning types the property
        # as `AttributeDict | MutableMapping`, which has no attributes
        @property
        def hparams(self) -> AttributeDict: ...

    def reconstruct(self, frames) -> tuple[np.ndarray, np.ndarray | None]:
        """(mean, variance or None), each (len(frames), B, Y, X) in physical units."""
        raise NotImplementedError


M = TypeVar("M", bound=FieldModule)


STOP_REASONS = ("patience", "max_time", "max_epochs", "max_iters")    # why a finished run stopped


class _Validate(pl.Callback):
    """The one validation loop of the Lightning methods: score the validation frames through the Run (every
    `--val_every` epochs, or every `--val_every_steps` optimizer steps), keep `best.ckpt` on a better score,
    stop after `--patience` validations without one or once `--max_time` minutes of training (earlier
    attempts of a requeued run included) are spent. The untrained network is validated first (epoch 0: the
    first guess), so a run keeps its first guess when nothing trained beats it. Its state (best, wait) goes
    into last.ckpt, so a resumed run goes on counting. On a signal the Run caught (USR1) it stops at the end
    of the epoch, whose last.ckpt the checkpoint callback then writes."""

    def __init__(self, run, args: dict, monitor=("valid_rmse", "min")):
        self.run, self.name, self.mode = run, monitor[0], monitor[1]
        self.every = int(args.get("val_every") or 1)
        self.every_steps = int(args.get("val_every_steps") or 0)
        self.patience = int(args.get("patience") or 5)
        self.max_seconds = 60.0 * float(args["max_time"]) if args.get("max_time") else None
        self.best: float | None = None
        self.best_step, self.wait, self.validations = 0, 0, 0
        self.stop_reason: str | None = None
        self.t0, self.step0, self.validated_at = time.time(), 0, -1

    def state_dict(self):
        return {"best": self.best, "best_step": self.best_step, "wait": self.wait, "validations": self.validations}

    def load_state_dict(self, state_dict):
        self.best, self.best_step = state_dict["best"], int(state_dict["best_step"])
        self.wait, self.validations = int(state_dict["wait"]), int(state_dict["validations"])

    @staticmethod
    def steps(trainer, pl_module) -> int:
        """Optimizer steps per batch: one, or one per optimizer under manual optimisation (a GAN's two)."""
        return trainer.global_step // (1 if pl_module.automatic_optimization else max(1, len(trainer.optimizers)))

    def _stop(self, trainer, reason: str) -> None:
        if not trainer.should_stop:
            self.stop_reason = reason
            trainer.should_stop = True

    def on_train_start(self, trainer, pl_module):
        self.t0, self.step0 = time.time(), trainer.global_step
        if trainer.global_step == 0 and self.best is None:           # epoch 0: the untrained network
            self.validate(trainer, pl_module, epoch=0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = self.steps(trainer, pl_module)
        if self.every_steps and step % self.every_steps == 0 and step != self.validated_at:   # once a step
            self.validate(trainer, pl_module, epoch=trainer.current_epoch + 1)
        if self.max_seconds is not None and self.run.seconds() >= self.max_seconds:
            self._stop(trainer, "max_time")

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        if self.run.stop_requested:                 # a signal: validate, then last.ckpt and stop
            trainer.should_stop = True
        if self.every_steps or (epoch % self.every and not trainer.should_stop):
            return
        self.validate(trainer, pl_module, epoch)

    def validate(self, trainer, pl_module, epoch: int) -> None:
        """Score the validation frames, keep best.ckpt on a better score, count patience, log a row."""
        vs = self.run.problem.splits["valid"]
        step = self.steps(trainer, pl_module)
        self.validated_at = step
        row: dict = {"epoch": epoch}
        for k, v in trainer.callback_metrics.items():          # train_loss and any other epoch metric logged
            if k in self.run.log_fields and not k.startswith("valid_"):
                row[k] = float(v)
        self.validations += 1
        check_diverged(self.run.method, step, {k: v for k, v in row.items() if k.endswith("loss")},
                       pl_module.named_parameters())
        if vs.stop > vs.start:
            was_training = pl_module.training
            pl_module.eval()
            with torch.no_grad():
                mean, var = pl_module.reconstruct(range(vs.start, vs.stop))
            pl_module.train(was_training)
            row.update(self.run.score_valid(mean, var, ssim="valid_ssim" in (self.name, *self.run.log_fields)))
            if not np.isfinite(row[self.name]) and np.isfinite(row["valid_rmse"]) and self.best is None:
                log.warning("%s cannot be computed on these validation frames (SSIM needs frames of at least 7 x 7): "
                            "valid_rmse picks best.ckpt and stops early instead", self.name)
                self.name, self.mode = "valid_rmse", "min"
            score = float(row[self.name])
            trainer.callback_metrics[self.name] = torch.tensor(score)   # for a plateau scheduler
            better = np.isfinite(score) and (self.best is None or (score < self.best if self.mode == "min"
                                                                   else score > self.best))
        else:                                       # no validation frames (one image): the newest is best
            score, better = float("nan"), True
        if better:
            self.best, self.best_step, self.wait = (score if vs.stop > vs.start else None), step, 0
            self._save_best(trainer)
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self._stop(trainer, "patience")
        self.run.log(step, **{k: row.get(k) for k in self.run.log_fields})
        total = int(trainer.estimated_stepping_batches)
        left = (time.time() - self.t0) * (total - step) / max(step - self.step0, 1)
        if self.max_seconds is not None:
            left = min(left, max(self.max_seconds - self.run.seconds(), 0.0))
        log.info("step %d of %d, epoch %d: %s%s, about %.0f s left", step, total, epoch,
                 ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float)),
                 " (best)" if better else f" (best {self.best:.4g} at step {self.best_step}; {self.wait} of "
                 f"{self.patience} without improvement)" if self.best is not None else "", left)

    def _save_best(self, trainer) -> None:
        """best.ckpt, atomically (every rank takes part; rank 0 writes)."""
        path = Path(self.run.dir) / "best.ckpt"
        tmp = path.with_name("best.ckpt.tmp")
        trainer.save_checkpoint(str(tmp))
        if trainer.is_global_zero:
            os.replace(tmp, path)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.run.record(train_seconds=self.run.seconds(), log_rows=self.run._csv().rows())


def make_trainer(run, args: dict, extra_callbacks=(), monitor=("valid_rmse", "min")) -> pl.Trainer:
    """A Trainer writing into the run folder with the engine's options (see add_engine_args); `monitor`
    (name, 'min' or 'max'): the validation score for best.ckpt and early stopping (see _Validate)."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.plugins.environments import SLURMEnvironment
    accelerator = "cpu" if run.device == "cpu" else "gpu"
    max_steps = int(args.get("max_iters") or -1)
    last = ModelCheckpoint(dirpath=run.dir, filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                           enable_version_counter=False, auto_insert_metric_name=False, save_on_train_epoch_end=True)
    # ranks and nodes from SLURM under srun; the warning signal is the Run's (see fit), not Lightning's
    plugins: list = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    nodes = int(args.get("num_nodes") or 1)
    if nodes > 1 and not (plugins or "WORLD_SIZE" in os.environ):      # else every rank waits for the others forever
        raise DataError(f"--num_nodes {nodes} needs one process per device on each node: start it with srun "
                        "(see gapfill/slurm/ddp_example.sh) or torchrun")
    devices = int(args.get("devices") or 1) if accelerator == "gpu" or args.get("strategy") == "ddp" else 1
    return pl.Trainer(
        default_root_dir=str(run.dir), accelerator=accelerator, devices=devices,
        num_nodes=nodes,
        strategy="ddp" if args.get("strategy") == "ddp" else "auto", precision=args.get("precision") or "32",
        max_epochs=int(args.get("max_epochs") or 20), max_steps=max_steps,
        accumulate_grad_batches=int(args.get("accumulate_grad_batches") or 1),
        gradient_clip_val=args.get("gradient_clip_val"), logger=False,
        callbacks=[_Validate(run, args, monitor), last, *extra_callbacks],
        enable_progress_bar=sys.stdout.isatty(), enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, plugins=plugins, deterministic=True, use_distributed_sampler=True)


def fit(run, args, module: FieldModule, datamodule: pl.LightningDataModule,
        before_finish: Callable[[], None] | None = None) -> pl.Trainer | None:
    """Train `module` on `datamodule` in `run` (resume from its last checkpoint), call `before_finish()` on
    rank 0 (a last step on the best model: variance calibration...), then finish the run with the best
    validation RMSE. Returns the Trainer, or None for a run already finished.

    Signals: SLURM's warning (USR1) reaches the Run's handler, installed before Lightning's (which then
    stays out: it registers USR1 only where no handler is set); the run finishes its epoch, writes
    last.ckpt and `runs.run_cli` requeues the task from rank 0. Lightning's own handler would save in the
    middle of an epoch, and Lightning 2 resumes such a checkpoint by starting the epoch's data again, so
    the result would differ from an uninterrupted run. SIGTERM (scancel) stops at the next batch and
    exits 75 without requeue."""
    from gapfill.entry import Preempted
    args = vars(args) if not isinstance(args, dict) else args
    if run.status == "finished":
        return None
    trainer = make_trainer(run, args, monitor=module.monitor)
    ckpt = str(run.resume_state) if run.status == "resume" else None
    if ckpt:
        read_torch(ckpt)                            # a crafted or broken file: one line, no code run
        log.info("resuming from %s", ckpt)
    from pytorch_lightning.utilities.exceptions import SIGTERMException
    try:
        # weights_only: a resumed checkpoint is read as tensors and plain containers, never unpickled code
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except SIGTERMException:                        # Lightning stops at the next batch on SIGTERM
        run.close()
        raise Preempted("SIGTERM") from None        # last.ckpt: the last finished epoch
    if run.stop_requested:                          # last.ckpt holds the epoch the signal came in
        run.close()
        raise Preempted(run._preempt.requested)
    if before_finish is not None and run.writer:
        before_finish()
    val = next(c for c in trainer.callbacks if isinstance(c, _Validate))  # type: ignore[attr-defined]
    steps = val.steps(trainer, module)
    reason = val.stop_reason or ("max_iters" if 0 < trainer.max_steps <= trainer.global_step else "max_epochs")
    log.info("training stopped (%s) after %d steps; best validation %s at step %d", reason, steps,
             "n/a" if val.best is None else f"{val.best:.4g}", val.best_step)
    run.finish(best_valid=val.best, stop_reason=reason, steps=steps, best_step=val.best_step)
    return trainer


def load_module(module: M, run_dir, which: str = "best", device: str = "cpu") -> M:
    """`module` (built from the run's config) with the weights of `best.ckpt` (or `last`), on `device`, in
    eval mode. Only tensors are read (`weights_only=True`): a checkpoint never runs code."""
    path = Path(run_dir) / f"{which}.ckpt"
    if not path.exists():
        raise DataError(f"{run_dir}: no {which}.ckpt; the run stopped before its first validation: run its train "
                        "command again to resume it")
    module.load_state_dict(read_torch(path)["state_dict"])
    return module.to(device).eval()


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation of range(n) drawn from (seed, epoch): Lightning calls `set_epoch`, so a resumed run
    sees the batches an uninterrupted one would (a seeded generator would restart its stream).
    `with_epoch`: keys are (epoch, index), for datasets that draw per epoch (new clouds each epoch)."""

    def __init__(self, n: int, seed: int, with_epoch: bool = False):
        self.n, self.seed, self.epoch, self.with_epoch = n, seed, 0, with_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()
        return iter([(self.epoch, i) for i in order] if self.with_epoch else order)

    def __len__(self):
        return self.n


def train_loader(dataset, batch_size: int, args: dict, with_epoch: bool = False) -> torch.utils.data.DataLoader:
    """The training DataLoader of a method: shuffled by (seed, epoch), `--num_workers` workers; `with_epoch`:
    the dataset is indexed by (epoch, index)."""
    n = int(args.get("num_workers") or 0)
    sampler = EpochShuffle(len(dataset), int(args["seed"]), with_epoch)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=n,
                                       persistent_workers=n > 0)
