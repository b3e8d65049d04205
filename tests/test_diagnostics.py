"""Diagnosis on synthetic draws (every flag fires exactly when it should; RELIABILITY D1, D2)
and funnel localisation (D3)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from poolwise.inference.diagnostics import (
    BFMI_MIN,
    RHAT_MAX,
    Diagnosis,
    Finding,
    FindingCode,
    diagnose,
    localise_funnels,
)

C, D = 4, 1000


def tree(post: dict[str, np.ndarray], **stats: np.ndarray) -> xr.DataTree:
    """A DataTree with ``posterior`` (arrays (chain, draw[, g])) and ``sample_stats``."""
    first = next(iter(post.values()))
    c, d = first.shape[:2]
    data = {}
    for name, arr in post.items():
        dims = ("chain", "draw") + (("g",) if arr.ndim == 3 else ())
        data[name] = (dims, arr)
    coords = {"chain": np.arange(c), "draw": np.arange(d)}
    if any(a.ndim == 3 for a in post.values()):
        n = next(a.shape[2] for a in post.values() if a.ndim == 3)
        coords["g"] = np.arange(1, n + 1)
    ss = {k: (("chain", "draw"), v) for k, v in stats.items()}
    if "diverging" not in stats:
        ss["diverging"] = (("chain", "draw"), np.zeros((c, d), dtype=bool))
    return xr.DataTree.from_dict({
        "posterior": xr.Dataset(data, coords=coords),
        "sample_stats": xr.Dataset(ss, coords={"chain": coords["chain"], "draw": coords["draw"]}),
    })


def iid(seed: int = 0, n: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(C, D) if n is None else (C, D, n))


def errors(d: Diagnosis) -> set[str]:
    return {f.code for f in d.findings if f.severity == "error"}


def codes(d: Diagnosis) -> set[str]:
    return {f.code for f in d.findings}


def test_clean_draws_raise_nothing():
    d = diagnose(tree({"mu": iid(1), "a": iid(2, 5)}, energy=iid(3)))
    assert d.ok and d.findings == ()
    assert d.max_rhat < RHAT_MAX and d.min_ess_bulk > 400 and d.min_ess_tail > 400
    assert all(b > BFMI_MIN for b in d.bfmi)
    assert d.parameters == ("mu", "a[1]", "a[2]", "a[3]", "a[4]", "a[5]")


def test_numbers_match_arviz_stats():
    """D1: R-hat (rank-normalized, folded), bulk and tail ESS and E-BFMI are arviz-stats'."""
    import arviz_stats as azs

    rng = np.random.default_rng(7)
    x = np.cumsum(rng.normal(size=(C, D)), axis=1) * 0.05 + rng.normal(size=(C, D))
    t = tree({"x": x}, energy=iid(8))
    d = diagnose(t)
    ref_rhat = float(azs.rhat(t, method="rank")["x"])
    ref_bulk = float(azs.ess(t, method="bulk")["x"])
    ref_tail = float(azs.ess(t, method="tail", prob=(0.05, 0.95))["x"])
    ref_bfmi = azs.bfmi(t)["energy"].values
    assert d.rhat[0] == pytest.approx(ref_rhat, rel=1e-6)
    assert d.ess_bulk[0] == pytest.approx(ref_bulk, rel=1e-6)
    assert d.ess_tail[0] == pytest.approx(ref_tail, rel=1e-6)
    np.testing.assert_allclose(d.bfmi, ref_bfmi, rtol=1e-6)


def test_shifted_chain_flags_rhat():
    x = iid(11)
    x[2] += 0.5  # one chain shifted by half a posterior sd
    d = diagnose(tree({"x": x}))
    # the shift is between-chain variance, so the effective sample size is short too (both
    # are right); nothing else fires
    assert "rhat" in errors(d) and errors(d) <= {"rhat", "ess_bulk", "ess_tail"}
    f = d.finding("rhat")
    assert d.max_rhat > RHAT_MAX and "have not mixed" in f.message and f.parameters == ("x",)


def test_ar1_flags_low_ess():
    rng = np.random.default_rng(12)
    rho = 0.995
    x = np.empty((C, D))
    x[:, 0] = rng.normal(size=C)
    eps = rng.normal(size=(C, D)) * math.sqrt(1 - rho**2)
    for t in range(1, D):
        x[:, t] = rho * x[:, t - 1] + eps[:, t]
    d = diagnose(tree({"x": x}))
    assert {"ess_bulk", "ess_tail"} <= errors(d)
    assert d.min_ess_bulk < 100 * C
    assert "below 100 per chain" in d.finding("ess_bulk").message


