"""benchmarks/trainable_overhead.py runs beside a stale cluster file (slow: it starts a Ray runtime and a trial).

A stopped `ray start` cluster leaves RAY_TMPDIR/ray/ray_current_cluster behind; an entry point that called
`ray.init()` with resources would then try to join that dead cluster and fail with "When connecting to an existing
cluster, num_cpus and num_gpus must not be provided". Every entry point that means a runtime of its own asks for
one (address "local"), as the sweep does.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmark_runs_beside_a_stale_cluster_file(tmp_path):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))   # short: Ray's socket paths must stay < 108 bytes
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:6999")   # nobody listens there
        figures = tmp_path / "figures.json"
        done = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "trainable_overhead.py"), "--model", "smoke", "--steps", "6",
             "--fp32-steps", "3", "--batch-size", "8", "--max-length", "32", "--threads", "1", "--eval-examples",
             "32", "--checkpoint-every", "0", "--json", str(figures)],
            capture_output=True, text=True, timeout=600, cwd=REPO,
            env={**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rows = json.loads(figures.read_text())["rows"]
        assert rows["ray bf16 ckpt=0" if "ray bf16 ckpt=0" in rows else "ray fp32 ckpt=0"]["examples_per_s"] > 0
        assert (ray_tmp / "ray" / "ray_current_cluster").read_text() == "127.0.0.1:6999"   # left as it was
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
