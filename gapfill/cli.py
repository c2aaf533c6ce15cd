"""Command-line options shared by every train/test script (names follow the original GP scripts)."""
from __future__ import annotations

import argparse
import os

from gapfill.entry import Parser  # noqa: F401  (scripts build their parsers from cli)
from gapfill.errors import DataError
from gapfill.masks import KINDS, MODES
from gapfill.system import resolve_device

WANDB_MODES = ("offline", "online", "disabled")


def _number(kind, low=None, high=None, low_open=False, high_open=False, what=""):
    """An argparse type: a `kind` number within [low, high] (open ends where asked)."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if v != v:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        if (low is not None and (v < low or (low_open and v == low))) or \
                (high is not None and (v > high or (high_open and v == high))):
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {' and '.join(x for x in (lo, hi) if x)}"
                                             + (f" ({what})" if what else ""))
        return v
    parse.__name__ = kind.__name__        # argparse names the type in its messages
    return parse


probability = _number(float, 0, 1, low_open=True, high_open=True, what="a share of cells")
positive_int = _number(int, 1)
nonnegative_int = _number(int, 0)
positive_float = _number(float, 0, low_open=True)
nonnegative_float = _number(float, 0)
at_least_two = _number(int, 2)


def power_of_two(text: str) -> int:
    """An argparse type: an integer power of two, at least 4 (a UNet patch halves at every level)."""
    v = positive_int(text)
    if v < 4 or v & (v - 1):
        raise argparse.ArgumentTypeError(f"{text} is not a power of two of at least 4 (4, 8, 16, ..., 512): "
                                         "each UNet level halves the patch")
    return v


def boolean(text: str) -> bool:
    """A yes/no option given as a value (`--skip False`), for scripts whose users write it so."""
    t = text.strip().lower()
    if t in ("1", "true", "yes", "y", "on"):
        return True
    if t in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def device_name(text: str) -> str:
    """--device: auto, cpu, cuda or cuda:N, and the GPU must be there (kept as given: 'auto' stays 'auto')."""
    try:
        resolve_device(text)
    except DataError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _floats(text: str) -> tuple[float, float]:
    try:
        parts = [float(p) for p in text.replace(",", " ").split()]
    except ValueError:
        parts = []
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers 'LOW,HIGH', got {text!r}")
    if not 0 <= parts[0] <= parts[1] <= 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range: need 0 <= LOW <= HIGH <= 1 (shares of cells)")
    return parts[0], parts[1]


class _RangeAction(argparse.Action):
    """--cloud_range 0.2,0.6 or --cloud_range 0.2 0.6: one (low, high) tuple."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            setattr(namespace, self.dest, _floats(" ".join(values)))
        except argparse.ArgumentTypeError as err:
            parser.error(f"argument {option_string}: {err}")


def add_first_guess_arg(g, default: str = "auto") -> None:
    """--first_guess of a neural method: what it refines (gapfill.floor.first_guess), or auto."""
    from gapfill.floor import FIRST_GUESS
    g.add_argument("--first_guess", choices=(*FIRST_GUESS, "auto"), default=default,
                   help="what the network refines (gapfill.floor.first_guess); auto: the floor method whose guess "
                        "scores best on the validation frames (gapfill.view.resolve_first_guess)")


def add_generator_args(p: argparse.ArgumentParser, out: str, n_time: int, time_help: str,
                       axes: tuple[str, str]) -> None:
    """--out, --n_time, --ny, --nx and --seed of a data generator (`axes`: what a row and a column are)."""
    p.add_argument("--out", default=out, help="output NetCDF path")
    p.add_argument("--n_time", type=positive_int, default=n_time, help=time_help)
    p.add_argument("--ny", type=at_least_two, default=64, help=f"grid rows ({axes[0]})")
    p.add_argument("--nx", type=at_least_two, default=64, help=f"grid columns ({axes[1]})")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (same seed -> identical file values)")


