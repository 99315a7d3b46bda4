"""The Tune side of tracking: a callback in the driver that writes results.csv and MLflow (sweeps/tracking.py's
SweepTracker) as trials report and end, draws the curves so far after every finished trial (analysis/progress_plot.py,
logged to the parent run under `progress/`), prints one line per finished trial, and stops the sweep with one line
when its disk is full (sweeps/disk_guard.py).
"""
from __future__ import annotations

import math
import re
import sys
import tempfile
from pathlib import Path

from ray.tune import Callback

from analysis.progress_plot import plot_progress
from analysis.schema import OBJECTIVE
from search_spaces.axes import DataCell
from sweeps.disk_guard import DiskGuard, is_full_disk
from sweeps.mlflow_journal import unreachable
from sweeps.results_table import ResultsTable, cell_key, result_rows
from sweeps.tracking import SweepTracker, artifact_location, cell_label


class TrackingCallback(Callback):
    """Tune callback: MLflow runs and results rows as trials report and end, plus one progress line.

    results.csv is written before MLflow, and does not wait for it (SweepTracker buffers MLflow's writes while the
    tracking server is unreachable). The callback also watches the storage path's free space (before every step of
    Tune's loop) and stops the sweep with one line when its disk is full (sweeps/disk_guard.py).

    Only plain settings are kept between runs (Tune pickles callbacks with the experiment); the MLflow client
    and the results table are opened in `setup`, which a resumed sweep calls again."""

    def __init__(self, tracking_uri: str, experiment: str, preset: str, results_path: Path, stage: str,
                 metric_names: dict, cells: list[str]):
        self.settings = dict(tracking_uri=tracking_uri, experiment=experiment, preset=preset,
                             artifact_location=artifact_location(tracking_uri, results_path.parent))
        self.results_path, self.stage, self.metric_names, self.cells = results_path, stage, metric_names, cells

    def setup(self, **info):
        self.disk = DiskGuard(self.results_path.parent)   # a full disk stops the sweep cleanly: sweeps/disk_guard.py
        self.disk.make_reserve()
        self.tracker = SweepTracker(**self.settings, experiment_dir=self.results_path.parent)
        self.table = ResultsTable(self.results_path)
        finished = self.table.finished_cells
        self.done_cells = {cell for cell in self.cells if cell_key_of(cell) in finished}
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

    def on_step_begin(self, iteration, trials, **info):
        self.disk.check()

    def on_experiment_end(self, trials, **info):
        if self.disk.stopping or self.disk.low():   # the trials have stopped: Tune's state is written again, whole
            storage = next((trial.storage for trial in trials if trial.storage is not None), None)
            self.disk.finish(storage and Path(storage.experiment_driver_staging_path),
                             storage and Path(storage.experiment_fs_path))
        if self.disk.stopping:
            raise SystemExit(self.disk.message())
        self.disk.release()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._guarded(lambda: self.tracker.log_step(self._run(trial), result))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, trial.last_result or {}, error="")

    def on_trial_error(self, iteration, trials, trial, **info):
        text = _error_text(trial)
        if is_full_disk(text):   # a checkpoint or the phase-2 cache met the full disk
            self.disk.stop()
        self._finish(trial, trial.last_result or {}, error=first_error_lines(text))

    def _guarded(self, write) -> None:
        """write(); when the disk is full, once more after the guard gave its reserve up (and stopped the sweep).
        results.csv's record replaces the trial's rows, so twice is once; MLflow's finish done again may add its
        final metric points a second time (new timestamps), a small price next to losing the trial's record."""
        try:
            write()
        except Exception as error:   # noqa: BLE001 - only a full disk is handled here
            if not is_full_disk(error):
                raise
            self.disk.stop()
            write()

    def _finish(self, trial, metrics: dict, error: str) -> None:
        complete = metrics.get("trial_complete") == 1 and not error
        status = "FINISHED" if complete else "FAILED" if error else "KILLED"
        if status != "KILLED":   # a trial ASHA stopped early is no data point, and no failure
            rows = result_rows(trial.trial_id, self.stage, trial.config, metrics if complete else {}, self.metric_names)
            self._guarded(lambda: self.table.record(rows))
        self._guarded(lambda: self.tracker.finish(self._run(trial), trial.config, metrics, self.metric_names, status,
                                                  error))
        label = f"{cell_label(trial.config['cell'])} s{trial.config['seed']}"
        if complete:
            self._log_progress_plots()
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


    def _log_progress_plots(self) -> None:
        """The curves so far, into the parent run's progress/ folder. They are a view, redrawn after every finished
        trial, not a record: while MLflow is unreachable, or its artifacts' disk is full (which stops the sweep),
        they are skipped, not buffered."""
        with tempfile.TemporaryDirectory() as folder:
            for path in plot_progress(self.results_path, Path(folder)):
                try:
                    self.tracker.client.store.log_artifact(self.tracker.parent_id, str(path), "progress")
                except Exception as error:   # noqa: BLE001 - sorted by is_full_disk() and unreachable()
                    if is_full_disk(error):
                        self.disk.stop()
                    elif not unreachable(error):
                        raise
                    return


def _error_text(trial) -> str:
    """Tune's error.txt of the trial: in the driver's staging folder when the error has just happened (it reaches
    the experiment's storage at the next sync), else in storage."""
    local = trial.error_file if trial.storage is not None else None
    if local and Path(local).is_file():
        return Path(local).read_text(errors="replace")
    return trial.get_error() or ""


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


def _trial_index(trial) -> str:
    tag = getattr(trial, "experiment_tag", "") or ""
    return tag.split("_", 1)[0] if tag[:1].isdigit() else trial.trial_id


def cell_key_of(cell: str) -> tuple[str, str, int]:
    """The results table's key of a cell id (sweeps/results_table.cell_key)."""
    parsed = DataCell.from_id(cell)
    return cell_key(parsed.source, parsed.quality, parsed.size)
