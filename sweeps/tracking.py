"""Where trial results go: MLflow (a parent run per sweep, a child run per trial) and results.csv.

Both are written from a Ray Tune callback in the driver, as trials report and end, and both are keyed by
`(stage, trial_id)`: a sweep resumed after a crash reuses a trial's MLflow run and replaces its rows, so the two
records agree after any resume. A child run's status says what became of its trial: FINISHED (scored), FAILED (an
error; its partial metrics are no result, its row in results.csv has a NaN score) or KILLED (stopped early by ASHA,
or left behind by a driver that died before Tune saved the trial; no rows in results.csv).

The experiment is marked as a model-training one (tag `mlflow.experimentKind`), so the MLflow 3 UI opens on its
runs, and carries a saved view ("Views" menu) with the objective and the test scores as columns.
"""
from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH
from ray.tune import Callback

from analysis.schema import (COUNT_PREFIX, OBJECTIVE, TEST_PREFIX, TRUNCATED_PREFIX, VALIDATION_PREFIX,
                             parse_metric_key)
from search_spaces.axes import DataCell
from sweeps.results_table import ResultsTable, cell_key, result_rows
from trainables.trial_config import PARAM, TrialConfig

# The MLflow UI's own tags (mlflow/server/js: experimentKind values; saved views are experiment tags with this
# prefix holding {"name", "createdAt", "updatedAt", "state": JSON of the runs table's facets and columns}).
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
NOTE = "mlflow.note.content"
SAVED_VIEW = "mlflow.sharedViewState.xstilts-scores"
ROLE, TRIAL_ROLE, SWEEP_ROLE = "xstilts.role", "trial", "sweep"
ERROR_TAG = "xstilts.error"
STOPPED_TAG = "xstilts.stopped_by"   # "asha" on a trial the scheduler stopped early (orphans are KILLED without it)
EXPERIMENT_NOTE = """X-STILTs scale-vs-quality sweep: does more English intermediate-task data keep paying off for
zero-shot cross-lingual transfer, or does a small multilingual set beat it?

One parent run per sweep (`sweep-PRESET`: plan, outcome, and the analysis report, summary and plots as artifacts)
and one child run per trial, named `SOURCE:QUALITY:SIZE sSEED STAGE #N`. Metrics: `objective` (the mean validation
score the search maximises), `score.TARGET.LANGUAGE` (test, in points), `val.*` (validation), `n.*` (test examples).
The view *Test scores per trial* (Views menu) shows them as columns. Status FAILED: the trial ended in an error (its
partial scores are no result); KILLED: stopped early by ASHA, or orphaned by a driver that died."""


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cell_label(cell_id: str) -> str:
    """'english:en_paraphrase:hard:4000' -> 'english:hard:4000'; the baseline is 'baseline'."""
    cell = DataCell.from_id(cell_id)
    return "baseline" if cell.size == 0 else f"{cell.source}:{cell.quality}:{cell.size}"


def first_error_lines(text: str, limit: int = 2) -> str:
    """The exception line of a trial's latest failure in Tune's error.txt, and its cause when Ray Train wrapped it."""
    latest = re.split(r"(?m)^Failure # \d+.*$", text or "")[-1]
    lines = [line.rstrip() for line in latest.splitlines()]
    exception = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
    found = [i for i, line in enumerate(lines) if exception.match(line)]
    if not found:
        return next((line.strip() for line in lines if line.strip()), "unknown error")[:300]
    picked = [lines[found[0]]]
    snippet = next((i for i in range(found[0], len(lines)) if lines[i].endswith("Error Snippet]:")), None)
    if snippet is not None:   # Ray Train: the worker's own exception, else the snippet's first line
        inner = [i for i in found if i > snippet]
        cause = lines[inner[-1]] if inner else next((x for x in lines[snippet + 1:] if x.strip()), "")
        picked.append(cause.strip())
    return "\n".join(line[:300] for line in picked[:limit])


