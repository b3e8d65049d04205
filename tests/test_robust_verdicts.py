"""Issue 10, items 11 and 13: honest verdicts.

* a 1-chain fit cannot have its convergence checked (R-hat compares chains): it is not OK,
  a finding says why, repair does not pretend to fix it, and the CLI exits 1;
* the repair journal names the diagnostics that actually fail, never "divergent transitions
  remain" for a fit with 0 divergences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import poolwise
from poolwise.cli import EXIT_NOT_OK, main
from poolwise.engine.sampler import SamplerConfig
from poolwise.inference.diagnostics import Diagnosis, Finding
from poolwise.inference.repair import RepairPolicy, _next_remedy, _State
from poolwise.model.spec import build_model


def data(n: int = 120) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame({
        "y": ((i // 8) % 2).astype(np.int64),
        "x": np.round(np.sin(i), 3),
        "g": (i % 8 + 1).astype(np.int64),
    })


@pytest.mark.filterwarnings("ignore::poolwise.errors.DataWarning")
def test_one_chain_is_not_ok() -> None:
    with pytest.warns(poolwise.ConvergenceWarning, match="needs at least 2"):
        fit = poolwise.fit("y ~ x + (1 | g)", data(), chains=1, draws=200, tune=200, seed=5,
                           parameterization="noncentered", log_likelihood=False,
                           prior_check=False)
    assert not fit.ok
    f = fit.diagnosis.finding("rhat_single_chain")
    assert f is not None and f.severity == "error"
    assert "R-hat cannot be computed" in f.message and "at least 2" in f.message
    # no remedy can make R-hat computable: one attempt, and the journal says why
    assert len(fit.repair_log) == 1
    assert "R-hat needs at least 2 chains" in fit.repair_log.stopped


def test_cli_one_chain_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "d.csv"
    data().to_csv(p, index=False)
    code = main(["fit", str(p), "-f", "y ~ x + (1 | g)", "--chains", "1", "--draws", "200",
                 "--tune", "200", "--seed", "5", "--parameterization", "noncentered"])
    out, err = capsys.readouterr()
    assert code == EXIT_NOT_OK
    assert "error: R-hat cannot be computed" in out
    (status,) = [ln for ln in out.splitlines() if ln.startswith("status:")]
    assert status.startswith("status: NOT OK")


def _diagnosis(codes: list[str], divergences: int) -> Diagnosis:
    return Diagnosis(
        chains=4, draws=100, divergences=divergences,
        divergences_per_chain=(divergences, 0, 0, 0), max_rhat=1.08, min_ess_bulk=50.0,
        min_ess_tail=60.0, bfmi=(0.2, 0.5, 0.5, 0.5), treedepth_saturation=(),
        mean_accept=0.8, target_accept=0.8,
        findings=tuple(Finding(c, "error", f"{c} fails") for c in codes),
    )


@pytest.fixture(scope="module")
def spec():
    return build_model("y ~ x + (1 | g)", data(), parameterization="noncentered")


@pytest.mark.parametrize(
    ("codes", "divergences", "says", "never"),
    [
        (["bfmi", "rhat"], 0, ("E-BFMI is below 0.3", "R-hat is above 1.01"), "divergent"),
        (["rhat", "ess_bulk"], 0, ("R-hat is above 1.01", "effective sample size"), "divergen"),
        (["divergences"], 3, ("3 divergent transition(s) remain",), "E-BFMI"),
        (["nonfinite"], 0, ("stuck or non-finite",), "divergen"),
    ],
    ids=["bfmi+rhat", "rhat+ess", "divergences", "stuck"],
)
def test_journal_names_the_failing_diagnostics(
    spec, codes: list[str], divergences: int, says: tuple[str, ...], never: str
) -> None:
    diag = _diagnosis(codes, divergences)
    config = SamplerConfig(chains=4, tune=100, draws=100, seed=1)
    remedy = _next_remedy(diag, None, spec, config, RepairPolicy(), _State())  # type: ignore[arg-type]
    assert remedy is not None
    reason = remedy[3]
    for text in says:
        assert text in reason, reason
    assert never not in reason, reason


def test_journal_at_the_top_of_the_ladder_names_the_failing_diagnostics(spec) -> None:
    """With target_accept at its ceiling, more tuning is next; the reason still only names
    what fails."""
    diag = _diagnosis(["bfmi"], 0)
    config = SamplerConfig(chains=4, tune=100, draws=100, seed=1, target_accept=0.99)
    remedy = _next_remedy(diag, None, spec, config, RepairPolicy(), _State())  # type: ignore[arg-type]
    assert remedy is not None
    assert remedy[3].startswith("E-BFMI is below 0.3 at the highest target_accept")
    assert "divergen" not in remedy[3]
