"""How one hub row becomes one example: a converter per row shape (trainables/hub.py's SOURCES names one per
dataset). A converter gets the row's fields already renamed to example fields, and our language; it returns the
example, or None for a row without a label (the loader counts those), and stops with a UserError on a row that
contradicts itself (an answer not at its offset, labels that do not fit the words)."""
from __future__ import annotations

from trainables.errors import UserError
from trainables.types import (ChoiceExample, PairExample, RetrievalExample, SpanExample, TaggingExample,
                              TextExample)

COSMOS_OPTIONS = 4


def _unlabeled(label) -> bool:
    """A hidden label: ClassLabel -1 (GLUE, Cosmos QA), "" (HellaSwag, CommonsenseQA) or missing."""
    return label is None or str(label).strip() in ("", "-1")


def _pair(fields: dict, language: str) -> PairExample | None:
    if _unlabeled(fields["label"]):
        return None
    return PairExample(fields["text_a"], fields["text_b"], int(fields["label"]), language)


def _single(fields: dict, language: str) -> TextExample | None:
    if _unlabeled(fields["label"]):
        return None
    return TextExample(fields["text"], int(fields["label"]), language)


def _choice(fields: dict, language: str) -> ChoiceExample | None:
    """context, choices (the options' texts) and label (the right option's index, as a number or a string)."""
    if _unlabeled(fields["label"]):
        return None
    choices, label = tuple(fields["choices"]), int(fields["label"])
    if not 0 <= label < len(choices):
        raise UserError(f"label {label} is not the index of one of its {len(choices)} options")
    return ChoiceExample(fields["context"], choices, label, language)


def _lettered_choice(fields: dict, language: str) -> ChoiceExample | None:
    """CommonsenseQA: choices = {"label": ["A", ...], "text": [...]}, the answer the right option's letter."""
    letters, answer = list(fields["choices"]["label"]), fields["answer"]
    if _unlabeled(answer):
        return None
    if answer not in letters:
        raise UserError(f"answerKey {answer!r} is not one of the option letters {letters}")
    return _choice({"context": fields["question"], "choices": fields["choices"]["text"],
                    "label": letters.index(answer)}, language)


def _numbered_answers(fields: dict, language: str) -> ChoiceExample | None:
    """Cosmos QA: the question follows its context; the options are the columns answer0..answer3."""
    return _choice({"context": f"{fields['context']} {fields['question']}",
                    "choices": [fields[f"answer{i}"] for i in range(COSMOS_OPTIONS)], "label": fields["label"]},
                   language)


def _retrieval(fields: dict, language: str) -> RetrievalExample:
    # Tatoeba sentences keep the newline of the line they were read from.
    return RetrievalExample(fields["query"].strip(), fields["target"].strip(), language)


def _span(fields: dict, language: str, question_language: str = "", context_language: str = "") -> SpanExample | None:
    """A SQuAD-format row (answers = {"text": [...], "answer_start": [...]}) with every gold answer it has."""
    answers = fields["answers"] or {}
    texts, starts = answers.get("text") or [], answers.get("answer_start") or []
    if not texts:
        return None
    if len(texts) != len(starts):
        raise UserError(f"row id {fields['id']}: {len(texts)} answer texts but {len(starts)} answer_start offsets")
    context = fields["context"]
    for text, start in zip(texts, starts):
        if start is None or context[start:start + len(text)] != text:
            found = "" if start is None else context[start:start + len(text)]
            raise UserError(f"row id {fields['id']}: answer {text!r} is not at character {start} of its context "
                            f"(found {found!r})")
    return SpanExample(fields["question"], context, tuple(zip(texts, map(int, starts))), language,
                       question_language=question_language, id=fields["id"], context_language=context_language)


def _tagging(fields: dict, language: str) -> TaggingExample | None:
    words, labels = fields["words"], fields["labels"]
    if not labels or any(label is None or label < 0 for label in labels):
        return None
    if len(words) != len(labels):
        raise UserError(f"{len(words)} words but {len(labels)} labels")
    return TaggingExample(tuple(words), tuple(int(label) for label in labels), language)
