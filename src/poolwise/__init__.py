"""poolwise: Bayesian multilevel binomial regression.

Fit grouped yes/no or count-out-of-n data with no, partial or complete pooling, in one call::

    import poolwise
    fit = poolwise.fit("use.contraception ~ 1 + (1 | district)", poolwise.load_example())
    fit.summary()
"""

import gc as _gc

# Importing poolwise creates about a million long-lived objects (NumPy, pandas, xarray, numba,
# nutpie's dependencies) and next to no garbage, yet the cyclic garbage collector would
# traverse them over and over while they are created (two full collections and some thirty
# of the middle generation: about 0.3 s of the 2-second `poolwise fit --example bangladesh`,
# bench/fixed_cost.py). It is paused for the import and set back as it was.
_gc_was_enabled = _gc.isenabled()
_gc.disable()
try:
    # arviz-base first, while the interpreter's stack and module table are small: on import it asks
    # lazy_loader for jax and numpyro, and where they are not installed lazy_loader calls
    # inspect.stack(), whose cost grows with the stack depth and the number of loaded modules
    # (about 0.25 s when nutpie's import reached it inside a fit, 0.02 s here)
    import arviz_base  # noqa: F401, I001 - see above

    from poolwise.data.table import Table, read_table
    from poolwise.data.datasets import load_example
    from poolwise.inference.diagnostics import Diagnosis, Finding, diagnose
    from poolwise.errors import (
        ConvergenceWarning,
        DataError,
        DataWarning,
        FormulaError,
        Interrupted,
        PoolwiseError,
        SamplingError,
        SpecError,
        StoreError,
    )
    from poolwise.inference.fitted import Fit
    from poolwise.inference.fit import fit
    from poolwise.formula import parse_formula
    from poolwise.output.io import load_fit, save_fit
    from poolwise.model.spec import ModelSpec, build_model
    from poolwise.model.priors import (
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
    from poolwise.output.results import result_dict
    from poolwise.inference.summary import summary
finally:
    if _gc_was_enabled:
        _gc.enable()
    del _gc_was_enabled
del _gc

__version__ = "0.1.0"

# Heavier parts (LOO, plots, report) are imported on first use, keeping `import poolwise` and
# the CLI start-up light.
_LAZY = {
    "compare_pooling": "poolwise.comparison.pooling",
    "compare_fits": "poolwise.comparison.pooling",
    "PoolingComparison": "poolwise.comparison.pooling",
    "predict": "poolwise.comparison.predict",
    "predictions": "poolwise.comparison.effects",
    "comparisons": "poolwise.comparison.effects",
    "slopes": "poolwise.comparison.effects",
    "poststratify": "poolwise.comparison.poststratify",
    "write_report": "poolwise.output.report",
    "RepairPolicy": "poolwise.inference.repair",
    "RepairLog": "poolwise.inference.repair",
    "RepairAttempt": "poolwise.inference.repair",
    "prior_predictive": "poolwise.model.prior_predictive",
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
    "comparisons",
    "poststratify",
    "predict",
    "predictions",
    "prior_predictive",
    "slopes",
    "write_report",
    "ConvergenceWarning",
    "DataError",
    "DataWarning",
    "Diagnosis",
    "Finding",
    "Fit",
    "FormulaError",
    "Interrupted",
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
