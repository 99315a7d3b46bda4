"""The sweep command: input errors (fast), and the smoke preset end to end, killed and resumed (slow: real Ray)."""
import csv
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
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
    (["--preset", "huge"], ["unknown preset", "smoke, smoke-formats, laptop, paper"]),
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
    # the laptop preset trains each size alone: English 2 x 15,000 and multilingual 1,750
    assert "phase 2: 31,750 example-passes per epoch per seed (ladder separate)" in done.stdout
    # shared, English 2 x (8,000 + 0.2 x 7,000) and multilingual 1,000 + 58 + 116 (branch steps of batches of 32)
    from search_spaces.presets import PRESETS
    from sweeps.scale_vs_quality import phase2_passes_line
    laptop = PRESETS["laptop"].with_overrides(ladder="shared")
    assert phase2_passes_line(laptop, laptop.cells()) == (
        "phase 2: 19,974 example-passes per seed with the shared ladder (31,750 separate)")
    assert not any(tmp_path.iterdir())


@pytest.fixture
def reap_ray(monkeypatch):
    """Now and then a process of the local Ray runtime a sweep started outlives it (a `ray::TrainController` of a
    finished trial, reparented to init): once the test is over, kill the processes that carry its marker."""
    marker = f"XSTILTS_TEST_RUN={secrets.token_hex(8)}".encode()
    monkeypatch.setenv(*marker.decode().split("="))
    yield
    reap(marker)


