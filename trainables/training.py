"""The generic training loop the three phases compose: AdamW with linear warm-up and decay over featurised rows.

Plain PyTorch: no Ray here. What a row is, the head and the loss belong to the model's format (trainables/formats).
The Ray Train wrapper calls `train` inside each worker with its `rank`, `world_size` and a `wrap_model` (e.g.
`ray.train.torch.prepare_model`), and saves what `on_checkpoint` hands it.

Determinism: nothing here reads the global RNG unseeded. The data order of epoch e comes from a generator seeded by
(cfg.seed, e); the global RNG (dropout) is reseeded from (cfg.seed, step, rank) at the start of every optimizer
step; head initialisation is seeded. So a config gives the same weights and metrics on CPU every time, and a run
resumed from any checkpoint continues exactly as if it had never stopped.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import get_linear_schedule_with_warmup

from trainables.dropout import use_cheap_dropout
from trainables.errors import UserError
from trainables.formats.base import Features, TaskModel, collate, split_batch
from trainables.precision import autocast, resolve_precision
from trainables.seeding import seed_from


@dataclass
class TrainConfig:
    lr: float = 2e-5                       # peak learning rate (BERT-style fine-tuning range 1e-5..5e-5)
    epochs: float = 3.0                    # passes over the examples; fractions allowed (0.5 = half an epoch)
    batch_size: int = 16                   # examples per micro-batch per worker
    grad_accum_steps: int = 1              # micro-batches per optimizer step; effective batch =
                                           # batch_size * grad_accum_steps * world_size
    warmup_ratio: float = 0.1              # share of the optimizer steps spent warming the lr up linearly from 0
    weight_decay: float = 0.01             # AdamW decay on matrices; none on biases and LayerNorm weights
    max_grad_norm: float = 1.0             # gradient clipping; 0 = no clipping
    max_length: int = 128                  # tokens per encoded text (a pair counts as one); usually Task.max_length
    freeze_word_embeddings: bool = False   # keep the word-embedding matrix fixed (on e5: 96M of 118M params)
    seed: int = 0                          # data order, dropout and head initialisation
    checkpoint_every: int = 0              # optimizer steps between on_checkpoint calls; 0 = never
    eval_batch_size: int = 64              # examples per batch for evaluate/embed (callers pass it on)
    precision: str = "auto"                # "auto" (bf16 where the device does it natively), "bf16" or "fp32"


@dataclass
class TrainResult:
    steps: int                             # optimizer steps of this phase (those before a resume included)
    global_step: int                       # step_offset + steps: the next phase's step_offset
    losses: list[float] = field(default_factory=list)  # mean training loss of every optimizer step (this worker)
    notes: dict[str, int] = field(default_factory=dict)  # what featurising could not keep (Features.notes)


def batch_order(num_examples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The example indices of every batch of one epoch, shuffled by a generator seeded by (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed_from(seed, "order", epoch))
    order = torch.randperm(num_examples, generator=generator).tolist()
    return [order[start:start + batch_size] for start in range(0, num_examples, batch_size)]


def training_state(model, optimizer, scheduler, step: int, total_steps: int, step_offset: int,
                   losses: list[float]) -> dict:
    """Everything `train(resume_state=...)` needs to continue exactly (pass `step_offset` back too). The tensors
    are the live ones: serialise (torch.save) or deep-copy the dict before training goes on."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "step": step, "total_steps": total_steps, "step_offset": step_offset, "losses": list(losses)}


def train(model: TaskModel, features: Features, cfg: TrainConfig, *, device,
          step_offset: int = 0, resume_state: dict | None = None,
          on_step: Callable[[int, float, float], None] | None = None,
          on_phase_start: Callable[[int, int], None] | None = None,
          on_checkpoint: Callable[[dict], None] | None = None,
          rank: int = 0, world_size: int = 1, wrap_model: Callable[[nn.Module], nn.Module] | None = None,
          ) -> TrainResult:
    """Train `model` in place on the rows of `features` (from `model.format.featurize`); see TrainConfig for the
    knobs and the module docstring for determinism.

    Worker `rank` of `world_size` takes every world_size-th micro-batch of one global order. `on_step(global_step,
    loss, lr)` follows every optimizer step, global_step = step_offset + steps done in this phase;
    `on_phase_start(step_offset, step_offset + total_steps)` comes first (where the phase starts and ends).
    `on_checkpoint(training_state(...))` follows every cfg.checkpoint_every steps and the last step.
    """
    if not len(features):
        raise UserError("no training examples: a size-0 data cell skips the phase instead of training on nothing")
    device = torch.device(device)
    batches_per_epoch = math.ceil(len(features) / cfg.batch_size)
    micro_batches_per_step = cfg.grad_accum_steps * world_size
    total_steps = max(1, math.ceil(cfg.epochs * batches_per_epoch / micro_batches_per_step))

    if on_phase_start is not None:
        on_phase_start(step_offset, step_offset + total_steps)
    model.to(device)
    if device.type == "cpu":   # same rates and places, a quarter of the mask cost (trainables/dropout.py)
        use_cheap_dropout(model)
    if resume_state is not None:
        if resume_state["total_steps"] != total_steps:
            raise UserError(f"the checkpoint belongs to a run of {resume_state['total_steps']} steps, "
                            f"this config makes {total_steps}: resume with the config that wrote it")
        model.load_state_dict(resume_state["model"])
    model.encoder.get_input_embeddings().weight.requires_grad_(not cfg.freeze_word_embeddings)
    if getattr(model.encoder, "pooler", None) is not None:  # unused by mean pooling; DDP rejects unused params
        model.encoder.pooler.requires_grad_(False)
    net = wrap_model(model) if wrap_model is not None else model  # after freezing: DDP only syncs trainable params

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([  # no decay on vectors: biases and LayerNorm weights (as in nanoGPT)
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ], lr=cfg.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    start_step, losses = 0, []
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        start_step, losses = resume_state["step"], list(resume_state["losses"])

    epoch_batches = functools.lru_cache(maxsize=2)(functools.partial(batch_order, len(features), cfg.batch_size,
                                                                     cfg.seed))
    mixed_precision = autocast(device, resolve_precision(cfg.precision, device))
    net.train()
    for step in range(start_step, total_steps):
        torch.manual_seed(seed_from(cfg.seed, "dropout", step, rank))
        lr = scheduler.get_last_lr()[0]
        step_loss = 0.0
        for micro_step in range(cfg.grad_accum_steps):
            index = (step * cfg.grad_accum_steps + micro_step) * world_size + rank
            epoch, position = divmod(index, batches_per_epoch)
            batch = collate([features.rows[i] for i in epoch_batches(epoch)[position]], features.pad_id)
            inputs, targets = (
                {name: tensor.to(device) for name, tensor in part.items()} for part in split_batch(batch))
            if isinstance(net, DistributedDataParallel):  # all-reduce gradients only on the last micro-step
                net.require_backward_grad_sync = micro_step == cfg.grad_accum_steps - 1
            with mixed_precision:
                loss = model.format.loss(net(**inputs), targets) / cfg.grad_accum_steps
            loss.backward()
            step_loss += loss.item()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        steps_done = step + 1
        losses.append(step_loss)
        if on_step is not None:
            on_step(step_offset + steps_done, step_loss, lr)
        if on_checkpoint is not None and cfg.checkpoint_every > 0 and (
                steps_done % cfg.checkpoint_every == 0 or steps_done == total_steps):
            on_checkpoint(training_state(model, optimizer, scheduler, steps_done, total_steps, step_offset, losses))
    return TrainResult(steps=total_steps, global_step=step_offset + total_steps, losses=losses)
