"""poolwise.model.naming: the names the engine gives its variables and parameters, and reading them
back (the plots and the report rely on it)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poolwise.engine.layout import pack
from poolwise.model import naming
from poolwise.model.spec import build_model


@pytest.mark.parametrize(
    ("name", "kind", "group", "coef", "coef2", "label"),
    [
        ("Intercept", "fixed", None, "Intercept", None, None),
        ("b_x", "fixed", None, "x", None, None),
        ("b_x:sexmale", "fixed", None, "x:sexmale", None, None),
        ("sd_district", "sd", "district", "Intercept", None, None),
        ("sd_district__Intercept", "sd", "district", "Intercept", None, None),
        ("sd_a:b__urban", "sd", "a:b", "urban", None, None),
        ("cor_district__Intercept__urban", "cor", "district", "Intercept", "urban", None),
        ("a_district", "total", "district", "Intercept", None, None),
        ("a_district[x y]", "total", "district", "Intercept", None, "x y"),
        ("b_district__urban", "total", "district", "urban", None, None),
        ("b_district__urban[é]", "total", "district", "urban", None, "é"),
        ("log_sd_district", "log_sd", "district", "Intercept", None, None),
        ("atanh_cpc_cor_g__Intercept__x", "cpc", "g", "Intercept", "x", None),
        ("u_g__Intercept[10]", "level", "g", "Intercept", None, "10"),
        ("z_g__x[a[1]]", "level", "g", "x", None, "a[1]"),
    ],
)
def test_parse(name, kind, group, coef, coef2, label):
    p = naming.parse(name)
    assert (p.kind, p.group, p.coef, p.coef2, p.label) == (kind, group, coef, coef2, label)


def test_parse_round_trips_the_variable():
    assert naming.parse("sd_g").variable == "sd_g"
    assert naming.parse("sd_g__Intercept").variable == "sd_g__Intercept"
    assert naming.parse("log_sd_g__x").variable == "sd_g__x"
    assert naming.parse("atanh_cpc_cor_g__Intercept__x").variable == "cor_g__Intercept__x"
    assert naming.parse("z_g__x[3]").variable == "b_g__x"
    assert naming.parse("u_g__Intercept[3]").variable == "a_g"
    assert naming.parse("a_g[3]").variable == "a_g"
    assert naming.parse("b_x").variable == "b_x"


def test_the_effect_an_sd_scales():
    assert naming.parse("sd_district").effect == "a_district"
    assert naming.parse("sd_district__urban").effect == "b_district__urban"
    assert naming.parse("b_x").effect is None


def test_groups_resolve_double_underscores_in_column_names():
    # a fixed coefficient whose column name contains "__" reads as a group slope without them
    assert naming.parse("b_x__y").kind == "total"
    assert naming.parse("b_x__y", groups={"g"}).kind == "fixed"
    assert naming.parse("b_x__y", groups={"g"}).coef == "x__y"
    p = naming.parse("sd_my__g__slope", groups={"my__g"})
    assert (p.group, p.coef) == ("my__g", "slope")


@pytest.mark.parametrize("bad", ["sigma", "sd", "cor_g__x", "u_g__x", "b_x[1]", "beta_0"])
def test_parse_refuses_other_names(bad):
    with pytest.raises(ValueError, match="not a poolwise parameter name"):
        naming.parse(bad)
    assert naming.kind(bad) is None


def test_every_engine_name_reads_back(bangladesh):
    frame = bangladesh[bangladesh["district"] <= 8].copy()
    frame["district"] = frame["district"].map(lambda d: f"d {d}")
    spec = build_model("use.contraception ~ 1 + urban + (1 + urban | district)", frame,
                       parameterization="noncentered")
    packed = pack(spec)
    groups = {t.name for t in spec.terms}
    kinds = {"fixed": "fixed", "sd": "sd", "cor": "cor", "total": "total"}
    for v in packed.variables:
        p = naming.parse(v.name, groups)
        assert p.kind == kinds[v.kind]
        assert p.variable == v.name
        if v.kind in ("sd", "total"):
            assert (p.group, p.coef) == (v.term, v.coef)
    seen = {"fixed": 0, "log_sd": 0, "cpc": 0, "level": 0}
    names = {v.name for v in packed.variables}
    for pname in packed.param_names:
        p = naming.parse(pname, groups)
        seen[p.kind] += 1
        assert p.variable in names
    assert seen == {"fixed": 2, "log_sd": 2, "cpc": 1, "level": 2 * 8}
    labels = {naming.parse(n).label for n in packed.param_names if n.startswith("z_")}
    assert labels == {f"d {d}" for d in range(1, 9)}


def test_builders_match_the_documented_forms():
    class _G:
        n_coefs = 1

    class _T:
        name = "g"
        group = _G()

    assert naming.sd_name(_T(), "Intercept") == "sd_g"
    _T.group.n_coefs = 2
    assert naming.sd_name(_T(), "Intercept") == "sd_g__Intercept"
    assert naming.total_name(_T(), "x") == "b_g__x"
    assert naming.fixed_name("x") == "b_x"
    assert naming.element(naming.total("g", "Intercept"), "j") == "a_g[j]"
    assert naming.level_param_name(_T(), "x", "lab", centered=True) == "u_g__x[lab]"
    assert naming.cpc_name(_T(), "Intercept", "x") == "atanh_cpc_cor_g__Intercept__x"
    assert np.all([naming.kind(n) == "sd" for n in ("sd_g", "sd_g__x")])
    assert pd.isna(naming.parse("Intercept").group)
