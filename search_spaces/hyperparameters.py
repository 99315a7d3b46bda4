"""Hyperparameter spaces as plain data.

A value is either fixed (a number, string or bool) or a search spec:
  ("loguniform", low, high)   searched on a log scale (learning rates)
  ("choice", [a, b, ...])     a categorical (epochs, batch size, warm-up)
The sweep turns specs into Optuna distributions; training code only ever sees concrete values.
"""
from __future__ import annotations

SEARCHED_KINDS = ("loguniform", "choice")

# Defaults for a small encoder on a laptop CPU. Learning-rate ranges follow Phang et al. 2020 (1e-5..1e-4 around
# the 2e-5..3e-5 commonly used for BERT-style fine-tuning), widened upward because small models like larger steps.
LAPTOP = {
    "lr_intermediate": ("loguniform", 1e-5, 2e-4),
    # Phase 3 is short (1,000 English examples): at 2e-4 for 3 epochs e5-small reaches 62 points on English genre
    # validation and 31-33 zero-shot (fr, ar, ko); one epoch at 4.5e-5 stayed at chance.
    "lr_target": ("loguniform", 5e-5, 5e-4),
    "epochs_intermediate": 1,
    "epochs_target": 3,
    "batch_size": 32,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "grad_accum_steps": 1,
    "freeze_word_embeddings": True,   # 96M of e5-small's 118M parameters; freezing them makes CPU steps ~3x cheaper
    # Shared ladders (trainables/ladder.py): warm-up steps independent of the size, decay over the last 20%.
    "warmup_steps": 10,
    "decay_fraction": 0.2,
    # Phase 3 in length-grouped batches (windows of 8 batches, as HF's LengthGroupedSampler): 0.91 of the tokens real
    # instead of 0.61, phase 3 1.33x faster on e5-small (benchmarks/length_grouping.py).
    "length_windows": 8,
}

# The tiny random model: large steps, so a few dozen examples move it.
SMOKE = {**LAPTOP,
         "lr_intermediate": ("loguniform", 1e-4, 3e-3),
         "lr_target": ("loguniform", 1e-4, 3e-3),
         "epochs_target": 1,
         "batch_size": 16,
         "warmup_steps": 1,               # the smoke ladder's smallest size runs 2 steps
         "length_windows": 0,
         "freeze_word_embeddings": False}

# xlm-roberta-large on GPUs, as in the paper: lr around 1e-5, a few epochs, batch 32 (4 x 8 accumulated on big models).
PAPER = {**LAPTOP,
         "lr_intermediate": ("loguniform", 5e-6, 5e-5),
         "lr_target": ("loguniform", 5e-6, 5e-5),
         "epochs_intermediate": ("choice", [1, 2, 3]),
         "epochs_target": ("choice", [2, 3]),
         "batch_size": ("choice", [16, 32]),
         "warmup_ratio": ("choice", [0.0, 0.06, 0.1]),
         "length_windows": 0,
         "freeze_word_embeddings": False}


def is_searched(value) -> bool:
    return isinstance(value, tuple) and len(value) >= 2 and value[0] in SEARCHED_KINDS


def default_point(space: dict) -> dict:
    """A concrete value for every searched knob: the geometric middle of a log range, the first choice."""
    point = {}
    for name, value in space.items():
        if not is_searched(value):
            continue
        if value[0] == "loguniform":
            point[name] = float((value[1] * value[2]) ** 0.5)
        else:
            point[name] = value[1][0]
    return point