def test_low_ebfmi_energy_flags_bfmi_only():
    """An AR(1) energy series with phi = 0.9 has E-BFMI ~ 2 (1 - phi) = 0.2."""
    rng = np.random.default_rng(13)
    e = np.empty((C, D))
    e[:, 0] = rng.normal(size=C)
    for t in range(1, D):
        e[:, t] = 0.9 * e[:, t - 1] + rng.normal(size=C) * math.sqrt(1 - 0.81)
    d = diagnose(tree({"x": iid(14)}, energy=e))
    assert errors(d) == {"bfmi"}
    assert all(b < BFMI_MIN for b in d.bfmi) and all(0.1 < b < 0.3 for b in d.bfmi)
    assert "chain 0" in d.finding("bfmi").message


def test_constant_draws_are_rhat_undefined_not_unmixed():
    d = diagnose(tree({"c": np.full((C, D), 2.5), "x": iid(15)}))
    assert errors(d) == {"rhat_undefined"}
    f = d.finding("rhat_undefined")
    assert "R-hat undefined (constant draws)" in f.message and f.parameters == ("c",)
    assert not d.has("rhat")  # never "not mixed"
    by = dict(zip(d.parameters, d.ess_bulk, strict=True))
    assert math.isnan(by["c"])  # not arviz's "ESS = number of draws"
    assert d.max_rhat < RHAT_MAX  # the defined R-hat values are still reported


def test_stuck_chains_are_not_mixed():
    x = np.repeat(np.arange(C, dtype=float)[:, None], D, axis=1)  # each chain its own constant
    d = diagnose(tree({"x": x}))
    assert "rhat" in errors(d) and "stuck" in d.finding("rhat").message
    assert math.isinf(d.max_rhat)


def test_nan_draw_gives_nan_ess_not_large():
    x = iid(16)
    x[1, 10] = np.nan
    d = diagnose(tree({"x": x, "y": iid(17)}))
    assert "nonfinite" in errors(d)
    assert math.isnan(d.min_ess_bulk) and math.isnan(d.min_ess_tail)
    by = dict(zip(d.parameters, d.ess_bulk, strict=True))
    assert math.isnan(by["x"]) and by["y"] > 1000
    assert not d.has("rhat") and not d.has("ess_bulk")
    assert "NaN" in d.finding("nonfinite").message


def test_rhat_false_flag_rate_on_iid_draws():
    """D2: 100 independent 4 x 1000 N(0, 1) draw sets: R-hat > 1.01 in at most 5 of them."""
    rng = np.random.default_rng(18)
    post = {f"x{i}": rng.normal(size=(C, D)) for i in range(100)}
    d = diagnose(tree(post))
    flagged = d.finding("rhat").parameters if d.has("rhat") else ()
    assert len(flagged) <= 5


def test_divergences_reported_per_chain_with_percent():
    div = np.zeros((C, D), dtype=bool)
    div[1, :3] = True
    div[3, :12] = True
    d = diagnose(tree({"x": iid(19)}, diverging=div))
    assert d.divergences == 15 and d.divergences_per_chain == (0, 3, 0, 12)
    assert d.divergence_pct_per_chain == pytest.approx((0.0, 0.3, 0.0, 1.2))
    msg = d.finding("divergences").message
    assert "chain 1: 3 (0.3%)" in msg and "chain 3: 12 (1.2%)" in msg
    assert "may be biased" in msg and not d.ok


def test_treedepth_and_acceptance_are_warnings():
    sat = np.zeros((C, D), dtype=bool)
    sat[2, ::4] = True
    acc = np.full((C, D), 0.8)
    acc[0] = 0.6
    d = diagnose(tree({"x": iid(20)}, reached_max_treedepth=sat, acceptance_rate=acc),
                 target_accept=0.8)
    assert d.ok  # efficiency problems, not validity ones
    assert d.treedepth_saturation == pytest.approx((0.0, 0.0, 0.25, 0.0))
    assert "chain 2: 25.0%" in d.finding("treedepth").message
    assert d.finding("acceptance").severity == "warning"
    assert "chain 0: 0.60" in d.finding("acceptance").message
    assert d.accept_per_chain[1] == pytest.approx(0.8)


