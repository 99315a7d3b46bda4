"""A real two-node Ray cluster on 127.0.0.1 (`ray start --head` + a second `ray start --address`): the sweep with
`--address auto` places its trials on both nodes. Slow; CI runs it with `-m slow`."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PORT = "6391"


def ray_cli(*args, env):
    done = subprocess.run([shutil.which("ray") or "ray", *args], capture_output=True, text=True, timeout=180,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


@pytest.fixture
def two_node_cluster(tmp_path):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=120, env=env)
    head = ray_cli("start", "--head", "--port", PORT, "--node-ip-address", "127.0.0.1",
                   "--dashboard-host", "127.0.0.1", "--num-cpus", "1", env=env)
    try:
        ray_cli("start", "--address", f"127.0.0.1:{PORT}", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                env=env)
        yield env, head.stdout + head.stderr
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=120, env=env)


@pytest.mark.slow
def test_sweep_places_trials_on_both_nodes(two_node_cluster, tmp_path):
    env, _ = two_node_cluster
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
