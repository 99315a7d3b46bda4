"""The generic training loop, evaluation and retrieval scoring that the three phases compose.

Plain PyTorch: no Ray here. The Ray Train wrapper calls `train` inside each worker with its `rank`, `world_size`
and a `wrap_model` (e.g. `ray.train.torch.prepare_model`), and saves what `on_checkpoint` hands it.

Determinism: nothing here reads the global RNG unseeded. The data order of epoch e comes from a generator seeded by
(cfg.seed, e); the global RNG (dropout) is reseeded from (cfg.seed, step, rank) at the start of every optimizer
step; head initialisation is seeded. So a config gives the same weights and metrics on CPU every time, and a run
resumed from any checkpoint continues exactly as if it had never stopped.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import get_linear_schedule_with_warmup

from trainables.dropout import use_cheap_dropout
from trainables.errors import UserError
from trainables.models import mean_pool
from trainables.precision import autocast, resolve_precision
from trainables.types import CHOICE, PAIR, SINGLE


def seed_from(*parts) -> int:
    """One stable 63-bit seed from several parts (ints, strings); the same on every run and machine."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class TaskModel(nn.Module):
    """A plain HF encoder plus a head for one format; `forward(**encode_batch(...) minus labels) -> logits`.

    PAIR/SINGLE: mean-pooled encoder output -> dropout -> Linear(num_labels).
    CHOICE: every (context, option) pair encoded and mean-pooled -> dropout -> Linear(1) -> logits over the options.
    """

    def __init__(self, encoder: nn.Module, fmt: str, num_labels: int, *, seed: int = 0, dropout: float = 0.1):
        super().__init__()
        if fmt not in (PAIR, SINGLE, CHOICE):
            raise UserError(f"format {fmt!r} has no trainable head (retrieval is scored from pooled hidden states)")
        self.encoder = encoder
        self.fmt = fmt
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, 1 if fmt == CHOICE else num_labels)
        std = getattr(encoder.config, "initializer_range", 0.02)
        nn.init.normal_(self.head.weight, std=std, generator=torch.Generator().manual_seed(seed_from(seed, "head")))
        nn.init.zeros_(self.head.bias)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        if self.fmt == CHOICE:  # inputs are (batch, options, length): encode the options as one flat batch
            num_choices = inputs["input_ids"].shape[1]
            inputs = {name: tensor.flatten(0, 1) for name, tensor in inputs.items()}
        hidden = self.encoder(**inputs).last_hidden_state
        # Pool in float32: under bf16 autocast a bf16 sum over the tokens would lose precision.
        logits = self.head(self.dropout(mean_pool(hidden.float(), inputs["attention_mask"])))
        return logits.view(-1, num_choices) if self.fmt == CHOICE else logits


