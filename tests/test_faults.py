"""Two faults in the middle of a real smoke sweep (slow: real Ray trials, a real MLflow server, a real tmpfs).

1. The MLflow tracking server dies after the first finished trial and comes back some seconds later: the sweep goes
   on, its MLflow writes wait in STORAGE/EXPERIMENT/mlflow_pending.jsonl and are replayed; at the end every trial's
   run is in MLflow once, with its params, scores equal to results.csv's and its artifacts.
2. The storage path fills up (a ballast file takes every byte of a tmpfs): the sweep ends with one line naming the
   full disk and the resume command, its state intact; once the ballast is gone, `--resume` finishes it.
"""
import csv
import json
import os
import re
import shlex
import subprocess
import time
from collections import Counter

import pytest
from mlflow.tracking import MlflowClient
from test_sweep import (SWEEP, check_one_record, finished_trials, reap_ray,  # noqa: F401 - reap_ray: a fixture
                        rows, scored, sweep)
from test_tracking_faults import MlflowServer, fill, mounted_tmpfs

ENV = {**os.environ, "RAY_DEDUP_LOGS": "0"}


def wait_for(condition, driver, what: str, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while not condition() and driver.poll() is None and time.time() < deadline:
        time.sleep(1)
    assert condition(), f"{what}: not seen (driver exit status {driver.poll()})"


def reported_losses(experiment_dir, stage: str, trial_id: str) -> list:
    """(global_step, loss) of every result the trial reported (Tune's result.json), and of its final result again
    (SweepTracker.finish logs the final metrics)."""
    (folder,) = (experiment_dir / "tune" / stage).glob(f"* {trial_id}_*")
    results = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
    losses = [(result["global_step"], result["loss"]) for result in results if "loss" in result]
    return sorted(losses + losses[-1:])


def tails(out, err) -> str:
    return f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-5000:]}"


