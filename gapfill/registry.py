"""The method registry: what the benchmark, `gapfill.submit`, the test-time checks and the shared tests know
about a method, read from one `method.toml` in each method folder (as data: the core imports no method).

    from gapfill import registry
    registry.methods()                  # {name: Method}, in leaderboard order
    registry.get("exact_gp_related")    # by name or by folder
    registry.get("gan").module("train") # the train script's module (importlib), for the benchmark and tests

A `method.toml` holds: `name`, `order`, `train` and `test` (the scripts' modules), `timed` (takes
--max_time), `[budgets]` (train options for smoke, default, large, converge; a `dynamic` table adds options
for dynamic masks), `[not_applicable]` (data kind -> why) and `[tests]` (the options the shared tests give:
`bad_input`, `checked`, `leakage`, `diverge`, `refused_late`). See README "Adding a method".
"""
from __future__ import annotations

import functools
import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from gapfill import system
from gapfill.errors import DataError

BUDGETS = ("smoke", "default", "large", "converge")
KINDS = ("photo", "series")          # a photograph (one frame) or a time series
TEST_KEYS = {"bad_input", "checked", "leakage", "diverge", "refused_late"}


@dataclass(frozen=True)
class Method:
    """One registry entry (see the module docstring)."""
    name: str
    folder: str
    order: int
    train: str
    test: str
    timed: bool = False
    budgets: dict[str, dict] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    tests: dict = field(default_factory=dict)

    def module(self, which: str) -> ModuleType:
        """The `train` or `test` script's module."""
        return importlib.import_module(self.train if which == "train" else self.test)

    def script(self, which: str) -> str:
        """The `train` or `test` script's path from the repository root, e.g. 'gan_gapfill/test_gan.py'."""
        return (self.train if which == "train" else self.test).replace(".", "/") + ".py"

    def options(self, budget: str, dynamic: bool) -> dict:
        """The train options of `budget` (with the `dynamic` table's on top for a dynamic mask)."""
        opts = dict(self.budgets[budget])
        per_mode = opts.pop("dynamic", {})
        return {**opts, **per_mode} if dynamic else opts


def _read(path: Path) -> Method:
    """One method.toml, checked: a wrong entry names its file and what is wrong."""
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise DataError(f"{path}: {err}") from None
    need = ["name", "order", "train", "test"]
    if missing := [k for k in need if k not in spec]:
        raise DataError(f"{path}: needs {', '.join(missing)}")
    if unknown := set(spec) - {*need, "timed", "budgets", "not_applicable", "tests"}:
        raise DataError(f"{path}: unknown keys {sorted(unknown)}")
    budgets = spec.get("budgets", {})
    if set(budgets) != set(BUDGETS):
        raise DataError(f"{path}: [budgets] needs exactly {', '.join(BUDGETS)} (has {', '.join(budgets) or 'none'})")
    if bad := set(spec.get("not_applicable", {})) - set(KINDS):
        raise DataError(f"{path}: [not_applicable] keys are data kinds {KINDS}, not {sorted(bad)}")
    if bad := set(spec.get("tests", {})) - TEST_KEYS:
        raise DataError(f"{path}: [tests] keys are {sorted(TEST_KEYS)}, not {sorted(bad)}")
    for which in ("train", "test"):
        if not (system.REPO_ROOT / (spec[which].replace(".", "/") + ".py")).is_file():
            raise DataError(f"{path}: {which} = {spec[which]!r} is not a module of the repository")
    return Method(folder=path.parent.name, **spec)


@functools.cache
def methods() -> dict[str, Method]:
    """{name: Method} of every `*/method.toml` under the repository root, ordered by `order`."""
    found = sorted((_read(p) for p in system.REPO_ROOT.glob("*/method.toml")), key=lambda m: (m.order, m.name))
    names = [m.name for m in found]
    if dup := {n for n in names if names.count(n) > 1}:
        raise DataError(f"two method.toml files name {sorted(dup)}")
    return {m.name: m for m in found}


def get(name: str) -> Method:
    """A method by its name ('exact_gp') or its folder ('exact_gp_related')."""
    for m in methods().values():
        if name in (m.name, m.folder):
            return m
    raise DataError(f"no method {name!r}; choose one of {', '.join(methods())} "
                    f"(or a folder: {', '.join(m.folder for m in methods().values())})")


def test_script(method: str) -> str | None:
    """The test script that reads runs of `method` (a run's config 'method'), or None for an unknown one."""
    m = methods().get(method)
    return m.script("test") if m else None
