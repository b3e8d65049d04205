"""Functions and arithmetic in formulas (R / lme4 / brms): the parser's terms and labels, the
model matrix of every form checked against one built independently with numpy, the
numeric-coded-factor note, and the errors for unknown functions and bad arguments."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from poolwise.data.design import build_design
from poolwise.errors import DataError, FormulaError, SpecError
from poolwise.formula import parse_formula
from poolwise.formula.parser import SUPPORTED_FUNCTIONS, parse_expression
from poolwise.formula.terms import BinOp, Call, Col, Neg, Num


def _data(seed: int = 5, n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    size = rng.integers(3, 12, n)
    return pd.DataFrame({
        "k": rng.binomial(size, 0.4),
        "size": size,
        "m": rng.integers(0, 3, n),
        "period": rng.integers(1, 5, n),
        "age": np.round(rng.uniform(15, 49, n), 1),
        "z": np.round(rng.normal(size=n), 2),
        "w": np.round(rng.uniform(0.5, 3.0, n), 2),
        "site": rng.choice(["north", "east", "west"], n),
        "herd": rng.choice([f"h{i}" for i in range(8)], n),
    })


D = _data()


def rows_X(d):
    """The design at the level of data rows (cells expanded back)."""
    return d.X[d.row_cell]


def fixed(d, name):
    return rows_X(d)[:, d.fixed_names.index(name)]


def quiet_design(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build_design(*args, **kw)


# ---- the parser ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("y ~ factor(period)", ["factor(period)"]),
        ("y ~ C(site)", ["C(site)"]),
        ('y ~ C(site, ref = "west")', ['C(site, ref = "west")']),
        ("y ~ C(site, base = 2)", ["C(site, base = 2)"]),
        ('y ~ C(site, Treatment("west"))', ['C(site, Treatment("west"))']),
        ("y ~ poly(age, 2)", ["poly(age, 2)"]),
        ("y ~ poly(age, degree = 3, raw = TRUE)", ["poly(age, degree = 3, raw = TRUE)"]),
        ("y ~ scale(age)", ["scale(age)"]),
        ("y ~ log(w) + sqrt(w) + exp(z)", ["log(w)", "sqrt(w)", "exp(z)"]),
        ("y ~ age + I(age^2)", ["age", "I(age^2)"]),
        ("y ~ I(age**2)", ["I(age^2)"]),
        ("y ~ I((age - 30)/10)", ["I((age - 30)/10)"]),
        ("y ~ log(w + 1)", ["log(w + 1)"]),
        ("y ~ I(-z * 2 + 1)", ["I(-z * 2 + 1)"]),
        ("y ~ factor(period) * z", ["factor(period)", "z", "factor(period):z"]),
    ],
)
def test_function_terms_and_labels(text, labels):
    f = parse_formula(text)
    assert [t.name for t in f.terms] == labels
    # the printed formula parses to the same terms
    assert parse_formula(str(f)).terms == f.terms


def test_expression_trees_and_columns():
    f = parse_formula("cbind(k, size - k) ~ I(age^2) + log(w + 1) + offset(log(size)) + (1 | herd)")
    assert f.response.failures == "size - k"
    assert f.expr("size - k") == BinOp("-", Col("size"), Col("k"))
    assert f.expr("I(age^2)") == Call("I", (BinOp("^", Col("age"), Num(2.0)),))
    assert f.offsets == ("offset(log(size))",)
    assert f.columns == ("k", "size - k", "I(age^2)", "log(w + 1)", "herd", "offset(log(size))")
    assert f.source_columns == ("k", "size", "age", "w", "herd")
    assert f.predictors == ("I(age^2)", "log(w + 1)")
    assert str(f).endswith("+ (1 | herd) + offset(log(size))")
    assert parse_formula("s | trials(n + m) ~ 1").response.trials == "n + m"
    # '^' is right-associative and binds tighter than unary minus, as in R
    assert parse_expression("-x^2^3").label == "-x^2^3"
    assert parse_expression("-x^2^3") == Neg(
        BinOp("^", Col("x"), BinOp("^", Num(2.0), Num(3.0))))
    assert parse_expression("offset(log(n))") == Call("log", (Col("n"),))


# text, message start, span
INVALID = [
    ("y ~ foo(x)", "unknown function 'foo()'; supported functions: ", (4, 10)),
    ("y ~ z + bar(x, 2) + w", "unknown function 'bar()'", (8, 17)),
    ("y ~ x^2", "unexpected '^': a power of a predictor is written I(x^2)", (5, 6)),
    ("y ~ I(factor(x)^2)", "factor() makes a categorical variable; it cannot be used inside",
     (6, 12)),
    ("y ~ log(poly(x, 2))", "poly() makes several columns; it cannot be used inside", (8, 12)),
    ("y ~ poly(x, 0)", "poly(): the degree must be a whole number >= 1; got 0", (4, 14)),
    ("y ~ poly(x, 1.5)", "poly(): the degree must be a whole number >= 1; got 1.5", (4, 16)),
    ("y ~ poly(x, 2, 3)", "poly() takes poly(x, degree) and optionally raw = TRUE", (4, 17)),
    ("y ~ poly(x, 2, raw = 1)", "poly(): raw must be TRUE or FALSE; got 1", (4, 23)),
    ("y ~ log(x, 2)", "log() takes exactly one argument", (4, 13)),
    ("y ~ log()", "log() needs a column or expression", (4, 9)),
    ('y ~ factor("a")', 'factor() needs a column or expression, not "a"', (4, 15)),
    ("y ~ C(x, contr.sum)", "C(): only treatment contrasts are supported", (4, 19)),
    ("y ~ C(x, base = 0)", "C(): base is the position of the reference level", (4, 18)),
    ("y ~ C(x, foo = 1)", "C() takes C(x), C(x, ref = ", (4, 17)),
    ('y ~ Treatment("a")', "Treatment(...) is a contrast: use it inside C()", (4, 18)),
    ("y ~ x:offset(z)", "offset() is a term of its own", (6, 12)),
    ("y ~ -offset(z)", "an offset cannot be removed with '-'", (5, 11)),
    ("y ~ log(x", "expected ',' or ')' in log(...), found the end of the formula", (9, 10)),
    ("y ~ I(x +)", "expected a number, a column or '(' in the expression, found ')'", (9, 10)),
    ("cbind(k, n - ) ~ 1", "expected a number, a column or '(' in the expression", (13, 14)),
    ("cbind(k, n -k ~ 1", "expected ')' to close cbind(, found '~'", (14, 15)),
    ("s | trials() ~ 1", "expected the trials column inside trials(...), found ')'", (11, 12)),
]


@pytest.mark.parametrize(("text", "message", "span"), INVALID, ids=[v[0] for v in INVALID])
def test_invalid_function_formulas(text, message, span):
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert info.value.reason.startswith(message)
    assert info.value.span == span


def test_unknown_function_lists_every_supported_one():
    with pytest.raises(FormulaError) as info:
        parse_formula("y ~ logit(p)")
    for fn in SUPPORTED_FUNCTIONS:
        assert f"{fn}()" in info.value.reason
    for fn in ("factor", "C", "poly", "scale", "log", "sqrt", "exp", "I", "offset"):
        assert fn in SUPPORTED_FUNCTIONS


# ---- model matrices against numpy ----------------------------------------------------------


def test_cbind_with_arithmetic_is_successes_and_trials():
    d = quiet_design("cbind(k, size - k) ~ z + (1 | herd)", D)
    np.testing.assert_array_equal(d.row_y, D["k"])
    np.testing.assert_array_equal(d.row_n, D["size"])
    d2 = quiet_design("k | trials(size + m) ~ z + (1 | herd)", D)
    np.testing.assert_array_equal(d2.row_n, D["size"] + D["m"])
    d3 = quiet_design("cbind(k, 2 * size - k - m) ~ z + (1 | herd)", D)
    np.testing.assert_array_equal(d3.row_n, 2 * D["size"] - D["m"])


def test_factor_of_a_numeric_column():
    d = quiet_design("k | trials(size) ~ factor(period) + (1 | herd)", D, standardize=False)
    levels = np.unique(D["period"])  # 1..4, sorted numerically; the first is the reference
    assert d.fixed_names == ("Intercept",) + tuple(f"factor(period){v}" for v in levels[1:])
    for v in levels[1:]:
        np.testing.assert_array_equal(fixed(d, f"factor(period){v}"), (D["period"] == v) * 1.0)
    assert d.reference == {"factor(period)": 1}
    enc = d.encoding.variable("factor(period)")
    assert enc.kind == "categorical" and enc.levels == tuple(levels.tolist())
    # reference= may name the column inside factor()
    d2 = quiet_design("k | trials(size) ~ factor(period) + (1 | herd)", D, reference={"period": 3})
    assert d2.fixed_names[1:] == ("factor(period)1", "factor(period)2", "factor(period)4")


def test_factor_levels_sort_numerically():
    data = D.assign(period=D["period"] * 5)  # 5, 10, 15, 20: '10' < '5' as text
    d = quiet_design("k | trials(size) ~ factor(period) + (1 | herd)", data)
    assert d.fixed_names[1:] == ("factor(period)10", "factor(period)15", "factor(period)20")


@pytest.mark.parametrize(
    ("term", "reference"),
    [
        ("C(site)", "east"),
        ('C(site, ref = "west")', "west"),
        ('C(site, reference = "west")', "west"),
        ("C(site, base = 2)", "north"),  # R: the 2nd of the sorted levels east, north, west
        ('C(site, Treatment("north"))', "north"),
        ('C(site, Treatment(reference = "west"))', "west"),
        ("C(site, contr.treatment)", "east"),
    ],
)
def test_C_treatment_contrasts(term, reference):
    d = quiet_design(f"k | trials(size) ~ {term} + (1 | herd)", D, standardize=False)
    others = [lv for lv in ("east", "north", "west") if lv != reference]
    label = parse_formula(f"y ~ {term}").terms[0].name
    assert d.fixed_names == ("Intercept",) + tuple(f"{label}{lv}" for lv in others)
    for lv in others:
        np.testing.assert_array_equal(fixed(d, f"{label}{lv}"), (D["site"] == lv) * 1.0)
    assert d.reference == {label: reference}


def test_C_reference_level_errors():
    with pytest.raises(SpecError, match="reference level 'south' is not a level of"):
        build_design('k | trials(size) ~ C(site, ref = "south") + (1 | herd)', D)
    with pytest.raises(DataError, match="base = 5 but site has only 3 levels"):
        build_design("k | trials(size) ~ C(site, base = 5) + (1 | herd)", D)


@pytest.mark.parametrize(
    ("term", "column"),
    [
        ("log(w)", lambda df: np.log(df["w"])),
        ("log2(w)", lambda df: np.log2(df["w"])),
        ("log10(w)", lambda df: np.log10(df["w"])),
        ("log1p(w)", lambda df: np.log1p(df["w"])),
        ("sqrt(w)", lambda df: np.sqrt(df["w"])),
        ("exp(z)", lambda df: np.exp(df["z"])),
        ("abs(z)", lambda df: np.abs(df["z"])),
        ("I(age^2)", lambda df: df["age"] ** 2),
        ("I((age - 30)/10)", lambda df: (df["age"] - 30) / 10),
        ("I(z * w + 1)", lambda df: df["z"] * df["w"] + 1),
        ("I(-z)", lambda df: -df["z"]),
        ("log(w + 1)", lambda df: np.log(df["w"] + 1)),
        ("I(log(w)^2)", lambda df: np.log(df["w"]) ** 2),
        ("scale(age)", lambda df: (df["age"] - df["age"].mean()) / df["age"].std(ddof=1)),
        ("I(scale(age)^2)",
         lambda df: ((df["age"] - df["age"].mean()) / df["age"].std(ddof=1)) ** 2),
    ],
)
def test_numeric_functions(term, column):
    d = quiet_design(f"k | trials(size) ~ {term} + (1 | herd)", D, standardize=False)
    assert d.fixed_names == ("Intercept", term)
    np.testing.assert_allclose(fixed(d, term), column(D), rtol=1e-13, atol=1e-13)
    assert d.encoding.variable(term).kind == "numeric"


def test_scale_stores_R_center_and_scale():
    d = quiet_design("k | trials(size) ~ scale(age) + (1 | herd)", D)
    (st,) = d.encoding.states
    assert (st.label, st.fn) == ("scale(age)", "scale")
    assert st.center == pytest.approx(D["age"].mean(), rel=1e-14)
    assert st.scale == pytest.approx(np.std(D["age"], ddof=1), rel=1e-14)  # R's sd: n - 1


def test_raw_poly_and_interactions_with_functions():
    d = quiet_design("k | trials(size) ~ poly(age, 2, raw = TRUE) + factor(period):log(w)"
                     " + (1 | herd)", D, standardize=False)
    lab = "poly(age, 2, raw = TRUE)"
    np.testing.assert_allclose(fixed(d, f"{lab}1"), D["age"], rtol=1e-14)
    np.testing.assert_allclose(fixed(d, f"{lab}2"), D["age"] ** 2, rtol=1e-14)
    # factor(period):log(w): one log(w) slope per period level (no main effects: all 4 levels)
    for v in (1, 2, 3, 4):
        np.testing.assert_allclose(
            fixed(d, f"factor(period){v}:log(w)"), (D["period"] == v) * np.log(D["w"]), rtol=1e-14
        )


def test_functions_in_varying_slopes():
    d = quiet_design("k | trials(size) ~ log(w) + (1 + log(w) | herd)", D, standardize=False)
    g = d.groups[0]
    assert g.coef_names == ("Intercept", "log(w)")
    np.testing.assert_allclose(g.Z[d.row_cell][:, 1], np.log(D["w"]), rtol=1e-14)


def test_standardization_of_transformed_columns():
    """With standardize=True the engine samples each transformed column scaled by its SD and
    centered; X keeps the original scale."""
    d = quiet_design("k | trials(size) ~ I(age^2) + poly(z, 2) + (1 | herd)", D)
    for name in ("I(age^2)", "poly(z, 2)1", "poly(z, 2)2"):
        k = d.fixed_names.index(name)
        col = fixed(d, name)
        assert d.predictor_scaling[name][1] == pytest.approx(np.std(col), rel=1e-12)
        assert d.x_scale[k] == pytest.approx(np.std(col), rel=1e-12)
        assert d.x_center[k] == pytest.approx(np.mean(col), abs=1e-12)


def test_transforms_use_only_the_rows_that_are_modelled():
    """Like R (na.omit before poly / scale), a row dropped for a missing value does not enter
    scale()'s mean and SD."""
    data = D.copy()
    data.loc[3, "z"] = np.nan
    data.loc[7, "age"] = 80.0
    data.loc[7, "size"] = 0  # trials = 0: dropped with a warning
    data.loc[7, "k"] = 0
    with pytest.warns(Warning):
        d = build_design("k | trials(size) ~ scale(age) + z + (1 | herd)", data,
                         drop_missing=True, standardize=False)
    keep = np.ones(len(data), bool)
    keep[[3, 7]] = False
    age = data["age"][keep]
    np.testing.assert_allclose(fixed(d, "scale(age)"), (age - age.mean()) / age.std(ddof=1),
                               rtol=1e-13)


