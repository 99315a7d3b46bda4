"""The offline tasks, built from the aligned verses of bible.db. The registry (trainables/tasks.py) lists them.

Every loader has the signature load(split, language) -> list of examples. A training example only uses verses of
train chapters, an evaluation example only verses of chapters of its own split (bible.chapter_splits): both ends of
a cross reference, every option of a multiple-choice example, every negative. Random choices come from a
random.Random seeded with a fixed string per (task, split), so every process builds the same examples.

Verse keys are (book, chapter, verse) tuples; examples carry them as "book.chapter.verse" strings.

Evaluation sets also leave out verses that a training set shows word for word (parallel passages such as Isaiah
36-37 and 2 Kings 18-19, formulas such as "Yahweh spoke to Moses, saying,"): see shows_training_text.
"""
from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from functools import lru_cache
from itertools import combinations

from trainables.bible import (CANONICAL, GENRES, LANGUAGES, TRANSLATIONS, canonical_verses, chapter_splits,
                              cross_references, genre_of, jaccard, keys_in_split, verses)
from trainables.types import ChoiceExample, PairExample, RetrievalExample, TextExample, verse_id

ENGLISH = ("k", "3", "4")  # KJV, BBE, WEB
# multi_paraphrase: translation pairs per language key; "cross" pairs two different non-English languages.
MULTI_PAIRS = {
    "fr": (("l", "o"), ("l", "5"), ("o", "5")),
    "de": (("e", "s"),),
    "tl": (("f", "g"),),
    "cross": (("l", "e"), ("l", "f"), ("e", "f")),
}
# paraphrase_x: the two translations paired in each language (English trains, the others evaluate zero-shot).
PARAPHRASE_X_PAIRS = {"en": ("4", "3"), "fr": ("l", "5"), "de": ("e", "s"), "tl": ("f", "g")}

# Verses drawn per split (per genre for `genre`), so evaluating a target stays cheap; the same verses in every
# language, so scores are comparable across languages.
GENRE_PER_GENRE = {"train": 600, "validation": 100, "test": 300}
PARAPHRASE_X_VERSES = {"train": 2000, "validation": 250, "test": 1000}  # two examples per verse
RETRIEVAL_PAIRS = {"validation": 250, "test": 1000}

Key = tuple[int, int, int]


def _rng(task: str, split: str) -> random.Random:
    return random.Random(f"{task}/{split}")  # a str seed is hashed with SHA-512: the same in every process


def _ids(*keys: Key) -> tuple[str, ...]:
    return tuple(map(_verse_id, keys))


@lru_cache(maxsize=None)
def _verse_id(key: Key) -> str:
    return verse_id(*key)


def _by_chapter(keys: list[Key]) -> dict[tuple[int, int], list[Key]]:
    chapters = defaultdict(list)
    for key in keys:
        chapters[key[:2]].append(key)
    return chapters


def _hard_negative(key: Key, chapter: list[Key], split_keys: list[Key], rng: random.Random, kind: str) -> Key:
    """Another verse of the same split: a neighbour (the verse before or after), another verse of the same
    chapter, or any verse ("random"). Falls back to a random verse when the chapter is too short."""
    i = chapter.index(key)
    if kind == "neighbour":
        options = chapter[max(i - 1, 0):i] + chapter[i + 1:i + 2]
    elif kind == "chapter":
        options = chapter[:max(i - 1, 0)] + chapter[i + 2:]
    else:
        options = []
    if options:
        return rng.choice(options)
    for _ in range(100):
        other = rng.choice(split_keys)
        if other[:2] != key[:2]:
            return other
    return key  # the caller skips a negative whose text equals its verse's


def _in_all(keys: list[Key], codes) -> list[Key]:
    tables = [verses(code) for code in codes]
    return [key for key in keys if all(key in table for table in tables)]


# --- evaluation verses whose text a training chapter also has --------------------------------------------------------

# Alternative versification some translations print inside the text, e.g. "(7:26)" in Segond, "(20-43)" in 1934.
VERSE_NUMBER = re.compile(r"\(\d+\s*[:.-]+\s*\d+\)")
_NOT_WORD = re.compile(r"[^\w\s]+")


