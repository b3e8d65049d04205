"""Bundled example data."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from poolwise.data.table import Table, read_table
from poolwise.errors import DataError

__all__ = ["EXAMPLES", "example_path", "load_example"]

#: name -> (file, default formula, description)
EXAMPLES: dict[str, tuple[str, str, str]] = {
    "bangladesh": (
        "bangladesh.csv",
        "use.contraception ~ 1 + (1 | district)",
        "1988 Bangladesh Fertility Survey: contraception use of 1934 women in 60 districts "
        "(labels 1-61, 54 absent). Columns: woman, district, use.contraception, "
        "living.children, age.centered, urban.",
    ),
}


def example_path(name: str) -> Path:
    if name not in EXAMPLES:
        raise DataError(f"unknown example {name!r}; available: {', '.join(EXAMPLES)}")
    return Path(str(files("poolwise.data.datasets").joinpath(EXAMPLES[name][0])))


def load_example(name: str = "bangladesh") -> Table:
    """The bundled example ``name`` as a :class:`~poolwise.data.Table`.

    Parameters
    ----------
    name : str, default "bangladesh"
        Name of the example; ``poolwise.data.datasets.EXAMPLES`` lists them with their default
        formula and a description.

    Returns
    -------
    Table
        The example data, read with :func:`read_table`.

    Raises
    ------
    DataError
        When ``name`` is not a bundled example.
    """
    return read_table(example_path(name))
