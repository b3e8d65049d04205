"""Long reference runs for the seed models; the numbers feed tests/test_fit.py.

Run: .venv/bin/python bench/reference_runs.py
16 chains x (2000 tune + 10 000 draws), non-centered; prints posterior means with MCSE.
"""

from __future__ import annotations

import poolwise

FORMULA = "use.contraception ~ 1 + (1 | district)"


def main() -> None:
    data = poolwise.load_example("bangladesh")
    for pooling, names in (("partial", ["Intercept", "sd_district", "a_district[1]"]),
                           ("none", ["a_district[1]", "a_district[3]"])):
        fit = poolwise.fit(FORMULA, data, pooling=pooling, parameterization="noncentered",
                           chains=16, tune=2000, draws=10_000, seed=4711, log_likelihood=False)
        s = fit.summary()
        print(f"{pooling}: ok={fit.ok} divergences={fit.diagnosis.divergences} "
              f"max_rhat={fit.diagnosis.max_rhat:.4f}")
        for n in names:
            print(f"  {n:16s} mean {s.loc[n, 'mean']:.4f}  mcse {s.loc[n, 'mcse_mean']:.4f}  "
                  f"sd {s.loc[n, 'sd']:.4f}")


if __name__ == "__main__":
    main()
