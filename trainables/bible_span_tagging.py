"""Two offline targets whose labels come from the structure of the aligned verses, never from a model.

verse_qa, verse_qa_xlt (format "span", extractive QA): the question is one verse in one translation, the context a
    passage of 4-6 consecutive verses of its chapter in another translation, the answer that verse's text in the
    passage with its character offset. verse_qa asks within a language (English: question KJV or BBE, context WEB;
    fr/de/tl: question in the second translation of PARAPHRASE_X_PAIRS, context in the canonical one); verse_qa_xlt
    asks in English (KJV) about a passage in language X's canonical translation, as MLQA's G-XLT does.
verse_boundaries (format "tagging", IOB2 with one entity type): a passage of 2-5 consecutive verses of one chapter
    in a canonical translation, split into words at whitespace. Every word belongs to a verse, so the first word of
    each verse is B-VERSE and every other word I-VERSE; "O" is never used and stays in the label names only to make
    them a complete IOB2 set. An entity is a whole verse: entity F1 scores exact verse segmentation.

Passages cut each run of consecutive verse numbers of a chapter into tiles, one after another, each tile's length
drawn at random, so no verse is in two passages of a split. Alternative verse numbers that some translations print
inside the text ("(7:26)") are removed from everything shown.

Training examples come from train chapters, in English. An evaluation split draws its passages once and shows them
in every language of the task, so scores compare across languages (verse_qa and verse_qa_xlt share theirs as well);
a passage is then dropped when a verse it shows, in a translation it shows it in, has once normalised the text of a
verse of a training chapter (bible_tasks.shows_training_text), in any language, so the languages keep sharing them.
"""
from __future__ import annotations

import random
from functools import lru_cache

from trainables.bible import CANONICAL, LANGUAGES, keys_in_split, verses
from trainables.bible_tasks import PARAPHRASE_X_PAIRS, VERSE_NUMBER, Key, _by_chapter, _ids, _rng, shows_training_text
from trainables.types import SpanExample, TaggingExample

QA_PASSAGE_VERSES = (4, 5, 6)
QA_ENGLISH_CONTEXT = "4"            # WEB
QA_ENGLISH_QUESTIONS = ("k", "3")   # KJV, BBE: one drawn per passage
XLT_QUESTION = "k"                  # verse_qa_xlt asks in KJV English
# Passages drawn per evaluation split, before those showing a training text are dropped.
QA_PASSAGES = {"validation": 300, "test": 600}

BOUNDARY_PASSAGE_VERSES = (2, 3, 4, 5)
BOUNDARY_PASSAGES = {"validation": 300, "test": 600}
VERSE_LABELS = ("O", "B-VERSE", "I-VERSE")
B_VERSE, I_VERSE = VERSE_LABELS.index("B-VERSE"), VERSE_LABELS.index("I-VERSE")

Passage = tuple[Key, ...]
# One way to show a QA passage: (language of the context, question translation, context translation).
QaView = tuple[str, str, str]


@lru_cache(maxsize=None)
def shown_verses(code: str) -> dict[Key, str]:
    """The verses of one translation as these tasks show them: without alternative verse numbers, and without the
    verses left with no letter or digit."""
    shown = {key: " ".join(VERSE_NUMBER.sub(" ", text).split()) for key, text in verses(code).items()}
    return {key: text for key, text in shown.items() if any(ch.isalnum() for ch in text)}


def _shown_in_all(keys: list[Key], codes) -> list[Key]:
    tables = [shown_verses(code) for code in codes]
    return [key for key in keys if all(key in table for table in tables)]


def passages(keys: list[Key], lengths: tuple[int, ...], rng: random.Random) -> list[Passage]:
    """Cut each run of consecutive verse numbers of a chapter into passages, one after another, each passage's
    length drawn from `lengths`; the last passage of a run takes what remains, and is left out if that is shorter
    than the shortest length."""
    tiles = []
    for chapter in _by_chapter(keys).values():
        runs = [[chapter[0]]]
        for previous, key in zip(chapter, chapter[1:]):
            if key[2] == previous[2] + 1:
                runs[-1].append(key)
            else:
                runs.append([key])
        for run in runs:
            start = 0
            while len(run) - start >= min(lengths):
                length = min(rng.choice(lengths), len(run) - start)
                tiles.append(tuple(run[start:start + length]))
                start += length
    return tiles


def _evaluation_sample(candidates: list, cap: int, rng: random.Random) -> list:
    return sorted(rng.sample(candidates, min(cap, len(candidates))))


# --- verse_qa and verse_qa_xlt: find the verse the question translates ---------------------------------------------

def _qa_views(english_question: str, split: str) -> list[QaView]:
    views = [("en", english_question, QA_ENGLISH_CONTEXT)]
    if split != "train":
        views += [(lang, question, context) for lang, (context, question) in PARAPHRASE_X_PAIRS.items() if lang != "en"]
        views += [(lang, XLT_QUESTION, CANONICAL[lang]) for lang in LANGUAGES if lang != "en"]
    return views