def artifact_location(tracking_uri: str, experiment_dir: Path) -> str | None:
    """Artifacts beside the results when the store is local; a tracking server keeps its own default."""
    local = not tracking_uri.startswith(("http://", "https://", "databricks"))
    return (Path(experiment_dir) / "mlartifacts").as_uri() if local else None


def _trial_index(trial) -> str:
    tag = getattr(trial, "experiment_tag", "") or ""
    return tag.split("_", 1)[0] if tag[:1].isdigit() else trial.trial_id


class SweepTracker:
    """The sweep's MLflow experiment and parent run; one child run per (stage, trial)."""

    def __init__(self, tracking_uri: str, experiment: str, preset: str, artifact_location: str | None = None):
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_location,
                tags={EXPERIMENT_KIND: MODEL_TRAINING, NOTE: EXPERIMENT_NOTE})
        else:
            self.experiment_id = found.experiment_id
            if found.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:   # a sweep started by an older version
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        self.preset, self.commit = preset, git_commit()
        parents = self.client.search_runs([self.experiment_id], f"tags.`{ROLE}` = '{SWEEP_ROLE}'", max_results=1)
        if parents:
            self.parent_id = parents[0].info.run_id
        else:
            self.parent_id = self.client.create_run(
                self.experiment_id, run_name=f"sweep-{preset}",
                tags={ROLE: SWEEP_ROLE, "xstilts.preset": preset, "xstilts.git_commit": self.commit}
            ).info.run_id

    # ------------------------------------------------------------------------------------------- the sweep
    def start(self, description: str, targets) -> None:
        """The parent run is running again (a resumed sweep), says what the sweep is, and the saved view exists."""
        self.client.update_run(self.parent_id, status="RUNNING")
        self.client.set_tag(self.parent_id, NOTE, description)
        self.update_view(targets)

    def update_view(self, targets, languages: dict | None = None) -> None:
        columns = [f"metrics.`{OBJECTIVE}`"]
        for target in targets:
            columns.append(f"metrics.`{TEST_PREFIX}.{target}.avg`")
            columns += [f"metrics.`{TEST_PREFIX}.{target}.{lang}`" for lang in sorted((languages or {}).get(target, ()))
                        if lang != "avg"]
        columns += ["params.`lr_intermediate`", "params.`lr_target`"]
        state = {"searchFilter": f"tags.`{ROLE}` = '{TRIAL_ROLE}'", "orderByKey": f"metrics.`{OBJECTIVE}`",
                 "orderByAsc": False, "selectedColumns": columns}
        now = int(time.time() * 1000)
        view = {"name": "Test scores per trial", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
        self.client.set_experiment_tag(self.experiment_id, SAVED_VIEW, json.dumps(view))

    def trial_runs(self) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.parent_id}' and "
                                      f"tags.`{ROLE}` = '{TRIAL_ROLE}'", page_token=token)
            runs += page
            token = page.token
            if not token:
                return runs

    def mark_orphans(self) -> int:
        """Runs still RUNNING once every Tune trial has ended belong to trials Tune never restored (the driver died
        before saving them): KILLED. Returns how many."""
        orphans = [run for run in self.trial_runs() if run.info.status == "RUNNING"]
        for run in orphans:
            self._note(run.info.run_id, "KILLED: its driver died before Tune saved the trial; a resumed sweep ran "
                                        "the search on without it.")
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(orphans)

    def outcome(self) -> dict:
        """Trials by status, the failed ones with their first error lines, and the test-score languages."""
        runs = self.trial_runs()
        counts = {status: 0 for status in ("FINISHED", "FAILED", "KILLED", "RUNNING")}
        failures, languages = [], {}
        for run in runs:
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
            if run.info.status == "FAILED":
                failures.append({"name": run.info.run_name, "trial": run.data.tags.get("xstilts.trial_key", ""),
                                 "error": run.data.tags.get(ERROR_TAG, "unknown error")})
            for key in run.data.metrics:
                pair = parse_metric_key(key, TEST_PREFIX)
                if pair:
                    languages.setdefault(pair[0], set()).add(pair[1])
        return {"trials": len(runs), "counts": counts, "failures": sorted(failures, key=lambda f: f["trial"]),
                "languages": languages, "early_stopping": early_stopping_savings(runs)}

    def close(self, status: str, summary: str, tags: dict | None = None) -> None:
        description = self.client.get_run(self.parent_id).data.tags.get(NOTE, "").split("\n\n## Outcome")[0]
        self.client.set_tag(self.parent_id, NOTE, _fit(f"{description}\n\n## Outcome\n\n{summary}"))
        for name, value in (tags or {}).items():
            self.client.set_tag(self.parent_id, name, value)
        self.client.set_terminated(self.parent_id, status)

    def best_objective(self) -> tuple[float, str] | None:
        runs = self.client.search_runs([self.experiment_id], f"tags.`{ROLE}` = '{TRIAL_ROLE}' and "
                                       "attributes.status = 'FINISHED'",
                                       order_by=[f"metrics.{OBJECTIVE} DESC"], max_results=1)
        if not runs or OBJECTIVE not in runs[0].data.metrics:
            return None
        return runs[0].data.metrics[OBJECTIVE], runs[0].info.run_name

    # ------------------------------------------------------------------------------------------- the trials
    def child_run(self, stage: str, trial_id: str, config: dict, index: str = "") -> str:
        """The trial's run, created once; found again when a resumed sweep restarts the trial (then RUNNING)."""
        key = f"{stage}:{trial_id}"
        found = self.client.search_runs([self.experiment_id], f"tags.`xstilts.trial_key` = '{key}'",
                                        max_results=1)
        if found:
            run = found[0]
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
            if ERROR_TAG in run.data.tags:
                self.client.delete_tag(run.info.run_id, ERROR_TAG)
            return run.info.run_id
        cell = DataCell.from_id(config["cell"])
        name = f"{cell_label(config['cell'])} s{config['seed']} {stage} #{index or trial_id}"
        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            "mlflow.parentRunId": self.parent_id, ROLE: TRIAL_ROLE, "xstilts.trial_key": key,
            "xstilts.stage": stage, "xstilts.preset": self.preset, "xstilts.git_commit": self.commit,
            NOTE: _trial_note(stage, trial_id, config)})
        params = TrialConfig.from_dict(config).marked(PARAM)
        params.update(source=cell.source, quality=cell.quality, size=cell.size, intermediate_task=cell.task,
                      stage=stage, trial_id=trial_id, targets=",".join(config["targets"]))
        self.client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def log_step(self, run_id: str, metrics: dict, final: bool = False) -> None:
        step = int(metrics.get("global_step", 0))
        prefixes = (TEST_PREFIX + ".", VALIDATION_PREFIX + ".") + ((COUNT_PREFIX + ".", TRUNCATED_PREFIX + ".")
                                                                   if final else ())
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and (k in ("loss", "lr", OBJECTIVE) or k.startswith(prefixes))}
        stamp = int(time.time() * 1000)
        finite = [mlflow.entities.Metric(k, v, stamp, step) for k, v in values.items() if math.isfinite(v)]
        for start in range(0, len(finite), 1000):   # log_batch takes at most 1000 metrics
            self.client.log_batch(run_id, metrics=finite[start:start + 1000])

    def finish(self, run_id: str, config: dict, metrics: dict, metric_names: dict, status: str,
               error: str = "") -> None:
        final = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.log_step(run_id, final, final=True)
        for name in ("phase2_cache_hit", "peak_rss_mb", "time_total_s", "resumed_from_step", "global_step",
                     "targets_evaluated"):
            if name in final and math.isfinite(final[name]):
                self.client.log_metric(run_id, name, float(final[name]))
        for target, metric in metric_names.items():
            self.client.set_tag(run_id, f"metric.{target}", metric)
        if error:
            self.client.set_tag(run_id, ERROR_TAG, error[:5000])
        if status == "KILLED":
            self.client.set_tag(run_id, STOPPED_TAG, "asha")
        self._note(run_id, _outcome_line(status, final, config, error))
        self.client.log_dict(run_id, config, "config.json")
        self.client.log_dict(run_id, final, "final_evaluation.json")
        self.client.set_terminated(run_id, status)

    def _note(self, run_id: str, outcome: str) -> None:
        note = self.client.get_run(run_id).data.tags.get(NOTE, "").split("\n\n**Outcome**")[0]
        self.client.set_tag(run_id, NOTE, _fit(f"{note}\n\n**Outcome**: {outcome}"))