def normalise(text: str) -> str:
    """The form in which two texts count as the same: verse-number markers removed, lower case, every character
    that is neither a word character nor whitespace removed (punctuation, symbols, combining marks), single spaces."""
    return " ".join(_NOT_WORD.sub("", VERSE_NUMBER.sub(" ", text).lower()).split())


@lru_cache(maxsize=None)
def _shows_training_text(code: str) -> frozenset[Key]:
    splits = chapter_splits()
    normalised = {key: normalise(text) for key, text in verses(code).items()}
    training = {text for key, text in normalised.items() if splits[key[:2]] == "train"}
    return frozenset(key for key, text in normalised.items() if splits[key[:2]] != "train" and text in training)


def shows_training_text(codes) -> frozenset[Key]:
    """Verses of evaluation chapters whose text in one of the translations `codes`, normalised, equals the text of
    a verse of a training chapter in the same translation. Evaluation builders drop an example that shows such a
    verse; a target whose languages share verses drops the verse in every language, so they keep sharing them."""
    return frozenset().union(*(_shows_training_text(code) for code in codes))


# --- en_paraphrase: two English translations of one verse vs. hard negatives ---------------------------------------

@lru_cache(maxsize=None)
def _en_paraphrase(split: str) -> tuple[PairExample, ...]:
    """Per verse: the three translation pairs (KJV/BBE, KJV/WEB, BBE/WEB) are positives unless identical; one
    negative per translation pair, pairing the verse with a neighbour, a same-chapter verse and a random verse."""
    rng = _rng("en_paraphrase", split)
    text = {code: verses(code) for code in ENGLISH}
    keys = _in_all(keys_in_split(split), ENGLISH)
    chapters = _by_chapter(keys)
    examples = []
    for key in keys:
        pairs = list(combinations(ENGLISH, 2))
        rng.shuffle(pairs)
        for (a, b), kind in zip(pairs, ("neighbour", "chapter", "random")):
            a, b = (a, b) if rng.random() < 0.5 else (b, a)
            if text[a][key] != text[b][key]:
                examples.append(PairExample(text[a][key], text[b][key], 1, "en", _ids(key)))
            other = _hard_negative(key, chapters[key[:2]], keys, rng, kind)
            if text[b][other] != text[b][key]:  # repeated verses (refrains) would be mislabelled
                examples.append(PairExample(text[a][key], text[b][other], 0, "en", _ids(key, other)))
    return tuple(examples)


def en_paraphrase(split: str, language: str) -> list[PairExample]:
    return list(_en_paraphrase(split))


# --- en_crossref: human-curated cross references vs. unreferenced pairs --------------------------------------------

@lru_cache(maxsize=None)
def _en_crossref(split: str) -> tuple[PairExample, ...]:
    """Positives: cross references whose two ends both lie in `split` (WEB text). One negative per positive: the
    same from-verse with a verse of the to-verse's book that is referenced in neither direction, so the book mix of
    negatives matches that of positives."""
    rng = _rng("en_crossref", split)
    text = canonical_verses("en")
    splits = chapter_splits()
    referenced = {frozenset(ref) for ref in cross_references()}
    in_split = keys_in_split(split)
    by_book = defaultdict(list)
    for key in in_split:
        by_book[key[0]].append(key)
    examples = []
    for a, b in cross_references():
        if a == b or a not in text or b not in text or not splits[a[:2]] == splits[b[:2]] == split:
            continue
        examples.append(PairExample(text[a], text[b], 1, "en", _ids(a, b)))
        for attempt in range(20):  # a few tries in the book, then anywhere in the split
            c = rng.choice(by_book[b[0]] if attempt < 10 else in_split)
            if c not in (a, b) and frozenset((a, c)) not in referenced:
                examples.append(PairExample(text[a], text[c], 0, "en", _ids(a, c)))
                break
    return tuple(examples)


def en_crossref(split: str, language: str) -> list[PairExample]:
    return list(_en_crossref(split))


# --- en_next_verse: which of four verses comes next ----------------------------------------------------------------

