"""Where trial results go: MLflow (a parent run per sweep, a child run per trial) and results.csv.

Both are written from a Ray Tune callback in the driver, as trials report and end, and both are keyed by
`(stage, trial_id)`: a sweep resumed after a crash reuses a trial's MLflow run and replaces its rows, so the two
records agree after any resume. A child run's status says what became of its trial: FINISHED (scored), FAILED (an
error; its partial metrics are no result, its row in results.csv has a NaN score) or KILLED (stopped early by ASHA,
or left behind by a driver that died before Tune saved the trial; no rows in results.csv).

The experiment is marked as a model-training one (tag `mlflow.experimentKind`; MLflow 3.17's UI still opens it on
its GenAI overview, so the sweep prints the address of the runs view, `?workflowType=machine_learning`), and carries
a saved view ("Views" menu) with the objective and the test scores as columns. The Tune side is
sweeps/tracking_callback.py.
"""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from analysis.schema import (COUNT_PREFIX, OBJECTIVE, TEST_PREFIX, TRUNCATED_PREFIX, VALIDATION_PREFIX,
                             parse_metric_key)
from search_spaces.axes import DataCell
from sweeps.mlflow_journal import JOURNAL_NAME, BufferedClient, unreachable
from sweeps.results_table import ResultsTable
from trainables.mixtures import mixture_record
from trainables.trial_config import PARAM, TrialConfig

# The MLflow UI's own tags (mlflow/server/js: experimentKind values; saved views are experiment tags with this
# prefix holding {"name", "createdAt", "updatedAt", "state": JSON of the runs table's facets and columns}).
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
NOTE = "mlflow.note.content"
SAVED_VIEW = "mlflow.sharedViewState.xstilts-scores"
ROLE, TRIAL_ROLE, SWEEP_ROLE = "xstilts.role", "trial", "sweep"
ERROR_TAG = "xstilts.error"
TRIAL_KEY = "xstilts.trial_key"   # (stage):(Tune trial id), one run per key
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


def artifact_location(tracking_uri: str, experiment_dir: Path) -> str | None:
    """Artifacts beside the results when the store is local; a tracking server keeps its own default."""
    local = not tracking_uri.startswith(("http://", "https://", "databricks"))
    return (Path(experiment_dir) / "mlartifacts").as_uri() if local else None


# One buffered client per (tracking URI, experiment) in this process, shared by the driver's trackers (run_sweep's
# and each stage's TrackingCallback's): they write through one journal, whose folder only a callback knows (an http
# tracking URI says nothing about the storage path), in one order. With it, the experiment and parent run ids the
# last tracker found, so that a tracker opened while MLflow is unreachable (a stage starting in an outage) can write.
_SWEEP_CLIENTS: dict[tuple[str, str], BufferedClient] = {}
_SWEEP_IDS: dict[tuple[str, str], tuple[str, str]] = {}