def test_many_group_parameters_tolerate_a_few_chance_rhats():
    """H1: with many group-level parameters a few R-hat > 1.01 is a warning; any
    population-level one, or more than 1%, is an error."""
    rng = np.random.default_rng(21)
    a = rng.normal(size=(C, 500, 200))
    mu = rng.normal(size=(C, 500))
    a[0, :, :2] *= 1.5  # chain 0 too wide for 2 of 200 components (1%): folded R-hat
    d = diagnose(tree({"mu": mu, "a": a}))
    f = d.finding("rhat")
    assert f is not None and f.severity == "warning" and d.ok
    assert set(f.parameters) == {"a[1]", "a[2]"}
    assert "2 of 200 group-level" in f.message
    shifted = mu.copy()
    shifted[1] += 0.5
    assert diagnose(tree({"mu": shifted, "a": a})).finding("rhat").severity == "error"
    a[0, :, :4] *= 1.5  # 2%
    assert diagnose(tree({"mu": mu, "a": a})).finding("rhat").severity == "error"


def _funnel_draws(seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    log_sd = rng.normal(-0.5, 1.0, size=(C, D))
    u = rng.uniform(size=(C, D))
    if where == "small":
        div = (log_sd < -1.8) & (u < 0.3)
    elif where == "large":
        div = (log_sd > 0.8) & (u < 0.3)
    else:
        div = u < 0.02
    return np.exp(log_sd), div


def test_funnel_at_small_sd_is_named():
    sd, div = _funnel_draws(24, "small")
    d = diagnose(tree({"sd_school": sd, "x": iid(25)}, diverging=div))
    (f,) = d.funnels
    assert f.parameter == "sd_school" and f.term == "school" and f.direction == "small"
    assert f.median_divergent < f.median_all and f.p_value < 1e-6
    assert d.culprit is f
    assert f.describe() == f"divergences concentrate where sd_school < {f.threshold:.2g}"
    assert f.threshold < float(np.median(sd))
    msg = d.finding("funnel").message
    assert msg.startswith("Divergences concentrate where sd_school <") and "funnel" in msg


def test_funnel_at_large_sd_is_the_inverted_funnel():
    sd, div = _funnel_draws(26, "large")
    (f,) = localise_funnels(
        tree({"sd_school": sd}).posterior.to_dataset(), div
    )
    assert f.direction == "large" and f.median_divergent > f.median_all
    assert f.describe().startswith("divergences concentrate where sd_school >")


def test_scattered_divergences_are_not_blamed_on_a_term():
    sd, div = _funnel_draws(27, "none")
    d = diagnose(tree({"sd_school": sd}, diverging=div))
    assert d.funnels == () and d.culprit is None
    assert d.finding("funnel_unlocalised") is not None
    few = np.zeros((C, D), dtype=bool)
    few[0, :2] = True
    d2 = diagnose(tree({"sd_school": sd}, diverging=few))
    assert "too few to localise" in d2.finding("funnel_unlocalised").message


def test_to_dict_is_json_ready():
    import json

    sd, div = _funnel_draws(28, "small")
    d = diagnose(tree({"sd_school": sd, "c": np.zeros((C, D))}, diverging=div))
    out = json.loads(json.dumps(d.to_dict()))
    assert out["ok"] is False and out["divergences"] == int(div.sum())
    assert out["funnels"][0]["parameter"] == "sd_school"
    assert {f["code"] for f in out["findings"]} >= {"divergences", "funnel", "rhat_undefined"}


def test_diagnose_rejects_other_objects():
    with pytest.raises(TypeError, match="Fit or an xarray.DataTree"):
        diagnose({"posterior": 1})  # type: ignore[arg-type]


# ---- finding codes: one enum, shared by the checks, the repair loop and the displays ---------

SRC = Path(__file__).resolve().parents[1] / "src" / "poolwise"

#: the values are part of result.json and of saved fits: they never change
SAVED_CODES = {
    "divergences", "nonfinite", "rhat_undefined", "rhat_single_chain", "rhat", "ess_bulk",
    "ess_tail", "bfmi", "treedepth", "acceptance", "funnel", "funnel_unlocalised", "few_levels",
    "extreme_levels", "prior_dominated", "prior_sensitive", "overdispersion",
    "approx_quadrature", "approx_pareto_k", "approx_ess", "approx_vs_nuts",
}


def test_finding_code_values_are_the_saved_strings():
    assert {c.value for c in FindingCode} == SAVED_CODES
    assert all(c == c.value and f"{c}" == c.value for c in FindingCode)


def test_every_finding_of_the_checks_carries_a_member():
    """Synthetic draws that make most checks fire: every finding's code is a member."""
    x = iid(30)
    x[2] += 0.5
    sd, div = _funnel_draws(24, "small")
    nan = iid(31)
    nan[0, 3] = np.nan
    cases = [
        tree({"x": x, "c": np.full((C, D), 1.0), "n": nan}, energy=iid(32) * 0.0 + 1.0),
        tree({"sd_school": sd, "x": iid(25)}, diverging=div,
             reached_max_treedepth=div, acceptance_rate=np.full((C, D), 0.5)),
        tree({"sd_school": _funnel_draws(27, "none")[0]}, diverging=_funnel_draws(27, "none")[1]),
        tree({"x": iid(33)[:1]}),
    ]
    seen = set()
    for t in cases:
        for f in diagnose(t, target_accept=0.8).findings:
            assert type(f.code) is FindingCode, f
            seen.add(f.code)
    assert len(seen) >= 10, seen


def test_a_finding_given_a_string_holds_the_member():
    """A saved fit holds the codes as strings: the Finding rebuilt from one holds the member
    (so it equals a fresh one), and a code no check makes is refused."""
    f = Finding("extreme_levels", "info", "Levels of 'g': 1 have all outcomes 0.")
    assert f.code is FindingCode.EXTREME_LEVELS
    assert f == Finding(FindingCode.EXTREME_LEVELS, "info", f.message)
    with pytest.raises(ValueError, match="not_a_code"):
        Finding("not_a_code", "error", "x")


def _python_sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.name != "finding_codes.py")


