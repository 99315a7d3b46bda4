"""The two stages of a sweep, as Ray Tune experiments that `--resume` restores.

search:    OptunaSearch (TPE, study in STORAGE/EXPERIMENT/optuna.db) over the data cell x the searched
           hyperparameters; points_to_evaluate puts every cell in once first (each size ladder's largest size
           first, so the smaller ones start from its trunk snapshots: trainables/ladder.py); ASHA stops weak extra
           trials when they have been scored on as many targets as the others at its rung (CoveringASHA).
replicate: every cell's best finished configuration with the seeds it still lacks (and a default configuration
           for a cell the search left without a finished trial), so no curve point is missing.
--resume restores each stage the sweep reached: unfinished and failed trials run again under their own trial ids,
finished ones are kept. `finish_sweep` then reports what became of the trials (read back from MLflow, the one record
results.csv agrees with) and gives the exit status: 1 when any trial ended in an error, 3 when the analysis failed.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from analysis.schema import OBJECTIVE
from search_spaces.hyperparameters import default_point
from search_spaces.presets import Preset
from sweeps.interrupt import StopOnCtrlC
from sweeps.progress import SweepProgress
from sweeps.tracking import SweepTracker, artifact_location, cell_label, save_json
from sweeps.tracking_callback import TrackingCallback
from trainables.tasks import get_task
from trainables.three_phase import run_trial
from trainables.trial_config import TrialConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)   # its INFO lines ("A new study created ...") are noise here
# Save Tune's experiment state at least every second, so a finished trial is known as finished after a crash.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")

# A trial's own process only waits for its TorchTrainer: it holds no CPU (Tune needs some resource: 1 MiB of
# memory), the Train workers hold the CPUs and GPUs, and --max-concurrent bounds the trials at once.
TRAINABLE = tune.with_resources(run_trial, {"cpu": 0, "memory": 1 << 20})


class CoveringASHA(ASHAScheduler):
    """ASHA on a signal every trial has at the same point: its milestones are counts of targets evaluated
    (`targets_evaluated`; a trial scores the targets in one order, those without phase 3 first), and the metric is
    the objective, the mean validation score over exactly those targets. So at a rung every trial has been scored on
    the same targets, whatever its data cell, and a trial below the rung's top third is stopped before it trains
    the next target. max_t is one more than the targets, so no trial is stopped for reaching it (it still has its
    final report to send).

    It never stops the first trial of a data cell (the points_to_evaluate ones come first), so every cell keeps a
    finished point in the search stage; Optuna's extra trials are stopped as usual."""

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


class SweepOptunaSearch(OptunaSearch):
    """OptunaSearch whose study says what became of each trial, for optuna-dashboard and for TPE: COMPLETE with the
    final objective for a trial that finished, PRUNED for one ASHA stopped (its running objective covers only some
    targets), FAIL for one that errored. Each Optuna trial carries the Tune trial id and the cell as user attributes."""

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if config is not None and ot_trial is not None:
            ot_trial.set_user_attr("tune_trial_id", trial_id)
            ot_trial.set_user_attr("cell", cell_label(config["cell"]))
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return   # a rerun of a trial the study already closed: record_reruns adds it after the stage
        closed = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
        if ot_trial.number in {t.number for t in self._ot_study.get_trials(deepcopy=False, states=closed)}:
            # The study was told before the driver died and Tune's saved state (up to a second old) has the trial
            # still running, so --resume ran it again: the study keeps what it was told first.
            self._completed_trials.add(trial_id)
            return
        value = (result or {}).get(self.metric)
        finished = (not error and (result or {}).get("trial_complete") == 1 and isinstance(value, (int, float))
                    and math.isfinite(value))
        state = (optuna.trial.TrialState.COMPLETE if finished else
                 optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.PRUNED)
        self._ot_study.tell(ot_trial, value if finished else None, state=state)
        self._completed_trials.add(trial_id)


def optuna_study(experiment: str, experiment_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=f"{experiment}-search", storage=_optuna_storage(experiment_dir))


def _optuna_storage(experiment_dir: Path) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{experiment_dir / 'optuna.db'}")


