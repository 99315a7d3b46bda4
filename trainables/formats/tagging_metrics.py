"""Tagging scores: entity-level precision/recall/F1 over IOB2 tags, and token accuracy, in points (0-100).

Entity F1 counts entities the way seqeval does by default (`seqeval.metrics.f1_score` with no mode/scheme, i.e.
its conlleval-compatible reading in `get_entities`), so NER numbers match the ones published with it:
- B-X always starts an entity, so B-X B-X is two entities;
- I-X continues an entity only right after B-X or I-X of the same type; after O, or after a different type, it
  starts a new entity of type X (conlleval's lenient reading rather than dropping the ill-formed span);
- an entity is right only with the same type, first and last token; sentences never share an entity;
- micro-averaged over all entities of all sentences; a zero denominator gives 0 (seqeval's default), so a corpus
  with no entities at all, in gold or predicted, scores 0, not 100.
Tags must be "O", "B-<type>" or "I-<type>": seqeval only warns on anything else, which here would hide a
label-mapping bug, so it is refused.
"""
from __future__ import annotations

from collections.abc import Sequence

Entity = tuple[str, int, int]   # (type, first token, last token), both inclusive as in seqeval


def _parse(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    if tag[:2] in ("B-", "I-") and len(tag) > 2:
        return tag[0], tag[2:]
    raise ValueError(f"not an IOB2 tag: {tag!r} (expected 'O', 'B-<type>' or 'I-<type>')")


def entity_spans(tags: Sequence[str]) -> list[Entity]:
    """The entities of one sentence, in order."""
    entities: list[Entity] = []
    current: tuple[str, int] | None = None   # (type, first token) of the entity being read
    for position, tag in enumerate(tags):
        prefix, kind = _parse(tag)
        continues = prefix == "I" and current is not None and current[0] == kind
        if current is not None and not continues:
            entities.append((current[0], current[1], position - 1))
            current = None
        if prefix != "O" and not continues:
            current = (kind, position)
    if current is not None:
        entities.append((current[0], current[1], len(tags) - 1))
    return entities


def _check_lengths(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predicted sentences for {len(gold)} gold ones")
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if isinstance(gold_tags, str) or isinstance(predicted_tags, str):
            raise TypeError("each sentence must be a list of tags, not one string")
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {index}: {len(predicted_tags)} predicted tags for {len(gold_tags)} tokens")


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 of predicted entities against gold ones, in points; one tag list per
    sentence, gold first as in seqeval."""
    _check_lengths(gold, predicted)
    correct = gold_count = predicted_count = 0
    for gold_tags, predicted_tags in zip(gold, predicted):
        gold_entities, predicted_entities = set(entity_spans(gold_tags)), set(entity_spans(predicted_tags))
        correct += len(gold_entities & predicted_entities)
        gold_count += len(gold_entities)
        predicted_count += len(predicted_entities)
    precision = correct / predicted_count if predicted_count else 0.0
    recall = correct / gold_count if gold_count else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": 100.0 * precision, "recall": 100.0 * recall, "f1": 100.0 * f1}


def entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    return entity_scores(gold, predicted)["f1"]


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """The share of tokens whose predicted tag is the gold one, in points (any tag set, e.g. POS tags)."""
    _check_lengths(gold, predicted)
    total = sum(len(tags) for tags in gold)
    if total == 0:
        raise ValueError("no tokens to score")
    correct = sum(g == p for gold_tags, predicted_tags in zip(gold, predicted)
                  for g, p in zip(gold_tags, predicted_tags))
    return 100.0 * (correct / total)
