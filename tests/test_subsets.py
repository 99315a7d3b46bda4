"""The size ladder and quality tiers: nesting, determinism, tier semantics, errors."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from statistics import mean

import numpy as np
import pytest

from trainables import subsets, tasks
from trainables.bible import jaccard
from trainables.errors import UserError
from trainables.types import INTERMEDIATE

ROOT = Path(__file__).resolve().parents[1]
ENGLISH_INTERMEDIATE = ("en_paraphrase", "en_crossref", "en_next_verse")


def test_every_offline_intermediate_task_has_tiers():
    offline_intermediate = {t.name for t in tasks.OFFLINE_TASKS if t.role == INTERMEDIATE}
    assert offline_intermediate <= set(subsets.QUALITY_TIERS) <= set(tasks.TASKS)
    for name, tiers in subsets.QUALITY_TIERS.items():
        assert "random" in tiers and all(tiers.values())
    for name in ENGLISH_INTERMEDIATE:
        assert len(subsets.QUALITY_TIERS[name]) >= 2  # random plus a scored tier


@pytest.mark.parametrize("name,quality", [("en_paraphrase", "hard"), ("en_crossref", "random"),
                                          ("en_next_verse", "hard"), ("multi_paraphrase", "random")])
def test_sizes_nest(name, quality):
    ladder = [subsets.select_examples(name, quality, n, seed=3) for n in (0, 10, 100, 1000)]
    assert ladder[0] == []
    for small, large in zip(ladder[1:], ladder[2:]):
        assert large[:len(small)] == small
    assert len(ladder[-1]) == 1000


def test_same_seed_same_subset_regardless_of_global_state():
    first = subsets.select_examples("en_crossref", "hard", 200, seed=7)
    random.seed(1)
    np.random.seed(1)
    np.random.random(10)
    subsets._permutation.cache_clear()
    assert subsets.select_examples("en_crossref", "hard", 200, seed=7) == first
    assert subsets.select_examples("en_crossref", "hard", 200, seed=8) != first


def test_same_subset_in_another_process():
    code = ("from trainables.subsets import select_examples; "
            "print([ex.verses for ex in select_examples('en_crossref', 'hard', 20, seed=5)])")
    outputs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1
    assert outputs.pop().strip() == str([ex.verses for ex in subsets.select_examples("en_crossref", "hard", 20, 5)])


def test_random_tier_is_the_whole_pool():
    pool = tasks.load_examples("multi_paraphrase", "train", "all")
    assert subsets.pool_size("multi_paraphrase", "random") == len(pool)
    everything = subsets.select_examples("multi_paraphrase", "random", len(pool), seed=0)
    assert sorted(map(repr, everything)) == sorted(map(repr, pool))


def test_hard_tier_keeps_half_of_each_label_and_is_harder():
    pool = tasks.load_examples("en_paraphrase", "train", "en")
    hard = subsets._tier_pool("en_paraphrase", "hard")
    for label in (0, 1):
        assert sum(ex.label == label for ex in hard) == round(0.5 * sum(ex.label == label for ex in pool))

    def overlap(examples, label):
        return mean(jaccard(ex.text_a, ex.text_b) for ex in examples if ex.label == label)
    assert overlap(hard, 1) < overlap(pool, 1)  # paraphrases sharing fewer words
    assert overlap(hard, 0) > overlap(pool, 0)  # non-paraphrases sharing more


def test_hard_next_verse_has_similar_distractors():
    pool = tasks.load_examples("en_next_verse", "train", "en")
    hard = subsets._tier_pool("en_next_verse", "hard")
    assert mean(map(subsets.distractor_similarity, hard)) > mean(map(subsets.distractor_similarity, pool))


def test_size_beyond_the_pool_names_its_size():
    size = subsets.pool_size("en_crossref", "hard")
    with pytest.raises(UserError, match=f"holds {size:,} train examples"):
        subsets.select_examples("en_crossref", "hard", size + 1, seed=0)
    with pytest.raises(UserError, match="0 or more"):
        subsets.select_examples("en_crossref", "hard", -1, seed=0)


def test_unknown_tier_and_task():
    with pytest.raises(UserError, match="valid: random, hard"):
        subsets.select_examples("en_paraphrase", "best", 10, seed=0)
    with pytest.raises(UserError, match="valid: random"):
        subsets.pool_size("multi_paraphrase", "hard")
    with pytest.raises(UserError, match="did you mean"):
        subsets.select_examples("en_paraphrse", "random", 10, seed=0)
    with pytest.raises(UserError, match="no train split"):
        subsets.select_examples("retrieval", "random", 10, seed=0)