def record_reruns(study: optuna.Study, space: dict, results) -> int:
    """Add to the study, as COMPLETE trials, the search trials that finished in a rerun (`--resume` after an error):
    Optuna never reopens a trial it closed as FAIL, and Tune does not tell the searcher about reruns."""
    told = {t.user_attrs.get("tune_trial_id") for t in study.get_trials(deepcopy=False,
                                                                        states=(optuna.trial.TrialState.COMPLETE,))}
    added = 0
    for result in results:
        metrics, config = result.metrics or {}, result.config or {}
        value = metrics.get(OBJECTIVE)
        if (metrics.get("trial_complete") != 1 or metrics.get("trial_id") in told or value is None
                or not math.isfinite(value)):
            continue
        study.add_trial(optuna.trial.create_trial(
            params={name: config[name] for name in space}, distributions=space, value=value,
            user_attrs={"tune_trial_id": metrics["trial_id"], "cell": cell_label(config["cell"]), "rerun": True}))
        added += 1
    return added


def optuna_space(preset: Preset, cells: list[str]) -> dict:
    space = {"cell": optuna.distributions.CategoricalDistribution(cells)}
    for name, value in preset.hyperparameters.items():
        if isinstance(value, tuple) and value[0] == "loguniform":
            space[name] = optuna.distributions.FloatDistribution(value[1], value[2], log=True)
        elif isinstance(value, tuple) and value[0] == "choice":
            space[name] = optuna.distributions.CategoricalDistribution(list(value[1]))
    return space


def _tuner(name: str, experiment_dir: Path, resume: bool, callbacks: list, param_space: dict,
           make_tune_config) -> tune.Tuner:
    """A restored Tune experiment when resuming one that exists (its errored and unfinished trials run again under
    their own trial ids, finished ones are kept), else a new one."""
    path = experiment_dir / "tune" / name
    if resume and tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), TRAINABLE, resume_unfinished=True, resume_errored=True)
    # Ray Train restarts a trial's lost workers itself; a trial whose own actor was lost with its node runs once
    # more, and its Train run (same name) goes on from its last checkpoint. Not more: a bug would rerun each time.
    retries = min(1, param_space.get("max_failures", TrialConfig.max_failures))
    return tune.Tuner(TRAINABLE, param_space=param_space, tune_config=make_tune_config(),
                      run_config=tune.RunConfig(name=name, storage_path=str(experiment_dir / "tune"), verbose=0,
                                                callbacks=callbacks,
                                                failure_config=tune.FailureConfig(max_failures=retries)))


def run_sweep(preset: Preset, plan: dict, *, experiment: str, experiment_dir: Path, tracking_uri: str,
              resume: bool, resume_command: str = "") -> dict:
    """Run (or resume) both stages; returns the outcome read back from MLflow (SweepTracker.outcome) plus the
    tracker, whose parent run `finish_sweep` closes once the analysis has run."""
    state_path = experiment_dir / "sweep_state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"stage": "search"}
    state.update(preset=preset.name, plan={k: v for k, v in plan.items() if k != "cells"})
    save_json(state_path, state)

    # With the experiment folder the tracker finds its MLflow journal: writes the last run left pending replay first.
    tracker = SweepTracker(tracking_uri, experiment, preset.name, artifact_location(tracking_uri, experiment_dir),
                           experiment_dir=experiment_dir)
    tracker.start(sweep_note(preset, plan, experiment_dir, resume_command), preset.targets)
    constants = preset.trial_constants()
    constants.update(storage_path=str(experiment_dir), cache_dir=str(experiment_dir / "phase2_cache"))
    cells = [cell.cell_id for cell in plan["cells"]]
    metric_names = {target: get_task(target).metric for target in preset.targets}

    def callbacks(stage: str, trials_before: int) -> list:
        results = experiment_dir / "results.csv"
        return [TrackingCallback(tracking_uri, experiment, preset.name, results, stage, metric_names, cells),
                SweepProgress(stage, total_trials=plan["trials"], trials_before=trials_before, cells=cells,
                              results_path=results, max_concurrent=plan["max_concurrent"],
                              seconds_per_trial=preset.seconds_per_trial_estimate)]

    # A resumed sweep restores each stage it reached, so that trials that failed there run again.
    search = _tuner("search", experiment_dir, resume, callbacks("search", 0), constants,
                    lambda: _search_config(preset, plan, cells, experiment, experiment_dir))
    with StopOnCtrlC():
        search_results = search.fit()
    record_reruns(optuna_study(experiment, experiment_dir), optuna_space(preset, cells), search_results)
    if state["stage"] == "search":
        state["stage"] = "replicate"
        save_json(state_path, state)

    replicas = replicate_configs(preset, plan["seeds"], cells, search_results)
    if replicas or (resume and tune.Tuner.can_restore(str(experiment_dir / "tune" / "replicate"))):
        # BasicVariantGenerator fills points_to_evaluate into keys the param_space already has.
        replicate = _tuner("replicate", experiment_dir, resume, callbacks("replicate", plan["num_samples"]),
                           {**constants, **(replicas or [{}])[0]}, lambda: _replicate_config(replicas, plan))
        with StopOnCtrlC():
            replicate.fit()
    state["stage"] = "done"
    save_json(state_path, state)
    orphans = tracker.mark_orphans()
    outcome = tracker.outcome()
    tracker.update_view(preset.targets, outcome["languages"])
    return {**outcome, "orphans": orphans, "tracker": tracker, "experiment": experiment,
            "results": experiment_dir / "results.csv", "resume_command": resume_command}


