"""Train a sparse variational GP (GPyTorch SVGP) on every observed cell of the training frames.

The ELBO is maximised on mini-batches (--batch_size cells, 0 = all) that stream over every observed cell of
the training frames, epoch after epoch, one band at a time: q(u) on --num_inducing_points inducing inputs
(k-means on the observed inputs; --learn_inducing_locations moves them); --objective pll (default) or
elbo; Adam on everything, or with --natural_gradient (ELBO) natural-gradient steps for q(u) and Adam for
the hyperparameters. Kernels and options
are the exact GP's. Every --eval_every steps the validation frames are inpainted (q(u) refitted around each
frame with the hyperparameters frozen) and scored on their hidden cells; the best state is kept. On SLURM's
warning signal (or SIGTERM) the run saves `last` and stops; the same command resumes.

    python variational_gp_related/train_variational_gp.py --data_path F --timekernel matern --spacekernel matern \\
        --prob_masking 0.9 --num_inducing_points 512 --batch_size 1024 --checkpoint_dir D
"""
from __future__ import annotations

import copy
import logging
import time

import gpytorch
import numpy as np
import torch
from tqdm import tqdm

from exact_gp_related.exact_gp_utils import (add_model_args, context_width, kernel_label, make_kernel,
                                             make_likelihood, robust_step)
from exact_gp_related.train_exact_gp import Setup, save_best, save_last
from gapfill import cli, runs
from gapfill.data import Normalizer
from gapfill.evaluate import open_training
from variational_gp_related.variational_gp_utils import (add_variational_args, batch_indices, frozen_solver, kmeans,
                                                         make_variational_model)

log = logging.getLogger("variational_gp.train")
METHOD = "variational_gp"


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    add_model_args(p)
    add_variational_args(p)
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=0.03, help="Adam")
    g.add_argument("--eval_every", type=int, default=100, help="steps between validation inpaintings")
    g.add_argument("--max_valid_frames", type=int, default=10,
                   help="validation frames inpainted per evaluation (evenly spaced)")
    g.add_argument("--patience", type=int, default=5, help="evaluations without improvement before stopping")
    p.set_defaults(max_iters=1000)      # mini-batch steps: 10 epochs of the default field's 104,550 training cells
    args = p.parse_args(argv)
    for opt in ("num_inducing_points", "max_context_points"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt} must be at least 1, got {getattr(args, opt)}")
    if args.natural_gradient and args.objective != "elbo":
        p.error("--natural_gradient needs --objective elbo (natural-gradient steps are those of the ELBO)")
    return args


def run_name(args, dataset: str) -> str:
    extra = {"nu": args.matern_nu} if "matern" in (args.timekernel, args.spacekernel) else {}
    return args.run_name or runs.make_run_name(METHOD, dataset, {
        "": kernel_label(vars(args)), **extra, "mean": args.mean_function, "mask": cli.mask_tag(vars(args)),
        "M": args.num_inducing_points, "bs": args.batch_size, "obj": args.objective,
        "opt": "ngd" if args.natural_gradient else "adam",
        "Z": "learned" if args.learn_inducing_locations else "kmeans", "seed": args.seed})


class VariationalSetup(Setup):
    """The exact GP's Setup (normalisation, targets, validation) with the sparse posterior for inpainting."""

    def __init__(self, args: dict, problem, normalizer: Normalizer | None = None):
        super().__init__(args, problem, normalizer)
        self.label = f"variational GP {kernel_label(args)}"

    def solver(self, b: int, model, lik):
        return frozen_solver(model, lik, self.args["num_inducing_points"], self.args["seed"] + b,
                             f"{self.label} band {b}")

    def new_model(self, b: int, inducing: np.ndarray, device, x=None, y=None):
        """An untrained SVGP for band b on inducing inputs (M, 3); spectral kernels start from (x, y)."""
        tt = lambda a: None if a is None else torch.as_tensor(a, dtype=self.dtype, device=device)   # noqa: E731
        kernel = make_kernel(self.args, self.grid, tt(x), tt(y))
        model = make_variational_model(self.args, kernel, make_likelihood(), inducing, self.dtype, device)
        return model, model.likelihood


def optimisers(model, args: dict, n: int) -> list:
    """[Adam on every parameter] or, with --natural_gradient, [NGD on q(u), Adam on the hyperparameters]:
    each step takes them in turn, the hyperparameters' gradient at the q(u) just updated (as Salimbeni et
    al. 2018 alternate them), so a full-batch NGD step of 1 makes the ELBO the exact marginal likelihood."""
    if not args["natural_gradient"]:
        return [torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args["lr"])]
    hyper = [p for p in model.hyperparameters() if p.requires_grad]
    return [gpytorch.optim.NGD(model.variational_parameters(), num_data=n, lr=args["ngd_lr"]),
            torch.optim.Adam(hyper, lr=args["lr"])]