def test_offset_in_formula_and_argument():
    f = "k | trials(size) ~ z + offset(log(size)) + (1 | herd)"
    d = quiet_design(f, D)
    np.testing.assert_allclose(d.offset[d.row_cell], np.log(D["size"]), rtol=1e-15)
    # the same from offset=, as an expression or as values
    d2 = quiet_design("k | trials(size) ~ z + (1 | herd)", D, offset="log(size)")
    np.testing.assert_array_equal(d2.offset[d2.row_cell], d.offset[d.row_cell])
    d3 = quiet_design("k | trials(size) ~ z + (1 | herd)", D, offset=np.log(D["size"]).to_numpy())
    np.testing.assert_array_equal(d3.offset[d3.row_cell], d.offset[d.row_cell])
    # rows that differ only in the offset are different cells
    base = quiet_design("k | trials(size) ~ factor(period)", D)
    withoff = quiet_design("k | trials(size) ~ factor(period) + offset(w)", D)
    assert base.n_cells == 4 and withoff.n_cells == len(np.unique(D[["period", "w"]], axis=0))
    # two offsets add up
    d4 = quiet_design("k | trials(size) ~ z + offset(w) + offset(log(size))", D)
    np.testing.assert_allclose(d4.offset[d4.row_cell], D["w"] + np.log(D["size"]), rtol=1e-14)
    # no offset: None, so nothing changes for the engine
    assert quiet_design("k | trials(size) ~ z", D).offset is None


