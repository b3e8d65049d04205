"""The automatic target_accept rule against its calibration suite (issue 13, item 12;
bench/target_accept_suite.py, bench/README.md). Stored numbers, no sampling."""

from __future__ import annotations

import warnings

import pytest

from poolwise.engine.sampler import SamplerConfig
from poolwise.inference.repair import (
    DEFAULT_TARGET_ACCEPT,
    choose_parameterization,
    recommend_target_accept,
)
from poolwise.model.spec import build_model

#: worst funnel severity of each seed's pilot (10 seeds) and the calibrated target_accept: the
#: lowest of 0.8, 0.9, 0.95, 0.99 with 0 divergent transitions in >= 95% of the seeds
#: (bench/results/target_accept_suite.json)
SUITE = {
    "intercepts (60 districts)":
        ((1.39, 1.41, 1.40, 1.40, 1.40, 1.40, 1.40, 1.40, 1.44, 1.41), 0.8),
    "three districts (funnel)":
        ((8.73, 9.90, 12.71, 9.71, 9.84, 12.26, 9.70, 8.66, 10.62, 9.84), 0.99),
    "six districts":
        ((4.66, 4.94, 4.47, 4.99, 4.63, 4.86, 5.20, 5.41, 4.45, 5.64), 0.95),
    "twelve districts":
        ((4.91, 4.69, 5.33, 4.62, 4.59, 5.44, 4.66, 5.14, 5.24, 4.91), 0.9),
    "correlated slopes":
        ((2.23, 2.23, 2.08, 2.24, 2.31, 2.18, 2.16, 2.15, 2.34, 2.19), 0.8),
    "crossed district x children":
        ((1.60, 1.68, 1.58, 1.64, 1.62, 1.68, 1.57, 1.63, 1.61, 1.60), 0.8),
    "small n, 120 groups x 4 rows":
        ((1.39, 1.37, 1.38, 1.38, 1.38, 1.37, 1.37, 1.32, 1.36, 1.39), 0.8),
}
#: twelve districts has the severities of six districts but needs only 0.9: the severity
#: cannot tell them apart, and the rule takes the safe side (0.95)
CONSERVATIVE = {"twelve districts": 0.95}


def _rule(severity: float) -> float:
    ta = recommend_target_accept(severity)
    return DEFAULT_TARGET_ACCEPT if ta is None else ta


@pytest.mark.parametrize("model", list(SUITE))
def test_rule_maps_each_seed_to_the_calibrated_target_accept(model):
    severities, calibrated = SUITE[model]
    want = CONSERVATIVE.get(model, calibrated)
    assert [_rule(s) for s in severities] == [want] * len(severities)
    assert all(_rule(s) >= calibrated for s in severities)  # never below what was needed


def test_the_old_prior_range_severity_of_correlated_slopes_is_not_used(bangladesh):
    """Correlated terms get their SD range from the pilot (the prior's range gave a severity
    of 15.4 and target_accept 0.99 for the correlated-slopes model, where 0.8 suffices)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = build_model("use.contraception ~ age.centered + urban + (urban | district)",
                           bangladesh)
        _, auto = choose_parameterization(spec, SamplerConfig(seed=1000))
    assert [t.source for t in auto.terms] == ["pilot"]
    assert auto.terms[0].severity == pytest.approx(2.23, abs=0.01)  # the suite's seed 1000
    assert auto.target_accept is None
