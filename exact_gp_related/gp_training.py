"""What the exact and the variational GP share around their models: the per-band setup (normalisation,
targets, validation through `Run.score_valid`), the bookkeeping of one band's optimisation loop, the
train main over bands, and the test-time prediction of every band.

A band's fit is `fit(setup, b, run, state) -> result`; `state` = {"bands": {b: result}, "current": the
band in progress} is what `last.pt` holds, and `best.pt` holds {"bands": ...} with each band's best state.
"""
from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch
from tqdm import tqdm

from exact_gp_related.exact_gp_utils import band_targets, cell_inputs, context_width, grid_inputs, inpaint, kernel_label
from gapfill import checkpoints, cli, runs
from gapfill.data import DataError, Normalizer
from gapfill.floor import climatology

log = logging.getLogger(__name__)
LOG_FIELDS = ["band", "loss", "noise", "valid_rmse", "valid_nll", "valid_crps", "valid_coverage95"]


class Setup:
    """Everything a band's fit and its validation need, in normalised units. `problem` is the model's view
    (hidden cells NaN); `score_valid` is `Run.score_valid` in training, None at test time."""

    def __init__(self, args: dict, problem, normalizer: Normalizer | None = None, score_valid=None):
        f, s = problem.field, problem.splits
        self.args, self.problem, self.grid, self.score_valid = args, problem, grid_inputs(f), score_valid
        self.train = s["train"] if s["train"].stop > s["train"].start else slice(0, f.shape[0])
        if s["train"].stop == s["train"].start:
            log.warning("no training frames (a single image?): fitting on the observed cells of every frame")
        visible = problem.visible()
        self.normalizer = normalizer or Normalizer.fit(visible[self.train])
        self.norm = self.normalizer.normalize(visible)                                  # (T, B, Y, X)
        self.clim = climatology(self.norm, s["train"]) if args["mean_function"] == "climatology" else None
        self.observed = problem.observed
        self.dtype = torch.float64 if args["precision"] == "64" else torch.float32
        self.label = f"exact GP {kernel_label(args)}"

    def target(self, b: int) -> np.ndarray:
        """(T, Y, X) the model's view of band b: observed cells only, NaN elsewhere."""
        t = band_targets(self.norm[:, b], None if self.clim is None else self.clim[b])
        return np.where(self.observed, t, np.nan)

    def training_cells(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(x (N, 3), y (N,)) float64: every observed cell of the training frames of band b."""
        target = self.target(b)
        cells = np.isfinite(target[self.train])
        frames = np.arange(self.train.start, self.train.stop)
        x, y = cell_inputs(self.grid, frames, cells), target[self.train][cells]
        if len(y) < 3:
            raise DataError(f"{self.problem.field.path}: band {b} has {len(y)} observed training cells; "
                            "the GP needs a few (lower --prob_masking or add frames)")
        return x, y

    def training_data(self, b: int, device):
        """Tensors (x (n, 3), y (n,)): up to --max_train_points of the observed training cells of band b."""
        x, y = self.training_cells(b)
        cap = self.args["max_train_points"]
        if len(y) > cap:
            keep = np.sort(np.random.default_rng(self.args["seed"] + b).choice(len(y), cap, replace=False))
            x, y = x[keep], y[keep]
        return (torch.as_tensor(x, dtype=self.dtype, device=device),
                torch.as_tensor(y, dtype=self.dtype, device=device))

    def to_physical(self, b: int, mean: np.ndarray, var: np.ndarray):
        """Normalised anomaly mean/variance (n, Y, X) of band b -> physical units."""
        mu, sd = self.normalizer.mean[b], self.normalizer.std[b]
        full = mean + (self.clim[b] if self.clim is not None else 0.0)
        return full * sd + mu, var * sd * sd

    def solver(self, b: int, model, lik):
        """How a frame's posterior is computed (None: exact_gp_utils.posterior)."""
        return None

    def inpaint(self, b: int, model, lik, frames, device, only=None, progress: bool = False):
        """Posterior mean and variance (len(frames), Y, X) of band b, physical units, from the observed cells
        of each frame and of the frames within the model's context."""
        width = context_width(model, self.args, self.train.stop - self.train.start, self.dtype)
        mean, var = inpaint(model, lik, self.grid, self.target(b), self.observed, frames, width,
                            self.args["max_context_points"], f"{self.label} band {b}", self.dtype, device,
                            progress, only, self.solver(b, model, lik))
        return self.to_physical(b, mean, var)

    def predict_valid(self, b: int, model, lik, device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pick, mean, variance): up to --max_valid_frames validation frames of band b, evenly spaced
        (`pick` indexes the validation split), inpainted on their hidden cells; mean and variance
        (len(pick), 1, Y, X) physical units, as `Run.score_valid` takes them with bands=[b]."""
        sl = self.problem.splits["valid"]
        pick = np.unique(np.linspace(0, sl.stop - sl.start - 1, min(sl.stop - sl.start, self.args["max_valid_frames"]))
                         .round().astype(int))                             # evenly spaced, bounded cost
        frames = sl.start + pick
        mean, var = self.inpaint(b, model, lik, frames, device, only=~self.observed[frames])
        return pick, mean[:, None], var[:, None]

    def validate(self, b: int, model, lik, device) -> dict:
        """valid_rmse, valid_nll, valid_crps and valid_coverage95 (physical units) of band b's validation
        frames (`predict_valid`) from `score_valid`, the only way their truth reaches training."""
        sl = self.problem.splits["valid"]
        if sl.stop == sl.start or self.score_valid is None:
            return {}
        pick, mean, var = self.predict_valid(b, model, lik, device)
        return self.score_valid(mean, var, frames=pick, bands=[b], calibration=True)


class BandLoop:
    """The bookkeeping of one band's training loop, shared by the exact and the variational GP: resume from
    `state['current']`, validation every --eval_every steps keeping the best state by --select (valid_rmse,
    valid_nll or valid_crps; valid_rmse for a script without that option) of its predictive distribution,
    calibrated first with --variance_calibration validation, --patience, the log and `last` when a signal
    asks. `for step in loop.bar: ...; if loop.end_step(...): break`."""

    def __init__(self, setup: Setup, b: int, run: runs.Run, state: dict, model, opts: list):
        self.setup, self.b, self.run, self.state, self.model, self.opts = setup, b, run, state, model, opts
        self.what = f"{setup.label} band {b}"
        self.select = setup.args.get("select") or "valid_rmse"
        self.calibrated = setup.args.get("variance_calibration") == "validation"
        cur = state.get("current")
        if cur and cur["band"] == b:
            model.load_state_dict(cur["model"])
            saved = cur["optimizer"]
            for o, st in zip(opts, [saved] if isinstance(saved, dict) else saved, strict=True):  # dict: old last.pt
                o.load_state_dict(st)
            log.info("band %d: resuming at step %d", b, cur["step"])
        else:
            cur = {"band": b, "step": 0, "best": None, "best_val": float("inf"), "best_scores": {}, "bad": 0,
                   "jitter": 0}
        self.cur = state["current"] = cur
        self.bar = tqdm(range(cur["step"], setup.args["max_iters"]), desc=self.what, unit="step", disable=None)
        self.started = (time.time(), cur["step"])             # for the time left in logs without a terminal
        self.valued = False                                   # value_due has answered once in this process

    def value_due(self, step: int) -> bool:
        """Whether the training loss of step `step` (0-based) is read: the first step of this process, a
        validation step, the last step, or every step when there are no validation frames (the loss then picks
        the best state). A costly estimate of it (the CG path's log det) runs on these steps only; the steps
        between log the last one."""
        args, sl = self.setup.args, self.setup.problem.splits["valid"]
        first, self.valued = not self.valued, True
        return (first or (step + 1) % args["eval_every"] == 0 or step + 1 == args["max_iters"]
                or sl.stop == sl.start)

    def end_step(self, step: int, loss: torch.Tensor | None, lik, **row) -> bool:
        """Log step `step` (0-based), validate when due; True when the band is done. `loss` None: not estimated
        on this step (see value_due), an empty cell in the log."""
        args, cur, run, model = self.setup.args, self.cur, self.run, self.model
        value = None if loss is None else loss.item()
        checkpoints.check_diverged(self.what, step + 1, {} if value is None else {"loss": value},
                                   [*model.named_parameters(), *lik.named_parameters()])
        self.bar.set_postfix(**({} if value is None else {"loss": f"{value:.4f}"}), noise=f"{lik.noise.item():.3g}",
                             **{k: f"{v:.1f}" for k, v in row.items()})
        cur["step"] = step + 1
        row = {"band": self.b, **row, "loss": value, "noise": lik.noise.item()}
        last_step = step + 1 == args["max_iters"]
        if (step + 1) % args["eval_every"] == 0 or last_step:
            model.eval()
            val = self.validate(lik)
            model.train()
            row.update(val)
            score = val.get(self.select, value)               # no validation frames: the training loss
            if score < cur["best_val"]:
                cur["best_val"], cur["best"], cur["bad"] = score, copy.deepcopy(model.state_dict()), 0
                cur["best_scores"] = val
                run.save_best(best_state(self.state))
            else:
                cur["bad"] += 1
            t, first = self.started
            left = (time.time() - t) / (step + 1 - first) * (args["max_iters"] - step - 1)
            self.bar.write(f"{self.what} step {step + 1}/{args['max_iters']}: "
                           + (f"valid RMSE {val['valid_rmse']:.4g}, NLL {val['valid_nll']:.4g}, CRPS "
                              f"{val['valid_crps']:.4g}, 95% coverage {val['valid_coverage95']:.2f}; " if val else "")
                           + (f"at most {left:.0f} s left" if left < 120 else f"at most {left / 60:.0f} min left"))
        run.log(step + 1, **row)
        done = last_step or cur["bad"] >= args["patience"]
        cur["model"], cur["optimizer"] = model.state_dict(), [o.state_dict() for o in self.opts]
        if not done:
            run.check(lambda: run.save_last(self.state))
        elif cur["bad"] >= args["patience"]:
            log.info("%s: no improvement in %d evaluations, stopping at step %d", self.what, args["patience"], step + 1)
        return done

    def validate(self, lik) -> dict:
        """The model's validation scores (`Setup.validate`); when calibrated, those of its predictive variance
        times the factor that minimises their NLL (`Run.variance_scale`), which the dict holds as
        'variance_scale', so that the best state comes with its own factor."""
        setup, run, b = self.setup, self.run, self.b
        sl = setup.problem.splits["valid"]
        if not self.calibrated or sl.stop == sl.start:
            return setup.validate(b, self.model, lik, run.device)
        pick, mean, var = setup.predict_valid(b, self.model, lik, run.device)
        scale = run.variance_scale(mean, var, frames=pick, bands=[b])
        return {**run.score_valid(mean, var * scale, frames=pick, bands=[b], calibration=True), "variance_scale": scale}

    def finish(self, n_train: int) -> dict:
        """The band's result: its best state (loaded into the model), validation RMSE ('valid') and scores
        ('valid_scores'), the factor on its predictive variance ('variance_scale', 1.0 uncalibrated), context
        width."""
        cur, model, setup = self.cur, self.model, self.setup
        if cur["best"] is None:                                   # max_iters 0
            cur["best"], cur["best_val"] = copy.deepcopy(model.state_dict()), float("nan")
        model.load_state_dict(cur["best"])
        model.eval()
        width = context_width(model, setup.args, setup.train.stop - setup.train.start, setup.dtype)
        scores = cur.get("best_scores") or {}                     # an older last.pt has none
        return {"model": cur["best"], "valid": scores.get("valid_rmse", cur["best_val"]),
                "valid_scores": {k: v for k, v in scores.items() if k != "variance_scale"},
                "variance_scale": scores.get("variance_scale", 1.0), "steps": cur["step"], "context_width": width,
                "n_train": n_train}


def name_parts(args) -> dict:
    """The run-name parts both GPs share: kernel pair, Matern nu, mean, mask (the identity covers the rest)."""
    extra = {"nu": args.matern_nu} if "matern" in (args.timekernel, args.spacekernel) else {}
    return {"": kernel_label(vars(args)), **extra, "mean": args.mean_function, "mask": cli.mask_tag(vars(args))}


def best_state(state: dict) -> dict:
    """best.pt: the finished bands and the best state so far of the band being fitted."""
    bands = dict(state["bands"])
    cur = state.get("current")
    if cur is not None and cur.get("best") is not None:
        bands[cur["band"]] = {"model": cur["best"], "valid": cur["best_val"], "partial": True}
    return {"bands": bands}


def train_bands(args, method: str, name_parts: dict, setup_cls, fit, log_fields: list[str]) -> int:
    """The main of both GP train scripts: open (or resume) the run, `fit(setup, b, run, state)` every band
    not yet done, finish the run; `setup_cls(args: dict, problem, normalizer, score_valid)`."""
    run = runs.open_training(args, method, name_parts, [*LOG_FIELDS[:1], *log_fields, *LOG_FIELDS[1:]])
    if run.status == "finished":
        return 0
    setup = setup_cls(run.args, run.problem, None, run.score_valid)
    field = run.problem.field
    state = run.resume_state or {"bands": {}}
    if run.status == "new":
        run.record(display_name=setup.label, normalization=setup.normalizer.to_dict())
    for b in range(field.shape[1]):
        if b in state["bands"]:
            continue
        state["bands"][b] = fit(setup, b, run, state)
        state.pop("current", None)
        run.save_best(best_state(state))
        run.save_last(state)
        res = state["bands"][b]
        log.info("band %s: best validation RMSE %.4g %s (selected by %s) after %d steps on %d observed cells; "
                 "posterior context +-%d frames", field.bands[b], res["valid"], field.units[b],
                 run.args.get("select") or "valid_rmse", res["steps"], res["n_train"], res["context_width"])
    bands = [state["bands"][b] for b in sorted(state["bands"])]
    vals = [v["valid"] for v in bands]
    keys = set.intersection(*(set(v.get("valid_scores", {})) for v in bands)) - {"valid_rmse"} if bands else set()
    run.finish(valid_rmse=float(np.mean(vals)) if vals else None,
               **{k: float(np.mean([v["valid_scores"][k] for v in bands])) for k in sorted(keys)},
               variance_scale=[v.get("variance_scale", 1.0) for v in bands],       # older results: 1.0
               context_width=[v["context_width"] for v in bands])
    return 0


def predict_bands(setup: Setup, run_dir, device, build, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance), each (T_split, B, Y, X) in physical units: every band's frames of `split` inpainted
    by `setup` with the band's best state, the variance times the band's 'variance_scale' (1.0 when it has
    none); `build(b, state)` -> (model, likelihood) to load it into."""
    best = checkpoints.load_checkpoint(run_dir, "best")["bands"]
    sl = setup.problem.splits[split]
    means, variances = [], []
    for b in range(setup.problem.field.shape[1]):
        model, lik = build(b, best[b]["model"])
        model.load_state_dict(best[b]["model"])
        model.eval()
        mean, var = setup.inpaint(b, model, lik, range(sl.start, sl.stop), device, progress=True)
        means.append(mean)
        variances.append(var * float(best[b].get("variance_scale", 1.0)))
    return np.stack(means, axis=1), np.stack(variances, axis=1)