def _qa_answerable(passage: Passage, answer: int, question_code: str, context_code: str) -> bool:
    """The question differs from the answer, and the answer's text occurs once in the context."""
    texts = [shown_verses(context_code)[key] for key in passage]
    return (shown_verses(question_code)[passage[answer]] != texts[answer]
            and " ".join(texts).count(texts[answer]) == 1)


def _qa_shows_training_text(passage: Passage, answer: int, views: list[QaView]) -> bool:
    in_contexts = shows_training_text({context for _, _, context in views})
    in_questions = shows_training_text({question for _, question, _ in views})
    return any(key in in_contexts for key in passage) or passage[answer] in in_questions


@lru_cache(maxsize=None)
def _qa_passages(split: str) -> tuple[tuple[Passage, int, str], ...]:
    """(passage, answer index, English question translation): the answer index is uniform over the passage, the
    English question translation uniform over KJV and BBE. Every passage is answerable in every view an example of
    the split shows it in (for evaluation: every language of verse_qa and verse_qa_xlt)."""
    rng = _rng("verse_qa", split)
    codes = {code for question in QA_ENGLISH_QUESTIONS for view in _qa_views(question, split) for code in view[1:]}
    chosen = []
    for passage in passages(_shown_in_all(keys_in_split(split), codes), QA_PASSAGE_VERSES, rng):
        answer, english_question = rng.randrange(len(passage)), rng.choice(QA_ENGLISH_QUESTIONS)
        if all(_qa_answerable(passage, answer, q, c) for _, q, c in _qa_views(english_question, split)):
            chosen.append((passage, answer, english_question))
    if split != "train":
        chosen = [(passage, answer, question)
                  for passage, answer, question in _evaluation_sample(chosen, QA_PASSAGES[split], rng)
                  if not _qa_shows_training_text(passage, answer, _qa_views(question, split))]
    return tuple(chosen)


def _qa_example(passage: Passage, answer: int, question_code: str, context_code: str, language: str,
                question_language: str) -> SpanExample:
    texts = [shown_verses(context_code)[key] for key in passage]
    context = " ".join(texts)
    start = sum(len(text) + 1 for text in texts[:answer])
    assert context[start:start + len(texts[answer])] == texts[answer]
    answer_id = _ids(passage[answer])[0]
    return SpanExample(shown_verses(question_code)[passage[answer]], context, ((texts[answer], start),), language,
                       _ids(*passage), question_language, id=f"{answer_id}/{question_code}-{context_code}")


def verse_qa(split: str, language: str) -> list[SpanExample]:
    """Question and context in one language: en asks in KJV or BBE about a WEB passage, fr/de/tl in the second
    translation of PARAPHRASE_X_PAIRS about a passage in the canonical one."""
    examples = []
    for passage, answer, english_question in _qa_passages(split):
        if language == "en":
            question_code, context_code = english_question, QA_ENGLISH_CONTEXT
        else:
            context_code, question_code = PARAPHRASE_X_PAIRS[language]
        examples.append(_qa_example(passage, answer, question_code, context_code, language, ""))
    return examples


def verse_qa_xlt(split: str, language: str) -> list[SpanExample]:
    """An English (KJV) question about a passage in `language`'s canonical translation; the English data (training
    and development) is verse_qa's."""
    if language == "en":
        return verse_qa(split, language)
    return [_qa_example(passage, answer, XLT_QUESTION, CANONICAL[language], language, "en")
            for passage, answer, _ in _qa_passages(split)]


# --- verse_boundaries: where does each verse of a passage start ----------------------------------------------------

@lru_cache(maxsize=None)
def _boundary_passages(split: str) -> tuple[Passage, ...]:
    rng = _rng("verse_boundaries", split)
    codes = [QA_ENGLISH_CONTEXT] if split == "train" else [CANONICAL[lang] for lang in LANGUAGES]
    tiles = passages(_shown_in_all(keys_in_split(split), codes), BOUNDARY_PASSAGE_VERSES, rng)
    if split == "train":
        return tuple(tiles)
    seen_in_training = shows_training_text(codes)
    return tuple(passage for passage in _evaluation_sample(tiles, BOUNDARY_PASSAGES[split], rng)
                 if seen_in_training.isdisjoint(passage))


def verse_boundaries(split: str, language: str) -> list[TaggingExample]:
    """The passage's words in `language`'s canonical translation (split at whitespace), B-VERSE on the first word of
    each verse and I-VERSE on the others."""
    shown = shown_verses(CANONICAL[language])
    examples = []
    for passage in _boundary_passages(split):
        words, labels = [], []
        for key in passage:
            verse_words = shown[key].split()
            words += verse_words
            labels += [B_VERSE] + [I_VERSE] * (len(verse_words) - 1)
        examples.append(TaggingExample(tuple(words), tuple(labels), language, _ids(*passage)))
    return examples
