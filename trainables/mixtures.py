"""Multi-task intermediate training: a mixture of intermediate tasks, one shared encoder and one head per task.

A mixture is declared once in the registry (trainables/tasks.py: `Mixture`, name + components + sampling rule) and
its name stands wherever an intermediate task name does, so a data cell stays (source, task, quality, size) with
size = the examples of all components together. The sampling rule gives each component i a probability,
p_i ~ n_i (proportional) or p_i ~ n_i^(1/T) (temperature), n_i the examples of its tier. A cell of size N gives the
components sizes N_i ~ p_i * N (`component_sizes`), each the first N_i examples of the component's own seeded
permutation (trainables/subsets.py). The sizes are handed out one example at a time by the divisor method of
Sainte-Laguë, which never lowers a component's size when N grows: sizes nest along a curve as single tasks' do.

Training sees every example of the cell once per epoch, one task per batch (formats batch differently): the batches of
each component in its own seeded order, interleaved in a seeded random order (`interleaved_batches`), so a step comes
from component i with probability about p_i, as in jiant's task samplers, without repeating examples. The order
depends on (seed, epoch) only and dropout is keyed by step (trainables/training.py), so a run resumed from a
checkpoint goes on bit for bit.
"""
from __future__ import annotations

import functools
import heapq
import itertools
from types import SimpleNamespace

import torch
from torch import nn

from trainables.errors import UserError
from trainables.formats import Features, TaskModel, format_of
from trainables.formats.base import new_head, split_batch
from trainables.phases import intermediate_phase
from trainables.seeding import seed_from
from trainables.subsets import pool_size, select_examples
from trainables.tasks import get_mixture, get_task, is_mixture
from trainables.training import TrainConfig, TrainResult, batch_order, train
from trainables.types import TEMPERATURE, Mixture, Task

MIXTURE_CODE_VERSION = 1   # bump when mixture training changes its result (batch interleaving, heads)


# --------------------------------------------------------------------------------------------- what a cell holds
def sampling_probabilities(mixture: Mixture, pool_sizes: dict[str, int]) -> dict[str, float]:
    """p_i of every component from the examples n_i of its pool."""
    exponent = 1 / mixture.temperature if mixture.sampling == TEMPERATURE else 1.0
    weights = {name: pool_sizes[name] ** exponent for name in mixture.components}
    total = sum(weights.values())
    return {name: weight / total for name, weight in weights.items()}


def component_sizes(mixture: Mixture, pool_sizes: dict[str, int], size: int) -> dict[str, int]:
    """How many of the `size` examples each component gives: one example at a time to the component with the
    largest p_i / (N_i + 1/2) that has examples left (Sainte-Laguë), so N_i stays within about one of p_i * size and
    no N_i shrinks as `size` grows. A component whose pool runs out leaves the rest to the others."""
    if size > sum(pool_sizes[name] for name in mixture.components):
        raise UserError(f"mixture {mixture.name} holds {sum(pool_sizes.values()):,} train examples in all; ask for "
                        f"at most that many, not {size:,}")
    probabilities = sampling_probabilities(mixture, pool_sizes)
    sizes = dict.fromkeys(mixture.components, 0)
    queue = [(-probabilities[name] / 0.5, index, name) for index, name in enumerate(mixture.components)]
    heapq.heapify(queue)
    for _ in range(size):
        _, index, name = heapq.heappop(queue)
        sizes[name] += 1
        if sizes[name] < pool_sizes[name]:
            heapq.heappush(queue, (-probabilities[name] / (sizes[name] + 0.5), index, name))
    return sizes


@functools.lru_cache(maxsize=64)
def _cell_sizes(name: str, quality: str, size: int) -> tuple[tuple[str, int], ...]:
    mixture = get_mixture(name)
    pools = {component: pool_size(component, quality) for component in mixture.components}
    return tuple(component_sizes(mixture, pools, size).items())


def cell_component_sizes(name: str, quality: str, size: int) -> dict[str, int]:
    """The component sizes of a mixture cell (its components' tier pools loaded to count them)."""
    return dict(_cell_sizes(name, quality, size))


def intermediate_parts(name: str, quality: str, size: int, seed: int) -> dict[Task, list]:
    """The phase-2 examples of a cell by task: {the task: its examples}, or one entry per component of a mixture."""
    if not is_mixture(name):
        return {get_task(name): select_examples(name, quality, size, seed)}
    return {get_task(component): select_examples(component, quality, n, seed)
            for component, n in cell_component_sizes(name, quality, size).items() if n > 0}


