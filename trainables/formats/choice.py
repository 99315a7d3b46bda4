"""Multiple choice: every (context, option) pair is encoded and mean-pooled -> dropout -> Linear(1); the logits
over a question's options go to a softmax. The metric is accuracy."""
from __future__ import annotations

import torch

from trainables.errors import UserError
from trainables.formats.base import Features, Format
from trainables.models import mean_pool
from trainables.types import CHOICE


class ChoiceFormat(Format):
    name = CHOICE

    def featurize(self, tokenizer, examples, max_length, task) -> Features:
        num_choices = len(examples[0].choices)
        if any(len(ex.choices) != num_choices for ex in examples):
            raise UserError("every multiple-choice example of a task must have the same number of options")
        encoded = tokenizer([ex.context for ex in examples for _ in ex.choices],
                            [option for ex in examples for option in ex.choices],
                            truncation="longest_first", max_length=max_length)
        rows = [{**{key: encoded[key][i * num_choices:(i + 1) * num_choices] for key in encoded.keys()},
                 "labels": ex.label} for i, ex in enumerate(examples)]
        return Features(rows, list(range(len(examples))), tokenizer.pad_token_id)

    def head_outputs(self, num_labels: int) -> int:
        return 1   # one score per option

    def forward(self, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        num_choices = inputs["input_ids"].shape[1]   # (batch, options, length): encode the options as one batch
        flat = {name: tensor.flatten(0, 1) for name, tensor in inputs.items()}
        hidden = model.encoder(**flat).last_hidden_state
        pooled = mean_pool(hidden.float(), flat["attention_mask"])
        return model.head(model.dropout(pooled)).view(-1, num_choices)
