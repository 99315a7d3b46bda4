"""What tracking does under faults, on real servers and disks (fast): an MLflow tracking server that stops and comes
back (sweeps/mlflow_journal.py) and a storage path that fills up (sweeps/disk_guard.py)."""
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient
from test_tracking import CONFIG, METRICS, NAMES, REPO, callback, read, store, trial  # noqa: F401 - store: a fixture

from analysis.schema import COLUMNS
from sweeps.tracking import ERROR_TAG, NOTE, SweepTracker


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
    assert not sweep.client.caught_up()   # so the sweep's analysis reads results.csv (test below)
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
    assert not journal.exists() and sweep.client.caught_up()
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
def mounted_tmpfs(tmp_path, size: str):
    """A tmpfs of `size` (e.g. "40m") at tmp_path/disk, unmounted afterwards: a generator for fixtures. We are root
    in CI; where mounting is not allowed the test is skipped with the reason."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MiB tmpfs."""
    yield from mounted_tmpfs(tmp_path, "40m")


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
    most of the reserve is given up, the write done again, Tune asked to stop (its SIGUSR1 handler), and the stage's
    end writes Tune's state again and raises SystemExit with one line naming the full disk and the resume command.
    Before the disk is full the check before each step lets the sweep go on; with less room than the reserve, it
    stops it."""
    from sweeps.disk_guard import FINAL_BYTES, RESERVE_BYTES

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
    assert stops == [signal.SIGUSR1] and reserve.stat().st_size == FINAL_BYTES   # the rest: for Tune's last state
    header, rows = read(results)
    assert header == list(COLUMNS) and [r["trial_id"] for r in rows] == ["f1"] * 5 + ["f2"] * 5
    assert all(r["score"] not in ("", "nan") for r in rows)
    run = MlflowClient(store).search_runs([made.tracker.experiment_id], "tags.`xstilts.trial_key` = 'search:f2'")[0]
    assert run.info.status == "FINISHED"
    # Tune's last save met the disk that the stopping trials filled again: its state file is cut short. Once the
    # trials have stopped, the rest of the reserve is given up and the file written again from the staging folder.
    staging, tune_folder = small_disk.parent / "staging", small_disk / "tune"
    staging.mkdir()
    tune_folder.mkdir()
    state = json.dumps({"trial_data": [["x" * 1000, "y"]], "runner_data": {}})
    (staging / "experiment_state-1.json").write_text(state)
    (tune_folder / "experiment_state-1.json").write_text(state[:100])
    stopped_trial = SimpleNamespace(storage=SimpleNamespace(experiment_driver_staging_path=str(staging),
                                                            experiment_fs_path=str(tune_folder)))
    with pytest.raises(SystemExit) as stopped:
        made.on_experiment_end([stopped_trial])
    assert not reserve.exists() and (tune_folder / "experiment_state-1.json").read_text() == state
    assert sorted(path.name for path in tune_folder.iterdir()) == ["experiment_state-1.json"]
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


def test_progress_plots_that_meet_a_full_disk_are_skipped_and_stop_the_sweep(store, small_disk, monkeypatch):
    """The curves redrawn after a finished trial go to MLflow's artifacts beside the results: when the disk fills
    just then, they are skipped (a view, not a record) and the sweep stops, without an error from the callback."""
    stops = []
    monkeypatch.setattr(signal, "getsignal", lambda number: stops.append if number == signal.SIGUSR1 else None)
    monkeypatch.setattr(signal, "raise_signal", lambda number: stops.append(number))   # Tune's handler, standing in
    made = callback(store, "full-disk-plots", small_disk / "results.csv")
    finished = trial("p1", CONFIG, "1_c")
    finished.update_last_result(METRICS)
    made.on_trial_complete(0, [], finished)
    client = MlflowClient(store)
    assert [a.path for a in client.list_artifacts(made.tracker.parent_id, "progress")]   # drawn while there is room
    assert stops == []

    fill(small_disk)
    made._log_progress_plots()
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


def test_the_analysis_reads_results_csv_while_mlflow_is_away(tmp_path, monkeypatch):
    """A sweep that ends while its tracking server is away analyses results.csv (every row is there) instead of
    failing on MLflow (exit 3); read from MLflow, the same analysis fails while the server is away."""
    from test_analysis_cli import smoke_table

    from sweeps.scale_vs_quality import run_analysis

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    experiment_dir = tmp_path / "away"
    experiment_dir.mkdir()
    smoke_table(experiment_dir / "results.csv")
    away = f"http://127.0.0.1:{free_port()}"
    code, command = run_analysis(experiment_dir, "away", away, mlflow_behind=True)
    assert code == 0 and "--results" in command
    assert "english" in (experiment_dir / "analysis" / "report.md").read_text()
    code, command = run_analysis(experiment_dir, "away", away)
    assert code != 0 and "--tracking-uri" in command
