"""The three UIs of a sweep in a real browser (headless Chromium, driven by Playwright): the Ray dashboard while a
smoke sweep runs (past its token prompt, as a user types the token), then the MLflow UI and optuna-dashboard over
the stores the sweep wrote. Slow: one real sweep (2 to 4 minutes on 2 cores).

Screenshots go to $XSTILTS_TEST_ARTIFACTS when set (else a temporary folder): ray_dashboard.png, mlflow_runs.png,
optuna_dashboard.png, the ones docs/screenshots/ holds. Needs Debian's chromium (`apt-get install chromium`); without
it the tests skip. Every server binds 127.0.0.1 on a free port and is stopped by its process id.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_sweep import reap

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SWEEP = [sys.executable, str(REPO / "sweeps" / "scale_vs_quality.py")]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}
UI_TIMEOUT_MS = 60_000
# The Ray dashboard's token prompt (ray/dashboard/client: the TokenAuthenticationDialog) and the cookie that
# POST /api/authenticate sets once the token is valid (ray/_private/authentication/authentication_constants.py).
RAY_PROMPT = "Authentication Token Required"
RAY_TOKEN_FIELD = "Enter your authentication token"
RAY_TOKEN_COOKIE = "ray-authentication-token"


# ----------------------------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def wait_for(condition, what: str, deadline_s: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll `condition` until it returns something truthy; fail at the deadline or when `proc` exits first."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode} first\n{tail(log) if log else ''}")
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {deadline_s:.0f} s\n{tail(log) if log else ''}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session: its process group (the server and its workers), by its id."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def server(command: list[str], ready_url: str, log_path: Path, deadline_s: float = 120):
    """A server subprocess, ready once `ready_url` answers 200; stopped on the way out, whatever happened."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=log_path.parent, start_new_session=True)
        try:
            wait_for(lambda: answers(ready_url), f"{command[0:3]} ready at {ready_url}", deadline_s, proc, log_path)
            yield proc
        finally:
            stop(proc)


def console_script(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail(f"{name} is not installed (pip install -e '.[dev]')")
    return found


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ["XSTILTS_TEST_ARTIFACTS"]) if os.environ.get("XSTILTS_TEST_ARTIFACTS") \
        else tmp_path_factory.mktemp("ui-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium chromium-driver): no browser to "
                    "check the UIs with")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e "
                                                                 "'.[dev]')")
    sync_api.expect.set_options(timeout=UI_TIMEOUT_MS)    # a first page load on 2 busy cores takes a while
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser profile (no cookies, no local storage) per test."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@dataclass
class Sweep:
    experiment: str
    experiment_dir: Path
    token: str
    driver: subprocess.Popen
    log: Path

    def dashboard_url(self) -> str:
        """The address the sweep prints for its local Ray runtime (8265, or the next free port)."""
        found = wait_for(lambda: re.search(r"Ray dashboard: (http://[\d.:]+)", tail(self.log, 10**6)),
                         "the sweep's 'Ray dashboard:' line", 300, self.driver, self.log)
        return found.group(1)


@pytest.fixture(scope="module")
def sweep(browser, artifacts, tmp_path_factory):
    """The smoke sweep of tests/test_sweep.py, started in the background with a token the test knows."""
    experiment = "smoke-ui"
    storage = tmp_path_factory.mktemp("ui-sweep")
    token = secrets.token_hex(32)
    marker = f"XSTILTS_TEST_RUN={secrets.token_hex(8)}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_DEDUP_LOGS": "0",
           "PYTHONUNBUFFERED": "1", marker.split("=")[0]: marker.split("=")[1]}
    log = artifacts / "sweep.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(SWEEP + ["--preset", "smoke", "--english-sizes", "0,32", "--storage-path",
                                           str(storage), "--experiment", experiment],
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO,
                                  start_new_session=True)
    try:
        yield Sweep(experiment, storage / experiment, token, driver, log)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        reap(marker.encode())


@pytest.fixture(scope="module")
def finished_sweep(sweep) -> Sweep:
    try:
        sweep.driver.wait(timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the sweep did not finish within 15 minutes\n{tail(sweep.log)}")
    assert sweep.driver.returncode == 0, tail(sweep.log)
    return sweep


# ----------------------------------------------------------------------------------------------- the UIs
def test_ray_dashboard_shows_the_running_sweep_past_the_token_prompt(sweep, page, artifacts):
    from playwright.sync_api import expect

    url = sweep.dashboard_url()
    page.goto(url + "/")
    # token authentication is on: the dashboard asks for the token, as a user sees it
    expect(page.get_by_text(RAY_PROMPT)).to_be_visible()
    page.get_by_placeholder(RAY_TOKEN_FIELD).fill(sweep.token)
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text(RAY_PROMPT)).to_have_count(0)
    cookies = {c["name"]: c["value"] for c in page.context.cookies(url)}
    assert cookies.get(RAY_TOKEN_COOKIE) == sweep.token, cookies.keys()

    # the Overview's "Recent jobs" card lists the sweep's driver
    expect(page.get_by_text("Recent jobs")).to_be_visible()
    expect(page.get_by_text(re.compile(r"sweeps/scale_vs_quality\.py --preset smoke")).first).to_be_visible()
    # the Jobs page: the sweep's driver job (its entrypoint is the sweep's command line) is RUNNING
    page.get_by_role("link", name="Jobs", exact=True).click()
    job = page.get_by_role("row").filter(has_text=f"--experiment {sweep.experiment}")
    expect(job).to_have_count(1)
    expect(job).to_contain_text("RUNNING")
    expect(page.get_by_text(RAY_PROMPT)).to_have_count(0)
    page.screenshot(path=str(artifacts / "ray_dashboard.png"))
    assert sweep.driver.poll() is None, "the dashboard was checked after the sweep had ended"


