"""Where trial results go: MLflow (a parent run per sweep, a child run per trial) and the results table.

Both are written from Ray Tune callbacks in the driver, as trials report and finish. Both are idempotent on
`(stage, trial_id)`: a sweep resumed after a crash reuses a trial's MLflow run and never appends its rows twice.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from search_spaces.axes import DataCell

RESULTS_COLUMNS = ["trial_id", "stage", "source", "quality", "size", "seed", "lr_intermediate", "lr_target",
                   "target_task", "language", "metric", "score"]
PARAMS = ("cell", "seed", "model", "lr_intermediate", "lr_target", "epochs_intermediate", "epochs_target",
          "batch_size", "warmup_ratio", "freeze_word_embeddings", "max_length", "target_train_size")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def result_rows(trial_id: str, stage: str, config: dict, metrics: dict, metric_names: dict) -> list[dict]:
    """The results-table rows of one finished trial: one per (target, language), `avg` included.

    A trial that failed before scoring a target gets one `avg` row with an empty (NaN) score for it, so the
    analysis can count failures instead of silently missing them."""
    cell = DataCell.from_id(config["cell"])
    base = {"trial_id": trial_id, "stage": stage, "source": cell.source, "quality": cell.quality,
            "size": cell.size, "seed": config["seed"], "lr_intermediate": config["lr_intermediate"],
            "lr_target": config["lr_target"]}
    rows = []
    for target in config["targets"]:
        prefix = f"score.{target}."
        languages = [k[len(prefix):] for k in metrics if k.startswith(prefix) and "/" not in k[len(prefix):]]
        for language in languages or ["avg"]:
            score = metrics.get(prefix + language, math.nan)
            rows.append({**base, "target_task": target, "language": language,
                         "metric": metric_names.get(target, "score"), "score": score})
    return rows


def cell_key(source: str, quality: str, size) -> tuple[str, str, int]:
    """What identifies a data cell in the results table (the task is the preset's, so not a column)."""
    return source, quality, int(size)


class ResultsTable:
    """`results.csv` in DESIGN.md's schema, appended trial by trial."""

    def __init__(self, path: Path):
        self.path = path
        self.done, self.finished_cells = set(), set()
        if path.exists():
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle):
                    self.done.add((row["stage"], row["trial_id"]))
                    if row["score"] not in ("", "nan"):
                        self.finished_cells.add(cell_key(row["source"], row["quality"], row["size"]))

    def append(self, rows: list[dict]) -> None:
        rows = [row for row in rows if (row["stage"], row["trial_id"]) not in self.done]
        if not rows:
            return
        new_file = not self.path.exists()
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=RESULTS_COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerows(rows)
            handle.flush()
        self.done |= {(row["stage"], row["trial_id"]) for row in rows}


class SweepTracker:
    """The sweep's MLflow experiment and parent run; one child run per (stage, trial)."""

    def __init__(self, tracking_uri: str, experiment: str, preset: str, artifact_location: str | None = None):
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=artifact_location)
        self.preset, self.commit = preset, git_commit()
        parents = self.client.search_runs([self.experiment_id], "tags.`xstilts.role` = 'sweep'", max_results=1)
        if parents:
            self.parent_id = parents[0].info.run_id
        else:
            self.parent_id = self.client.create_run(
                self.experiment_id, run_name=f"sweep-{preset}",
                tags={"xstilts.role": "sweep", "xstilts.preset": preset, "xstilts.git_commit": self.commit}
            ).info.run_id

    def best_objective(self) -> tuple[float, str] | None:
        runs = self.client.search_runs([self.experiment_id], "tags.`xstilts.role` = 'trial'",
                                       order_by=["metrics.objective DESC"], max_results=1)
        if not runs or "objective" not in runs[0].data.metrics:
            return None
        params = runs[0].data.params
        return runs[0].data.metrics["objective"], f"{params.get('cell')} seed {params.get('seed')}"

    def child_run(self, stage: str, trial_id: str, config: dict) -> str:
        key = f"{stage}:{trial_id}"
        found = self.client.search_runs([self.experiment_id], f"tags.`xstilts.trial_key` = '{key}'",
                                        max_results=1)
        if found:
            return found[0].info.run_id
        cell = DataCell.from_id(config["cell"])
        run = self.client.create_run(self.experiment_id, run_name=f"{stage}-{config['cell']}-s{config['seed']}",
                                     tags={"mlflow.parentRunId": self.parent_id, "xstilts.role": "trial",
                                           "xstilts.trial_key": key, "xstilts.stage": stage,
                                           "xstilts.preset": self.preset, "xstilts.git_commit": self.commit})
        params = {name: config.get(name) for name in PARAMS}
        params.update(source=cell.source, quality=cell.quality, size=cell.size, stage=stage, trial_id=trial_id,
                      targets=",".join(config["targets"]))
        for name, value in params.items():
            self.client.log_param(run.info.run_id, name, value)
        return run.info.run_id

    def log_step(self, run_id: str, metrics: dict) -> None:
        step = int(metrics.get("global_step", 0))
        values = {k: float(v) for k, v in metrics.items()
                  if k in ("loss", "lr") or k.startswith(("score.", "val.")) or k == "objective"}
        stamp = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, stamp, step)
                                               for k, v in values.items() if math.isfinite(v)])

    def finish(self, run_id: str, config: dict, metrics: dict, metric_names: dict, status: str) -> None:
        final = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.log_step(run_id, final)
        for name in ("phase2_cache_hit", "peak_rss_mb", "time_total_s", "resumed_from_step"):
            if name in final:
                self.client.log_metric(run_id, name, float(final[name]))
        for target, metric in metric_names.items():
            self.client.set_tag(run_id, f"metric.{target}", metric)
        self.client.log_dict(run_id, config, "config.json")
        self.client.log_dict(run_id, final, "final_evaluation.json")
        self.client.set_terminated(run_id, status)

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status)


