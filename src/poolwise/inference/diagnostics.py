"""Diagnosis of a fit: is it trustworthy, and if not, where is the problem?

Checks (thresholds of Vehtari et al. 2021, CmdStan ``diagnose`` and ArviZ ``diagnose``; all
numbers from arviz-stats):

* divergent transitions after tuning, per chain, with their percentage (must be 0);
* rank-normalized split R-hat, bulk and folded (must be <= 1.01); constant draws make it
  undefined, which is reported as such and never as "not mixed"; with many group-level
  parameters (RELIABILITY H1) a few may exceed 1.01 by chance, so the check fails when any
  population-level parameter or more than 1% of the group-level ones exceed it;
* bulk and tail effective sample size (>= 100 per chain); non-finite draws make it NaN;
* E-BFMI per chain (>= 0.3);
* tree-depth saturation per chain (an efficiency warning, not a validity error);
* mean acceptance per chain against ``target_accept`` (a warning, as PyMC's).

Localisation (:func:`localise_funnels`): for every estimated group SD, are the divergent
transitions concentrated at its small values (the funnel of a centered term) or at its large
values (the inverted funnel of a non-centered, data-rich term)? With a ModelSpec (a Fit),
also: the intercept, coefficients and SDs whose posterior is dominated by their prior
(power-scaling sensitivity, ``arviz_stats.psense``, each prior on the scale where it applies),
grouping factors with fewer than 5 levels, and levels whose
outcomes are all 0 or all 1.

``Diagnosis``'s reprs are built by :mod:`poolwise.inference.display`, in this layer.

Why one module: the checks share the per-parameter numbers (R-hat, ESS), the Finding and
Diagnosis records and the thresholds; each check is its own function (check_*), composed by
diagnose().
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    from poolwise.inference.fitted import Fit
    from poolwise.model.spec import ModelSpec

__all__ = [
    "Diagnosis",
    "Finding",
    "Funnel",
    "diagnose",
    "with_sensitivity",
    "localise_funnels",
    "prior_sensitivity",
    "stack_draws",
    "RHAT_MAX",
    "ESS_PER_CHAIN",
    "BFMI_MIN",
    "ACCEPT_TOLERANCE",
    "PSENSE_THRESHOLD",
    "MIN_LEVELS",
]

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
BFMI_MIN = 0.3
TAIL_PROB = (0.05, 0.95)  # tail ESS at the 5% and 95% quantiles (Vehtari et al. 2021)
#: PyMC warns when the mean acceptance differs from target_accept by more than this
ACCEPT_TOLERANCE = 0.1
#: fraction of group-level parameters allowed above RHAT_MAX before the check fails (H1)
RHAT_GROUP_FRACTION = 0.01
#: power-scaling sensitivity threshold (Kallioinen et al. 2024; arviz-stats' default)
PSENSE_THRESHOLD = 0.05
#: lme4: "grouping factors with < 5 sampled levels may give unreliable estimates"
MIN_LEVELS = 5
#: funnel localisation: at least this many divergent draws, this p-value and this effect
FUNNEL_MIN_DIVERGENT = 4
FUNNEL_P = 0.01
FUNNEL_AUC = 0.15  # |P(log sd_div < log sd_other) - 0.5| must exceed this
#: the reported threshold: this share of the divergent draws lies beyond it
FUNNEL_SHARE = 0.75

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One diagnostic result: what (``code``), how bad, which parameters, and a plain-language
    message that says what was seen, what it means and what to do next."""

    code: str
    severity: Severity
    message: str
    parameters: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "parameters": list(self.parameters)}


@dataclass(frozen=True)
class Funnel:
    """Divergent transitions concentrated at small (``"small"``: the funnel of a centered
    term) or large (``"large"``: the inverted funnel) values of one group SD.

    ``threshold``: 75% of the divergent draws have ``parameter`` below it (``"small"``) or
    above it (``"large"``); ``share_all``: the fraction of *all* draws on that side.
    ``p_value``: two-sided Mann-Whitney test of log SD, divergent vs other draws (draws are
    autocorrelated, so it is read together with the effect size ``auc``, the probability that
    a divergent draw's SD is below another draw's).
    """

    term: str
    parameter: str
    direction: Literal["small", "large"]
    threshold: float
    share_all: float
    median_divergent: float
    median_all: float
    auc: float
    p_value: float
    n_divergent: int

    @property
    def sign(self) -> str:
        return "<" if self.direction == "small" else ">"

    def describe(self) -> str:
        """``"divergences concentrate where sd_district < 0.12"``."""
        return f"divergences concentrate where {self.parameter} {self.sign} {_g(self.threshold)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "term": self.term, "parameter": self.parameter, "direction": self.direction,
            "threshold": _num(self.threshold), "share_all": _num(self.share_all),
            "median_divergent": _num(self.median_divergent), "median_all": _num(self.median_all),
            "auc": _num(self.auc), "p_value": _num(self.p_value),
            "n_divergent": self.n_divergent, "description": self.describe(),
        }


