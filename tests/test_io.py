"""Persistence (docs/reliability.md G4): netCDF and zarr round trips are lossless, and a saved
folder alone (no data file) rebuilds a Fit whose summary, diagnosis and model are the
original's."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import poolwise
from poolwise.data.table import read_table
from poolwise.engine.layout import pack
from poolwise.engine.sampler import SamplerConfig
from poolwise.errors import ConvergenceWarning, DataError, DataWarning
from poolwise.inference.diagnostics import Finding, FindingCode, diagnose
from poolwise.inference.repair import RepairLog
from poolwise.inference.sampling import sample_spec
from poolwise.model.spec import build_model
from poolwise.output.io import (
    DESIGN_GROUP,
    _jsonable,
    load_fit,
    read_tree,
    save_fit,
    storable,
    to_datatree,
    write_tree,
)
from poolwise.output.results import result_dict

LABELS = ["x y", "é", "10", "b", "Zürich", "a"]  # spaces, accents, numeric-looking strings
FORMATS = ["netcdf", "zarr"]
SUFFIX = {"netcdf": ".nc", "zarr": ".zarr"}


def _labelled_frame(seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(len(LABELS)), 30)
    x = rng.normal(2.0, 3.0, g.size)
    a = rng.normal(0.0, 0.7, len(LABELS))
    y = (rng.random(g.size) < 1 / (1 + np.exp(-(a[g] + 0.3 * x)))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": np.array(LABELS, dtype=object)[g]})


def _quick(formula: str, data, **kw) -> poolwise.Fit:
    """A short fit; whether it converged does not matter here (a not-ok fit must round-trip
    too, findings and all)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return poolwise.fit(formula, data, seed=5, tune=300, draws=300, **kw)


@pytest.fixture(scope="module")
def labelled_fit() -> poolwise.Fit:
    return _quick("y ~ 1 + x + (1 + x | g)", _labelled_frame())