class SweepTracker:
    """The sweep's MLflow experiment and parent run; one child run per (stage, trial).

    Writes go through a `BufferedClient` (sweeps/mlflow_journal.py): while the tracking server is unreachable they
    wait in STORAGE/EXPERIMENT/mlflow_pending.jsonl and are replayed, in order, at the first write (or read) after it
    answers again, at the end of the sweep, or at the next start of the experiment (`--resume`). A trial run created
    in an outage is created on replay. Reads the tracker can do without while MLflow is unreachable fall back: a
    trial run's note is the one it was created with, the best objective is unknown, orphans are marked at the next
    start, and the outcome is read from results.csv."""

    def __init__(self, tracking_uri: str, experiment: str, preset: str, artifact_location: str | None = None,
                 experiment_dir: Path | None = None):
        mlflow.set_tracking_uri(tracking_uri)
        sweep = (tracking_uri, experiment)
        if sweep not in _SWEEP_CLIENTS:
            _SWEEP_CLIENTS[sweep] = BufferedClient(tracking_uri, key_tag=TRIAL_KEY)
        self.client = _SWEEP_CLIENTS[sweep]
        if experiment_dir is not None:
            self.client.journal = Path(experiment_dir) / JOURNAL_NAME
        self.tracking_uri, self.preset, self.commit = tracking_uri, preset, git_commit()
        self.notes: dict[str, str] = {}     # run id -> its note, for outcomes written while MLflow is unreachable
        self.description = ""               # the parent run's, likewise
        try:
            self.experiment_id, self.parent_id = self._open(experiment, artifact_location)
        except Exception as error:   # noqa: BLE001 - only an unreachable store with known ids is let through
            if not unreachable(error) or sweep not in _SWEEP_IDS:
                raise
            self.experiment_id, self.parent_id = _SWEEP_IDS[sweep]
        _SWEEP_IDS[sweep] = (self.experiment_id, self.parent_id)

    def _open(self, experiment: str, artifact_location: str | None) -> tuple[str, str]:
        """The experiment (made a model-training one) and the sweep's parent run, created when missing."""
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = self.client.create_experiment(
                experiment, artifact_location=artifact_location,
                tags={EXPERIMENT_KIND: MODEL_TRAINING, NOTE: EXPERIMENT_NOTE})
        else:
            experiment_id = found.experiment_id
            if found.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:   # a sweep started by an older version
                self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        parents = self.client.search_runs([experiment_id], f"tags.`{ROLE}` = '{SWEEP_ROLE}'", max_results=1)
        if parents:
            return experiment_id, parents[0].info.run_id
        return experiment_id, self.client.store.create_run(
            experiment_id, run_name=f"sweep-{self.preset}",
            tags={ROLE: SWEEP_ROLE, "xstilts.preset": self.preset, "xstilts.git_commit": self.commit}).info.run_id

    def _read(self, read, fallback):
        """read(), or fallback() while MLflow is unreachable."""
        try:
            return read()
        except Exception as error:   # noqa: BLE001 - anything but unreachability is raised
            if not unreachable(error):
                raise
            return fallback()

    # ------------------------------------------------------------------------------------------- the sweep
    def start(self, description: str, targets) -> None:
        """The parent run is running again (a resumed sweep), says what the sweep is, and the saved view exists."""
        self.description = description
        self.client.update_run(self.parent_id, "RUNNING")
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
        before saving them): KILLED. Returns how many (0 while MLflow is unreachable: the next start marks them)."""
        orphans = [run for run in self._read(self.trial_runs, list) if run.info.status == "RUNNING"]
        for run in orphans:
            self._note(run.info.run_id, "KILLED: its driver died before Tune saved the trial; a resumed sweep ran "
                                        "the search on without it.", run.data.tags.get(NOTE, ""))
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(orphans)

    def outcome(self) -> dict:
        """Trials by status, the failed ones with their first error lines, and the test-score languages (from
        results.csv while MLflow is unreachable: the trials ASHA stopped early are not counted then)."""
        runs = self._read(self.trial_runs, lambda: None)
        if runs is None:
            return self._outcome_from_results()
        counts = {status: 0 for status in ("FINISHED", "FAILED", "KILLED", "RUNNING")}
        failures, languages = [], {}
        for run in runs:
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
            if run.info.status == "FAILED":
                failures.append({"name": run.info.run_name, "trial": run.data.tags.get(TRIAL_KEY, ""),
                                 "error": run.data.tags.get(ERROR_TAG, "unknown error")})
            for key in run.data.metrics:
                pair = parse_metric_key(key, TEST_PREFIX)
                if pair:
                    languages.setdefault(pair[0], set()).add(pair[1])
        passes = [sum(run.data.metrics.get(name, 0.0) for run in runs)
                  for name in ("phase2_example_passes", "phase2_example_passes_alone")]
        return {"trials": len(runs), "counts": counts, "failures": sorted(failures, key=lambda f: f["trial"]),
                "languages": languages, "early_stopping": early_stopping_savings(runs), "phase2_passes": passes}

    def _outcome_from_results(self) -> dict:
        results = self.client.journal.parent / "results.csv" if self.client.journal else None
        rows = ResultsTable(results).rows if results and results.exists() else []
        print(f"MLflow at {self.tracking_uri} unreachable: the sweep's outcome is read from {results} (trials "
              "stopped early by ASHA are not counted)", file=sys.stderr, flush=True)
        trials: dict[str, list[dict]] = {}
        for row in rows:
            trials.setdefault(f"{row['stage']}:{row['trial_id']}", []).append(row)
        counts = {"FINISHED": 0, "FAILED": 0, "KILLED": 0, "RUNNING": 0}
        failures, languages = [], {}
        for key, mine in trials.items():
            scored = [row for row in mine if _finite(row["score"])]
            counts["FINISHED" if scored else "FAILED"] += 1
            for row in scored:
                languages.setdefault(row["target_task"], set()).add(row["language"])
            if not scored:
                row = mine[0]
                label = "baseline" if int(row["size"]) == 0 else f"{row['source']}:{row['quality']}:{row['size']}"
                failures.append({"name": f"{label} s{row['seed']} {row['stage']}", "trial": key,
                                 "error": "(its error is in MLflow's pending writes and in Tune's error.txt)"})
        return {"trials": len(trials), "counts": counts, "failures": sorted(failures, key=lambda f: f["trial"]),
                "languages": languages, "early_stopping": early_stopping_savings([])}

    def close(self, status: str, summary: str, tags: dict | None = None) -> None:
        """The parent run's outcome and status. If MLflow cannot take them now, they wait in the journal with every
        other pending write, and a line on stderr says how many and how they get there."""
        note = self._read(lambda: self.client.get_run(self.parent_id).data.tags.get(NOTE, ""),
                          lambda: self.description)
        description = note.split("\n\n## Outcome")[0]
        self.client.set_tag(self.parent_id, NOTE, _fit(f"{description}\n\n## Outcome\n\n{summary}"))
        for name, value in (tags or {}).items():
            self.client.set_tag(self.parent_id, name, value)
        self.client.set_terminated(self.parent_id, status)
        if not self.client.flush():
            print(f"MLflow at {self.tracking_uri} is still unreachable: {len(self.client.pending())} write(s) wait "
                  f"in {self.client.journal}; the next start of this sweep (its command with --resume) replays "
                  "them, nothing else is needed", file=sys.stderr, flush=True)

    def best_objective(self) -> tuple[float, str] | None:
        runs = self._read(lambda: self.client.search_runs(
            [self.experiment_id], f"tags.`{ROLE}` = '{TRIAL_ROLE}' and attributes.status = 'FINISHED'",
            order_by=[f"metrics.{OBJECTIVE} DESC"], max_results=1), list)
        if not runs or OBJECTIVE not in runs[0].data.metrics:
            return None
        return runs[0].data.metrics[OBJECTIVE], runs[0].info.run_name

    # ------------------------------------------------------------------------------------------- the trials
    def child_run(self, stage: str, trial_id: str, config: dict, index: str = "") -> str:
        """The trial's run, created once; found again when a resumed sweep restarts the trial (then RUNNING).
        While MLflow is unreachable: a placeholder id, and the run is found or created on replay."""
        key = f"{stage}:{trial_id}"
        found = self._read(lambda: self.client.search_runs([self.experiment_id], f"tags.`{TRIAL_KEY}` = '{key}'",
                                                           max_results=1), lambda: None)
        if found:
            run = found[0]
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, "RUNNING")
            if ERROR_TAG in run.data.tags:
                self.client.delete_tag(run.info.run_id, ERROR_TAG)
            self.notes[run.info.run_id] = run.data.tags.get(NOTE, "")
            return run.info.run_id
        cell = DataCell.from_id(config["cell"])
        name = f"{cell_label(config['cell'])} s{config['seed']} {stage} #{index or trial_id}"
        note = _trial_note(stage, trial_id, config)
        run_id = self.client.create_run(self.experiment_id, name, {
            "mlflow.parentRunId": self.parent_id, ROLE: TRIAL_ROLE, TRIAL_KEY: key,
            "xstilts.stage": stage, "xstilts.preset": self.preset, "xstilts.git_commit": self.commit, NOTE: note})
        if found is None:   # unknown whether a run of this trial exists (a resumed one): as if it did
            self.client.update_run(run_id, "RUNNING")
            self.client.delete_tag(run_id, ERROR_TAG)
        params = TrialConfig.from_dict(config).marked(PARAM)
        params.update(source=cell.source, quality=cell.quality, size=cell.size, intermediate_task=cell.task,
                      stage=stage, trial_id=trial_id, targets=",".join(config["targets"]))
        if cell.size:   # a mixture's components, their sizes and its sampling rule (nothing for a single task)
            params.update(mixture_record(cell.task, cell.quality, cell.size))
        self.client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()])
        self.notes[run_id] = note
        return run_id

    def log_step(self, run_id: str, metrics: dict, final: bool = False) -> None:
        step = int(metrics.get("global_step", 0))
        prefixes = (TEST_PREFIX + ".", VALIDATION_PREFIX + ".") + ((COUNT_PREFIX + ".", TRUNCATED_PREFIX + ".")
                                                                   if final else ())
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and (k in ("loss", "lr", OBJECTIVE) or k.startswith(prefixes))}
        self._log_metrics(run_id, values, step)

    def _log_metrics(self, run_id: str, values: dict, step: int) -> None:
        stamp = int(time.time() * 1000)   # kept in the journal too: a point replayed twice is one point
        finite = [mlflow.entities.Metric(k, v, stamp, step) for k, v in values.items() if math.isfinite(v)]
        for start in range(0, len(finite), 1000):   # log_batch takes at most 1000 metrics
            self.client.log_batch(run_id, metrics=finite[start:start + 1000])

    def finish(self, run_id: str, config: dict, metrics: dict, metric_names: dict, status: str,
               error: str = "") -> None:
        final = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.log_step(run_id, final, final=True)
        self._log_metrics(run_id, {name: float(final[name]) for name in (
            "phase2_cache_hit", "peak_rss_mb", "time_total_s", "resumed_from_step", "global_step",
            "targets_evaluated", "phase2_example_passes", "phase2_example_passes_alone") if name in final}, step=0)
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

    def _note(self, run_id: str, outcome: str, note: str | None = None) -> None:
        if note is None:
            note = self._read(lambda: self.client.get_run(run_id).data.tags.get(NOTE, ""),
                              lambda: self.notes.get(run_id, ""))
        note = note.split("\n\n**Outcome**")[0]
        self.client.set_tag(run_id, NOTE, _fit(f"{note}\n\n**Outcome**: {outcome}"))


def _finite(text) -> bool:
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False


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
    mixture = mixture_record(cell.task, cell.quality, cell.size) if cell.size else {}
    if mixture:
        data += f" (a mixture: {mixture['mixture_component_sizes']}, sampling {mixture['mixture_sampling']})"
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


def save_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    tmp.replace(path)
