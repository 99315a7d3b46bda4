"""Read the sweep's results (CSV or MLflow) into the results-contract table, and pick one trial per (cell, seed).

The contract is `analysis.schema`: one row per (trial, target task, language), `score` in points, NaN for a failed
trial, `language` possibly `avg`. Tables written before a column was added are read with that column's default.

Trial selection (`select_trials`): the search stage may run several learning rates per (cell, seed). Choosing among
them by the test score we then report would bias every cell upwards, and more so in cells the searcher visited
more often, which bends the curve. So one trial per (cell, seed) is kept, the same one for every target, chosen on
validation only: the replicate-stage trial when there is one (it reruns hyperparameters the search chose on
validation), otherwise the trial with the best validation objective. Where a table has no objective (older
tables) the first trial by id is kept and the report says how often that happened; test scores never choose.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.schema import (ADDED_COLUMNS, AVG, BASE_COLUMNS, COLUMNS, COUNT_PREFIX, OBJECTIVE, SOURCES,
                             TEST_PREFIX, parse_metric_key)

SWEEP_ROLE, TRIAL_ROLE = "sweep", "trial"
TRIAL = ["stage", "trial_id"]  # what identifies a trial: the sweep's trial ids are unique within a stage
CELL = ["source", "intermediate_task", "quality", "size"]
TEXT_COLUMNS = ("trial_id", "stage", "source", "quality", "target_task", "language", "metric", "intermediate_task")
NUMBER_COLUMNS = ("score", "lr_intermediate", "lr_target", "n_examples", "objective")


class AnalysisInputError(ValueError):
    """Input the user can fix; the CLI prints the message on one line and exits with status 2."""


def read_csv(path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise AnalysisInputError(f"no results file at {path}; pass the sweep's results.csv with --results")
    try:
        # Read text as text: 'none' and language codes such as 'na' must not turn into NaN.
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise AnalysisInputError(f"{path} is not a readable CSV ({err}); pass the sweep's results.csv") from None
    return validate(table, str(path))


def validate(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check the columns and types of the contract; return a copy with every column of `COLUMNS` (added ones
    filled with their defaults where the table predates them) and numeric sizes, seeds, rates, scores and counts."""
    missing = [column for column in BASE_COLUMNS if column not in table.columns]
    if missing:
        raise AnalysisInputError(f"{where} lacks the columns {', '.join(missing)}; "
                                 f"a results table needs {', '.join(BASE_COLUMNS)} (see analysis/schema.py)")
    table = table.assign(**{column: default for column, default in ADDED_COLUMNS.items()
                            if column not in table.columns}).loc[:, list(COLUMNS)].copy()
    for column in TEXT_COLUMNS:
        table[column] = table[column].astype(str).str.strip()
    for column in NUMBER_COLUMNS:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    for column in ("size", "seed"):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or (values != values.round()).any():
            raise AnalysisInputError(f"{where}: column '{column}' must hold integers; fix the rows that do not")
        table[column] = values.astype(int)
    if (table["n_examples"] <= 0).any():
        raise AnalysisInputError(f"{where}: column 'n_examples' must be positive (or empty where unknown)")
    unknown = sorted(set(table["source"]) - set(SOURCES))
    if unknown:
        raise AnalysisInputError(f"{where}: unknown source(s) {unknown}; sources are {', '.join(SOURCES)}")
    if not (table["source"] == "english").any():
        raise AnalysisInputError(f"{where} has no english rows, so there is no curve to fit; "
                                 "run the sweep's english cells first")
    return table


def prepare(table: pd.DataFrame):
    """Drop NaN scores (counted), add missing `avg` rows, pick one trial per (cell, seed).

    Returns (rows, counts): the rows the analysis uses and a dict of what was left out, for the report.
    """
    failed = table["score"].isna()
    trials_without_score = table.groupby(TRIAL)["score"].apply(lambda s: s.isna().all())
    counts = {
        "rows_read": int(len(table)),
        "nan_rows": int(failed.sum()),
        "nan_rows_by_target": {k: int(v) for k, v in table[failed].groupby("target_task").size().items()},
        "failed_trials": int(trials_without_score.sum()),
    }
    if not (table["source"].eq("english") & ~failed).any():
        raise AnalysisInputError("every english row has a NaN score (failed trials); rerun the sweep's english cells")
    rows, selection_counts = select_trials(with_avg(table[~failed]))
    return rows, {**counts, **selection_counts}


def with_avg(table: pd.DataFrame) -> pd.DataFrame:
    """Add an `avg` row (mean over the languages that have a score, their test examples summed) for every
    (trial, target) that lacks one."""
    trial_columns = [c for c in COLUMNS if c not in ("language", "score", "n_examples")]
    has_avg = table.loc[table["language"] == AVG, TRIAL + ["target_task"]].drop_duplicates()
    languages = table[table["language"] != AVG]
    means = languages.groupby(trial_columns, dropna=False, as_index=False).agg(
        score=("score", "mean"), n_examples=("n_examples", lambda m: m.sum(min_count=len(m))))
    means = means.merge(has_avg, how="left", on=TRIAL + ["target_task"], indicator=True)
    means = means[means["_merge"] == "left_only"].drop(columns="_merge").assign(language=AVG)
    return pd.concat([table, means[list(COLUMNS)]], ignore_index=True)


