"""The marginal log posterior density of ``method="approx"``'s low-dimensional part, computed
directly from the data frame: the ground truth of its compiled quadrature.

For ``y | trials(n) ~ 1 + x + (1 | g) + offset(log(exposure))`` with unstandardized predictors
(theta is on the data's scale) and poolwise's default priors (intercept normal(0, 1.5), slope
normal(0, 1), group SD exponential(1), plus log sd, the Jacobian of theta's log sd): each
group's integral of its rows' binomial log-likelihood (each row's times its weight, when
given: the survey pseudo-likelihood) against the N(0, sd^2) prior of its intercept, on a dense
grid, row by row. The binomial coefficients are left out, as the model layer leaves them out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def direct_log_density(df: pd.DataFrame, link: str, theta: np.ndarray,
                       weights: np.ndarray | None = None) -> float:
    """log p(theta | y) up to its constant, for ``theta = (b0, b1, log sd)``; ``weights``:
    one per row of ``df`` (already scaled), or None."""
    from scipy import stats
    from scipy.special import logsumexp

    from poolwise.model import links

    b0, b1, sd = theta[0], theta[1], np.exp(theta[2])
    u = np.linspace(-12, 12, 24_001)
    total = (stats.norm(0, 1.5).logpdf(b0) + stats.norm(0, 1).logpdf(b1)
             + stats.expon().logpdf(sd) + np.log(sd))
    for _, rows in df.groupby("g"):
        eta = b0 + b1 * rows["x"].to_numpy() + np.log(rows["exposure"].to_numpy())
        p = np.clip(links.get(link).inverse(eta[:, None] + u[None, :]), 1e-300, 1 - 1e-16)
        y, n = rows["y"].to_numpy()[:, None], rows["n"].to_numpy()[:, None]
        w = 1.0 if weights is None else weights[rows.index.to_numpy()][:, None]
        ll = (w * (y * np.log(p) + (n - y) * np.log1p(-p))).sum(axis=0)
        total += logsumexp(ll + stats.norm(0, sd).logpdf(u)) + np.log(u[1] - u[0])
    return float(total)
