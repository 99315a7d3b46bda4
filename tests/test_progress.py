"""sweeps/progress.py on real Tune Trial objects and a real results.csv (fast): what the terminal shows."""
import io
import math
import pickle
import sys

import pytest

from ray.tune.experiment import Trial
from rich.console import Console

from sweeps.progress import SweepProgress, duration, phase_state

CELLS = ["none", "english:en_paraphrase:hard:4000"]
CONFIG = {"cell": CELLS[1], "seed": 1, "batch_size": 32, "grad_accum_steps": 1, "num_workers": 1}


def trial(trial_id, config=CONFIG):
    return Trial("run_trial", config=config, trial_id=trial_id, stub=True)


@pytest.fixture
def progress(tmp_path):
    """A stage's display in plain mode (no terminal), as Tune restores it with the experiment and sets it up."""
    made = SweepProgress("search", total_trials=10, trials_before=0, cells=CELLS,
                         results_path=tmp_path / "results.csv", max_concurrent=2, seconds_per_trial=100, live=False)
    made = pickle.loads(pickle.dumps(made))
    made.setup()
    yield made
    made.stop()


def test_a_trials_phase_step_rate_and_time_left():
    state = phase_state(trial("a"), {"phase": "intermediate", "global_step": 40, "phase_first_step": 0,
                                     "phase_last_step": 125, "examples_per_s": 64.0,
                                     "phase_seconds_left": (125 - 40) * 32 / 64.0})
    assert state == {"label": "english:hard:4000 s1", "phase": "intermediate", "step": 40, "steps": 125,
                     "examples_per_s": 64.0, "phase_left_s": (125 - 40) * 32 / 64.0}
    target = phase_state(trial("a"), {"phase": "target:genre", "global_step": 130, "phase_first_step": 125,
                                      "phase_last_step": 219, "examples_per_s": math.nan})
    assert (target["step"], target["steps"]) == (5, 94) and math.isnan(target["phase_left_s"])
    evaluating = phase_state(trial("a"), {"phase": "evaluate:genre", "phase_first_step": 125,
                                          "phase_last_step": 219})
    assert evaluating["steps"] is None                    # evaluation has no steps
    assert [duration(s) for s in (5, 65, 3725, math.nan)] == ["5s", "1m05s", "1h02m", "?"]


def test_plain_lines_per_event_when_not_a_terminal(progress, capsys):
    made = progress
    first, second = trial("t1"), trial("t2", {**CONFIG, "cell": "none", "seed": 0})
    made.on_trial_start(0, [first], first)
    made.on_trial_result(0, [first], first, {"phase": "intermediate", "global_step": 5, "phase_first_step": 0,
                                            "phase_last_step": 125, "examples_per_s": 50.0})
    made.on_trial_result(0, [first], first, {"phase": "intermediate", "global_step": 10, "phase_first_step": 0,
                                            "phase_last_step": 125, "examples_per_s": 50.0})   # same phase: quiet
    made.on_trial_start(0, [first, second], second)
    first.status = "TERMINATED"
    first.update_last_result({"trial_complete": 1, "time_total_s": 300.0})
    made.on_trial_complete(0, [first, second], first)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "[search] trial t1 (english:hard:4000 s1) started | [search] trials 0/10 done, 1 running | cells 0/2 | "
        "~8m20s left",
        "[search] trial t1 (english:hard:4000 s1) phase intermediate: steps 5 of 125 | [search] trials 0/10 done, "
        "1 running | cells 0/2 | ~8m20s left",
        "[search] trial t2 (baseline s0) started | [search] trials 0/10 done, 2 running | cells 0/2 | ~8m20s left"]
    # after one finished trial of 300 s: 8 not started and one running, at 300 s each, 2 at once
    assert made.headline().startswith("[search] trials 1/10 done, 1 running | cells 1/2 | ~")
    assert 8 * 300 / 2 <= made.time_left() <= 9 * 300 / 2


def test_the_live_panel_shows_every_running_trial(progress):
    made = progress
    running = trial("t1")
    made.on_trial_start(0, [running], running)
    made.on_trial_result(0, [running], running, {"phase": "intermediate", "global_step": 40, "phase_first_step": 0,
                                                "phase_last_step": 125, "examples_per_s": 51.2,
                                                "phase_seconds_left": 53.0})
    console = Console(file=io.StringIO(), width=120)
    console.print(made.render())
    frame = console.file.getvalue()
    assert "trials 0/10 done, 1 running" in frame
    row = next(line for line in frame.splitlines() if "english:hard:4000 s1" in line)
    assert row.split() == ["english:hard:4000", "s1", "intermediate", "40/125", "51.2", "53s"]


def test_rays_worker_pool_warning_stays_out_of_the_terminal_and_errors_do_not():
    from sweeps.progress import QuietStream

    out = io.StringIO()
    quiet = QuietStream(out)
    quiet.write("(raylet) WARNING: 8 PYTHON worker processes have been started on node: abc with address: 1.2.3.4")
    quiet.write(", which is 4x the maximum expected startup concurrency (2).\n(raylet) A worker died or was killed")
    quiet.write(" while executing a task.\n")
    quiet.write("no newline yet")
    quiet.flush()
    assert out.getvalue() == "(raylet) A worker died or was killed while executing a task.\nno newline yet"
    assert quiet.isatty() is False   # everything else is the stream's own


def test_the_display_quiets_stdout_while_it_runs_and_gives_it_back(tmp_path):
    from sweeps.progress import QuietStream

    before = sys.stdout
    made = SweepProgress("replicate", total_trials=4, trials_before=2, cells=CELLS, results_path=tmp_path / "r.csv",
                         max_concurrent=1, seconds_per_trial=10, live=False)
    made.setup()
    assert isinstance(sys.stdout, QuietStream) and sys.stdout.stream is before
    made.stop()
    assert sys.stdout is before