def early_stopping_savings(runs) -> dict:
    """What ASHA's stops saved, measured against the trials that ran to the end: a stopped trial would have run as
    many optimizer steps and seconds as the median finished trial of its data cell (the same data, so the same
    steps; the learning rates change neither), less what it had run when stopped."""
    def cell(run) -> tuple:
        return tuple(run.data.params.get(name) for name in ("source", "intermediate_task", "quality", "size"))

    finished: dict[tuple, list[tuple[float, float]]] = {}
    for run in runs:
        metrics = run.data.metrics
        if run.info.status == "FINISHED" and "global_step" in metrics and "time_total_s" in metrics:
            finished.setdefault(cell(run), []).append((metrics["global_step"], metrics["time_total_s"]))
    stopped = [run for run in runs if run.data.tags.get(STOPPED_TAG) == "asha"]
    saved = {"stopped": len(stopped), "measured": 0, "steps_skipped": 0.0, "steps_in_full": 0.0,
             "seconds_skipped": 0.0, "seconds_in_full": 0.0,
             "steps_run": sum(run.data.metrics.get("global_step", 0.0) for run in runs),
             "after_targets": sorted({int(run.data.metrics.get("targets_evaluated", 0)) for run in stopped})}
    for run in stopped:
        full = finished.get(cell(run))
        if not full:
            continue
        steps, seconds = (statistics.median(values) for values in zip(*full))
        saved["measured"] += 1
        saved["steps_in_full"] += steps
        saved["seconds_in_full"] += seconds
        saved["steps_skipped"] += max(0.0, steps - run.data.metrics.get("global_step", steps))
        saved["seconds_skipped"] += max(0.0, seconds - run.data.metrics.get("time_total_s", seconds))
    return saved


