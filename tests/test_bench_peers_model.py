"""The peers' cont20k model (bench/peers.py) is the model poolwise fits: same data (bench/scale.py's
generator), same standardization of x, same default priors. No sampling, no peer environment:
peers.py's data code needs only numpy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import poolwise
from poolwise.model.priors import exponential, normal

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cont20k(tmp_path_factory):
    scale, peers = _load("scale"), _load("peers")
    path = tmp_path_factory.mktemp("cont20k") / "cont20k.csv"
    df, formula = scale.write_case("cont20k", path)
    return path, df, formula, peers.load_cont20k(path)


def test_cont20k_data_round_trip(cont20k):
    path, df, formula, data = cont20k
    assert formula == "y ~ 1 + x + (1 | g)"
    assert len(data["y"]) == 20_000 and len(data["labels"]) == 200
    np.testing.assert_array_equal(data["y"], df["y"].to_numpy())
    np.testing.assert_array_equal(data["x"], df["x"].to_numpy())  # the CSV keeps every digit


def test_cont20k_peers_mirror_poolwise_defaults(cont20k):
    path, _, formula, data = cont20k
    spec = poolwise.build_model(formula, path)
    d = spec.design
    assert d.fixed_names == ("Intercept", "x")
    # x is centered and scaled for sampling with the mean and np.std the peers use
    assert d.x_center[1] == pytest.approx(data["x_mean"], rel=1e-12, abs=1e-15)
    assert d.x_scale[1] == pytest.approx(data["x_sd"], rel=1e-12)
    assert d.x_center[0] == 0.0 and d.x_scale[0] == 1.0
    # the group intercepts are neither centered nor scaled
    assert d.groups[0].z_scale is None or np.all(d.groups[0].z_scale == 1.0)
    # the priors the peers write: alpha_c ~ N(0, 1.5), beta_z ~ N(0, 1), sd_g ~ Exponential(1)
    assert spec.priors.intercept == normal(0.0, 1.5)
    assert spec.priors.b == normal(0.0, 1.0)
    assert spec.priors.sd_for("g") == exponential(1.0)
    assert spec.fixed_priors == (normal(0.0, 1.5), normal(0.0, 1.0))