def sweep_note(preset: Preset, plan: dict, experiment_dir: Path, resume_command: str) -> str:
    cells = plan["cells"]
    replicas = len(cells) * (plan["seeds"] - 1)
    return (f"Preset `{preset.name}`: model `{preset.model}`, targets {', '.join(preset.targets)}; "
            f"{len(cells)} data cells ({', '.join(cell_label(cell.cell_id) for cell in cells)}).\n"
            f"Search stage: {plan['num_samples']} trials (Optuna TPE + ASHA); replicate stage: {replicas} trials "
            f"({plan['seeds']} seeds per cell), and seed 0 of any cell the search left without a finished trial; "
            f"{plan['max_concurrent']} at once.\n"
            f"Storage: `{experiment_dir}` (results.csv, optuna.db, tune/)."
            + (f"\nResume: `{resume_command}`" if resume_command else ""))


EXIT_TRIALS_FAILED, EXIT_ANALYSIS_FAILED = 1, 3


def finish_sweep(outcome: dict, analysis: tuple[int, str] | None) -> tuple[int, str]:
    """Print what became of the trials (the failed ones with their first error lines and the resume command) and of
    the analysis, close the MLflow parent run with the same words, and return the exit status: 1 when any trial
    ended in an error, else 3 when the analysis failed, else 0."""
    counts = outcome["counts"]
    lines = [f"sweep {outcome['experiment']}: {outcome['trials']} trials, {counts['FINISHED']} finished, "
             f"{counts['FAILED']} failed, {counts['KILLED']} stopped early (ASHA)"
             + (f" or orphaned by a dead driver ({outcome['orphans']})" if outcome["orphans"] else "")
             + f"; results: {outcome['results']}"]
    trained, alone = outcome.get("phase2_passes", (0, 0))
    if alone:
        lines.append(f"phase 2 trained {trained:,.0f} example-passes ({alone:,.0f} with every size trained alone: "
                     f"{trained / alone:.2f})")
    if outcome.get("early_stopping", {}).get("stopped"):
        lines.append(early_stopping_line(outcome["early_stopping"]))
    if outcome["failures"]:
        lines.append(f"{len(outcome['failures'])} trial(s) ended in an error (MLflow status FAILED, NaN scores in "
                     "results.csv):")
        for failure in outcome["failures"]:
            error = failure["error"].replace("\n", "\n      ")
            lines.append(f"  {failure['name']} [{failure['trial']}]:\n      {error}")
        lines.append("after fixing the cause, rerun them (finished trials are kept): " + outcome["resume_command"])
    code = EXIT_TRIALS_FAILED if outcome["failures"] else 0
    if analysis is not None and analysis[0] != 0:
        lines.append(f"the analysis failed (exit {analysis[0]}); rerun it with: {analysis[1]}")
        code = code or EXIT_ANALYSIS_FAILED
    summary = "\n".join(lines)
    outcome["tracker"].close("FINISHED" if code == 0 else "FAILED", summary, tags={
        "xstilts.trials": outcome["trials"], "xstilts.trials_failed": counts["FAILED"],
        "xstilts.trials_killed": counts["KILLED"], "xstilts.analysis": "skipped" if analysis is None else
        "ok" if analysis[0] == 0 else f"failed (exit {analysis[0]})"})
    return code, summary