def mixture_record(name: str, quality: str, size: int) -> dict:
    """What identifies a mixture cell's data beyond its name and size (the phase-2 cache key, MLflow): components,
    their sizes and the sampling rule. {} for a single task, so single-task keys and params stay as they were."""
    if not is_mixture(name):
        return {}
    mixture = get_mixture(name)
    sizes = cell_component_sizes(name, quality, size) if size > 0 else {}
    rule = f"{mixture.sampling}:{mixture.temperature:g}" if mixture.sampling == TEMPERATURE else mixture.sampling
    return {"mixture_components": ",".join(mixture.components), "mixture_component_sizes": ",".join(
        f"{component}={n}" for component, n in sizes.items()), "mixture_sampling": rule}


# --------------------------------------------------------------------------------------------------- training
class MixtureModel(nn.Module):
    """The shared encoder with one head per component task; `forward(component, **inputs)` goes through that
    component's head, as its format does it."""

    def __init__(self, encoder: nn.Module, tasks: list[Task], *, seed: int = 0, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.formats = [format_of(task) for task in tasks]
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList([new_head(encoder, format_of(task), task.num_labels, seed_from(seed, task.name))
                                    for task in tasks])

    def forward(self, component: int, **inputs: torch.Tensor) -> torch.Tensor:
        # A format's forward reads model.encoder, .head and .dropout: give it this component's head under that name.
        view = SimpleNamespace(encoder=self.encoder, head=self.heads[component], dropout=self.dropout)
        return self.formats[component].forward(view, inputs)

    def batch_loss(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        component = int(batch["component"][0])
        inputs, targets = split_batch({key: value for key, value in batch.items() if key != "component"})
        return self.formats[component].loss(net(component, **inputs), targets)


def interleaved_batches(part_rows: tuple[int, ...], batch_size: int, seed: int, names: tuple[str, ...], epoch: int,
                        shuffle: bool = True) -> list[list[int]]:
    """The row indices of every batch of one epoch over consecutive parts of `part_rows` rows each: every part's
    batches in its own seeded order (training.batch_order), the parts interleaved in an order seeded by
    (seed, epoch). Each batch holds rows of one part."""
    offsets = list(itertools.accumulate((0,) + part_rows[:-1]))
    per_part = [[[offset + row for row in batch]
                 for batch in batch_order(rows, batch_size, seed_from(seed, "component", name), epoch, shuffle)]
                for rows, offset, name in zip(part_rows, offsets, names)]
    labels = torch.tensor([part for part, batches in enumerate(per_part) for _ in batches])
    generator = torch.Generator().manual_seed(seed_from(seed, "interleave", epoch))
    labels = labels[torch.randperm(len(labels), generator=generator)].tolist()
    taken = [0] * len(per_part)
    order = []
    for part in labels:
        order.append(per_part[part][taken[part]])
        taken[part] += 1
    return order


def joined_parts(parts: list[Features], names: list[str]) -> Features:
    """The rows of every part in order, each marked with its part's index (MixtureModel.batch_loss reads it); the
    notes of each part under its task's name."""
    rows = [{**row, "component": index} for index, part in enumerate(parts) for row in part.rows]
    notes = {f"{name}.{what}": n for part, name in zip(parts, names) for what, n in part.notes.items()}
    return Features(rows, list(range(len(rows))), parts[0].pad_id, notes=notes)


def intermediate_model(encoder: nn.Module, parts: dict[Task, list], seed: int) -> nn.Module:
    """A fresh phase-2 model for these parts: a TaskModel for one task, a MixtureModel for several."""
    tasks = list(parts)
    if len(tasks) == 1:
        return TaskModel(encoder, format_of(tasks[0]), tasks[0].num_labels, seed=seed)
    return MixtureModel(encoder, tasks, seed=seed)


def train_intermediate(encoder: nn.Module, tokenizer, parts: dict[Task, list], cfg: TrainConfig,
                       **loop_kwargs) -> tuple[nn.Module, TrainResult]:
    """Phase 2 on one task (phases.intermediate_phase, unchanged) or on a mixture's parts; returns the trained
    encoder (heads dropped) and the loop's result."""
    if len(parts) == 1:
        (task, examples), = parts.items()
        return intermediate_phase(encoder, tokenizer, task, examples, cfg, **loop_kwargs)
    if loop_kwargs.get("trunk") is not None:
        raise UserError("a mixture trains each size separately (ladder: separate), not from a shared trunk")
    model = intermediate_model(encoder, parts, cfg.seed)
    names = [task.name for task in parts]
    features = [format_of(task).featurize(tokenizer, examples, min(task.max_length, cfg.max_length), task)
                for task, examples in parts.items()]   # once per phase, each at its own task's length
    batches = functools.partial(interleaved_batches, tuple(map(len, features)), cfg.batch_size, cfg.seed,
                                tuple(names), shuffle=cfg.shuffle)
    joined = joined_parts(features, names)
    result = train(model, joined, cfg, batches=batches, **loop_kwargs)
    result.notes.update(joined.notes)
    return model.encoder, result