def test_every_finding_is_created_with_a_member():
    """In the source, ``Finding(...)``'s code is always written ``FindingCode.X``."""
    bad = []
    for path in _python_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "Finding"):
                continue
            code = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "code"), None)
            ok = (isinstance(code, ast.Attribute) and isinstance(code.value, ast.Name)
                  and code.value.id == "FindingCode")
            if not ok:
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not bad, "Finding created without a FindingCode member: " + ", ".join(bad)


def _code_literals_matched(tree: ast.AST) -> list[int]:
    """Lines where a string equal to a finding code is compared (==, !=, in), combined with a
    set of codes (&, |, -) or passed to ``has`` / ``finding``."""
    lines = []

    def literals(node: ast.AST) -> list[int]:
        return [n.lineno for n in ast.walk(node)
                if isinstance(n, ast.Constant) and n.value in SAVED_CODES]

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            lines += literals(node)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr | ast.Sub):
            lines += literals(node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("has", "finding")):
            lines += [n for a in node.args for n in literals(a)]
    return lines


def test_no_module_matches_finding_codes_by_string():
    """The repair loop, the displays, the report and the CLI match codes by member: no
    string literal of a code is compared anywhere in the package."""
    assert _code_literals_matched(ast.parse('codes & {"bfmi"}\nd.has("rhat")')) == [1, 2]
    bad = []
    for path in _python_sources():
        lines = _code_literals_matched(ast.parse(path.read_text(encoding="utf-8")))
        bad += [f"{path.relative_to(SRC)}:{n}" for n in lines]
    assert not bad, "finding codes matched by string: " + ", ".join(bad)


@pytest.mark.parametrize("module", ["inference/repair.py", "inference/display.py",
                                    "inference/diagnostics/findings.py"])
def test_the_readers_of_codes_write_no_code_as_a_string(module):
    """Stricter, where codes are read (the repair rules, the displays, the headline checks):
    a code's string appears only as a key of a dict (``to_dict``'s ``"divergences"``: the
    number, not the finding) or of ``dict.get``."""
    tree = ast.parse((SRC / module).read_text(encoding="utf-8"))
    keys = {id(k) for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys}
    keys |= {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "get" for a in n.args}
    bad = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant)
           and n.value in SAVED_CODES and id(n) not in keys]
    assert not bad, f"{module}: finding codes written as strings on lines {bad}"
    assert "FindingCode" in (SRC / module).read_text(encoding="utf-8")