def reap(marker: bytes) -> None:
    """Kill the processes that carry `marker` in their environment (what is left of a sweep's local Ray runtime)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def rows(experiment_dir):
    with open(experiment_dir / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def finished_trials(experiment_dir):
    return {row["trial_id"] for row in rows(experiment_dir)} if (experiment_dir / "results.csv").exists() else set()


def scored(row):
    return row["score"] not in ("", "nan")


# The sweep command with extra trial-config keys in the smoke preset: how a test injects faults into real trials
# (trainables/three_phase.py: `fail_at_step` kills rank 0 once per cell and step; `max_failures` 0 lets it fail).
DRIVER = """import sys
from search_spaces import hyperparameters as hp
from search_spaces.presets import PRESETS
PRESETS["smoke"] = PRESETS["smoke"].with_overrides(hyperparameters={**hp.SMOKE, **%r})
from sweeps.scale_vs_quality import main
sys.exit(main(sys.argv[1:]))
"""


def sweep_with(trial_config: dict, *args):
    return subprocess.run([sys.executable, "-c", DRIVER % trial_config, *args], capture_output=True, text=True,
                          timeout=900, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "0"})


def mlflow_runs(experiment_dir, experiment):
    """(the parent run, the trial runs) of the sweep."""
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{experiment_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    parents = client.search_runs([exp.experiment_id], "tags.`xstilts.role` = 'sweep'")
    children = client.search_runs([exp.experiment_id], "tags.`xstilts.role` = 'trial'")
    assert len(parents) == 1
    assert Counter(run.data.tags["xstilts.trial_key"] for run in children).most_common(1)[0][1] == 1
    return client, parents[0], children


def check_one_record(experiment_dir, experiment):
    """results.csv and MLflow hold the same trials and scores: a FINISHED run per scored trial with its scores,
    a FAILED run per trial with NaN rows, KILLED runs (stopped early) without rows."""
    table = rows(experiment_dir)
    keys = Counter((r["stage"], r["trial_id"], r["target_task"], r["language"]) for r in table)
    assert max(keys.values()) == 1
    client, parent, children = mlflow_runs(experiment_dir, experiment)
    by_trial = {(run.data.tags["xstilts.stage"], run.data.params["trial_id"]): run for run in children}
    in_csv = {(r["stage"], r["trial_id"]) for r in table}
    assert in_csv <= set(by_trial)
    for trial, run in by_trial.items():
        mine = {(r["target_task"], r["language"]): r for r in table if (r["stage"], r["trial_id"]) == trial}
        if run.info.status == "FINISHED":
            assert {k: float(r["score"]) for k, r in mine.items()} == {
                tuple(key.split(".")[1:]): value for key, value in run.data.metrics.items()
                if key.startswith("score.") and "/" not in key}
            assert {r["objective"] for r in mine.values()} == {str(run.data.metrics["objective"])}
        elif run.info.status == "FAILED":
            assert mine and not any(scored(r) for r in mine.values()) and run.data.tags["xstilts.error"]
        else:
            assert run.info.status == "KILLED" and not mine
    return client, parent, children


def check_complete_sweep(experiment_dir, experiment):
    table = rows(experiment_dir)
    cells = {(r["source"], r["quality"], r["size"]) for r in table if scored(r)}
    assert cells == {("none", "none", "0"), ("english", "random", "32"), ("english", "random", "96"),
                     ("english", "hard", "32"), ("english", "hard", "96"), ("multilingual", "random", "32")}
    assert {r["intermediate_task"] for r in table if r["source"] == "english"} == {"en_paraphrase"}
    assert {r["language"] for r in table if r["target_task"] == "genre"} == {"en", "fr", "de", "avg"}
    assert {r["language"] for r in table if r["target_task"] == "retrieval"} == {"fr", "de", "avg"}
    assert all(0 <= float(r["score"]) <= 100 for r in table)
    client, parent, children = check_one_record(experiment_dir, experiment)
    assert parent.info.status == "FINISHED"
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["xstilts.preset"] == "smoke" and "mlflow.note.content" in run.data.tags
        assert re.fullmatch(r"(baseline|\w+:\w+:\d+) s\d+ (search|replicate) #\w+", run.info.run_name)
        assert {"source", "quality", "size", "seed", "lr_intermediate", "lr_target"} <= set(run.data.params)
        if run.info.status == "FINISHED":
            assert "score.genre.avg" in run.data.metrics and "score.retrieval.fr" in run.data.metrics
            assert len(client.get_metric_history(run.info.run_id, "loss")) >= 1
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"config.json", "final_evaluation.json"} <= artifacts
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "analysis")}
    assert {"analysis/report.md", "analysis/summary.json"} <= report and any(p.endswith(".png") for p in report)
    assert (experiment_dir / "analysis" / "report.md").exists()
    return children


def optuna_trials(experiment_dir, experiment):
    import optuna

    storage = f"sqlite:///{experiment_dir / 'optuna.db'}"
    assert optuna.get_all_study_names(storage) == [f"{experiment}-search"]
    return optuna.load_study(study_name=f"{experiment}-search", storage=storage).trials


@pytest.mark.slow
@pytest.mark.usefixtures("reap_ray")
def test_smoke_sweep_killed_and_resumed(tmp_path):
    """Kill the driver mid-search; --resume finishes both stages (2 seeds: the replicate stage runs) without
    running a finished trial again and without extra trials, and every record agrees."""
    storage, experiment = tmp_path / "store", "smoke-resume"
    experiment_dir = storage / experiment
    args = ["--preset", "smoke", "--seeds", "2", "--storage-path", str(storage), "--experiment", experiment]
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
    before_rows = [r for r in rows(experiment_dir) if r["trial_id"] in before]
    assert len(before) >= 2 and driver.poll() is None, "the sweep should still be running"
    os.killpg(driver.pid, signal.SIGKILL)        # the driver and the local Ray it started (same process group)
    driver.wait()

    resumed = sweep(*args, "--resume", env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    children = check_complete_sweep(experiment_dir, experiment)
    for trial_id in before:   # finished before the kill: no event in the resumed driver, rows untouched
        assert f"trial {trial_id} " not in resumed.stderr
    assert [r for r in rows(experiment_dir) if r["trial_id"] in before] == before_rows
    # no extra trials: the 7 search trials (6 cells + 1) and the 6 replicas (seed 1 of each cell), once each
    stages = Counter(run.data.tags["xstilts.stage"] for run in children)
    assert stages == {"search": 7, "replicate": 6}, stages
    finished = [run for run in children if run.info.status == "FINISHED"]
    assert all(float(run.data.metrics.get("resumed_from_step", -1)) == -1 for run in finished
               if run.data.params["trial_id"] in before)
    replicas = [r for r in rows(experiment_dir) if r["stage"] == "replicate"]
    assert {(r["source"], r["quality"], r["size"], r["seed"]) for r in replicas if scored(r)} == {
        (source, quality, size, "1") for source, quality, size in
        {(r["source"], r["quality"], r["size"]) for r in rows(experiment_dir)}}
    summary = json.loads((experiment_dir / "analysis" / "summary.json").read_text())
    assert summary["data"]["rows_read"] == len(rows(experiment_dir))   # the analysis read every row, replicas too
    trials = optuna_trials(experiment_dir, experiment)
    assert len(trials) == 7 and {t.user_attrs["tune_trial_id"] for t in trials} == {
        run.data.params["trial_id"] for run in children if run.data.tags["xstilts.stage"] == "search"}
    assert all(t.value is not None for t in trials if t.state.name == "COMPLETE") and \
        sum(t.state.name == "COMPLETE" for t in trials) >= 6


@pytest.mark.slow
@pytest.mark.usefixtures("reap_ray")
def test_ctrl_c_stops_the_sweep_and_resume_finishes_it(tmp_path):
    """SIGINT mid-search: the driver stops (no replicate stage, no analysis), exits 130 with the resume command,
    and --resume finishes the sweep without running a finished trial again. While it runs, a second driver on the
    same experiment is refused.

    Ctrl-C comes as soon as a trial has its row in results.csv: the moment when the study and the tracking callback
    know the trial finished and Tune's saved state (every second) may not yet (sweeps/interrupt.py)."""
    storage, experiment = tmp_path / "store", "smoke-ctrl-c"
    experiment_dir = storage / experiment
    args = ["--preset", "smoke", "--storage-path", str(storage), "--experiment", experiment]
    driver = subprocess.Popen(SWEEP + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    deadline = time.time() + 600
    while not (experiment_dir / "sweep_state.json").exists() and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
    # a second driver on the running experiment is refused, with or without --resume (sweeps/driver_lock.py)
    for extra in ((), ("--resume",)):
        one_line_error(sweep(*args, *extra), f"another driver (pid {driver.pid} on", "is running sweep smoke-ctrl-c")
    while not finished_trials(experiment_dir) and time.time() < deadline and driver.poll() is None:
        time.sleep(0.1)
    assert driver.poll() is None, "the sweep should still be running"
    os.kill(driver.pid, signal.SIGINT)             # Ctrl-C reaches the driver
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, output[-3000:]
    assert "interrupted; finished trials are kept" in output and "--resume" in output
    assert "Tuner.restore" not in output   # the sweep's own resume command, not Tune's API
    assert json.loads((experiment_dir / "sweep_state.json").read_text())["stage"] == "search"
    assert not (experiment_dir / "tune" / "replicate").exists() and not (experiment_dir / "analysis").exists()
    before = finished_trials(experiment_dir)

    resumed = sweep(*args, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for trial_id in before:
        assert f"trial {trial_id} " not in resumed.stderr
    assert (experiment_dir / "analysis" / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("reap_ray")
def test_a_failing_trial_exits_1_and_resume_makes_one_record(tmp_path):
    """A trial that dies: the sweep finishes the rest, exits 1 with a summary and the resume command; that command
    reruns the trial under its own id, its scores replace its NaN rows, and it exits 0."""
    storage, experiment = tmp_path / "store", "smoke-fail"
    experiment_dir = storage / experiment
    args = ["--preset", "smoke", "--english-sizes", "0,32", "--storage-path", str(storage),
            "--experiment", experiment]
    # Every trial dies once at global step 2; the marker files of all cells but the baseline exist already, so
    # only the baseline's first trial dies (and nothing dies a second time).
    experiment_dir.mkdir(parents=True)
    for cell in ("english:en_paraphrase:random:32", "english:en_paraphrase:hard:32",
                 "multilingual:multi_paraphrase:random:32"):
        (experiment_dir / f"fault-injected-{cell}-2").write_text("made by the test\n")
    first = sweep_with({"fail_at_step": 2, "max_failures": 0}, *args)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    failed = {r["trial_id"] for r in rows(experiment_dir) if not scored(r)}
    assert len(failed) == 1 and {r["source"] for r in rows(experiment_dir) if r["trial_id"] in failed} == {"none"}
    (trial_id,) = failed
    summary = first.stderr[first.stderr.index("1 trial(s) ended in an error"):]
    assert "baseline s0 search #" in summary and f"[search:{trial_id}]" in summary and "WorkerGroupError" in summary
    client, parent, children = check_one_record(experiment_dir, experiment)
    assert parent.info.status == "FAILED" and len(children) == 6   # 5 search trials, the baseline replicated

    command = shlex.split(summary.split("rerun them (finished trials are kept): ")[1].splitlines()[0])
    assert command[0] == "python" and command[-1] == "--resume"
    resumed = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"trial {trial_id} (baseline s0) finished" in resumed.stderr
    assert "0 failed" in resumed.stdout
    client, parent, children = check_one_record(experiment_dir, experiment)
    assert parent.info.status == "FINISHED" and len(children) == 6
    assert {run.info.status for run in children} == {"FINISHED"}
    assert all(scored(r) for r in rows(experiment_dir))
    trials = optuna_trials(experiment_dir, experiment)
    states = Counter((t.user_attrs["tune_trial_id"], t.state.name) for t in trials)
    assert states[(trial_id, "FAIL")] == 1 and states[(trial_id, "COMPLETE")] == 1 and len(trials) == 6


@pytest.mark.slow
@pytest.mark.usefixtures("reap_ray")
def test_a_failing_analysis_exits_3(tmp_path):
    """Every trial finishes, but with no English cell there is no curve to fit: the analysis fails, exit 3."""
    storage, experiment = tmp_path / "store", "smoke-no-english"
    done = sweep("--preset", "smoke", "--english-sizes", "0", "--storage-path", str(storage),
                 "--experiment", experiment)
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the analysis failed (exit 2); rerun it with: " in done.stderr and "0 failed" in done.stderr
    client, parent, children = check_one_record(storage / experiment, experiment)
    assert parent.info.status == "FAILED" and parent.data.tags["xstilts.analysis"] == "failed (exit 2)"
    assert {run.info.status for run in children} <= {"FINISHED", "KILLED"}


@pytest.mark.slow
@pytest.mark.usefixtures("reap_ray")
def test_every_format_runs_through_the_sweep(tmp_path):
    """smoke-formats: choice and pair intermediate tasks; single-text, span QA, tagging and retrieval targets. Every
    target ends with a score in every language, under its own metric, in results.csv, MLflow and the analysis."""
    storage, experiment = tmp_path / "store", "smoke-formats"
    done = sweep("--preset", "smoke-formats", "--storage-path", str(storage), "--experiment", experiment)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = rows(storage / experiment)
    metrics = {(r["target_task"], r["metric"]) for r in table}
    assert metrics == {("genre", "accuracy"), ("verse_qa", "f1"), ("verse_boundaries", "entity_f1"),
                       ("retrieval", "top1_accuracy")}
    languages = {"genre": {"en", "fr", "de"}, "verse_qa": {"fr", "de"}, "verse_boundaries": {"en", "fr", "de"},
                 "retrieval": {"fr", "de"}}
    for source in ("none", "english", "multilingual"):
        for target, expected in languages.items():
            scored_languages = {r["language"] for r in table if r["source"] == source and r["target_task"] == target
                                and scored(r)}
            assert scored_languages == expected | {"avg"}, (source, target)
    client, parent, children = check_one_record(storage / experiment, experiment)
    for run in children:
        assert {"score.verse_qa.fr/exact_match", "score.verse_qa.fr/answers_truncated",
                "score.verse_boundaries.de/words_truncated", "truncated.verse_qa.answers_truncated"} \
            <= set(run.data.metrics)
    summary = json.loads((storage / experiment / "analysis" / "summary.json").read_text())
    assert summary["data"]["rows_read"] == len(table)


@pytest.mark.slow
@pytest.mark.usefixtures("reap_ray")
def test_asha_stops_weak_extra_trials_after_their_first_target(tmp_path):
    """4 cells and 6 extra search trials: ASHA compares trials once they are scored on retrieval (no phase 3, so
    scored first) and stops weak extras before they train genre; the first trial of a cell runs to the end."""
    storage, experiment = tmp_path / "store", "smoke-asha"
    # Beside a stale cluster file (a stopped `ray start` cluster leaves one): a stopped trial's Train run must still
    # give its CPUs back (sweeps/checks.connect_ray), or the next trial waits for them forever.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))   # short: Ray's socket paths must stay < 108 bytes
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:6999")
    try:
        done = sweep("--preset", "smoke", "--english-sizes", "0,32", "--num-samples", "10", "--no-analysis",
                     "--storage-path", str(storage), "--experiment", experiment,
                     env={**os.environ, "RAY_TMPDIR": str(ray_tmp)})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client, parent, children = check_one_record(storage / experiment, experiment)
    stopped = [run for run in children if run.info.status == "KILLED"]
    assert stopped, "ASHA stopped no trial"
    first_of_cells = len({(r["source"], r["quality"], r["size"]) for r in rows(storage / experiment)})
    assert first_of_cells == 4
    for run in stopped:
        assert int(run.info.run_name.rsplit("#", 1)[1]) > first_of_cells      # the points_to_evaluate ran to the end
        assert run.data.metrics["targets_evaluated"] == 1 and "val.retrieval.avg" in run.data.metrics
        assert not any(key.startswith(("val.genre", "score.genre")) for key in run.data.metrics)
    line = next(line for line in done.stdout.splitlines() if line.startswith("ASHA stopped"))
    assert f"ASHA stopped {len(stopped)} trial(s) after 1 target(s): they skipped" in line
    print(line)
