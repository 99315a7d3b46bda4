"""The format registry: one module per task format, each owning its featurising, head, loss, decoding and metric.

    from trainables.formats import format_of
    fmt = format_of(task)                                   # a Format (trainables/formats/base.py)
    features = fmt.featurize(tokenizer, examples, max_length, task)
    scores = fmt.evaluate(model, tokenizer, task, {"fr": [...], "de": [...]}, device="cpu")

A new format is one module with a Format subclass, listed in FORMATS below; tasks name their format by its string.
"""
from __future__ import annotations

from trainables.errors import UserError
from trainables.formats.base import Features, Format, TaskModel
from trainables.formats.choice import ChoiceFormat
from trainables.formats.classification import PairFormat, SingleFormat
from trainables.formats.retrieval import RetrievalFormat
from trainables.formats.span import SpanFormat
from trainables.formats.tagging import TaggingFormat

FORMATS: dict[str, Format] = {fmt.name: fmt for fmt in (
    PairFormat(), SingleFormat(), ChoiceFormat(), RetrievalFormat(), SpanFormat(), TaggingFormat())}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise UserError(f"unknown task format {name!r}; known formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def format_of(task) -> Format:
    return get_format(task.format)


__all__ = ["FORMATS", "Features", "Format", "TaskModel", "format_of", "get_format"]