def test_mlflow_ui_shows_the_trial_runs_and_their_per_language_scores(finished_sweep, page, artifacts):
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import expect

    db = finished_sweep.experiment_dir / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(finished_sweep.experiment)
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`xstilts.role` = 'sweep'")
    trials = client.search_runs([experiment.experiment_id], "tags.`xstilts.role` = 'trial'")
    names = sorted(run.info.run_name for run in trials)
    for cell in ("baseline", "english:random:32"):   # a trial's number is its place in the stage
        assert any(re.fullmatch(rf"{cell} s0 search #\d+", name) for name in names), names
    # the sweep keeps artifacts beside its results (sweeps/tracking.py: artifact_location): serve that folder
    artifact_root = experiment.artifact_location
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
               "--default-artifact-root", artifact_root, "--artifacts-destination", artifact_root,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with server(command, f"{base}/health", artifacts / "mlflow_server.log"):
        # The experiment's address with the model-training workflow opens on its runs, not the GenAI overview:
        # MLflow 3.17's UI picks the workflow from ?workflowType= or the sidebar switch, not from the experiment.
        page.goto(f"{base}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning")
        expect(page.get_by_text(parent.info.run_name, exact=True)).to_be_visible()
        expect(page.get_by_text(f"{len(trials) + 1} matching runs")).to_be_visible()
        expect(page.get_by_text("Token Usage")).to_have_count(0)
        # the plain address plus the sidebar's "Model training" switch gets there too (the README's way)
        page.goto(f"{base}/#/experiments")
        page.goto(f"{base}/#/experiments/{experiment.experiment_id}")
        page.get_by_role("button", name="Model training").click()
        expect(page.get_by_text(parent.info.run_name, exact=True)).to_be_visible()

        # the saved view the sweep made: one row per trial run, the test score of every language a column
        page.get_by_role("button", name="Views").click()
        page.get_by_role("menu").get_by_text("Test scores per trial").click()
        expect(page.get_by_text(f"{len(trials)} matching runs")).to_be_visible()
        for name in names:
            expect(page.get_by_text(name, exact=True)).to_be_visible()
        for column in ("objective", "score.genre.avg", "score.genre.fr", "score.genre.de"):   # the runs grid's headers
            header = page.locator(f'[role="columnheader"][col-id="metrics.`{column}`"]')
            expect(header).to_be_visible()
            expect(header).to_contain_text(column)
        close_assistant = page.get_by_role("button", name="Close", exact=True)
        if close_assistant.count() == 1:     # the "MLflow Assistant" side panel hides the columns
            close_assistant.click()
        page.screenshot(path=str(artifacts / "mlflow_runs.png"))

        # the parent run's artifacts (the analysis report) come from the sweep's artifact folder
        page.goto(f"{base}/#/experiments/{experiment.experiment_id}/runs/{parent.info.run_id}/artifacts")
        page.get_by_text("analysis", exact=True).click()
        expect(page.get_by_text("report.md", exact=True)).to_be_visible()


def test_optuna_dashboard_shows_the_study_and_its_trials(finished_sweep, page, artifacts):
    import optuna
    from playwright.sync_api import expect

    storage = f"sqlite:///{finished_sweep.experiment_dir / 'optuna.db'}"
    study_name = f"{finished_sweep.experiment}-search"
    trials = optuna.load_study(study_name=study_name, storage=storage).trials
    assert trials
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [console_script("optuna-dashboard"), storage, "--host", "127.0.0.1", "--port", str(port)]
    with server(command, f"{base}/api/studies", artifacts / "optuna_dashboard.log"):
        page.goto(f"{base}/dashboard/")
        study = page.get_by_text(study_name)
        expect(study).to_be_visible()
        study.click()
        expect(page).to_have_url(re.compile(r"/dashboard/studies/\d+$"))
        expect(page.get_by_text(f"{study_name} (id=")).to_be_visible()
        page.goto(page.url + "/trials")       # the "Trials (List)" tab
        expect(page.get_by_text(f"{len(trials)} Trials", exact=True)).to_be_visible()
        for trial in trials:     # one entry per trial, with its state ("Trial 3 Complete", "Trial 5 Pruned")
            state = trial.state.name.capitalize()
            expect(page.get_by_role("button", name=re.compile(rf"^Trial {trial.number} {state}\b"))).to_be_visible()
        # the first trial is selected: its user attributes link it to its Tune trial (and MLflow run)
        tune_trial_id = trials[0].user_attrs["tune_trial_id"]
        expect(page.get_by_text(f"tune_trial_id {tune_trial_id}", exact=True)).to_be_visible()
        page.screenshot(path=str(artifacts / "optuna_dashboard.png"))
