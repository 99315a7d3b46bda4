"""The sweep command: input errors (fast), and the smoke preset end to end, killed and resumed (slow: real Ray)."""
import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SWEEP = [sys.executable, str(REPO / "sweeps" / "scale_vs_quality.py")]


def sweep(*args, **kwargs):
    return subprocess.run(SWEEP + list(args), capture_output=True, text=True, timeout=900, **kwargs)


def one_line_error(done, *fragments):
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args, fragments", [
    (["--preset", "huge"], ["unknown preset", "smoke, laptop, paper"]),
    (["--preset", "smoke", "--english-sizes", "0,32,1000000"], ["above its pool of 148896"]),
    (["--preset", "smoke", "--address", "not an address"], ["bad --address"]),
    (["--preset", "smoke", "--tracking-uri", "http://127.0.0.1:9"], ["cannot reach the MLflow tracking server"]),
    (["--preset", "smoke", "--num-samples", "2"], ["cannot cover the 6 data cells"]),
    (["--preset", "smoke", "--resume"], ["nothing to resume"]),
])
def test_bad_input_is_one_line_and_exit_2_before_training(tmp_path, args, fragments):
    one_line_error(sweep(*args, "--storage-path", str(tmp_path)), *fragments)
    assert not list(tmp_path.rglob("results.csv")) and not list(tmp_path.rglob("train_runs"))


def test_unwritable_storage_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    one_line_error(sweep("--preset", "smoke", "--storage-path", str(blocker / "below")), "cannot write")


def test_unreachable_cluster(tmp_path):
    one_line_error(sweep("--preset", "smoke", "--address", "127.0.0.1:9", "--storage-path", str(tmp_path)),
                   "cannot connect to a Ray cluster")


def test_dry_run_prints_the_plan(tmp_path):
    done = sweep("--preset", "laptop", "--dry-run", "--storage-path", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "12 data cells" in done.stdout and "estimated cost" in done.stdout
    assert not any(tmp_path.iterdir())


def rows(experiment_dir):
    with open(experiment_dir / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def finished_trials(experiment_dir):
    return {row["trial_id"] for row in rows(experiment_dir)} if (experiment_dir / "results.csv").exists() else set()


def check_complete_sweep(experiment_dir, experiment):
    import mlflow

    table = rows(experiment_dir)
    # one row per (trial, target, language), no duplicates, every cell covered with real scores
    keys = Counter((r["stage"], r["trial_id"], r["target_task"], r["language"]) for r in table)
    assert max(keys.values()) == 1
    cells = {(r["source"], r["quality"], r["size"]) for r in table if r["score"] not in ("", "nan")}
    assert cells == {("none", "none", "0"), ("english", "random", "32"), ("english", "random", "96"),
                     ("english", "hard", "32"), ("english", "hard", "96"), ("multilingual", "random", "32")}
    assert {r["language"] for r in table if r["target_task"] == "genre"} == {"en", "fr", "de", "avg"}
    assert {r["language"] for r in table if r["target_task"] == "retrieval"} == {"fr", "de", "avg"}
    assert all(0 <= float(r["score"]) <= 100 for r in table)
    trials = {r["trial_id"] for r in table}

    client = mlflow.tracking.MlflowClient(f"sqlite:///{experiment_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], "tags.`xstilts.role` = 'sweep'")
    children = client.search_runs([exp.experiment_id], "tags.`xstilts.role` = 'trial'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert Counter(run.data.tags["xstilts.trial_key"] for run in children).most_common(1)[0][1] == 1
    assert {run.data.params["trial_id"] for run in children} >= trials
    finished = [run for run in children if run.data.params["trial_id"] in trials]
    for run in finished:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["xstilts.preset"] == "smoke" and run.data.tags["xstilts.stage"] == "search"
        assert {"source", "quality", "size", "seed", "lr_intermediate", "lr_target"} <= set(run.data.params)
        assert "score.genre.avg" in run.data.metrics and "score.retrieval.fr" in run.data.metrics
        assert len(client.get_metric_history(run.info.run_id, "loss")) >= 1
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.json", "final_evaluation.json"} <= artifacts
    assert (experiment_dir / "analysis" / "report.md").exists()
    assert (experiment_dir / "optuna.db").exists()


@pytest.mark.slow
def test_smoke_sweep_killed_and_resumed(tmp_path):
    """Kill the driver mid-sweep; --resume finishes it without rerunning finished trials or duplicating data."""
    storage, experiment = tmp_path / "store", "smoke-resume"
    experiment_dir = storage / experiment
    args = ["--preset", "smoke", "--storage-path", str(storage), "--experiment", experiment]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    driver = subprocess.Popen(SWEEP + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True)
    deadline = time.time() + 600
    while len(finished_trials(experiment_dir)) < 2 and time.time() < deadline and driver.poll() is None:
        time.sleep(1)
    before = finished_trials(experiment_dir)
    # Tune saves its experiment state every second (TUNE_GLOBAL_CHECKPOINT_S=1): a trial that finished in the
    # very last second before a crash is restarted and only re-reports from its final checkpoint.
    time.sleep(5)
    assert len(before) >= 2 and driver.poll() is None, "the sweep should still be running"
    os.killpg(driver.pid, signal.SIGKILL)        # the driver and the local Ray it started (same process group)
    driver.wait()

    resumed = sweep(*args, "--resume", env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for trial_id in before:   # finished before the kill: not run (nor finished) again
        assert f"trial {trial_id} finished" not in resumed.stderr
    check_complete_sweep(experiment_dir, experiment)

    import optuna
    study = optuna.load_study(study_name=f"{experiment}-search", storage=f"sqlite:///{experiment_dir / 'optuna.db'}")
    assert len(optuna.get_all_study_names(f"sqlite:///{experiment_dir / 'optuna.db'}")) == 1
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) >= 7
