"""The yardstick for the project's training loop: the smallest loop with the same model, shape and recipe.

Random tokens (no tokenizer, no data order), the encoder with its word embeddings frozen, a mean-pooled linear head,
dropout on (model.train()), AdamW: what one training step costs with nothing around it. `variant` picks the kernels,
so one run can show what each choice buys:

    fp32 | bf16              precision (torch.autocast on the CPU or GPU)
    sdpa | eager             attention implementation (PyTorch's fused kernel, or the matmuls written out)
    torch-dropout | cheap    PyTorch's dropout or trainables/dropout.py's cheaper masks (cheap implies eager)
    no-dropout               every dropout off (not the recipe: shows what dropout costs)
    compile                  torch.compile of the encoder (the first step's compile time is reported apart)
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainables.dropout import use_cheap_dropout
from trainables.models import load_encoder, mean_pool
from trainables.precision import autocast


@dataclass(frozen=True)
class Variant:
    precision: str = "bf16"
    attention: str = "eager"
    dropout: str = "cheap"           # cheap | torch | off
    compile: bool = False

    @property
    def name(self) -> str:
        extra = " compile" if self.compile else ""
        return f"{self.precision} {self.attention} dropout={self.dropout}{extra}"


def minimal_loop(model_name: str, variant: Variant, *, steps: int, batch_size: int, length: int,
                 device: str = "cpu", warmup: int = 2) -> dict:
    """examples/s over `steps` steps after `warmup` ones, plus the first step's time (compile included)."""
    _, encoder = load_encoder(model_name)
    if variant.dropout == "cheap":
        use_cheap_dropout(encoder)
    else:
        encoder.set_attn_implementation(variant.attention)
    if variant.dropout == "off":
        for module in encoder.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        encoder.config.attention_probs_dropout_prob = 0.0
    encoder.get_input_embeddings().weight.requires_grad_(False)
    head = torch.nn.Linear(encoder.config.hidden_size, 2)
    encoder.to(device).train()
    head.to(device)
    forward = torch.compile(encoder) if variant.compile else encoder
    params = [p for p in [*encoder.parameters(), *head.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, encoder.config.vocab_size, (batch_size, length), generator=generator).to(device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (batch_size,), generator=generator).to(device)
    mixed_precision = autocast(device, variant.precision)
    head_dropout = 0.0 if variant.dropout == "off" else 0.1

    def step() -> None:
        with mixed_precision:
            hidden = forward(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = head(F.dropout(mean_pool(hidden.float(), mask), head_dropout, True))
        F.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def synchronize() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    start = time.perf_counter()
    step()
    synchronize()
    first_step_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    seconds = time.perf_counter() - start
    return {"variant": variant.name, "steps": steps, "examples_per_s": steps * batch_size / seconds,
            "seconds": seconds, "first_step_s": first_step_s, "load_1m": os.getloadavg()[0]}


# The options item 2 of the speed issue asked to measure, in the order they build on each other.
OPTIONS = (Variant("fp32", "sdpa", "torch"), Variant("bf16", "sdpa", "torch"), Variant("bf16", "eager", "torch"),
           Variant("bf16", "eager", "cheap"), Variant("bf16", "eager", "torch", compile=True),
           Variant("bf16", "eager", "off"))
