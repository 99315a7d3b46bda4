"""The results contract, in one place: the columns of `results.csv` and the metric keys a trial reports.

One row per (trial, target task, language); `score` in points (0-100), NaN for a trial that failed before scoring;
`language` is an ISO 639-1 code or `avg` (the mean over the target's languages). The sweep writes these columns
(sweeps/tracking.py) and the analysis reads them from the CSV or rebuilds them from MLflow (analysis/read_results.py).
Extend it, never break old tables: a column added later goes into ADDED_COLUMNS with the value an older table means.
"""
from __future__ import annotations

import math

# The first version's columns: every results table has them.
BASE_COLUMNS = ("trial_id", "stage", "source", "quality", "size", "seed", "lr_intermediate", "lr_target",
                "target_task", "language", "metric", "score")
# Added later, with what a table without the column means.
ADDED_COLUMNS = {
    "intermediate_task": "",       # the intermediate task or mixture id of the cell ("" for the baseline, or unknown)
    "n_examples": math.nan,        # evaluation examples behind `score` (for `avg`: summed over the languages)
    "objective": math.nan,         # the trial's validation objective (what the search maximised; selection uses it)
}
COLUMNS = BASE_COLUMNS + tuple(ADDED_COLUMNS)

SOURCES = ("none", "english", "multilingual")
AVG = "avg"

# Metric keys a trial reports (trainables/three_phase.py) and MLflow stores: "<prefix>.<target>.<language>".
TEST_PREFIX = "score"          # test score, in points
VALIDATION_PREFIX = "val"      # validation score, in points
COUNT_PREFIX = "n"             # test examples behind the score
TRUNCATED_PREFIX = "truncated" # training examples/words featurising could not keep: "truncated.<phase>.<what>"
OBJECTIVE = "objective"        # mean over the evaluated targets of the validation `avg`


def metric_key(prefix: str, target: str, language: str) -> str:
    return f"{prefix}.{target}.{language}"


def parse_metric_key(key: str, prefix: str) -> tuple[str, str] | None:
    """'<prefix>.<target>.<language>' -> (target, language); None for any other key (and for the per-direction
    retrieval keys such as 'score.retrieval.fr/en_to_x')."""
    if not key.startswith(prefix + ".") or key.count(".") < 2:
        return None
    target, language = key[len(prefix) + 1:].rsplit(".", 1)
    return None if "/" in language else (target, language)
