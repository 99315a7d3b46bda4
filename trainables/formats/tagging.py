"""Word-level tagging (PAN-X named entities in IOB2, UD part of speech): a label per word from its first sub-token.

Featurising follows Hugging Face's run_ner.py: the words are tokenised as pre-split words, a word's label sits on
its first sub-token and every other token is ignored by the loss. A sentence longer than max_length tokens keeps its
first words; the words cut off are counted (`words_truncated`) and scored as wrong (entity F1: as "O"), never
dropped. Metrics: "entity_f1" (entity-level F1 over IOB2 spans, as seqeval) or "token_accuracy".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.formats.base import IGNORE, TOKEN_KEYS, Features, Format
from trainables.formats.tagging_metrics import entity_f1, token_accuracy
from trainables.types import TAGGING

NO_PREDICTION = None   # a word cut off by truncation


class TaggingFormat(Format):
    name = TAGGING

    def featurize(self, tokenizer, examples, max_length, task) -> Features:
        encoded = tokenizer([list(ex.words) for ex in examples], is_split_into_words=True, truncation=True,
                            max_length=max_length)
        rows, extra, truncated = [], [], 0
        for i, example in enumerate(examples):
            first_tokens, labels, previous = [], [], None
            for token, word in enumerate(encoded.word_ids(i)):
                is_first = word is not None and word != previous
                labels.append(example.labels[word] if is_first else IGNORE)
                if is_first:
                    first_tokens.append(token)
                previous = word
            truncated += len(example.words) - len(first_tokens)
            rows.append({**{key: encoded[key][i] for key in TOKEN_KEYS if key in encoded}, "labels": labels})
            extra.append({"first_tokens": first_tokens})
        return Features(rows, list(range(len(examples))), tokenizer.pad_token_id, extra,
                        notes={"words_truncated": truncated})

    def forward(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = model.encoder(**inputs).last_hidden_state
        return model.head(model.dropout(hidden))   # (batch, tokens, labels)

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), targets["labels"].flatten(), ignore_index=IGNORE)

    def row_outputs(self, logits, inputs) -> list[torch.Tensor]:
        lengths = inputs["attention_mask"].sum(-1).tolist()
        return [row[:length].float().cpu() for row, length in zip(logits, lengths)]

    def decode(self, outputs, features, examples, task) -> list[list[int | None]]:
        predictions = []
        for output, extra, example in zip(outputs, features.extra, examples):
            labels = output[extra["first_tokens"]].argmax(-1).tolist()
            predictions.append(labels + [NO_PREDICTION] * (len(example.words) - len(labels)))
        return predictions

    def score(self, predictions, examples, task) -> dict[str, float]:
        names = task.label_names
        gold = [[names[label] for label in ex.labels] for ex in examples]
        if task.metric == "entity_f1":
            predicted = [["O" if label is NO_PREDICTION else names[label] for label in labels]
                         for labels in predictions]
            return {"score": entity_f1(gold, predicted)}
        predicted = [["" if label is NO_PREDICTION else names[label] for label in labels] for labels in predictions]
        return {"score": token_accuracy(gold, predicted)}
