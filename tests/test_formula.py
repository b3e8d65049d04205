"""The lme4 / brms formula grammar: a table of valid formulas and the terms they give, a table
of invalid ones with the message and the marked span, reference levels of categorical
predictors, and interactions end to end (design columns, names, a short fit)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise.data.design import build_design
from poolwise.errors import FormulaError, SpecError
from poolwise.formula import Formula, GroupTerm, Term, parse_formula
from poolwise.formula.terms import Response


def T(*v: str) -> Term:
    return Term(tuple(v))


def G(group: str, *terms: Term, intercept: bool = True, correlated: bool = True) -> GroupTerm:
    return GroupTerm(intercept, tuple(terms), tuple(group.split(":")), correlated)


Y = Response("bernoulli", "y")

# formula -> (response, intercept, fixed terms, group terms)
VALID = [
    ("y ~ 1", Y, True, (), ()),
    ("y ~ 0", Y, False, (), ()),
    ("y ~ 1 + (1 | g)", Y, True, (), (G("g"),)),
    ("y ~ (1 | g)", Y, True, (), (G("g"),)),
    ("y ~ x + (1 + x | g)", Y, True, (T("x"),), (G("g", T("x")),)),
    ("y ~ x + (x | g)", Y, True, (T("x"),), (G("g", T("x")),)),
    ("y ~ x + (1 + x || g)", Y, True, (T("x"),), (G("g", T("x"), correlated=False),)),
    ("y ~ x + (0 + x | g)", Y, True, (T("x"),), (G("g", T("x"), intercept=False),)),
    ("y ~ (1 + x + z | g)", Y, True, (), (G("g", T("x"), T("z")),)),
    ("y ~ (1 + x*z | g)", Y, True, (), (G("g", T("x"), T("z"), T("x", "z")),)),
    ("y ~ (1 | a) + (1 | b)", Y, True, (), (G("a"), G("b"))),
    ("y ~ x + (1 + x | a) + (1 | b)", Y, True, (T("x"),), (G("a", T("x")), G("b"))),
    ("y ~ (1 | a/b)", Y, True, (), (G("a"), G("a:b"))),
    ("y ~ (1 | a/b/c)", Y, True, (), (G("a"), G("a:b"), G("a:b:c"))),
    ("y ~ (1 || a/b)", Y, True, (), (G("a", correlated=False), G("a:b", correlated=False))),
    ("y ~ (1 | a:b)", Y, True, (), (G("a:b"),)),
    ("y ~ x*z", Y, True, (T("x"), T("z"), T("x", "z")), ()),
    ("y ~ x:z", Y, True, (T("x", "z"),), ()),
    ("y ~ x*z + w", Y, True, (T("x"), T("z"), T("w"), T("x", "z")), ()),
    ("y ~ x*z*w", Y, True,
     (T("x"), T("z"), T("w"), T("x", "z"), T("x", "w"), T("z", "w"), T("x", "z", "w")), ()),
    ("y ~ x:z*w", Y, True, (T("w"), T("x", "z"), T("x", "z", "w")), ()),
    ("y ~ x + z - z", Y, True, (T("x"),), ()),
    ("y ~ x + x", Y, True, (T("x"),), ()),
    ("y ~ 0 + x", Y, False, (T("x"),), ()),
    ("y ~ x - 1", Y, False, (T("x"),), ()),
    ("y ~ -1 + x", Y, False, (T("x"),), ()),
    ("y ~ 0 + x + 1", Y, True, (T("x"),), ()),
    ("cbind(s, f) ~ x", Response("cbind", "s", failures="f"), True, (T("x"),), ()),
    ("s | trials(n) ~ 1 + (1 | g)", Response("trials", "s", trials="n"), True, (), (G("g"),)),
    ("s / n ~ 1", Response("trials", "s", trials="n"), True, (), ()),
    ("use.contraception ~ urban + (1 + urban | district)",
     Response("bernoulli", "use.contraception"), True, (T("urban"),), (G("district", T("urban")),)),
    ("`living children` ~ `age x` + (1 | `my group`)", Response("bernoulli", "living children"),
     True, (T("age x"),), (G("my group"),)),
    ("y~x+(1+x|g)", Y, True, (T("x"),), (G("g", T("x")),)),
    ("  y  ~  x  ", Y, True, (T("x"),), ()),
]


@pytest.mark.parametrize(("text", "response", "intercept", "terms", "groups"), VALID,
                         ids=[v[0] for v in VALID])
def test_valid_formulas(text, response, intercept, terms, groups):
    f = parse_formula(text)
    assert f == Formula(text, response, intercept, terms, groups)


def test_formula_properties_and_round_trip():
    f = parse_formula("cbind(s, fl) ~ x*z + (1 + x || g) + (1 | a/b)")
    assert f.columns == ("s", "fl", "x", "z", "g", "a", "b")
    assert f.predictors == ("x", "z")
    assert f.grouping_columns == ("g", "a", "b")
    assert [g.group_name for g in f.groups] == ["g", "a", "a:b"]
    assert f.groups[0].coef_names == ("Intercept", "x")
    assert str(f) == "cbind(s, fl) ~ 1 + x + z + x:z + (1 + x || g) + (1 | a) + (1 | a:b)"
    # the printed form parses to the same terms
    g = parse_formula(str(f))
    assert (g.response, g.intercept, g.terms, g.groups) == (f.response, f.intercept, f.terms,
                                                            f.groups)


# text, message (the part before the marked formula), span (None: no span)
INVALID = [
    ("", "the formula is empty", None),
    ("   ", "the formula is empty", None),
    ("y 1 + x", "a formula needs '~' between the outcome and the predictors", (0, 7)),
    ("~ x", "expected the outcome column before '~', found '~'", (0, 1)),
    ("y ~", "expected a predictor, 1, 0 or a group term, found the end of the formula", (3, 4)),
    ("y ~ x +", "expected a predictor, 1, 0 or a group term, found the end of the formula", (7, 8)),
    ("y ~ 2", "only 1 (intercept) or 0 (no intercept) may stand alone", (4, 5)),
    ("y ~ x $ z", "unexpected character '$' in formula", (6, 7)),
    ("y ~ `x", "unexpected character '`' in formula", (4, 5)),
    ("y ~ x ~ z", "unexpected '~'; join terms with '+'", (6, 7)),
    ("y ~ (1 | g) x", "unexpected 'x'; join terms with '+'", (12, 13)),
    ("y ~ x :", "expected a predictor name after ':', found the end of the formula", (7, 8)),
    ("y ~ x * (1|g)", "expected a predictor name after '*', found '('", (8, 9)),
    ("y + z ~ x", "unexpected '+' in the outcome", (2, 3)),
    ("cbind(s f) ~ 1", "expected ',' between successes and failures", (8, 9)),
    ("cbind(s, f ~ 1", "expected ')' to close cbind(, found '~'", (11, 12)),
    ("s | n ~ 1", "expected 'trials(n)' after '|' in the outcome", (4, 5)),
    ("y ~ (1 | )", "expected the grouping column after '|', found ')'", (9, 10)),
    ("y ~ (1 + x g)", "expected '+', '|' or '||' inside the group term", (11, 12)),
    ("y ~ (1 | g", "expected ')' to close the group term", (10, 11)),
    ("y ~ (2 | g)", "only 1 or 0 may stand alone in a group term", (5, 6)),
    ("y ~ (1 + | g)", "a group term looks like (1 | group) or (1 + x | group); found '|'", (9, 10)),
    ("y ~ (0 | g)", "this group term has no intercept and no slope", (4, 5)),
    ("y ~ (x - 1 | g)", "expected '+', '|' or '||' inside the group term", (7, 8)),
    ("y ~ -(1|g)", "group terms cannot be removed with '-'", (5, 6)),
    ("y ~ (1|g) + (x|g)", "grouping factor 'g' appears in more than one group term", (12, 17)),
    ("y ~ (1 | a) + (1 | a/b)", "grouping factor 'a' appears in more than one group term",
     (14, 23)),
    ("y ~ (1 | a/b:c)", "mixing '/' and ':' in one grouping is ambiguous", (4, 15)),
]


@pytest.mark.parametrize(("text", "message", "span"), INVALID,
                         ids=[v[0] or "<empty>" for v in INVALID])
def test_invalid_formulas(text, message, span):
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    err = info.value
    assert err.reason.startswith(message)
    assert err.span == span
    assert isinstance(err, ValueError)
    if span is not None:
        # the message shows the formula with the span marked underneath
        lines = str(err).splitlines()
        assert lines[-2] == f"  {text}"
        marker = lines[-1][2:]
        assert marker.index("^") == span[0]
        assert marker.count("^") == span[1] - span[0]
        assert text[span[0] : span[1]].strip() != "" or span[0] >= len(text.rstrip())


def test_unknown_column_is_marked_in_the_formula():
    data = pd.DataFrame({"y": [0, 1] * 5, "x": np.arange(10.0), "g": list("ab") * 5})
    with pytest.raises(FormulaError) as info:
        build_design("y ~ xx + (1 | g)", data)
    assert info.value.span == (4, 6)
    assert "did you mean 'x'" in str(info.value)


# ---- reference levels ----------------------------------------------------------------------


def _cat_data(seed: int = 2, n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = rng.choice(["lo", "mid", "hi"], size=n)
    x = np.round(rng.normal(size=n), 1)
    eta = -0.3 + 0.8 * (f == "hi") - 0.5 * (f == "lo") + 0.4 * x - 0.6 * x * (f == "hi")
    y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    g = rng.choice([f"d{i}" for i in range(8)], size=n)
    return pd.DataFrame({"y": y, "f": f, "x": x, "g": g})


CAT = _cat_data()


def test_reference_level_default_is_first_sorted():
    d = build_design("y ~ f + (1 | g)", CAT)
    assert d.fixed_names == ("Intercept", "flo", "fmid")
    assert d.reference == {"f": "hi"}


def test_reference_level_from_categorical_order():
    data = CAT.assign(f=pd.Categorical(CAT["f"], categories=["mid", "lo", "hi"]))
    d = build_design("y ~ f + (1 | g)", data)
    assert d.fixed_names == ("Intercept", "flo", "fhi")
    assert d.reference == {"f": "mid"}


def test_reference_option_overrides_both():
    d = build_design("y ~ f * x + (1 + f | g)", CAT, reference={"f": "lo"})
    assert d.fixed_names == ("Intercept", "fhi", "fmid", "x", "fhi:x", "fmid:x")
    assert d.groups[0].coef_names == ("Intercept", "fhi", "fmid")
    assert d.reference == {"f": "lo"}
    data = CAT.assign(f=pd.Categorical(CAT["f"], categories=["mid", "lo", "hi"]))
    d2 = build_design("y ~ f + (1 | g)", data, reference={"f": "hi"})
    assert d2.fixed_names == ("Intercept", "fmid", "flo")


def test_reference_changes_only_the_parameterization():
    """Another reference level spans the same column space: the same cells, and the columns
    of one design are exact linear combinations of the other's."""
    a = build_design("y ~ f * x + (1 | g)", CAT, standardize=False)
    b = build_design("y ~ f * x + (1 | g)", CAT, standardize=False, reference={"f": "mid"})
    assert a.n_cells == b.n_cells
    coef, *_ = np.linalg.lstsq(a.X, b.X, rcond=None)
    np.testing.assert_allclose(a.X @ coef, b.X, atol=1e-10)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"f": "top"}, "reference level 'top' is not a level of 'f' in the data; its levels are"),
        ({"x": 1.0}, "reference applies to categorical predictors, but 'x' is numeric"),
        ({"nope": "a"}, "reference names column 'nope', which is not a predictor of the model"),
    ],
)
def test_reference_errors(reference, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        build_design("y ~ f + x + (1 | g)", CAT, reference=reference)


def test_reference_matches_integer_labels_given_as_text():
    k = np.where(CAT["f"] == "hi", 3, np.where(CAT["f"] == "lo", 1, 2))
    data = CAT.assign(k=pd.Categorical(k))
    d = build_design("y ~ k + (1 | g)", data, reference={"k": "2"})
    assert d.fixed_names == ("Intercept", "k1", "k3")


# ---- interactions end to end ---------------------------------------------------------------


def test_interaction_columns():
    d = build_design("y ~ f * x + (1 | g)", CAT, standardize=False)
    assert d.fixed_names == ("Intercept", "flo", "fmid", "x", "flo:x", "fmid:x")
    rows = CAT.iloc[np.argsort(d.row_cell, kind="stable")]
    X_rows = d.X[d.row_cell]
    x = CAT["x"].to_numpy()
    np.testing.assert_array_equal(X_rows[:, 3], x)
    np.testing.assert_array_equal(X_rows[:, 4], x * (CAT["f"] == "lo"))
    np.testing.assert_array_equal(X_rows[:, 5], x * (CAT["f"] == "mid"))
    assert len(rows) == len(CAT)
    # numeric x numeric
    data = CAT.assign(z=np.round(np.random.default_rng(1).uniform(0, 2, len(CAT)), 1))
    d2 = build_design("y ~ x:z + (1 | g)", data, standardize=False)
    assert d2.fixed_names == ("Intercept", "x:z")
    np.testing.assert_allclose(d2.X[d2.row_cell][:, 1], data["x"] * data["z"])
    d3 = build_design("y ~ x*z + (1 | g)", data, standardize=False)
    assert d3.fixed_names == ("Intercept", "x", "z", "x:z")


def test_interactions_fit_end_to_end():
    """x*z with a categorical, x:z numeric: sampled on the standardized scale, reported on the
    original one, under brms-style names."""
    data = CAT.assign(z=np.round(np.random.default_rng(1).uniform(0, 2, len(CAT)), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = poolwise.fit("y ~ f * x + x:z + (1 | g)", data, chains=4, tune=300, draws=250,
                           seed=3, log_likelihood=False, reference={"f": "lo"})
    post = fit.posterior
    for name in ("Intercept", "b_fhi", "b_fmid", "b_x", "b_fhi:x", "b_fmid:x", "b_x:z",
                 "sd_g", "a_g"):
        assert name in post
    assert fit.diagnosis.divergences == 0
    s = fit.summary()
    assert "b_fhi:x" in s.index and "a_g[d0]" in s.index
    # the simulation's effects (relative to 'lo'): f = hi adds 1.3, its x slope is 0.6 lower
    assert s.loc["b_fhi", "hdi_89_lower"] < 1.3 < s.loc["b_fhi", "hdi_89_upper"] or abs(
        s.loc["b_fhi", "mean"] - 1.3) < 3 * s.loc["b_fhi", "sd"]
    assert abs(s.loc["b_fhi:x", "mean"] + 0.6) < 3 * s.loc["b_fhi:x", "sd"]
    scaling = s.attrs["scaling"]
    assert set(scaling["predictors"]) == {"x", "z"}
    assert scaling["reference_levels"] == {"f": "lo"}
