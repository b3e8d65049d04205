"""Many groups: the CLI prints the population parameters and the extremes, the CSV has all."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from poolwise.cli import TOP_K, main


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    rng = np.random.default_rng(7)
    groups = 3 * TOP_K
    g = np.repeat(np.arange(groups), 8)
    a = rng.normal(0, 0.8, groups)
    df = pd.DataFrame({"y": rng.binomial(1, 1 / (1 + np.exp(-a[g]))), "g": g})
    path = tmp_path_factory.mktemp("many") / "d.csv"
    df.to_csv(path, index=False)
    return path, df


def test_fit_prints_extremes_and_saves_every_group(many, tmp_path, capsys):
    path, df = many
    out = tmp_path / "out"
    rc = main(["fit", str(path), "-f", "y ~ 1 + (1 | g)", "--seed", "3", "--tune", "300",
               "--draws", "300", "--no-repair", "--parameterization", "noncentered",
               "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc in (0, 1)
    lines = [ln for ln in printed.splitlines() if ln.startswith("a_g[")]
    assert len(lines) == 2 * TOP_K
    assert f"a_g: {3 * TOP_K} levels" in printed and str(out / "summary.csv") in printed
    full = pd.read_csv(out / "summary.csv", index_col=0)
    group_rows = full[full.index.str.startswith("a_g[")]
    assert len(group_rows) == 3 * TOP_K
    # the printed ones are the lowest and highest posterior means
    shown = {ln.split()[0] for ln in lines}
    order = group_rows["mean"].sort_values(kind="stable").index
    assert shown == set(order[:TOP_K]) | set(order[-TOP_K:])
    # per-level counts in the table (vectorized lookup)
    n = df.groupby("g")["y"].size()
    s = df.groupby("g")["y"].sum()
    for lab in (0, 17, 29):
        assert group_rows.loc[f"a_g[{lab}]", "n"] == n[lab]
        assert group_rows.loc[f"a_g[{lab}]", "raw_proportion"] == pytest.approx(s[lab] / n[lab])
