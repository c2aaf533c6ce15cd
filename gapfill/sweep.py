"""Sweep files -> numbered job-array entries.

A sweep file (TOML) names the script, the options every entry shares and a grid; entries are the
cartesian product of the grid (in file order), then any explicit `[[include]]` tables:

    script = "baselines/train_baselines.py"
    [fixed]
    data_path = "data/synthetic_default.nc"
    [grid]
    method = ["climatology", "dineof"]

    python -m gapfill.sweep FILE --count        # number of entries
    python -m gapfill.sweep FILE --array        # "0-N1" for sbatch --array
    python -m gapfill.sweep FILE --args I       # the command-line options of entry I (shell-quoted)
    python -m gapfill.sweep FILE --list         # every entry
"""
from __future__ import annotations

import itertools
import shlex
import sys
import tomllib
from pathlib import Path

from gapfill.entry import Parser, run_cli
from gapfill.errors import DataError
from gapfill.system import setup_logging


def load(path) -> dict:
    """Parse a sweep file; clear errors for a missing file or a malformed grid."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"sweep file {path} does not exist")
    if path.is_dir():
        raise DataError(f"sweep file {path} is a directory, not a TOML file")
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"sweep file {path} is not valid TOML: {err}") from None
    if not isinstance(spec.get("script"), str):
        raise DataError(f"sweep file {path} names no script (script = \"<method>/train_<method>.py\")")
    for key in ("fixed", "grid"):
        if not isinstance(spec.get(key, {}), dict):
            raise DataError(f"sweep file {path}: [{key}] must be a table")
    for key, values in spec.get("grid", {}).items():
        if not isinstance(values, list) or not values:
            raise DataError(f"sweep file {path}: grid entry {key!r} must be a non-empty list")
    if not isinstance(spec.get("include", []), list) or not all(isinstance(i, dict) for i in spec.get("include", [])):
        raise DataError(f"sweep file {path}: include must be a list of tables ([[include]])")
    return spec


def entries(spec: dict) -> list[dict]:
    """Every entry as an option dict: fixed options, one grid point, then explicit includes."""
    fixed, grid = spec.get("fixed", {}), spec.get("grid", {})
    combos = itertools.product(*grid.values()) if grid else []
    out = [dict(fixed, **dict(zip(grid, combo, strict=True))) for combo in combos]
    out += [dict(fixed, **inc) for inc in spec.get("include", [])]
    return out or [dict(fixed)]


def to_argv(options: dict) -> list[str]:
    """{'prob_masking': 0.9, 'overwrite': True, 'variable': ['a', 'b']} -> ['--prob_masking', '0.9', ...]."""
    argv = []
    for key, value in options.items():
        if value is False or value is None:
            continue
        argv.append(f"--{key}")
        if value is True:
            continue
        argv += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return argv


def main(argv=None) -> int:
    p = Parser(description="Turn a sweep file into numbered job-array entries.")
    p.add_argument("sweep_file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--count", action="store_true", help="print the number of entries")
    g.add_argument("--array", action="store_true", help="print the sbatch --array range, e.g. 0-59")
    g.add_argument("--args", type=int, metavar="I", help="print the options of entry I")
    g.add_argument("--script", action="store_true", help="print the script the entries run")
    g.add_argument("--list", action="store_true", help="print every entry, one per line")
    a = p.parse_args(argv)
    setup_logging("WARNING")                    # stdout carries the answer; errors go to stderr
    spec = load(a.sweep_file)
    items = entries(spec)
    if a.count:
        print(len(items))
    elif a.array:
        print(f"0-{len(items) - 1}")
    elif a.script:
        print(spec.get("script", ""))
    elif a.list:
        for i, e in enumerate(items):
            print(i, shlex.join(to_argv(e)))
    else:
        if not 0 <= a.args < len(items):
            raise DataError(f"entry {a.args} is out of range: {a.sweep_file} has {len(items)} entries (0-{len(items) - 1})")
        print(shlex.join(to_argv(items[a.args])))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