def test_offset_argument_errors():
    with pytest.raises(SpecError, match="offset has 3 values but the data has 120 rows"):
        build_design("k | trials(size) ~ z", D, offset=[1.0, 2.0, 3.0])
    with pytest.raises(FormulaError, match="unknown function 'lg\\(\\)'"):
        build_design("k | trials(size) ~ z", D, offset="lg(size)")
    with pytest.raises(FormulaError, match="column 'sizes' not found"):
        build_design("k | trials(size) ~ z", D, offset="log(sizes)")
    data = D.assign(w=D["w"].where(D.index != 4))
    with pytest.raises(DataError, match="offset column 'offset\\(w\\)' has 1 missing value"):
        build_design("k | trials(size) ~ z + offset(w)", data)


# ---- data errors in functions ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "error", "message"),
    [
        ("k | trials(size) ~ log(z)", DataError,
         "log(z): z has values outside the domain of log()"),
        ("k | trials(size) ~ sqrt(z)", DataError, "sqrt(z): z has values outside the domain"),
        ("k | trials(size) ~ log(site)", DataError,
         "column 'site' is used in log(site), which needs numbers, but it holds"),
        ("k | trials(size) ~ I(site^2)", DataError, "column 'site' is used in an expression"),
        ("cbind(k, size - site) ~ 1", DataError, "column 'site' is used in an expression"),
        ("k | trials(size) ~ poly(period, 4)", DataError,
         "poly(period, 4): the degree must be less than the number of distinct values of "
         "period (4 in the rows used)"),
        ("k | trials(size) ~ log(agee)", FormulaError,
         "column 'agee' not found; did you mean 'age'"),
        ("k | trials(size) ~ scale(one)", DataError, "scale(one): one is constant"),
    ],
)
def test_data_errors_in_functions(formula, error, message):
    data = D.assign(one=1.0)
    with pytest.raises(error) as info:
        build_design(formula, data)
    text = info.value.reason if isinstance(info.value, FormulaError) else str(info.value)
    assert text.startswith(message)


