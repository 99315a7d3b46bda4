"""No evaluation verse or text reaches any training set; labels are balanced; only free translations are read.

The fixture rebuilds every offline task from scratch (caches cleared) while recording every database query, so
the translation codes asserted on are the ones actually read.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from trainables import bible, bible_span_tagging, bible_tasks, tasks
from trainables.bible_tasks import VERSE_NUMBER, normalise
from trainables.errors import UserError
from trainables.types import SPAN, TAGGING, TARGET, SpanExample, TaggingExample

ROOT = Path(__file__).resolve().parents[1]


def clear_caches() -> None:
    for module in (bible, bible_tasks, bible_span_tagging, tasks):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):
                value.cache_clear()


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    """{(task, split, language): examples} for every offline task, plus the (sql, params) of every query."""
    queries = []
    original = bible._query
    original_cache = os.environ.get("XSTILTS_CACHE")

    def recording_query(sql, params=()):
        queries.append((sql, params))
        return original(sql, params)

    clear_caches()
    bible._query = recording_query
    os.environ["XSTILTS_CACHE"] = str(tmp_path_factory.mktemp("empty_cache"))  # no task pickles: really built
    try:
        loaded = {(task.name, split, lang): tasks.load_examples(task.name, split, lang)
                  for task in tasks.OFFLINE_TASKS for split in task.splits
                  for lang in tasks.split_languages(task, split)}
    finally:
        bible._query = original
        if original_cache is None:
            os.environ.pop("XSTILTS_CACHE")
        else:
            os.environ["XSTILTS_CACHE"] = original_cache
        clear_caches()
    return loaded, queries


def verses_of(loaded, train: bool) -> set[str]:
    return {v for (_, split, _), examples in loaded.items() if (split == "train") == train
            for ex in examples for v in ex.verses}


def test_no_evaluation_verse_in_any_training_set(everything):
    loaded, _ = everything
    assert {"verse_qa", "verse_qa_xlt", "verse_boundaries"} <= {name for name, _, _ in loaded}
    train, evaluation = verses_of(loaded, train=True), verses_of(loaded, train=False)
    assert len(train) > 20_000 and len(evaluation) > 4_000
    assert not train & evaluation


def tagged_verses(ex: TaggingExample) -> list[str]:
    """The words of each verse: a B- label starts one."""
    starts = [i for i, label in enumerate(ex.labels) if label == bible_span_tagging.B_VERSE] + [len(ex.words)]
    return [" ".join(ex.words[a:b]) for a, b in zip(starts, starts[1:])]


def texts_seen(ex, evaluation: bool) -> list[str]:
    """The texts a model sees of an example. Span: question and answer (training also the context); tagging: the
    joined words and each verse."""
    if isinstance(ex, SpanExample):
        return [ex.question, *(text for text, _ in ex.answers), *(() if evaluation else (ex.context,))]
    if isinstance(ex, TaggingExample):
        return [" ".join(ex.words), *tagged_verses(ex)]
    fields = ("text", "text_a", "text_b", "context", "query", "target")
    return [getattr(ex, f) for f in fields if hasattr(ex, f)] + list(getattr(ex, "choices", ()))


def leaked(loaded, training: set[str]) -> Counter:
    """Per target, the evaluation examples showing a training text. Intermediate tasks are only ever trained on:
    their own evaluation splits are never scored, and keep such verses."""
    return Counter(name for (name, split, _), examples in loaded.items()
                   if split != "train" and tasks.get_task(name).role == TARGET
                   for ex in examples if any(normalise(text) in training for text in texts_seen(ex, evaluation=True)))


@pytest.fixture(scope="module")
def training_texts(everything) -> set[str]:
    loaded, _ = everything
    return {normalise(text) for (_, split, _), examples in loaded.items() if split == "train"
            for ex in examples for text in texts_seen(ex, evaluation=False)}


def test_no_evaluation_text_in_any_training_set(everything, training_texts):
    """Normalised (bible_tasks.normalise), no text an evaluation example shows equals one a training example shows."""
    loaded, _ = everything
    assert len(training_texts) > 50_000
    assert not leaked(loaded, training_texts)


def test_the_text_check_finds_the_duplicates_the_builders_drop(everything, training_texts, monkeypatch):
    """Without dropping them, parallel passages and formulas put genre test verses into training sets word for word."""
    monkeypatch.setattr(bible_tasks, "shows_training_text", lambda codes: frozenset())
    bible_tasks._genre_keys.cache_clear()
    try:
        unfiltered = {("genre", "test", "en"): bible_tasks.genre("test", "en")}
    finally:
        bible_tasks._genre_keys.cache_clear()
    assert leaked(unfiltered, training_texts)["genre"] >= 20


def test_every_verse_comes_from_a_chapter_of_its_split(everything):
    loaded, _ = everything
    splits = bible.chapter_splits()
    for (name, split, lang), examples in loaded.items():
        assert examples, (name, split, lang)
        for ex in examples:
            assert ex.verses
            chapters = {tuple(int(p) for p in v.split(".")[:2]) for v in ex.verses}
            assert {splits[ch] for ch in chapters} == {split}, (name, split, ex)


def test_split_holds_whole_chapters_stratified_by_genre():
    splits = bible.chapter_splits()
    assert len(splits) == 1189
    shares = Counter(splits.values())
    assert 0.75 < shares["train"] / 1189 < 0.85
    assert 0.03 < shares["validation"] / 1189 < 0.07
    assert 0.12 < shares["test"] / 1189 < 0.18
    for genre in bible.GENRES:
        assert {s for ch, s in splits.items() if bible.genre_of(ch[0]) == genre} == set(bible.SPLITS)


def test_split_is_the_same_in_every_process():
    code = ("from trainables import bible; s = bible.chapter_splits(); "
            "print(sorted(ch for ch, split in s.items() if split == 'test')[:40])")
    outputs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1 and outputs.pop().startswith("[(")


def test_only_free_translations_are_read(everything):
    _, queries = everything
    codes = {params[0] for sql, params in queries if "FROM bible " in sql}
    assert codes == set(bible.TRANSLATIONS)  # every allowed translation is used, nothing else
    assert not codes & bible.COPYRIGHTED
    assert all(params == () and "bbName = 'k'" in sql for sql, params in queries if "bibleRef" in sql)
    assert bible.QUERIED_TRANSLATIONS <= set(bible.TRANSLATIONS)
    assert not set(bible.TRANSLATIONS) & bible.COPYRIGHTED


@pytest.mark.parametrize("code", sorted(bible.COPYRIGHTED))
def test_copyrighted_translations_are_refused(code):
    with pytest.raises(UserError, match="not one this project may read"):
        bible.verses(code)


def share(examples, label) -> float:
    return sum(ex.label == label for ex in examples) / len(examples)


@pytest.mark.parametrize("name", ["en_paraphrase", "en_crossref", "multi_paraphrase", "paraphrase_x"])
def test_pair_labels_are_balanced(everything, name):
    loaded, _ = everything
    for (task, split, lang), examples in loaded.items():
        if task == name:
            assert 0.45 <= share(examples, 1) <= 0.55, (task, split, lang)


def test_answer_positions_and_genres_are_balanced(everything):
    loaded, _ = everything
    next_verse = loaded[("en_next_verse", "train", "en")]
    assert all(0.23 <= share(next_verse, k) <= 0.27 for k in range(4))
    genre = Counter(ex.label for ex in loaded[("genre", "train", "en")])
    assert len(genre) == 7 and max(genre.values()) <= 1.2 * min(genre.values())


def test_evaluation_languages_share_verses(everything):
    loaded, _ = everything
    genre_verses = {lang: [ex.verses for ex in examples] for (task, split, lang), examples in loaded.items()
                    if task == "genre" and split == "test"}
    assert len(genre_verses) == 12 and len({tuple(v) for v in genre_verses.values()}) == 1
    retrieval = loaded[("retrieval", "test", "ko")]
    assert len({ex.target for ex in retrieval}) == len(retrieval)  # unique targets: top-1 is well defined


def test_texts_are_clean(everything):
    loaded, _ = everything
    for (name, _, _), examples in loaded.items():
        fmt = tasks.get_task(name).format
        for ex in examples[:500]:
            for text in texts_seen(ex, evaluation=False):
                assert "`" not in text and "***" not in text and text == text.strip()
                if fmt in (SPAN, TAGGING):
                    assert not VERSE_NUMBER.search(text), (name, text)  # alternative verse numbers are removed
