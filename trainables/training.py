"""The generic training loop the three phases compose: AdamW over featurised rows, with linear warm-up and decay
(`schedule="linear"`) or warmup-stable-decay (`schedule="wsd"`, for shared size ladders: trainables/ladder.py).

Plain PyTorch: no Ray here. What a row is, the head and the loss belong to the model's format (trainables/formats).
The Ray Train wrapper calls `train` inside each worker with its `rank`, `world_size` and a `wrap_model` (e.g.
`ray.train.torch.prepare_model`), and saves what `on_checkpoint` hands it.

Determinism: nothing here reads the global RNG unseeded. The data order of epoch e comes from a generator seeded by
(cfg.seed, e) (or is the rows' own order: shuffle=False); the global RNG (dropout) is reseeded from (cfg.seed, step,
rank) at the start of every optimizer step; head initialisation is seeded. So a config gives the same weights and
metrics on CPU every time, and a run resumed from any checkpoint continues exactly as if it had never stopped.
"""
from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_linear_schedule_with_warmup

from trainables.dropout import use_cheap_dropout
from trainables.errors import UserError
from trainables.formats.base import Features, TaskModel, collate, row_length
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
    schedule: str = "linear"               # "linear": warmup_ratio then linear decay to 0; "wsd": warmup_steps,
                                           # constant, then linear decay to 0 over the last decay_fraction
    warmup_steps: int = 0                  # wsd only: warm-up steps, the same for every size of a ladder
    decay_fraction: float = 0.2            # wsd only: share of the optimizer steps spent decaying
    shuffle: bool = True                   # False: every epoch takes the rows in their given order
    length_windows: int = 0                # >0: shuffled rows are sorted by length within windows of this many
                                           # batches and the batches shuffled (less padding); 0: plain batches


@dataclass
class TrainResult:
    steps: int                             # optimizer steps of this phase (those before a resume included)
    global_step: int                       # step_offset + steps: the next phase's step_offset
    losses: list[float] = field(default_factory=list)  # mean training loss of every optimizer step (this worker)
    notes: dict[str, int] = field(default_factory=dict)  # what featurising could not keep (Features.notes)
    resumed_at: int = 0                    # the step this phase started from (a checkpoint or a trunk snapshot)


class TrunkStore(Protocol):
    """Training states of a shared ladder's trunk by step (trainables/ladder.py's TrunkSnapshots)."""
    def latest(self, max_step: int) -> dict | None: ...
    def store(self, state: dict) -> None: ...


def optimizer_steps(num_rows: int, cfg: TrainConfig, world_size: int = 1) -> int:
    """The optimizer steps of one phase over `num_rows` rows."""
    return steps_for_batches(math.ceil(num_rows / cfg.batch_size), cfg, world_size)


def steps_for_batches(batches_per_epoch: int, cfg: TrainConfig, world_size: int = 1) -> int:
    return max(1, math.ceil(cfg.epochs * batches_per_epoch / (cfg.grad_accum_steps * world_size)))


def decay_start(total_steps: int, decay_fraction: float) -> int:
    """The wsd schedule's branch step: the first step of the decay, floor((1 - d) * total_steps)."""
    return math.floor((1 - decay_fraction) * total_steps)


def get_wsd_schedule(optimizer, warmup_steps: int, total_steps: int, decay_fraction: float) -> LambdaLR:
    """Warmup-stable-decay: linear warm-up over `warmup_steps`, the peak lr, then linear decay to 0 over the last
    `decay_fraction` of `total_steps`. Before its decay the factor does not depend on total_steps, so runs of
    different lengths agree step for step up to the shorter one's decay start."""
    start = decay_start(total_steps, decay_fraction)

    # A plain function, not a partial or callable object: LambdaLR.state_dict leaves functions out, so a trunk
    # snapshot's scheduler state loads into a run of another length without carrying that run's total_steps.
    def factor(step: int) -> float:
        warm = step / warmup_steps if step < warmup_steps else 1.0
        decay = (total_steps - step) / (total_steps - start) if step >= start else 1.0
        return max(0.0, min(warm, decay))
    return LambdaLR(optimizer, factor)


