"""sweeps/results_table.py, sweeps/tracking.py and sweeps/tracking_callback.py on a real MLflow SQLite store and
real Tune Trial objects (fast)."""
import csv
import json
import math
import pickle
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from analysis.schema import BASE_COLUMNS, COLUMNS
from sweeps.results_table import ResultsTable, result_rows
from sweeps.tracking import ERROR_TAG, EXPERIMENT_KIND, MODEL_TRAINING, NOTE, SAVED_VIEW, SweepTracker
from sweeps.tracking_callback import TrackingCallback, first_error_lines

REPO = Path(__file__).resolve().parent.parent
NAMES = {"genre": "accuracy", "retrieval": "top1_accuracy"}
CONFIG = {"cell": "english:en_paraphrase:hard:32", "seed": 1, "lr_intermediate": 3e-4, "lr_target": 2e-4,
          "targets": ["genre", "retrieval"], "model": "smoke"}
METRICS = {"score.genre.en": 60.0, "score.genre.fr": 40.0, "score.genre.avg": 50.0, "n.genre.en": 32,
           "n.genre.fr": 30, "n.genre.avg": 62, "score.retrieval.fr": 90.0, "score.retrieval.avg": 90.0,
           "score.retrieval.fr/en_to_x": 91.0, "val.genre.avg": 45.0, "objective": 47.5, "trial_complete": 1,
           "global_step": 12, "loss": 0.5, "lr": 1e-4}
# Tune's error.txt for a trial whose Ray Train worker died (as a sweep with fail_at_step wrote it), shortened.
WORKER_DIED = """Failure # 1 (occurred at 2026-11-25_00-54-34)
ray::ImplicitFunc.train() (pid=19682, ip=192.0.2.2, actor_id=8439a83d, repr=run_trial)
  File "/work/main/trainables/three_phase.py", line 90, in run_trial
    build_trainer(config, name=f"trial-{trial_id}", callbacks=[TuneReportCallback()]).fit()
  File "ray/train/v2/api/data_parallel_trainer.py", line 195, in fit
    raise result.error
ray.train.WorkerGroupError: Training failed due to worker errors:
[Rank 0 Error Snippet]:
A worker health check failed.
Worker info: Worker(
The actor died unexpectedly before finishing this task.
"""
WORKER_RAISED = """Failure # 1 (occurred at 2026-11-25_01-00-00)
old failure
Failure # 2 (occurred at 2026-11-25_01-10-00)
ray::ImplicitFunc.train() (pid=1, ip=192.0.2.2, repr=run_trial)
ray.train.WorkerGroupError: Training failed due to worker errors:
[Rank 0 Error Snippet]:
Traceback (most recent call last):
  File "trainables/training.py", line 80, in train
    optimizer = torch.optim.AdamW(params, lr=config.lr)
ValueError: Invalid learning rate: -1.0
"""


