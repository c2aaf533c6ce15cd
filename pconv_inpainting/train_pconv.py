"""Train the partial-convolution UNet (Liu et al. 2018) on random patches of the training frames.

Holes come from gapfill.masks (--mask_kind shapes by default). --stage 1: lr 1e-4, BatchNorm on;
--stage 2: lr 5e-5 with the encoder's BatchNorm frozen, starting from --init_from (a .keras file or a
run folder) or else from a stage-1 phase run first in the same run. One epoch = --steps_per_epoch
batches; validation inpaints the validation frames after each epoch; the best epoch is best.keras;
last.weights.h5 + last_optimizer.npz + last_state.json let a requeued run go on from the last epoch.

    KERAS_BACKEND=torch python pconv_inpainting/train_pconv.py --data_path F --mask_kind shapes \\
        --prob_masking 0.3 --patch_size 128 --max_iters 2000 --checkpoint_dir checkpoints/pconv
"""
from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

import pconv_inpainting  # noqa: F401  (default Keras backend: torch)
import keras

from gapfill import cli, runs
from gapfill.data import DataError, Normalizer
from gapfill.evaluate import open_training
from pconv_inpainting.pconv_data import Patches, frame_batch
from pconv_inpainting.pconv_model import build_unet, freeze_encoder_bn, make_loss, unet_depth, vgg_features

log = logging.getLogger("pconv.train")
METHOD = "pconv"
STAGE_LR = {1: 1e-4, 2: 5e-5}


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    p.set_defaults(mask_kind="shapes", prob_masking=0.3, mask_type="dynamic", max_iters=200)
    g = p.add_argument_group("partial-convolution UNet")
    g.add_argument("--patch_size", type=int, default=128, help="training patch (reduced to the field's size)")
    g.add_argument("--batch_size", type=int, default=8)
    g.add_argument("--steps_per_epoch", type=int, default=50)
    g.add_argument("--stage", type=int, choices=(1, 2), default=1)
    g.add_argument("--lr", type=float, default=None, help="default: 1e-4 (stage 1), 5e-5 (stage 2)")
    g.add_argument("--init_from", default=None,
                   help="start from this best.keras or run folder (stage 2: the stage-1 run; stage 1: a chunk "
                        "of training continued under a new --run_name)")
    g.add_argument("--context_frames", type=int, default=0, help="neighbouring frames either side as channels")
    g.add_argument("--predict_variance", action="store_true", help="second head trained with Gaussian NLL")
    g.add_argument("--base_filters", type=int, default=64, help="filters of the first level (64 in the paper)")
    g.add_argument("--vgg_weights", default=None, help="local VGG16 weights file for perceptual and style terms")
    return p.parse_args(argv)


def run_name(args, dataset: str) -> str:
    return args.run_name or runs.make_run_name(METHOD, dataset, {
        "mask": cli.mask_tag(vars(args)), "stage": args.stage, "ctx": args.context_frames or None,
        "var": "on" if args.predict_variance else None, "f": args.base_filters, "seed": args.seed})


class Data:
    """Normalised series (T, B, Y, X) of the problem's field, what the model may see (`visible_in`: the
    problem's visible cells) and where the field has a value (`truth_known`: in training, the hidden cells
    of the validation frames, which validation scores; at test time the problem is the model's view)."""

    def __init__(self, args: dict, problem, normalizer: Normalizer | None = None):
        f, s = problem.field, problem.splits
        self.problem, self.args = problem, args
        vis = problem.visible()
        train = s["train"] if s["train"].stop > s["train"].start else slice(0, f.shape[0])
        self.train_frames = np.arange(train.start, train.stop)
        self.normalizer = normalizer or Normalizer.fit(vis[train])
        self.values = np.nan_to_num(self.normalizer.normalize(f.values)).astype(np.float32)
        self.visible_in = np.isfinite(vis)                                # (T, B, Y, X)
        self.truth_known = np.isfinite(f.values)
        T, B, Y, X = f.shape
        self.bands = B
        self.patch = min(args["patch_size"], 2 ** int(math.log2(min(Y, X))))
        self.depth = unet_depth(self.patch)


def save_last(run_dir: Path, model, state: dict) -> None:
    with runs.atomic_path(run_dir / "last.weights.h5") as tmp:
        model.save_weights(str(tmp) + ".weights.h5")
        Path(str(tmp) + ".weights.h5").rename(tmp)
    with runs.atomic_path(run_dir / "last_optimizer.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, *[keras.ops.convert_to_numpy(v) for v in model.optimizer.variables])
    runs.write_json(run_dir / "last_state.json", state)


def save_best(run_dir: Path, model) -> None:
    with runs.atomic_path(run_dir / "best.keras") as tmp:
        model.save(str(tmp) + ".keras")
        Path(str(tmp) + ".keras").rename(tmp)


class Keeper(keras.callbacks.Callback):
    """After each epoch: best.keras on a lower validation loss, then `last`; stops on a SLURM signal."""

    def __init__(self, run_dir, state, preempt, phase, t0):
        super().__init__()
        self.run_dir, self.state, self.preempt, self.phase, self.t0 = run_dir, state, preempt, phase, t0
        self.log = runs.CsvLog(run_dir / "train_log.csv", ["phase", "epoch", "loss", "val_loss", "seconds"])

    def on_epoch_begin(self, epoch, logs=None):
        self.partial = False

    def on_train_batch_end(self, batch, logs=None):
        if self.preempt.requested and not self.model.stop_training:
            self.model.stop_training = True
            self.partial = batch + 1 < (self.params.get("steps") or 0)

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self, "partial", False):
            log.warning("stopped in epoch %d: `last` stays at the end of epoch %d", epoch + 1, epoch)
            return
        val = (logs or {}).get("val_loss", (logs or {}).get("loss"))
        if val is not None and math.isfinite(val) and val < self.state["best"]:
            self.state["best"] = float(val)
            save_best(self.run_dir, self.model)
        if not math.isfinite(logs.get("loss", float("nan"))):
            raise runs.RunError(f"pconv: the training loss became {logs.get('loss')} in epoch {epoch + 1}; "
                                "try a smaller --lr")
        self.state.update(phase=self.phase, epoch=epoch + 1)
        save_last(self.run_dir, self.model, self.state)
        self.log.write(phase=self.phase, epoch=epoch + 1, loss=logs.get("loss"), val_loss=logs.get("val_loss"),
                       seconds=round(time.time() - self.t0, 2))


