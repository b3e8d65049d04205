"""Row weights (``weights="COL"``, ``--weights COL``): what a weight means, and what follows.

Two kinds (``weights_kind``):

* **frequency** (the default when every weight is a whole number): a row of weight ``w``
  stands for ``w`` identical rows, as the cells of a cross-tabulation do. It is exact: the
  weights become the rows' counts (the same counts a data engine gives to row patterns,
  :attr:`poolwise.data.design.Design.row_count`), so every quantity (the sampler's density,
  the log-likelihoods, row-level LOO over the rows represented, leave-one-group-out, the
  predictive checks, the summaries' n and successes) equals that of the data with each row
  repeated ``w`` times;
* **survey** (sampling weights, not whole numbers in general): a pseudo-likelihood, each
  row's log-likelihood times its weight, the weights scaled to sum to the number of rows.
  The draws are those of the weighted pseudo-posterior: its intervals are model-based, not
  design-based (no strata, clusters or weight variability enter them), which every survey fit
  says (:meth:`Weighting.caveat`). Row-level LOO, leave-one-group-out and K-fold are refused
  (:func:`refuse_cross_validation`): the weighted rows are not data the model predicts, so an
  elpd computed from them would estimate nothing a user can rely on.

Weights are validated with the other bad-input rules (:mod:`poolwise.data.validate` for frames,
the SQL of :mod:`poolwise.data.ingest` for files and Spark): missing, not numeric, infinite,
negative, zero (refused: a zero weight would drop its row silently), not whole for frequency
weights, and a weights column that the model also uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from poolwise.errors import SpecError

__all__ = ["KINDS", "Weighting", "refuse_cross_validation", "survey_reason"]

KINDS: tuple[str, ...] = ("frequency", "survey")
WeightsKind = Literal["frequency", "survey"]


@dataclass(frozen=True)
class Weighting:
    """The weights of a design: the column, the kind, the data rows that carry a weight, the
    sum of their weights as given, and (survey) Kish's effective sample size
    ``(sum w)^2 / sum w^2``."""

    column: str
    kind: str
    data_rows: int
    total: float
    ess: float | None = None

    @property
    def survey(self) -> bool:
        return self.kind == "survey"

    @property
    def scale(self) -> float:
        """What each weight as given is multiplied by in the likelihood: survey weights are
        scaled to sum to the rows; frequency weights are counts (1)."""
        return self.data_rows / self.total if self.survey else 1.0

    @property
    def represented(self) -> float:
        """Rows the likelihood counts: the sum of frequency weights; for survey weights the
        data rows (the weights are scaled to sum to them)."""
        return float(self.data_rows) if self.survey else float(self.total)

    def describe(self) -> str:
        """One line: the column, the kind and what the weights amount to."""
        if not self.survey:
            return (f"weights: column '{self.column}', frequency weights: "
                    f"{self.data_rows:,} data rows stand for {self.total:,.0f} rows")
        return (f"weights: column '{self.column}', survey weights (a pseudo-likelihood; scaled "
                f"to sum to the {self.data_rows:,} rows; Kish's effective sample size "
                f"{self.ess:,.1f})")

    def caveat(self) -> str:
        """What a survey-weighted fit is and is not (a warning kept with the fit)."""
        return (
            f"survey weights (column '{self.column}'): each row's log-likelihood is multiplied "
            f"by its weight, the weights scaled to sum to the {self.data_rows:,} rows (a "
            "pseudo-likelihood). The intervals are model-based, not design-based: they do not "
            "account for the survey's design (strata, clusters) or the variability of the "
            f"weights (Kish's effective sample size is {self.ess:,.1f} of {self.data_rows:,} "
            "rows), so they can be too narrow for population inference; row-level LOO, "
            "leave-one-group-out and K-fold are not computed for this fit"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"column": self.column, "kind": self.kind,
                               "data_rows": self.data_rows, "total": self.total,
                               "represented": self.represented}
        if self.survey:
            out["effective_sample_size"] = self.ess
            out["caveat"] = self.caveat()
        return out


def survey_reason(what: str) -> str:
    """Why ``what`` (row-level LOO, leave-one-group-out, K-fold) is not computed under survey
    weights."""
    return (
        f"{what} is not computed under survey weights: the fit maximises a weighted "
        "pseudo-likelihood, whose posterior is not the model's posterior for these rows, and "
        "the weighted rows are not observations the model predicts; an elpd computed from them "
        "(weighted or not) would be neither the model's predictive accuracy nor a "
        "design-based estimate of it. Compare models fitted without weights, or with "
        "frequency weights (whole-number counts)"
    )


def refuse_cross_validation(design: Any, what: str) -> None:
    """SpecError with :func:`survey_reason` when ``design`` carries survey weights."""
    w = getattr(design, "weighting", None)
    if w is not None and w.survey:
        raise SpecError(survey_reason(what))
