"""Reading the sweep's rows from a real local MLflow store, and logging the outputs to its parent run."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.read_results import AnalysisInputError, read_mlflow
from analysis.synthetic import TRUTH, synthetic_table

mlflow = pytest.importorskip("mlflow")
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy, inside MLflow's store
EXPERIMENT = "sweep-test"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An MLflow SQLite store holding an old sweep and a newer one like the sweep logs them, with a trial that
    failed and one the scheduler stopped early (both with partial scores); returns (uri, table, newest parent run
    id)."""
    tmp_path = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment(EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri())
    table = synthetic_table({"clean": TRUTH}, sizes=(0, 250, 1000, 4000, 16000), seeds=2, languages=("fr", "de"),
                            multilingual={("hq", 1000): 65.0}, test_examples=48)
    now = int(time.time() * 1000)
    client.create_run(experiment, start_time=now - 60_000, tags={"xstilts.role": "sweep"})  # an older sweep
    parent = client.create_run(experiment, start_time=now, tags={"xstilts.role": "sweep"}).info.run_id
    for trial_id, trial in table.groupby("trial_id"):
        child = client.create_run(experiment, start_time=now, tags={"xstilts.role": "trial",
                                                                    "mlflow.parentRunId": parent}).info.run_id
        first = trial.iloc[0]
        params = [Param(name, str(first[name])) for name in
                  ("source", "quality", "size", "seed", "lr_intermediate", "lr_target", "stage", "trial_id")]
        cell = "none" if first.source == "none" else f"{first.source}:paraphrase:{first.quality}:{first['size']}"
        params += [Param("targets", "genre"), Param("cell", cell)]
        metrics = [Metric(f"score.genre.{row.language}", row.score, now, 0) for row in trial.itertuples()]
        metrics += [Metric(f"n.genre.{row.language}", row.n_examples, now, 0) for row in trial.itertuples()]
        metrics += [Metric("objective", 50.0 + first.seed, now, 0), Metric("score.retrieval.fr/en_to_x", 1.0, now, 0)]
        client.log_batch(child, metrics=metrics, params=params, tags=[RunTag("metric.genre", "accuracy")])
        client.set_terminated(child, "FINISHED")
    for status in ("FAILED", "KILLED"):
        partial = client.create_run(experiment, start_time=now, tags={"xstilts.role": "trial",
                                                                      "mlflow.parentRunId": parent}).info.run_id
        client.log_batch(partial, params=[Param("source", "english"), Param("quality", "clean"), Param("size", "250"),
                                          Param("seed", "7"), Param("stage", "search"), Param("trial_id", status)],
                         metrics=[Metric("score.genre.fr", 99.0, now, 0)])  # partial: would bias the curve
        client.set_terminated(partial, status)
    return uri, table, parent


def test_rows_are_rebuilt_in_the_csv_schema(store):
    uri, table, parent = store
    rows, parent_id, left_out = read_mlflow(EXPERIMENT, uri)
    assert parent_id == parent
    assert left_out == {"failed_runs": 1, "killed_runs": 1}
    scored = rows[rows["score"].notna()]
    assert len(scored) == len(table)
    assert set(scored["metric"]) == {"accuracy"}
    merged = scored.merge(table, on=["trial_id", "language"], suffixes=("", "_csv"))
    assert (merged["score"] - merged["score_csv"]).abs().max() < 1e-9
    assert (merged["size"] == merged["size_csv"]).all()
    assert (merged["n_examples"] == 48).all()
    assert (merged["objective"] == 50.0 + merged["seed"]).all()
    assert set(merged.loc[merged["source"] == "english", "intermediate_task"]) == {"paraphrase"}
    assert set(merged.loc[merged["source"] == "none", "intermediate_task"]) == {""}
    # The failed trial's partial score is left out: one NaN `avg` row, as the sweep writes results.csv; the killed
    # trial is no data point at all.
    failed = rows[rows["trial_id"] == "FAILED"]
    assert list(failed["language"]) == ["avg"] and failed["score"].isna().all()
    assert "KILLED" not in set(rows["trial_id"])


def test_old_runs_without_counts_or_objective_read_as_unknown(tmp_path):
    uri = f"sqlite:///{tmp_path / 'old.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("old", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment, tags={"xstilts.role": "sweep"}).info.run_id
    child = client.create_run(experiment, tags={"xstilts.role": "trial", "mlflow.parentRunId": parent}).info.run_id
    client.log_batch(child, params=[Param(name, value) for name, value in
                                    (("source", "english"), ("quality", "clean"), ("size", "250"), ("seed", "0"),
                                     ("stage", "search"), ("trial_id", "t0"))],
                     metrics=[Metric("score.genre.fr", 50.0, 0, 0)])
    rows, _, _ = read_mlflow("old", uri)
    assert rows["n_examples"].isna().all() and rows["objective"].isna().all()
    assert list(rows["intermediate_task"]) == [""]


def test_cli_reads_mlflow_and_logs_artifacts_to_the_parent_run_without_torch(store, tmp_path):
    uri, _, parent = store
    out = tmp_path / "analysis"
    argv = ["--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(out), "--bootstrap", "100"]
    code = ("import sys\n"
            "from analysis.fit_curves import main\n"
            f"assert main({argv!r}) == 0\n"
            "assert 'torch' not in sys.modules, 'the analysis imported torch'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = (out / "report.md").read_text()
    assert "trials without any score: 1" in report and "1 FAILED" in report and "1 KILLED" in report
    logged = {entry.path for entry in MlflowClient(uri).list_artifacts(parent, "analysis")}
    assert logged == {"analysis/summary.json", "analysis/report.md", "analysis/genre.png",
                      "analysis/english_equivalent_multipliers.png"}


def test_unknown_experiment_or_store_is_a_user_error(store, tmp_path):
    uri, _, _ = store
    with pytest.raises(AnalysisInputError, match="no MLflow experiment named 'missing'"):
        read_mlflow("missing", uri)
    with pytest.raises(AnalysisInputError, match="no MLflow store"):
        read_mlflow(EXPERIMENT, f"sqlite:///{tmp_path / 'typo.db'}")
    assert not (tmp_path / "typo.db").exists()
