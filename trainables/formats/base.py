"""What every format shares: featurised inputs, batching, the model with its head, and evaluation.

A format turns the examples of a phase into `Features` once (tokenised, unpadded; one example may give several
model inputs, e.g. the document windows of a long QA context), puts a head on the encoder, gives the loss, and turns
the model's outputs back into one prediction per example and a score. `Format.evaluate` does the zero-shot scoring
of a target in every language in one pass; retrieval, which has no head, overrides it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from statistics import mean

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import UserError
from trainables.models import mean_pool
from trainables.precision import autocast, resolve_precision
from trainables.seeding import seed_from

TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")
IGNORE = -100   # the label of tokens the loss skips (cross_entropy's ignore_index)


@dataclass
class Features:
    """The model inputs of a list of examples: `rows[i]` holds token lists (unpadded) and label fields of input i,
    which came from example `example_index[i]`. `notes` counts what featurising could not keep (e.g. answers
    lost to truncation), so it is reported instead of dropped silently."""
    rows: list[dict]
    example_index: list[int]
    pad_id: int
    extra: list[dict] = field(default_factory=list)   # per row, what decoding needs (e.g. character offsets)
    notes: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def joined(parts: list[Features]) -> Features:
        """The features of several lists of examples as those of their concatenation."""
        offsets = itertools.accumulate([0] + [max(part.example_index, default=-1) + 1 for part in parts])
        return Features(rows=[row for part in parts for row in part.rows],
                        example_index=[offset + i for part, offset in zip(parts, offsets) for i in part.example_index],
                        pad_id=parts[0].pad_id, extra=[extra for part in parts for extra in part.extra])


def _pad(sequences: list[list], length: int, value) -> list[list]:
    return [list(seq) + [value] * (length - len(seq)) for seq in sequences]


def row_length(row: dict) -> int:
    """The tokens a row pads to: its input ids, or its longest option's (multiple choice)."""
    ids = row["input_ids"]
    return max(map(len, ids)) if ids and isinstance(ids[0], list) else len(ids)


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the rows of one batch to its longest sequence (on the right): token ids with `pad_id`, masks and type
    ids with 0, token-level labels with IGNORE; scalar labels become one tensor. Rows of options (multiple choice)
    are padded to the longest option of the batch and keep their (batch, options, length) shape."""
    batch = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if not isinstance(values[0], (list, tuple)):
            batch[key] = torch.tensor(values)
            continue
        nested = isinstance(values[0][0], (list, tuple))
        flat = [seq for value in values for seq in value] if nested else values
        longest = max(map(len, flat))
        fill = pad_id if key == "input_ids" else (0 if key in TOKEN_KEYS else IGNORE)
        tensor = torch.tensor(_pad(flat, longest, fill))
        batch[key] = tensor.view(len(values), -1, longest) if nested else tensor
    return batch


def split_batch(batch: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(model inputs, targets) of a collated batch."""
    inputs = {key: value for key, value in batch.items() if key in TOKEN_KEYS}
    return inputs, {key: value for key, value in batch.items() if key not in TOKEN_KEYS}