def batch_order(num_examples: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                lengths: list[int] | None = None, length_windows: int = 0) -> list[list[int]]:
    """The example indices of every batch of one epoch, shuffled by a generator seeded by (seed, epoch), or in
    their given order. With `lengths` and `length_windows`, length-grouped as Hugging Face's LengthGroupedSampler
    does: each window of that many batches of the shuffled order is sorted by length before it is cut into
    batches, and the epoch's batches are then shuffled, so a batch pads to a length close to its own rows'."""
    if shuffle:
        generator = torch.Generator().manual_seed(seed_from(seed, "order", epoch))
        order = torch.randperm(num_examples, generator=generator).tolist()
    else:
        order = list(range(num_examples))
    if not (shuffle and lengths is not None and length_windows > 0):
        return [order[start:start + batch_size] for start in range(0, num_examples, batch_size)]
    window = batch_size * length_windows
    grouped = [index for start in range(0, num_examples, window)
               for index in sorted(order[start:start + window], key=lambda i: -lengths[i])]
    batches = [grouped[start:start + batch_size] for start in range(0, num_examples, batch_size)]
    generator = torch.Generator().manual_seed(seed_from(seed, "batches", epoch))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


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
          trunk: TrunkStore | None = None, branch_sizes: Sequence[int] = (),
          batches: Callable[[int], list[list[int]]] | None = None,
          ) -> TrainResult:
    """Train `model` in place on the rows of `features` (from `model.format.featurize`); see TrainConfig for the
    knobs and the module docstring for determinism. `model` is a TaskModel or anything with its `encoder` and
    `batch_loss` (a mixture's model: trainables/mixtures.py).

    Worker `rank` of `world_size` takes every world_size-th micro-batch of one global order. `on_step(global_step,
    loss, lr)` follows every optimizer step, global_step = step_offset + steps done in this phase;
    `on_phase_start(step_offset, step_offset + total_steps)` comes first (where the phase starts and ends).
    `on_checkpoint(training_state(...))` follows every cfg.checkpoint_every steps and the last step.

    Shared ladders (schedule "wsd", shuffle off, one epoch): without a `resume_state`, the run starts from
    `trunk.latest(its decay start)` when there is one, and rank 0 hands `trunk.store` its state at the decay start of
    every size in `branch_sizes` (examples: the first n examples of these features) that it passes before its own.

    `batches(epoch)` gives the row indices of every batch of an epoch (default: `batch_order` over the rows; a
    mixture keeps each batch within one task: trainables/mixtures.py). It must depend on the epoch only.
    """
    if not len(features):
        raise UserError("no training examples: a size-0 data cell skips the phase instead of training on nothing")
    device = torch.device(device)
    lengths = [row_length(row) for row in features.rows] if cfg.length_windows and not batches else None
    epoch_batches = functools.lru_cache(maxsize=2)(batches or functools.partial(
        batch_order, len(features), cfg.batch_size, cfg.seed, shuffle=cfg.shuffle, lengths=lengths,
        length_windows=cfg.length_windows))
    batches_per_epoch = len(epoch_batches(0)) if batches else math.ceil(len(features) / cfg.batch_size)
    total_steps = steps_for_batches(batches_per_epoch, cfg, world_size)
    wsd = cfg.schedule == "wsd"
    branch_at = decay_start(total_steps, cfg.decay_fraction) if wsd else total_steps
    if wsd and trunk is not None and resume_state is None:
        resume_state = trunk.latest(branch_at)
        agreed = rank0_value(resume_state and resume_state["step"])
        if (resume_state and resume_state["step"]) != agreed:   # another worker sees other snapshots: rank 0's
            resume_state = trunk.latest(agreed) if agreed else None
            if agreed and (resume_state is None or resume_state["step"] != agreed):
                raise UserError(f"worker {rank} cannot read the trunk snapshot at step {agreed} that rank 0 found")
    branch_rows = {bisect.bisect_left(features.example_index, size) for size in branch_sizes} if wsd else set()
    snapshot_steps = {decay_start(optimizer_steps(rows, cfg, world_size), cfg.decay_fraction)
                      for rows in branch_rows if 0 < rows < len(features)} if trunk is not None else set()

    if on_phase_start is not None:
        on_phase_start(step_offset, step_offset + total_steps)
    model.to(device)
    if device.type == "cpu":   # same rates and places, a quarter of the mask cost (trainables/dropout.py)
        use_cheap_dropout(model)
    if resume_state is not None:
        # A wsd run agrees with any longer one (same config) up to its own decay start: a trunk snapshot from there.
        trunk_state = wsd and resume_state["step"] <= branch_at
        if resume_state["total_steps"] != total_steps and not trunk_state:
            raise UserError(f"the checkpoint belongs to a run of {resume_state['total_steps']} steps, "
                            f"this config makes {total_steps}: resume with the config that wrote it")
        model.load_state_dict({**model.state_dict(), **resume_state["model"]})   # frozen ones may be left out
    model.encoder.get_input_embeddings().weight.requires_grad_(not cfg.freeze_word_embeddings)
    if getattr(model.encoder, "pooler", None) is not None:  # unused by mean pooling; DDP rejects unused params
        model.encoder.pooler.requires_grad_(False)
    net = wrap_model(model) if wrap_model is not None else model  # after freezing: DDP only syncs trainable params

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([  # no decay on vectors: biases and LayerNorm weights (as in nanoGPT)
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ], lr=cfg.lr)
    if wsd:
        scheduler = get_wsd_schedule(optimizer, cfg.warmup_steps, total_steps, cfg.decay_fraction)
    else:
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    start_step, losses = 0, []
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        start_step, losses = resume_state["step"], list(resume_state["losses"])

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
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            if isinstance(net, DistributedDataParallel):  # all-reduce gradients only on the last micro-step
                net.require_backward_grad_sync = micro_step == cfg.grad_accum_steps - 1
            with mixed_precision:
                loss = model.batch_loss(net, batch) / cfg.grad_accum_steps
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
        if rank == 0 and steps_done in snapshot_steps and steps_done <= branch_at:
            trunk.store(training_state(model, optimizer, scheduler, steps_done, total_steps, step_offset, losses))
    return TrainResult(steps=total_steps, global_step=step_offset + total_steps, losses=losses, resumed_at=start_step)


def rank0_value(value):
    """Rank 0's value on every worker (itself when not distributed), so DDP workers take the same branches: the same
    trunk snapshot here, the same phase-2 cache decision in trainables/three_phase.py."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return value
