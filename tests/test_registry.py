"""The method registry: every method folder has a method.toml, its names match what its runs record, and
every option it lists (budgets and test options) is one its train script accepts."""
from __future__ import annotations

from pathlib import Path

import pytest

from gapfill import registry, submit, system
from gapfill.errors import DataError
from gapfill.sweep import to_argv

ROOT = Path(__file__).resolve().parents[1]
METHODS = list(registry.methods())


def test_every_method_folder_has_an_entry_in_leaderboard_order():
    folders = {p.parent.name for p in ROOT.glob("*/submit_train_*.sh")} - {"benchmarks"}
    assert {m.folder for m in registry.methods().values()} == folders
    assert METHODS == ["baselines", "exact_gp", "variational_gp", "pconv", "gpvae", "ginr", "gan"]
    assert registry.get("exact_gp_related") is registry.get("exact_gp")
    assert submit.scripts("gan_gapfill") == submit.scripts("gan")
    assert submit.scripts("gan")[0].name == "submit_train_gan.sh"
    assert registry.test_script("variational_gp") == "variational_gp_related/test_variational_gp.py"
    assert registry.test_script("nope") is None
    with pytest.raises(DataError, match="no method 'nope'; choose one of baselines, exact_gp"):
        registry.get("nope")


@pytest.mark.parametrize("name", METHODS)
def test_entry_names_what_its_runs_record_and_its_options_parse(name):
    m = registry.get(name)
    train, test = m.module("train"), m.module("test")
    assert train.METHOD == name                           # runs record this name; load_run looks it up
    assert (ROOT / m.script("test")).is_file() and hasattr(test, "main") and hasattr(train, "main")

    def parse(options: list[str]):
        return train.parse_args(["--data_path", "f.nc", *options])

    for budget in registry.BUDGETS:
        for dynamic in (False, True):
            args = parse(to_argv(m.options(budget, dynamic)))
            for key, value in m.options(budget, dynamic).items():    # (an alias, like --epochs: any dest)
                got = [getattr(args, key)] if hasattr(args, key) else list(vars(args).values())
                assert any(g == value or str(g) == str(value) for g in got), (budget, key)
    if m.timed:                                           # the converge budget gives it --max_time
        assert parse(["--max_time", "2"]).max_time == 2
    else:
        with pytest.raises(SystemExit):
            parse(["--max_time", "2"])
    for key in ("bad_input", "leakage"):
        parse(m.tests[key])
    if "diverge" in m.tests:
        parse([*m.tests["diverge"], "inf"])
    if "refused_late" in m.tests:
        parse(m.tests["refused_late"]["options"])
    for option in m.tests["checked"]:
        with pytest.raises(SystemExit):                   # range-checked: 0 and below refused by the parser
            parse([option, "-1"])
    assert set(m.not_applicable) <= set(registry.KINDS)


def test_a_broken_entry_is_named_with_what_is_wrong(tmp_path, monkeypatch):
    monkeypatch.setattr(system, "REPO_ROOT", tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "train_m.py").write_text("")
    (tmp_path / "m" / "test_m.py").write_text("")
    entry = 'name = "m"\norder = 0\ntrain = "m.train_m"\ntest = "m.test_m"\n'
    budgets = "[budgets]\n" + "".join(f"{b} = {{}}\n" for b in registry.BUDGETS)
    cases = [(entry, "needs exactly smoke, default, large, converge"),
             (entry.replace('"m.test_m"', '"m.nope"') + budgets, "test = 'm.nope' is not a module"),
             (entry.replace("order = 0\n", "") + budgets, "needs order"),
             (entry + "colour = 1\n" + budgets, "unknown keys ['colour']"),
             (entry + budgets + "[not_applicable]\nmovie = 'x'\n", "data kinds"),
             (entry + "[budgets\n", "m/method.toml")]
    try:
        for text, words in cases:
            (tmp_path / "m" / "method.toml").write_text(text)
            registry.methods.cache_clear()
            with pytest.raises(DataError, match="method.toml") as err:
                registry.methods()
            assert words in str(err.value)
        (tmp_path / "m" / "method.toml").write_text(entry + budgets)
        registry.methods.cache_clear()
        assert list(registry.methods()) == ["m"] and registry.get("m").options("smoke", True) == {}
    finally:
        registry.methods.cache_clear()