@lru_cache(maxsize=None)
def _en_next_verse(split: str) -> tuple[ChoiceExample, ...]:
    """Context: a WEB verse; options: the next verse and 3 other verses of the same chapter (topped up from the
    same book when the chapter is short); the answer's position is uniform."""
    rng = _rng("en_next_verse", split)
    text = canonical_verses("en")
    keys = keys_in_split(split)
    chapters = _by_chapter(keys)
    by_book = defaultdict(list)
    for key in keys:
        by_book[key[0]].append(key)
    examples = []
    for chapter in chapters.values():
        for context, answer in zip(chapter, chapter[1:]):
            if answer[2] != context[2] + 1:
                continue
            def usable(k):
                return k not in (context, answer) and text[k] != text[answer]
            pool = [k for k in chapter if usable(k)]
            if len(pool) < 3:
                pool += [k for k in by_book[context[0]] if k[:2] != context[:2] and usable(k)]
            if len(pool) < 3:
                continue
            options = rng.sample(pool, 3)
            label = rng.randrange(4)
            options.insert(label, answer)
            examples.append(ChoiceExample(text[context], tuple(text[k] for k in options), label, "en",
                                          _ids(context, *options)))
    return tuple(examples)


def en_next_verse(split: str, language: str) -> list[ChoiceExample]:
    return list(_en_next_verse(split))


# --- multi_paraphrase: human translations within and across fr/de/tl ----------------------------------------------

@lru_cache(maxsize=None)
def _multi_paraphrase(split: str) -> tuple[PairExample, ...]:
    """Per verse one translation pair: a language key of MULTI_PAIRS uniformly, then one of its pairs. A positive
    (the verse in both translations, unless identical) and a negative (the verse vs. a neighbour or same-chapter
    verse in the second translation). `language` is "fr", "de", "tl", or e.g. "fr-de" for a cross-language pair."""
    rng = _rng("multi_paraphrase", split)
    codes = sorted({code for pairs in MULTI_PAIRS.values() for pair in pairs for code in pair})
    text = {code: verses(code) for code in codes}
    keys = _in_all(keys_in_split(split), codes)
    chapters = _by_chapter(keys)
    examples = []
    for key in keys:
        group = rng.choice(sorted(MULTI_PAIRS))
        a, b = rng.choice(MULTI_PAIRS[group])
        language = group if group != "cross" else f"{TRANSLATIONS[a][0]}-{TRANSLATIONS[b][0]}"
        if text[a][key] == text[b][key]:
            continue
        examples.append(PairExample(text[a][key], text[b][key], 1, language, _ids(key)))
        other = _hard_negative(key, chapters[key[:2]], keys, rng, rng.choice(("neighbour", "chapter")))
        if text[b][other] != text[b][key]:
            examples.append(PairExample(text[a][key], text[b][other], 0, language, _ids(key, other)))
    return tuple(examples)


def multi_paraphrase(split: str, language: str) -> list[PairExample]:
    """language "all": the mixed pool (fr, de, tl and cross-language pairs); "fr"/"de"/"tl": that language's
    own pairs only."""
    pool = _multi_paraphrase(split)
    return list(pool) if language == "all" else [ex for ex in pool if ex.language == language]


# --- the verses targets are built from ---------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _aligned_keys(split: str) -> tuple[Key, ...]:
    """Verses of `split` present in all 12 canonical translations."""
    return tuple(_in_all(keys_in_split(split), [CANONICAL[lang] for lang in LANGUAGES]))


# --- genre: the genre of the verse's book --------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _genre_keys(split: str) -> tuple[Key, ...]:
    rng = _rng("genre", split)
    by_genre = defaultdict(list)
    for key in _aligned_keys(split):
        by_genre[genre_of(key[0])].append(key)
    cap = GENRE_PER_GENRE[split]
    chosen = [key for genre in GENRES for key in rng.sample(by_genre[genre], min(cap, len(by_genre[genre])))]
    if split != "train":
        seen_in_training = shows_training_text(CANONICAL.values())
        chosen = [key for key in chosen if key not in seen_in_training]
    return tuple(sorted(chosen))