@pytest.mark.slow
@pytest.mark.usefixtures("reap_ray")
def test_the_tracking_server_dies_mid_sweep_and_comes_back(tmp_path):
    (tmp_path / "server").mkdir()
    server = MlflowServer(tmp_path / "server")
    server.start()
    storage, experiment = tmp_path / "store", "smoke-mlflow-outage"
    experiment_dir = storage / experiment
    journal = experiment_dir / "mlflow_pending.jsonl"
    args = ["--preset", "smoke", "--english-sizes", "0,32", "--tracking-uri", server.uri, "--storage-path",
            str(storage), "--experiment", experiment]
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        driver = subprocess.Popen(SWEEP + args, stdout=out, stderr=err, text=True, env=ENV, start_new_session=True)
    try:
        wait_for(lambda: finished_trials(experiment_dir), driver, "a finished trial")
        first = finished_trials(experiment_dir)
        server.stop()
        # a trial finishes while the server is down (its run's close, scores and artifacts wait in the journal)
        wait_for(lambda: finished_trials(experiment_dir) - first, driver, "a trial finished in the outage")
        assert journal.exists() and driver.poll() is None
        time.sleep(5)
        server.start()
        driver.wait(timeout=900)
    finally:
        if driver.poll() is None:
            driver.kill()
        if server.process.poll() is None:
            server.stop()
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert driver.returncode == 0, tails(out, err)
    assert err.count(f"MLflow at {server.uri} unreachable: buffering to {journal}; results.csv goes on") == 1, \
        tails(out, err)
    assert f"MLflow at {server.uri} answers again: replayed " in err and not journal.exists()

    server.start()   # to look at what it holds
    try:
        client = MlflowClient(server.uri)
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id])
        parents = [run for run in runs if run.data.tags.get("xstilts.role") == "sweep"]
        children = [run for run in runs if run.data.tags.get("xstilts.role") == "trial"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        keys = Counter(run.data.tags["xstilts.trial_key"] for run in children)
        assert keys and max(keys.values()) == 1, keys   # no duplicate run
        table = rows(experiment_dir)
        in_csv = {(r["stage"], r["trial_id"]) for r in table}
        by_trial = {(run.data.tags["xstilts.stage"], run.data.params["trial_id"]): run for run in children}
        assert in_csv == {trial for trial, run in by_trial.items() if run.info.status != "KILLED"}
        for trial, run in by_trial.items():
            if run.info.status == "KILLED":   # stopped early by ASHA: no rows
                continue
            assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert {"source", "quality", "size", "seed", "lr_intermediate", "lr_target"} <= set(run.data.params)
            mine = {(r["target_task"], r["language"]): float(r["score"]) for r in table
                    if (r["stage"], r["trial_id"]) == trial}
            assert mine == {tuple(key.split(".")[1:]): value for key, value in run.data.metrics.items()
                            if key.startswith("score.") and "/" not in key}, trial
            # every loss point once: one per result the trial reported, and the final one (no replay twice)
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))
            assert logged == reported_losses(experiment_dir, *trial), trial
            assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.json",
                                                                                "final_evaluation.json"}
        report = {a.path for a in client.list_artifacts(parents[0].info.run_id, "analysis")}
        assert {"analysis/report.md", "analysis/summary.json"} <= report
    finally:
        server.stop()


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 GiB tmpfs (a smoke sweep with English sizes 0,32 peaks at ~450 MB: its two English trials start first,
    side by side, each with a phase-2 cache and a ~185 MB checkpoint)."""
    yield from mounted_tmpfs(tmp_path, "1g")


@pytest.mark.slow
@pytest.mark.usefixtures("reap_ray")
def test_a_full_storage_path_stops_the_sweep_and_resume_finishes_it(tmpfs, tmp_path):
    experiment = "smoke-full-disk"
    experiment_dir = tmpfs / experiment
    args = ["--preset", "smoke", "--english-sizes", "0,32", "--storage-path", str(tmpfs), "--experiment", experiment]
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        driver = subprocess.Popen(SWEEP + args, stdout=out, stderr=err, text=True, env=ENV, start_new_session=True)
    try:
        wait_for(lambda: finished_trials(experiment_dir), driver, "a finished trial")
        assert (experiment_dir / ".disk_reserve").exists()
        ballast = fill(tmpfs)                    # every byte: the next writes fail
        driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert driver.returncode == 1, tails(out, err)
    last = err.strip().splitlines()[-1]
    full = re.fullmatch(rf"error: the disk of the storage path {re.escape(str(experiment_dir))} is full \(([\d.]+) "
                        r"MiB free\): the sweep stopped; .* continue with: python \S+ (.*) --resume", last)
    assert full and float(full.group(1)) < 16 and full.group(2) == shlex.join(args), tails(out, err)
    assert "Traceback" not in err, tails(out, err)

    # the sweep's state is intact: results.csv whole rows only, sweep_state.json and Tune's state readable
    with open(experiment_dir / "results.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert len(table) > 1 and {len(row) for row in table} == {len(table[0])}
    assert json.loads((experiment_dir / "sweep_state.json").read_text())["stage"] in ("search", "replicate")
    for state in (experiment_dir / "tune").glob("*/experiment_state-*.json"):
        json.loads(state.read_text())

    ballast.unlink()
    resumed = sweep(*args, "--resume", env=ENV)
    assert resumed.returncode == 0, tails(resumed.stdout, resumed.stderr)
    table = rows(experiment_dir)
    cells = {(r["source"], r["quality"], r["size"]) for r in table if scored(r)}
    assert cells == {("none", "none", "0"), ("english", "random", "32"), ("english", "hard", "32"),
                     ("multilingual", "random", "32")}
    assert all(scored(r) for r in table)
    assert not (experiment_dir / "mlflow_pending.jsonl").exists()
    client, parent, children = check_one_record(experiment_dir, experiment)   # MLflow agrees with results.csv
    assert parent.info.status == "FINISHED" and {run.info.status for run in children} <= {"FINISHED", "KILLED"}
