"""Train an exact spatio-temporal GP (GPyTorch) on the observed cells of the training frames.

Hyperparameters maximise the exact marginal likelihood (Adam, Cholesky) on up to --max_train_points
observed cells of the training frames, one band at a time. Every --eval_every steps the validation frames
are inpainted (conditioning on their observed cells and those of nearby frames) and scored on their
hidden cells (RMSE, NLL); the best state is kept, --patience evaluations without improvement stop the
band. On SLURM's warning signal (or SIGTERM) the run saves `last` and stops; the same command resumes.

    python exact_gp_related/train_exact_gp.py --data_path F --timekernel matern --spacekernel rbf \\
        --prob_masking 0.9 --mask_type dynamic --max_iters 100 --num_frames_train 50 --num_frames_valid 10 \\
        --checkpoint_dir D
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path

import gpytorch
import numpy as np
import torch
from tqdm import tqdm

from baselines.classical import climatology
from exact_gp_related.exact_gp_utils import (add_model_args, band_targets, cell_inputs, context_width, grid_inputs,
                                             inpaint, kernel_label, make_model, robust_step)
from gapfill import cli, runs
from gapfill.data import DataError, Normalizer
from gapfill.evaluate import open_training
from gapfill.metrics import gaussian_nll, rmse

log = logging.getLogger("exact_gp.train")
METHOD = "exact_gp"


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    add_model_args(p)
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=0.05)
    g.add_argument("--max_train_points", type=int, default=2000,
                   help="observed training cells the likelihood uses (a random subset when there are more)")
    g.add_argument("--eval_every", type=int, default=10, help="steps between validation inpaintings")
    g.add_argument("--max_valid_frames", type=int, default=10,
                   help="validation frames inpainted per evaluation (evenly spaced)")
    g.add_argument("--patience", type=int, default=5, help="evaluations without improvement before stopping")
    return p.parse_args(argv)


def run_name(args, dataset: str) -> str:
    extra = {"nu": args.matern_nu} if "matern" in (args.timekernel, args.spacekernel) else {}
    return args.run_name or runs.make_run_name(METHOD, dataset, {
        "": kernel_label(vars(args)), **extra, "mean": args.mean_function, "mask": cli.mask_tag(vars(args)),
        "seed": args.seed})


class Setup:
    """Everything a band's fit and its validation need, in normalised units."""

    def __init__(self, args: dict, problem, normalizer: Normalizer | None = None):
        f, s = problem.field, problem.splits
        self.args, self.problem, self.grid = args, problem, grid_inputs(f)
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
        tt = lambda a: torch.as_tensor(a, dtype=self.dtype, device=device)   # noqa: E731
        return tt(x), tt(y)

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

    def validate(self, b: int, model, lik, device) -> dict:
        """Inpaint the validation frames of band b; RMSE and NLL (physical units) on their hidden cells."""
        sl = self.problem.splits["valid"]
        if sl.stop == sl.start:
            return {}
        frames = np.arange(sl.start, sl.stop)
        pick = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), self.args["max_valid_frames"])).round()
                         .astype(int))                                  # evenly spaced, bounded cost
        scored = self.problem.scored("valid")[pick, b]
        mean, var = self.inpaint(b, model, lik, frames[pick], device, only=scored)
        truth = self.problem.field.values[frames[pick], b]
        return {"valid_rmse": rmse(truth, mean, scored), "valid_nll": gaussian_nll(truth, mean, var, scored)}


@dataclasses.dataclass
class Run:
    """What every band's fit shares: the saved state {"bands", "current"}, the run folder, the CSV log, the
    signal watcher, the start time (minus earlier attempts) and the device."""
    state: dict
    run_dir: Path
    logger: runs.CsvLog
    preempt: runs.Preemption
    t0: float
    device: str


