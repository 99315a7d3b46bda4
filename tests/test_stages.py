"""sweeps/stages.py without a Ray runtime: the replicate plan, the Optuna study's record, the exit status (fast)."""
import json
import math
from pathlib import Path
from io import BytesIO
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from mlflow.tracking import MlflowClient
from ray.tune import Result
from ray.tune.experiment import Trial

from search_spaces.hyperparameters import default_point
from search_spaces.presets import PRESETS
from sweeps.stages import (EXIT_ANALYSIS_FAILED, EXIT_TRIALS_FAILED, SweepOptunaSearch, finish_sweep, largest_first,
                           optuna_space, record_reruns, replicate_configs)
from sweeps.tracking import NOTE
from sweeps.tracking_callback import TrackingCallback

SMOKE = PRESETS["smoke"]
CELLS = [cell.cell_id for cell in SMOKE.cells()]


def result(tmp_path, cell, objective, complete=True, **config):
    config = {"cell": cell, "seed": 0, "lr_intermediate": 1e-3, "lr_target": 2e-3, **config}
    metrics = {"objective": objective, "config": config, "trial_id": f"{cell}-{objective}"}
    if complete:
        metrics["trial_complete"] = 1
    return Result(metrics=metrics, checkpoint=None, error=None, path=str(tmp_path))


def test_replicate_takes_each_cells_best_finished_point_and_fills_cells_without_one(tmp_path):
    english, baseline = CELLS[1], CELLS[0]
    results = [result(tmp_path, english, 40.0, lr_target=1e-3), result(tmp_path, english, 55.0, lr_target=2e-3),
               result(tmp_path, english, 70.0, complete=False, lr_target=3e-3),      # stopped early: not a point
               result(tmp_path, english, math.nan, lr_target=4e-3)]
    replicas = replicate_configs(SMOKE, 3, CELLS, results)
    mine = [r for r in replicas if r["cell"] == english]
    assert mine == [{"cell": english, "lr_intermediate": 1e-3, "lr_target": 2e-3, "seed": seed} for seed in (1, 2)]
    # a cell the search left without a finished trial: every seed, with the default point
    assert [r for r in replicas if r["cell"] == baseline] == [
        {"cell": baseline, **default_point(SMOKE.hyperparameters), "seed": seed} for seed in (0, 1, 2)]
    assert len(replicas) == 2 + 3 * (len(CELLS) - 1)
    assert replicate_configs(SMOKE, 1, CELLS, [result(tmp_path, cell, 50.0) for cell in CELLS]) == []


def test_the_largest_cells_run_first_and_each_ladder_in_descending_size():
    laptop = [cell.cell_id for cell in PRESETS["laptop"].cells()]
    english, multilingual = "english:en_paraphrase", "multilingual:multi_paraphrase:random"
    assert largest_first(laptop) == [
        *[f"{english}:{tier}:{n}" for n in (8000, 4000, 2000) for tier in ("random", "hard")],
        f"{english}:random:1000", f"{english}:hard:1000", f"{multilingual}:1000", f"{multilingual}:500",
        f"{multilingual}:250", "none"]
    replicas = replicate_configs(SMOKE, 2, CELLS, [result(Path("."), cell, 50.0) for cell in CELLS])
    assert [r["cell"] for r in replicas] == largest_first(CELLS)


def test_optuna_space_has_the_cell_and_the_searched_hyperparameters():
    space = optuna_space(SMOKE, CELLS)
    assert list(space) == ["cell", "lr_intermediate", "lr_target"]
    assert space["cell"].choices == tuple(CELLS) and space["lr_target"].log


