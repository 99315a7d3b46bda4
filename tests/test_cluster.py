"""A real two-node Ray cluster on 127.0.0.1 (`ray start --head` + a second `ray start --address`): the sweep with
`--address auto` places its trials on both nodes. Slow; CI runs it with `-m slow`."""
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
        yield env
    finally:
        for node in reversed(nodes):
            os.killpg(node.pid, signal.SIGTERM)
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)


@pytest.mark.slow
def test_sweep_places_trials_on_both_nodes(two_node_cluster, tmp_path):
    env = two_node_cluster
    done = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "scale_vs_quality.py"), "--address", "auto", "--preset", "smoke",
         "--english-sizes", "0,32", "--max-concurrent", "2", "--storage-path", str(tmp_path), "--experiment", "two",
         "--no-analysis"], capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    nodes = set()
    for result_file in (tmp_path / "two" / "tune" / "search").glob("*/result.json"):
        last = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()][-1]
        nodes.add(last["worker_node_id"])
    assert len(nodes) == 2, f"trials ran on {len(nodes)} node(s)"
    with open(tmp_path / "two" / "results.csv", newline="") as handle:
        assert {row["source"] for row in csv.DictReader(handle)} == {"none", "english", "multilingual"}
