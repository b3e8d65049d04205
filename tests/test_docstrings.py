"""Every public callable of poolwise has a numpydoc docstring: a Parameters section with one
``name : type`` entry per parameter of its signature (and none that it lacks), a Returns
section with an entry, and a Raises section naming only poolwise's own exceptions."""

from __future__ import annotations

import inspect
import re

import pytest

import poolwise
import poolwise.errors

# Public callables whose docstring is known to be incomplete (strict xfail: it fails once they
# pass, so the name must then be removed here). Empty: every public callable is documented.


def _public() -> dict[str, object]:
    names = sorted(set(poolwise.__all__) | set(poolwise._LAZY))
    out = {n: getattr(poolwise, n) for n in names}
    out = {n: o for n, o in out.items() if callable(o) and not inspect.isclass(o)}
    out["Fit.summary"] = poolwise.Fit.summary
    out["Fit.row_level"] = poolwise.Fit.row_level
    return out


PUBLIC = _public()


def _section(doc: str, title: str) -> str | None:
    """The body of numpydoc section ``title`` (up to the next underlined heading), or None."""
    m = re.search(
        rf"^{title}\n-{{{len(title)},}}\n(.*?)(?=^\S[^\n]*\n-{{3,}}\n|\Z)", doc, re.M | re.S
    )
    return None if m is None else m.group(1)


def _entries(body: str) -> list[str]:
    """The names of the ``name : type`` entry lines (not indented) of a section body."""
    return re.findall(r"^(\**\w+) : \S", body, re.M)


def _params(func: object) -> list[str]:
    out = []
    for p in inspect.signature(func).parameters.values():
        if p.name == "self":
            continue
        stars = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        out.append(stars + p.name)
    return out


def _cases() -> list[object]:
    return [
        pytest.param(name, id=name)
        for name in PUBLIC
    ]


def test_public_list_covers_the_api() -> None:
    expected = {
        "read_table", "load_example", "diagnose", "fit", "parse_formula", "load_fit",
        "save_fit", "build_model", "normal", "student_t", "cauchy", "exponential",
        "half_normal", "half_student_t", "half_cauchy", "flat", "lkj", "result_dict",
        "summary", "compare_pooling", "compare_fits", "predict", "write_report",
        "prior_predictive", "Fit.summary", "Fit.row_level",
    }  # fmt: skip
    assert expected <= set(PUBLIC)


@pytest.mark.parametrize("name", _cases())
def test_numpydoc(name: str) -> None:
    func = PUBLIC[name]
    doc = inspect.cleandoc(func.__doc__ or "")
    assert doc, f"{name} has no docstring"
    params = _params(func)
    body = _section(doc, "Parameters")
    if params:
        assert body is not None, f"{name}: no 'Parameters' section with its '----------' line"
        documented = _entries(body)
        assert documented == params, (
            f"{name}: Parameters documents {documented}, the signature has {params}"
        )
    else:
        assert body is None or not _entries(body), f"{name} takes no parameters"
    returns = _section(doc, "Returns")
    assert returns is not None and returns.strip(), f"{name}: no 'Returns' section"
    raises = _section(doc, "Raises")
    if raises is not None:
        names = re.findall(r"^(\w+)\s*$", raises, re.M)
        assert names, f"{name}: empty 'Raises' section"
        for exc in names:
            assert isinstance(getattr(poolwise.errors, exc, None), type), (
                f"{name}: Raises names {exc}, not an exception of poolwise.errors"
            )


def test_checker_rejects_a_missing_parameter() -> None:
    """The parser is not vacuous: a docstring that skips one parameter fails the comparison."""

    def f(a: int, b: str = "x") -> int:
        """Doc.

        Parameters
        ----------
        a : int
            The a.

        Returns
        -------
        int
            The result.
        """
        return a

    doc = inspect.cleandoc(f.__doc__)
    assert _entries(_section(doc, "Parameters")) == ["a"] != _params(f)
    assert _section(doc, "Returns").strip().startswith("int")
    assert _section(doc, "Raises") is None
