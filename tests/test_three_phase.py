"""The trainable through a real Ray runtime on the smoke model: metrics, the phase-2 cache, fault tolerance."""
import math

import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from trainables.three_phase import run_trial  # noqa: E402

BASE = {
    "model": "smoke", "cell": "english:en_paraphrase:random:48", "seed": 3,
    "targets": ["genre", "retrieval"], "eval_languages": ["en", "fr", "de"],
    "lr_intermediate": 1e-3, "lr_target": 1e-3, "batch_size": 8, "max_length": 32,
    "target_train_size": 32, "max_eval_examples": 16, "checkpoint_every": 2, "report_every": 1,
}


@pytest.fixture(scope="module")
def ray_runtime():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def run(configs, storage):
    """Run trials one after another through Tune; return their final metrics in order."""
    results = []
    for index, config in enumerate(configs):
        tuner = tune.Tuner(tune.with_resources(run_trial, {"cpu": 0, "memory": 1 << 20}),
                           param_space={**config, "storage_path": str(storage)},
                           run_config=tune.RunConfig(name=f"t{index}", storage_path=str(storage / "tune")))
        result = tuner.fit()[0]
        assert result.error is None, result.error
        results.append(result.metrics)
    return results


def scores(metrics):
    return {k: v for k, v in metrics.items() if k.startswith(("score.", "val.")) or k == "objective"}


@pytest.mark.slow
def test_trial_reports_scores_reuses_the_cache_and_survives_a_killed_worker(ray_runtime, tmp_path):
    clean, cached, killed = run([
        {**BASE, "cache_dir": str(tmp_path / "cache_a")},
        {**BASE, "cache_dir": str(tmp_path / "cache_a"), "lr_target": 2e-3},        # same phase-2 key
        {**BASE, "cache_dir": str(tmp_path / "cache_b"), "fail_at_step": 4},       # dies in phase 2 (6 steps)
    ], tmp_path)

    # every target and language scored, in points
    for key in ("score.genre.en", "score.genre.fr", "score.genre.de", "score.genre.avg",
                "score.retrieval.fr", "score.retrieval.de", "val.genre.avg", "objective"):
        assert 0.0 <= clean[key] <= 100.0, key
    assert "score.retrieval.en" not in clean          # retrieval is en -> X only
    assert clean["trial_complete"] == 1 and clean["global_step"] == 6 + 4   # 48/8 phase-2 + 32/8 phase-3 steps

    # the second trial with the same phase-2 key skips phase 2 but keeps the step counter comparable
    assert clean["phase2_cache_hit"] == 0 and cached["phase2_cache_hit"] == 1
    assert cached["global_step"] == clean["global_step"]

    # a worker killed at step 4 restarts from its checkpoint (step 2 or 4, never 0) with identical results
    assert (tmp_path / "fault-injected-english:en_paraphrase:random:48-4").exists()
    assert killed["resumed_from_step"] in (2, 4)
    assert clean["resumed_from_step"] == -1
    assert scores(killed) == scores(clean)            # determinism: same config and seed, same metrics
    assert not any(math.isnan(v) for v in scores(clean).values())


def test_a_target_without_validation_is_reported_on_test_and_leaves_the_objective():
    """Tatoeba and XQuAD have no validation split: their test scores are reported, the objective comes from the
    targets that have one (and is NaN while none has)."""
    from trainables.three_phase import _fresh_progress, _Reporter
    from trainables.trial_config import TrialConfig

    progress = _fresh_progress()
    progress["scores"]["tatoeba"] = {"test": {"fr": 80.0, "avg": 80.0}}
    metrics = _Reporter(TrialConfig(), progress, rank=0).metrics()
    assert metrics["score.tatoeba.fr"] == 80.0 and "val.tatoeba.avg" not in metrics
    assert math.isnan(metrics["objective"])
    progress["scores"]["genre"] = {"validation": {"fr": 40.0, "avg": 40.0}, "test": {"fr": 42.0, "avg": 42.0}}
    metrics = _Reporter(TrialConfig(), progress, rank=0).metrics()
    assert metrics["objective"] == 40.0 and metrics["score.genre.avg"] == 42.0


def test_a_trial_reports_the_time_left_in_its_phase():
    """The progress panel shows it as is (sweeps/progress.py): the trial knows its examples per step."""
    from trainables.three_phase import _fresh_progress, _Reporter
    from trainables.trial_config import TrialConfig

    progress = {**_fresh_progress(), "global_step": 40, "phase_steps": (0, 125), "examples_per_s": 64.0}
    metrics = _Reporter(TrialConfig(batch_size=32, grad_accum_steps=2), progress, rank=0).metrics()
    assert metrics["phase_seconds_left"] == (125 - 40) * 64 / 64.0
    progress["examples_per_s"] = math.nan   # no rate measured yet in this phase
    assert math.isnan(_Reporter(TrialConfig(), progress, rank=0).metrics()["phase_seconds_left"])


def test_a_damaged_trial_checkpoint_is_detected_and_the_trial_recomputed(tmp_path, capsys):
    """A checkpoint whose state file changed after it was written (sha256 beside it), or that does not load at
    all, restarts the trial from the beginning instead of failing on every retry."""
    from trainables.three_phase import STATE_FILE, _fresh_progress, restore_from, write_state

    progress = {**_fresh_progress(), "global_step": 8, "phase": "intermediate"}
    resume = {"stage": "intermediate", "train_state": {"step": 8}}
    write_state(tmp_path, {"progress": progress, "resume": resume})
    restored, resumed = restore_from(tmp_path)
    assert restored["global_step"] == 8 and restored["resumed_from_step"] == 8 and resumed == resume

    data = bytearray((tmp_path / STATE_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF                                   # one flipped bit pattern in the middle
    (tmp_path / STATE_FILE).write_bytes(bytes(data))
    assert restore_from(tmp_path) == (_fresh_progress(), {})
    assert "is damaged (ValueError: sha256 mismatch); recomputing the trial" in capsys.readouterr().err

    (tmp_path / STATE_FILE).write_bytes(bytes(data[:100]))          # cut short, and no digest (an older writer)
    (tmp_path / "trial_state.sha256").unlink()
    assert restore_from(tmp_path) == (_fresh_progress(), {})