def test_domain_error_names_the_rows():
    data = D.assign(w=D["w"].where(~D.index.isin([2, 9]), 0.0))
    with pytest.raises(DataError, match=r"\(0 in rows 3, 10\); add a constant first"):
        build_design("k | trials(size) ~ log(w)", data)


def test_unknown_column_inside_a_function_is_marked():
    with pytest.raises(FormulaError) as info:
        build_design("k | trials(size) ~ z + log(agee)", D)
    assert info.value.span == (27, 31)


# ---- numeric-coded factors -------------------------------------------------------------------


def test_numeric_coded_factor_gets_a_note():
    d = quiet_design("k | trials(size) ~ period + (1 | herd)", D)
    notes = [n for n in d.notes if "factor(period)" in n]
    assert notes == [
        "predictor 'period' has only 4 distinct whole-number values (1, 2, 3, 4) and is fitted "
        "as one linear slope; if it codes categories (periods, classes), write factor(period) "
        "in the formula (or --categorical period)"
    ]
    # no note for the factor, for a 0/1 indicator, for many values or for non-integers
    for formula, data in [
        ("k | trials(size) ~ factor(period) + (1 | herd)", D),
        ("k | trials(size) ~ m + (1 | herd)", D.assign(m=D["m"] % 2)),
        ("k | trials(size) ~ age + (1 | herd)", D),
        ("k | trials(size) ~ p + (1 | herd)", D.assign(p=D["period"] / 2)),
        ("k | trials(size) ~ p + (1 | herd)", D.assign(p=D.index % 11)),
    ]:
        assert not [n for n in quiet_design(formula, data).notes if "whole-number" in n]
    assert [n for n in quiet_design("k | trials(size) ~ p", D.assign(p=D.index % 10)).notes
            if "whole-number" in n]


def test_R_coding_rule_for_factors_without_their_margin():
    """R codes a factor by contrasts only where the term without it is in the model: with no
    intercept, or in f:x without x, every level gets its own column."""
    d = quiet_design("k | trials(size) ~ 0 + factor(period) + (1 | herd)", D)
    assert d.fixed_names == tuple(f"factor(period){v}" for v in (1, 2, 3, 4))
    for v in (1, 2, 3, 4):
        np.testing.assert_array_equal(fixed(d, f"factor(period){v}"), (D["period"] == v) * 1.0)
    d2 = quiet_design("k | trials(size) ~ z + (0 + site | herd)", D)
    g = d2.groups[0]
    assert g.coef_names == ("siteeast", "sitenorth", "sitewest")
    np.testing.assert_array_equal(g.Z[d2.row_cell], pd.get_dummies(D["site"]).to_numpy(float))
    # with the margin present: contrasts
    d3 = quiet_design("k | trials(size) ~ z + site + site:z + (1 + site | herd)", D)
    assert d3.fixed_names == ("Intercept", "z", "sitenorth", "sitewest", "sitenorth:z",
                              "sitewest:z")
    assert d3.groups[0].coef_names == ("Intercept", "sitenorth", "sitewest")
