"""Which rows the analysis uses: one trial per (cell, seed) chosen on validation, old tables, test-set sizes."""
import numpy as np
import pandas as pd
import pytest

from analysis.read_results import AnalysisInputError, prepare, validate
from analysis.schema import ADDED_COLUMNS, BASE_COLUMNS
from analysis.synthetic import TRUTH, synthetic_table

CELL = dict(source="english", quality="clean", size=1000, lr_intermediate=1e-5, intermediate_task="paraphrase",
            metric="accuracy")


def trial_rows(trial_id, stage, seed, objective, scores: dict, n_examples=48):
    """One trial's rows: scores maps (target, language) -> test score."""
    return [dict(CELL, trial_id=trial_id, stage=stage, seed=seed, lr_target=1e-5, target_task=target,
                 language=language, score=score, objective=objective, n_examples=n_examples)
            for (target, language), score in scores.items()]


def test_the_trial_is_chosen_on_validation_and_kept_for_every_target():
    """Seed 0: 'best_test' has the best test scores on both targets, 'best_val' the best validation objective; the
    analysis keeps 'best_val', for genre and retrieval alike. Seed 1: a replicate trial beats both search trials."""
    rows = (trial_rows("best_test", "search", 0, 50.0, {("genre", "fr"): 80.0, ("retrieval", "fr"): 90.0})
            + trial_rows("best_val", "search", 0, 60.0, {("genre", "fr"): 70.0, ("retrieval", "fr"): 60.0})
            + trial_rows("mixed", "search", 0, 55.0, {("genre", "fr"): 75.0, ("retrieval", "fr"): 95.0})
            + trial_rows("s1", "search", 1, 70.0, {("genre", "fr"): 99.0, ("retrieval", "fr"): 99.0})
            + trial_rows("r1", "replicate", 1, 40.0, {("genre", "fr"): 10.0, ("retrieval", "fr"): 10.0}))
    chosen, counts = prepare(validate(pd.DataFrame(rows), "t"))
    by_target = chosen[chosen["seed"] == 0].groupby("target_task")["trial_id"].unique()
    assert {target: list(ids) for target, ids in by_target.items()} == {"genre": ["best_val"],
                                                                        "retrieval": ["best_val"]}
    assert set(chosen.loc[chosen["seed"] == 1, "trial_id"]) == {"r1"}
    assert counts["trials_not_selected"] == 3 and counts["cells_with_choice"] == 2
    assert counts["chosen_without_objective"] == 0


def test_without_an_objective_the_test_score_still_does_not_choose():
    """An old table has no validation objective: the first trial by id is kept, not the one with the best test
    score, and the report can say how often that happened."""
    rows = (trial_rows("t1", "search", 0, np.nan, {("genre", "fr"): 40.0})
            + trial_rows("t2", "search", 0, np.nan, {("genre", "fr"): 90.0}))
    chosen, counts = prepare(validate(pd.DataFrame(rows), "t"))
    assert set(chosen["trial_id"]) == {"t1"}
    assert counts["chosen_without_objective"] == 1


def test_an_old_table_without_the_added_columns_reads_with_their_defaults():
    table = synthetic_table({"clean": TRUTH}, sizes=(0, 250, 1000, 4000), languages=("fr", "de"))
    old = table[list(BASE_COLUMNS)]
    read = validate(old, "old table")
    for column, default in ADDED_COLUMNS.items():
        assert column in read.columns
        assert read[column].isna().all() if isinstance(default, float) else (read[column] == default).all()
    rows, _ = prepare(read)
    assert len(rows[rows["language"] == "avg"]) == len(old) // 2


def test_avg_rows_sum_the_test_examples_of_their_languages():
    table = synthetic_table({"clean": TRUTH}, sizes=(0, 250, 1000, 4000), languages=("fr", "de", "ko"),
                            test_examples=48)
    rows, _ = prepare(validate(table, "t"))
    assert (rows.loc[rows["language"] == "avg", "n_examples"] == 3 * 48).all()
    # One language without a count makes the sum unknown rather than too small.
    table.loc[table["language"] == "ko", "n_examples"] = np.nan
    rows, _ = prepare(validate(table, "t"))
    assert rows.loc[rows["language"] == "avg", "n_examples"].isna().all()


def test_a_negative_test_set_size_is_a_user_error():
    table = synthetic_table({"clean": TRUTH}, sizes=(0, 250, 1000, 4000), test_examples=48)
    table.loc[table.index[0], "n_examples"] = -5
    with pytest.raises(AnalysisInputError, match="n_examples"):
        validate(table, "t")
