"""Real sweeps are messy: missing cells, a single seed, flat and falling curves, failed trials."""
import numpy as np
import pandas as pd
import pytest

from analysis.answer import analyse
from analysis.read_results import AnalysisInputError, prepare, validate
from analysis.synthetic import TRUTH, synthetic_table
from analysis.verdicts import number

SHORT_LADDER = (0, 250, 1000, 4000, 16000)


def one(rows, **where):
    found = [row for row in rows if all(row[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, len(found))
    return found[0]


def run(table, n_boot=200):
    rows, counts = prepare(validate(table, "test table"))
    curves, comparisons, _ = analyse(rows, n_boot=n_boot, seed=0)
    return curves, comparisons, counts


def test_adds_avg_rows_only_where_missing():
    table = synthetic_table({"clean": TRUTH}, sizes=SHORT_LADDER, languages=("fr", "de"))
    rows, _ = prepare(validate(table, "t"))
    avg = rows[rows["language"] == "avg"]
    assert len(avg) == len(table) // 2
    trial = avg.iloc[0]["trial_id"]
    assert avg.iloc[0]["score"] == pytest.approx(table[table["trial_id"] == trial]["score"].mean())

    with_given_avg = pd.concat([table, avg.assign(score=99.0)])
    rows, _ = prepare(validate(with_given_avg, "t"))
    assert (rows.loc[rows["language"] == "avg", "score"] == 99.0).all()


def test_single_seed_gives_no_interval_with_a_reason():
    table = synthetic_table({"clean": TRUTH}, sizes=SHORT_LADDER, seeds=1, multilingual={("hq", 1000): 65.0})
    curves, comparisons, _ = run(table)
    selected = one(curves, language="fr", selected=True)
    assert selected["asymptote"] is not None
    assert selected["asymptote_ci"] is None and selected["gain_per_doubling_ci"] is None
    assert selected["ci_note"].startswith("cannot be estimated")
    comparison = one(comparisons, language="fr")
    assert comparison["english_equivalent_size"] is not None
    assert comparison["english_equivalent_size_ci"] is None
    assert comparison["ci_note"].startswith("cannot be estimated")


def test_single_seed_with_test_set_size_gives_test_noise_intervals():
    """One seed, but the table says how many test examples each score has: the binomial noise alone gives an
    interval, and the note says that seed noise is not in it."""
    table = synthetic_table({"clean": TRUTH}, sizes=SHORT_LADDER, seeds=1, test_examples=400,
                            multilingual={("hq", 1000): 65.0})
    curves, comparisons, _ = run(table)
    selected = one(curves, language="fr", selected=True)
    low, high = (number(end) for end in selected["gain_per_doubling_ci"])
    assert low <= selected["gain_per_doubling_at_max"] <= high and high > low
    assert selected["ci_note"].startswith("test-set noise only")
    assert one(comparisons, language="fr")["english_equivalent_size_ci"] is not None


def test_flat_curve_is_flat_and_never_reaches_a_better_cell():
    flat = dict(TRUTH, a=0.0)
    curves, comparisons, _ = run(synthetic_table({"clean": flat}, multilingual={("hq", 1000): 80.0}))
    selected = one(curves, language="fr", selected=True)
    assert selected["gain_per_doubling_at_max"] == pytest.approx(0, abs=0.1)
    assert "flat" in selected["categories"] and "falling" not in selected["categories"]
    comparison = one(comparisons, language="fr")
    assert comparison["english_equivalent_size"] == "inf"
    assert comparison["category"] in ("never", "never in the selected form")
    assert number(comparison["english_equivalent_size_ci"][0]) > 10 * 64000  # far beyond the largest size
    assert number(comparison["english_equivalent_size_ci"][1]) == float("inf")


def test_falling_curve_falls():
    falling = {"s_inf": 60.0, "a": -15.0 * 500 ** 0.5, "alpha": 0.5, "n0": 500.0}  # from 75 down towards 60
    curves, comparisons, _ = run(synthetic_table({"clean": falling}, sizes=SHORT_LADDER,
                                                 multilingual={("hq", 1000): 80.0, ("hq", 250): 50.0}))
    selected = one(curves, language="fr", selected=True)
    assert selected["gain_per_doubling_at_max"] < 0
    assert selected["categories"] == ["falling"] and "is falling" in selected["verdict"]
    assert one(comparisons, language="fr", multilingual_size=1000)["english_equivalent_size"] == "inf"
    assert one(comparisons, language="fr", multilingual_size=250)["english_equivalent_size"] == 0


def test_missing_cells_and_nan_scores_are_handled_and_counted():
    table = synthetic_table({"clean": TRUTH, "raw": dict(TRUTH, s_inf=68.0)}, sizes=SHORT_LADDER,
                            languages=("fr", "de"), multilingual={("hq", 1000): 65.0})
    missing = ((table["language"] == "de") & (table["quality"] == "raw") & (table["size"] == 4000)) | (
        (table["language"] == "fr") & (table["source"] == "multilingual"))
    table = table[~missing].copy()
    failed_trial = table["trial_id"] == "english-clean-1000-0"
    table.loc[failed_trial, "score"] = np.nan
    table.loc[table.index[0], "score"] = np.nan  # one language of one baseline trial
    curves, comparisons, counts = run(table)

    assert counts["nan_rows"] == 3 and counts["failed_trials"] == 1
    assert counts["nan_rows_by_target"] == {"genre": 3}
    assert {(r["language"], r["quality"]) for r in curves} == {
        (language, quality) for language in ("avg", "de", "fr") for quality in ("clean", "raw")}
    assert {row["language"] for row in comparisons} == {"avg", "de"}
    assert one(curves, language="de", quality="raw", selected=True)["largest_size"] == 16000


def test_all_english_scores_failed_is_a_user_error():
    table = synthetic_table({"clean": TRUTH}, sizes=SHORT_LADDER)
    table.loc[table["source"] == "english", "score"] = np.nan
    with pytest.raises(AnalysisInputError, match="NaN"):
        prepare(validate(table, "t"))
