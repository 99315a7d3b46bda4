"""Calibration on synthetic sweeps whose truth is known (run with -m slow; about 3 minutes on 2 cores).

240 tables, 60 per family of true curves (saturating, log-linear, flat, falling; see analysis/calibration.py),
3 seeds, seed noise sd 0.5-2, test sets of 50-2000 examples. Goals: every 95% interval (the ceiling where the
truth has one, the gain per doubling at the largest size, the English-equivalent size of a multilingual cell
inside the measured range and of a hard one) covers the truth in at least 92% of the tables of each family, and
the verdict's categories hold the true one in at least 90%.
"""
import time

import numpy as np
import pytest

from analysis.calibration import FAMILIES, INTERVALS, calibrate, coverage_table

COVERAGE_GOAL = 0.92
VERDICT_GOAL = 0.90


@pytest.mark.slow
def test_intervals_cover_the_truth_and_verdicts_hold_it():
    start = time.perf_counter()
    records = calibrate(240, seed=0, n_boot=250)
    table = coverage_table(records)
    print(f"\n{table.round(3).to_string()}\n{len(records)} tables in {time.perf_counter() - start:.0f} s")

    assert set(records["family"]) == set(FAMILIES) and (table.loc[list(FAMILIES), "tables"] == 60).all()
    for family in FAMILIES:
        for name in INTERVALS:
            coverage = table.loc[family, name]
            if not np.isnan(coverage):
                assert coverage >= COVERAGE_GOAL, (family, name, coverage)
        assert table.loc[family, "verdict_right"] >= VERDICT_GOAL, family
    decided = records[records["decided"]]
    if len(decided):  # a verdict naming one category names the right one
        assert decided["verdict_right"].mean() >= VERDICT_GOAL
    # The families are not trivial: each is checked on its ceiling or on both English-equivalent sizes.
    assert table.loc[["saturating", "flat"], "ceiling"].notna().all()
    assert set(records["true_category"]) >= {"rising", "diminishing", "flat", "falling"}
