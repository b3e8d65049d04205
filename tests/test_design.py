"""Binding data to a formula: labels, compression, row mapping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poolwise.data.design import build_design
from poolwise.engine import density as D
from poolwise.engine.layout import pack
from poolwise.model.spec import build_model

FORMULA = "use.contraception ~ 1 + (1 | district)"


def test_noncontiguous_labels_make_no_phantom_group(bangladesh):
    d = build_design(FORMULA, bangladesh)
    labels = d.groups[0].labels.tolist()
    assert len(labels) == 60
    assert 54 not in labels and labels[0] == 1 and labels[-1] == 61
    assert d.n_cells == 60 and d.n_rows == 1934
    # district 3: 2 women, both users; 11 and 49: nobody
    g = d.groups[0]
    i3, i11, i49 = labels.index(3), labels.index(11), labels.index(49)
    assert (g.level_trials[i3], g.level_successes[i3]) == (2, 2)
    assert g.level_successes[i11] == 0 and g.level_successes[i49] == 0


def test_cells_reproduce_row_totals(bangladesh):
    d = build_design("use.contraception ~ urban + (1 + urban | district)", bangladesh)
    assert d.y.sum() == bangladesh["use.contraception"].sum()
    assert d.n.sum() == len(bangladesh)
    # every row's cell has the row's covariates
    np.testing.assert_array_equal(d.X[d.row_cell, 1], bangladesh["urban"].to_numpy())
    np.testing.assert_array_equal(
        d.groups[0].labels[d.groups[0].codes[d.row_cell]], bangladesh["district"].to_numpy()
    )


def test_labels_survive_shuffling_and_relabelling(bangladesh):
    """Shuffle rows and relabel districts as strings (non-ASCII, spaces, numeric-looking): the
    log density is unchanged and every label maps to exactly one parameter."""
    rng = np.random.default_rng(11)
    names = {lab: f"d {lab}" for lab in bangladesh["district"].unique()}
    names[1], names[2], names[10] = "é", "10", "x y"
    shuffled = bangladesh.sample(frac=1.0, random_state=3).reset_index(drop=True)
    shuffled["district"] = shuffled["district"].map(names)
    a = build_model(FORMULA, bangladesh, parameterization="noncentered")
    b = build_model(FORMULA, shuffled, parameterization="noncentered")
    la = a.design.groups[0].labels.tolist()
    lb = b.design.groups[0].labels.tolist()
    assert sorted(lb) == sorted(names[v] for v in la)
    assert len(set(lb)) == len(lb) == 60
    perm = np.array([lb.index(names[v]) for v in la])  # position in b of a's level k
    pa, pb = pack(a), pack(b)
    for _ in range(10):
        xa = rng.normal(size=pa.dim)
        xb = xa.copy()
        xb[2 + perm] = xa[2:]
        va = D.logp_grad(xa, np.empty(pa.dim), pa.ib, pa.fb)
        vb = D.logp_grad(xb, np.empty(pb.dim), pb.ib, pb.fb)
        assert va == pytest.approx(vb, abs=1e-9)


def test_categorical_predictor_treatment_coding():
    df = pd.DataFrame({"y": [0, 1, 1, 0, 1, 0] * 2, "arm": ["b", "a", "c", "a", "b", "c"] * 2,
                       "g": [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]})
    d = build_design("y ~ arm + (1 | g)", df)
    assert d.fixed_names == ("Intercept", "armb", "armc")
