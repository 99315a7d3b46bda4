"""Sentence and sentence-pair classification: the mean-pooled encoder output -> dropout -> Linear(num_labels).

PAIR examples are text pairs truncated longest-first to max_length tokens in all; SINGLE examples one text.
The metric is accuracy.
"""
from __future__ import annotations

from trainables.formats.base import Features, Format
from trainables.types import PAIR, SINGLE


def _rows(encoded, labels: list[int]) -> list[dict]:
    keys = list(encoded.keys())
    return [{**{key: encoded[key][i] for key in keys}, "labels": label} for i, label in enumerate(labels)]


class PairFormat(Format):
    name = PAIR

    def featurize(self, tokenizer, examples, max_length, task) -> Features:
        encoded = tokenizer([ex.text_a for ex in examples], [ex.text_b for ex in examples],
                            truncation="longest_first", max_length=max_length)
        return Features(_rows(encoded, [ex.label for ex in examples]), list(range(len(examples))),
                        tokenizer.pad_token_id)


class SingleFormat(Format):
    name = SINGLE

    def featurize(self, tokenizer, examples, max_length, task) -> Features:
        encoded = tokenizer([ex.text for ex in examples], truncation="longest_first", max_length=max_length)
        return Features(_rows(encoded, [ex.label for ex in examples]), list(range(len(examples))),
                        tokenizer.pad_token_id)