class BandLoop:
    """The bookkeeping of one band's training loop, shared by the exact and the variational GP: resume from
    `state['current']`, validation every --eval_every steps keeping the best state, --patience, the CSV log
    and `last` when a signal asks. `for step in loop.bar: ...; if loop.end_step(...): break`."""

    def __init__(self, setup: Setup, b: int, run: Run, model, opts: list):
        self.setup, self.b, self.run, self.model, self.opts = setup, b, run, model, opts
        self.what = f"{setup.label} band {b}"
        cur = run.state.get("current")
        if cur and cur["band"] == b:
            model.load_state_dict(cur["model"])
            saved = cur["optimizer"]
            for o, st in zip(opts, [saved] if isinstance(saved, dict) else saved):   # a dict: last.pt of before
                o.load_state_dict(st)
            log.info("band %d: resuming at step %d", b, cur["step"])
        else:
            cur = {"band": b, "step": 0, "best": None, "best_val": float("inf"), "bad": 0, "jitter": 0}
        self.cur = cur
        self.bar = tqdm(range(cur["step"], setup.args["max_iters"]), desc=self.what, unit="step", disable=None)
        self.started = (time.time(), cur["step"])             # for the time left in logs without a terminal

    def end_step(self, step: int, loss: torch.Tensor, lik, **row) -> bool:
        """Log step `step` (0-based), validate when due; True when the band is done."""
        args, cur, run, model = self.setup.args, self.cur, self.run, self.model
        self.bar.set_postfix(loss=f"{loss.item():.4f}", noise=f"{lik.noise.item():.3g}",
                             **{k: f"{v:.1f}" for k, v in row.items()})
        cur["step"] = step + 1
        row = {"band": self.b, "step": step + 1, **row, "loss": loss.item(), "noise": lik.noise.item(),
               "seconds": round(time.time() - run.t0, 2)}
        last_step = step + 1 == args["max_iters"]
        if (step + 1) % args["eval_every"] == 0 or last_step:
            model.eval()
            val = self.setup.validate(self.b, model, lik, run.device)
            model.train()
            row.update(val)
            score = val.get("valid_rmse", loss.item())        # no validation frames: the training loss
            if score < cur["best_val"]:
                cur["best_val"], cur["best"], cur["bad"] = score, copy.deepcopy(model.state_dict()), 0
                save_best(run.run_dir, run.state, cur)
            else:
                cur["bad"] += 1
            t, first = self.started
            left = (time.time() - t) / (step + 1 - first) * (args["max_iters"] - step - 1)
            self.bar.write(f"{self.what} step {step + 1}/{args['max_iters']}: "
                           + (f"valid RMSE {val['valid_rmse']:.4g}, NLL {val['valid_nll']:.4g}; " if val else "")
                           + (f"at most {left:.0f} s left" if left < 120 else f"at most {left / 60:.0f} min left"))
        run.logger.write(**row)
        done = last_step or cur["bad"] >= args["patience"]
        cur["model"], cur["optimizer"] = model.state_dict(), [o.state_dict() for o in self.opts]
        if not done:
            run.preempt.check(lambda: save_last(run.run_dir, run.state, cur, time.time() - run.t0))
        elif cur["bad"] >= args["patience"]:
            log.info("%s: no improvement in %d evaluations, stopping at step %d", self.what, args["patience"], step + 1)
        return done

    def finish(self, n_train: int) -> dict:
        """The band's result: its best state (loaded into the model), validation score, context width."""
        cur, model, setup = self.cur, self.model, self.setup
        if cur["best"] is None:                                   # max_iters 0
            cur["best"], cur["best_val"] = copy.deepcopy(model.state_dict()), float("nan")
        model.load_state_dict(cur["best"])
        model.eval()
        width = context_width(model, setup.args, setup.train.stop - setup.train.start, setup.dtype)
        return {"model": cur["best"], "valid": cur["best_val"], "steps": cur["step"], "context_width": width,
                "n_train": n_train}