def compile_model(model, args: dict, data: Data, lr: float, vgg) -> None:
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=make_loss(data.bands, vgg, args["predict_variance"]),
                  jit_compile=False)


def main(argv=None) -> int:
    args = parse_args(argv)
    problem, name, run_dir, status = open_training(args, METHOD, lambda dataset: run_name(args, dataset))
    keras.utils.set_random_seed(args.seed)
    field = problem.field
    if status == "finished":
        return 0
    preempt = runs.Preemption()
    data = Data(vars(args), problem)
    t0 = time.time()
    phases = [1, 2] if args.stage == 2 and not args.init_from else [args.stage]   # stage 2 alone: stage 1 first
    state = {"phase": phases[0], "epoch": 0, "best": float("inf")}
    if status == "resume" and (run_dir / "last_state.json").exists():
        state = runs.read_json(run_dir / "last_state.json")
        t0 -= runs.note_restart(run_dir)
    else:
        runs.save_config(run_dir, METHOD, name, vars(args), display_name="pconv UNet", bands=field.bands,
                         units=field.units, normalization=data.normalizer.to_dict(), patch=data.patch,
                         depth=data.depth, backend=keras.backend.backend())
    log.info("UNet of depth %d on %d x %d patches, %d band(s), %d context frame(s) either side; backend %s",
             data.depth, data.patch, data.patch, data.bands, args.context_frames, keras.backend.backend())
    vgg = vgg_features(args.vgg_weights)
    epochs = max(1, math.ceil(args.max_iters / args.steps_per_epoch))
    mask_kwargs = {k: v for k, v in cli.mask_options(vars(args)).items() if v is not None}
    mask_kwargs["mode"] = "dynamic"
    train = Patches(data.values, data.visible_in, data.train_frames, data.patch, args.batch_size,
                    args.steps_per_epoch, args.context_frames, mask_kwargs, args.seed)
    vs = problem.splits["valid"]
    valid = None
    if vs.stop > vs.start:
        seen = data.visible_in & problem.observed[:, None]                # validation: the real mask
        (vx, vm), vy, _ = frame_batch(data.values, seen, data.truth_known, range(vs.start, vs.stop),
                                      args.context_frames, 2 ** data.depth)
        valid = ((vx, vm), vy)
    for phase in phases:
        if phase < state["phase"]:
            continue                                                      # done before a requeue
        model = build_unet(data.bands, data.patch, args.context_frames, args.predict_variance, args.base_filters)
        lr = args.lr or STAGE_LR[phase]
        if state["epoch"] == 0 and (phase == 2 or args.init_from):
            src = Path(args.init_from) if args.init_from else run_dir / "best.keras"
            src = src / "best.keras" if src.is_dir() else src
            if not src.exists():
                raise DataError(f"--init_from: {src} does not exist (stage 2 starts from a stage-1 model)")
            model.set_weights(keras.models.load_model(src, compile=False).get_weights())
            log.info("stage %d starts from %s", phase, src)
        if phase == 2:
            log.info("stage 2: lr %g, %d encoder BatchNorm layers frozen", lr, freeze_encoder_bn(model))
        compile_model(model, vars(args), data, lr, vgg)
        if state["epoch"] > 0:                                            # a requeued run: back to `last`
            model.optimizer.build(model.trainable_variables)
            model.load_weights(run_dir / "last.weights.h5")
            with np.load(run_dir / "last_optimizer.npz") as opt:
                for i, v in enumerate(model.optimizer.variables):
                    v.assign(opt[f"arr_{i}"])
            log.info("phase %d: resuming after epoch %d", phase, state["epoch"])
        train.epoch = state["epoch"] + (phase - 1) * epochs                # the patches an uninterrupted run sees
        model.fit(train, validation_data=valid, epochs=epochs, initial_epoch=state["epoch"],
                  callbacks=[Keeper(run_dir, state, preempt, phase, t0)], verbose=1 if sys.stdout.isatty() else 2)
        preempt.check(lambda: None)                                       # `last` is the last finished epoch
        if phase < phases[-1]:
            state.update(phase=phase + 1, epoch=0, best=float("inf"))
            runs.write_json(run_dir / "last_state.json", state)
    runs.update_config(run_dir, finished=True, train_seconds=time.time() - t0, best_valid_loss=state["best"],
                       peak_memory_mb=runs.peak_memory_mb())
    log.info("wrote %s (best validation loss %.4g)", run_dir, state["best"])
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
