"""The two stages of a sweep, as Ray Tune experiments that `--resume` restores.

search:    OptunaSearch (TPE, study in STORAGE/EXPERIMENT/optuna.db) over the data cell x the searched
           hyperparameters; points_to_evaluate puts every cell in once first; ASHA stops weak extra trials.
replicate: every cell's best finished configuration with the seeds it still lacks (and a default configuration
           for a cell the search left without a finished trial), so no curve point is missing.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from search_spaces.hyperparameters import default_point
from search_spaces.presets import Preset
from sweeps.tracking import SweepTracker, TrackingCallback, save_json
from trainables.tasks import get_task
from trainables.three_phase import run_trial

# Save Tune's experiment state at least every second, so a finished trial is known as finished after a crash.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
# The running objective is NaN until a trial's first evaluation; ASHA's cutoff over a rung that holds only such
# trials is NaN (so it stops nothing) and numpy warns about it on every result.
warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)

# A trial's own process only waits for its TorchTrainer: it holds no CPU (Tune needs some resource: 1 MiB of
# memory), the Train workers hold the CPUs and GPUs, and --max-concurrent bounds the trials at once.
TRAINABLE = tune.with_resources(run_trial, {"cpu": 0, "memory": 1 << 20})


class CoveringASHA(ASHAScheduler):
    """ASHA that never stops the first trial of a data cell (the points_to_evaluate ones come first), so every
    cell keeps a finished point in the search stage; Optuna's extra trials are stopped as usual."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first_of_cell: dict[str, str] = {}

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        self.first_of_cell.setdefault(trial.config["cell"], trial.trial_id)

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        return TrialScheduler.CONTINUE if self.first_of_cell.get(trial.config["cell"]) == trial.trial_id \
            else decision


def optuna_space(preset: Preset, cells: list[str]) -> dict:
    space = {"cell": optuna.distributions.CategoricalDistribution(cells)}
    for name, value in preset.hyperparameters.items():
        if isinstance(value, tuple) and value[0] == "loguniform":
            space[name] = optuna.distributions.FloatDistribution(value[1], value[2], log=True)
        elif isinstance(value, tuple) and value[0] == "choice":
            space[name] = optuna.distributions.CategoricalDistribution(list(value[1]))
    return space


def _tuner(name: str, experiment_dir: Path, resume: bool, callback, param_space: dict,
           make_tune_config) -> tune.Tuner:
    """A restored Tune experiment when resuming one that exists, else a new one."""
    path = experiment_dir / "tune" / name
    if resume and tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), TRAINABLE, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(TRAINABLE, param_space=param_space, tune_config=make_tune_config(),
                      run_config=tune.RunConfig(name=name, storage_path=str(experiment_dir / "tune"), verbose=0,
                                                callbacks=[callback]))


def run_sweep(preset: Preset, plan: dict, *, experiment: str, experiment_dir: Path, tracking_uri: str,
              resume: bool) -> str:
    state_path = experiment_dir / "sweep_state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"stage": "search"}
    state.update(preset=preset.name, plan={k: v for k, v in plan.items() if k != "cells"})
    save_json(state_path, state)

    constants = preset.trial_constants()
    constants.update(storage_path=str(experiment_dir), cache_dir=str(experiment_dir / "phase2_cache"))
    cells = [cell.cell_id for cell in plan["cells"]]
    metric_names = {target: get_task(target).metric for target in preset.targets}

    def callback(stage: str) -> TrackingCallback:
        return TrackingCallback(tracking_uri, experiment, preset.name, experiment_dir / "results.csv", stage,
                                metric_names, cells)

    if state["stage"] == "search":
        search = _tuner("search", experiment_dir, resume, callback("search"), constants,
                        lambda: _search_config(preset, plan, cells, experiment, experiment_dir))
        search_results = search.fit()
        state["stage"] = "replicate"
        save_json(state_path, state)
    else:
        search_results = tune.Tuner.restore(str(experiment_dir / "tune" / "search"), TRAINABLE).get_results()

    replicas = replicate_configs(preset, plan["seeds"], cells, search_results)
    if state["stage"] == "replicate" and replicas:
        # BasicVariantGenerator fills points_to_evaluate into keys the param_space already has.
        replicate = _tuner("replicate", experiment_dir, resume, callback("replicate"),
                           {**constants, **replicas[0]}, lambda: tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=replicas), num_samples=len(replicas),
            max_concurrent_trials=plan["max_concurrent"]))
        replicate.fit()
    state["stage"] = "done"
    save_json(state_path, state)
    SweepTracker(tracking_uri, experiment, preset.name).close()   # the parent run shows as finished in the UI
    return (f"sweep {experiment} done: {len(cells)} cells, results in {experiment_dir / 'results.csv'}, "
            f"MLflow: mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1")


def _search_config(preset: Preset, plan: dict, cells: list[str], experiment: str,
                   experiment_dir: Path) -> tune.TuneConfig:
    start = default_point(preset.hyperparameters)
    searcher = OptunaSearch(
        space=optuna_space(preset, cells), metric="objective", mode="max",
        points_to_evaluate=[{"cell": cell, **start} for cell in cells],
        sampler=optuna.samplers.TPESampler(seed=0), study_name=f"{experiment}-search",
        storage=optuna.storages.RDBStorage(f"sqlite:///{experiment_dir / 'optuna.db'}"))
    # ASHA compares trials on the running objective (reported after each target's evaluation) at milestones of
    # the global step. A cell that still ends without a finished trial gets one in the replicate stage.
    scheduler = CoveringASHA(time_attr="global_step", metric="objective", mode="max",
                             max_t=10 ** 9, grace_period=max(1, preset.asha_grace_steps), reduction_factor=3)
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan["num_samples"],
                           max_concurrent_trials=plan["max_concurrent"])


def replicate_configs(preset: Preset, seeds: int, cells: list[str], results) -> list[dict]:
    """For every cell: its best finished search configuration with seeds 1..seeds-1; a cell without any
    finished trial also gets seed 0 (with the default hyperparameters when no trial of it finished)."""
    best: dict[str, tuple[float, dict]] = {}
    for result in results:
        metrics, config = result.metrics or {}, result.config or {}
        objective = metrics.get("objective")
        if metrics.get("trial_complete") == 1 and objective is not None and math.isfinite(objective):
            if config["cell"] not in best or objective > best[config["cell"]][0]:
                best[config["cell"]] = (objective, config)
    searched = list(optuna_space(preset, cells))
    replicas = []
    for cell in cells:
        found = best.get(cell)
        point = ({name: found[1][name] for name in searched} if found
                 else {"cell": cell, **default_point(preset.hyperparameters)})
        needed = range(1, seeds) if found else range(0, seeds)
        replicas += [{**point, "seed": seed} for seed in needed]
    return replicas
