"""The example types every task is mapped to, offline and hub alike, and the Task record of the registry.

`verses` names the Bible verses an example is built from ("book.chapter.verse", e.g. "43.3.16"), so a test can
prove that no evaluation verse reaches any training set. Hub examples leave it empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Task formats. Span QA ("span") and token tagging ("tagging") are reserved for later tasks.
PAIR = "pair"            # two texts -> one of num_labels classes
SINGLE = "single"        # one text -> one of num_labels classes
CHOICE = "choice"        # context + k options -> index of the right option
RETRIEVAL = "retrieval"  # aligned (query, target) pairs; every target of a split is a candidate
FORMATS = (PAIR, SINGLE, CHOICE, RETRIEVAL)


@dataclass(frozen=True)
class PairExample:
    text_a: str
    text_b: str
    label: int
    language: str
    verses: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextExample:
    text: str
    label: int
    language: str
    verses: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChoiceExample:
    context: str
    choices: tuple[str, ...]
    label: int
    language: str
    verses: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetrievalExample:
    """One aligned pair: `query` is in the source language (English), `target` in `language`."""
    query: str
    target: str
    language: str
    verses: tuple[str, ...] = ()


EXAMPLE_TYPES = {PAIR: PairExample, SINGLE: TextExample, CHOICE: ChoiceExample, RETRIEVAL: RetrievalExample}


def verse_id(book: int, chapter: int, verse: int) -> str:
    return f"{book}.{chapter}.{verse}"


INTERMEDIATE = "intermediate"
TARGET = "target"


@dataclass(frozen=True)
class Task:
    """One registry entry: a small declarative record, not a class hierarchy."""
    name: str
    role: str                          # INTERMEDIATE or TARGET
    format: str                        # one of FORMATS
    languages: tuple[str, ...]         # languages with data; a target is evaluated zero-shot in each
    metric: str                        # "accuracy" or "top1_accuracy" (scores are reported in points, 0-100)
    num_labels: int                    # classes; number of options for CHOICE; 0 for RETRIEVAL
    load: Callable[[str, str], list]   # load(split, language) -> list of examples of this format
    splits: tuple[str, ...] = ("train", "validation", "test")
    train_language: str = "en"
    source: str = "offline"            # "offline" (built from bible.db) or "hub" (datasets.load_dataset)
    max_length: int = 128              # tokens per encoded text (pair: per pair)
    description: str = ""
