"""One driver per experiment: a second `scale_vs_quality.py` on the same STORAGE/EXPERIMENT is refused (exit 2)
while the first runs, since both would write the same results.csv, Optuna study and Tune state.

The lock is an advisory `flock` on STORAGE/EXPERIMENT/.driver.lock, held by the driver process for its lifetime.
The kernel drops it when that process ends, however it ends (exit, Ctrl-C, SIGKILL), so a dead driver never
leaves a stale lock behind and `--resume` can always start. The file says who holds it, for the error message.
flock works between processes of one machine; drivers on different machines sharing a network file system are not
guaranteed to see each other's locks.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO

from trainables.errors import UserError

LOCK_FILE = ".driver.lock"


def _refusal(experiment_dir: Path, holder: str) -> UserError:
    return UserError(f"another driver ({holder or 'a running process'}) is running sweep {experiment_dir.name} in "
                     f"{experiment_dir.parent}: wait for it, or stop it (Ctrl-C) and continue with --resume")


def check_no_other_driver(experiment_dir: Path) -> None:
    """Refuse now, before any other check, when a driver holds this experiment (only reads; makes nothing)."""
    path = experiment_dir / LOCK_FILE
    try:
        handle = open(path, encoding="utf-8")
    except OSError:
        return   # no lock file (or none readable): no driver has held this experiment yet
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(experiment_dir, handle.read().strip()) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def hold_driver_lock(experiment_dir: Path) -> IO:
    """Take the experiment's lock for this process; keep the returned file open as long as the sweep runs."""
    experiment_dir.mkdir(parents=True, exist_ok=True)
    handle = open(experiment_dir / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise _refusal(experiment_dir, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    return handle