@pytest.fixture
def searcher(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    made = SweepOptunaSearch(space=optuna_space(SMOKE, CELLS), metric="objective", mode="max",
                             points_to_evaluate=[{"cell": cell, **default_point(SMOKE.hyperparameters)}
                                                 for cell in CELLS[:3]],
                             sampler=optuna.samplers.TPESampler(seed=0), study_name="s-search",
                             storage=optuna.storages.RDBStorage(storage))
    return made, storage


def test_the_study_records_complete_pruned_and_failed_trials(searcher):
    made, storage = searcher
    configs = {trial_id: made.suggest(trial_id) for trial_id in ("t1", "t2", "t3")}
    assert [configs[t]["cell"] for t in ("t1", "t2", "t3")] == CELLS[:3]
    made.on_trial_complete("t1", {"objective": 52.5, "trial_complete": 1})
    made.on_trial_complete("t2", {"objective": 30.0})                   # ASHA stopped it
    made.on_trial_complete("t3", {"objective": 20.0}, error=True)
    study = optuna.load_study(study_name="s-search", storage=storage)
    assert [(t.state.name, t.value, t.user_attrs["tune_trial_id"], t.user_attrs["cell"]) for t in study.trials] == [
        ("COMPLETE", 52.5, "t1", "baseline"), ("PRUNED", None, "t2", "english:random:32"),
        ("FAIL", None, "t3", "english:random:96")]

    # --resume reran t3 and it finished: the study gets it as a new COMPLETE trial, once
    rerun = Result(metrics={"objective": 61.0, "trial_complete": 1, "trial_id": "t3", "config": configs["t3"]},
                   checkpoint=None, error=None, path="")
    assert record_reruns(study, optuna_space(SMOKE, CELLS), [rerun]) == 1
    assert record_reruns(study, optuna_space(SMOKE, CELLS), [rerun]) == 0
    last = optuna.load_study(study_name="s-search", storage=storage).trials[-1]
    assert (last.state.name, last.value, last.user_attrs["tune_trial_id"], last.params) == (
        "COMPLETE", 61.0, "t3", configs["t3"])
    assert study.best_trial.user_attrs["tune_trial_id"] == "t3"


def test_a_trial_the_study_closed_before_a_crash_is_not_told_again(searcher, tmp_path):
    """The driver died after telling the study t1 finished but before Tune saved that: --resume restores the searcher
    from the older state, runs t1 again, and its end must neither raise nor change what the study holds."""
    made, storage = searcher
    made.suggest("t1")
    made.save(str(tmp_path / "searcher.pkl"))                             # Tune's last save: t1 still running
    made.on_trial_complete("t1", {"objective": 52.5, "trial_complete": 1})
    restored = SweepOptunaSearch(space=optuna_space(SMOKE, CELLS), metric="objective", mode="max")
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("t1", {"objective": 50.0, "trial_complete": 1})
    restored.on_trial_complete("t1", error=True)
    study = optuna.load_study(study_name="s-search", storage=storage)
    assert [(t.state.name, t.value) for t in study.trials if t.state.is_finished()] == [("COMPLETE", 52.5)]


def test_optuna_dashboard_reads_the_study(searcher):
    dashboard = pytest.importorskip("optuna_dashboard")
    made, storage = searcher
    for trial_id, value in (("t1", 40.0), ("t2", 45.0)):
        made.suggest(trial_id)
        made.on_trial_complete(trial_id, {"objective": value, "trial_complete": 1})
    app = dashboard.wsgi(storage)

    def get(path):
        environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": BytesIO()}
        setup_testing_defaults(environ)
        status = []
        body = b"".join(app(environ, lambda code, headers, *rest: status.append(code)))
        assert status[0].startswith("200"), status
        return json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["s-search"]
    trials = get(f"/api/studies/{studies[0]['study_id']}")["trials"]
    assert [(t["state"], t.get("values"), {a["key"]: a["value"] for a in t["user_attrs"]}) for t in trials] == [
        ("Complete", [40.0], {"tune_trial_id": "t1", "cell": "baseline"}),
        ("Complete", [45.0], {"tune_trial_id": "t2", "cell": "english:random:32"}),
        ("Waiting", None, {})]   # the third point to evaluate, still queued


def outcome_of(store, tmp_path, experiment, trials):
    made = TrackingCallback(store, experiment, "smoke", tmp_path / f"{experiment}.csv", "search",
                            {"genre": "accuracy"}, CELLS)
    made.setup()
    for trial_id, error in trials:
        trial = Trial("run_trial", config={"cell": CELLS[0], "seed": 0, "lr_intermediate": 1e-3,
                                           "lr_target": 1e-3, "targets": ["genre"]},
                      trial_id=trial_id, experiment_tag="1_c", stub=True)
        if error:
            made.on_trial_error(0, [], trial)
        else:
            trial.update_last_result({"score.genre.avg": 50.0, "objective": 50.0, "trial_complete": 1,
                                      "phase2_example_passes": 40.0, "phase2_example_passes_alone": 64.0})
            made.on_trial_complete(0, [], trial)
    return {**made.tracker.outcome(), "orphans": 0, "tracker": made.tracker, "experiment": experiment,
            "results": tmp_path / f"{experiment}.csv", "resume_command": "python sweeps/scale_vs_quality.py --resume"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.mark.parametrize("trials, analysis, code, status", [
    ([("a", False)], (0, "fit"), 0, "FINISHED"),
    ([("a", False)], None, 0, "FINISHED"),
    ([("a", False), ("b", True)], (0, "fit"), EXIT_TRIALS_FAILED, "FAILED"),
    ([("a", True)], (2, "fit_curves.py --experiment x"), EXIT_TRIALS_FAILED, "FAILED"),
    ([("a", False)], (2, "fit_curves.py --experiment x"), EXIT_ANALYSIS_FAILED, "FAILED"),
])
def test_exit_status_and_summary(store, tmp_path, trials, analysis, code, status):
    outcome = outcome_of(store, tmp_path, tmp_path.name, trials)   # an experiment per case
    got, summary = finish_sweep(outcome, analysis)
    assert got == code
    failed = [trial_id for trial_id, error in trials if error]
    assert f"{len(trials) - len(failed)} finished, {len(failed)} failed" in summary
    assert ("--resume" in summary) == bool(failed) and all(f"[search:{t}]" in summary for t in failed)
    analysis_failed = analysis is not None and analysis[0] != 0
    assert ("the analysis failed (exit 2); rerun it with: fit_curves.py" in summary) == analysis_failed
    finished = len(trials) - len(failed)   # each trained 40 of the 64 example passes its size needs alone
    assert (f"phase 2 trained {40 * finished} example-passes ({64 * finished} with every size trained alone: "
            "0.62)" in summary) == bool(finished)
    parent = MlflowClient(store).get_run(outcome["tracker"].parent_id)
    assert parent.info.status == status and summary in parent.data.tags[NOTE]
    assert parent.data.tags["xstilts.trials_failed"] == str(len(failed))


def test_replicas_start_no_more_than_max_concurrent_at_a_time():
    """Tune ignores max_concurrent_trials for a BasicVariantGenerator: the generator itself must hold back."""
    from sweeps.stages import _replicate_config

    replicas = [{"cell": "none", "seed": seed} for seed in range(1, 5)]
    config = _replicate_config(replicas, {"max_concurrent": 1})
    generator = config.search_alg
    assert generator.max_concurrent == 1 and config.num_samples == 4
    created = []
    generator.add_configurations({"replicate": {"run": lambda config: None, "config": replicas[0], "num_samples": 4}})
    while (trial := generator.next_trial()) is not None:
        created.append(trial)
    assert len(created) == 1   # the next replica waits until this one ends



def asha_trial(trial_id, cell):
    return Trial("run_trial", config={"cell": cell}, trial_id=trial_id, stub=True)


def test_asha_compares_trials_scored_on_the_same_targets_and_spares_the_first_of_each_cell(tmp_path):
    """Milestones count targets evaluated, not steps: reports before the first evaluation (objective NaN) are
    never compared; at the rung, an extra trial below the top third stops, the first trial of a cell never does."""
    from ray.tune.schedulers import TrialScheduler

    from sweeps.stages import _search_config

    scheduler = _search_config(SMOKE, {"num_samples": 10, "max_concurrent": 2}, CELLS, "asha", tmp_path).scheduler
    firsts = [asha_trial(f"first{i}", cell) for i, cell in enumerate(CELLS)]
    weak_extra, strong_extra = asha_trial("weak", CELLS[1]), asha_trial("strong", CELLS[2])
    for trial in (*firsts, weak_extra, strong_extra):
        scheduler.on_trial_add(None, trial)
    decide = scheduler.on_trial_result
    for trial in (*firsts, weak_extra):   # during phase 2 and phase 3 of the first target: nothing to compare
        assert decide(None, trial, {"targets_evaluated": 0, "objective": math.nan}) == TrialScheduler.CONTINUE
    for i, trial in enumerate(firsts):    # scored on the first target: 10, 20, ... 60; the worst is spared too
        assert decide(None, trial, {"targets_evaluated": 1, "objective": 10.0 * (i + 1)}) == TrialScheduler.CONTINUE
    assert decide(None, weak_extra, {"targets_evaluated": 1, "objective": 25.0}) == TrialScheduler.STOP
    assert decide(None, strong_extra, {"targets_evaluated": 1, "objective": 65.0}) == TrialScheduler.CONTINUE
    # the last target scored, then the final report: never stopped for reaching max_t
    for _ in range(2):
        assert decide(None, strong_extra, {"targets_evaluated": 2, "objective": 60.0}) == TrialScheduler.CONTINUE


def test_a_trial_scores_the_targets_without_phase_3_first():
    from trainables.three_phase import evaluation_order

    assert evaluation_order(["genre", "retrieval"]) == ["retrieval", "genre"]
    assert evaluation_order(["genre", "verse_qa", "verse_boundaries", "retrieval"]) == [
        "retrieval", "genre", "verse_qa", "verse_boundaries"]
    # tatoeba has no validation split, so it cannot feed the objective: after bucc, which can
    assert evaluation_order(["xnli", "tatoeba", "bucc"]) == ["bucc", "tatoeba", "xnli"]