@pytest.fixture(scope="module")
def divergent_fit(bangladesh_first3) -> poolwise.Fit:
    """The seed's three districts, centered: divergences, so ``diverging`` has True values."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # 3 levels: expected
        spec = build_model("use.contraception ~ 1 + (1 | district)", bangladesh_first3,
                           parameterization="centered")
    fit = sample_spec(spec, SamplerConfig(chains=4, tune=300, draws=300, seed=3))
    assert fit.diagnosis.divergences > 0
    return fit


def _assert_same_fit(loaded: poolwise.Fit, fit: poolwise.Fit) -> None:
    pd.testing.assert_frame_equal(loaded.summary(), fit.summary())
    pd.testing.assert_frame_equal(
        loaded.summary(prob=0.5, kind="eti", scale="probability"),
        fit.summary(prob=0.5, kind="eti", scale="probability"),
    )
    assert loaded.diagnosis.to_dict() == fit.diagnosis.to_dict()
    assert diagnose(loaded).to_dict() == fit.diagnosis.to_dict()
    # the codes are saved as their strings and come back as the enum's members
    assert loaded.diagnosis.findings == fit.diagnosis.findings
    assert all(type(f.code) is FindingCode for f in loaded.diagnosis.findings)
    if isinstance(fit.repair_log, RepairLog):
        for a_new, a_old in zip(loaded.repair_log, fit.repair_log, strict=True):
            assert a_new.problems == a_old.problems
            assert all(type(c) is FindingCode for c in a_new.problems)
    assert result_dict(loaded) == result_dict(fit)
    assert loaded.config == fit.config
    assert loaded.timings == fit.timings
    assert loaded.warnings == fit.warnings
    # the rebuilt model is the same model: same engine buffer, same labels and their types
    assert np.array_equal(pack(loaded.spec).buffer, pack(fit.spec).buffer)
    for g_new, g_old in zip(loaded.spec.design.groups, fit.spec.design.groups, strict=True):
        assert g_new.labels.dtype == g_old.labels.dtype
        assert [type(v) for v in g_new.labels] == [type(v) for v in g_old.labels]
        assert list(g_new.labels) == list(g_old.labels)
        assert g_new.term == g_old.term
    assert loaded.spec.design.formula == fit.spec.design.formula
    assert loaded.spec.priors == fit.spec.priors
    assert loaded.spec.terms[0].group is loaded.spec.design.groups[0] if fit.spec.terms else True
    # the draws: every group except the dropped per-divergence strings, identical
    want = storable(fit.idata)
    for node in want.subtree:
        if node is not want:
            assert loaded.idata[node.path].identical(node), node.path
    assert list(loaded.posterior.data_vars) == list(fit.posterior.data_vars)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tree_round_trip_is_identical(labelled_fit, divergent_fit, tmp_path, fmt):
    for name, fit in [("labelled", labelled_fit), ("divergent", divergent_fit)]:
        tree = to_datatree(fit)
        path = write_tree(tree, tmp_path / f"{name}{SUFFIX[fmt]}")
        back = read_tree(path)
        assert back.identical(tree)
        assert back["sample_stats"]["diverging"].dtype == bool
        assert int(back["sample_stats"]["diverging"].sum()) == fit.diagnosis.divergences
    labels = back_labels = read_tree(tmp_path / f"labelled{SUFFIX[fmt]}")["posterior"]["g"].values
    assert sorted(back_labels.tolist()) == sorted(LABELS)
    assert all(isinstance(v, str) for v in labels.tolist())


@pytest.mark.parametrize("fmt", FORMATS)
def test_save_load_rebuilds_the_fit(labelled_fit, divergent_fit, tmp_path, fmt):
    for name, fit in [("labelled", labelled_fit), ("divergent", divergent_fit)]:
        paths = save_fit(fit, tmp_path / name, format=fmt)
        assert paths["fit"].name == f"fit{SUFFIX[fmt]}"
        loaded = load_fit(tmp_path / name)
        _assert_same_fit(loaded, fit)
        assert load_fit(paths["fit"]).summary().equals(loaded.summary())
        # saving the loaded fit again gives the same tree
        assert to_datatree(loaded).identical(to_datatree(fit))


def _rewrite_summary(folder, table) -> None:
    """Put ``table`` into ``folder/summary.csv`` as an older poolwise wrote it, and record
    the new file in the manifest, as that version did."""
    import hashlib

    table.to_csv(folder / "summary.csv", index_label="parameter")
    manifest = json.loads((folder / "poolwise.json").read_text())
    data = (folder / "summary.csv").read_bytes()
    manifest["files"]["summary.csv"] = {"sha256": hashlib.sha256(data).hexdigest(),
                                        "size": len(data)}
    (folder / "poolwise.json").write_text(json.dumps(manifest))


def test_a_summary_saved_before_the_interval_was_named_is_computed_again(labelled_fit,
                                                                        tmp_path):
    """A summary.csv whose interval columns are ``lower`` / ``upper`` (written before they
    said their kind and probability) is not taken as the loaded fit's summary: the summary is
    computed again, with named columns and the same numbers, never relabelled. A current
    summary.csv is taken as it is."""
    fresh = labelled_fit.summary()
    save_fit(labelled_fit, tmp_path / "new")
    assert list(pd.read_csv(tmp_path / "new" / "summary.csv").columns[1:5]) == [
        "mean", "sd", "hdi_89_lower", "hdi_89_upper"]
    loaded = load_fit(tmp_path / "new")
    assert (0.89, "hdi", "logit") in loaded._summaries  # reused, not computed
    pd.testing.assert_frame_equal(loaded.summary(), fresh, check_exact=False, rtol=1e-14)

    save_fit(labelled_fit, tmp_path / "old")
    old = fresh.rename(columns={"hdi_89_lower": "lower", "hdi_89_upper": "upper"})
    old.loc["Intercept", "mean"] = 99.0  # were it reused, the 99 would show
    _rewrite_summary(tmp_path / "old", old)
    loaded = load_fit(tmp_path / "old")
    assert not loaded._summaries
    again = loaded.summary()
    assert list(again.columns) == list(fresh.columns)
    pd.testing.assert_frame_equal(again, fresh)
    assert result_dict(loaded)["parameters"]["Intercept"]["hdi_89_lower"] == (
        fresh.loc["Intercept", "hdi_89_lower"])

    # a table under the new names but at another interval than result.json names: not taken
    _rewrite_summary(tmp_path / "old", labelled_fit.summary(prob=0.5, kind="eti"))
    assert not load_fit(tmp_path / "old")._summaries


def test_loads_without_the_data_file(tmp_path):
    csv = tmp_path / "data.csv"
    _labelled_frame(3).to_csv(csv, index=False, sep=";")
    fit = _quick("y ~ 1 + x + (1 | g)", csv)
    save_fit(fit, tmp_path / "out")
    csv.unlink()
    loaded = load_fit(tmp_path / "out")
    _assert_same_fit(loaded, fit)
    assert loaded.spec.design.source == str(csv)



def test_finding_codes_round_trip_as_the_enums_members(labelled_fit, tmp_path):
    """Codes are saved as their plain strings (result.json and the file keep them) and load
    back as :class:`FindingCode` members: in the findings and in a repair attempt's problems."""
    first = dataclasses.replace(labelled_fit.repair_log[0],
                                problems=(FindingCode.RHAT, FindingCode.ESS_BULK))
    log = dataclasses.replace(labelled_fit.repair_log, attempts=(first,))
    fit = dataclasses.replace(labelled_fit, repair_log=log)
    save_fit(fit, tmp_path / "out")
    readable = json.loads(read_tree(tmp_path / "out" / "fit.nc").attrs["poolwise_repair_log"])
    assert readable["attempts"][0]["problems"] == ["rhat", "ess_bulk"]
    loaded = load_fit(tmp_path / "out")
    (back,) = loaded.repair_log.attempts
    assert back.problems == (FindingCode.RHAT, FindingCode.ESS_BULK)
    assert all(type(c) is FindingCode for c in back.problems)
    assert back.problems == ("rhat", "ess_bulk")  # a StrEnum: equal to the saved strings

