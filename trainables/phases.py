"""The X-STILTs recipe (Phang et al. 2020) as three functions over a pretrained encoder.

    encoder, _ = intermediate_phase(encoder, tokenizer, intermediate_task, examples, cfg, device=device)  # phase 2
    model, _ = target_phase(encoder, tokenizer, target_task, english_train, cfg, device=device)         # phase 3
    scores = zero_shot_evaluation(model, tokenizer, target_task, test_by_language, device=device)
    # retrieval targets skip phase 3: zero_shot_evaluation(encoder, ...)

The caller selects the examples (data cell, size ladder, languages); these functions know nothing of the registry.
Training mutates the encoder in place: to reuse the phase-2 encoder for several targets, pass
`copy.deepcopy(encoder)` to each target_phase. `**loop_kwargs` go to `training.train` (device, step_offset,
resume_state, on_step, on_checkpoint, rank, world_size, wrap_model); chain step counters with
`step_offset=<previous result>.global_step`.
"""
from __future__ import annotations

import itertools
from statistics import mean

from torch import nn

from trainables.errors import UserError
from trainables.training import (TaskModel, TrainConfig, TrainResult, accuracy, embed, predict, retrieval_accuracy,
                                 train)
from trainables.types import RETRIEVAL, Task


def intermediate_phase(encoder: nn.Module, tokenizer, task: Task, examples: list, cfg: TrainConfig,
                       **loop_kwargs) -> tuple[nn.Module, TrainResult]:
    """Phase 2: train `encoder` with a head for the intermediate task; return the trained encoder (head dropped)."""
    model = TaskModel(encoder, task.format, task.num_labels, seed=cfg.seed)
    result = train(model, tokenizer, examples, task.format, cfg, **loop_kwargs)
    return model.encoder, result


def target_phase(encoder: nn.Module, tokenizer, task: Task, examples: list, cfg: TrainConfig,
                 **loop_kwargs) -> tuple[TaskModel, TrainResult]:
    """Phase 3: a fresh head on the (intermediate-trained) encoder, trained on the target's English examples."""
    if task.format == RETRIEVAL:
        raise UserError(f"{task.name} is a retrieval target: it skips phase 3 and is scored by zero_shot_evaluation")
    model = TaskModel(encoder, task.format, task.num_labels, seed=cfg.seed)
    result = train(model, tokenizer, examples, task.format, cfg, **loop_kwargs)
    return model, result


def zero_shot_evaluation(model: nn.Module, tokenizer, task: Task, examples_by_language: dict[str, list], *,
                         device, batch_size: int = 64, max_length: int | None = None, layer: int = -1,
                         precision: str = "auto") -> dict[str, float]:
    """Score the target in every language of `examples_by_language`, in points (0-100).

    Returns a flat dict (loggable as metrics as it is): `{language: score, ..., "avg": mean over the languages}`.
    Classification formats need the TaskModel of phase 3 and score accuracy. Retrieval takes the TaskModel or a
    bare encoder, embeds hidden layer `layer`, scores the mean of both directions, and adds
    `"<language>/en_to_x"` and `"<language>/x_to_en"` for each language. All languages go through the model in
    one pass, batched by length (distinct English queries are embedded once).
    """
    if not examples_by_language:
        raise UserError(f"no evaluation languages given for {task.name}")
    kwargs = dict(device=device, batch_size=batch_size, max_length=max_length or task.max_length,
                  precision=precision)
    everything = [ex for examples in examples_by_language.values() for ex in examples]
    bounds = list(itertools.accumulate([0] + [len(examples) for examples in examples_by_language.values()]))
    scores = {}
    if task.format == RETRIEVAL:
        encoder = model.encoder if isinstance(model, TaskModel) else model
        queries = sorted({ex.query for ex in everything})
        query_vectors = embed(encoder, tokenizer, queries, layer=layer, **kwargs)
        row = {query: i for i, query in enumerate(queries)}
        target_vectors = embed(encoder, tokenizer, [ex.target for ex in everything], layer=layer, **kwargs)
        for (language, examples), start, end in zip(examples_by_language.items(), bounds, bounds[1:]):
            directions = retrieval_accuracy(
                encoder, tokenizer, examples, layer=layer, **kwargs,
                query_embeddings=query_vectors[[row[ex.query] for ex in examples]],
                target_embeddings=target_vectors[start:end])
            scores[language] = mean(directions.values())
            scores.update({f"{language}/{direction}": value for direction, value in directions.items()})
    else:
        if not isinstance(model, TaskModel):
            raise UserError(f"{task.name} is scored by a trained TaskModel (target_phase), not a bare encoder")
        predictions = predict(model, tokenizer, everything, task.format, **kwargs)
        for (language, examples), start, end in zip(examples_by_language.items(), bounds, bounds[1:]):
            scores[language] = accuracy(predictions[start:end], examples)
    scores["avg"] = mean(scores[language] for language in examples_by_language)
    return scores
