"""The link and prior-family registries (poolwise.model.links, poolwise.model.families).

Every entry is checked by iterating over the registry, so a new link or family is covered
here as soon as it is registered:

* prior families: the compiled numba kernel (log density and gradient) against SciPy's log
  density (exactly: the kernels keep every normalizing constant) and against central finite
  differences; the density's dispatcher (``_prior_logp_grad``) reaches the entry's kernel
  through the entry's id; the quantile function against numerical integration of the
  density; the random draws against the quantile function (4 Monte Carlo SEs);
* links: the inverse link, ``dp/deta`` and the binomial Fisher weight against a SciPy
  distribution whose CDF is the inverse link (``_SCIPY_CDF`` below: the one line a new link
  must add here), and the compiled likelihood kernel under the entry's id against SciPy's
  binomial log pmf and finite differences;
* unknown names raise SpecError when a prior or a model is built, not later.
"""

from __future__ import annotations

import math
import typing
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.special import gammaln

from poolwise.engine import density as D
from poolwise.engine.layout import pack
from poolwise.errors import SpecError
from poolwise.model import families, links
from poolwise.model.predictor import inverse_link
from poolwise.model.priors import Prior, Priors, exponential, normal
from poolwise.model.spec import Link, build_model, level_information

SCALAR = [f for f in families.names() if families.get(f).kernel_id is not None]

#: the SciPy distribution whose CDF is each link's inverse (its pdf is dp/deta)
_SCIPY_CDF = {"logit": stats.logistic, "probit": stats.norm, "cloglog": stats.gumbel_l}

_SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def _params(fam: families.FamilySpec) -> st.SearchStrategy[tuple[float, ...]]:
    parts = [
        st.floats(0.2, 30.0) if p in fam.positive else st.floats(-5.0, 5.0)
        for p in fam.params
    ]
    return st.tuples(*parts)


def _value(fam: families.FamilySpec) -> st.SearchStrategy[float]:
    return st.floats(1e-3, 25.0) if fam.support == "positive" else st.floats(-25.0, 25.0)


@st.composite
def _family_case(draw, name: str):
    fam = families.get(name)
    return draw(_params(fam)), draw(_value(fam))


def _kernel(fam: families.FamilySpec, params, v: float) -> tuple[float, float]:
    p = (list(params) + [0.0] * 3)[:3]
    return fam.kernel(p[0], p[1], p[2], v)


# ---- prior families --------------------------------------------------------------------------


def test_family_ids_are_unique_and_match_the_kernel_constants():
    ids = [families.get(f).kernel_id for f in SCALAR]
    assert len(set(ids)) == len(ids)
    for name in SCALAR:
        assert getattr(D, name.upper()) == families.get(name).kernel_id


@pytest.mark.parametrize("name", SCALAR)
def test_family_kernel_matches_scipy_and_finite_differences(name):
    fam = families.get(name)

    @_SETTINGS
    @given(_family_case(name))
    def check(case):
        params, v = case
        lp, grad = _kernel(fam, params, v)
        # the dispatcher the density calls reaches this kernel through the entry's id
        words = fam.kernel_words(params)
        assert D._prior_logp_grad(int(words[0]), words[1], words[2], words[3], v) == (lp, grad)
        ref = float(fam.logpdf(params, v))  # SciPy, with all normalizing constants
        assert lp == pytest.approx(ref, rel=1e-10, abs=1e-10)
        h = 1e-6 * max(1.0, abs(v))
        if fam.support == "positive":
            h = min(h, 0.5 * v)
        fd = (_kernel(fam, params, v + h)[0] - _kernel(fam, params, v - h)[0]) / (2 * h)
        assert grad == pytest.approx(fd, rel=1e-5, abs=1e-6)
        if name != "flat":  # SciPy's own log density, differentiated numerically
            fd_ref = (float(fam.logpdf(params, v + h)) - float(fam.logpdf(params, v - h))) / (2 * h)
            assert grad == pytest.approx(fd_ref, rel=1e-5, abs=1e-6)

    check()


#: SciPy's log density of every proper scalar family (the registry's own may be NumPy's)
SCIPY_LOGPDF = {
    "normal": lambda x, mu, sigma: stats.norm.logpdf(x, mu, sigma),
    "student_t": lambda x, nu, mu, sigma: stats.t.logpdf(x, nu, mu, sigma),
    "exponential": lambda x, rate: stats.expon.logpdf(x, scale=1.0 / rate),
    "half_normal": lambda x, sigma: stats.halfnorm.logpdf(x, scale=sigma),
    "half_student_t": lambda x, nu, sigma: np.where(
        x >= 0.0, math.log(2.0) + stats.t.logpdf(x, nu, scale=sigma), -np.inf),
}


