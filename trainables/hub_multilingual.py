"""Multilingual intermediate tasks on the hub: small, human-made, non-English data of the same task as an English
ladder, so a sweep can weigh more English data against less multilingual data of equal kind.

- `multi_xnli` (against the MNLI ladder): XNLI's human-translated validation sets in its 14 non-English languages,
  minus the part the xnli target selects models on.
- `multi_tydiqa` (against the SQuAD ladder): TyDiQA-GoldP's native train questions in its 8 non-English languages
  (the tydiqa target trains on the English ones and is scored on the hub's validation split, so the two are apart).

Why XNLI validation is split by row rather than the xnli target selecting on English validation only: XNLI's
validation sets are translations of one English set, row for row (each language lists the same 2,490 pairs in the
same order, a premise's three hypotheses on consecutive rows). Training on the German and French translations of an
English validation pair and then choosing models on that English pair would select on data the model has seen in
other words. So the split is by row index, the same rows in every language: the first XNLI_SELECTION_PERCENT (20%,
498 rows = 166 whole premise groups) is the xnli target's validation in all 15 languages, the rest (1,992 rows per
language) is the multilingual pool. XNLI test stays the target's test. Loading the pool checks that every language's
labels follow the English rows' (else the hub's order is not what this split assumes), and sweeps/overlap_check.py
checks the texts before any sweep trains.

Both pools load through trainables.hub (fixtures included): a train split of language "all" (the task's
train_language, as for the offline multi_paraphrase) is every language of the pool in turn, each example keeping its
own language.
"""
from __future__ import annotations

from functools import partial

from trainables.errors import UserError
from trainables.hub import (NLI_COLUMNS, QA_COLUMNS, TYDIQA_NAMES, XNLI_LANGUAGES, XNLI_SELECTION_PERCENT, HubSource,
                            _load_rows, _task, _tydiqa_row_in, load_examples)
from trainables.hub_rows import _pair, _span
from trainables.types import INTERMEDIATE, PAIR, SPAN, Task

ALL = "all"   # the train language of a pool that holds several languages
XNLI_VALIDATION_ROWS = 2_490   # per language, as the hub documents it
XNLI_POOL_ROWS = XNLI_VALIDATION_ROWS - XNLI_VALIDATION_ROWS * XNLI_SELECTION_PERCENT // 100   # 1,992
# TyDiQA-GoldP train rows per language (XTREME's counts; 49,881 in all, 3,696 of them English).
TYDIQA_TRAIN_ROWS = {"ar": 14_805, "bn": 2_390, "fi": 6_855, "id": 5_702, "ko": 1_625, "ru": 6_490, "sw": 2_755,
                     "te": 5_563}

MULTILINGUAL_SOURCES: dict[str, HubSource] = {
    "multi_xnli": HubSource(
        "facebook/xnli", {lang: lang for lang in XNLI_LANGUAGES.split() if lang != "en"},
        {"train": f"validation[{XNLI_SELECTION_PERCENT}%:]"}, NLI_COLUMNS, _pair),
    "multi_tydiqa": HubSource(
        "google/xtreme", {lang: "tydiqa" for lang in TYDIQA_TRAIN_ROWS}, {"train": "train"}, QA_COLUMNS, _span,
        keep=_tydiqa_row_in),
}
assert set(TYDIQA_TRAIN_ROWS) == set(TYDIQA_NAMES) - {"en"}


# Pools whose languages are translations of one language's rows, row for row: the split by row index holds out the
# same pairs in every language only if that is so, which load_pool checks on the labels.
TRANSLATED_FROM = {"multi_xnli": "en"}


def load_pool(name: str, split: str, language: str) -> list:
    """One language of a multilingual pool, or every language of it in turn (language "all")."""
    source = MULTILINGUAL_SOURCES[name]
    if language != ALL:
        return load_examples(name, split, language, source)
    by_language = {lang: load_examples(name, split, lang, source) for lang in source.configs}
    if name in TRANSLATED_FROM:
        _check_rows_aligned(name, source, split, by_language)
    return [example for examples in by_language.values() for example in examples]


def _check_rows_aligned(name: str, source: HubSource, split: str, by_language: dict[str, list]) -> None:
    original = TRANSLATED_FROM[name]
    labels = list(_load_rows(source.hub_id, original, source.splits[split])[NLI_COLUMNS["label"]])
    for language, examples in by_language.items():
        if [example.label for example in examples] != labels:
            raise UserError(f"{source.hub_id} ({language}, {source.splits[split]}) does not list the translations of "
                            f"the {original} rows in their order (the labels differ), so {name} cannot hold out the "
                            f"same rows in every language: check the dataset's revision")


def _multilingual_task(name: str, fmt: str, metric: str, max_length: int, description: str, train_size: int,
                       num_labels: int = 0) -> Task:
    return _task(name, INTERMEDIATE, fmt, metric, max_length, description, num_labels=num_labels,
                 train_size=train_size, source=MULTILINGUAL_SOURCES[name], load=partial(load_pool, name),
                 train_language=ALL)


MULTILINGUAL_TASKS: list[Task] = [
    _multilingual_task(
        "multi_xnli", PAIR, "accuracy", 128,
        f"XNLI validation, human-translated, in 14 non-English languages: NLI as MNLI, without the first "
        f"{XNLI_SELECTION_PERCENT}% (every language's), which the xnli target selects models on.",
        train_size=14 * XNLI_POOL_ROWS, num_labels=3),
    _multilingual_task(
        "multi_tydiqa", SPAN, "f1", 384,
        "TyDiQA-GoldP train, native questions in 8 non-English languages (the tydiqa target trains on the English "
        "ones and is scored on the validation split).", train_size=sum(TYDIQA_TRAIN_ROWS.values())),
]
