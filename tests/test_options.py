"""One options object: poolwise.fit, poolwise.compare_pooling and the command line take the
same options (the table poolwise.inference.options.OPTIONS), with the same defaults and the
same seed, and every setting is checked before any data are read."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest

import poolwise
from poolwise.cli import COMPARE_OPTIONS, FIT_OPTIONS, FLAG_SPECS, build_parser, main
from poolwise.comparison.pooling import compare_pooling
from poolwise.errors import SpecError
from poolwise.inference import options as O
from poolwise.inference.options import OPTIONS, CompareOptions, FitOptions

FIT_FIELDS = {f.name: f for f in dataclasses.fields(FitOptions)}
COMPARE_FIELDS = {f.name: f for f in dataclasses.fields(CompareOptions) if f.name != "fit"}


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _keywords(func) -> dict[str, inspect.Parameter]:
    return {k: p for k, p in inspect.signature(func).parameters.items()
            if k not in ("formula", "data")}


def test_the_table_describes_every_option_once():
    names = [o.name for o in OPTIONS]
    assert len(names) == len(set(names))
    assert set(names) == set(FIT_FIELDS) | set(COMPARE_FIELDS)


def test_fit_takes_every_option_with_the_same_default():
    kw = _keywords(poolwise.fit)
    assert set(kw) == set(FIT_FIELDS), "fit() and FitOptions must list the same options"
    for name, p in kw.items():
        assert p.default == _default(FIT_FIELDS[name]), name


def test_compare_pooling_takes_every_option_but_pooling_with_the_same_default():
    kw = _keywords(compare_pooling)
    assert set(kw) == (set(FIT_FIELDS) - {"pooling"}) | set(COMPARE_FIELDS)
    for name, p in kw.items():
        field = FIT_FIELDS.get(name) or COMPARE_FIELDS[name]
        assert p.default == _default(field), name


def _subcommand(name: str) -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices[name]  # noqa: SLF001


def test_every_option_has_its_flag_on_each_subcommand():
    fit_flags = {o.name for o in OPTIONS if o.flag} - set(COMPARE_FIELDS) | {"prob", "kind"}
    assert set(FIT_OPTIONS) == fit_flags
    assert set(COMPARE_OPTIONS) == fit_flags - {"pooling"} | {"group", "loo", "logo", "kfold"}
    by_name = {o.name: o for o in OPTIONS}
    for command, names in (("fit", FIT_OPTIONS), ("compare", COMPARE_OPTIONS)):
        flags = {s for a in _subcommand(command)._actions for s in a.option_strings}  # noqa: SLF001
        for name in names:
            assert by_name[name].flag in flags, (command, name)


def test_the_command_line_defaults_are_the_apis_unless_the_table_says_why():
    """A flag's default equals the API's, except the context-dependent ones the table lists
    with their reason (progress in a terminal, prior sensitivity when shown, the stored
    log-likelihood)."""
    by_name = {o.name: o for o in OPTIONS}
    store_false = {"standardize": True, "prior_check": True, "loo": True}
    store_true = {"drop_missing": False}
    converted = {"priors": None, "reference": None, "parameterization": "auto",
                 "repair": True, "logo": True}  # lists / choices turned into API values
    for name in FIT_OPTIONS + COMPARE_OPTIONS:
        opt, spec = by_name[name], FLAG_SPECS[name]
        api = _default(FIT_FIELDS.get(name) or COMPARE_FIELDS[name])
        if opt.cli_default:
            assert spec.get("default") != api or spec.get("default") is None, name
            continue
        if name in store_false:
            assert api is store_false[name], name
        elif name in store_true:
            assert api is store_true[name], name
        elif name in converted:
            assert api == converted[name], name
        else:
            assert spec.get("default") == api, name


def test_a_flag_means_the_same_on_every_subcommand():
    seen: dict[str, tuple] = {}
    for command in ("fit", "compare", "report"):
        for a in _subcommand(command)._actions:  # noqa: SLF001
            for s in a.option_strings:
                key = (a.dest, a.help)
                # same destination everywhere; the help may add what the subcommand does with it
                assert seen.setdefault(s, key)[0] == a.dest, s
    assert "--no-log-likelihood" in seen  # the store-it switch on both, never "skip LOO"
    assert seen["--no-loo"][0] == "loo"


def test_fit_and_compare_draw_the_seed_the_same_way(bangladesh_first3, monkeypatch):
    drawn = []

    def fresh() -> int:
        drawn.append(12345)
        return 12345

    monkeypatch.setattr(O, "fresh_seed", fresh)
    opts = FitOptions().with_seed()
    assert opts.seed == 12345 and drawn == [12345]
    assert FitOptions(seed=7).with_seed().seed == 7


@pytest.mark.parametrize(("kw", "match"), [
    ({"pooling": "partal"}, "did you mean 'partial'"),
    ({"chains": 0}, "chains must be a whole number >= 1"),
    ({"target_accept": 1.2}, "target_accept must lie strictly between 0 and 1"),
    ({"link": "logt"}, "link must be one of"),
    ({"parameterization": {"district": "centred"}}, "did you mean 'centered'"),
    ({"progress": "yes"}, "progress must be True or False"),
    ({"priors": {"sd": "exponential(1)"}}, "priors must be poolwise.Priors"),
    ({"priors": poolwise.Priors(b="normal(0, 2)")}, "a prior is given for 'b'"),
    ({"priors": poolwise.Priors(cor=poolwise.lkj(3))}, "a prior is given for 'cor'"),
    ({"priors": poolwise.Priors(unpooled="normal(0, 3)")}, "a prior is given for 'unpooled'"),
    ({"pooling": "complete", "priors": poolwise.Priors(sd="exponential(2)")},
     "a prior is given for 'sd'"),
    ({"priors": poolwise.Priors(sd_by_group={"distrct": "half_normal(1)"})},
     "did you mean sd_district"),
])
def test_settings_are_checked_before_the_data_are_read(kw, match):
    """A path that does not exist: the setting's error comes first, so nothing was read."""
    with pytest.raises(SpecError, match=match):
        poolwise.fit("use.contraception ~ 1 + (1 | district)", "no/such/file.csv", **kw)