def fit_band(setup: Setup, b: int, run: Run) -> dict:
    """Adam on the exact marginal likelihood for band b; resumes from `run.state['current']` when present."""
    x, y = setup.training_data(b, run.device)
    model, lik = make_model(setup.args, setup.grid, x, y, setup.dtype, run.device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=setup.args["lr"])
    loop = BandLoop(setup, b, run, model, [opt])
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
    model.train()
    for step in loop.bar:
        def step_fn(jitter):
            opt.zero_grad()
            with gpytorch.settings.max_cholesky_size(10**7), \
                    gpytorch.settings.cholesky_jitter(float_value=jitter, double_value=jitter):
                loss = -mll(model(x), y)
                if torch.isfinite(loss):
                    loss.backward()
                    opt.step()
            return loss

        loss = robust_step(step_fn, (model, opt), loop.cur, loop.what, step, setup.dtype)
        if loop.end_step(step, loss, lik):
            break
    return loop.finish(len(y))


def save_last(run_dir, state: dict, cur: dict, seconds: float) -> None:
    with runs.atomic_path(run_dir / "last.pt") as tmp:
        torch.save({**state, "current": cur}, tmp)
    runs.update_config(run_dir, train_seconds=seconds)


def save_best(run_dir, state: dict, cur: dict | None) -> None:
    """best.pt: the finished bands and the best state so far of the band being fitted."""
    bands = dict(state["bands"])
    if cur is not None and cur.get("best") is not None:
        bands[cur["band"]] = {"model": cur["best"], "valid": cur["best_val"], "partial": True}
    with runs.atomic_path(run_dir / "best.pt") as tmp:
        torch.save({"bands": bands}, tmp)


def train_bands(args, method: str, run_name, setup_cls, fit, log_fields: list[str]) -> int:
    """The main of both GP train scripts: open (or resume) the run, `fit(setup, b, run)` every band not yet
    done, write config.json; `run_name(args, dataset)`, `setup_cls(args: dict, problem)`."""
    problem, name, run_dir, status = open_training(args, method, lambda dataset: run_name(args, dataset))
    field = problem.field
    if status == "finished":
        return 0
    device = runs.resolve_device(args.device, args.local_rank)
    setup = setup_cls(vars(args), problem)
    t0 = time.time()
    if status == "resume":
        state = torch.load(run_dir / "last.pt", weights_only=False)
        t0 -= runs.note_restart(run_dir)
    else:
        state = {"bands": {}}
        runs.save_config(run_dir, method, name, vars(args), display_name=setup.label,
                         normalization=setup.normalizer.to_dict(), bands=field.bands, units=field.units,
                         device=device)
    logger = runs.CsvLog(run_dir / "train_log.csv", ["band", "step", *log_fields, "loss", "noise", "valid_rmse",
                                                     "valid_nll", "seconds"])
    run = Run(state, run_dir, logger, runs.Preemption(), t0, device)
    for b in range(field.shape[1]):
        if b in state["bands"]:
            continue
        state["bands"][b] = fit(setup, b, run)
        state.pop("current", None)
        save_best(run_dir, state, None)
        save_last(run_dir, state, {"band": -1}, time.time() - t0)
        res = state["bands"][b]
        log.info("band %s: best validation RMSE %.4g %s after %d steps on %d observed cells; posterior context "
                 "+-%d frames", field.bands[b], res["valid"], field.units[b], res["steps"], res["n_train"],
                 res["context_width"])
    vals = [v["valid"] for v in state["bands"].values()]
    runs.update_config(run_dir, finished=True, train_seconds=time.time() - t0, peak_memory_mb=runs.peak_memory_mb(),
                       valid_rmse=float(np.mean(vals)) if vals else None,
                       context_width=[state["bands"][b]["context_width"] for b in sorted(state["bands"])])
    log.info("wrote %s", run_dir)
    return 0


def main(argv=None) -> int:
    return train_bands(parse_args(argv), METHOD, run_name, Setup, fit_band, [])


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
