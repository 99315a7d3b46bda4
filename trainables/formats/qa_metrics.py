"""Extractive-QA scores, exact match and token F1, computed the way the official evaluation scripts compute them.

Published cross-lingual QA numbers come from two scripts, so there are two styles:

- "squad" follows SQuAD v1.1's official `evaluate-v1.1.py` (also what XQuAD and TyDiQA-GoldP are scored with):
  lower-case, drop the characters of `string.punctuation`, drop the English articles a/an/the as whole words,
  split on whitespace. It ignores `language`.
- "mlqa" follows MLQA's official `mlqa_evaluation_v1.py`: every Unicode punctuation character (category P*) goes,
  articles are removed per language (en, es, de, vi, ar; none for hi and zh), and Chinese is split into single CJK
  characters (other runs stay words), so its F1 is character-level. Other languages are refused, as there.

Both scripts take, per question, the best score over its gold answers, and average over questions in points. Their
quirks are kept on purpose so that scores stay comparable with published ones:
- an empty normalised prediction scores F1 0 even against an empty normalised gold (though exact match is 1);
- punctuation is removed before articles, so "the-end" becomes "theend" and keeps its "the";
- MLQA's Arabic rule removes "ال" wherever it occurs, inside words too (its pattern's other branch never matches);
- MLQA's Vietnamese "articles" include "của" and "là", and its CJK range is U+4E00..U+9FA5.
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

STYLES = ("squad", "mlqa")

_SQUAD_PUNCTUATION = frozenset(string.punctuation)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")
_MLQA_ARTICLES = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "ar": re.compile("ال"),
    "hi": None,
    "zh": None,
}
MLQA_LANGUAGES = tuple(_MLQA_ARTICLES)
_CJK = re.compile("[\u4e00-\u9fa5]")


def _is_unicode_punctuation(char: str) -> bool:
    # The same set as MLQA's PUNCT, tested per character instead of built from all 1.1M code points at import.
    return char in _SQUAD_PUNCTUATION or unicodedata.category(char).startswith("P")


def _mixed_segmentation(text: str) -> list[str]:
    tokens, run = [], []
    for char in text:
        if _CJK.match(char):
            tokens.extend("".join(run).split())
            tokens.append(char)
            run = []
        else:
            run.append(char)
    tokens.extend("".join(run).split())
    return tokens


def _check(language: str | None, style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown QA metric style {style!r}; known: {', '.join(STYLES)}")
    if style == "mlqa" and language not in _MLQA_ARTICLES:
        raise ValueError(f"the mlqa style scores only {', '.join(MLQA_LANGUAGES)}, not {language!r}; "
                         "use style='squad' for other languages")


def answer_tokens(text: str, language: str | None = None, style: str = "squad") -> list[str]:
    """The normalised tokens that exact match compares and F1 counts."""
    _check(language, style)
    text = text.lower()
    if style == "squad":
        text = "".join(char for char in text if char not in _SQUAD_PUNCTUATION)
        return _SQUAD_ARTICLES.sub(" ", text).split()
    text = "".join(char for char in text if not _is_unicode_punctuation(char))
    articles = _MLQA_ARTICLES[language]
    if articles is not None:
        text = articles.sub(" ", text)
    return _mixed_segmentation(text) if language == "zh" else text.split()


def normalize_answer(text: str, language: str | None = None, style: str = "squad") -> str:
    return " ".join(answer_tokens(text, language, style))


def _golds(golds: Sequence[str]) -> Sequence[str]:
    if isinstance(golds, str):
        raise TypeError("golds must be a list of gold answers, not one string")
    if not golds:
        raise ValueError("a question needs at least one gold answer")
    return golds


def _token_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    overlap = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: Sequence[str], language: str | None = None, style: str = "squad") -> float:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0."""
    predicted = answer_tokens(prediction, language, style)
    return float(any(predicted == answer_tokens(gold, language, style) for gold in _golds(golds)))


def f1(prediction: str, golds: Sequence[str], language: str | None = None, style: str = "squad") -> float:
    """Token-overlap F1 (0..1) against the gold answer it matches best."""
    predicted = answer_tokens(prediction, language, style)
    return max(_token_f1(predicted, answer_tokens(gold, language, style)) for gold in _golds(golds))


def qa_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]], language: str | None = None,
              style: str = "squad") -> dict[str, float]:
    """Exact match and F1 in points (0-100), averaged over questions; `golds[i]` lists question i's answers.
    `language` is the language of the context (MLQA scores by the answer's language)."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    if not predictions:
        raise ValueError("no questions to score")
    exact = sum(exact_match(p, g, language, style) for p, g in zip(predictions, golds))
    overlap = sum(f1(p, g, language, style) for p, g in zip(predictions, golds))
    return {"exact_match": 100.0 * exact / len(predictions), "f1": 100.0 * overlap / len(predictions)}
