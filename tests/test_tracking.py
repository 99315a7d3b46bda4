"""sweeps/results_table.py, sweeps/tracking.py and sweeps/tracking_callback.py on a real MLflow SQLite store and
real Tune Trial objects (fast)."""
import csv
import json
import math
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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
class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (SQLite store and artifacts in `folder`), stopped by its process id (the
    group it leads: uvicorn runs in a child) and started again on the same port and store."""

    def __init__(self, folder):
        self.folder, self.port = folder, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, timeout: float = 300) -> float:
        """Start it and wait for /health; returns the seconds that took."""
        began = time.time()
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                   f"sqlite:///{self.folder / 'mlflow.db'}", "--artifacts-destination", str(self.folder / "artifacts"),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        with open(self.folder / "server.log", "a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        while time.time() - began < timeout:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return time.time() - began
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server not up after {timeout} s")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)   # as a crash would: no goodbye
        self.process.wait()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{self.uri}/health", timeout=2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    made = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    made.start()
    yield made
    if made.process.poll() is None:
        made.stop()


def journal_ops(path):
    return [record["op"] for record in map(json.loads, path.read_text().splitlines()) if "op" in record]


def test_the_sweep_uses_short_mlflow_retries():
    """MLflow's default (7 retries, ~4 min per call to a server that is down) is cut to ~2.5 s per call."""
    from sweeps.mlflow_journal import RETRY_SETTINGS
    for name, value in RETRY_SETTINGS.items():
        assert os.environ[name] == value, name
    assert {name: int(float(value)) for name, value in RETRY_SETTINGS.items()} == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 2, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 1,
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": 0, "MLFLOW_HTTP_REQUEST_TIMEOUT": 10}


def test_an_mlflow_outage_loses_nothing(server, tmp_path, capfd, monkeypatch):
    """The tracking server dies mid-sweep: trials go on, results.csv gets every row, every MLflow write waits in
    the journal (a run created in the outage, its metrics, artifacts, the parent's close) and is replayed in order
    at the first write after the server is back. A journal replayed twice (a crash before its `done` lines) adds no
    run, metric point or artifact; the next start of the sweep replays what is pending."""
    from sweeps import tracking

    results, journal = tmp_path / "results.csv", tmp_path / "mlflow_pending.jsonl"
    sweep = SweepTracker(server.uri, "outage", "smoke")   # as run_sweep makes it: it knows no folder
    sweep.start("the plan", ["genre", "retrieval"])
    made = callback(server.uri, "outage", results)        # a stage's callback: the journal goes beside results.csv
    before = trial("b1", CONFIG, "1_c")
    made.on_trial_result(0, [], before, {"loss": 1.0, "global_step": 2})
    before.update_last_result(METRICS)
    made.on_trial_complete(0, [], before)
    assert not journal.exists()

    server.stop()
    began = time.time()
    during = trial("d1", {**CONFIG, "cell": "none"}, "2_c")   # its run is created in the outage
    made.on_trial_result(0, [], during, {"loss": 1.0, "global_step": 2, "objective": math.nan})
    made.on_trial_result(0, [], during, {"loss": 0.7, "global_step": 4})
    during.update_last_result({**METRICS, "global_step": 6})
    made.on_trial_complete(0, [], during)
    failing = trial("d2", CONFIG, "3_c")
    made.on_trial_result(0, [], failing, {"loss": 2.0, "global_step": 2})
    made.on_trial_error(0, [], failing)
    # the end of the sweep, still in the outage: nothing raises, the outcome comes from results.csv
    assert sweep.mark_orphans() == 0
    outcome = sweep.outcome()
    assert outcome["counts"] == {"FINISHED": 2, "FAILED": 1, "KILLED": 0, "RUNNING": 0}
    assert [f["trial"] for f in outcome["failures"]] == ["search:d2"]
    assert outcome["languages"] == {"genre": {"en", "fr", "avg"}, "retrieval": {"fr", "avg"}}
    sweep.close("FAILED", "the outcome")
    took = time.time() - began
    assert took < 60, f"the outage cost the sweep {took:.0f} s"   # MLflow's default retries: minutes per call

    err = capfd.readouterr().err
    assert err.count(f"MLflow at {server.uri} unreachable: buffering to {journal}; results.csv goes on") == 1
    assert f"still unreachable: {len(journal_ops(journal))} write(s) wait in {journal}" in err
    assert "--resume" in err
    assert {row["trial_id"] for row in read(results)[1]} == {"b1", "d1", "d2"}
    ops = journal_ops(journal)
    assert ops[0] == "create_run" and ops.count("create_run") == 2 and ops.count("log_dict") == 4
    assert ops[-2:] == ["set_tag", "set_terminated"]   # the parent's close, last
    pending = journal.read_text()
    assert '"final_evaluation.json"' in pending and '"score.genre.fr": 40.0' in pending   # the artifact itself

    server.start()
    late = trial("a1", CONFIG, "4_c")   # the first write after the server is back replays the journal first
    made.on_trial_result(0, [], late, {"loss": 1.0, "global_step": 2})
    assert not journal.exists()
    assert f"MLflow at {server.uri} answers again: replayed {len(ops)} buffered write(s)" in capfd.readouterr().err

    def check():
        client = MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("outage")
        runs = client.search_runs([experiment.experiment_id])
        keys = [run.data.tags.get("xstilts.trial_key", "parent") for run in runs]
        assert sorted(keys) == ["parent", "search:a1", "search:b1", "search:d1", "search:d2"]
        by_trial = {run.data.tags.get("xstilts.trial_key"): run for run in runs}
        d1 = by_trial["search:d1"]
        assert d1.info.status == "FINISHED" and d1.data.tags["mlflow.parentRunId"] == sweep.parent_id
        assert d1.info.run_name == "baseline s1 search #2" and "finished: objective 47.5" in d1.data.tags[NOTE]
        assert {k: d1.data.params[k] for k in ("source", "size", "seed", "trial_id")} == {
            "source": "none", "size": "0", "seed": "1", "trial_id": "d1"}
        csv_scores = {(r["target_task"], r["language"]): float(r["score"]) for r in read(results)[1]
                      if r["trial_id"] == "d1"}
        assert csv_scores == {tuple(k.split(".")[1:]): v for k, v in d1.data.metrics.items()
                              if k.startswith("score.") and "/" not in k}
        assert [(m.step, m.value) for m in client.get_metric_history(d1.info.run_id, "loss")] == [
            (2, 1.0), (4, 0.7), (6, 0.5)]
        assert {a.path for a in client.list_artifacts(d1.info.run_id)} == {"config.json", "final_evaluation.json"}
        assert client.download_artifacts(d1.info.run_id, "final_evaluation.json", str(tmp_path / "got")) and \
            json.loads((tmp_path / "got" / "final_evaluation.json").read_text())["score.genre.fr"] == 40.0
        d2 = by_trial["search:d2"]
        assert d2.info.status == "FAILED" and d2.data.tags[ERROR_TAG] == "unknown error"
        parent = client.get_run(sweep.parent_id)
        assert parent.info.status == "FAILED" and parent.data.tags[NOTE] == "the plan\n\n## Outcome\n\nthe outcome"
        assert by_trial["search:a1"].info.status == "RUNNING"

    check()
    # A crash after the server took every write and before the `done` lines: the next start of the sweep (a new
    # process: no shared client) replays the whole journal again, and nothing is duplicated.
    journal.write_text(pending)
    monkeypatch.setattr(tracking, "_SWEEP_CLIENTS", {})
    monkeypatch.setattr(tracking, "_SWEEP_IDS", {})
    again = callback(server.uri, "outage", results)
    assert again.tracker.parent_id == sweep.parent_id and not journal.exists()
    assert f"replayed {len(ops)} buffered write(s) from {journal}" in capfd.readouterr().err
    check()


