"""The experiment folder before a sweep touches it: a new sweep must not land on an old one's files, and --resume
must find this experiment's sweep_state.json, optuna.db and results.csv, readable (one line, exit 2).

sweep_state.json is written by sweeps/stages.py ({"stage", "preset", "plan"}), optuna.db holds the search study
"<experiment>-search", results.csv follows the results contract of analysis/schema.py (BASE_COLUMNS required;
ADDED_COLUMNS and columns of a newer writer are optional). Everything here only reads.
"""
from __future__ import annotations

import csv
import json
import sqlite3
from contextlib import closing
from pathlib import Path

from analysis.schema import BASE_COLUMNS
from search_spaces.presets import Preset
from trainables.errors import UserError

STAGES = ("search", "replicate", "done")
SQLITE_HEADER = b"SQLite format 3\x00"
# The restored Tune searcher holds this study's id in this file: only the experiment's own optuna.db will do.
PUT_BACK = "put back this experiment's optuna.db, or start anew with another --experiment"
LADDER_FIX = "resume with the --english-sizes/--multilingual-sizes the sweep started with"


def check_experiment_dir(experiment_dir: Path, preset: Preset, *, resume: bool) -> None:
    state = experiment_dir / "sweep_state.json"
    if not resume:
        if state.exists():
            raise UserError(f"experiment {experiment_dir.name} already exists in {experiment_dir.parent}: "
                            "pass --resume to continue it, or another --experiment")
        leftovers = [name for name in ("results.csv", "optuna.db") if (experiment_dir / name).exists()]
        if leftovers:
            raise UserError(f"{experiment_dir} holds {' and '.join(leftovers)} of an earlier sweep but no "
                            "sweep_state.json: pass another --experiment, or move them away")
        return
    if not state.is_file():
        raise UserError(f"nothing to resume: no sweep in {experiment_dir}; run without --resume to start it")
    check_state(state, preset)
    cells = preset.cells()
    check_study(experiment_dir / "optuna.db", f"{experiment_dir.name}-search", {cell.cell_id for cell in cells})
    check_results(experiment_dir / "results.csv", {(cell.source, cell.quality, cell.size) for cell in cells})


def check_state(path: Path, preset: Preset) -> None:
    experiment = path.parent.name
    repair = (f'write {{"stage": "search", "preset": "{preset.name}"}} into it (the finished trials are kept), '
              "or start anew with another --experiment")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is damaged (not JSON: {err}): {repair}") from None
    if not isinstance(state, dict) or state.get("stage") not in STAGES or not isinstance(state.get("preset"), str):
        raise UserError(f"{path} is not a sweep state (a 'stage' among {', '.join(STAGES)} and a 'preset'): "
                        f"{repair}")
    if state["preset"] != preset.name:
        raise UserError(f"experiment {experiment} was started with --preset {state['preset']}, not {preset.name}: "
                        f"resume it with --preset {state['preset']}")
    if state.get("experiment", experiment) != experiment:
        raise UserError(f"{path} belongs to experiment {state['experiment']}, not {experiment} (a copied or renamed "
                        f"folder): resume --experiment {state['experiment']} in its own folder, or start anew")


def check_study(path: Path, study: str, cell_ids: set[str]) -> None:
    """optuna.db, when there is one: an Optuna store holding this experiment's study (or none yet), whose trials
    chose among this run's data cells."""
    if not path.exists() or path.stat().st_size == 0:   # not made yet, or made empty: Optuna fills it
        return
    with open(path, "rb") as handle:
        if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise UserError(f"{path} is not an SQLite database: {PUT_BACK}")
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"studies", "trials", "trial_params"} <= tables:
                raise UserError(f"{path} is an SQLite database but not an Optuna study store: {PUT_BACK}")
            studies = dict(conn.execute("SELECT study_name, study_id FROM studies").fetchall())
            choices = [row[0] for row in conn.execute(
                "SELECT DISTINCT p.distribution_json FROM trial_params p JOIN trials t ON p.trial_id = t.trial_id "
                "WHERE t.study_id = ? AND p.param_name = 'cell'", (studies.get(study, -1),))]
    except sqlite3.Error as err:
        raise UserError(f"cannot read the Optuna study store {path} ({err}): {PUT_BACK}") from None
    if studies and study not in studies:
        other = sorted(studies)[0]
        raise UserError(f"{path} holds the study {other}, not {study}: it belongs to another experiment; resume "
                        f"that one (--experiment {other.removesuffix('-search')}) or start anew")
    for distribution in choices:
        try:
            searched = set(json.loads(distribution)["attributes"]["choices"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path} holds an unreadable 'cell' distribution: {PUT_BACK}") from None
        if searched != cell_ids:
            raise UserError(f"the search in {path} ran over other data cells ({_differ(searched, cell_ids)}): "
                            f"{LADDER_FIX}")


def check_results(path: Path, cells: set[tuple[str, str, int]]) -> None:
    """results.csv, when there is one: the contract's base columns (added columns, and a newer writer's unknown
    ones, are kept by the writer), whole rows, and this run's data cells."""
    if not path.exists():
        return
    move_away = "put back this sweep's results.csv, or move it away (MLflow keeps every trial)"
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:    # empty: the writer gives it a header (sweeps/results_table.py)
                return
            missing = [column for column in BASE_COLUMNS if column not in header]
            if missing:
                raise UserError(f"{path} is not a results table of this project (its header lacks "
                                f"{', '.join(missing)}): {move_away}")
            where = {name: header.index(name) for name in ("source", "quality", "size")}
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise UserError(f"{path} line {reader.line_num} has {len(row)} fields, the header "
                                    f"{len(header)} (a write cut short?): delete that line and --resume again")
                source, quality, size = (row[where[name]] for name in ("source", "quality", "size"))
                try:
                    cell = (source, quality, int(size))
                except ValueError:
                    raise UserError(f"{path} line {reader.line_num} has size {size!r}, not a whole number: "
                                    f"{move_away}") from None
                if cell not in cells:
                    raise UserError(f"{path} line {reader.line_num} holds the cell {source}/{quality}/{size}, "
                                    f"which this run's ladder lacks: {LADDER_FIX}")
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path} is not a readable CSV table ({err}): {move_away}") from None


def _differ(there: set[str], here: set[str]) -> str:
    def some(ids: set[str]) -> str:
        ids = sorted(ids)
        return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "") if ids else "none"
    return f"only there: {some(there - here)}; only in this run: {some(here - there)}"
