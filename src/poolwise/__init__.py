"""poolwise: Bayesian multilevel binomial regression.

Fit grouped yes/no or count-out-of-n data with no, partial or complete pooling, in one call::

    import poolwise
    fit = poolwise.fit("use.contraception ~ 1 + (1 | district)", poolwise.load_example())
    fit.summary()
"""

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
)
from poolwise.fit import Fit, fit
from poolwise.formula import parse_formula
from poolwise.io import save_fit
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

__all__ = [
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
    "normal",
    "parse_formula",
    "read_table",
    "result_dict",
    "save_fit",
    "student_t",
    "summary",
]