def test_a_cut_journal_line_or_a_refused_write_does_not_hold_up_the_rest(server, tmp_path, capfd):
    """A line a crash cut short is skipped (and the next write starts a line of its own); a buffered write the
    server refuses (4xx) is reported and skipped on replay. Outside a replay, a refused write raises, unbuffered."""
    from mlflow.exceptions import RestException

    from sweeps.mlflow_journal import BufferedClient

    store = MlflowClient(server.uri)
    run_id = store.create_run(store.create_experiment("cut-journal")).info.run_id
    journal = tmp_path / "mlflow_pending.jsonl"
    journal.write_text(json.dumps({"n": 1, "op": "set_tag", "args": [run_id, "first", "1"]}) + "\n"
                       + json.dumps({"n": 2, "op": "set_tag", "args": ["no-such-run", "x", "1"]}) + "\n"
                       + '{"n": 3, "op": "set_tag", "args": ["' + run_id)   # the crash
    down = BufferedClient(f"http://127.0.0.1:{free_port()}", journal)   # nothing listens there
    down.set_tag(run_id, "after", "2")
    assert [record["n"] for record in down.pending()] == [1, 2, 3]
    assert journal.read_text().splitlines()[3] == json.dumps({"n": 3, "op": "set_tag",
                                                              "args": [run_id, "after", "2"]})

    up = BufferedClient(server.uri, journal)
    assert up.flush() and not journal.exists()
    err = capfd.readouterr().err
    assert "refused a buffered write (set_tag, journal line 2)" in err and "replayed 3 buffered write(s)" in err
    tags = store.get_run(run_id).data.tags
    assert (tags["first"], tags["after"]) == ("1", "2")
    with pytest.raises(RestException):
        up.set_tag("no-such-run", "x", "1")       # not buffered: a write the server refuses is an error
    assert not journal.exists()


