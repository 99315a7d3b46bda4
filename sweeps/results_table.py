"""`results.csv`: one row per (trial, target task, language) in the columns of analysis/schema.py.

The table is one record with MLflow: a trial's rows are keyed by (stage, trial_id) and replaced, never duplicated.
A trial that failed has one NaN `avg` row per target; when `--resume` reruns it successfully its real rows take that
place. Every write rewrites the file atomically (a temporary file, then a rename), so a driver killed mid-write
leaves the old table or the new one, never half of one; an older table's header is upgraded the same way, its
rows keeping their values and getting what the schema says an old table means for the added columns.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from analysis.schema import ADDED_COLUMNS, AVG, COLUMNS, COUNT_PREFIX, OBJECTIVE, TEST_PREFIX, metric_key, \
    parse_metric_key
from search_spaces.axes import DataCell


def result_rows(trial_id: str, stage: str, config: dict, metrics: dict, metric_names: dict) -> list[dict]:
    """The rows of one trial: one per (target, language) it scored, `avg` included.

    `metrics` is the trial's last result; a trial that failed passes {} and gets one `avg` row per target with a
    NaN score, so that the analysis counts the failure instead of silently missing it."""
    cell = DataCell.from_id(config["cell"])
    base = {"trial_id": trial_id, "stage": stage, "source": cell.source, "quality": cell.quality,
            "size": cell.size, "seed": config["seed"], "lr_intermediate": config["lr_intermediate"],
            "lr_target": config["lr_target"], "intermediate_task": cell.task,
            "objective": metrics.get(OBJECTIVE, math.nan)}
    scored = [parse_metric_key(key, TEST_PREFIX) for key in metrics]
    rows = []
    for target in config["targets"]:
        languages = [pair[1] for pair in scored if pair and pair[0] == target]
        for language in languages or [AVG]:
            rows.append({**base, "target_task": target, "language": language,
                         "metric": metric_names.get(target, "score"),
                         "score": metrics.get(metric_key(TEST_PREFIX, target, language), math.nan),
                         "n_examples": metrics.get(metric_key(COUNT_PREFIX, target, language), math.nan)})
    return rows


def cell_key(source: str, quality: str, size) -> tuple[str, str, int]:
    """What identifies a data cell in the table (with the preset's tasks)."""
    return source, quality, int(size)


def _has_score(row: dict) -> bool:
    try:
        return math.isfinite(float(row["score"]))
    except (TypeError, ValueError):
        return False


def _trial(row: dict) -> tuple[str, str]:
    return str(row["stage"]), str(row["trial_id"])


class ResultsTable:
    """The rows of results.csv in memory, written back whole and atomically on every change."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.columns = list(COLUMNS)
        self.rows: list[dict] = []
        if self.path.exists():
            with open(self.path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.rows = list(reader)
                header = list(reader.fieldnames or [])
            # Keep any column this code does not know (a newer writer's): never drop data.
            self.columns += [name for name in header if name not in self.columns]
            if header != self.columns:
                for row in self.rows:
                    for name, meaning in ADDED_COLUMNS.items():
                        row.setdefault(name, meaning)
                self._write()

    @property
    def trials(self) -> set[tuple[str, str]]:
        """(stage, trial_id) of every trial with rows, failed ones included."""
        return {_trial(row) for row in self.rows}

    @property
    def finished_cells(self) -> set[tuple[str, str, int]]:
        return {cell_key(row["source"], row["quality"], row["size"]) for row in self.rows if _has_score(row)}

    def record(self, rows: list[dict]) -> bool:
        """Put one trial's rows in the table, in place of the rows it had; returns whether the table changed.

        Rows without any score (a failure) never replace rows with scores: a trial that once finished keeps them."""
        if not rows:
            return False
        trial = _trial(rows[0])
        old = [i for i, row in enumerate(self.rows) if _trial(row) == trial]
        if old and any(_has_score(self.rows[i]) for i in old) and not any(_has_score(row) for row in rows):
            return False
        at = old[0] if old else len(self.rows)
        kept = [row for row in self.rows if _trial(row) != trial]
        self.rows = kept[:at] + list(rows) + kept[at:]
        self._write()
        return True

    def _write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