def fit_band(setup: VariationalSetup, b: int, state: dict, preempt, run_dir, logger, t0: float, device) -> dict:
    """Mini-batch ELBO ascent for band b; resumes from `state['current']` when present."""
    args = setup.args
    x, y = setup.training_cells(b)                                        # (N, 3), (N,) numpy
    n, seed = len(y), args["seed"] + b
    sub = np.random.default_rng(seed).choice(n, min(n, 2000), replace=False)
    model, lik = setup.new_model(b, kmeans(x, args["num_inducing_points"], seed), device, x[sub], y[sub])
    opts = optimisers(model, args, n)
    cur = state.get("current")
    if cur and cur["band"] == b:
        model.load_state_dict(cur["model"])
        for o, s in zip(opts, cur["optimizer"]):
            o.load_state_dict(s)
        log.info("band %d: resuming at step %d", b, cur["step"])
    else:
        cur = {"band": b, "step": 0, "best": None, "best_val": float("inf"), "bad": 0, "jitter": 0}
    objective = (gpytorch.mlls.PredictiveLogLikelihood if args["objective"] == "pll"
                 else gpytorch.mlls.VariationalELBO)(lik, model, num_data=n)
    what = f"{setup.label} band {b}"
    bsize = n if args["batch_size"] <= 0 else min(args["batch_size"], n)
    log.info("%s: %d observed training cells, %d inducing points, batches of %d (%d steps per epoch)", what, n,
             len(model.variational_strategy.inducing_points), bsize, -(-n // bsize))
    tt = lambda a: torch.as_tensor(a, dtype=setup.dtype, device=device)      # noqa: E731
    floor = 1e-6 if setup.dtype == torch.float64 else 1e-4                   # GPyTorch's own variational jitter
    model.train()
    bar = tqdm(range(cur["step"], args["max_iters"]), desc=what, unit="step", disable=None)
    for step in bar:
        idx = batch_indices(n, args["batch_size"], step, seed)
        xb, yb = tt(x[idx]), tt(y[idx])

        def step_fn(jitter):
            j = max(jitter, floor)
            with gpytorch.settings.variational_cholesky_jitter(float_value=j, double_value=j), \
                    gpytorch.settings.cholesky_jitter(float_value=j, double_value=j):
                for o in opts:                  # NGD (if any) first, then Adam at the updated q(u)
                    o.zero_grad()
                    loss = -objective(model(xb), yb)
                    if not torch.isfinite(loss):
                        break
                    loss.backward()
                    o.step()
            return loss

        loss = robust_step(step_fn, (model, *opts), cur, what, step, setup.dtype)
        epoch = step * bsize / n
        bar.set_postfix(loss=f"{loss.item():.4f}", noise=f"{lik.noise.item():.3g}", epoch=f"{epoch:.1f}")
        cur["step"] = step + 1
        row = {"band": b, "step": step + 1, "epoch": round(epoch, 3), "loss": loss.item(), "noise": lik.noise.item(),
               "seconds": round(time.time() - t0, 2)}
        last_step = step + 1 == args["max_iters"]
        if (step + 1) % args["eval_every"] == 0 or last_step:
            model.eval()
            val = setup.validate(b, model, lik, device)
            model.train()
            row.update(val)
            score = val.get("valid_rmse", loss.item())        # no validation frames: the training loss
            if score < cur["best_val"]:
                cur["best_val"], cur["best"], cur["bad"] = score, copy.deepcopy(model.state_dict()), 0
                save_best(run_dir, state, cur)
            else:
                cur["bad"] += 1
            if val:
                bar.write(f"{what} step {step + 1}: valid RMSE {val['valid_rmse']:.4g}, NLL {val['valid_nll']:.4g}")
        logger.write(**row)
        done = last_step or cur["bad"] >= args["patience"]
        cur["model"], cur["optimizer"] = model.state_dict(), [o.state_dict() for o in opts]
        if not done:
            preempt.check(lambda: save_last(run_dir, state, cur, time.time() - t0))
        if done:
            if cur["bad"] >= args["patience"]:
                log.info("%s: no improvement in %d evaluations, stopping at step %d", what, args["patience"], step + 1)
            break
    if cur["best"] is None:                                       # max_iters 0
        cur["best"], cur["best_val"] = copy.deepcopy(model.state_dict()), float("nan")
    model.load_state_dict(cur["best"])
    width = context_width(model, args, setup.train.stop - setup.train.start, setup.dtype)
    return {"model": cur["best"], "valid": cur["best_val"], "steps": cur["step"], "context_width": width,
            "n_train": n}


def main(argv=None) -> int:
    args = parse_args(argv)
    problem, name, run_dir, status = open_training(args, METHOD, lambda dataset: run_name(args, dataset))
    field = problem.field
    if status == "finished":
        return 0
    preempt = runs.Preemption()
    device = runs.resolve_device(args.device, args.local_rank)
    setup = VariationalSetup(vars(args), problem)
    t0 = time.time()
    if status == "resume":
        state = torch.load(run_dir / "last.pt", weights_only=False)
        t0 -= runs.note_restart(run_dir)
    else:
        state = {"bands": {}}
        runs.save_config(run_dir, METHOD, name, vars(args), display_name=setup.label,
                         normalization=setup.normalizer.to_dict(), bands=field.bands, units=field.units,
                         device=device)
    logger = runs.CsvLog(run_dir / "train_log.csv", ["band", "step", "epoch", "loss", "noise", "valid_rmse",
                                                     "valid_nll", "seconds"])
    for b in range(field.shape[1]):
        if b in state["bands"]:
            continue
        state["bands"][b] = fit_band(setup, b, state, preempt, run_dir, logger, t0, device)
        state.pop("current", None)
        save_best(run_dir, state, None)
        save_last(run_dir, state, {"band": -1}, time.time() - t0)
        log.info("band %s: best validation RMSE %.4g %s after %d steps over %d cells; posterior context +-%d "
                 "frames", field.bands[b], state["bands"][b]["valid"], field.units[b], state["bands"][b]["steps"],
                 state["bands"][b]["n_train"], state["bands"][b]["context_width"])
    vals = [v["valid"] for v in state["bands"].values()]
    runs.update_config(run_dir, finished=True, train_seconds=time.time() - t0, peak_memory_mb=runs.peak_memory_mb(),
                       valid_rmse=float(np.mean(vals)) if vals else None,
                       context_width=[state["bands"][b]["context_width"] for b in sorted(state["bands"])])
    log.info("wrote %s", run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