def read(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_result_rows_carry_task_objective_and_counts():
    rows = result_rows("t1", "search", CONFIG, METRICS, NAMES)
    assert all(set(row) == set(COLUMNS) for row in rows)
    assert [(r["target_task"], r["language"]) for r in rows] == [
        ("genre", "en"), ("genre", "fr"), ("genre", "avg"), ("retrieval", "fr"), ("retrieval", "avg")]
    genre_fr = rows[1]
    assert (genre_fr["intermediate_task"], genre_fr["objective"], genre_fr["n_examples"], genre_fr["score"],
            genre_fr["metric"], genre_fr["quality"], genre_fr["size"]) == (
        "en_paraphrase", 47.5, 30, 40.0, "accuracy", "hard", 32)
    assert math.isnan(rows[3]["n_examples"])   # the trial reported no count for retrieval
    baseline = result_rows("t2", "search", {**CONFIG, "cell": "none"}, {}, NAMES)
    assert [(r["target_task"], r["language"], r["intermediate_task"], r["source"]) for r in baseline] == [
        ("genre", "avg", "", "none"), ("retrieval", "avg", "", "none")]
    assert all(math.isnan(r["score"]) and math.isnan(r["objective"]) for r in baseline)


def test_an_old_12_column_table_is_upgraded_in_place_without_losing_rows(tmp_path):
    path = tmp_path / "results.csv"
    old = [["a1", "search", "none", "none", "0", "0", "1e-4", "2e-4", "genre", "fr", "accuracy", "41.5"],
           ["a2", "search", "english", "hard", "32", "0", "1e-4", "2e-4", "genre", "avg", "accuracy", "nan"],
           ["a3", "search", "english", "random", "32", "0", "1e-4", "2e-4", "genre", "avg", "accuracy", "40"]]
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([list(BASE_COLUMNS)] + old)
    table = ResultsTable(path)
    header, rows = read(path)
    assert header == list(COLUMNS)
    assert [[row[name] for name in BASE_COLUMNS] for row in rows] == old
    assert {(row["intermediate_task"], row["n_examples"], row["objective"]) for row in rows} == {("", "nan", "nan")}
    assert table.trials == {("search", "a1"), ("search", "a2"), ("search", "a3")}
    assert table.finished_cells == {("none", "none", 0), ("english", "random", 32)}
    # the failed trial a2 is rerun: its real rows take its place, the others stay as they were
    table.record(result_rows("a2", "search", CONFIG, METRICS, NAMES))
    header, rows = read(path)
    assert [row["trial_id"] for row in rows] == ["a1"] + ["a2"] * 5 + ["a3"]
    assert [row["score"] for row in rows if row["trial_id"] == "a2"] == ["60.0", "40.0", "50.0", "90.0", "90.0"]
    assert [name for name in (p.name for p in tmp_path.iterdir())] == ["results.csv"]   # no temporary file left


def test_a_rerun_replaces_the_nan_row_and_a_failure_never_replaces_scores(tmp_path):
    table = ResultsTable(tmp_path / "results.csv")
    failed = result_rows("t1", "search", CONFIG, {}, NAMES)
    assert table.record(failed)
    assert table.record(failed)             # the same failure twice: still one row per target
    assert [row["score"] for row in read(table.path)[1]] == ["nan", "nan"]
    assert table.record(result_rows("t1", "search", CONFIG, METRICS, NAMES))
    assert not table.record(failed)         # a later failure of the same trial keeps its scores
    assert table.record(result_rows("t1", "replicate", CONFIG, METRICS, NAMES))   # another stage: other rows
    header, rows = read(table.path)
    keys = [(r["stage"], r["trial_id"], r["target_task"], r["language"]) for r in rows]
    assert len(keys) == len(set(keys)) == 10 and "nan" not in {r["score"] for r in rows}
    assert ResultsTable(table.path).rows == rows   # what a resumed sweep reads back


def test_a_newer_writers_columns_are_kept(tmp_path):
    path = tmp_path / "results.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS) + ["future"])
        writer.writeheader()
        writer.writerow({**result_rows("t0", "search", CONFIG, METRICS, NAMES)[0], "future": "x"})
    ResultsTable(path).record(result_rows("t1", "search", CONFIG, METRICS, NAMES))
    header, rows = read(path)
    assert header == list(COLUMNS) + ["future"] and rows[0]["future"] == "x" and len(rows) == 6


def test_first_error_lines():
    assert first_error_lines(WORKER_DIED) == ("ray.train.WorkerGroupError: Training failed due to worker errors:\n"
                                              "A worker health check failed.")
    assert first_error_lines(WORKER_RAISED).splitlines() == [
        "ray.train.WorkerGroupError: Training failed due to worker errors:", "ValueError: Invalid learning rate: -1.0"]
    assert first_error_lines("") == "unknown error"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def test_experiment_is_model_training_with_a_saved_view(store):
    tracker = SweepTracker(store, "view", "smoke")
    tracker.start("the plan", ["genre", "retrieval"])
    tracker.update_view(["genre"], {"genre": {"fr", "en", "avg"}})
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("view")
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_TRAINING and "score.TARGET.LANGUAGE" in experiment.tags[NOTE]
    view = json.loads(experiment.tags[SAVED_VIEW])
    state = json.loads(view["state"])
    assert view["name"] and isinstance(view["createdAt"], int)
    assert state["selectedColumns"][:4] == ["metrics.`objective`", "metrics.`score.genre.avg`",
                                            "metrics.`score.genre.en`", "metrics.`score.genre.fr`"]
    assert state["orderByKey"] == "metrics.`objective`" and state["orderByAsc"] is False
    parent = client.get_run(tracker.parent_id)
    assert parent.info.status == "RUNNING" and parent.data.tags[NOTE] == "the plan"
    assert SweepTracker(store, "view", "smoke").parent_id == tracker.parent_id   # one parent per sweep
    tracker.close("FAILED", "a failed trial\n" * 1000)   # a summary longer than MLflow's tag limit is cut
    parent = client.get_run(tracker.parent_id)
    assert parent.info.status == "FAILED" and parent.data.tags[NOTE].startswith("the plan\n\n## Outcome")
    assert 7000 < len(parent.data.tags[NOTE]) <= 8000


def trial(trial_id, config, tag):
    return Trial("run_trial", config=config, trial_id=trial_id, experiment_tag=tag, stub=True)


def callback(store, experiment, results, stage="search"):
    made = TrackingCallback(store, experiment, "smoke", results, stage, NAMES, [CONFIG["cell"], "none"])
    made = pickle.loads(pickle.dumps(made))   # as Tune stores it with the experiment and restores it
    made.setup()
    return made


def test_a_failed_trial_rerun_on_resume_leaves_one_record(store, tmp_path, capsys):
    results = tmp_path / "results.csv"
    first = callback(store, "rerun", results)
    failing, finished, stopped = (trial("f1", CONFIG, "1_cell=x"), trial("f2", {**CONFIG, "cell": "none"}, "2_c"),
                                  trial("f3", CONFIG, "3_cell=x"))
    first.on_trial_result(0, [], failing, {"loss": 1.0, "global_step": 2, "objective": math.nan})
    first.on_trial_error(0, [], failing)
    finished.update_last_result(METRICS)
    first.on_trial_complete(0, [], finished)
    stopped.update_last_result({"objective": 30.0, "global_step": 4})
    first.on_trial_complete(0, [], stopped)
    tracker = first.tracker
    outcome = tracker.outcome()
    assert outcome["counts"] == {"FINISHED": 1, "FAILED": 1, "KILLED": 1, "RUNNING": 0}
    assert outcome["failures"] == [{"name": "english:hard:32 s1 search #1", "trial": "search:f1",
                                    "error": "unknown error"}]
    assert "(english:hard:32 s1) FAILED" in capsys.readouterr().err
    assert {row["trial_id"]: row["score"] for row in read(results)[1] if row["target_task"] == "genre"
            and row["language"] == "avg"} == {"f1": "nan", "f2": "50.0"}

    # the driver dies; --resume reruns the failed trial under its own id and it finishes
    second = callback(store, "rerun", results)
    second.on_trial_result(0, [], failing, {"loss": 0.5, "global_step": 3, "objective": math.nan})
    run = MlflowClient(store).get_run(second.runs["f1"])
    assert run.info.status == "RUNNING" and ERROR_TAG not in run.data.tags
    failing.update_last_result(METRICS)
    second.on_trial_complete(0, [], failing)
    runs = {r.data.params["trial_id"]: r for r in second.tracker.trial_runs()}
    assert {k: r.info.status for k, r in runs.items()} == {"f1": "FINISHED", "f2": "FINISHED", "f3": "KILLED"}
    assert runs["f1"].info.run_name == "english:hard:32 s1 search #1" and "finished: objective 47.5" in \
        runs["f1"].data.tags[NOTE]
    header, rows = read(results)
    csv_scores = {(r["target_task"], r["language"]): float(r["score"]) for r in rows if r["trial_id"] == "f1"}
    assert csv_scores == {tuple(k.split(".")[1:]): v for k, v in runs["f1"].data.metrics.items()
                          if k.startswith("score.") and "/" not in k}
    assert runs["f1"].data.metrics["n.genre.fr"] == 30 and {r["trial_id"] for r in rows} == {"f1", "f2"}
    assert second.tracker.outcome()["failures"] == []


def test_runs_left_running_by_a_dead_driver_are_marked_killed(store, tmp_path):
    made = callback(store, "orphans", tmp_path / "results.csv")
    made.on_trial_result(0, [], trial("o1", CONFIG, "1_c"), {"loss": 1.0, "global_step": 2})
    tracker = made.tracker
    assert tracker.mark_orphans() == 1 and tracker.mark_orphans() == 0
    run = tracker.trial_runs()[0]
    assert run.info.status == "KILLED" and "driver died" in run.data.tags[NOTE]


def test_the_outcome_measures_what_asha_stops_saved(store, tmp_path):
    from sweeps.stages import early_stopping_line

    made = callback(store, "asha-savings", tmp_path / "results.csv")
    for trial_id, steps, seconds in (("a", 10, 20.0), ("b", 12, 30.0)):   # finished: median 11 steps, 25 s
        finished = trial(trial_id, CONFIG, f"{trial_id}_c")
        finished.update_last_result({**METRICS, "global_step": steps, "time_total_s": seconds,
                                     "targets_evaluated": 2})
        made.on_trial_complete(0, [], finished)
    stopped = trial("s", CONFIG, "s_c")
    stopped.update_last_result({"objective": 20.0, "global_step": 6, "time_total_s": 15.0, "targets_evaluated": 1})
    made.on_trial_complete(0, [], stopped)
    orphan = trial("o", {**CONFIG, "cell": "none"}, "o_c")
    made.on_trial_result(0, [], orphan, {"loss": 1.0, "global_step": 2})
    made.tracker.mark_orphans()                                          # KILLED, but not by ASHA

    saved = made.tracker.outcome()["early_stopping"]
    assert saved == {"stopped": 1, "measured": 1, "steps_skipped": 5.0, "steps_in_full": 11.0,
                     "seconds_skipped": 10.0, "seconds_in_full": 25.0, "steps_run": 10 + 12 + 6,
                     "after_targets": [1]}
    assert early_stopping_line(saved) == (
        "ASHA stopped 1 trial(s) after 1 target(s): they skipped 5 of the 11 optimizer steps and ~10 of the ~25 s "
        "that finished trials of their cells took (15% of all the steps the sweep would have run)")


# ------------------------------------------------------------------------------------ MLflow server outages
def test_the_parent_run_gets_the_curves_so_far_after_every_finished_trial(store, tmp_path):
    made = callback(store, "progress-plots", tmp_path / "results.csv")
    finished = trial("p1", CONFIG, "1_c")
    finished.update_last_result(METRICS)
    made.on_trial_complete(0, [], finished)
    artifacts = MlflowClient(store).list_artifacts(made.tracker.parent_id, "progress")
    assert sorted(a.path for a in artifacts) == ["progress/genre.png", "progress/retrieval.png"]
    assert all(a.file_size > 1000 for a in artifacts)