def test_every_proper_family_has_a_scipy_log_density():
    assert set(SCIPY_LOGPDF) == {f for f in SCALAR if families.get(f).proper}


@pytest.mark.parametrize("name", sorted(SCIPY_LOGPDF))
def test_family_log_density_is_scipys(name):
    """The registry's log density (NumPy closed forms for the default priors, so that a fit
    never imports scipy.stats) equals SciPy's, bit for bit, off and on the support."""
    fam = families.get(name)
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0.0, 3.0, 500), rng.exponential(2.0, 500),
                        [0.0, -0.0, -1.0, 1e-300, 1e30, np.inf, -np.inf, np.nan]])
    for _ in range(5):
        params = tuple(float(rng.uniform(0.05, 8.0)) if p in fam.positive
                       else float(rng.uniform(-2.0, 2.0)) for p in fam.params)
        with np.errstate(all="ignore"):
            got = np.asarray(fam.logpdf(params, x))
            want = np.asarray(SCIPY_LOGPDF[name](x, *params))
        np.testing.assert_array_equal(got, want)


def test_flat_is_improper_and_zero():
    fam = families.get("flat")
    assert not fam.proper
    assert _kernel(fam, (), 3.7) == (0.0, 0.0)
    with pytest.raises(ValueError, match="improper"):
        fam.draw((), np.random.default_rng(0), 3)
    with pytest.raises(ValueError, match="quantile"):
        fam.ppf((), 0.5)


def test_unknown_kernel_id_is_nan_not_flat():
    lp, grad = D._prior_logp_grad(97, 1.0, 1.0, 1.0, 0.5)
    assert math.isnan(lp) and math.isnan(grad)


PROPER = [f for f in SCALAR if families.get(f).proper]


@pytest.mark.parametrize("name", PROPER)
@pytest.mark.parametrize("q", [0.05, 0.5, 0.95])
def test_family_quantile_integrates_to_q(name, q):
    fam = families.get(name)
    rng = np.random.default_rng(11)
    for _ in range(4):
        params = tuple(
            float(rng.uniform(0.5, 8.0)) if p in fam.positive else float(rng.uniform(-2, 2))
            for p in fam.params
        )
        x = float(fam.ppf(params, q))
        lo = 0.0 if fam.support == "positive" else -np.inf
        mass, err = integrate.quad(lambda t, p=params: math.exp(fam.logpdf(p, t)), lo, x,
                                   limit=200)
        assert mass == pytest.approx(q, abs=max(1e-7, 10 * err))


@pytest.mark.parametrize("name", PROPER)
def test_family_draws_follow_the_quantiles(name):
    fam = families.get(name)
    rng = np.random.default_rng(5)
    params = tuple(2.5 if p in fam.positive else 0.7 for p in fam.params)
    n = 40_000
    x = fam.draw(params, rng, n)
    assert x.shape == (n,)
    if fam.support == "positive":
        assert (x >= 0).all()
    for q in (0.1, 0.5, 0.9):
        frac = float(np.mean(x <= fam.ppf(params, q)))
        assert abs(frac - q) < 4 * math.sqrt(q * (1 - q) / n)


@pytest.mark.parametrize("name", families.names())
def test_family_parameters_are_validated(name):
    fam = families.get(name)
    good = tuple(1.5 for _ in fam.params)
    assert Prior(name, good).params == good
    with pytest.raises(SpecError, match="takes"):
        Prior(name, good + (1.0,))
    for i, p in enumerate(fam.params):
        bad = list(good)
        bad[i] = -1.0 if p in fam.positive else math.inf
        with pytest.raises(SpecError, match=f"{name}\\(\\) needs {p}"):
            Prior(name, tuple(bad))


def test_kernel_words_pad_to_three_parameters():
    assert families.get("half_normal").kernel_words((0.5,)) == [4.0, 0.5, 0.0, 0.0]
    assert families.get("student_t").kernel_words((3, 0, 2)) == [2.0, 3.0, 0.0, 2.0]
    with pytest.raises(SpecError, match="correlation matrix"):
        families.get("lkj").kernel_words((2.0,))


# ---- links -----------------------------------------------------------------------------------


