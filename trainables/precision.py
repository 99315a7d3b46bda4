"""Which arithmetic a run uses: bf16 autocast where the hardware does bf16 matrix work natively, else fp32.

    precision = resolve_precision("auto", device)     # "bf16" or "fp32"
    with autocast(device, precision): logits = model(**batch)

Under bf16 autocast only the matrix products (and what autocast lists with them) run in bf16; master weights,
optimizer state, pooling, losses and retrieval similarities stay fp32 (the callers cast to float before them).
On a CPU, bf16 pays only with native bf16 instructions (AMX or AVX512-BF16): without them PyTorch emulates it and
a step gets slower, so "auto" picks fp32 there. Measured on a 2-core AMX CPU (benchmarks/trainable_overhead.py):
multilingual-e5-small trains about 1.9x faster and evaluates 2.8x faster in bf16.
"""
from __future__ import annotations

import contextlib

import torch

from trainables.errors import UserError

PRECISIONS = ("auto", "bf16", "fp32")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags of this machine (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(requested: str, device, *, flags: set[str] | None = None) -> str:
    """"bf16" or "fp32" for `requested` ("auto", "bf16" or "fp32") on `device`; `flags` stand in for this CPU's."""
    if requested not in PRECISIONS:
        raise UserError(f"precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16(flags) else "fp32"


def autocast(device, precision: str):
    """The autocast context for a resolved precision (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
