"""What the terminal shows while a sweep runs (a Ray Tune callback in the driver).

In a terminal: a panel redrawn in place (rich's Live) with the sweep's line (trials and cells done, the estimated
time left) and one row per running trial (its cell and seed, phase, step / steps of the phase, examples/s, the
phase's time left). Lines printed meanwhile (a trial's end, an error: sweeps/tracking_callback.py) scroll above it.
Elsewhere (CI logs, a file): plain lines, one per event: a trial starts, a trial enters a phase; the trial's end is
TrackingCallback's line.

    [search] trial 3f2a1b7c (english:hard:4000 s1) phase intermediate: steps 0-125
"""
from __future__ import annotations

import atexit
import math
import sys
import time
from pathlib import Path

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sweeps.results_table import ResultsTable
from sweeps.tracking import cell_label
from sweeps.tracking_callback import cell_key_of

TRAINING_PHASES = ("intermediate", "target:")   # phases that have steps; evaluate:* and start have none
# Ray's driver prints every message the raylet publishes straight to stdout (ray._private.worker's error listener;
# log_to_driver does not cover it). These are about Ray's own process management, not the sweep: they stay in Ray's
# logs (raylet.out of the session) and out of the terminal. Errors are not in this list and still show.
RAY_NOISE = ("worker processes have been started on node",)


class QuietStream:
    """A text stream that passes every line on but those holding one of `patterns`."""

    def __init__(self, stream, patterns=RAY_NOISE):
        self.stream, self.patterns, self.pending = stream, patterns, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not any(pattern in line for pattern in self.patterns):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending and not any(pattern in self.pending for pattern in self.patterns):
            self.stream.write(self.pending)
        self.pending = ""
        self.stream.flush()

    def __getattr__(self, name):   # isatty, fileno, encoding, ...
        return getattr(self.stream, name)


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def phase_state(trial, result: dict) -> dict:
    """The running trial's phase, its step within it, the phase's steps and the time left in it."""
    phase = str(result.get("phase", "start"))
    state = {"label": f"{cell_label(trial.config['cell'])} s{trial.config.get('seed', 0)}", "phase": phase,
             "step": None, "steps": None, "examples_per_s": math.nan, "phase_left_s": math.nan}
    first, last = result.get("phase_first_step"), result.get("phase_last_step")
    if phase.startswith(TRAINING_PHASES) and first is not None and last is not None:
        state.update(step=int(result.get("global_step", first)) - int(first), steps=int(last) - int(first))
        state.update(examples_per_s=result.get("examples_per_s", math.nan),
                     phase_left_s=result.get("phase_seconds_left", math.nan))
    return state