def early_stopping_line(saved: dict) -> str:
    """One line on ASHA's stops and what they saved (sweeps.tracking.early_stopping_savings)."""
    after = "/".join(map(str, saved["after_targets"])) or "?"
    line = f"ASHA stopped {saved['stopped']} trial(s) after {after} target(s)"
    if not saved["measured"]:
        return line + " (no finished trial of their cells to measure the saving against)"
    share = saved["steps_skipped"] / max(1.0, saved["steps_run"] + saved["steps_skipped"])
    return (line + f": they skipped {saved['steps_skipped']:.0f} of the {saved['steps_in_full']:.0f} optimizer steps "
            f"and ~{saved['seconds_skipped']:.0f} of the ~{saved['seconds_in_full']:.0f} s that finished trials of "
            f"their cells took ({share:.0%} of all the steps the sweep would have run)")


def _search_config(preset: Preset, plan: dict, cells: list[str], experiment: str,
                   experiment_dir: Path) -> tune.TuneConfig:
    start = default_point(preset.hyperparameters)
    searcher = SweepOptunaSearch(
        space=optuna_space(preset, cells), metric=OBJECTIVE, mode="max",
        points_to_evaluate=[{"cell": cell, **start} for cell in largest_first(cells)],
        sampler=optuna.samplers.TPESampler(seed=0), study_name=f"{experiment}-search",
        storage=_optuna_storage(experiment_dir))
    scheduler = CoveringASHA(time_attr="targets_evaluated", metric=OBJECTIVE, mode="max",
                             max_t=len(preset.targets) + 1, grace_period=1, reduction_factor=3)
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=plan["num_samples"],
                           max_concurrent_trials=plan["max_concurrent"], trial_name_creator=trial_name)


def largest_first(cells: list[str]) -> list[str]:
    """All cells by intermediate size, largest first (ties in the order given). The longest trials start first, so a
    stage does not end with one long trial running alone (with the cells in their own order, the laptop's search
    stage ended ~2 minutes after its ideal); and a shared ladder's largest run leaves the trunk snapshots its smaller
    sizes start from."""
    return sorted(cells, key=lambda cell: -int(cell.rsplit(":", 1)[1]) if ":" in cell else 0)


def _replicate_config(replicas: list[dict], plan: dict) -> tune.TuneConfig:
    # Tune ignores max_concurrent_trials for a BasicVariantGenerator (it only wraps Searchers): the generator must
    # limit itself, or every replica starts at once and each waits for its workers holding ~0.9 GB (a laptop run's
    # 24 replicas ran its 24 GB machine out of memory).
    return tune.TuneConfig(search_alg=BasicVariantGenerator(points_to_evaluate=replicas,
                                                            max_concurrent=plan["max_concurrent"]),
                           num_samples=len(replicas), max_concurrent_trials=plan["max_concurrent"],
                           trial_name_creator=trial_name)


def trial_name(trial) -> str:
    """How Tune shows a trial (its tables, error summaries): the cell, the seed and the trial id."""
    return f"{cell_label(trial.config['cell'])} s{trial.config['seed']} {trial.trial_id}"


def replicate_configs(preset: Preset, seeds: int, cells: list[str], results) -> list[dict]:
    """For every cell (largest first): its best finished search configuration with seeds
    1..seeds-1; a cell without any finished trial also gets seed 0 (with the default hyperparameters when no trial
    of it finished)."""
    best: dict[str, tuple[float, dict]] = {}
    for result in results:
        metrics, config = result.metrics or {}, result.config or {}
        objective = metrics.get("objective")
        if metrics.get("trial_complete") == 1 and objective is not None and math.isfinite(objective):
            if config["cell"] not in best or objective > best[config["cell"]][0]:
                best[config["cell"]] = (objective, config)
    searched = list(optuna_space(preset, cells))
    replicas = []
    for cell in largest_first(cells):   # the longest trials first, as in the search stage
        found = best.get(cell)
        point = ({name: found[1][name] for name in searched} if found
                 else {"cell": cell, **default_point(preset.hyperparameters)})
        needed = range(1, seeds) if found else range(0, seeds)
        replicas += [{**point, "seed": seed} for seed in needed]
    return replicas