def _fit(text: str, limit: int = MAX_TAG_VAL_LENGTH) -> str:
    """A tag value MLflow accepts: cut to its length limit, saying so."""
    return text if len(text) <= limit else text[:limit - 40] + "\n... (cut: see the sweep's stderr)"


def _trial_note(stage: str, trial_id: str, config: dict) -> str:
    cell = DataCell.from_id(config["cell"])
    data = ("no intermediate phase (the baseline)" if cell.size == 0 else
            f"{cell.size:,} {cell.source} examples of `{cell.task}`, quality tier `{cell.quality}`")
    return (f"**{stage} stage**, Tune trial `{trial_id}`, seed {config['seed']}: {data}.\n"
            f"Learning rates: intermediate {config['lr_intermediate']:.3g}, target {config['lr_target']:.3g}. "
            f"Targets: {', '.join(config['targets'])} (zero-shot; test scores in `score.TARGET.LANGUAGE`).")


def _outcome_line(status: str, metrics: dict, config: dict, error: str) -> str:
    if status == "FAILED":
        return "FAILED: " + error.replace("\n", " / ")
    if status == "KILLED":
        return (f"KILLED: stopped early (ASHA) after {metrics.get('targets_evaluated', '?')} target(s), at global step "
                f"{metrics.get('global_step', '?')}.")
    scores = ", ".join(f"{target} {metrics[f'{TEST_PREFIX}.{target}.avg']:.1f}" for target in config["targets"]
                       if f"{TEST_PREFIX}.{target}.avg" in metrics)
    return f"finished: objective {metrics.get(OBJECTIVE, math.nan):.1f}; test avg {scores or 'n/a'}."


