"""The size ladder and the quality tiers of intermediate training data.

A quality tier is a named filter of a task's train pool: `random` keeps the whole pool; a scored tier ranks the
examples by a documented scorer and keeps the best-scoring TIER_FRACTION of each label (so a balanced pool stays
balanced). select_examples then draws one seeded permutation of the tier per (task, tier, seed) and returns its
first `size` examples, so sizes nest (size n1 <= n2 gives a prefix of the same list) and a seed always gives the
same subset. A task without entries in QUALITY_TIERS (e.g. a hub task such as mnli) has the `random` tier. A
mixture's tiers and pool are its components' (trainables/mixtures.py selects each component's examples).

    select_examples("en_paraphrase", "hard", 1000, seed=0)   # -> list[PairExample]
"""
from __future__ import annotations

from functools import lru_cache
from statistics import mean

import numpy as np

from trainables.bible import jaccard
from trainables.errors import UserError
from trainables.tasks import get_mixture, get_task, is_mixture, load_examples

TIER_FRACTION = 0.5  # a scored tier keeps the best-scoring half of each label


def pair_hardness(example) -> float:
    """Hard pairs are those lexical overlap gets wrong: positives with LOW and negatives with HIGH word overlap
    (Jaccard of lower-cased word sets)."""
    overlap = jaccard(example.text_a, example.text_b)
    return 1.0 - overlap if example.label == 1 else overlap


def distractor_similarity(example) -> float:
    """Hard multiple choice: the distractors look like the answer (mean Jaccard of each distractor with it)."""
    answer = example.choices[example.label]
    return mean(jaccard(answer, option) for i, option in enumerate(example.choices) if i != example.label)


RANDOM = ("the whole train pool, unfiltered", None)

# task -> tier -> (description, scorer). A scorer maps an example to a number; higher is kept.
_TIERS = {
    "en_paraphrase": {
        "random": RANDOM,
        "hard": ("top half per label by pair_hardness: paraphrases with little word overlap, "
                 "non-paraphrases with much", pair_hardness),
    },
    "en_crossref": {
        "random": RANDOM,
        "hard": ("top half per label by pair_hardness: cross references sharing few words, "
                 "unrelated pairs sharing many", pair_hardness),
    },
    "en_next_verse": {
        "random": RANDOM,
        "hard": ("top half per answer position by distractor_similarity: distractors most like the answer",
                 distractor_similarity),
    },
    "multi_paraphrase": {
        "random": RANDOM,
    },
}

QUALITY_TIERS: dict[str, dict[str, str]] = {
    task: {tier: description for tier, (description, _) in tiers.items()} for task, tiers in _TIERS.items()}


def tiers(task_name: str) -> dict[str, str]:
    """tier name -> description for one task (just `random` for a task with no scored tiers); a mixture has the
    tiers all its components have, each component filtered by its own."""
    if is_mixture(task_name):
        per_component = [tiers(component) for component in get_mixture(task_name).components]
        return {tier: f"{tier} of every component" for tier in per_component[0]
                if all(tier in known for known in per_component)}
    task = get_task(task_name)
    if "train" not in task.splits:
        raise UserError(f"task {task_name} has no train split, so no training subsets")
    return QUALITY_TIERS.get(task_name, {"random": RANDOM[0]})


def _check_tier(task_name: str, quality: str) -> None:
    valid = tiers(task_name)
    if quality not in valid:
        raise UserError(f"task {task_name} has no quality tier {quality!r}; valid: {', '.join(valid)}")


@lru_cache(maxsize=None)
def _tier_pool(task_name: str, quality: str) -> tuple:
    pool = load_examples(task_name, "train", get_task(task_name).train_language)
    scorer = _TIERS.get(task_name, {}).get(quality, RANDOM)[1]
    if scorer is None:
        return tuple(pool)
    keep = []
    for label in sorted({ex.label for ex in pool}):
        indices = [i for i, ex in enumerate(pool) if ex.label == label]
        indices.sort(key=lambda i: -scorer(pool[i]))  # stable: ties keep pool order
        keep += indices[:round(TIER_FRACTION * len(indices))]
    return tuple(pool[i] for i in sorted(keep))  # the tier keeps the pool's order


def pool_size(task_name: str, quality: str) -> int:
    _check_tier(task_name, quality)
    if is_mixture(task_name):
        return sum(pool_size(component, quality) for component in get_mixture(task_name).components)
    return len(_tier_pool(task_name, quality))


@lru_cache(maxsize=64)
def _permutation(task_name: str, quality: str, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(len(_tier_pool(task_name, quality)))


def select_examples(task_name: str, quality: str, size: int, seed: int) -> list:
    """The first `size` examples of the (task, quality, seed) permutation of the tier's pool."""
    _check_tier(task_name, quality)
    if size < 0:
        raise UserError(f"size must be 0 or more, not {size}")
    if size == 0:
        return []
    pool = _tier_pool(task_name, quality)
    if size > len(pool):
        raise UserError(f"task {task_name} tier {quality} holds {len(pool):,} train examples; "
                        f"ask for at most that many, not {size:,}")
    return [pool[i] for i in _permutation(task_name, quality, seed)[:size]]