class TrackingCallback(Callback):
    """Tune callback: MLflow runs and results rows as trials report and finish, plus one progress line.

    Only plain settings are kept between runs (Tune pickles callbacks with the experiment); the MLflow client
    and the results table are opened in `setup`, which a resumed sweep calls again."""

    def __init__(self, tracking_uri: str, experiment: str, preset: str, results_path: Path, stage: str,
                 metric_names: dict, cells: list[str]):
        # Artifacts beside the results when the store is local; a tracking server keeps its own default.
        local = not tracking_uri.startswith(("http://", "https://", "databricks"))
        self.settings = dict(tracking_uri=tracking_uri, experiment=experiment, preset=preset,
                             artifact_location=(results_path.parent / "mlartifacts").as_uri() if local else None)
        self.results_path, self.stage, self.metric_names, self.cells = results_path, stage, metric_names, cells

    def setup(self, **info):
        self.tracker = SweepTracker(**self.settings)
        self.table = ResultsTable(self.results_path)
        self.done_cells = {cell for cell in self.cells if _key_of(cell) in self.table.finished_cells}
        self.runs: dict[str, str] = {}
        self.best = self.tracker.best_objective()

    def __getstate__(self):
        keep = ("settings", "results_path", "stage", "metric_names", "cells")
        return {name: value for name, value in self.__dict__.items() if name in keep}

    def _run(self, trial) -> str:
        if trial.trial_id not in self.runs:
            self.runs[trial.trial_id] = self.tracker.child_run(self.stage, trial.trial_id, trial.config)
        return self.runs[trial.trial_id]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.log_step(self._run(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, trial.last_result or {}, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, trial.last_result or {}, "FAILED")

    def _finish(self, trial, metrics: dict, status: str) -> None:
        complete = metrics.get("trial_complete") == 1
        self.tracker.finish(self._run(trial), trial.config, metrics, self.metric_names,
                            status if complete or status == "FAILED" else "KILLED")
        if complete or status == "FAILED":   # a trial ASHA stopped early is no data point, and no failure
            self.table.append(result_rows(trial.trial_id, self.stage, trial.config, metrics if complete else {},
                                          self.metric_names))
        if complete:
            self.done_cells.add(trial.config["cell"])
            self.table.finished_cells.add(_key_of(trial.config["cell"]))
            objective = metrics.get("objective", math.nan)
            if math.isfinite(objective) and (self.best is None or objective > self.best[0]):
                self.best = (objective, f"{trial.config['cell']} seed {trial.config['seed']}")
        best = f"{self.best[0]:.1f} ({self.best[1]})" if self.best else "n/a"
        print(f"[{self.stage}] cells done {len(self.done_cells)}/{len(self.cells)} | "
              f"trial {trial.trial_id} {status.lower() if complete or status == 'FAILED' else 'stopped early'} | "
              f"best objective so far {best}", file=sys.stderr, flush=True)


def _key_of(cell: str) -> tuple[str, str, int]:
    parsed = DataCell.from_id(cell)
    return cell_key(parsed.source, parsed.quality, parsed.size)


def save_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    tmp.replace(path)