class TrackingCallback(Callback):
    """Tune callback: MLflow runs and results rows as trials report and end, plus one progress line.

    Only plain settings are kept between runs (Tune pickles callbacks with the experiment); the MLflow client
    and the results table are opened in `setup`, which a resumed sweep calls again."""

    def __init__(self, tracking_uri: str, experiment: str, preset: str, results_path: Path, stage: str,
                 metric_names: dict, cells: list[str]):
        self.settings = dict(tracking_uri=tracking_uri, experiment=experiment, preset=preset,
                             artifact_location=artifact_location(tracking_uri, results_path.parent))
        self.results_path, self.stage, self.metric_names, self.cells = results_path, stage, metric_names, cells

    def setup(self, **info):
        self.tracker = SweepTracker(**self.settings)
        self.table = ResultsTable(self.results_path)
        finished = self.table.finished_cells
        self.done_cells = {cell for cell in self.cells if _key_of(cell) in finished}
        self.runs: dict[str, str] = {}
        self.best = self.tracker.best_objective()

    def __getstate__(self):
        keep = ("settings", "results_path", "stage", "metric_names", "cells")
        return {name: value for name, value in self.__dict__.items() if name in keep}

    def _run(self, trial) -> str:
        if trial.trial_id not in self.runs:
            self.runs[trial.trial_id] = self.tracker.child_run(self.stage, trial.trial_id, trial.config,
                                                               _trial_index(trial))
        return self.runs[trial.trial_id]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.log_step(self._run(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, trial.last_result or {}, error="")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, trial.last_result or {}, error=first_error_lines(_error_text(trial)))

    def _finish(self, trial, metrics: dict, error: str) -> None:
        complete = metrics.get("trial_complete") == 1 and not error
        status = "FINISHED" if complete else "FAILED" if error else "KILLED"
        run_id = self._run(trial)
        self.tracker.finish(run_id, trial.config, metrics, self.metric_names, status, error)
        if status != "KILLED":   # a trial ASHA stopped early is no data point, and no failure
            self.table.record(result_rows(trial.trial_id, self.stage, trial.config, metrics if complete else {},
                                          self.metric_names))
        label = f"{cell_label(trial.config['cell'])} s{trial.config['seed']}"
        if complete:
            self.done_cells.add(trial.config["cell"])
            objective = metrics.get(OBJECTIVE, math.nan)
            if math.isfinite(objective) and (self.best is None or objective > self.best[0]):
                self.best = (objective, label)
        best = f"{self.best[0]:.1f} ({self.best[1]})" if self.best else "n/a"
        what = {"FINISHED": "finished", "FAILED": "FAILED", "KILLED": "stopped early"}[status]
        print(f"[{self.stage}] cells done {len(self.done_cells)}/{len(self.cells)} | trial {trial.trial_id} "
              f"({label}) {what} | best objective so far {best}", file=sys.stderr, flush=True)
        if error:
            print(f"[{self.stage}]   {error.splitlines()[0]}", file=sys.stderr, flush=True)


def _error_text(trial) -> str:
    """Tune's error.txt of the trial: in the driver's staging folder when the error has just happened (it reaches
    the experiment's storage at the next sync), else in storage."""
    local = trial.error_file if trial.storage is not None else None
    if local and Path(local).is_file():
        return Path(local).read_text(errors="replace")
    return trial.get_error() or ""


def _key_of(cell: str) -> tuple[str, str, int]:
    parsed = DataCell.from_id(cell)
    return cell_key(parsed.source, parsed.quality, parsed.size)


def save_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    tmp.replace(path)
