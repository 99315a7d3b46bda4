"""Read the sweep's results (CSV or MLflow) into the results-contract table, and pick one trial per (cell, seed).

The contract (DESIGN.md): one row per (trial, target task, language) with the columns in `COLUMNS`; `score` in
points, NaN for a failed trial; `language` may be `avg`, the mean over that target's languages.

Trial selection (`select_trials`): the search stage may run several learning rates per (cell, seed). Picking the
best of them by its own score biases that cell upwards, and more so in cells the searcher visited more often, which
bends the curve. So for each (target, cell, seed) we take the replicate-stage trial when there is one (it reruns
hyperparameters chosen in the search, so it was not selected on its own score), and otherwise the search trial with
the best `avg` score on that target.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ("trial_id", "stage", "source", "quality", "size", "seed", "lr_intermediate", "lr_target",
           "target_task", "language", "metric", "score")
SOURCES = ("none", "english", "multilingual")
AVG = "avg"
SWEEP_ROLE, TRIAL_ROLE = "sweep", "trial"
TRIAL = ["stage", "trial_id"]  # what identifies a trial: the sweep's trial ids are unique within a stage


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
    """Check the columns and types of the contract; return a copy with numeric size, seed, learning rates and score."""
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise AnalysisInputError(f"{where} lacks the columns {', '.join(missing)}; "
                                 f"a results table needs {', '.join(COLUMNS)} (see DESIGN.md)")
    table = table.loc[:, list(COLUMNS)].copy()
    for column in ("trial_id", "stage", "source", "quality", "target_task", "language", "metric"):
        table[column] = table[column].astype(str).str.strip()
    for column in ("score", "lr_intermediate", "lr_target"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    for column in ("size", "seed"):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any() or (values != values.round()).any():
            raise AnalysisInputError(f"{where}: column '{column}' must hold integers; fix the rows that do not")
        table[column] = values.astype(int)
    unknown = sorted(set(table["source"]) - set(SOURCES))
    if unknown:
        raise AnalysisInputError(f"{where}: unknown source(s) {unknown}; sources are {', '.join(SOURCES)}")
    if not (table["source"] == "english").any():
        raise AnalysisInputError(f"{where} has no english rows, so there is no curve to fit; "
                                 "run the sweep's english cells first")
    return table


def prepare(table: pd.DataFrame):
    """Drop NaN scores (counted), add missing `avg` rows, pick one trial per (target, cell, seed).

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
    rows = with_avg(table[~failed])
    rows, counts["trials_not_selected"] = select_trials(rows)
    return rows, counts


def with_avg(table: pd.DataFrame) -> pd.DataFrame:
    """Add an `avg` row (mean over the languages that have a score) for every (trial, target) that lacks one."""
    trial_columns = [c for c in COLUMNS if c not in ("language", "score")]
    has_avg = table.loc[table["language"] == AVG, TRIAL + ["target_task"]].drop_duplicates()
    languages = table[table["language"] != AVG]
    means = languages.groupby(trial_columns, dropna=False, as_index=False)["score"].mean()
    means = means.merge(has_avg, how="left", on=TRIAL + ["target_task"], indicator=True)
    means = means[means["_merge"] == "left_only"].drop(columns="_merge").assign(language=AVG)
    return pd.concat([table, means[list(COLUMNS)]], ignore_index=True)


def select_trials(table: pd.DataFrame):
    """One trial per (target, source, quality, size, seed): replicate stage first, then the best `avg` score."""
    cell_seed = ["target_task", "source", "quality", "size", "seed"]
    averages = table.loc[table["language"] == AVG, cell_seed + TRIAL + ["score"]]
    averages = averages.assign(replicate=averages["stage"] == "replicate")
    ranked = averages.sort_values(["replicate", "score"], kind="stable")
    chosen = ranked.groupby(cell_seed).tail(1)[TRIAL + ["target_task"]]
    before = table[TRIAL + ["target_task"]].drop_duplicates()
    return table.merge(chosen, on=TRIAL + ["target_task"]), int(len(before) - len(chosen))


# --- MLflow ---------------------------------------------------------------------------------------------------------

def read_mlflow(experiment: str, tracking_uri: str):
    """Rows of the newest sweep run of `experiment`, rebuilt in the CSV schema; returns (table, parent run id).

    A trial run that logged no score (it failed) yields a NaN `avg` row per target (its `targets` param, else every
    target seen), as the sweep writes it to results.csv, so it is counted as failed.
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
    return validate(_rows_from_runs(children), f"experiment '{experiment}'"), parent_id


def _rows_from_runs(runs) -> pd.DataFrame:
    scores_by_run = [{_score_pair(key): value for key, value in run.data.metrics.items() if _score_pair(key)}
                     for run in runs]
    seen_targets = sorted({target for scores in scores_by_run for target, _ in scores})
    rows = []
    for run, scores in zip(runs, scores_by_run):
        fields = {**run.data.tags, **run.data.params}
        trial = {name: fields.get(name, "") for name in COLUMNS[1:8]}
        trial["trial_id"] = fields.get("trial_id", run.info.run_id)
        if not scores:  # a failed trial: one NaN `avg` row per target, as the sweep writes it to results.csv
            targets = fields["targets"].split(",") if fields.get("targets") else seen_targets
            scores = {(target, AVG): np.nan for target in targets}
        for (target, language), score in scores.items():
            rows.append({**trial, "target_task": target, "language": language,
                         "metric": fields.get(f"metric.{target}", "score"), "score": score})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _score_pair(metric_key: str):
    """'score.<target_task>.<language>' -> (target_task, language); None for any other metric."""
    if not metric_key.startswith("score.") or metric_key.count(".") < 2:
        return None
    target, language = metric_key[len("score."):].rsplit(".", 1)
    return None if "/" in language else (target, language)


def log_artifacts(tracking_uri: str, run_id: str, paths) -> None:
    """Attach the analysis outputs to the sweep's parent run, under `analysis/`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path="analysis")
