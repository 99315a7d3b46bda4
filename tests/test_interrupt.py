"""Ctrl-C during a stage (sweeps/interrupt.py), with real signals; the whole path is the slow test in test_sweep.py."""
import signal

import pytest

from sweeps.interrupt import StopOnCtrlC


def tune_loop_started(stops: list) -> None:
    """What Tune does when its loop starts: a SIGUSR1 handler that ends the loop after the step in progress."""
    signal.signal(signal.SIGUSR1, lambda signum, frame: stops.append("tune stops after this step"))


def test_the_first_ctrl_c_ends_tunes_loop_and_raises_once_the_stage_has_ended():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}
    stops = []
    with pytest.raises(KeyboardInterrupt):
        with StopOnCtrlC():
            tune_loop_started(stops)
            signal.raise_signal(signal.SIGINT)
            stops.append("the stage ends")
    assert stops == ["tune stops after this step", "the stage ends"]
    assert {sig: signal.getsignal(sig) for sig in before} == before   # Tune's handler does not outlive its loop


def test_a_second_ctrl_c_raises_at_once():
    stops = []
    with pytest.raises(KeyboardInterrupt):
        with StopOnCtrlC():
            tune_loop_started(stops)
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            stops.append("the stage ends")
    assert stops == ["tune stops after this step"]


def test_ctrl_c_before_tunes_loop_started_raises_at_once():
    stops = []
    with pytest.raises(KeyboardInterrupt):
        with StopOnCtrlC():
            signal.raise_signal(signal.SIGINT)
            stops.append("the stage ends")
    assert stops == []


def test_a_stage_without_ctrl_c_ends_as_usual():
    with StopOnCtrlC() as guard:
        tune_loop_started([])
    assert not guard.pressed and signal.getsignal(signal.SIGINT) is signal.default_int_handler
