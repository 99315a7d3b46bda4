"""Extractive QA, SQuAD v1.1 style (every question has an answer): start/end logits -> answer texts, and the way
back, a gold answer's characters -> the (start, end) token labels of a window.

A long context is cut into overlapping windows ("features"); each one is a mapping with
    example_index               the example (an index into `contexts`) the window was cut from
    start_logits, end_logits    1-D float arrays, one logit per token of the window
    offsets                     per token, (char_start, char_end) into the example's context, or None for a token
                                outside the context (question, special tokens, padding)

Decoding follows Hugging Face's `postprocess_qa_predictions` (utils_qa.py of its question-answering example): a
span scores start_logit + end_logit, it is valid when both ends are context tokens, end >= start and it has at most
`max_answer_length` tokens, and an example's answer is its best valid span over all of its windows. Unlike it, every
valid span is scored (one vectorised pass per window) instead of only the n_best starts x n_best ends, so the answer
is the true best valid span; `n_best` only sizes the candidate lists. No null answer and no "empty" placeholder: an
example without a valid span gets "".
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

Offsets = Sequence[tuple[int, int] | None]


class SpanCandidate(NamedTuple):
    score: float      # start logit + end logit
    text: str         # context[char_start:char_end]
    char_start: int
    char_end: int     # exclusive


def window_spans(start_logits, end_logits, offsets: Offsets, max_answer_length: int = 30,
                 n_best: int = 20) -> list[tuple[float, int, int]]:
    """The `n_best` best valid spans of one window as (score, start_token, end_token), best first."""
    start = np.asarray(start_logits, dtype=np.float64)
    end = np.asarray(end_logits, dtype=np.float64)
    if not start.ndim == end.ndim == 1 or not len(start) == len(end) == len(offsets):
        raise ValueError(f"a window needs 1-D start/end logits and offsets of one length; got shapes "
                         f"{start.shape}, {end.shape} and {len(offsets)} offsets")
    length = len(start)
    widths = min(max_answer_length, length)
    if widths < 1 or n_best < 1:
        return []
    in_context = np.array([offset is not None for offset in offsets], dtype=bool)
    # Row k holds the spans of k + 1 tokens, indexed by their start token: a band of the start x end matrix.
    scores = np.zeros((widths, length))
    valid = np.zeros((widths, length), dtype=bool)
    for k in range(widths):
        scores[k, :length - k] = start[:length - k] + end[k:]
        valid[k, :length - k] = in_context[:length - k] & in_context[k:]
    candidates = np.flatnonzero(valid)
    flat_scores = scores.ravel()[candidates]
    best = candidates[np.argsort(-flat_scores, kind="stable")[:n_best]]
    extra_tokens, start_tokens = np.divmod(best, length)
    return [(float(scores.flat[i]), int(s), int(s + k)) for i, s, k in zip(best, start_tokens, extra_tokens)]


def n_best_answers(features: Sequence[Mapping], contexts: Sequence[str], n_best: int = 20,
                   max_answer_length: int = 30) -> list[list[SpanCandidate]]:
    """Per example, its `n_best` best valid spans over all of its windows, best first (a span seen in two
    overlapping windows is listed once per window, as in Hugging Face's n-best lists)."""
    candidates: list[list[SpanCandidate]] = [[] for _ in contexts]
    for feature in features:
        index, offsets = feature["example_index"], feature["offsets"]
        for score, first, last in window_spans(feature["start_logits"], feature["end_logits"], offsets,
                                               max_answer_length, n_best):
            char_start, char_end = offsets[first][0], offsets[last][1]
            candidates[index].append(SpanCandidate(score, contexts[index][char_start:char_end], char_start, char_end))
    return [sorted(spans, key=lambda span: -span.score)[:n_best] for spans in candidates]


def best_answers(features: Sequence[Mapping], contexts: Sequence[str], max_answer_length: int = 30) -> list[str]:
    """Per example, the text of its best valid span over all of its windows; "" when it has none."""
    return [spans[0].text if spans else ""
            for spans in n_best_answers(features, contexts, n_best=1, max_answer_length=max_answer_length)]


def answer_token_span(offsets: Offsets, answer_start: int, answer_end: int) -> tuple[int, int] | None:
    """The (start_token, end_token) training labels of the answer at characters [answer_start, answer_end) in one
    window, or None when the window's context does not hold the whole answer (Hugging Face's run_qa.py then labels
    the window with the CLS token; leaving that choice to the caller keeps this format-neutral).

    The labels are the first and last context tokens that overlap the answer's characters, so a boundary inside a
    token takes in the whole token. That is run_qa.py's result except when a gold offset falls on whitespace between
    tokens (a stray leading or trailing space): there run_qa.py takes in the neighbouring word, this does not."""
    if answer_end <= answer_start:
        raise ValueError(f"an answer needs at least one character; got [{answer_start}, {answer_end})")
    context_tokens = [i for i, offset in enumerate(offsets) if offset is not None]
    if (not context_tokens or offsets[context_tokens[0]][0] > answer_start
            or offsets[context_tokens[-1]][1] < answer_end):
        return None
    start_token = min(i for i in context_tokens if offsets[i][1] > answer_start)
    end_token = max(i for i in context_tokens if offsets[i][0] < answer_end)
    return (start_token, end_token) if start_token <= end_token else None   # None: only whitespace