class SweepProgress(Callback):
    """Progress of one stage of the sweep. `total_trials` counts the whole sweep, `trials_before` those of the
    stages before this one; `seconds_per_trial` is the preset's estimate, used until a trial has finished."""

    def __init__(self, stage: str, *, total_trials: int, trials_before: int, cells: list[str], results_path: Path,
                 max_concurrent: int, seconds_per_trial: float, live: bool | None = None):
        self.settings = dict(stage=stage, total_trials=total_trials, trials_before=trials_before, cells=cells,
                             results_path=results_path, max_concurrent=max_concurrent,
                             seconds_per_trial=seconds_per_trial, live=live)
        self.__dict__.update(self.settings)

    def __getstate__(self):   # Tune pickles callbacks with the experiment: plain settings only
        return {"settings": self.settings, **self.settings}

    def setup(self, **info):
        finished = ResultsTable(self.results_path).finished_cells
        self.cells_done = {cell for cell in self.cells if cell_key_of(cell) in finished}
        self.running: dict[str, dict] = {}
        self.durations: list[float] = []
        self.ended: set[str] = set()
        self.done = 0
        self.started = {}
        self.display = None
        live = sys.stderr.isatty() if self.live is None else self.live
        if live:
            self.display = Live(self.render(), console=Console(stderr=True), refresh_per_second=2,
                                redirect_stdout=True, redirect_stderr=True, transient=False)
            self.display.start()
            atexit.register(self.stop)   # a driver stopped by Ctrl-C still gives the terminal back
        self.stdout = sys.stdout
        sys.stdout = QuietStream(sys.stdout)   # outside Live's own redirection, which would bypass it

    # ---------------------------------------------------------------------------------------------- events
    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()
        self.running[trial.trial_id] = phase_state(trial, {})
        self._plain(f"trial {trial.trial_id} ({self.running[trial.trial_id]['label']}) started")
        self._update(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        before = self.running.get(trial.trial_id, {}).get("phase")
        state = self.running[trial.trial_id] = phase_state(trial, result)
        if state["phase"] != before:
            steps = f": steps {state['step']} of {state['steps']}" if state["steps"] is not None else ""
            self._plain(f"trial {trial.trial_id} ({state['label']}) phase {state['phase']}{steps}")
        self._update(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trials, trial, finished=(trial.last_result or {}).get("trial_complete") == 1)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trials, trial, finished=False)

    def on_experiment_end(self, trials, **info):
        self.stop()

    def stop(self) -> None:
        """Leave the last frame on the screen and give the terminal back."""
        if isinstance(sys.stdout, QuietStream) and getattr(self, "stdout", None) is not None:
            sys.stdout.flush()
            sys.stdout, self.stdout = self.stdout, None
        if getattr(self, "display", None) is not None:
            self.display.update(self.render(), refresh=True)
            self.display.stop()
            self.display = None

    def _ended(self, trials, trial, *, finished: bool) -> None:
        self.running.pop(trial.trial_id, None)
        self.ended.add(trial.trial_id)
        seconds = (trial.last_result or {}).get("time_total_s")
        if finished:
            self.cells_done.add(trial.config["cell"])
            if isinstance(seconds, (int, float)):
                self.durations.append(float(seconds))
        self._update(trials)

    # ------------------------------------------------------------------------------------------- rendering
    def _update(self, trials) -> None:
        # Tune sets a trial's status after the callbacks of its end: count the ends seen here too
        self.done = len(self.ended | {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")})
        if self.display is not None:
            self.display.update(self.render())

    def time_left(self) -> float:
        """Seconds until the sweep ends: the trials not started and the rest of the running ones, at the mean
        finished trial's duration (the preset's estimate before one finished), over the trials run at once."""
        per_trial = sum(self.durations) / len(self.durations) if self.durations else self.seconds_per_trial
        not_started = self.total_trials - self.trials_before - self.done - len(self.running)
        now = time.time()
        running = sum(max(0.0, per_trial - (now - self.started.get(trial_id, now))) for trial_id in self.running)
        return (max(0, not_started) * per_trial + running) / max(1, self.max_concurrent)

    def headline(self) -> str:
        return (f"[{self.stage}] trials {self.trials_before + self.done}/{self.total_trials} done, "
                f"{len(self.running)} running | cells {len(self.cells_done)}/{len(self.cells)} | "
                f"~{duration(self.time_left())} left")

    def render(self):
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("trial", "phase", "step", "examples/s", "phase left"):
            table.add_column(column, justify="right" if column != "trial" and column != "phase" else "left")
        for state in self.running.values():
            step = f"{state['step']}/{state['steps']}" if state["steps"] is not None else "-"
            rate = f"{state['examples_per_s']:.1f}" if math.isfinite(state["examples_per_s"]) else "-"
            table.add_row(state["label"], state["phase"], step, rate, duration(state["phase_left_s"])
                          if math.isfinite(state["phase_left_s"]) else "-")
        return Group(Text(self.headline(), style="bold"), table)

    def _plain(self, event: str) -> None:
        if getattr(self, "display", None) is None:
            print(f"[{self.stage}] {event} | {self.headline()}", file=sys.stderr, flush=True)
