"""A real two-node Ray cluster on 127.0.0.1 (`ray start --head` + a second `ray start --address`): the sweep with
`--address auto` places its trials on both nodes, and a trial whose node dies finishes on the other one from its
last checkpoint. Slow; CI runs it with `-m slow`."""
import csv
import json
import os
import secrets
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PORT = "6391"


def start_node(*args, env) -> subprocess.Popen:
    """`ray start ... --block` in its own process group: stopping it stops that node only (never `ray stop`,
    which would end every Ray runtime on the machine)."""
    return subprocess.Popen([shutil.which("ray") or "ray", "start", *args, "--node-ip-address", "127.0.0.1",
                             "--num-cpus", "1", "--block"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_node(node: subprocess.Popen, sig=signal.SIGTERM) -> None:
    try:
        os.killpg(node.pid, sig)
        node.wait(timeout=60)
    except ProcessLookupError:   # killed already
        pass
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)


def wait_for_nodes(count: int, env) -> None:
    check = ("import ray, time\n"
             f"ray.init(address='127.0.0.1:{PORT}', log_to_driver=False)\n"
             "deadline = time.time() + 120\n"
             f"while len([n for n in ray.nodes() if n['Alive']]) < {count} and time.time() < deadline:\n"
             "    time.sleep(1)\n"
             f"assert len([n for n in ray.nodes() if n['Alive']]) >= {count}\n")
    subprocess.run([sys.executable, "-c", check], env=env, check=True, timeout=180, capture_output=True)


@pytest.fixture
def two_node_cluster():
    # Ray 2.60 clusters use token authentication: every node and the driver share one token.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_ADDRESS": f"127.0.0.1:{PORT}"}
    nodes = [start_node("--head", "--port", PORT, "--dashboard-host", "127.0.0.1", env=env)]
    try:
        time.sleep(5)
        nodes.append(start_node("--address", f"127.0.0.1:{PORT}", env=env))
        wait_for_nodes(2, env)
        yield {"env": env, "head": nodes[0], "worker": nodes[1]}
    finally:
        for node in reversed(nodes):
            stop_node(node)


@pytest.mark.slow
def test_sweep_places_trials_on_both_nodes(two_node_cluster, tmp_path):
    env = two_node_cluster["env"]
    done = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "scale_vs_quality.py"), "--address", "auto", "--preset", "smoke",
         "--english-sizes", "0,32", "--max-concurrent", "2", "--storage-path", str(tmp_path), "--experiment", "two",
         "--no-analysis"], capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    nodes = {last_result(result_file)["worker_node_id"]
             for result_file in (tmp_path / "two" / "tune" / "search").glob("*/result.json")}
    assert len(nodes) == 2, f"trials ran on {len(nodes)} node(s)"
    with open(tmp_path / "two" / "results.csv", newline="") as handle:
        assert {row["source"] for row in csv.DictReader(handle)} == {"none", "english", "multilingual"}


def last_result(result_file: Path) -> dict:
    return [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()][-1]


def worker_node_id(env) -> str:
    query = ("import ray\n"
             f"ray.init(address='127.0.0.1:{PORT}', log_to_driver=False)\n"
             "print([n['NodeID'] for n in ray.nodes() if n['Alive']\n"
             "       and 'node:__internal_head__' not in n['Resources']][0])\n")
    done = subprocess.run([sys.executable, "-c", query], env=env, check=True, timeout=180, capture_output=True,
                          text=True)
    return done.stdout.strip().splitlines()[-1]


def kill_and_wait(pid: int, timeout: float = 60) -> None:
    """SIGKILL a process of the dead node that is not in the node's process group (a Ray worker can sit in its own)
    and wait until it is gone: a worker that outlived its raylet could otherwise go on past the pause, save a later
    checkpoint and report it, and the trial would resume from there."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1]
        except FileNotFoundError:
            return
        if state.startswith("Z"):   # dead, not yet reaped
            return
        time.sleep(0.2)
    raise AssertionError(f"the paused worker {pid} outlived its SIGKILL")


@pytest.mark.slow
def test_a_trial_whose_node_dies_finishes_on_the_other_node_from_its_checkpoint(two_node_cluster, tmp_path):
    """Each node has one CPU and two trials run at once, one per node; a trial of a 32-example cell waits at step 5
    (`pause_at_step`: phase 2 is steps 1-2 and checkpoints at its end, phase 3 is steps 3-6 and checkpoints at 6),
    and the test kills the worker node's whole process group (raylet, Train worker) under the trial that runs there.
    Ray Train restarts that trial's worker on the head node from its checkpoint at step 2."""
    from tests.test_sweep import DRIVER, check_one_record, rows, scored

    env = {**two_node_cluster["env"], "PYTHONPATH": str(REPO)}
    worker = worker_node_id(env)
    experiment_dir = tmp_path / "node"
    sweep = subprocess.Popen(
        [sys.executable, "-c", DRIVER % {"pause_at_step": 5}, "--address", "auto", "--preset", "smoke",
         "--english-sizes", "0,32", "--max-concurrent", "2", "--seeds", "1", "--storage-path", str(tmp_path),
         "--experiment", "node", "--no-analysis"], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        killed_cell, deadline = None, time.time() + 600
        while killed_cell is None and time.time() < deadline and sweep.poll() is None:
            for marker in experiment_dir.glob("paused-*"):
                node_id, _, pid = marker.read_text().partition(" ")
                if node_id == worker:
                    stop_node(two_node_cluster["worker"], signal.SIGKILL)
                    kill_and_wait(int(pid))
                    killed_cell = marker.name.removeprefix("paused-").rsplit("-", 1)[0]
            time.sleep(0.5)
        (experiment_dir / "pause-released").touch()
        output, _ = sweep.communicate(timeout=1200)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert killed_cell, "no trial paused on the worker node"
    assert sweep.returncode == 0, output[-4000:]

    # the killed trial went on from its checkpoint (the cell's other trial, the extra search trial, never stopped),
    # on the head node, and finished
    finals = [last_result(path) for path in (experiment_dir / "tune" / "search").glob("*/result.json")]
    killed = [result for result in finals if result["config"]["cell"] == killed_cell and
              result["resumed_from_step"] != -1]
    assert len(killed) == 1 and killed[0]["trial_complete"] == 1, finals
    assert killed[0]["worker_node_id"] != worker and killed[0]["resumed_from_step"] == 2, killed[0]
    # nothing lost: every trial scored, one record each in results.csv and MLflow
    table = rows(experiment_dir)
    assert all(scored(row) for row in table) and killed[0]["trial_id"] in {row["trial_id"] for row in table}
    check_one_record(experiment_dir, "node")
