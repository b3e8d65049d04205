"""poolwise: Bayesian multilevel binomial regression.

Fit grouped yes/no or count-out-of-n data with no, partial or complete pooling, in one call::

    import poolwise
    fit = poolwise.fit("use.contraception ~ 1 + (1 | district)", poolwise.load_example())
    fit.summary()
"""

# arviz-base first, while the interpreter's stack and module table are small: on import it asks
# lazy_loader for jax and numpyro, and where they are not installed lazy_loader calls
# inspect.stack(), whose cost grows with the stack depth and the number of loaded modules
# (about 0.25 s when nutpie's import reached it inside a fit, 0.02 s here)
import arviz_base  # noqa: F401, I001 - see above

from poolwise.data import Table, read_table
from poolwise.datasets import load_example
from poolwise.diagnostics import Diagnosis, Finding, diagnose
from poolwise.errors import (
    ConvergenceWarning,
    DataError,
    DataWarning,
    FormulaError,
    PoolwiseError,
    SamplingError,
    SpecError,
    StoreError,
)
from poolwise.fit import Fit, fit
from poolwise.formula import parse_formula
from poolwise.io import load_fit, save_fit
from poolwise.model import ModelSpec, build_model
from poolwise.priors import (
    Prior,
    Priors,
    cauchy,
    exponential,
    flat,
    half_cauchy,
    half_normal,
    half_student_t,
    lkj,
    normal,
    student_t,
)
from poolwise.summary import result_dict, summary

__version__ = "0.1.0"

# Heavier parts (LOO, plots, report) are imported on first use, keeping `import poolwise` and
# the CLI start-up light.
_LAZY = {
    "compare_pooling": "poolwise.pooling",
    "compare_fits": "poolwise.pooling",
    "PoolingComparison": "poolwise.pooling",
    "predict": "poolwise.predict",
    "write_report": "poolwise.report",
    "RepairPolicy": "poolwise.repair",
    "RepairLog": "poolwise.repair",
    "RepairAttempt": "poolwise.repair",
    "prior_predictive": "poolwise.prior_predictive",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'poolwise' has no attribute {name!r}")

__all__ = [
    "PoolingComparison",
    "RepairAttempt",
    "RepairLog",
    "RepairPolicy",
    "compare_fits",
    "compare_pooling",
    "predict",
    "prior_predictive",
    "write_report",
    "ConvergenceWarning",
    "DataError",
    "DataWarning",
    "Diagnosis",
    "Finding",
    "Fit",
    "FormulaError",
    "ModelSpec",
    "PoolwiseError",
    "Prior",
    "Priors",
    "SamplingError",
    "SpecError",
    "StoreError",
    "Table",
    "build_model",
    "cauchy",
    "diagnose",
    "exponential",
    "fit",
    "flat",
    "half_cauchy",
    "half_normal",
    "half_student_t",
    "lkj",
    "load_example",
    "load_fit",
    "normal",
    "parse_formula",
    "read_table",
    "result_dict",
    "save_fit",
    "student_t",
    "summary",
]