@pytest.mark.parametrize(
    ("formula", "kw", "labels"),
    [
        ("y ~ 1 + (1 | g)", {"pooling": "none"}, [10, 20, 55, 99]),  # non-contiguous ints
        ("y ~ 1 + x + (1 | g)", {"pooling": "complete"}, ["10", "2", "x y", "é"]),  # no terms
        ("y ~ 1 + (1 | g)", {"parameterization": "noncentered"}, [1.5, 2.5, 3.5, 4.5, 5.5]),
    ],
)
def test_other_models_and_label_types_round_trip(tmp_path, formula, kw, labels):
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(len(labels)), 25)
    frame = pd.DataFrame({
        "y": rng.integers(0, 2, g.size),
        "x": rng.normal(size=g.size),
        "g": pd.Series(labels, dtype=object if isinstance(labels[0], str) else None).values[g],
    })
    fit = _quick(formula, frame, **kw)
    for fmt in FORMATS:
        save_fit(fit, tmp_path / fmt, format=fmt)
        _assert_same_fit(load_fit(tmp_path / fmt), fit)


def test_provenance_attributes(tmp_path, labelled_fit):
    csv = tmp_path / "data.csv"
    _labelled_frame(3).to_csv(csv, index=False)
    fit = _quick("y ~ 1 + x + (1 | g)", csv)
    save_fit(fit, tmp_path / "out")
    attrs = read_tree(tmp_path / "out" / "fit.nc").attrs
    assert all(isinstance(v, str) for k, v in attrs.items() if k.startswith("poolwise_"))
    versions = json.loads(attrs["poolwise_versions"])
    for pkg in ("poolwise", "nutpie", "numba", "numpy", "python"):
        assert versions[pkg] and versions[pkg] != "unknown", pkg
    assert attrs["poolwise_seed"] == "5"
    assert json.loads(attrs["poolwise_settings"]) == fit.config.to_dict()
    assert attrs["poolwise_data_sha256"] == read_table(csv).sha256
    assert attrs["poolwise_rows_used"] == "180"
    assert json.loads(attrs["poolwise_columns_used"]) == ["y", "x", "g"]
    assert json.loads(attrs["poolwise_diagnosis"]) == fit.diagnosis.to_dict()
    assert json.loads(attrs["poolwise_repair_log"]) == _jsonable(fit.repair_log)
    assert attrs["poolwise_formula"] == "y ~ 1 + x + (1 | g)"
    assert DESIGN_GROUP in read_tree(tmp_path / "out" / "fit.nc").children


