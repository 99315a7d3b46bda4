"""The example types every task is mapped to, offline and hub alike, and the Task record of the registry.

`verses` names the Bible verses an example is built from ("book.chapter.verse", e.g. "43.3.16"), so a test can
prove that no evaluation verse reaches any training set. Hub examples leave it empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Task formats; what each one does lives in trainables/formats/<format>.py.
PAIR = "pair"            # two texts -> one of num_labels classes
SINGLE = "single"        # one text -> one of num_labels classes
CHOICE = "choice"        # context + k options -> index of the right option
RETRIEVAL = "retrieval"  # aligned (query, target) pairs; every target of a split is a candidate
SPAN = "span"            # question + context -> the answer's character span in the context (extractive QA)
TAGGING = "tagging"      # words -> one label per word (NER in IOB2, part of speech)
FORMATS = (PAIR, SINGLE, CHOICE, RETRIEVAL, SPAN, TAGGING)


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


@dataclass(frozen=True)
class SpanExample:
    """Extractive QA. `answers` holds the gold (text, character offset in `context`) pairs: one for training,
    one or more for evaluation (any of them counts as right). `language` is the language the example is scored
    under (its results row); in cross-lingual QA (MLQA's G-XLT) the question or the context is in another
    language, named by `question_language` / `context_language`. Answers are normalised in the context's language."""
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]
    language: str
    verses: tuple[str, ...] = ()
    question_language: str = ""    # "" = the same as `language`
    id: str = ""
    context_language: str = ""     # "" = the same as `language`


@dataclass(frozen=True)
class TaggingExample:
    """Word-level tagging: one label index per word, named by the task's `label_names` (IOB2 tags for NER)."""
    words: tuple[str, ...]
    labels: tuple[int, ...]
    language: str
    verses: tuple[str, ...] = ()


EXAMPLE_TYPES = {PAIR: PairExample, SINGLE: TextExample, CHOICE: ChoiceExample, RETRIEVAL: RetrievalExample,
                 SPAN: SpanExample, TAGGING: TaggingExample}


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
    metric: str                        # what `score` is, in points (0-100): accuracy, top1_accuracy, f1 (span: token
                                       # F1 with SQuAD v1.1's normalisation; mlqa_f1: MLQA's language-aware one;
                                       # exact match is reported beside it), entity_f1, token_accuracy
    num_labels: int                    # classes; options for CHOICE; tags for TAGGING; 0 for RETRIEVAL and SPAN
    load: Callable[[str, str], list]   # load(split, language) -> list of examples of this format
    splits: tuple[str, ...] = ("train", "validation", "test")
    train_language: str = "en"
    source: str = "offline"            # "offline" (built from bible.db), "hub" (datasets.load_dataset), or
                                       # "unavailable" (declared, but no public copy: loading it is a UserError)
    max_length: int = 128              # tokens per encoded text (pair: per pair)
    description: str = ""
    label_names: tuple[str, ...] = ()  # TAGGING: the name of every label index (IOB2 for entity_f1: "O", "B-PER", ...)
    max_answer_tokens: int = 30        # SPAN: the longest answer (in tokens) decoding considers
    train_size: int = 0                # hub tasks: examples in the train split as the hub documents it, which
                                       # --dry-run checks the size ladder against without loading (0: not declared)


PROPORTIONAL = "proportional"    # p_i proportional to n_i, the examples of component i's tier
TEMPERATURE = "temperature"      # p_i proportional to n_i ** (1 / temperature) (jiant's TemperatureMultiTaskSampler)
SAMPLINGS = (PROPORTIONAL, TEMPERATURE)


@dataclass(frozen=True)
class Mixture:
    """A multi-task intermediate "task": one shared encoder, one head per component (trainables/mixtures.py). Its
    name stands wherever an intermediate task name does; a cell of size N takes from each component the share the
    sampling rule gives it."""
    name: str
    components: tuple[str, ...]        # intermediate task names of the registry
    sampling: str = PROPORTIONAL       # one of SAMPLINGS
    temperature: float = 1.0           # TEMPERATURE only; 1 is the same as PROPORTIONAL
    description: str = ""
