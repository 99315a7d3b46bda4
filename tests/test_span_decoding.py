"""Span decoding (logits -> answer text) and span labelling (answer characters -> token labels)."""
from __future__ import annotations

import numpy as np
import pytest

from trainables.formats.span_decoding import answer_token_span, best_answers, n_best_answers, window_spans

CONTEXT = "Paris is the capital of France."
#          0    5  8   12      20 23     30
WORDS = [(0, 5), (6, 8), (9, 12), (13, 20), (21, 23), (24, 30), (30, 31)]   # Paris is the capital of France .
LOW = -10.0


def window(example_index, context_tokens, start=None, end=None, question_tokens=2, padding=1):
    """[CLS] question [SEP] context [SEP] padding, with logits LOW except where `start`/`end` ({token: logit},
    counted over the whole window) say otherwise."""
    offsets = [None] * (1 + question_tokens + 1) + list(context_tokens) + [None] * (1 + padding)
    start_logits, end_logits = np.full(len(offsets), LOW), np.full(len(offsets), LOW)
    for logits, values in ((start_logits, start or {}), (end_logits, end or {})):
        for token, value in values.items():
            logits[token] = value
    return {"example_index": example_index, "start_logits": start_logits, "end_logits": end_logits,
            "offsets": offsets}


FIRST = 4   # the window's first context token: [CLS] q q [SEP] come before it


def test_best_span_is_taken_over_all_windows_of_an_example():
    # window A holds words 0-3 (Paris .. capital), window B words 2-6 (the .. France .); token = FIRST + word index
    # example 0: A's best is "capital" 3 + 3 = 6, B's best is "France" 5 + 4 = 9 -> "France"
    # example 1: A's best is "Paris" 8 + 8 = 16, B's best is "capital" 1 + 1 = 2 -> "Paris" (the first window wins)
    features = [
        window(0, WORDS[0:4], start={FIRST + 3: 3.0}, end={FIRST + 3: 3.0}),
        window(1, WORDS[0:4], start={FIRST + 0: 8.0}, end={FIRST + 0: 8.0}),
        window(0, WORDS[2:7], start={FIRST + 3: 5.0}, end={FIRST + 3: 4.0}),
        window(1, WORDS[2:7], start={FIRST + 1: 1.0}, end={FIRST + 1: 1.0}),
    ]
    assert best_answers(features, [CONTEXT, CONTEXT]) == ["France", "Paris"]
    best = n_best_answers(features, [CONTEXT, CONTEXT], n_best=2)
    assert [(c.text, c.score) for c in best[0]] == [("France", 9.0), ("capital", 6.0)]   # one from each window
    assert (best[0][0].char_start, best[0][0].char_end) == (24, 30)


def test_span_ending_before_its_start_is_rejected():
    # start peaks at France (10), end peaks at Paris (10): (France, Paris) = 20 is backwards.
    # Valid: (France, France) = 10 + 2 = 12 beats (Paris, Paris) = 1 + 10 = 11
    feature = window(0, WORDS, start={FIRST + 5: 10.0, FIRST: 1.0}, end={FIRST: 10.0, FIRST + 5: 2.0})
    assert best_answers([feature], [CONTEXT]) == ["France"]
    assert n_best_answers([feature], [CONTEXT], n_best=1)[0][0].score == 12.0


@pytest.mark.parametrize("max_answer_length, expected", [
    (6, "Paris is the capital of France"),   # (Paris, France) = 10 + 10 = 20, exactly 6 tokens: allowed
    (5, "capital of France"),                # (capital, France) = 3 + 10 = 13 (3 tokens) > (Paris, capital) = 11
    (2, "capital"),                          # (capital, capital) = 3 + 1 = 4; every other span of <= 2 is <= 0
])
def test_spans_longer_than_max_answer_length_are_rejected(max_answer_length, expected):
    feature = window(0, WORDS, start={FIRST: 10.0, FIRST + 3: 3.0}, end={FIRST + 5: 10.0, FIRST + 3: 1.0})
    assert best_answers([feature], [CONTEXT], max_answer_length=max_answer_length) == [expected]


