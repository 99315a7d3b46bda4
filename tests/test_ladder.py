"""Shared size ladders on the smoke encoder: the WSD schedule, trunk snapshots and their exactness (no Ray), then
trials through Ray, and a killed sweep resumed (slow)."""
from __future__ import annotations

import copy
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from trainables.formats import TaskModel, get_format
from trainables.ladder import TrunkSnapshots, discard_own_branch, example_passes, phase2_ladder_kwargs, trunk_key
from trainables.phase2_cache import phase2_key
from trainables.training import TrainConfig, get_wsd_schedule, train
from trainables.trial_config import TrialConfig
from trainables.types import PAIR, TARGET, PairExample, Task

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = "the a cat dog bird fish horse red blue green small big old runs sleeps eats".split()
TASK = Task(name="toy_pair", role=TARGET, format=PAIR, languages=("en",), metric="accuracy", num_labels=2,
            load=lambda split, language: [], max_length=24)
# 64 examples in batches of 4: the largest size runs 16 steps (decay from 12), size 40 runs 10 (decay from 8).
CFG = TrainConfig(lr=3e-3, epochs=1, batch_size=4, max_length=24, seed=3, schedule="wsd", warmup_steps=3,
                  decay_fraction=0.2, shuffle=False, precision="fp32")


def pairs(n: int) -> list[PairExample]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        text = " ".join(rng.sample(WORDS, 3))
        out.append(PairExample(text, text if i % 2 else " ".join(rng.sample(WORDS, 3)), i % 2, "en"))
    return out


def trained(smoke, size: int, **loop) -> tuple[dict, object]:
    """Phase 2 of `size` examples on a fresh copy of the smoke encoder: its parameters and the loop's result."""
    tokenizer, encoder = smoke
    model = TaskModel(copy.deepcopy(encoder), get_format(PAIR), 2, seed=CFG.seed)
    features = get_format(PAIR).featurize(tokenizer, pairs(size), CFG.max_length, TASK)
    result = train(model, features, CFG, device="cpu", **loop)
    return {name: p.detach().clone() for name, p in model.named_parameters()}, result


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_wsd_learning_rates():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_wsd_schedule(optimizer, warmup_steps=4, total_steps=20, decay_fraction=0.2)
    lrs = []
    for _ in range(20):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:5] == [0.0, 0.25, 0.5, 0.75, 1.0]                     # warm-up: fixed steps, not a ratio
    assert lrs[4:17] == [1.0] * 13                                    # stable up to the decay start, step 16
    assert lrs[16:] == pytest.approx([1.0, 0.75, 0.5, 0.25])          # linear decay to 0 over the last 20%
    assert scheduler.state_dict()["lr_lambdas"] == [None]             # nothing run-specific in a snapshot


def test_a_size_from_the_trunk_is_bit_identical_to_training_it_alone(smoke, tmp_path):
    trunk = TrunkSnapshots(tmp_path / "trunk")
    largest, result = trained(smoke, 64, trunk=trunk, branch_sizes=[40, 64])
    assert result.steps == 16 and trunk.steps() == [8]               # 40's decay start; its own is not stored
    alone, _ = trained(smoke, 40)
    shared, branched = trained(smoke, 40, trunk=trunk, branch_sizes=[])
    assert branched.resumed_at == 8 and branched.steps == 10 and len(branched.losses) == 10
    assert identical(shared, alone)
    assert not identical(shared, largest)

    # A corrupt snapshot is absent: size 40 is recomputed from scratch (same weights), the trunk run rewrites it.
    state = trunk.entry(8) / "trunk.pt"
    state.write_bytes(state.read_bytes()[:-8] + b"corrupt!")
    assert trunk.load(8) is None and trunk.latest(8) is None
    recomputed, result = trained(smoke, 40, trunk=trunk)
    assert result.resumed_at == 0 and identical(recomputed, alone)
    trained(smoke, 64, trunk=trunk, branch_sizes=[40])
    assert trunk.load(8) is not None and trained(smoke, 40, trunk=trunk)[1].resumed_at == 8


def test_trial_config_keys_and_knobs(tmp_path):
    separate = TrialConfig(model="smoke", cell="english:en_paraphrase:random:32", seed=0, lr_intermediate=1e-3)
    # the keys of separate runs are those from before the ladder knob (they must not change)
    assert phase2_key(separate) == "841ce8fb64085f96681ce0047467c945"
    assert phase2_key(TrialConfig()) == "19f70ad30f8ee8564d1cb12a16ca3e75"
    shared = dataclasses.replace(separate, ladder="shared", ladder_cells=(
        "none", "english:en_paraphrase:random:32", "english:en_paraphrase:random:96", "english:en_paraphrase:hard:64"))
    assert phase2_key(shared) != phase2_key(separate)
    assert phase2_key(dataclasses.replace(shared, warmup_steps=2)) != phase2_key(shared)
    assert shared.ladder_sizes == (32, 96) and shared.train_config("intermediate", TASK).schedule == "wsd"
    assert shared.train_config("target", TASK).schedule == "linear"
    bigger = dataclasses.replace(shared, cell="english:en_paraphrase:random:96")
    assert trunk_key(bigger) == trunk_key(shared) != trunk_key(dataclasses.replace(shared, seed=1))
    assert phase2_ladder_kwargs(bigger, 96, tmp_path)["branch_sizes"] == [32]
    # once size 32 (4 steps, decay from 3) has its phase-2 entry, the snapshot at its decay start goes
    snapshots = phase2_ladder_kwargs(bigger, 96, tmp_path)["trunk"]
    snapshots.store({"step": 3, "model": {"w": torch.ones(2)}})
    assert snapshots.latest(5)["step"] == 3
    discard_own_branch(shared, tmp_path, total_steps=4)
    assert snapshots.steps() == []
    # more than one epoch: falls back to separate, with the separate key
    two = dataclasses.replace(shared, epochs_intermediate=2)
    assert not two.shared_ladder and phase2_ladder_kwargs(two, 32, tmp_path) == {}
    assert phase2_key(two) == phase2_key(dataclasses.replace(separate, epochs_intermediate=2))
    assert two.train_config("intermediate", TASK).schedule == "linear"