def add_common_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=nonnegative_int, default=0, help="seeds the model and the masks")
    g.add_argument("--device", type=device_name, default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--local_rank", type=nonnegative_int, default=None, help="GPU index (alias used by launchers)")
    g.add_argument("--log_level", default="INFO")


def add_mask_args(p: argparse.ArgumentParser, test: bool = False) -> None:
    """Training masks (`--mask_type` ...) or test masks (`--test_mask_type` ..., default: as in training)."""
    pre, default = ("test_", None) if test else ("", "fixed")
    g = p.add_argument_group("test mask (defaults: the training mask)" if test else "mask")
    g.add_argument(f"--{pre}mask_type", choices=MODES, default=default,
                   help="fixed: one mask for all frames (sensor stations); dynamic: a new mask per frame")
    g.add_argument(f"--{pre}mask_kind", choices=KINDS, default=None if test else "random")
    g.add_argument(f"--{pre}prob_masking", type=probability, default=None if test else 0.9,
                   help="share of cells hidden (random, shapes, circle, sources, band)")
    g.add_argument(f"--{pre}radius", type=positive_float, default=None,
                   help="circle radius in cells; sources: the largest hole's radius (default min(Y, X) / 24)")
    g.add_argument(f"--{pre}center", type=float, nargs=2, default=None, metavar=("ROW", "COL"),
                   help="circle centre in cells (default: the frame's centre; dynamic: random per frame)")
    g.add_argument(f"--{pre}cloud_range", nargs="+", action=_RangeAction, default=None if test else (0.2, 0.6),
                   metavar="LOW,HIGH", help="clouds: hidden share drawn from LOW,HIGH (or LOW HIGH)")


def train_parser(description: str) -> argparse.ArgumentParser:
    """Parser with the options every train_<m>.py shares; methods add their own group."""
    p = Parser(description=description)
    g = p.add_argument_group("data")
    g.add_argument("--data_path", required=True, help="CF NetCDF file")
    g.add_argument("--variable", nargs="+", default=None, help="variables to use as bands (default: all)")
    g.add_argument("--level", type=float, default=None,
                   help="one level (coordinate value, e.g. 850) of variables with a level axis "
                        "(default: every level, each a band VAR@LEVEL)")
    g.add_argument("--num_frames_train", type=positive_int, default=None, help="default: 70%% of the frames")
    g.add_argument("--num_frames_valid", type=positive_int, default=None, help="default: 15%% of the frames")
    add_mask_args(p)
    g = p.add_argument_group("training")
    g.add_argument("--max_iters", type=positive_int, default=100, help="optimiser steps (DINEOF: SVD iterations per rank)")
    g.add_argument("--checkpoint_dir", default=None, help="default: checkpoints/<method>")
    g.add_argument("--run_name", default=None, help="default: built from the options")
    g.add_argument("--overwrite", action="store_true",
                   help="train anew over a run of that name (removes only the files a run writes)")
    add_wandb_args(p)
    add_common_args(p)
    return p


def add_wandb_args(p) -> None:
    """--wandb_mode (offline by default, or $WANDB_MODE) and --wandb_project."""
    g = p.add_argument_group("Weights & Biases (the CSV log stays the record)")
    env_mode = os.environ.get("WANDB_MODE", "offline")
    g.add_argument("--wandb_mode", choices=WANDB_MODES, default=env_mode if env_mode in WANDB_MODES else "offline",
                   help="offline: files under <run>/wandb, nothing sent; online: sent to W&B (needs a login); "
                        "the default is $WANDB_MODE when set")
    g.add_argument("--wandb_project", default="gapfill")


def test_parser(description: str) -> argparse.ArgumentParser:
    """Parser for test_<m>.py: everything else comes from the checkpoints."""
    p = Parser(description=description)
    p.add_argument("--checkpoints", nargs="+", required=True, help="run folders written by the train script")
    p.add_argument("--results_folder", default=None, help="default: results/<method>")
    p.add_argument("--num_frames_test", type=positive_int, default=None, help="default: every frame after validation")
    p.add_argument("--data_path", default=None, help="override the checkpoint's data file (same grid)")
    p.add_argument("--show", choices=("std", "variance"), default="std",
                   help="the PDF's uncertainty column: predictive std (field units) or variance (units squared)")
    p.add_argument("--pages", choices=("test", "all"), default="test",
                   help="all: the PDF shows the training and validation frames too, each reconstructed from its "
                        "observed cells (the GPs; only the test frames are scored)")
    add_mask_args(p, test=True)
    add_common_args(p)
    return p


def mask_options(args: dict, test: bool = False) -> dict:
    """The mask settings of a parsed namespace/dict as make_mask keywords plus kind/mode."""
    pre = "test_" if test else ""
    return {"kind": args.get(f"{pre}mask_kind"), "mode": args.get(f"{pre}mask_type"),
            "prob_masking": args.get(f"{pre}prob_masking"), "radius": args.get(f"{pre}radius"),
            "cloud_range": args.get(f"{pre}cloud_range"), "center": args.get(f"{pre}center")}


def mask_tag(args: dict, test: bool = False) -> str:
    """Short run-name part for a mask: random-fixed-p0.9, circle-dynamic-r10, clouds-dynamic-c0.2-0.6."""
    o = mask_options(args, test)
    if o["kind"] == "clouds":
        lo, hi = o["cloud_range"]
        detail = f"c{lo:g}-{hi:g}"
    elif o["kind"] == "circle" and o["radius"] is not None:
        detail = f"r{o['radius']:g}"
    else:
        detail = f"p{o['prob_masking']:g}"
    if o["kind"] == "sources" and o["radius"] is not None:
        detail += f"-r{o['radius']:g}"
    if o["kind"] == "circle" and o.get("center") is not None:
        detail += "-at{:g}x{:g}".format(*o["center"])
    return f"{o['kind']}-{o['mode']}-{detail}"