# ------------------------------------------------------------------------------------ a full storage path
@pytest.fixture
def small_disk(tmp_path):
    """A 40 MiB tmpfs (we are root in CI; elsewhere the test is skipped with the reason), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(folder):
    """A ballast file that takes every byte left, in one allocation (as a big file landing at once: a writer that
    went on writing would also take the room the sweep frees when it stops)."""
    ballast = folder / "ballast"
    with open(ballast, "wb") as handle:
        while True:
            try:
                os.posix_fallocate(handle.fileno(), handle.seek(0, os.SEEK_END), shutil.disk_usage(folder).free)
                return ballast
            except OSError as error:   # the sweep wrote in between: take what is left now
                assert error.errno == 28


def test_a_full_disk_stops_the_sweep_with_one_line_and_loses_no_row(store, small_disk, monkeypatch):
    """The callback keeps a 16 MiB reserve on the storage path. The disk fills: a trial's results.csv write fails,
    the reserve is given up, the write done again, Tune asked to stop (its SIGUSR1 handler), and the stage's end
    raises SystemExit with one line naming the full disk and the resume command. Before the disk is full the check
    before each step lets the sweep go on; with less room than the reserve, it stops it."""
    from sweeps.disk_guard import RESERVE_BYTES

    stops = []
    monkeypatch.setattr(signal, "getsignal", lambda number: stops.append if number == signal.SIGUSR1 else None)
    monkeypatch.setattr(signal, "raise_signal", lambda number: stops.append(number))   # Tune's handler, standing in
    results = small_disk / "results.csv"
    made = callback(store, "full-disk", results)
    reserve = small_disk / ".disk_reserve"
    assert reserve.stat().st_blocks * 512 >= RESERVE_BYTES
    made.on_step_begin(0, [])
    first = trial("f1", CONFIG, "1_c")
    first.update_last_result(METRICS)
    made.on_trial_complete(0, [], first)
    assert stops == []

    ballast = fill(small_disk)
    assert shutil.disk_usage(small_disk).free < 4096
    second = trial("f2", {**CONFIG, "cell": "none"}, "2_c")
    second.update_last_result(METRICS)
    made.on_trial_complete(0, [], second)           # its rows need room: the reserve is given up for them
    assert stops == [signal.SIGUSR1] and not reserve.exists()
    header, rows = read(results)
    assert header == list(COLUMNS) and [r["trial_id"] for r in rows] == ["f1"] * 5 + ["f2"] * 5
    assert all(r["score"] not in ("", "nan") for r in rows)
    run = MlflowClient(store).search_runs([made.tracker.experiment_id], "tags.`xstilts.trial_key` = 'search:f2'")[0]
    assert run.info.status == "FINISHED"
    with pytest.raises(SystemExit) as stopped:
        made.on_experiment_end([])
    message = str(stopped.value)
    assert message.startswith(f"error: the disk of the storage path {small_disk} is full (") and "\n" not in message
    assert message.endswith("--resume") and "finished trials, results.csv and the sweep's state are kept" in message

    # the next start of a stage, the disk still full: the reserve cannot be made, the first check stops it
    ballast.unlink()
    fill(small_disk)
    stops.clear()
    again = callback(store, "full-disk", results)
    assert not reserve.exists()
    again.on_step_begin(0, [])
    assert stops == [signal.SIGUSR1]


def test_an_uncaught_full_disk_error_is_one_line(small_disk):
    """What a full disk breaks outside the callback (Optuna's study in the searcher, a state file written before
    Tune's loop) ends the driver with one line, not a traceback; other errors keep theirs."""
    fill(small_disk)
    code = ("import sys; sys.path.insert(0, {repo!r}); import sweeps.disk_guard\n"
            "sweeps.disk_guard.install_excepthook()\n"
            "open({path!r}, 'w').write('x' * 100000)")
    done = subprocess.run([sys.executable, "-c", code.format(repo=str(REPO), path=str(small_disk / "state.json")),
                           "--preset", "smoke", "--storage-path", str(small_disk)],   # the driver's arguments
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith(
        f"error: the disk of the storage path {small_disk} is full (0.0 MiB free)")
    other = subprocess.run([sys.executable, "-c", code.format(repo=str(REPO), path="/nonexistent/x")],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 1 and "Traceback" in other.stderr and "FileNotFoundError" in other.stderr


def test_the_parent_run_gets_the_curves_so_far_after_every_finished_trial(store, tmp_path):
    made = callback(store, "progress-plots", tmp_path / "results.csv")
    finished = trial("p1", CONFIG, "1_c")
    finished.update_last_result(METRICS)
    made.on_trial_complete(0, [], finished)
    artifacts = MlflowClient(store).list_artifacts(made.tracker.parent_id, "progress")
    assert sorted(a.path for a in artifacts) == ["progress/genre.png", "progress/retrieval.png"]
    assert all(a.file_size > 1000 for a in artifacts)
