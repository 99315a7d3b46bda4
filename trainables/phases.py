"""The X-STILTs recipe (Phang et al. 2020) as three functions over a pretrained encoder.

    encoder, _ = intermediate_phase(encoder, tokenizer, intermediate_task, examples, cfg, device=device)  # phase 2
    model, _ = target_phase(encoder, tokenizer, target_task, english_train, cfg, device=device)         # phase 3
    scores = zero_shot_evaluation(model, tokenizer, target_task, test_by_language, device=device)
    # retrieval targets skip phase 3: zero_shot_evaluation(encoder, ...)

The caller selects the examples (data cell, size ladder, languages); these functions know nothing of the registry.
What a task's format does (featurising, head, loss, decoding, metric) lives in trainables/formats. Training mutates
the encoder in place: to reuse the phase-2 encoder for several targets, pass `copy.deepcopy(encoder)` to each
target_phase. `**loop_kwargs` go to `training.train` (device, step_offset, resume_state, on_step, on_phase_start,
on_checkpoint, rank, world_size, wrap_model, and for shared ladders trunk and branch_sizes: trainables/ladder.py);
chain step counters with `step_offset=<previous result>.global_step`.
"""
from __future__ import annotations

from torch import nn

from trainables.errors import UserError
from trainables.formats import TaskModel, format_of
from trainables.training import TrainConfig, TrainResult, train
from trainables.types import Task


def _trained_model(encoder: nn.Module, tokenizer, task: Task, examples: list, cfg: TrainConfig,
                   **loop_kwargs) -> tuple[TaskModel, TrainResult]:
    fmt = format_of(task)
    model = TaskModel(encoder, fmt, task.num_labels, seed=cfg.seed)
    features = fmt.featurize(tokenizer, examples, cfg.max_length, task)   # once per phase
    result = train(model, features, cfg, **loop_kwargs)
    result.notes.update(features.notes)
    return model, result


def intermediate_phase(encoder: nn.Module, tokenizer, task: Task, examples: list, cfg: TrainConfig,
                       **loop_kwargs) -> tuple[nn.Module, TrainResult]:
    """Phase 2: train `encoder` with a head for the intermediate task; return the trained encoder (head dropped)."""
    model, result = _trained_model(encoder, tokenizer, task, examples, cfg, **loop_kwargs)
    return model.encoder, result


def target_phase(encoder: nn.Module, tokenizer, task: Task, examples: list, cfg: TrainConfig,
                 **loop_kwargs) -> tuple[TaskModel, TrainResult]:
    """Phase 3: a fresh head on the (intermediate-trained) encoder, trained on the target's English examples."""
    if not format_of(task).trains:
        raise UserError(f"{task.name} is a {task.format} target: it skips phase 3 and is scored by "
                        f"zero_shot_evaluation")
    return _trained_model(encoder, tokenizer, task, examples, cfg, **loop_kwargs)


def zero_shot_evaluation(model: nn.Module, tokenizer, task: Task, examples_by_language: dict[str, list], *,
                         device, batch_size: int = 64, max_length: int | None = None, layer: int = -1,
                         precision: str = "auto") -> dict[str, float]:
    """Score the target in every language of `examples_by_language`, in points (0-100).

    Returns a flat dict (loggable as metrics as it is): `{language: score, ..., "avg": mean over the languages}`
    plus the format's secondary figures as `"<language>/<figure>"` (retrieval: en_to_x and x_to_en; span QA:
    exact_match). Trained formats need the TaskModel of phase 3; retrieval takes it or a bare encoder and embeds
    hidden layer `layer`. All languages go through the model in one pass, batched by length.
    """
    if not examples_by_language:
        raise UserError(f"no evaluation languages given for {task.name}")
    return format_of(task).evaluate(model, tokenizer, task, examples_by_language, device=device,
                                    batch_size=batch_size, max_length=max_length or task.max_length, layer=layer,
                                    precision=precision)
