"""A full storage path ends the sweep with one line, its state intact, and `--resume` goes on once there is room.

Where a full disk surfaces (everything is in STORAGE/EXPERIMENT): the trials' checkpoints and the phase-2 cache (the
trial fails with ENOSPC and Ray Train retries it), the Optuna study (SQLite, written by the searcher in the driver at
every trial result: its error ends Ray Tune with a long traceback), Tune's experiment state (synced every second,
in place: a sync that meets the full disk leaves a file cut short, which `--resume` cannot restore), results.csv
and the MLflow store or its journal (written by the tracking callback).

So a stage keeps a reserve: `.disk_reserve`, RESERVE_BYTES of allocated space, made when the stage starts. The
tracking callback looks at the free space before every step of Tune's loop (one statvfs). When it is below the
reserve's size, or a trial or one of the callback's own writes fails for want of space, `DiskGuard.stop` gives up
most of the reserve, so the sweep's own small records (results.csv, the study, the MLflow journal) have room, and
ends Tune's loop as Tune's own stop signal does (SIGUSR1: it saves the experiment state one last time, then stops
the trials). The trials still run during that last save, and a checkpoint they write can take the room it needs, so
the save can be cut short. The rest of the reserve (FINAL_BYTES) is kept for `DiskGuard.finish`, which the callback's
`on_experiment_end` calls once the trials have stopped: it gives it up and writes Tune's experiment-level files
again from the driver's staging folder, each to a temporary file renamed over the old one, so `--resume` finds them
whole. The driver then ends with `DiskGuard.message()`: one line naming the full folder, what is free, and the
command that resumes; exit status 1. A full-disk error that ends Tune's loop before the guard stopped it (the
study's write, say) also passes through `on_experiment_end`, which writes Tune's state again when the disk is low.

Anything else a full disk breaks in the driver (a write before Tune's loop starts, say) is caught by the
`sys.excepthook` the driver installs (`install_excepthook`): one line instead of the traceback, for errors caused by
a full disk only.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

RESERVE_BYTES = 16 << 20
FINAL_BYTES = 4 << 20   # the part of the reserve kept until the trials have stopped, for Tune's state
RESERVE_NAME = ".disk_reserve"
FULL_DISK_SIGNS = ("No space left on device", "[Errno 28]", "database or disk is full")


def is_full_disk(error: BaseException | str) -> bool:
    """An error (or the text of one, e.g. a trial's error.txt) that says the disk is full, itself or by its cause."""
    if isinstance(error, str):
        return any(sign in error for sign in FULL_DISK_SIGNS)
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC or is_full_disk(str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


def resume_command() -> str:
    try:
        from sweeps.scale_vs_quality import resume_command as command
        return command()
    except Exception:   # noqa: BLE001 - a message is still better than none
        return "the same command with --resume"


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def full_disk_message(folder: Path, free: int | None) -> str:
    room = "free space unknown" if free is None else f"{free / 2**20:.1f} MiB free"
    return (f"error: the disk of the storage path {folder} is full ({room}): the sweep stopped; finished trials, "
            f"results.csv and the sweep's state are kept. Free some space, then continue with: {resume_command()}")


class DiskGuard:
    """The reserve of one stage, the free-space check and the stop (see the module's docstring)."""

    last_folder: Path | None = None   # the storage path the driver works in, for the excepthook's message

    def __init__(self, folder: Path):
        self.folder = DiskGuard.last_folder = Path(folder)
        self.reserve = self.folder / RESERVE_NAME
        self.stopping = False
        self.free_at_stop: int | None = None

    def make_reserve(self) -> None:
        """Allocate the reserve (a disk already too full to hold it is caught by the first check)."""
        try:
            if self.reserve.exists() and self.reserve.stat().st_blocks * 512 >= RESERVE_BYTES:
                return
            with open(self.reserve, "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, RESERVE_BYTES)
        except OSError:
            self.reserve.unlink(missing_ok=True)

    def release(self) -> None:
        self.reserve.unlink(missing_ok=True)

    def _shrink_reserve(self) -> None:
        try:
            if self.reserve.exists():
                os.truncate(self.reserve, min(FINAL_BYTES, self.reserve.stat().st_size))
        except OSError:
            self.release()

    def finish(self, staging: Path | None, tune_folder: Path | None) -> None:
        """After a stop, once the trials have stopped: give the rest of the reserve up and write Tune's
        experiment-level files (its experiment state, the searcher's, the tuner's) from the driver's staging folder
        into the stage's Tune folder again, each renamed into place (see the module's docstring)."""
        self.release()
        if staging is None or tune_folder is None or not staging.is_dir() or not tune_folder.is_dir():
            return
        for source in staging.iterdir():
            if not source.is_file():
                continue
            temporary = tune_folder / f".{source.name}.tmp"
            try:
                shutil.copyfile(source, temporary)
                os.replace(temporary, tune_folder / source.name)
            except OSError:   # no room even now: the message still says what to do
                temporary.unlink(missing_ok=True)

    def low(self) -> bool:
        """Less room than the reserve left (besides the reserve)."""
        return shutil.disk_usage(self.folder).free < RESERVE_BYTES

    def check(self) -> None:
        """Stop the sweep when the disk is low."""
        if not self.stopping and self.low():
            self.stop()

    def stop(self) -> None:
        """Give most of the reserve up and end Tune's loop after this step, its state saved; the callback's
        on_experiment_end raises SystemExit(message) then. Without Tune's stop handler: SystemExit now."""
        if self.stopping:
            return
        self.stopping, self.free_at_stop = True, free_bytes(self.folder)
        self._shrink_reserve()
        if callable(signal.getsignal(signal.SIGUSR1)):   # Tune's handler (its loop runs in the main thread)
            # Tune's "Stop signal received (e.g. via SIGINT/Ctrl+C)" and its syncer's failures, with tracebacks,
            # would only say less well what the one line says.
            for name in ("ray.tune.tune", "ray.tune.execution.experiment_state", "ray.train._internal.syncer"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            signal.raise_signal(signal.SIGUSR1)
        else:
            raise SystemExit(self.message())

    def message(self) -> str:
        return full_disk_message(self.folder, self.free_at_stop)


def _explain_full_disk(kind, error, tb, previous=sys.excepthook):
    """sys.excepthook: an uncaught error caused by a full disk is one line, naming the folder a DiskGuard watches,
    else the driver's --storage-path; any other error is shown as before."""
    if not is_full_disk(error):
        return previous(kind, error, tb)
    folder = DiskGuard.last_folder or _storage_path()
    print(full_disk_message(folder, free_bytes(folder)), file=sys.stderr)


def _storage_path() -> Path:
    try:
        from sweeps.scale_vs_quality import parse_args
        return Path(parse_args(sys.argv[1:]).storage_path).resolve()
    except BaseException:   # noqa: BLE001 - not the sweep's command line (argparse exits on what it cannot parse)
        return Path.cwd()


def install_excepthook() -> None:
    """The driver's: an uncaught full-disk error is one line (see the module's docstring)."""
    sys.excepthook = _explain_full_disk