def genre(split: str, language: str) -> list[TextExample]:
    """Up to GENRE_PER_GENRE[split] verses per genre (the rarest genre, apocalyptic, has fewer), the same verses
    in every language; evaluation splits then drop the verses a training chapter has in any of the 12 canonical
    translations (shows_training_text)."""
    text = canonical_verses(language)
    return [TextExample(text[key], GENRES.index(genre_of(key[0])), language, _ids(key)) for key in _genre_keys(split)]


# --- paraphrase_x: two translations of one verse vs. an overlap-matched negative -----------------------------------

def _paraphrase_x_seen_in_training(split: str) -> frozenset[Key]:
    codes = {code for pair in PARAPHRASE_X_PAIRS.values() for code in pair}
    return frozenset() if split == "train" else shows_training_text(codes)


@lru_cache(maxsize=None)
def _paraphrase_x_keys(split: str) -> tuple[Key, ...]:
    """Verses whose two translations exist and differ in every language of PARAPHRASE_X_PAIRS; evaluation splits
    then drop the verses a training chapter has in any of those 8 translations (shows_training_text)."""
    keys = _in_all(keys_in_split(split), {code for pair in PARAPHRASE_X_PAIRS.values() for code in pair})
    keys = [key for key in keys
            if all(verses(a)[key] != verses(b)[key] for a, b in PARAPHRASE_X_PAIRS.values())]
    rng = _rng("paraphrase_x", split)
    chosen = sorted(rng.sample(keys, min(PARAPHRASE_X_VERSES[split], len(keys))))
    seen_in_training = _paraphrase_x_seen_in_training(split)
    return tuple(key for key in chosen if key not in seen_in_training)


@lru_cache(maxsize=None)
def _paraphrase_x(split: str, language: str) -> tuple[PairExample, ...]:
    """Per verse: (first translation, second translation) = 1, and (first translation, second translation of another
    verse of the chapter) = 0, where that verse is the one whose word overlap with the first text is closest to the
    positive's, so lexical overlap alone cannot tell the classes apart; in evaluation splits never a verse that
    shows_training_text names."""
    a, b = PARAPHRASE_X_PAIRS[language]
    first, second = verses(a), verses(b)
    chapters = _by_chapter(_in_all(keys_in_split(split), (a, b)))
    seen_in_training = _paraphrase_x_seen_in_training(split)
    examples = []
    for key in _paraphrase_x_keys(split):
        candidates = [k for k in chapters[key[:2]]
                      if k != key and second[k] != second[key] and k not in seen_in_training]
        if not candidates:
            continue
        target = jaccard(first[key], second[key])
        other = min(candidates, key=lambda k: (abs(jaccard(first[key], second[k]) - target), k))
        examples.append(PairExample(first[key], second[key], 1, language, _ids(key)))
        examples.append(PairExample(first[key], second[other], 0, language, _ids(key, other)))
    return tuple(examples)


def paraphrase_x(split: str, language: str) -> list[PairExample]:
    return list(_paraphrase_x(split, language))


# --- retrieval: find the translation of an English verse among all verses of the split ----------------------------

@lru_cache(maxsize=None)
def _retrieval_keys(split: str) -> tuple[Key, ...]:
    """Aligned verses whose text is unique within each of the 12 translations (repeated verses, e.g. refrains,
    would make the right answer ambiguous), less those a training chapter has once normalised (shows_training_text)."""
    repeated = set()
    for lang in LANGUAGES:
        counts = Counter(canonical_verses(lang).values())
        repeated |= {key for key, text in canonical_verses(lang).items() if counts[text] > 1}
    keys = [key for key in _aligned_keys(split) if key not in repeated]
    rng = _rng("retrieval", split)
    chosen = sorted(rng.sample(keys, min(RETRIEVAL_PAIRS[split], len(keys))))
    seen_in_training = shows_training_text(CANONICAL.values())
    return tuple(key for key in chosen if key not in seen_in_training)


def retrieval(split: str, language: str) -> list[RetrievalExample]:
    """English (WEB) queries, targets in `language`; the same verses for every language."""
    source, target = canonical_verses("en"), canonical_verses(language)
    return [RetrievalExample(source[key], target[key], language, _ids(key)) for key in _retrieval_keys(split)]