@dataclass(frozen=True)
class Diagnosis:
    """Everything :func:`diagnose` found. ``ok`` is False whenever any finding is an error."""

    chains: int
    draws: int
    divergences: int
    divergences_per_chain: tuple[int, ...]
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    bfmi: tuple[float, ...]
    treedepth_saturation: tuple[float, ...]  # fraction of draws per chain at max depth
    mean_accept: float
    target_accept: float | None
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    accept_per_chain: tuple[float, ...] = ()
    funnels: tuple[Funnel, ...] = ()
    #: power-scaling sensitivity of the intercept, coefficients and SDs: name -> (prior, lik.)
    sensitivity: dict[str, tuple[float, float]] = field(default_factory=dict, compare=False)
    #: per-parameter numbers, aligned with ``parameters`` (components like ``a_g[3]``)
    parameters: tuple[str, ...] = field(default=(), repr=False)
    rhat: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    ess_bulk: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    ess_tail: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True only when nothing of severity 'error' was found."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def divergence_pct_per_chain(self) -> tuple[float, ...]:
        return tuple(100.0 * d / self.draws for d in self.divergences_per_chain)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    def has(self, code: str) -> bool:
        return any(f.code == code for f in self.findings)

    def finding(self, code: str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)

    @property
    def culprit(self) -> Funnel | None:
        """The funnel that best explains the divergences (strongest effect), if any."""
        if not self.funnels:
            return None
        return max(self.funnels, key=lambda f: abs(f.auc - 0.5))

    @property
    def min_ess(self) -> float:
        """min(bulk, tail) ESS; NaN when either is undefined."""
        if not (np.isfinite(self.min_ess_bulk) and np.isfinite(self.min_ess_tail)):
            return math.nan
        return min(self.min_ess_bulk, self.min_ess_tail)

    def ess_by_parameter(self, kind: Literal["bulk", "tail"] = "bulk") -> dict[str, float]:
        vals = self.ess_bulk if kind == "bulk" else self.ess_tail
        return {n: float(v) for n, v in zip(self.parameters, vals, strict=True)}

    def checks(self) -> tuple[tuple[str, str, str, str], ...]:
        """The headline checks as ``(check, state, value, needed)`` rows. ``state`` ("pass",
        "warn" or "fail") comes from this diagnosis' findings only (an error finding of the
        check fails it, a warning warns), so a table of badges never contradicts ``ok``:
        e.g. R-hat above 1.01 for under 1% of the group-level parameters is a warning."""
        from poolwise.textfmt import fmt_rhat, fmt_sig

        def state(*codes: str) -> str:
            sev = {f.severity for f in self.findings if f.code in codes}
            return "fail" if "error" in sev else "warn" if "warning" in sev else "pass"

        ess_min = ESS_PER_CHAIN * self.chains
        bfmi = min(self.bfmi) if self.bfmi else math.nan
        sat = max(self.treedepth_saturation) if self.treedepth_saturation else 0.0
        rhat = fmt_rhat(self.max_rhat, RHAT_MAX) or "undefined"
        rows = [
            ("divergent transitions", state("divergences"), str(self.divergences), "0"),
            ("largest R-hat", state("rhat", "rhat_undefined", "rhat_single_chain", "nonfinite"),
             rhat, f"<= {RHAT_MAX} (all population-level, {100 - 100 * RHAT_GROUP_FRACTION:g}% "
             "of group-level parameters)"),
            ("smallest bulk ESS", state("ess_bulk", "nonfinite"),
             fmt_sig(self.min_ess_bulk, None) or "undefined", f">= {ess_min}"),
            ("smallest tail ESS", state("ess_tail", "nonfinite"),
             fmt_sig(self.min_ess_tail, None) or "undefined", f">= {ess_min}"),
            ("smallest E-BFMI", state("bfmi"), fmt_sig(bfmi, 2) or "not recorded",
             f">= {BFMI_MIN}"),
            ("draws at max tree depth", state("treedepth"), f"{100 * sat:.1f}%", "0%"),
        ]
        if self.target_accept is not None and self.accept_per_chain:
            rows.append(("mean acceptance", state("acceptance"), fmt_sig(self.mean_accept, 2),
                         f"target_accept {self.target_accept:g} +/- {ACCEPT_TOLERANCE:g}"))
        return tuple(rows)

    def __repr__(self) -> str:
        from poolwise.inference.display import diagnosis_text

        return diagnosis_text(self)

    def _repr_html_(self) -> str:
        from poolwise.inference.display import diagnosis_html

        return diagnosis_html(self)

    def to_dict(self) -> dict:
        return {
            "divergences": self.divergences,
            "divergences_per_chain": list(self.divergences_per_chain),
            "divergence_pct_per_chain": [_num(p) for p in self.divergence_pct_per_chain],
            "max_rhat": _num(self.max_rhat),
            "min_ess_bulk": _num(self.min_ess_bulk),
            "min_ess_tail": _num(self.min_ess_tail),
            "bfmi": [_num(b) for b in self.bfmi],
            "treedepth_saturation": [_num(s) for s in self.treedepth_saturation],
            "mean_accept": _num(self.mean_accept),
            "accept_per_chain": [_num(a) for a in self.accept_per_chain],
            "target_accept": self.target_accept,
            "funnels": [f.to_dict() for f in self.funnels],
            "prior_sensitivity": {
                k: {"prior": _num(p), "likelihood": _num(lk)}
                for k, (p, lk) in self.sensitivity.items()
            },
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
        }


def _num(v: float | None) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def _g(v: float) -> str:
    """Two significant digits: 0.12, 2.3, 15."""
    return f"{float(v):.2g}" if abs(v) < 100 else f"{float(v):.0f}"


def _names(items: list[str], k: int = 5) -> str:
    more = f" and {len(items) - k} more" if len(items) > k else ""
    return ", ".join(items[:k]) + more


# ---------------------------------------------------------------------------------------------
# draws
# ---------------------------------------------------------------------------------------------


def _named_blocks(post: xr.Dataset):
    """:func:`poolwise.inference.convergence.component_blocks` with the components' names (like
    ``a_district[3]``) and whether they are group-level (a dimension besides chain and draw):
    yields ``(names, group_level, block)``."""
    from poolwise.inference.convergence import component_blocks

    for name, v, extra, start, blk in component_blocks(post):
        if start == 0:
            if not extra:
                labels: Any = [name]
            elif len(extra) == 1:
                labels = [f"{name}[{lab}]" for lab in v[extra[0]].values]
            else:
                labels = [f"{name}[{i}]" for i in range(v.size // (v.sizes["chain"]
                                                                  * v.sizes["draw"]))]
        yield labels[start:start + blk.shape[0]], bool(extra), blk


