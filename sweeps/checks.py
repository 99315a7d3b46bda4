"""Everything that can be wrong with a sweep's input, checked before any training starts (one line, exit 2)."""
from __future__ import annotations

import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from search_spaces.presets import Preset
from trainables.errors import UserError


def check_inputs(preset: Preset, experiment_dir: Path, tracking_uri: str, *, resume: bool, dry_run: bool) -> None:
    from trainables.subsets import pool_size, tiers
    from trainables.tasks import get_task

    for target in preset.targets:
        get_task(target)
    for cell in preset.cells():
        if cell.size > 0:
            get_task(cell.task)
            if cell.quality not in tiers(cell.task):
                raise UserError(f"{cell.task} has no quality tier {cell.quality!r}: choose one of "
                                f"{', '.join(tiers(cell.task))}")
            available = pool_size(cell.task, cell.quality)
            if cell.size > available:
                raise UserError(f"size {cell.size} of {cell.task}/{cell.quality} is above its pool of "
                                f"{available} examples: lower the size ladder (--english-sizes, --multilingual-sizes "
                                "or search_spaces/presets.py)")
    if dry_run:
        return
    _check_storage(experiment_dir, resume)
    _check_tracking(tracking_uri)


def _check_storage(experiment_dir: Path, resume: bool) -> None:
    try:
        experiment_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=experiment_dir):
            pass
    except OSError as err:
        raise UserError(f"cannot write to the storage path {experiment_dir} ({err.strerror}): "
                        "pass a writable --storage-path") from None
    started = (experiment_dir / "sweep_state.json").exists()
    if started and not resume:
        raise UserError(f"experiment {experiment_dir.name} already exists in {experiment_dir.parent}: "
                        "pass --resume to continue it, or another --experiment")
    if resume and not started:
        raise UserError(f"nothing to resume: no sweep in {experiment_dir}; run without --resume to start it")


def _check_tracking(tracking_uri: str) -> None:
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot reach the MLflow tracking server at {tracking_uri} ({reason}): start it "
                        "(mlflow server --host 127.0.0.1 --port 5000) or leave --tracking-uri out") from None


def connect_ray(address: str) -> None:
    import ray
    from trainables.three_phase import trial_env

    if address == "local":   # always a new runtime, even where a `ray start` cluster runs
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", configure_logging=True,
                 log_to_driver=False, runtime_env={"env_vars": trial_env()})
        return
    if address != "auto":
        _check_port_open(address.removeprefix("ray://"))
    try:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": trial_env()})
    except (ConnectionError, RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot connect to a Ray cluster at {address} ({first_line}): start one with "
                        "`ray start --head --dashboard-host 127.0.0.1` or use --address local") from None


def check_address(address: str) -> None:
    if not (address in ("local", "auto") or address.startswith("ray://") or _is_host_port(address)):
        raise UserError(f"bad --address {address!r}: use local, auto, ray://HOST:PORT or HOST:PORT")


def _check_port_open(host_port: str) -> None:
    """Fail in seconds, not after ray.init's minutes of retries, when nothing listens at the address."""
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as err:
        raise UserError(f"cannot connect to a Ray cluster at {host_port} ({err}): start one with "
                        "`ray start --head --dashboard-host 127.0.0.1` or use --address local") from None


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()