def test_tokens_outside_the_context_are_never_chosen():
    # [CLS] (0), the question (1, 2), the [SEP]s and padding get 100; in the context only "France" stands out
    outside = {0: 100.0, 1: 100.0, 2: 100.0, 3: 100.0, FIRST + 7: 100.0, FIRST + 8: 100.0}
    feature = window(0, WORDS, start={**outside, FIRST + 5: 1.0}, end={**outside, FIRST + 5: 1.0})
    assert best_answers([feature], [CONTEXT]) == ["France"]
    spans = window_spans(feature["start_logits"], feature["end_logits"], feature["offsets"], n_best=1000)
    assert all(FIRST <= first <= last < FIRST + len(WORDS) for _, first, last in spans)
    assert len(spans) == 7 * 8 // 2     # every ordered pair of the 7 context tokens (all within 30 tokens)


def test_no_valid_span_gives_an_empty_answer():
    no_context = window(0, [])                                  # a window with the question only
    too_long = window(1, WORDS[:3])
    assert best_answers([no_context], [CONTEXT, CONTEXT]) == ["", ""]         # example 1 has no window at all
    assert best_answers([no_context, too_long], [CONTEXT, CONTEXT], max_answer_length=0) == ["", ""]
    assert n_best_answers([no_context], [CONTEXT]) == [[]]


def test_n_best_lists_are_sorted_and_cut():
    feature = window(0, WORDS, start={FIRST + i: float(i) for i in range(7)}, end={FIRST + 6: 0.0})
    # ends other than "." (0) are LOW, so the best spans all end on ".": starts 6, 5, 4 score 6, 5, 4
    best = n_best_answers([feature], [CONTEXT], n_best=3)[0]
    assert [(c.text, c.score) for c in best] == [(".", 6.0), ("France.", 5.0), ("of France.", 4.0)]


def test_window_shapes_must_agree():
    with pytest.raises(ValueError, match="one length"):
        window_spans(np.zeros(3), np.zeros(4), [None, (0, 1), (1, 2)])


# ---- labels: answer characters -> tokens --------------------------------------------------------------------------

OFFSETS = [None, None, None] + WORDS[:4] + [None, None]   # [CLS] q [SEP] Paris is the capital [SEP] pad


@pytest.mark.parametrize("answer, expected", [
    ((0, 5), (3, 3)),       # "Paris": the first context token
    ((9, 20), (5, 6)),      # "the capital": two tokens, the last context token included
    ((13, 20), (6, 6)),     # "capital": ends at the window's last context token, just before [SEP]
    ((1, 4), (3, 3)),       # "ari": inside one token -> that whole token
    ((5, 8), (4, 4)),       # " is": a stray leading space does not take in "Paris" (run_qa.py's rule would)
    ((0, 6), (3, 3)),       # "Paris ": nor a trailing one "is"
    ((5, 6), None),         # " ": no token's characters at all
    ((24, 30), None),       # "France": beyond the window
    ((13, 23), None),       # "capital of": only partly inside the window
])
def test_answer_token_span(answer, expected):
    assert answer_token_span(OFFSETS, *answer) == expected


def test_answer_before_a_later_window_is_not_in_it():
    later = [None, None] + WORDS[3:7] + [None]    # capital of France .
    assert answer_token_span(later, 0, 5) is None                 # "Paris"
    assert answer_token_span(later, 24, 30) == (4, 4)             # "France"
    assert answer_token_span([None, None], 0, 5) is None           # no context at all
    with pytest.raises(ValueError):
        answer_token_span(later, 5, 5)


def test_labels_decode_back_to_the_answer():
    # logits that peak on the labelled tokens decode to the gold text, in each window that holds the answer
    for context_tokens, (answer_start, answer_end) in ((WORDS[0:4], (9, 20)), (WORDS[2:7], (9, 20))):
        offsets = [None, None, None] + list(context_tokens) + [None]
        first, last = answer_token_span(offsets, answer_start, answer_end)
        start, end = np.zeros(len(offsets)), np.zeros(len(offsets))
        start[first], end[last] = 5.0, 5.0
        feature = {"example_index": 0, "start_logits": start, "end_logits": end, "offsets": offsets}
        assert best_answers([feature], [CONTEXT]) == [CONTEXT[answer_start:answer_end]] == ["the capital"]