class Format:
    """Pooled classification is the default behaviour; a format overrides what it does differently."""
    name = ""
    trains = True          # False: no head and no training (scored from hidden states)

    def featurize(self, tokenizer, examples: list, max_length: int, task) -> Features:
        raise NotImplementedError

    def head_outputs(self, num_labels: int) -> int:
        """The width of the linear head on the encoder."""
        return num_labels

    def forward(self, model: TaskModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = model.encoder(**inputs).last_hidden_state
        # Pool in float32: under bf16 autocast a bf16 sum over the tokens would lose precision.
        return model.head(model.dropout(mean_pool(hidden.float(), inputs["attention_mask"])))

    def loss(self, logits: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets["labels"])

    def row_outputs(self, logits: torch.Tensor, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """One CPU tensor per row of a batch (token-level formats trim the padding)."""
        return list(logits.float().cpu())

    def decode(self, outputs: list[torch.Tensor], features: Features, examples: list, task) -> list:
        """One prediction per example from the outputs of its rows."""
        return [output.argmax(-1).item() for output in outputs]

    def score(self, predictions: list, examples: list, task) -> dict[str, float]:
        """{"score": the task's metric in points, plus any secondary figures}."""
        right = sum(prediction == example.label for prediction, example in zip(predictions, examples))
        return {"score": 100.0 * right / len(examples)}

    def evaluate(self, model: nn.Module, tokenizer, task, examples_by_language: dict[str, list], *, device,
                 batch_size: int = 64, max_length: int = 128, layer: int = -1,
                 precision: str = "auto") -> dict[str, float]:
        """{language: score, "<language>/<figure>": secondary figures, "avg": mean score over the languages}."""
        if not isinstance(model, TaskModel):
            raise UserError(f"{task.name} is scored by a trained TaskModel (target_phase), not a bare encoder")
        everything = [ex for examples in examples_by_language.values() for ex in examples]
        per_language = [self.featurize(tokenizer, examples, max_length, task)
                        for examples in examples_by_language.values()]
        features = Features.joined(per_language)
        outputs = predict_rows(model, features, by_length(everything), device=device, batch_size=batch_size,
                               precision=precision)
        predictions = self.decode(outputs, features, everything, task)
        bounds = list(itertools.accumulate([0] + [len(examples) for examples in examples_by_language.values()]))
        scores = {}
        for (language, examples), part, start, end in zip(examples_by_language.items(), per_language, bounds,
                                                          bounds[1:]):
            figures = {**self.score(predictions[start:end], examples, task), **part.notes}
            scores[language] = figures.pop("score")
            scores.update({f"{language}/{name}": value for name, value in figures.items()})
        scores["avg"] = mean(scores[language] for language in examples_by_language)
        return scores


class TaskModel(nn.Module):
    """A plain HF encoder plus a linear head for one format; `forward(**inputs) -> logits` (the format decides
    what the head sees: the mean-pooled text, every option, every token)."""

    def __init__(self, encoder: nn.Module, fmt: Format, num_labels: int, *, seed: int = 0, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.format = fmt
        self.dropout = nn.Dropout(dropout)
        self.head = new_head(encoder, fmt, num_labels, seed)

    @property
    def fmt(self) -> str:
        return self.format.name

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.format.forward(self, inputs)

    def batch_loss(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one collated batch; `net` is this model or its wrapper (DDP)."""
        inputs, targets = split_batch(batch)
        return self.format.loss(net(**inputs), targets)


def new_head(encoder: nn.Module, fmt: Format, num_labels: int, seed: int) -> nn.Linear:
    """The format's linear head on `encoder`, initialised from `seed` as BERT initialises its own."""
    if not fmt.trains:
        raise UserError(f"format {fmt.name!r} has no trainable head (it is scored from pooled hidden states)")
    head = nn.Linear(encoder.config.hidden_size, fmt.head_outputs(num_labels))
    std = getattr(encoder.config, "initializer_range", 0.02)
    nn.init.normal_(head.weight, std=std, generator=torch.Generator().manual_seed(seed_from(seed, "head")))
    nn.init.zeros_(head.bias)
    return head


def by_length(examples: list) -> list[int]:
    """Indices of `examples` ordered by the characters of their texts: batches of similar length pad less."""
    def characters(example) -> int:
        texts = [value for value in vars(example).values() if isinstance(value, str)]
        texts += [text for value in vars(example).values() if isinstance(value, tuple) for text in value
                  if isinstance(text, str)]
        return sum(map(len, texts))
    return sorted(range(len(examples)), key=lambda i: characters(examples[i]))


@torch.no_grad()
def predict_rows(model: TaskModel, features: Features, example_order: list[int], *, device, batch_size: int = 64,
                 precision: str = "auto") -> list[torch.Tensor]:
    """The model's output for every row of `features` (in row order), computed in batches that follow
    `example_order` (e.g. by length), in `precision`."""
    if not features.rows:
        raise UserError("no evaluation examples")
    device = torch.device(device)
    model.to(device).eval()
    mixed_precision = autocast(device, resolve_precision(precision, device))
    rows_of = [[] for _ in range(max(features.example_index) + 1)]
    for row, example in enumerate(features.example_index):
        rows_of[example].append(row)
    order = [row for example in example_order for row in rows_of[example]]
    outputs: list[torch.Tensor | None] = [None] * len(features)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        inputs, _ = split_batch(collate([features.rows[i] for i in indices], features.pad_id))
        inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
        with mixed_precision:
            logits = model(**inputs)
        for index, output in zip(indices, model.format.row_outputs(logits, inputs)):
            outputs[index] = output
    return outputs
