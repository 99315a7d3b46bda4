"""verse_qa, verse_qa_xlt and verse_boundaries: answers index their contexts, labels align with words, passages are
consecutive verses of one chapter, languages share verses, builds are deterministic, no verse shown in evaluation has
a training verse's text."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from trainables import bible, bible_span_tagging, tasks
from trainables.bible_span_tagging import B_VERSE, I_VERSE, shown_verses
from trainables.bible_tasks import PARAPHRASE_X_PAIRS, normalise
from trainables.types import SPAN, TAGGING, SpanExample, TaggingExample

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("verse_qa", "verse_qa_xlt", "verse_boundaries")
ELEVEN = ("fr", "de", "tl", "es", "pt", "it", "ar", "ru", "ko", "fa", "vi")


def clear_caches() -> None:
    for value in vars(bible_span_tagging).values():
        if hasattr(value, "cache_clear"):
            value.cache_clear()


@pytest.fixture(scope="module")
def built() -> dict[tuple[str, str, str], list]:
    """{(task, split, language): examples}, straight from the builders (no disk cache)."""
    return {(name, split, lang): tasks.get_task(name).load(split, lang)
            for name in NAMES for split in bible.SPLITS
            for lang in tasks.split_languages(tasks.get_task(name), split)}


def key(verse: str) -> tuple[int, int, int]:
    book, chapter, number = map(int, verse.split("."))
    return book, chapter, number


def codes_of(ex: SpanExample) -> tuple[str, str]:
    """(question translation, context translation), from the id "<answer verse>/<question>-<context>"."""
    question_code, context_code = ex.id.split("/")[1].split("-")
    return question_code, context_code


def answer_index(ex: SpanExample) -> int:
    return ex.verses.index(ex.id.split("/")[0])


def test_registry_declarations():
    qa, xlt, boundaries = map(tasks.get_task, NAMES)
    assert qa.format == xlt.format == SPAN and qa.metric == xlt.metric == "f1" and qa.num_labels == 0
    assert boundaries.format == TAGGING and boundaries.metric == "entity_f1"
    assert boundaries.label_names == ("O", "B-VERSE", "I-VERSE") and boundaries.num_labels == 3
    assert all(tasks.split_languages(task, "train") == ("en",) for task in (qa, xlt, boundaries))
    for split in ("validation", "test"):
        assert set(tasks.split_languages(qa, split)) == {"en", "fr", "de", "tl"}
        assert set(tasks.split_languages(xlt, split)) == {"en", *ELEVEN}
        assert set(tasks.split_languages(boundaries, split)) == {"en", *ELEVEN}


def test_counts_per_split(built):
    counts = Counter()
    for (name, split, lang), examples in built.items():
        counts[name, split, len(examples)] += 1
    sizes = {(name, split): n for name, split, n in counts}
    assert len(sizes) == len(counts)  # one size per (task, split): every language has as many examples
    assert sizes["verse_qa", "train"] == sizes["verse_qa_xlt", "train"] >= 4_000
    assert sizes["verse_boundaries", "train"] >= 6_000
    caps = {"verse_qa": bible_span_tagging.QA_PASSAGES, "verse_qa_xlt": bible_span_tagging.QA_PASSAGES,
            "verse_boundaries": bible_span_tagging.BOUNDARY_PASSAGES}
    for name in NAMES:
        assert 200 <= sizes[name, "validation"] <= caps[name]["validation"]
        assert 450 <= sizes[name, "test"] <= caps[name]["test"]


def test_answers_index_their_contexts(built):
    for (name, split, lang), examples in built.items():
        for ex in examples:
            if not isinstance(ex, SpanExample):
                continue
            question_code, context_code = codes_of(ex)
            texts = [shown_verses(context_code)[key(v)] for v in ex.verses]
            assert ex.context == " ".join(texts)
            [(answer, start)] = ex.answers
            assert ex.context[start:start + len(answer)] == answer == texts[answer_index(ex)]
            assert ex.context.count(answer) == 1  # unambiguous
            assert ex.question == shown_verses(question_code)[key(ex.id.split("/")[0])] != answer
            assert bible.TRANSLATIONS[context_code][0] == ex.language == lang


def test_questions_come_from_the_declared_translations(built):
    for split in bible.SPLITS:
        english = Counter(codes_of(ex) for ex in built["verse_qa", split, "en"])
        assert set(english) == {("k", "4"), ("3", "4")}  # KJV or BBE asks about WEB
        assert 0.4 < english["k", "4"] / sum(english.values()) < 0.6
        assert built["verse_qa_xlt", split, "en"] == built["verse_qa", split, "en"]
    for lang, (context, question) in PARAPHRASE_X_PAIRS.items():
        if lang != "en":
            examples = built["verse_qa", "test", lang]
            assert {codes_of(ex) for ex in examples} == {(question, context)}
            assert {ex.question_language for ex in examples} == {""}
    for lang in ELEVEN:
        examples = built["verse_qa_xlt", "test", lang]
        assert {codes_of(ex) for ex in examples} == {("k", bible.CANONICAL[lang])}
        assert {ex.question_language for ex in examples} == {"en"}


def test_passages_are_consecutive_verses_of_one_chapter(built):
    lengths = {"verse_qa": {4, 5, 6}, "verse_qa_xlt": {4, 5, 6}, "verse_boundaries": {2, 3, 4, 5}}
    for (name, split, lang), examples in built.items():
        for ex in examples:
            keys = [key(v) for v in ex.verses]
            assert len(keys) in lengths[name] and len({k[:2] for k in keys}) == 1
            assert [k[2] for k in keys] == list(range(keys[0][2], keys[0][2] + len(keys)))
        if split == "train":
            assert {len(ex.verses) for ex in examples} == lengths[name]  # varying, so counting cannot solve it
            assert len({v for ex in examples for v in ex.verses}) == sum(len(ex.verses) for ex in examples)


def test_answer_position_is_uniform_within_each_passage_length(built):
    positions = Counter((len(ex.verses), answer_index(ex)) for ex in built["verse_qa", "train", "en"])
    for length in (4, 5, 6):
        counts = [positions[length, i] for i in range(length)]
        assert min(counts) >= 0.8 * max(counts), (length, counts)


def test_labels_align_with_words(built):
    for (name, split, lang), examples in built.items():
        if name != "verse_boundaries":
            continue
        shown = shown_verses(bible.CANONICAL[lang])
        for ex in examples:
            assert isinstance(ex, TaggingExample) and ex.language == lang
            assert len(ex.labels) == len(ex.words) and set(ex.labels) <= {B_VERSE, I_VERSE}
            starts = [i for i, label in enumerate(ex.labels) if label == B_VERSE]
            assert starts[0] == 0 and len(starts) == len(ex.verses)
            pieces = [ex.words[a:b] for a, b in zip(starts, starts[1:] + [len(ex.words)])]
            assert [" ".join(words) for words in pieces] == [shown[key(v)] for v in ex.verses]
            assert all(" " not in word and word for word in ex.words)


def test_evaluation_languages_share_verses(built):
    for name in NAMES:
        for split in ("validation", "test"):
            passages = {lang: [ex.verses for ex in examples]
                        for (task, s, lang), examples in built.items() if task == name and s == split}
            assert len({tuple(p) for p in passages.values()}) == 1, (name, split)
    assert ([ex.id.split("/")[0] for ex in built["verse_qa", "test", "fr"]]
            == [ex.id.split("/")[0] for ex in built["verse_qa_xlt", "test", "ko"]])  # the same answers too


@lru_cache(maxsize=None)
def training_texts(code: str) -> frozenset[str]:
    return frozenset(normalise(bible.verses(code)[k]) for k in bible.keys_in_split("train", code))


def shown_in_training(examples: list) -> list:
    """The examples showing a verse whose normalised text equals that of a training verse of the same translation."""
    def seen(verse: str, code: str) -> bool:
        return normalise(shown_verses(code)[key(verse)]) in training_texts(code)

    found = []
    for ex in examples:
        if isinstance(ex, SpanExample):
            question_code, context_code = codes_of(ex)
            shows = [(v, context_code) for v in ex.verses] + [(ex.id.split("/")[0], question_code)]
        else:
            shows = [(v, bible.CANONICAL[ex.language]) for v in ex.verses]
        if any(seen(v, code) for v, code in shows):
            found.append(ex)
    return found


def test_no_evaluation_passage_shows_a_training_verse(built):
    for (name, split, lang), examples in built.items():
        if split != "train":
            assert not shown_in_training(examples), (name, split, lang)


def test_the_check_finds_training_verses_the_builders_drop(built, monkeypatch):
    monkeypatch.setattr(bible_span_tagging, "shows_training_text", lambda codes: frozenset())
    clear_caches()
    try:
        unfiltered = {(name, lang): tasks.get_task(name).load("test", lang)
                      for name, lang in (("verse_qa", "en"), ("verse_boundaries", "en"))}
    finally:
        clear_caches()
    for (name, lang), examples in unfiltered.items():
        assert len(examples) > len(built[name, "test", lang])
        assert shown_in_training(examples), name


def test_builds_are_deterministic(built):
    clear_caches()
    for name, split, lang in (("verse_qa", "train", "en"), ("verse_qa_xlt", "test", "ko"),
                              ("verse_boundaries", "train", "en"), ("verse_boundaries", "validation", "vi")):
        assert tasks.get_task(name).load(split, lang) == built[name, split, lang]


def digest(examples: list) -> str:
    return hashlib.sha256(repr(examples).encode()).hexdigest()


def test_builds_are_the_same_in_another_process(built):
    code = ("import hashlib; from trainables import bible_span_tagging as b; "
            "print(hashlib.sha256(repr(b.verse_qa_xlt('test', 'ko') + b.verse_boundaries('validation', 'vi'))"
            ".encode()).hexdigest())")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONHASHSEED": "7"})
    assert result.returncode == 0, result.stderr
    expected = digest(built["verse_qa_xlt", "test", "ko"] + built["verse_boundaries", "validation", "vi"])
    assert result.stdout.strip() == expected


def test_normalise():
    assert normalise("(7:26) L'Éternel  dit:\n« Va! »") == "léternel dit va"
    assert normalise("Yahweh spoke to Moses, saying,") == normalise("yahweh spoke to Moses saying")
    assert normalise("(20-43) Vậy, Đa-vít") == "vậy đavít"