def test_a_pooling_that_needs_a_group_term_is_refused_and_none_means_by_the_formula(
        bangladesh_first3):
    with pytest.raises(SpecError, match="no group term"):
        poolwise.fit("use.contraception ~ urban", "no/such/file.csv", pooling="partial")
    with pytest.raises(SpecError, match="no group term"):
        compare_pooling("use.contraception ~ urban", "no/such/file.csv")
    fit = poolwise.fit("use.contraception ~ urban", bangladesh_first3, seed=1, tune=200,
                       draws=200, prior_sensitivity=False, prior_check=False)
    assert fit.spec.pooling == "complete"


def test_compare_takes_a_prior_that_one_of_its_models_has():
    # 'unpooled' applies to the no-pooling model only: accepted by compare (its data error
    # comes after the settings passed), refused by a partial-pooling fit
    with pytest.raises(Exception, match="no/such/file.csv|does not exist|No such"):
        compare_pooling("use.contraception ~ 1 + (1 | district)", "no/such/file.csv",
                        priors=poolwise.Priors(unpooled="normal(0, 3)"))
    with pytest.raises(SpecError, match="'unpooled'"):
        poolwise.fit("use.contraception ~ 1 + (1 | district)", "no/such/file.csv",
                     priors=poolwise.Priors(unpooled="normal(0, 3)"))


def test_priors_take_text_wherever_they_take_a_prior():
    p = poolwise.Priors(sd="exponential(2)", sd_by_group={"district": "half_normal(0.5)"})
    assert p.sd == poolwise.exponential(2) and p.sd_by_group["district"] == poolwise.half_normal(
        0.5)
    assert p.given() == ("sd", "sd_district")


@pytest.mark.parametrize(("argv", "match"), [
    (["fit", "--example", "bangladesh", "--prob", "89", "--quiet", "--out", "OUT"],
     "prob must lie strictly between 0 and 1"),
    (["fit", "--example", "bangladesh", "--pooling", "partial", "-f",
      "use.contraception ~ urban"], "no group term"),
    (["fit", "--example", "bangladesh", "--prior", "b=normal(0, 2)"], "a prior is given for 'b'"),
    (["compare", "--example", "bangladesh", "--prob", "1.5"], "prob must lie"),
])
def test_the_command_line_checks_settings_before_anything_runs(argv, match, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 3
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "hint"), [
    (["fit", "--example", "bangladesh", "--chians", "2"], "did you mean --chains?"),
    (["fitt"], "did you mean fit?"),
    (["compare", "--exmaple", "bangladesh"], "did you mean --example?"),
])
def test_misspelled_flags_and_subcommands_get_a_did_you_mean(argv, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and hint in capsys.readouterr().err


def test_version_and_grouped_help_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"poolwise {poolwise.__version__}"
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    for title in ("data:", "model:", "priors:", "sampler:", "checks and repair:", "output:",
                  "examples:"):
        assert title in text
    assert "number of NUTS chains (default: 4)" in " ".join(text.split())
