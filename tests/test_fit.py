"""The fit pipeline end to end: seed numbers, centered == non-centered, the result contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise.inference.summary import interval_of, summary_text
from poolwise.output.results import result_dict

FORMULA = "use.contraception ~ 1 + (1 | district)"


@pytest.fixture(scope="module")
def seed_fit(bangladesh):
    return poolwise.fit(FORMULA, bangladesh, seed=19)


def test_seed_varying_intercepts(seed_fit):
    """The seed's full-data varying-intercepts model. Reference: our long run, 16 chains x
    10 000 draws (non-centered; bench/reference_runs.py): a_bar -0.5384, sigma 0.5168."""
    fit = seed_fit
    assert fit.ok and fit.diagnosis.divergences == 0 and fit.diagnosis.max_rhat <= 1.01
    s = fit.summary()
    for name in ("Intercept", "sd_district"):
        ref = REF_PARTIAL[name]
        z = abs(s.loc[name, "mean"] - ref) / np.hypot(s.loc[name, "mcse_mean"], REF_MCSE)
        assert z < 4, (name, s.loc[name, "mean"], ref)
    # groups carry n and raw proportions; district 54 does not exist
    assert s.loc["a_district[3]", "n"] == 2 and s.loc["a_district[3]", "raw_proportion"] == 1.0
    assert "a_district[54]" not in s.index


def test_fixed_effects_district_1(bangladesh):
    fit = poolwise.fit(FORMULA, bangladesh, pooling="none", seed=19)
    s = fit.summary()
    assert "Intercept" not in s.index and "sd_district" not in s.index
    z = abs(s.loc["a_district[1]", "mean"] - REF_NONE_A1) / np.hypot(
        s.loc["a_district[1]", "mcse_mean"], REF_MCSE
    )
    assert z < 4


def test_complete_pooling(bangladesh):
    fit = poolwise.fit(FORMULA, bangladesh, pooling="complete", seed=1, draws=500, tune=500)
    s = fit.summary()
    assert list(s.index) == ["Intercept"]
    # one intercept: its posterior sits at the logit of the overall proportion
    p = bangladesh["use.contraception"].mean()
    assert abs(s.loc["Intercept", "mean"] - np.log(p / (1 - p))) < 4 * s.loc["Intercept", "sd"] / 10


def test_centered_equals_noncentered_on_data_rich_case():
    """50 groups x 200 observations: both parameterizations agree (z < 4). With this much data
    per group the non-centered form mixes slowly (the inverted funnel: ESS ~200 of 4000 draws
    for the intercept), so it gets 4x the draws to pass its own diagnostics."""
    rng = np.random.default_rng(2024)
    J, n = 50, 200
    a = rng.normal(-0.3, 0.7, size=J)
    df = pd.DataFrame({"g": np.repeat(np.arange(J), n)})
    df["y"] = rng.binomial(1, 1 / (1 + np.exp(-a[df["g"]])))
    fits = [poolwise.fit("y ~ 1 + (1 | g)", df, parameterization=p, seed=5, draws=draws)
            for p, draws in (("centered", 1000), ("noncentered", 4000))]
    s1, s2 = (f.summary() for f in fits)
    assert all(f.ok for f in fits)
    z = (s1["mean"] - s2["mean"]).abs() / np.sqrt(s1["mcse_mean"] ** 2 + s2["mcse_mean"] ** 2)
    assert z.max() < 4, z.sort_values().tail(3)


def test_same_seed_same_draws(bangladesh, seed_fit):
    again = poolwise.fit(FORMULA, bangladesh, seed=19)
    np.testing.assert_array_equal(again.posterior["a_district"].values,
                                  seed_fit.posterior["a_district"].values)


def test_datatree_groups_and_provenance(seed_fit):
    tree = seed_fit.idata
    assert set(tree.children) >= {"posterior", "sample_stats", "observed_data", "log_likelihood"}
    # per row pattern (district x outcome), with counts; fit.row_level() has one per row
    n_pat = tree["observed_data"].sizes["pattern"]
    assert tree["log_likelihood"]["y"].shape == (4, 1000, n_pat)
    assert n_pat < 2 * 60 and int(tree["observed_data"]["count"].sum()) == 1934
    assert tree["sample_stats"]["diverging"].dtype == bool
    for key in ("poolwise_seed", "poolwise_versions", "poolwise_settings", "poolwise_data_sha256"):
        assert key in tree.attrs
    assert json.loads(tree.attrs["poolwise_settings"])["seed"] == 19
    # per-row log-likelihood sums to the cell-level Bernoulli log-likelihood
    post = seed_fit.posterior
    a = post["a_district"].values[0, 0]
    labels = post["district"].values.tolist()
    d = seed_fit.spec.design
    eta = a[[labels.index(v) for v in d.groups[0].labels[d.groups[0].codes[d.row_cell]]]]
    p = 1 / (1 + np.exp(-eta))
    expected = np.sum(d.row_y * np.log(p) + (1 - d.row_y) * np.log1p(-p))
    ll = seed_fit.row_level()["log_likelihood"]["y"]
    assert ll.shape == (4, 1000, 1934)
    assert ll.values[0, 0].sum() == pytest.approx(expected, abs=1e-8)
    counts = tree["observed_data"]["count"].values
    assert (tree["log_likelihood"]["y"].values[0, 0] * counts).sum() == pytest.approx(
        expected, abs=1e-8)


def test_result_json_contract(seed_fit):
    r = json.loads(json.dumps(result_dict(seed_fit)))
    assert set(r) >= {"formula", "pooling", "parameterization", "settings", "diagnostics",
                      "parameters", "timings"}
    assert set(r["diagnostics"]) >= {"divergences", "max_rhat", "min_ess_bulk", "min_ess_tail",
                                     "ok"}
    # the interval under the summary's names: result.json read alone says what it holds
    assert list(r["parameters"]["Intercept"]) == ["mean", "sd", "hdi_89_lower", "hdi_89_upper",
                                                  "ess_bulk", "r_hat"]
    s = seed_fit.summary()
    for name in ("Intercept", "a_district[3]"):
        for col in ("hdi_89_lower", "hdi_89_upper"):
            assert r["parameters"][name][col] == s.loc[name, col]
    assert r["interval"] == {"prob": 0.89, "kind": "hdi"}
    eti = result_dict(seed_fit, prob=0.95, kind="eti")
    assert list(eti["parameters"]["sd_district"]) == ["mean", "sd", "eti_95_lower",
                                                      "eti_95_upper", "ess_bulk", "r_hat"]
    assert "sd_district" in r["parameters"] and "a_district[61]" in r["parameters"]
    assert set(r["timings"]) >= {"total_s", "sampling_s"}
    assert r["parameterization"].keys() == {"district"}


def test_summary_columns_name_their_interval(seed_fit):
    """A summary.csv opened alone says what its interval is: the kind and the probability
    are in the column names (as ArviZ's ``hdi_3%`` or brms' ``l-95% CI``), for any
    probability and kind, on either scale; ``attrs`` say the same, and ``interval_of``
    reads the names back."""
    s = seed_fit.summary()
    assert list(s.columns) == ["mean", "sd", "hdi_89_lower", "hdi_89_upper", "mcse_mean",
                               "ess_bulk", "ess_tail", "r_hat", "n", "successes",
                               "raw_proportion"]
    assert (s.attrs["prob"], s.attrs["kind"]) == (0.89, "hdi")
    assert interval_of(s) == ("hdi_89_lower", "hdi_89_upper")
    odd = seed_fit.summary(prob=0.895)
    assert interval_of(odd) == ("hdi_89.5_lower", "hdi_89.5_upper")
    assert list(odd.columns[2:4]) == ["hdi_89.5_lower", "hdi_89.5_upper"]
    p = seed_fit.summary(prob=0.5, kind="eti", scale="probability")
    assert list(p.columns[2:4]) == ["eti_50_lower", "eti_50_upper"]
    # the equal-tailed interval is the draws' 25% and 75% quantiles
    x = 1 / (1 + np.exp(-seed_fit.posterior["Intercept"].values.ravel()))
    np.testing.assert_allclose(p.loc["Intercept", ["eti_50_lower", "eti_50_upper"]]
                               .to_numpy(dtype=float), np.quantile(x, [0.25, 0.75]),
                               rtol=1e-12)
    # the printed table heads its columns with the same names
    header = summary_text(s, 0.89, "hdi").splitlines()[0].split()
    assert header == ["mean", "sd", "hdi_89_lower", "hdi_89_upper", "mcse_mean", "ess_bulk",
                      "ess_tail", "r_hat", "n", "raw_proportion"]


def test_probability_scale_summary(seed_fit):
    s = seed_fit.summary(scale="probability")
    assert (s["mean"].between(0, 1)).all()
    assert s.loc["a_district[3]", "mean"] < 1.0


# Long reference runs (bench/reference_runs.py): 16 chains x 10 000 draws, non-centered,
# seed 4711; each mean has MCSE 0.0004.
REF_PARTIAL = {"Intercept": -0.5384, "sd_district": 0.5168}
REF_NONE_A1 = -1.0542
REF_MCSE = 0.0004
