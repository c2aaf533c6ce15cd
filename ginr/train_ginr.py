"""Train GINR (generalised implicit neural representation, Grattarola & Vandergheynst 2022) to fill the gaps
of a field, on the core's Lightning engine.

The field's grid becomes a graph (a sphere for a whole circle of longitude, poles merged; the 4- or
8-neighbour grid otherwise; land left out) and each node gets its first --n_fourier Laplacian eigenvectors.
An MLP maps (eigenvectors, frame code with --latents, time features with --time) to the residual over the
first guess (--first_guess, default auto: the floor method whose guess scores best on the validation
frames). It is fitted on the training frames' valid cells (ground truth; their guess reads the training
mask only) and on the observed cells of validation and test frames; the validation frames' hidden cells
(scored through the Run) drive early stopping (--patience), learning-rate decay (--lr_patience) and the
best checkpoint, which is the first guess itself (epoch 0) until training beats it.

    python ginr/train_ginr.py --data_path data/synthetic_default.nc --n_fourier 100 --max_epochs 50 \\
        --checkpoint_dir checkpoints/ginr
"""
from __future__ import annotations

import logging

import pytorch_lightning as pl

from gapfill import cli, lightning, runs
from gapfill.data import DataError
from gapfill.floor import GUESS_TAG
from gapfill.graphs import LAPLACIANS
from gapfill.view import resolve_first_guess
from ginr.ginr_data import FitData, GraphFrames, seen_digest
from ginr.ginr_model import GINR, add_mlp_args, add_time_args

METHOD = "ginr"
log = logging.getLogger(__name__)


def add_model_args(p) -> None:
    g = p.add_argument_group("GINR (option names of the reference code)")
    g.add_argument("--n_fourier", type=cli.positive_int, default=100, help="Laplacian eigenvectors per node")
    g.add_argument("--laplacian", choices=LAPLACIANS, default="combinatorial",
                   help="combinatorial D - A, or cotangent with its mass matrix (resolution-consistent)")
    g.add_argument("--neighbours", type=int, choices=(4, 8), default=4, help="grid graph neighbours")
    add_mlp_args(g)
    add_time_args(g, True, 64, "time frequencies with --time: the fastest has a period of 2 T / time_freqs frames")
    g.add_argument("--latents", type=cli.boolean, nargs="?", const=True, default=True,
                   help="a learned code per frame (--latents False: none)")
    g.add_argument("--latent_dim", type=cli.positive_int, default=64)
    g.add_argument("--lambda_latent", type=cli.nonnegative_float, default=1e-4, help="L2 weight on the codes")
    g.add_argument("--lr", type=cli.positive_float, default=5e-4)
    g.add_argument("--lr_patience", type=cli.positive_int, default=3,
                   help="validations without improvement before the learning rate halves")
    g.add_argument("--batch_size", type=cli.positive_int, default=4, help="chunks of cells per step")
    g.add_argument("--n_nodes_in_sample", type=cli.positive_int, default=1000, help="cells per chunk")
    cli.add_first_guess_arg(g)
    g.add_argument("--leave_out_guess", type=cli.nonnegative_int, default=5,
                   help="fit the residual on seen cells over a guess that leaves them out (that many folds; 0: off)")
    g.add_argument("--cache_dir", default=None,
                   help="embedding cache (default: $GAPFILL_CACHE, else $XDG_CACHE_HOME/gapfill/ginr)")


def parse_args(argv=None):
    p = cli.train_parser(__doc__.splitlines()[0])
    lightning.add_engine_args(p)
    add_model_args(p)
    p.set_defaults(mask_kind="random", prob_masking=0.9, mask_type="dynamic", max_iters=None, max_epochs=100,
                   patience=10)
    return p.parse_args(argv)


def name_parts(args) -> dict:
    return {"mask": cli.mask_tag(vars(args)), "fg": GUESS_TAG[args.first_guess], "k": args.n_fourier,
            "lap": args.laplacian[:3], "L": args.n_layers, "h": args.hidden_dim, "sine": int(args.sine or args.all_sine),
            "z": args.latent_dim if args.latents else 0, "t": int(args.time),
            **({"lo": args.leave_out_guess} if args.leave_out_guess else {}), "seed": args.seed}


def check_args(args, problem) -> None:
    """Clear errors for an embedding the graph cannot hold, and a warning where frames cannot differ."""
    Y, X = problem.field.shape[2:]
    if args.n_fourier >= Y * X:
        raise DataError(f"--n_fourier {args.n_fourier} needs more than {Y * X} nodes (the grid has {Y} x {X})")
    if problem.field.shape[0] > 1 and not (args.latents or args.time):
        log.warning("neither --latents nor --time: every frame gets the same reconstruction")


def main(argv=None) -> int:
    args = parse_args(argv)
    run = runs.open_training(args, METHOD, name_parts(args), ["epoch", "train_loss", "valid_rmse"])
    if run.status == "finished":
        return 0
    problem = run.problem
    check_args(args, problem)
    data = GraphFrames(problem, None, resolve_first_guess(run, args.first_guess), args.n_fourier, args.laplacian,
                       args.neighbours, args.cache_dir, args.leave_out_guess, args.seed)
    normalizer = data.normalizer
    if run.status == "new":
        run.record(display_name="GINR", normalization=normalizer.to_dict(), nodes=int(data.graph.n),
                   graph=data.graph.kind, seen_digest=seen_digest(problem),
                   eigenvalues=[float(v) for v in data.eigenvalues[:12]])
    pl.seed_everything(args.seed, workers=True, verbose=False)
    module = GINR.from_args(vars(args), data.bands, data.T).attach(data)
    fit = FitData(data, args.n_nodes_in_sample, args.batch_size, vars(args))
    if not len(fit.data):
        raise DataError("no seen cell to fit: every cell is hidden")
    lightning.fit(run, args, module, fit)
    return 0


if __name__ == "__main__":
    raise SystemExit(runs.run_cli(main))