def stack_draws(post: xr.Dataset) -> tuple[list[str], np.ndarray, np.ndarray]:
    """All scalar components of all variables as one (n, chain, draw) array, with names like
    ``a_district[3]``, and a flag per component: True for group-level components (variables
    with a dimension besides chain and draw)."""
    names: list[str] = []
    group_level: list[bool] = []
    blocks: list[np.ndarray] = []
    for labels, grp, blk in _named_blocks(post):
        names.extend(labels)
        group_level.extend([grp] * len(labels))
        blocks.append(blk)
    if not blocks:
        return [], np.zeros((0, 1, 1)), np.zeros(0, dtype=bool)
    return names, np.concatenate(blocks, axis=0), np.array(group_level, dtype=bool)


def _ordered(
    names: list[str], values: np.ndarray, mask: np.ndarray, descending: bool = False
) -> list[str]:
    idx = np.flatnonzero(mask)
    order = np.argsort(values[idx], kind="stable")
    if descending:
        order = order[::-1]
    return [names[i] for i in idx[order]]


def _as_tree(obj: Any) -> tuple[xr.DataTree, ModelSpec | None, float | None]:
    if isinstance(obj, xr.DataTree):
        return obj, None, None
    if hasattr(obj, "idata") and hasattr(obj, "spec"):
        return obj.idata, obj.spec, obj.config.target_accept
    raise TypeError(f"diagnose() takes a Fit or an xarray.DataTree; got {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------
# diagnose
# ---------------------------------------------------------------------------------------------


def diagnose(
    fit: Fit | xr.DataTree,
    *,
    target_accept: float | None = None,
    spec: ModelSpec | None = None,
    sensitivity: bool | None = None,
) -> Diagnosis:
    """Run every check on a :class:`~poolwise.fit.Fit` or on a DataTree.

    Divergences, R-hat, bulk / tail ESS, E-BFMI, tree-depth saturation and acceptance rate;
    with a model, also the model-aware checks.

    Parameters
    ----------
    fit : Fit or xarray.DataTree
        A fit, or a DataTree with a ``posterior`` and (optionally) a ``sample_stats`` group.
    target_accept : float or None, default None
        The target acceptance rate the draws were made with (judges the acceptance check);
        None takes it from the Fit.
    spec : ModelSpec or None, default None
        The model (taken from a Fit when None); enables the model-aware checks: the few-levels
        and all-0/all-1 notes and the prior sensitivity.
    sensitivity : bool or None, default None
        Compute the power-scaling prior sensitivity of the intercept, every coefficient and
        every group SD (from the cells); None means True when a model is known.

    Returns
    -------
    Diagnosis
        The numbers of every check and the findings (errors, warnings, notes); ``ok`` is False
        whenever a finding is an error.
    """
    tree, fit_spec, fit_ta = _as_tree(fit)
    spec = spec if spec is not None else fit_spec
    target_accept = target_accept if target_accept is not None else fit_ta
    post = tree["posterior"].to_dataset()
    stats = tree["sample_stats"].to_dataset() if "sample_stats" in tree.children else xr.Dataset()
    chains, draws = post.sizes.get("chain", 1), post.sizes.get("draw", 0)

    div = divergent_draws(stats, chains, draws)
    conv = convergence_numbers(post)
    bfmi = bfmi_per_chain(stats)
    sat = treedepth_saturation(stats)
    acc_chain, acc = acceptance_per_chain(stats)
    funnels = localise_funnels(post, div, spec=spec)
    findings = [
        *check_divergences(div, chains, draws),
        *check_nonfinite(conv),
        *check_constant(conv),
        *check_one_chain(conv, chains),
        *check_rhat(conv),
        *check_ess(conv, chains, "bulk"),
        *check_ess(conv, chains, "tail"),
        *check_bfmi(bfmi),
        *check_treedepth(sat),
        *check_acceptance(acc_chain, target_accept),
        *check_funnels(funnels, int(div.sum()), spec),
    ]
    sens: dict[str, tuple[float, float]] = {}
    if spec is not None:
        findings.extend(check_structure(spec))
        if sensitivity is None:  # it needs only the cells, not the log_likelihood group
            sensitivity = True
        if sensitivity:
            sens = prior_sensitivity(tree, spec)
            findings.extend(check_sensitivity(sens, spec))

    return Diagnosis(
        chains=chains, draws=draws, divergences=int(div.sum()),
        divergences_per_chain=tuple(int(c) for c in div.sum(axis=1)),
        max_rhat=conv.max_rhat, min_ess_bulk=conv.min_ess("bulk"),
        min_ess_tail=conv.min_ess("tail"), bfmi=bfmi, treedepth_saturation=sat,
        mean_accept=acc, target_accept=target_accept, findings=tuple(findings),
        accept_per_chain=acc_chain, funnels=funnels, sensitivity=sens,
        parameters=tuple(conv.names), rhat=conv.rhat, ess_bulk=conv.ess_bulk,
        ess_tail=conv.ess_tail,
    )


# ---- the numbers the checks read ------------------------------------------------------------


def divergent_draws(stats: xr.Dataset, chains: int, draws: int) -> np.ndarray:
    """Which transitions after tuning diverged, shape (chain, draw)."""
    if "diverging" in stats:
        return stats["diverging"].transpose("chain", "draw").values.astype(bool)
    return np.zeros((chains, draws), dtype=bool)


@dataclass(frozen=True, eq=False)
class Convergence:
    """Per parameter (flattened, in :func:`stack_draws` order): R-hat, bulk and tail ESS
    (NaN where undefined: constant or non-finite draws; R-hat inf for chains stuck each at
    its own value), and which draws are finite, constant or stuck."""

    names: list[str]
    group_level: np.ndarray
    finite: np.ndarray
    constant: np.ndarray
    stuck: np.ndarray
    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray

    @property
    def max_rhat(self) -> float:
        defined = np.isfinite(self.rhat) | np.isinf(self.rhat)
        return float(np.max(self.rhat[defined])) if defined.any() else math.nan

    def min_ess(self, kind: Literal["bulk", "tail"]) -> float:
        """The smallest ESS; NaN when any parameter has non-finite draws or none is defined."""
        ess = self.ess_bulk if kind == "bulk" else self.ess_tail
        defined = np.isfinite(ess)
        if bool((~self.finite).any()) or not defined.any():
            return math.nan
        return float(np.min(ess[defined]))


def convergence_numbers(post: xr.Dataset) -> Convergence:
    """R-hat and ESS of every parameter of ``post`` (arviz-stats' algorithms, batched:
    :mod:`poolwise.inference.convergence`), with undefined numbers as NaN, never "large": arviz
    gives
    ESS = N for constant draws. Computed a block of components at a time (no stacked copy
    of all draws)."""
    names: list[str] = []
    group_level: list[bool] = []
    cols: list[list[np.ndarray]] = [[] for _ in range(6)]
    for labels, grp, blk in _named_blocks(post):
        names.extend(labels)
        group_level.extend([grp] * len(labels))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            numbers = _convergence_numbers(blk)
            # per chain extremes: NaN propagates (not finite), and from them whether a
            # parameter is constant, or every chain constant at different values (stuck)
            hi, lo = blk.max(axis=2), blk.min(axis=2)
        finite = np.isfinite(hi).all(axis=1) & np.isfinite(lo).all(axis=1)
        constant = finite & (hi.max(axis=1) == lo.min(axis=1))
        stuck = finite & ~constant & ((hi - lo).max(axis=1) == 0.0)
        for col, val in zip(cols, (*numbers, finite, constant, stuck), strict=True):
            col.append(val)
    if not names:
        z, f = np.zeros(0), np.zeros(0, dtype=bool)
        return Convergence([], np.zeros(0, dtype=bool), f, f, f, z, z, z)
    rhat, ess_b, ess_t, finite, constant, stuck = (np.concatenate(c) for c in cols)
    ess_b = np.where(constant | ~finite, np.nan, ess_b)
    ess_t = np.where(constant | ~finite, np.nan, ess_t)
    rhat = np.where(constant | ~finite, np.nan, rhat)
    rhat = np.where(stuck, np.inf, rhat)
    return Convergence(names, np.array(group_level, dtype=bool), finite, constant, stuck, rhat,
                       ess_b, ess_t)


def bfmi_per_chain(stats: xr.Dataset) -> tuple[float, ...]:
    """E-BFMI of each chain (arviz-stats); empty without the energy."""
    if "energy" not in stats:
        return ()
    return tuple(float(b) for b in _bfmi(stats["energy"].transpose("chain", "draw").values))


def treedepth_saturation(stats: xr.Dataset) -> tuple[float, ...]:
    """Share of each chain's transitions that hit the maximum tree depth."""
    if "reached_max_treedepth" not in stats:
        return ()
    return tuple(float(s) for s in stats["reached_max_treedepth"].transpose("chain", "draw")
                 .values.astype(float).mean(axis=1))


def acceptance_per_chain(stats: xr.Dataset) -> tuple[tuple[float, ...], float]:
    """Mean acceptance probability of each chain, and over all chains (NaN without it)."""
    if "acceptance_rate" not in stats:
        return (), math.nan
    a = stats["acceptance_rate"].transpose("chain", "draw").values.astype(float)
    return tuple(float(x) for x in np.nanmean(a, axis=1)), float(np.nanmean(a))


# ---- the checks: each returns its findings --------------------------------------------------


def check_divergences(div: np.ndarray, chains: int, draws: int) -> list[Finding]:
    """Divergent transitions after tuning (must be 0), per chain with their percentage of the
    posterior's ``chains`` x ``draws``."""
    per_chain = tuple(int(c) for c in div.sum(axis=1))
    n_div = int(div.sum())
    if not n_div:
        return []
    pct = 100.0 * n_div / (chains * draws)
    detail = ", ".join(
        f"chain {i}: {c} ({100.0 * c / draws:.1f}%)" for i, c in enumerate(per_chain)
    )
    return [Finding(
        "divergences", "error",
        f"{n_div} of {chains * draws} transitions after tuning ({pct:.1f}%) ended with a "
        f"divergence ({detail}). These divergent transitions indicate that HMC is not "
        "fully able to explore the posterior distribution, so the estimates may be "
        "biased. Reparameterize the group term (non-centered), or increase target_accept "
        "closer to 1; do not use these draws.",
    )]


def check_nonfinite(conv: Convergence) -> list[Finding]:
    """Parameters with NaN or infinite draws."""
    nonfinite = [n for n, ok_ in zip(conv.names, conv.finite, strict=True) if not ok_]
    if not nonfinite:
        return []
    return [Finding(
        "nonfinite", "error",
        f"{len(nonfinite)} parameter(s) have NaN or infinite draws ({_names(nonfinite)}): "
        "R-hat and ESS are undefined for them (reported as NaN) and the sampler or the "
        "model evaluation failed. Do not use these draws; check the data and the priors.",
        tuple(nonfinite),
    )]


def check_constant(conv: Convergence) -> list[Finding]:
    """Parameters whose every draw is the same: R-hat undefined (not "not mixed")."""
    const_names = [n for n, c in zip(conv.names, conv.constant, strict=True) if c]
    if not const_names:
        return []
    return [Finding(
        "rhat_undefined", "error",
        f"R-hat undefined (constant draws) for {_names(const_names)}: every draw of every "
        "chain has the same value, so mixing cannot be assessed at all (this is not a "
        "verdict of 'not mixed'). A sampled parameter that never moves means the sampler "
        "was stuck; check the model, the initial values and the step size.",
        tuple(const_names),
    )]


def check_one_chain(conv: Convergence, chains: int) -> list[Finding]:
    """One chain: R-hat cannot be computed, so the fit cannot pass."""
    if chains >= 2 or not conv.names:
        return []
    # a fit whose convergence cannot be checked is not a fit that passed: an error
    return [Finding(
        "rhat_single_chain", "error",
        f"R-hat cannot be computed: it compares chains and needs at least 2, but this fit "
        f"has {chains}. Convergence cannot be checked, so the fit is not OK whatever its "
        "other numbers say. Run 4 chains (chains=4, --chains 4).",
    )]


def check_rhat(conv: Convergence) -> list[Finding]:
    """R-hat above :data:`RHAT_MAX`: an error for any population-level parameter or more than
    :data:`RHAT_GROUP_FRACTION` of the group-level ones, a warning otherwise."""
    names, rhat, group_level = conv.names, conv.rhat, conv.group_level
    defined = np.isfinite(rhat) | np.isinf(rhat)
    max_rhat = conv.max_rhat
    high = defined & (rhat > RHAT_MAX)
    bad_rhat = _ordered(names, rhat, high, descending=True)
    if not bad_rhat:
        return []
    n_group = int(group_level.sum())
    n_high_group = int((high & group_level).sum())
    n_high_pop = int((high & ~group_level).sum())
    frac = n_high_group / n_group if n_group else 0.0
    fails = n_high_pop > 0 or frac > RHAT_GROUP_FRACTION
    stuck_names = [n for n, s in zip(names, conv.stuck, strict=True) if s]
    stuck_note = (
        f" Chains are stuck, each at its own constant value, for {_names(stuck_names)}."
        if stuck_names else ""
    )
    counts = (
        f"{n_high_pop} population-level and {n_high_group} of {n_group} group-level "
        f"parameters ({100 * frac:.1f}%)" if n_group else f"{n_high_pop} parameter(s)"
    )
    if fails:
        return [Finding(
            "rhat", "error",
            f"R-hat is above {RHAT_MAX} for {counts}; the largest is {_fmt_rhat(max_rhat)} "
            f"({_names(bad_rhat)}). The chains have not mixed: they disagree about the "
            f"posterior, so the estimates are not reliable.{stuck_note} Run longer chains "
            "(more tuning and draws) or reparameterize.",
            tuple(bad_rhat),
        )]
    return [Finding(
        "rhat", "warning",
        f"R-hat is above {RHAT_MAX} for {counts} (max {_fmt_rhat(max_rhat)}: "
        f"{_names(bad_rhat)}); with this many group-level parameters a few exceed "
        f"{RHAT_MAX} by chance, and all population-level parameters are below it. Check "
        "these groups; more draws will settle them.",
        tuple(bad_rhat),
    )]


def check_ess(conv: Convergence, chains: int, kind: Literal["bulk", "tail"]) -> list[Finding]:
    """Bulk or tail effective sample size below :data:`ESS_PER_CHAIN` per chain."""
    threshold = ESS_PER_CHAIN * chains
    ess = conv.ess_bulk if kind == "bulk" else conv.ess_tail
    defined = np.isfinite(ess)
    low = _ordered(conv.names, ess, defined & (ess < threshold))
    if not low:
        return []
    v = float(np.min(ess[defined]))
    if kind == "bulk":
        return [Finding(
            "ess_bulk", "error",
            f"Bulk effective sample size is below {ESS_PER_CHAIN} per chain (min {v:.0f} < "
            f"{threshold}) for {_names(low)}: posterior means and medians are unreliable. "
            "Run more draws, or reparameterize if the chains mix this slowly.",
            tuple(low),
        )]
    return [Finding(
        "ess_tail", "error",
        f"Tail effective sample size is below {ESS_PER_CHAIN} per chain (min {v:.0f} < "
        f"{threshold}) for {_names(low)}: posterior variances and tail quantiles (the "
        "5% and 95% quantiles, and so the intervals) are unreliable. Run more draws, or "
        "reparameterize.",
        tuple(low),
    )]


def check_bfmi(bfmi: tuple[float, ...]) -> list[Finding]:
    """E-BFMI below :data:`BFMI_MIN` in any chain."""
    low_bfmi = [i for i, b in enumerate(bfmi) if b < BFMI_MIN]
    if not low_bfmi:
        return []
    vals = ", ".join(f"chain {i}: {bfmi[i]:.2f}" for i in low_bfmi)
    return [Finding(
        "bfmi", "error",
        f"E-BFMI is below {BFMI_MIN} ({vals}), which suggests that HMC may have trouble "
        "exploring the tails of the target distribution (often the neck of a funnel); "
        "the draws may miss part of the posterior. Reparameterize the model.",
    )]


def check_treedepth(sat: tuple[float, ...]) -> list[Finding]:
    """Transitions at the maximum tree depth (an efficiency warning)."""
    sat_chains = [i for i, s in enumerate(sat) if s > 0]
    if not sat_chains:
        return []
    detail = ", ".join(f"chain {i}: {100 * sat[i]:.1f}%" for i in sat_chains)
    return [Finding(
        "treedepth", "warning",
        f"Transitions hit the maximum tree depth ({detail}). Trajectories that are cut "
        "short explore slowly: an efficiency problem, not a validity one. Standardize "
        "predictors, or increase max_treedepth.",
    )]


def check_acceptance(acc_chain: tuple[float, ...], target_accept: float | None) -> list[Finding]:
    """Mean acceptance of a chain off ``target_accept`` by more than :data:`ACCEPT_TOLERANCE`."""
    if target_accept is None or not acc_chain:
        return []
    off = [i for i, x in enumerate(acc_chain) if abs(x - target_accept) > ACCEPT_TOLERANCE]
    if not off:
        return []
    detail = ", ".join(f"chain {i}: {acc_chain[i]:.2f}" for i in off)
    return [Finding(
        "acceptance", "warning",
        f"The acceptance probability does not match the target: it is {detail}, but "
        f"should be close to target_accept {target_accept:g}. The step size did not "
        "adapt well; try to increase the number of tuning steps.",
    )]


def check_funnels(
    funnels: tuple[Funnel, ...], n_div: int, spec: ModelSpec | None
) -> list[Finding]:
    """Where the divergences are (:func:`localise_funnels`), strongest first, or why they
    could not be attributed to a group term."""
    if n_div and funnels:
        return [_funnel_finding(f, spec) for f in sorted(funnels, key=lambda f: -abs(f.auc - 0.5))]
    if n_div < 1:
        return []
    why = (
        f"only {n_div} divergent transition(s), too few to localise"
        if n_div < FUNNEL_MIN_DIVERGENT
        else "they are not concentrated at small or large values of any group SD"
    )
    return [Finding(
        "funnel_unlocalised", "info",
        f"The divergences could not be attributed to a group term: {why}. Raise "
        "target_accept; if they persist, look at the pair plot of the parameters.",
    )]


def check_structure(spec: ModelSpec) -> list[Finding]:
    """Grouping factors with few levels, levels whose outcomes are all 0 or all 1."""
    return _structure_findings(spec)


def check_sensitivity(sens: dict[str, tuple[float, float]], spec: ModelSpec) -> list[Finding]:
    """The intercept, coefficients and group SDs shaped by their prior (power-scaling
    sensitivity, :func:`prior_sensitivity`)."""
    return _sensitivity_findings(sens, spec)


def with_sensitivity(diagnosis: Diagnosis, tree: xr.DataTree, spec: ModelSpec) -> Diagnosis:
    """``diagnosis`` plus the prior-sensitivity check (which needs the log-likelihood), without
    recomputing the convergence numbers. A diagnosis that has it already is returned as is."""
    from dataclasses import replace

    done = diagnosis.has("prior_dominated") or diagnosis.has("prior_sensitive")
    if diagnosis.sensitivity or done:
        return diagnosis
    sens = prior_sensitivity(tree, spec)
    return replace(diagnosis, sensitivity=sens,
                   findings=diagnosis.findings + tuple(_sensitivity_findings(sens, spec)))


def _fmt_rhat(v: float) -> str:
    return "inf" if np.isinf(v) else f"{v:.3f}"


def _convergence_numbers(stacked: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # ArviZ's algorithms, batched over parameters (poolwise.inference.convergence: equal to
    # arviz-stats
    # to 1e-10, and 10k group levels take seconds instead of a minute)
    from poolwise.inference.convergence import diagnostics

    if stacked.size == 0:
        z = np.zeros(0)
        return z, z, z
    return diagnostics(stacked, TAIL_PROB)


def _bfmi(energy: np.ndarray) -> np.ndarray:
    from poolwise.inference.convergence import bfmi

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.atleast_1d(bfmi(energy))


# ---------------------------------------------------------------------------------------------
# localisation
# ---------------------------------------------------------------------------------------------


def _sd_terms(post: xr.Dataset, spec: ModelSpec | None) -> list[tuple[str, str]]:
    """(sd variable, group term name) for every estimated group SD in the posterior."""
    if spec is not None:
        from poolwise.model.naming import sd_name

        out: list[tuple[str, str]] = []
        for t in spec.terms:
            if t.estimated:
                out.extend((sd_name(t, c), t.name) for c in t.group.coef_names)
        return [(v, t) for v, t in out if v in post]
    from poolwise.model import naming

    out = []  # no spec: read the names
    for name, v in post.data_vars.items():
        s = str(name)
        if naming.kind(s) == "sd" and set(v.dims) <= {"chain", "draw"}:
            out.append((s, str(naming.parse(s).group)))
    return out


def localise_funnels(
    post: xr.Dataset, diverging: np.ndarray, *, spec: ModelSpec | None = None
) -> tuple[Funnel, ...]:
    """For each group SD, test whether divergent transitions concentrate at its small or
    large values.

    Rule: with at least 4 divergent draws, compare log SD of the divergent draws with the
    other draws by the Mann-Whitney U statistic. A funnel is reported when the two-sided
    p-value is below 0.01 **and** the effect is clear: ``auc`` (the probability that a
    divergent draw's SD is below a non-divergent one's) is above 0.65 (``"small"``) or below
    0.35 (``"large"``), and the median SD of the divergent draws is below (above) the median
    of all draws. The reported threshold is the 75% quantile of SD among the divergent draws
    (``"small"``; the 25% quantile for ``"large"``), and ``share_all`` says how much of the
    whole posterior lies on the same side, for contrast.
    """
    div = np.asarray(diverging, dtype=bool)
    n_div = int(div.sum())
    if n_div < FUNNEL_MIN_DIVERGENT or n_div == div.size:
        return ()
    from scipy.stats import mannwhitneyu  # here: scipy.stats takes 0.35 s to import
    out: list[Funnel] = []
    for var, term in _sd_terms(post, spec):
        s = post[var].transpose("chain", "draw").values.astype(float)
        if s.shape != div.shape or not np.isfinite(s).all() or (s <= 0).any():
            continue
        ls = np.log(s)
        a, b = ls[div], ls[~div]
        if np.ptp(ls) == 0.0:
            continue
        res = mannwhitneyu(a, b, alternative="two-sided")
        # U counts pairs with a > b; auc = P(a < b) (+ half ties)
        auc = 1.0 - float(res.statistic) / (a.size * b.size)
        p = float(res.pvalue)
        med_div, med_all = float(np.median(s[div])), float(np.median(s))
        if p >= FUNNEL_P or abs(auc - 0.5) <= FUNNEL_AUC:
            continue
        if auc > 0.5 and med_div < med_all:
            thr = float(np.quantile(s[div], FUNNEL_SHARE))
            share = float(np.mean(s <= thr))
            out.append(Funnel(term, var, "small", thr, share, med_div, med_all, auc, p, n_div))
        elif auc < 0.5 and med_div > med_all:
            thr = float(np.quantile(s[div], 1.0 - FUNNEL_SHARE))
            share = float(np.mean(s >= thr))
            out.append(Funnel(term, var, "large", thr, share, med_div, med_all, auc, p, n_div))
    return tuple(out)


def _funnel_finding(f: Funnel, spec: ModelSpec | None) -> Finding:
    term_txt = f"(... | {f.term})"
    par = None
    if spec is not None:
        t = next((t for t in spec.terms if t.name == f.term), None)
        if t is not None:
            term_txt = str(t.group.term) or term_txt
            par = t.parameterization
    par_txt = f" (now {par})" if par else ""
    seen = (
        f"{f.describe().capitalize()}: {100 * FUNNEL_SHARE:.0f}% of the {f.n_divergent} "
        f"divergent transitions, but only {100 * f.share_all:.0f}% of all draws, lie there "
        f"(median {f.parameter} "
        f"{_g(f.median_divergent)} in divergent draws vs {_g(f.median_all)} overall; "
        f"Mann-Whitney p = {f.p_value:.1g})."
    )
    if f.direction == "small":
        meaning = (
            f" This is the funnel of the centered group term {term_txt}{par_txt}: as "
            f"{f.parameter} shrinks the group effects are squeezed together, no single step "
            f"size fits both the neck and the mouth, and the sampler cannot enter the neck, so "
            f"small values of {f.parameter} are under-represented. Non-center this term "
            "(parameterization='noncentered' or 'auto'); do not tighten its prior to hide the "
            "neck."
        )
    else:
        meaning = (
            f" This is the inverted funnel of a non-centered term {term_txt}{par_txt} whose "
            f"levels are well informed by data: at large {f.parameter} the standardized effects "
            "are pinned by the data. Center the data-rich levels (parameterization='auto') or "
            "increase target_accept."
        )
    return Finding("funnel", "warning", seen + meaning, (f.parameter,))


# ---------------------------------------------------------------------------------------------
# model structure and prior sensitivity
# ---------------------------------------------------------------------------------------------


def _structure_findings(spec: ModelSpec) -> list[Finding]:
    out: list[Finding] = []
    for t in spec.terms:
        g = t.group
        if t.estimated and g.n_levels < MIN_LEVELS:
            out.append(Finding(
                "few_levels", "warning",
                f"Grouping factor '{g.name}' has only {g.n_levels} levels (< {MIN_LEVELS}): "
                f"its standard deviation is weakly identified and strongly influenced by the "
                "prior, and its posterior reaches near 0, where a centered term has its "
                "funnel. Read its SD as prior-shaped; compare prior and posterior.",
                tuple(_sd_name(t, c) for c in g.coef_names),
            ))
        if "Intercept" in g.coef_names:
            zero = [str(lab) for lab, s in zip(g.labels, g.level_successes, strict=True) if s == 0]
            one = [
                str(lab) for lab, s, n in
                zip(g.labels, g.level_successes, g.level_trials, strict=True) if s == n and n > 0
            ]
            if zero or one:
                parts = []
                if zero:
                    parts.append(f"{_names(zero, 8)} have all outcomes 0")
                if one:
                    parts.append(f"{_names(one, 8)} have all outcomes 1")
                out.append(Finding(
                    "extreme_levels", "info",
                    f"Levels of '{g.name}': {'; '.join(parts)}. Their maximum-likelihood "
                    "estimates are infinite; the Bayesian estimates shown are finite, set by "
                    "the prior (no pooling) or pulled toward the population mean (partial "
                    "pooling).",
                ))
    return out


def sd_prior_logpdf(prior: Any, x: np.ndarray) -> np.ndarray:
    """Log density of a group-SD prior (exponential, half-normal, half-Student-t) at x
    (:meth:`poolwise.model.families.FamilySpec.logpdf`)."""
    from poolwise.model import families

    return families.get(prior.family).logpdf(prior.params, x)


def _prior_scale_draws(
    post: xr.Dataset, spec: ModelSpec
) -> list[tuple[str, Any, np.ndarray]]:
    """Every parameter that has its own proper prior, with its draws *on the scale where the
    prior applies*: (reported name, prior, draws (chain, draw)).

    The posterior holds original-scale draws (:func:`poolwise.model.predictor.to_original_scale`);
    the priors of the fixed effects and of the slope SDs apply on the engine's standardized
    scale (:mod:`poolwise.data.design`): ``b_std = b * x_scale``, the intercept at the predictors'
    means ``Intercept_std = Intercept + sum_k b_k * x_center_k``, ``sd_std = sd * z_scale``.
    """
    from poolwise.model import families
    from poolwise.model.naming import fixed_name, sd_name

    def draws(name: str) -> np.ndarray:
        return np.asarray(post[name].transpose("chain", "draw").values, dtype=float)

    out: list[tuple[str, Any, np.ndarray]] = []
    d = spec.design
    K = len(d.fixed_names)
    center = d.x_center if d.x_center is not None else np.zeros(K)
    scale = d.x_scale if d.x_scale is not None else np.ones(K)
    for k, (coef, prior) in enumerate(zip(d.fixed_names, spec.fixed_priors, strict=True)):
        name = fixed_name(coef)
        if name not in post or not families.get(prior.family).proper:
            continue
        if coef == "Intercept":
            x = draws(name)
            for j, other in enumerate(d.fixed_names):
                if other != "Intercept" and center[j] != 0.0 and fixed_name(other) in post:
                    x = x + draws(fixed_name(other)) * center[j]
        else:
            x = draws(name) * scale[k]
        out.append((name, prior, x))
    for t in spec.terms:
        if not t.estimated:
            continue
        zs = t.group.z_scale if t.group.z_scale is not None else np.ones(t.group.n_coefs)
        for c, (coef, prior) in enumerate(zip(t.group.coef_names, t.sd_priors, strict=True)):
            name = sd_name(t, coef)
            if name in post and families.get(prior.family).proper:
                out.append((name, prior, draws(name) * zs[c]))
    return out


def prior_sensitivity(tree: xr.DataTree, spec: ModelSpec) -> dict[str, tuple[float, float]]:
    """Power-scaling sensitivity (Kallioinen et al. 2024, ``arviz_stats.psense``) of the fixed
    intercept, every fixed coefficient and every estimated group SD: (prior, likelihood).

    Each parameter's prior is power-scaled on its own: the ``log_prior`` group holds that prior's
    log density (:meth:`poolwise.model.families.FamilySpec.logpdf`) evaluated at the draws on the
    scale where the prior applies (standardized predictors: the standardized scale, see
    :func:`_prior_scale_draws`); the sensitivity is measured on the reported (original-scale)
    draws. The likelihood is the total log-likelihood of the data (computed from the cells).
    Flat (improper) priors are skipped."""
    import arviz_stats as azs

    post = tree["posterior"].to_dataset()
    items = _prior_scale_draws(post, spec)
    if not items:
        return {}
    # the total over all rows, from the cells (the log_likelihood group is per row pattern)
    from poolwise.model.likelihood import total_log_likelihood

    ll = total_log_likelihood(spec, post)
    coords = {"chain": post["chain"].values, "draw": post["draw"].values}
    dims = ("chain", "draw")
    out: dict[str, tuple[float, float]] = {}
    for name, prior, x_prior in items:
        x = post[name].transpose("chain", "draw").values
        try:
            lp = sd_prior_logpdf(prior, x_prior)
            sub = xr.DataTree.from_dict({
                "posterior": xr.Dataset({name: (dims, x)}, coords=coords),
                "log_prior": xr.Dataset({name: (dims, lp)}, coords=coords),
                "log_likelihood": xr.Dataset({"y": (dims, np.asarray(ll))}, coords=coords),
            })
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ps = float(azs.psense(sub, var_names=[name], group="prior")[name])
                ls = float(azs.psense(sub, var_names=[name], group="likelihood")[name])
        except Exception:  # noqa: BLE001 - a diagnostic must not break the fit
            continue
        out[name] = (ps, ls)
    return out


def _wider(prior: Any) -> Any:
    """The same prior ten times wider (scale x 10, rate / 10); None when it has no scale."""
    from dataclasses import replace

    from poolwise.model import families

    fam = families.get(prior.family)
    params = list(prior.params)
    if "sigma" in fam.params:
        params[fam.params.index("sigma")] *= 10.0
    elif "rate" in fam.params:
        params[fam.params.index("rate")] /= 10.0
    else:
        return None
    return replace(prior, params=tuple(params))


def _sensitivity_findings(sens: dict[str, tuple[float, float]], spec: ModelSpec) -> list[Finding]:
    from poolwise.model.describe import priors_by_parameter

    out: list[Finding] = []
    prior_of = {name: prior for name, prior, _ in _prior_items(spec)}
    text_of = priors_by_parameter(spec)
    for name, (ps, ls) in sens.items():
        if not (np.isfinite(ps) and ps >= PSENSE_THRESHOLD):
            continue
        prior = prior_of.get(name)
        text = text_of.get(name, str(prior))
        wide = _wider(prior) if prior is not None else None
        widen = (f" A wider prior such as {wide} would move it." if wide is not None else "")
        what = "coefficient" if not name.startswith("sd_") else "group SD"
        if np.isfinite(ls) and ls < PSENSE_THRESHOLD:
            out.append(Finding(
                "prior_dominated", "warning",
                f"The posterior of {name} is dominated by its prior {text}: power-scaling "
                f"prior sensitivity {ps:.3f} >= {PSENSE_THRESHOLD} with likelihood sensitivity "
                f"{ls:.3f} < {PSENSE_THRESHOLD} (strong prior / weak likelihood).{widen} Its "
                f"estimate says more about the prior than about the data; report this {what} "
                "as such, and a different prior would give a different answer.",
                (name,),
            ))
        else:
            out.append(Finding(
                "prior_sensitive", "warning",
                f"The posterior of {name} is sensitive to its prior {text}: power-scaling "
                f"prior sensitivity {ps:.3f} >= {PSENSE_THRESHOLD} (likelihood sensitivity "
                f"{ls:.3f}).{widen} The prior is informative here or conflicts with the data; "
                "check how the estimate changes under another reasonable prior.",
                (name,),
            ))
    return out


def _prior_items(spec: ModelSpec) -> list[tuple[str, Any, None]]:
    """(name, prior, None) for the fixed effects and estimated SDs (no draws needed)."""
    from poolwise.model.naming import fixed_name

    out: list[tuple[str, Any, None]] = [
        (fixed_name(c), p)
        for c, p in zip(spec.design.fixed_names, spec.fixed_priors, strict=True)
    ]
    out += [
        (_sd_name(t, c), p)
        for t in spec.terms if t.estimated
        for c, p in zip(t.group.coef_names, t.sd_priors, strict=True)
    ]
    return [(n, p, None) for n, p in out]


def _sd_name(term: Any, coef: str) -> str:
    from poolwise.model.naming import sd_name

    return sd_name(term, coef)
