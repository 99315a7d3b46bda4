"""Ctrl-C during a stage stops the sweep with Tune's state saved whole, so `--resume` runs no finished trial again.

Tune's loop ends cleanly on its own stop signal (SIGUSR1, whose handler Tune installs when its loop starts): the
step in progress finishes, so a trial Optuna was told is finished is also finished in Tune's state, the experiment
state is saved one last time, and the trials are stopped. Tune's own SIGINT handler does the same, but then
`Tuner.fit` returns as if the stage were done and the next stage would start; so the driver turns that handler off
(TUNE_DISABLE_SIGINT_HANDLER) and a stage runs inside `StopOnCtrlC`, which forwards the first Ctrl-C to SIGUSR1 and
raises KeyboardInterrupt once the stage has ended. A second Ctrl-C, or one before Tune's loop has started, raises
KeyboardInterrupt at once (as a crash would: Tune's state is then at most a second old).
"""
from __future__ import annotations

import logging
import signal


class StopOnCtrlC:
    def __init__(self):
        self.pressed = False

    def __enter__(self) -> "StopOnCtrlC":
        # SIGUSR1 is put back on leaving: a handler Tune's finished loop left behind would stop nothing.
        self._previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}
        signal.signal(signal.SIGINT, self._on_ctrl_c)
        return self

    def _on_ctrl_c(self, signum, frame) -> None:
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if self.pressed or not callable(tune_stop) or tune_stop is self._previous[signal.SIGUSR1]:
            raise KeyboardInterrupt
        self.pressed = True
        # Tune's "Stop signal received ..." and "Resume experiment with: Tuner.restore(...)" name Tune's API, not
        # this sweep's command, which the driver prints.
        logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)
        signal.raise_signal(signal.SIGUSR1)

    def __exit__(self, kind, error, traceback) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self.pressed and kind is None:
            raise KeyboardInterrupt
