"""Train the partial-convolution UNet (Liu et al. 2018) on random patches of the training frames.

The network predicts the residual over the core's first guess (--first_guess, default auto: the
floor method whose guess scores best on the validation frames); its output layer starts at zero, so training starts from the
first guess, whose validation score is epoch 0. Holes come from gapfill.masks (--mask_kind shapes by
default): the training mask and --mask_variants - 1 redraws of it, every second one with extra clouds.
--stage 1: lr 1e-4, BatchNorm on;
--stage 2: lr 5e-5 with the encoder's BatchNorm frozen, starting from --init_from (a .keras file or a
run folder) or else from a stage-1 phase run first in the same run. One epoch = --steps_per_epoch
batches; after each epoch the validation frames are inpainted from their real mask and scored on their
hidden cells (`Run.score_valid`); the best epoch is best.keras; last.npz (weights, optimizer, epoch) lets a
requeued run go on from the last finished epoch.

    KERAS_BACKEND=torch python pconv_inpainting/train_pconv.py --data_path F --mask_kind shapes \\
        --prob_masking 0.3 --patch_size 128 --max_iters 2000 --checkpoint_dir checkpoints/pconv
"""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from gapfill import checkpoints, cli, runs
from gapfill.data import DataError
from gapfill.errors import RunError
from gapfill.floor import GUESS_TAG
from gapfill.view import resolve_first_guess
from pconv_inpainting import keras  # the package sets the backend before Keras loads
from pconv_inpainting.pconv_data import Data, Patches, inpaint, keras_device
from pconv_inpainting.pconv_model import build_unet, freeze_encoder_bn, make_loss, vgg_features

log = logging.getLogger("pconv.train")
METHOD = "pconv"
STAGE_LR = {1: 1e-4, 2: 5e-5}


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    p.set_defaults(mask_kind="shapes", prob_masking=0.3, mask_type="dynamic", max_iters=200)
    g = p.add_argument_group("partial-convolution UNet")
    g.add_argument("--patch_size", type=cli.power_of_two, default=128, help="training patch (reduced to the field's size)")
    g.add_argument("--batch_size", type=cli.positive_int, default=8)
    g.add_argument("--steps_per_epoch", type=cli.positive_int, default=50, help="steps between validations")
    g.add_argument("--patience", type=cli.positive_int, default=10,
                   help="validations without improvement before the phase stops")
    g.add_argument("--max_time", type=cli.positive_float, default=None,
                   help="minutes of training (a requeued run goes on counting); then the run finishes")
    g.add_argument("--stage", type=int, choices=(1, 2), default=1)
    g.add_argument("--lr", type=cli.positive_float, default=None, help="default: 1e-4 (stage 1), 5e-5 (stage 2)")
    g.add_argument("--init_from", default=None,
                   help="start from this best.keras or run folder (stage 2: the stage-1 run; stage 1: a chunk "
                        "of training continued under a new --run_name)")
    g.add_argument("--context_frames", type=cli.nonnegative_int, default=0,
                   help="neighbouring frames either side as channels")
    g.add_argument("--predict_variance", action="store_true", help="second head trained with Gaussian NLL")
    g.add_argument("--base_filters", type=cli.positive_int, default=64, help="filters of the first level (64 in the paper)")
    g.add_argument("--vgg_weights", default=None, help="local VGG16 weights file for perceptual and style terms")
    # default None (= mse, bilinear): runs trained before these options keep their identity
    g.add_argument("--loss", choices=("mse", "paper"), default=None,
                   help="mse (default): squared error on the hidden cells (physical units); paper: Liu et al.'s and "
                        "CoMBInE's (L1 valid x1, hole x6, total variation x0.1; perceptual and style with --vgg_weights)")
    g.add_argument("--analysis_every", type=cli.positive_int, default=None,
                   help="every N epochs (and at epoch 0) CoMBInE's statistics of the validation frames' hidden "
                        "cells into analysis.csv and analysis_frames.csv, plotted in the test PDF")
    g.add_argument("--upsampling", choices=("bilinear", "nearest"), default=None,
                   help="decoder feature upsampling, bilinear (default) or nearest: the paper's and CoMBInE's network")
    cli.add_first_guess_arg(g)
    g.add_argument("--mask_variants", type=cli.positive_int, default=4,
                   help="training masks per training frame: the training mask and redraws of its kind")
    g.add_argument("--all_frames", action="store_true",
                   help="also train on the observed cells of validation and test frames, hidden by redrawn "
                        "masks (as DINEOF uses every frame); their hidden cells stay unseen")
    return p.parse_args(argv)