def test_repair_log_and_new_fields_round_trip(labelled_fit, tmp_path):
    steps = (
        Finding("divergences", "error", "There were 3 divergent transitions", ("sd_g",)),
        {"action": "noncenter", "before": 3, "after": 0, "target_accept": 0.95},
    )
    fit = dataclasses.replace(labelled_fit, repair_log=steps, warnings=("a", "b ü"))
    for fmt in FORMATS:
        save_fit(fit, tmp_path / fmt, format=fmt)
        tree = read_tree(tmp_path / fmt / f"fit{SUFFIX[fmt]}")
        readable = json.loads(tree.attrs["poolwise_repair_log"])
        assert readable[0]["message"] == "There were 3 divergent transitions"
        assert readable[1] == steps[1]
        loaded = load_fit(tmp_path / fmt)
        assert loaded.repair_log == steps  # the Finding comes back as a Finding
        assert loaded.repair_log[0].code is FindingCode.DIVERGENCES  # with the enum's member
        assert loaded.warnings == ("a", "b ü")


def test_load_errors_are_clear(tmp_path, labelled_fit):
    with pytest.raises(DataError, match="holds no saved fit"):
        load_fit(tmp_path)
    with pytest.raises(DataError, match="no saved fit"):
        load_fit(tmp_path / "missing.nc")
    # an ArviZ-style tree without the design group cannot rebuild a model
    write_tree(storable(labelled_fit.idata), tmp_path / "plain.nc")
    with pytest.raises(DataError, match="poolwise_design"):
        load_fit(tmp_path / "plain.nc")


def test_cli_output_folder_loads(tmp_path, bangladesh):
    from poolwise.cli import main

    csv = tmp_path / "b.csv"
    bangladesh[bangladesh["district"] <= 8].to_csv(csv, index=False)
    out = tmp_path / "out"
    code = main(["fit", str(csv), "-f", "use.contraception ~ 1 + (1 | district)", "--seed", "2",
                 "--draws", "300", "--tune", "300", "--quiet", "--out", str(out)])
    assert code in (0, 1)
    loaded = load_fit(out)
    saved = pd.read_csv(out / "summary.csv", index_col="parameter")
    pd.testing.assert_frame_equal(
        loaded.summary().reset_index(drop=True), saved.reset_index(drop=True),
        check_dtype=False, check_exact=False, rtol=1e-12,
    )
    assert json.loads((out / "result.json").read_text())["data"]["sha256"] == (
        loaded.spec.design.data_sha256
    )


def test_storable_keeps_the_in_memory_tree(labelled_fit):
    before = labelled_fit.idata.copy(deep=True)
    to_datatree(labelled_fit)
    assert labelled_fit.idata.identical(before)
    assert isinstance(to_datatree(labelled_fit), xr.DataTree)


def test_format_1_type_names_are_those_of_the_modules_then():
    """Format 1 named each type by its module path when it was written; the modules moved
    since (poolwise.model -> poolwise.model.spec, ...), and the old names still decode to the
    same allowlisted classes."""
    from poolwise.data.design import Design
    from poolwise.inference.repair import AutoChoice
    from poolwise.model.spec import ModelSpec
    from poolwise.output.io import _legacy_types, _types

    legacy = _legacy_types()
    assert legacy["poolwise.model:ModelSpec"] is ModelSpec
    assert legacy["poolwise.design:Design"] is Design
    assert legacy["poolwise.repair:AutoChoice"] is AutoChoice
    assert legacy["poolwise.parameterization:AutoChoice"] is AutoChoice
    # every type but those added after format 1 (the weights of a design) has a format 1 name
    from poolwise.data.weights import Weighting

    assert set(legacy.values()) == set(_types().values()) - {Weighting}
    assert not any(name.startswith(("poolwise.model.spec:", "poolwise.inference."))
                   for name in legacy)


@pytest.mark.parametrize("result", [
    {"formula": "y ~ 1", "parameters": {"Intercept": {"mean": 0.5, "sd": None},
                                        'a_g[}, {"x"]': {"mean": -1e-300, "sd": 1.0}},
     "timings": {"total_s": 1.0}},
    {"parameters": {"a": {"note": "}, {"}, "b": {"rows": [{"x": 1}, {"y": 2}]}}},
    {"parameters": {}},
    {"parameters": {"a": {}, "b": {}}},
])
def test_result_json_is_the_json_of_the_result(result):
    """result.json's text (its parameters a line each, by the C encoder): the same object as
    json.dumps gives, keys in their order, whatever the labels hold."""
    from poolwise.output.io import result_json

    text = result_json(result)
    assert json.loads(text) == json.loads(json.dumps(result))
    assert list(json.loads(text)) == list(result)
    if len(result["parameters"]) > 1:
        assert text.count("\n    ") >= len(result["parameters"])  # one line per parameter
