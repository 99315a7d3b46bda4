"""Dropout at a quarter of PyTorch's CPU cost, same rates and same places, for training on CPUs.

PyTorch's CPU dropout draws one Mersenne-Twister number per element (`bernoulli_`), serially: on 2 cores that was
a third of a bf16 training step of multilingual-e5-small. Here each element takes 16 random bits instead of 32,
four to one 64-bit draw of the same generator, so masks cost about a quarter (benchmarks/trainable_overhead.py).
An element is kept when its 16 bits, read as a signed number, are at least -32768 + round(p * 65536): the keep
probability is exact to 1/65536 (0.899994 for p = 0.1) and kept values are scaled by 1/(1-p) as usual.
The masks come from the global CPU generator, so `torch.manual_seed` before a step fixes them, as with
`nn.Dropout`; they are other masks than PyTorch's for the same seed. On other devices PyTorch's fused dropout is
used unchanged.

    use_cheap_dropout(model)   # every nn.Dropout and the encoder's attention-probability dropout
"""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

ATTENTION = "eager_cheap_dropout"   # the attention implementation name registered below
_INT64 = torch.iinfo(torch.int64)


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool mask of `shape`, each element True with probability 1 - p (to 1/65536)."""
    count = math.prod(shape)
    words = torch.randint(_INT64.min, _INT64.max, (math.ceil(count / 4),), dtype=torch.int64)
    bits = words.view(torch.int16)[:count].view(shape)
    return bits >= -32768 + round(p * 65536)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        mask = keep_mask(x.shape, p)
        ctx.save_for_backward(mask)
        ctx.scale = 1.0 / (1.0 - p)
        return (x * mask).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return (grad * mask).mul_(ctx.scale), None


def cheap_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training)
    return _MaskedScale.apply(x, p)


class CheapDropout(nn.Dropout):
    """nn.Dropout with the cheaper CPU masks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cheap_dropout(x, self.p, self.training)


def eager_attention(module: nn.Module, query, key, value, attention_mask, scaling: float | None = None,
                    dropout: float = 0.0, **kwargs):
    """Scaled dot-product attention with an additive mask, written out (as transformers' eager attention), with the
    cheap dropout on the attention probabilities. Eager matmuls run on AMX under bf16 autocast, where the CPU's
    fused attention kernel does not (its backward took 45% of a bf16 step)."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    weights = cheap_dropout(weights, dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AttentionInterface.register(ATTENTION, eager_attention)
AttentionMaskInterface.register(ATTENTION, eager_mask)   # the additive float mask eager attention expects


def use_cheap_dropout(model: nn.Module) -> nn.Module:
    """Switch `model` (a transformers encoder, or a module holding one) to the cheap dropout everywhere, in place."""
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = CheapDropout
        config = getattr(module, "config", None)
        if config is not None and hasattr(module, "set_attn_implementation") and \
                config._attn_implementation != ATTENTION:
            module.set_attn_implementation(ATTENTION)
    return model
