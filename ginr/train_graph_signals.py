"""Train a GINR (`ginr.graph_signals.SignalINR`) on a graph-signal dataset folder (the GINR npz format).

    python -m data_generation.make_graph_data gray_scott --out data/gray_scott
    python ginr/train_graph_signals.py --dataset_dir data/gray_scott --time --train_every 10 --eval_every 5 \\
        --out_dir checkpoints/graph_signals/gray_scott
    python ginr/eval_gray_scott.py --checkpoint checkpoints/graph_signals/gray_scott/best.ckpt \\
        --dataset_dir data/gray_scott --out_dir results/graph_signals/gray_scott

With --train_every 10 --eval_every 5 the network sees the samples whose time is a multiple of 10 and is
judged on the times t % 5 == 0 between them: --valid_fraction of their nodes drive early stopping, the
learning-rate decay and the best checkpoint; the other nodes are the test. Without a time split, nodes are
held out (--valid_fraction, --test_fraction). A dataset of several graphs (each sample file with its own
fourier and points, of one size or not) trains with --latents (a learnt code per sample, the reference's
auto-decoder); --cut N reads the first N sample files. Writes `out_dir/best.ckpt`, `out_dir/config.json` and the W&B run
(offline by default: `out_dir/wandb`, with every epoch's losses and the test scores).

Cost: the default network (512 x 4) on the default Gray-Scott set (3704 nodes, 11 training times) takes about
5 s an epoch on two CPU cores; `--hidden_dim 256 --lr 1e-3 --max_epochs 100` took 5 minutes there (held-out
RMSE 0.011, linear interpolation in time 0.012). A GPU is the place for the defaults.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytorch_lightning as pl

from gapfill import cli
from gapfill.entry import run_cli
from gapfill.system import setup_logging
from ginr.ginr_model import add_mlp_args, add_time_args
from ginr.graph_signals import GraphSignals, SignalINR, finish_logger, fit, held_out_scores, wandb_logger

log = logging.getLogger(__name__)


def parse_args(argv=None):
    p = cli.Parser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset_dir", required=True, help="GINR dataset folder (npz_files/data_*.npz)")
    p.add_argument("--out_dir", default="checkpoints/graph_signals/run", help="where best.ckpt goes")
    p.add_argument("--n_fourier", type=cli.positive_int, default=100, help="eigenvectors per node used")
    add_mlp_args(p, omega_0=30.0)
    add_time_args(p, False, 6, "time frequencies; keep below (number of training times) / 2 to interpolate smoothly")
    p.add_argument("--classify", type=cli.boolean, nargs="?", const=True, default=False,
                   help="the target is one-hot classes: cross-entropy, accuracy and NMI")
    p.add_argument("--lr", type=cli.positive_float, default=5e-4)
    p.add_argument("--lr_patience", type=cli.positive_int, default=10, help="epochs before the rate halves")
    p.add_argument("--patience", type=cli.positive_int, default=30, help="epochs without improvement to stop")
    p.add_argument("--max_epochs", type=cli.positive_int, default=300)
    p.add_argument("--batch_size", type=cli.positive_int, default=4, help="samples per step")
    p.add_argument("--n_nodes_in_sample", type=cli.positive_int, default=1000, help="random nodes per sample")
    p.add_argument("--train_every", type=cli.positive_int, default=None, help="train on times t %% N == 0")
    p.add_argument("--eval_every", type=cli.positive_int, default=None, help="evaluate on t %% N == 0, not trained")
    p.add_argument("--valid_fraction", type=cli.nonnegative_float, default=0.1, help="nodes watched for stopping")
    p.add_argument("--test_fraction", type=cli.nonnegative_float, default=0.0,
                   help="nodes never seen (without a time split; with one, every non-validation node is test)")
    p.add_argument("--latents", type=cli.boolean, nargs="?", const=True, default=False,
                   help="auto-decoder: a learnt code per sample joined to the input (datasets of several graphs)")
    p.add_argument("--latent_dim", type=cli.positive_int, default=256, help="size of each sample's code")
    p.add_argument("--lambda_latent", type=cli.nonnegative_float, default=1e-4, help="penalty on the codes' norm")
    p.add_argument("--cut", type=int, default=-1, help="use the first N sample files only (-1: all)")
    p.add_argument("--device", type=cli.device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=cli.nonnegative_int, default=0)
    cli.add_wandb_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    pl.seed_everything(args.seed, workers=True, verbose=False)
    dm = GraphSignals.from_folder(args.dataset_dir, cut=args.cut if args.cut > 0 else None,
                                  n_nodes_in_sample=args.n_nodes_in_sample,
                                  batch_size=args.batch_size, n_fourier=args.n_fourier,
                                  valid_fraction=args.valid_fraction, test_fraction=args.test_fraction,
                                  train_every=args.train_every, eval_every=args.eval_every, seed=args.seed)
    if args.train_every and not args.time:
        log.warning("--train_every without --time: the network cannot tell the samples apart")
    module = SignalINR.for_data(dm, hidden_dim=args.hidden_dim, n_layers=args.n_layers, skip=args.skip,
                                sine=args.sine, all_sine=args.all_sine, omega_0=args.omega_0, bn=args.bn,
                                dropout=args.dropout, time=args.time, time_freqs=args.time_freqs,
                                classify=args.classify, lr=args.lr, lr_patience=args.lr_patience,
                                latents=args.latents, latent_dim=args.latent_dim, lambda_latent=args.lambda_latent)
    log.info("%s nodes, %d eigenvectors, %d training / %d evaluation samples; nodes: %d train, %d valid, %d test",
             dm.n_nodes.min() if dm.same_size else f"{dm.n_nodes.min()}-{dm.n_nodes.max()}", dm.n_fourier,
             len(dm.train_samples), len(dm.eval_samples), len(dm.train_nodes),
             len(dm.valid_nodes), len(dm.test_nodes))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    logger = wandb_logger(out, vars(args))
    best = fit(module, dm, out, args.max_epochs, args.patience, args.device, logger)
    scores = held_out_scores(module, dm) if len(dm.test_nodes) else {}
    finish_logger(logger, scores)
    (out / "config.json").write_text(json.dumps({"args": vars(args), "checkpoint": str(best), "test": scores,
                                                 "train_seconds": time.perf_counter() - t0}, indent=1))
    log.info("trained in %.1f s; test %s", time.perf_counter() - t0, scores)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