def test_example_passes_of_the_laptop_ladder():
    sizes = (1000, 2000, 4000, 8000)
    assert example_passes(sizes, 32, shared=False) == 15000
    assert example_passes(sizes, 32, shared=True) == 8000 + 200 + 400 + 800


@pytest.mark.slow
def test_trials_of_a_shared_ladder_through_ray(tmp_path):
    """The larger size's trial leaves a trunk snapshot; the smaller one's trial starts from it and scores exactly
    as a trial of that size that trained alone (another cache folder: no snapshot)."""
    ray = pytest.importorskip("ray")
    from ray import tune

    from trainables.phase2_cache import Phase2Cache
    from trainables.three_phase import run_trial

    base = {"model": "smoke", "seed": 3, "targets": ["retrieval"], "eval_languages": ["en", "fr"],
            "lr_intermediate": 1e-3, "batch_size": 8, "max_length": 32, "max_eval_examples": 16,
            "checkpoint_every": 0, "report_every": 1, "ladder": "shared", "warmup_steps": 1,
            "ladder_cells": ["english:en_paraphrase:random:32", "english:en_paraphrase:random:96"]}
    runs = [("english:en_paraphrase:random:96", "shared"), ("english:en_paraphrase:random:32", "shared"),
            ("english:en_paraphrase:random:32", "alone")]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        finals = []
        for index, (cell, cache) in enumerate(runs):
            tuner = tune.Tuner(tune.with_resources(run_trial, {"cpu": 0, "memory": 1 << 20}),
                               param_space={**base, "cell": cell, "cache_dir": str(tmp_path / cache),
                                            "storage_path": str(tmp_path)},
                               run_config=tune.RunConfig(name=f"t{index}", storage_path=str(tmp_path / "tune")))
            result = tuner.fit()[0]
            assert result.error is None, result.error
            finals.append(result.metrics)
    finally:
        ray.shutdown()
    trunk_steps = [entry["trunk_step"] for cache in ("shared", "alone")
                   for entry in (description for _, description in
                                 (Phase2Cache(tmp_path / cache).load(p.name) for p in (tmp_path / cache).iterdir()
                                  if p.name != "trunks"))]
    assert sorted(trunk_steps) == [0, 0, 3]        # 32 examples / batch 8 = 4 steps, decay from step 3
    scores = [{k: v for k, v in metrics.items() if k.startswith("score.")} for metrics in finals]
    assert scores[1] == scores[2] and finals[1]["global_step"] == finals[2]["global_step"] == 4
    # example passes trained against those of the size alone: 96 in full, then 32 from step 3 of batches of 8
    assert [(f["phase2_example_passes"], f["phase2_example_passes_alone"]) for f in finals] == [
        (96, 96), (8, 32), (32, 32)]


@pytest.mark.slow
def test_a_killed_sweep_resumed_starts_the_smaller_sizes_from_the_snapshots_it_had_made(tmp_path, monkeypatch):
    """The smoke ladder 32 < 96 at one trial at a time: the driver is killed while the first 96 trial is in phase 3
    (it waits at step 8, `pause_at_step`, which only the 96 trials reach), after its trunk left the snapshot for 32;
    the resumed sweep's 32 trial of that ladder starts from that snapshot."""
    from tests.test_sweep import DRIVER, REPO, reap, sweep_with
    from trainables.phase2_cache import Phase2Cache

    marker = f"XSTILTS_TEST_RUN=ladder-{os.getpid()}"
    monkeypatch.setenv(*marker.split("="))
    experiment_dir = tmp_path / "ladder"
    args = ["--preset", "smoke", "--english-sizes", "0,32,96", "--seeds", "1", "--max-concurrent", "1",
            "--storage-path", str(tmp_path), "--experiment", "ladder", "--no-analysis"]
    try:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER % {"pause_at_step": 8}, *args], cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        paused = experiment_dir / "paused-english:en_paraphrase:random:96-8"
        deadline = time.time() + 600
        while not paused.exists() and time.time() < deadline and driver.poll() is None:
            time.sleep(0.5)
        assert paused.exists(), "the 96 trial never reached step 8"
        snapshots = list((experiment_dir / "phase2_cache" / "trunks").rglob("*"))
        os.killpg(driver.pid, signal.SIGKILL)     # the driver and the local Ray it started
        driver.wait()
        assert any(path.is_file() for path in snapshots), "no trunk snapshot before the kill"
        (experiment_dir / "pause-released").touch()

        resumed = sweep_with({"pause_at_step": 8}, *args, "--resume")
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    finally:
        reap(marker.encode())
    cache = Phase2Cache(experiment_dir / "phase2_cache")
    entries = {description["config"]["cell"]: description
               for description in (cache.load(path.name)[1] for path in cache.root.iterdir() if path.name != "trunks")}
    assert entries["english:en_paraphrase:random:32"]["trunk_step"] > 0, entries
    assert entries["english:en_paraphrase:random:96"]["trunk_step"] == 0