def test_every_link_has_a_scipy_reference_and_a_type():
    assert set(_SCIPY_CDF) == set(links.names())
    assert set(typing.get_args(Link)) == set(links.names())
    ids = [links.get(n).kernel_id for n in links.names()]
    assert len(set(ids)) == len(ids)
    for name in links.names():
        assert getattr(D, name.upper()) == links.get(name).kernel_id


def test_the_logit_kernel_keeps_extreme_and_non_finite_eta():
    """The branch-free logit of :func:`poolwise.engine.density.logit_log_p_q` (selects, for
    SIMD lanes) at the ends: a NaN eta gives NaN for both, an infinite one 0 and -inf, and
    |eta| far beyond exp's range the log of 1 (0) and -|eta|."""
    cases = {math.inf: (0.0, -math.inf), -math.inf: (-math.inf, 0.0), 800.0: (0.0, -800.0),
             -800.0: (-800.0, 0.0), 0.0: (-math.log(2), -math.log(2))}
    for eta, (lp, lq) in cases.items():
        assert D.log_p_q(D.LOGIT, eta) == pytest.approx((lp, lq), rel=1e-15, abs=1e-300)
    assert all(math.isnan(v) for v in D.log_p_q(D.LOGIT, math.nan))
    for eta in (-36.0, -3.0, -1e-300, 1e-300, 3.0, 36.0):
        got = D.log_p_q(D.LOGIT, eta)
        assert got == pytest.approx((stats.logistic.logcdf(eta), stats.logistic.logsf(eta)),
                                    rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("name", links.names())
def test_link_matches_scipy(name):
    lk, ref = links.get(name), _SCIPY_CDF[name]

    @_SETTINGS
    @given(st.floats(-8.0, 8.0), st.integers(1, 500))
    def check(eta, n):
        p = ref.cdf(eta)
        assert lk.inverse(eta) == pytest.approx(p, rel=1e-12, abs=1e-300)
        assert inverse_link(name, np.array([eta]))[0] == pytest.approx(p, rel=1e-12)
        assert lk.dp_deta(eta) == pytest.approx(ref.pdf(eta), rel=1e-10, abs=1e-300)
        h = 1e-6
        fd = (lk.inverse(eta + h) - lk.inverse(eta - h)) / (2 * h)
        assert lk.dp_deta(eta) == pytest.approx(fd, rel=1e-5, abs=1e-9)
        lp, lq = lk.log_p_q(np.array([eta]))
        assert lp[0] == pytest.approx(ref.logcdf(eta), rel=1e-10, abs=1e-12)
        assert lq[0] == pytest.approx(ref.logsf(eta), rel=1e-10, abs=1e-12)
        # the compiled kernel every log-likelihood from draws uses (poolwise.model.likelihood)
        klp, klq = D.log_p_q(lk.kernel_id, eta)
        assert klp == pytest.approx(ref.logcdf(eta), rel=1e-12, abs=1e-14)
        assert klq == pytest.approx(ref.logsf(eta), rel=1e-12, abs=1e-14)
        fisher = n * math.exp(2 * ref.logpdf(eta) - ref.logcdf(eta) - ref.logsf(eta))
        assert float(lk.fisher_weight(n, eta)) == pytest.approx(fisher, rel=1e-9, abs=1e-300)
        if 1e-6 < p < 1 - 1e-6:
            assert float(lk.link(p)) == pytest.approx(eta, rel=1e-6, abs=1e-6)

    check()


def test_fisher_weight_is_n_p_q_only_for_the_logit():
    eta = np.linspace(-3, 3, 13)
    p = links.get("logit").inverse(eta)
    np.testing.assert_allclose(links.get("logit").fisher_weight(7, eta), 7 * p * (1 - p),
                               rtol=1e-13)
    for name in ("probit", "cloglog"):
        p = links.get(name).inverse(eta)
        assert not np.allclose(links.get(name).fisher_weight(7, eta), 7 * p * (1 - p))


@pytest.mark.parametrize("name", links.names())
def test_fisher_weight_is_finite_in_the_tails(name):
    eta = np.array([-800.0, -40.0, -10.0, 10.0, 40.0, 800.0])
    w = links.get(name).fisher_weight(10, eta)
    assert np.isfinite(w).all() and (w >= 0).all()


@pytest.mark.parametrize("name", links.names())
def test_likelihood_kernel_under_the_link_id(name):
    lk, ref = links.get(name), _SCIPY_CDF[name]

    @_SETTINGS
    @given(st.floats(-6.0, 6.0), st.integers(0, 60), st.floats(0.0, 1.0))
    def check(eta, n, frac):
        y = float(round(frac * n))
        ll, d = D.cell_loglik(lk.kernel_id, y, float(n), eta)
        # SciPy's binomial pmf where p is well away from 0 and 1; else its log CDF / log SF
        # (binom.logpmf computes log(1 - p) from p and loses the digits there)
        p = ref.cdf(eta)
        if 1e-3 < p < 1 - 1e-3:
            const = gammaln(n + 1) - gammaln(y + 1) - gammaln(n - y + 1)
            expected = stats.binom.logpmf(y, n, p) - const
        else:
            expected = (y * ref.logcdf(eta) if y > 0 else 0.0) + (
                (n - y) * ref.logsf(eta) if n > y else 0.0)
        assert ll == pytest.approx(expected, rel=1e-9, abs=1e-9)
        h = 1e-6
        fd = (D.cell_loglik(lk.kernel_id, y, float(n), eta + h)[0]
              - D.cell_loglik(lk.kernel_id, y, float(n), eta - h)[0]) / (2 * h)
        assert d == pytest.approx(fd, rel=1e-5, abs=1e-6)

    check()


# ---- unknown names raise when the model is built ----------------------------------------------


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    g = np.repeat([f"g{i}" for i in range(8)], 6)
    return pd.DataFrame({"y": rng.integers(0, 2, 48), "g": g})


def test_unknown_link_raises_at_build(frame):
    with pytest.raises(SpecError, match="link must be one of logit, probit, cloglog; got 'loglog'"):
        build_model("y ~ 1 + (1 | g)", frame, link="loglog")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="link must be one of"):
        links.get("identity")
    with pytest.raises(SpecError, match="link must be one of"):
        inverse_link("identity", np.zeros(2))  # no silent cloglog