def name_parts(args) -> dict:
    """The parts of the default run name (the run's identity also covers every other option)."""
    return {"mask": cli.mask_tag(vars(args)), "fg": GUESS_TAG[args.first_guess], "stage": args.stage,
            "ctx": args.context_frames or None,
            "var": "on" if args.predict_variance else None, "loss": args.loss, "up": args.upsampling,
            "f": args.base_filters, "seed": args.seed}


def last_state(model, state: dict) -> dict:
    """What `last.npz` holds: weights `w_i`, optimizer variables `o_i`, and the loop state as JSON."""
    out = {f"w_{i}": w for i, w in enumerate(model.get_weights())}
    out.update({f"o_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.optimizer.variables)})
    out["state"] = np.array(json.dumps(state))
    return out


ANALYSIS_KEYS = ("abs_mean", "abs_std", "pct_difference", "frame_cells", "frame_share", "frame_rmse")


class Keeper(keras.callbacks.Callback):
    """After each epoch: score the validation frames (their real mask), best.keras on a lower validation
    RMSE (the training loss without validation frames), then `last`; stops on a SLURM signal."""

    def __init__(self, run: runs.Run, data: Data, state: dict, phase: int):
        super().__init__()
        self.run, self.data, self.state, self.phase = run, data, state, phase
        vs = run.problem.splits["valid"]
        self.valid_frames = range(vs.start, vs.stop)
        self.seen = data.visible_in & run.problem.observed[:, None]      # validation: the real mask

    def on_epoch_begin(self, epoch, logs=None):
        self.partial = False

    def on_train_batch_end(self, batch, logs=None):
        self.state["steps"] = self.state.get("steps", 0) + 1
        if self.run.stop_requested and not self.model.stop_training:
            self.model.stop_training = True
            self.partial = batch + 1 < (self.params.get("steps") or 0)
        max_time = self.run.args.get("max_time")
        if max_time and self.run.seconds() >= 60 * max_time and not self.model.stop_training:
            self.model.stop_training = True                       # the epoch ends here, validated and saved
            self.state["stop_reason"] = "max_time"

    def validate(self, epoch: int | None = None) -> dict:
        """valid_rmse (and valid_nll) of the model on the validation frames from their real mask; at epoch 0
        and every --analysis_every epochs, CoMBInE's statistics into analysis*.csv as well (`analysis`)."""
        if not len(self.valid_frames):
            return {}
        every = self.run.args.get("analysis_every") or 0
        due = epoch is not None and every > 0 and epoch % every == 0
        mean, var = inpaint(self.model, self.data, self.seen, self.valid_frames)
        val = self.run.score_valid(mean, var, details=due)
        if epoch is not None and due:
            self.analysis(epoch, {k: val.pop(k) for k in ANALYSIS_KEYS})
        return val

    def analysis(self, epoch: int, st: dict) -> None:
        """Append epoch `epoch`'s statistics: analysis.csv (mean and std of |difference|, % difference over
        the validation frames' hidden cells), analysis_frames.csv (each frame's hidden share and RMSE)."""
        if not self.run.writer:
            return
        row = {"epoch": epoch, "phase": self.phase}
        runs.CsvLog(self.run.dir / "analysis.csv", [*row, "abs_mean", "abs_std", "pct_difference"]).write(
            **row, **{k: st[k] for k in ("abs_mean", "abs_std", "pct_difference")})
        frames = runs.CsvLog(self.run.dir / "analysis_frames.csv", [*row, "frame", "cells", "share", "rmse"])
        for t, n, share, err in zip(self.valid_frames, st["frame_cells"], st["frame_share"], st["frame_rmse"],
                                    strict=True):
            frames.write(**row, frame=t, cells=n, share=share, rmse=err)

    def start(self) -> None:
        """Epoch 0: the untrained network is the first guess; its validation score is the bar to beat."""
        val = self.validate(0)
        if val:
            self.state["best"] = float(val["valid_rmse"])
            self.run.save_best(self.model)
            self.run.log(0, phase=self.phase, loss=float("nan"), **val)
            log.info("epoch 0 (the first guess, %s): validation RMSE %.4g", self.data.kind, val["valid_rmse"])

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self, "partial", False):
            log.warning("stopped in epoch %d: `last` stays at the end of epoch %d", epoch + 1, epoch)
            return
        loss = (logs or {}).get("loss", float("nan"))
        if not math.isfinite(loss):
            raise RunError(f"pconv: the training loss became {loss} in epoch {epoch + 1}; try a smaller --lr")
        val = self.validate(epoch + 1)
        score = val.get("valid_rmse", loss)
        if math.isfinite(score) and score < self.state["best"]:
            self.state.update(best=float(score), wait=0)
            self.run.save_best(self.model)
        else:
            self.state["wait"] = self.state.get("wait", 0) + 1
            if self.state["wait"] >= self.run.args["patience"] and not self.model.stop_training:
                self.model.stop_training = True
                self.state["stop_reason"] = "patience"
        self.state.update(phase=self.phase, epoch=epoch + 1)
        self.run.log(epoch + 1, phase=self.phase, loss=loss, **val)
        self.run.save_last(last_state(self.model, self.state))
        log.info("phase %d epoch %d: loss %.4g%s", self.phase, epoch + 1, loss,
                 f", validation RMSE {val['valid_rmse']:.4g}" if val else "")


def compile_model(model, args: dict, data: Data, lr: float, vgg) -> None:
    model.compile(optimizer=keras.optimizers.Adam(lr), jit_compile=False,
                  loss=make_loss(data.bands, vgg, args["predict_variance"], scale=data.std,
                                 kind=args.get("loss") or "mse"))


def calibrate_variance(run: runs.Run, data: Data) -> float:
    """The variance factor of the best model, fitted on the validation frames by the Run."""
    vs = run.problem.splits["valid"]
    if vs.stop == vs.start:
        return 1.0
    model = checkpoints.load_checkpoint(run.dir, "best")
    return run.variance_scale(*inpaint(model, data, data.visible_in & run.problem.observed[:, None],
                                       range(vs.start, vs.stop)))


def init_source(init_from: str) -> Path:
    """The stage-1 model file --init_from names (a .keras file, or a run folder holding best.keras)."""
    src = Path(init_from)
    src = src / "best.keras" if src.is_dir() else src
    if not src.is_file():
        raise DataError(f"--init_from: {src} does not exist (stage 2 starts from a stage-1 model: a .keras file or "
                        "a PConv run folder)")
    return src


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.init_from:
        init_source(args.init_from)                       # before any folder is made
    run = runs.open_training(args, METHOD, name_parts(args), ["phase", "loss", "valid_rmse", "valid_nll"])
    if run.status == "finished":
        return 0
    with keras.device(keras_device(run.device)):          # --device / --local_rank, on either backend
        train_phases(run, args)
    return 0


def train_phases(run: runs.Run, args) -> None:
    """Stage 1, or stage 2 (after a stage-1 phase when there is no --init_from), epoch by epoch."""
    keras.utils.set_random_seed(args.seed)
    problem = run.problem
    data = Data(vars(args), problem, kind=resolve_first_guess(run, args.first_guess))
    phases = [1, 2] if args.stage == 2 and not args.init_from else [args.stage]   # stage 2 alone: stage 1 first
    state = {"phase": phases[0], "epoch": 0, "best": float("inf")}
    resume = run.resume_state
    if resume is not None:
        state = json.loads(str(resume["state"]))
    else:
        run.record(display_name="pconv UNet", normalization=data.normalizer.to_dict(), patch=data.patch,
                   depth=data.depth, backend=keras.backend.backend())
    log.info("UNet of depth %d on %d x %d patches, %d band(s), %d context frame(s) either side; backend %s",
             data.depth, data.patch, data.patch, data.bands, args.context_frames, keras.backend.backend())
    vgg = vgg_features(args.vgg_weights)
    epochs = max(1, math.ceil(args.max_iters / args.steps_per_epoch))
    mask_kwargs = {k: v for k, v in cli.mask_options(vars(args)).items() if v is not None}
    mask_kwargs["mode"] = "dynamic"
    train = Patches(data, args.batch_size, args.steps_per_epoch, mask_kwargs, args.mask_variants, args.seed,
                    frames=np.arange(problem.field.shape[0]) if args.all_frames else None)
    for phase in phases:
        if phase < state["phase"]:
            continue                                                      # done before a requeue
        model = build_unet(data.bands, data.patch, args.context_frames, args.predict_variance, args.base_filters,
                           upsampling=args.upsampling or "bilinear")
        lr = args.lr or STAGE_LR[phase]
        if state["epoch"] == 0 and (phase == 2 or args.init_from):
            src = run.dir / "best.keras" if phase == 2 and not args.init_from else init_source(args.init_from)
            try:
                model.set_weights(checkpoints.load_keras(src).get_weights())
            except ValueError as err:                     # another architecture (--base_filters, bands, ...)
                raise DataError(f"--init_from {src}: its model does not match this one (--base_filters "
                                f"{args.base_filters}, {data.bands} band(s), --context_frames {args.context_frames}, "
                                f"--predict_variance {args.predict_variance}): {str(err).splitlines()[0][:150]}") from None
            log.info("stage %d starts from %s", phase, src)
        if phase == 2:
            log.info("stage 2: lr %g, %d encoder BatchNorm layers frozen", lr, freeze_encoder_bn(model))
        compile_model(model, vars(args), data, lr, vgg)
        if state["epoch"] > 0 and resume is not None:                    # a requeued run: back to `last`
            model.optimizer.build(model.trainable_variables)
            model.set_weights([resume[f"w_{i}"] for i in range(len(model.weights))])
            for i, v in enumerate(model.optimizer.variables):
                v.assign(resume[f"o_{i}"])
            log.info("phase %d: resuming after epoch %d", phase, state["epoch"])
        train.epoch = state["epoch"] + (phase - 1) * epochs                # the patches an uninterrupted run sees
        keeper = Keeper(run, data, state, phase)
        keeper.set_model(model)
        if state["epoch"] == 0 and phase == phases[0] and not args.init_from:
            keeper.start()
        model.fit(train, epochs=epochs, initial_epoch=state["epoch"], callbacks=[keeper],
                  verbose=1 if sys.stdout.isatty() else 0)
        run.check(lambda: None)                                           # `last` is the last finished epoch
        if state.get("stop_reason") == "max_time":
            break                                                         # the time is spent: no stage 2
        if phase < phases[-1]:
            state.update(phase=phase + 1, epoch=0, best=float("inf"), wait=0, stop_reason=None)
            resume = None
    if args.predict_variance:
        run.record(variance_scale=calibrate_variance(run, data))
    run.finish(best_valid=state["best"], stop_reason=state.get("stop_reason") or "max_iters",
               steps=state.get("steps", 0))
    log.info("best validation RMSE %.4g", state["best"])


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