def encode_batch(tokenizer, examples: list, fmt: str, max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise a list of examples of one format into padded tensors plus `labels`.

    PAIR: text pairs, truncated longest-first to max_length. SINGLE: one text. CHOICE: (context, option) pairs,
    shaped (batch, options, length); every example must have the same number of options.
    """
    encode = functools.partial(tokenizer, truncation="longest_first", max_length=max_length, padding=True,
                               return_tensors="pt")
    if fmt == PAIR:
        batch = encode([ex.text_a for ex in examples], [ex.text_b for ex in examples])
    elif fmt == SINGLE:
        batch = encode([ex.text for ex in examples])
    elif fmt == CHOICE:
        num_choices = len(examples[0].choices)
        if any(len(ex.choices) != num_choices for ex in examples):
            raise UserError("every multiple-choice example of a task must have the same number of options")
        contexts = [ex.context for ex in examples for _ in ex.choices]
        batch = encode(contexts, [option for ex in examples for option in ex.choices])
        batch = {name: tensor.view(len(examples), num_choices, -1) for name, tensor in batch.items()}
    else:
        raise UserError(f"format {fmt!r} cannot be encoded for classification (retrieval uses `embed`)")
    return {**batch, "labels": torch.tensor([ex.label for ex in examples])}


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


def train(model: TaskModel, tokenizer, examples: list, fmt: str, cfg: TrainConfig, *, device,
          step_offset: int = 0, resume_state: dict | None = None,
          on_step: Callable[[int, float, float], None] | None = None,
          on_checkpoint: Callable[[dict], None] | None = None,
          rank: int = 0, world_size: int = 1, wrap_model: Callable[[nn.Module], nn.Module] | None = None,
          ) -> TrainResult:
    """Train `model` in place on `examples`; see TrainConfig for the knobs and the module docstring for determinism.

    Worker `rank` of `world_size` takes every world_size-th micro-batch of one global order. `on_step(global_step,
    loss, lr)` follows every optimizer step, global_step = step_offset + steps done in this phase.
    `on_checkpoint(training_state(...))` follows every cfg.checkpoint_every steps and the last step.
    """
    if not examples:
        raise UserError("no training examples: a size-0 data cell skips the phase instead of training on nothing")
    if fmt != model.fmt:
        raise UserError(f"examples of format {fmt!r} given to a {model.fmt!r} model")
    device = torch.device(device)
    batches_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    micro_batches_per_step = cfg.grad_accum_steps * world_size
    total_steps = max(1, math.ceil(cfg.epochs * batches_per_epoch / micro_batches_per_step))

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

    epoch_batches = functools.lru_cache(maxsize=2)(functools.partial(batch_order, len(examples), cfg.batch_size,
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
            batch = encode_batch(tokenizer, [examples[i] for i in epoch_batches(epoch)[position]], fmt,
                                 cfg.max_length)
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            labels = batch.pop("labels")
            if isinstance(net, DistributedDataParallel):  # all-reduce gradients only on the last micro-step
                net.require_backward_grad_sync = micro_step == cfg.grad_accum_steps - 1
            with mixed_precision:
                loss = F.cross_entropy(net(**batch).float(), labels) / cfg.grad_accum_steps
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


def by_length(examples: list) -> list[int]:
    """Indices of `examples` ordered by the characters of their texts: batches of similar length pad less."""
    def characters(example) -> int:
        texts = [value for value in vars(example).values() if isinstance(value, str)]
        texts += [text for value in vars(example).values() if isinstance(value, tuple) for text in value
                  if isinstance(text, str)]
        return sum(map(len, texts))
    return sorted(range(len(examples)), key=lambda i: characters(examples[i]))


@torch.no_grad()
def predict(model: TaskModel, tokenizer, examples: list, fmt: str, *, device, batch_size: int = 64,
            max_length: int = 128, precision: str = "auto") -> torch.Tensor:
    """The argmax class of every example (in the order of `examples`), batched by length, in `precision`."""
    if not examples:
        raise UserError("no evaluation examples")
    device = torch.device(device)
    model.to(device).eval()
    mixed_precision = autocast(device, resolve_precision(precision, device))
    order = by_length(examples)
    predictions = torch.empty(len(examples), dtype=torch.long)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        batch = encode_batch(tokenizer, [examples[i] for i in indices], fmt, max_length)
        batch.pop("labels")
        with mixed_precision:
            logits = model(**{name: tensor.to(device) for name, tensor in batch.items()})
        predictions[indices] = logits.float().argmax(-1).cpu()
    return predictions


def accuracy(predictions: torch.Tensor, examples: list) -> float:
    """Accuracy in points (0-100)."""
    labels = torch.tensor([ex.label for ex in examples])
    return 100.0 * (predictions == labels).sum().item() / len(examples)


def evaluate(model: TaskModel, tokenizer, examples: list, fmt: str, *, device, batch_size: int = 64,
             max_length: int = 128, precision: str = "auto") -> float:
    """Accuracy in points (0-100) of the argmax of the logits."""
    return accuracy(predict(model, tokenizer, examples, fmt, device=device, batch_size=batch_size,
                            max_length=max_length, precision=precision), examples)


@torch.no_grad()
def embed(encoder: nn.Module, tokenizer, texts: list[str], *, device, layer: int = -1, batch_size: int = 64,
          max_length: int = 128, precision: str = "auto") -> torch.Tensor:
    """Mean-pooled, L2-normalised hidden states of `layer`, as a float32 (len(texts), hidden) CPU tensor.

    layer indexes `output_hidden_states`: 0 = the embeddings, i = after transformer layer i, -1 = the last layer.
    XTREME/X-STILTs take a middle layer for retrieval (e.g. 8 of 24 for XLM-R large). Texts are batched by length;
    pooling and normalisation run in float32 whatever the precision.
    """
    device = torch.device(device)
    encoder.to(device).eval()
    mixed_precision = autocast(device, resolve_precision(precision, device))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    pooled = torch.empty(len(texts), encoder.config.hidden_size)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in indices], truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt").to(device)
        with mixed_precision:
            hidden = encoder(**batch, output_hidden_states=True).hidden_states[layer]
        pooled[indices] = F.normalize(mean_pool(hidden.float(), batch["attention_mask"]), dim=-1).cpu()
    return pooled


def retrieval_accuracy(encoder: nn.Module, tokenizer, examples: list, *, device, layer: int = -1,
                       batch_size: int = 64, max_length: int = 128, precision: str = "auto",
                       query_embeddings: torch.Tensor | None = None,
                       target_embeddings: torch.Tensor | None = None) -> dict[str, float]:
    """Top-1 accuracy in points of finding each example's partner by cosine similarity, both ways.

    en_to_x: every query against all targets of `examples`; x_to_en: every target against all queries.
    `query_embeddings` / `target_embeddings` (from `embed`) pass texts embedded already (e.g. all languages in one
    pass).
    """
    if not examples:
        raise UserError("no retrieval examples")
    kwargs = dict(device=device, layer=layer, batch_size=batch_size, max_length=max_length, precision=precision)
    queries = embed(encoder, tokenizer, [ex.query for ex in examples], **kwargs) \
        if query_embeddings is None else query_embeddings
    targets = embed(encoder, tokenizer, [ex.target for ex in examples], **kwargs) \
        if target_embeddings is None else target_embeddings
    similarity = queries @ targets.T
    gold = torch.arange(len(examples))
    return {"en_to_x": 100.0 * (similarity.argmax(1) == gold).float().mean().item(),
            "x_to_en": 100.0 * (similarity.argmax(0) == gold).float().mean().item()}