def test_unknown_link_in_a_replaced_spec_raises_when_packed(frame):
    spec = build_model("y ~ 1 + (1 | g)", frame)
    with pytest.raises(SpecError, match="link must be one of"):
        pack(replace(spec, link="identity"))  # type: ignore[arg-type]


def test_unknown_family_raises_when_the_prior_is_made():
    with pytest.raises(SpecError, match="unknown prior family 'gamma'; known: flat, normal"):
        Prior("gamma", (2.0, 1.0))  # type: ignore[arg-type]


def test_unknown_family_smuggled_into_priors_raises_at_build(frame):
    priors = Priors()
    bad = exponential(1.0)
    object.__setattr__(bad, "family", "gamma")  # bypasses the checks of Prior and Priors
    object.__setattr__(priors, "sd", bad)
    with pytest.raises(SpecError, match="unknown prior family 'gamma'"):
        build_model("y ~ 1 + (1 | g)", frame, priors=priors)


def test_family_support_is_checked_by_prior_class():
    with pytest.raises(SpecError, match="must be positive-only"):
        Priors(sd=normal(0, 1))
    with pytest.raises(SpecError, match="whole real line"):
        Priors(b=exponential(1.0))
    with pytest.raises(SpecError, match="lkj"):
        Priors(cor=normal(0, 1))


# ---- the link reaches the Fisher information of the auto parameterization ---------------------


@pytest.mark.parametrize("name", links.names())
def test_level_information_uses_the_links_fisher_weight(frame, name):
    spec = build_model("y ~ 1 + (1 | g)", frame, link=name)
    term, d = spec.terms[0], spec.design
    cell_p = np.linspace(0.1, 0.8, d.n_cells)
    info = level_information(term, d, cell_p, link=name)[:, 0]
    ref = _SCIPY_CDF[name]
    eta = ref.ppf(cell_p)
    w = d.n * ref.pdf(eta) ** 2 / (cell_p * (1 - cell_p))
    expected = np.bincount(term.group.codes, weights=w * term.group.Z_engine[:, 0] ** 2,
                           minlength=term.group.n_levels)
    np.testing.assert_allclose(info, expected, rtol=1e-9)


def test_unknown_link_id_is_nan_not_cloglog():
    ll, d = D.cell_loglik(97, 2.0, 5.0, 0.3)
    assert math.isnan(ll) and math.isnan(d)


@pytest.mark.parametrize("name", families.names())
def test_every_family_can_be_written_as_text(name):
    from poolwise.model.priors import parse_prior

    params = tuple(float(i + 2) for i in range(len(families.get(name).params)))
    text = f"{name}({', '.join(f'{p:g}' for p in params)})"
    assert parse_prior(text) == Prior(name, params)
    assert str(parse_prior(text)) == text