def select_trials(table: pd.DataFrame):
    """One trial per (cell, seed), the same for every target: the replicate stage first, then the best validation
    objective, then the first trial id. Returns (rows of the chosen trials, counts for the report)."""
    trials = table.groupby(TRIAL, as_index=False).agg(
        **{column: (column, "first") for column in CELL + ["seed"]}, objective=("objective", "max"))
    trials = trials.assign(replicate=trials["stage"] == "replicate")
    ranked = trials.sort_values(["replicate", "objective", "trial_id"], ascending=[False, False, True],
                                na_position="last", kind="stable")
    groups = ranked.groupby(CELL + ["seed"], sort=False)
    chosen = groups.head(1)
    contested = groups.size() > 1
    # Among several candidates, no replicate and no objective: the choice fell back to the trial id.
    blind = groups.apply(lambda g: len(g) > 1 and not g["replicate"].iloc[0] and np.isnan(g["objective"].iloc[0]),
                         include_groups=False)
    counts = {"trials_not_selected": int(len(trials) - len(chosen)), "cells_with_choice": int(contested.sum()),
              "chosen_without_objective": int(blind.sum())}
    return table.merge(chosen[TRIAL], on=TRIAL), counts


# --- MLflow ---------------------------------------------------------------------------------------------------------

def read_mlflow(experiment: str, tracking_uri: str):
    """Rows of the newest sweep run of `experiment`, rebuilt in the CSV schema; returns (table, parent run id,
    counts of the runs left out).

    A FAILED trial run yields a NaN `avg` row per target (its `targets` param, else every target seen), as the
    sweep writes it to results.csv, so it is counted as failed; its partial scores are left out. A KILLED run (a
    trial the scheduler stopped early) is no data point and left out; the sweep does not write it to results.csv.
    """
    from mlflow.tracking import MlflowClient  # imported here: slow to import, and the CSV path does not need it

    store = tracking_uri[len("sqlite:///"):] if tracking_uri.startswith("sqlite:///") else None
    if store is not None and not Path(store).is_file():  # MLflow would create an empty store there
        raise AnalysisInputError(f"no MLflow store at {store}; check --tracking-uri")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # keep stderr for our one-line errors
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise AnalysisInputError(f"no MLflow experiment named '{experiment}' at {tracking_uri}; "
                                 "check --experiment and --tracking-uri")
    parents = client.search_runs([found.experiment_id], f"tags.`xstilts.role` = '{SWEEP_ROLE}'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise AnalysisInputError(f"experiment '{experiment}' has no run tagged xstilts.role={SWEEP_ROLE}; "
                                 "is it a sweep's experiment?")
    parent_id = parents[0].info.run_id
    children, token = [], None
    while True:  # search_runs returns pages
        page = client.search_runs([found.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                  f"tags.`xstilts.role` = '{TRIAL_ROLE}'", page_token=token)
        children += page
        token = page.token
        if not token:
            break
    status = [run.info.status for run in children]
    left_out = {"failed_runs": status.count("FAILED"), "killed_runs": status.count("KILLED")}
    kept = [run for run in children if run.info.status != "KILLED"]
    return validate(_rows_from_runs(kept), f"experiment '{experiment}'"), parent_id, left_out


def _rows_from_runs(runs) -> pd.DataFrame:
    metrics = [_by_pair(run.data.metrics, TEST_PREFIX) if run.info.status != "FAILED" else {} for run in runs]
    seen_targets = sorted({target for scores in metrics for target, _ in scores})
    rows = []
    for run, scores in zip(runs, metrics):
        fields = {**run.data.tags, **run.data.params}
        trial = {name: fields.get(name, "") for name in ("stage", "source", "quality", "size", "seed",
                                                         "lr_intermediate", "lr_target")}
        trial["trial_id"] = fields.get("trial_id", run.info.run_id)
        trial["intermediate_task"] = fields.get("intermediate_task", _task_of_cell(fields.get("cell", "")))
        trial["objective"] = run.data.metrics.get(OBJECTIVE, np.nan)
        counts = _by_pair(run.data.metrics, COUNT_PREFIX)
        if not scores:  # a failed trial: one NaN `avg` row per target, as the sweep writes it to results.csv
            targets = fields["targets"].split(",") if fields.get("targets") else seen_targets
            scores = {(target, AVG): np.nan for target in targets}
        for (target, language), score in scores.items():
            rows.append({**trial, "target_task": target, "language": language, "score": score,
                         "metric": fields.get(f"metric.{target}", "score"),
                         "n_examples": counts.get((target, language), np.nan)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _by_pair(metrics: dict, prefix: str) -> dict:
    """'<prefix>.<target>.<language>' metrics -> {(target, language): value}."""
    pairs = {key: parse_metric_key(key, prefix) for key in metrics}
    return {pair: metrics[key] for key, pair in pairs.items() if pair}


def _task_of_cell(cell_id: str) -> str:
    """The intermediate task named in a cell id 'source:task:quality:size' ('' for the baseline 'none')."""
    parts = cell_id.split(":")
    return parts[1] if len(parts) == 4 else ""


def log_artifacts(tracking_uri: str, run_id: str, paths) -> None:
    """Attach the analysis outputs to the sweep's parent run, under `analysis/`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path="analysis")
