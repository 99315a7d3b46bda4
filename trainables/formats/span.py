"""Extractive QA (SQuAD v1.1, XQuAD, MLQA, TyDiQA-GoldP): a start and an end logit per token -> the answer span.

Featurising follows Hugging Face's run_qa.py: question + context, the context cut into windows of max_length tokens
that overlap by a quarter of max_length (`doc_stride`), each window labelled with the answer's first and last token,
or with the first token ([CLS]) when the window does not hold the whole answer. Decoding takes the best valid span
over all of an example's windows (span_decoding.py); the score is token F1 with exact match beside it
(qa_metrics.py), by SQuAD v1.1's rules (metric "f1") or MLQA's language-aware ones ("mlqa_f1").
An example whose answer lies wholly in no window cannot be learned or found: featurising counts them
(`answers_truncated`) and evaluation reports the count beside the score, so nothing is lost silently. Questions
longer than half of max_length are cut to it (`questions_shortened`), so that every window holds some context.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.formats.base import TOKEN_KEYS, Features, Format
from trainables.formats.qa_metrics import qa_scores
from trainables.formats.span_decoding import answer_token_span, best_answers
from trainables.types import SPAN

STYLES = {"f1": "squad", "mlqa_f1": "mlqa"}


def doc_stride(max_length: int) -> int:
    return max_length // 4


def shortened_questions(tokenizer, questions: list[str], max_tokens: int) -> tuple[list[str], int]:
    """Questions cut to their first `max_tokens` tokens (and how many were cut), so every window keeps room for
    context beyond the stride: a question is usually short, but a verse used as a question need not be."""
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    shortened, cut = [], 0
    for question, offsets in zip(questions, encoded["offset_mapping"]):
        if len(offsets) > max_tokens:
            question, cut = question[:offsets[max_tokens - 1][1]], cut + 1
        shortened.append(question)
    return shortened, cut


class SpanFormat(Format):
    name = SPAN

    def featurize(self, tokenizer, examples, max_length, task) -> Features:
        questions, cut = shortened_questions(tokenizer, [ex.question.lstrip() for ex in examples], max_length // 2)
        encoded = tokenizer(questions, [ex.context for ex in examples],
                            truncation="only_second", max_length=max_length, stride=doc_stride(max_length),
                            return_overflowing_tokens=True, return_offsets_mapping=True)
        rows, extra, example_index, answered = [], [], [], set()
        for window, example in enumerate(encoded["overflow_to_sample_mapping"]):
            in_context = encoded.sequence_ids(window)
            offsets = [tuple(offset) if part == 1 else None
                       for offset, part in zip(encoded["offset_mapping"][window], in_context)]
            spans = [answer_token_span(offsets, start, start + len(text)) for text, start in examples[example].answers]
            if any(spans):
                answered.add(example)
            first = spans[0] if spans and spans[0] else (0, 0)   # training learns the first gold answer
            rows.append({**{key: encoded[key][window] for key in TOKEN_KEYS if key in encoded},
                         "start_positions": first[0], "end_positions": first[1]})
            extra.append({"offsets": offsets})
            example_index.append(example)
        return Features(rows, example_index, tokenizer.pad_token_id, extra,
                        notes={"answers_truncated": len(examples) - len(answered), "questions_shortened": cut})

    def head_outputs(self, num_labels: int) -> int:
        return 2   # start and end logits

    def forward(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.head(model.encoder(**inputs).last_hidden_state)   # (batch, tokens, 2); no dropout, as BERT's

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        start, end = logits.float().unbind(-1)
        return (F.cross_entropy(start, targets["start_positions"]) + F.cross_entropy(end, targets["end_positions"])) / 2

    def row_outputs(self, logits, inputs) -> list[torch.Tensor]:
        lengths = inputs["attention_mask"].sum(-1).tolist()
        return [row[:length].float().cpu() for row, length in zip(logits, lengths)]

    def decode(self, outputs, features, examples, task) -> list[str]:
        windows = [{"example_index": index, "start_logits": output[:, 0].numpy(), "end_logits": output[:, 1].numpy(),
                    "offsets": extra["offsets"][:len(output)]}
                   for index, output, extra in zip(features.example_index, outputs, features.extra)]
        # Sentencepiece offsets may take in the space before a word: trim it off the answer.
        answers = best_answers(windows, [ex.context for ex in examples], max_answer_length=task.max_answer_tokens)
        return [answer.strip() for answer in answers]

    def score(self, predictions, examples, task) -> dict[str, float]:
        context_language = examples[0].context_language or examples[0].language   # answers are normalised in it
        figures = qa_scores(predictions, [[text for text, _ in ex.answers] for ex in examples], context_language,
                            STYLES[task.metric])
        return {"score": figures["f1"], "exact_match": figures["exact_match"]}
