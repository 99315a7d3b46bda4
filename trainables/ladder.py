"""Shared size ladders: one phase-2 run per ladder, the smaller sizes branching off it (exact prefix sharing).

Sizes nest (size n is the first n examples of one seeded permutation: trainables/subsets.py). With a
warmup-stable-decay schedule (`training.get_wsd_schedule`: fixed warm-up steps, then a constant lr, decay over the
last d of the steps) over one epoch in that order, the first k steps of size n and of any larger size see the same
batches at the same learning rates, and dropout is keyed by step. So a run of size N passes, at step
b_m = floor((1 - d) * S_m), exactly the state that size m has when its decay starts: it stores a trunk snapshot
there (model, optimizer, scheduler, losses), and size m later runs only its decay from it. The result is
bit-identical to training size m on its own (tests/test_ladder.py).

Snapshots live in the phase-2 cache folder, under trunks/<trunk_key>/step-<step>: the key holds everything that
determines phase 2 except the size. Each is written atomically with a sha256 manifest; a corrupt one is absent
(the run recomputes from an earlier one, or from scratch). A trial drops the snapshot at its own decay start once
its phase-2 encoder is in the cache, so the disk holds only snapshots still to be used.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from trainables.models import file_sha256
from trainables.phase2_cache import PHASE2_CODE_VERSION
from trainables.training import decay_start
from trainables.trial_config import PHASE2, SHARED_LADDER, TrialConfig

STATE = "trunk.pt"
MANIFEST = "manifest.json"


def trunk_key(trial: TrialConfig) -> str:
    """A hash of what determines a shared ladder's phase 2 except the size: the phase-2 cache key's fields with the
    cell's size left out."""
    fields = {**trial.marked(PHASE2), **trial.marked(SHARED_LADDER)}
    fields["cell"] = trial.cell.rsplit(":", 1)[0]
    fields.update(phase2_code_version=PHASE2_CODE_VERSION, trunk=True)
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class TrunkSnapshots:
    """The trunk snapshots of one ladder (one trunk_key), by step; `training.train(trunk=...)` reads and writes it.

    Frozen parameters (the word embeddings when they are frozen) are left out: a run restores them from the base
    model it starts from."""

    def __init__(self, folder: str | os.PathLike, leave_out: tuple[str, ...] = ()):
        self.folder = Path(folder)
        self.leave_out = leave_out          # model state keys ending so are not stored

    @classmethod
    def for_trial(cls, cache_root: str | os.PathLike, trial: TrialConfig) -> TrunkSnapshots:
        frozen = ("word_embeddings.weight",) if trial.freeze_word_embeddings else ()
        return cls(Path(cache_root) / "trunks" / trunk_key(trial), leave_out=frozen)

    def entry(self, step: int) -> Path:
        return self.folder / f"step-{step:08d}"

    def steps(self) -> list[int]:
        """The steps that have an entry (valid or not), ascending."""
        if not self.folder.is_dir():
            return []
        return sorted(int(p.name[5:]) for p in self.folder.iterdir() if p.name.startswith("step-"))

    def load(self, step: int) -> dict | None:
        """The training state stored at `step`, or None when it is absent, partial or corrupt."""
        folder = self.entry(step)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            if file_sha256(folder / STATE) != manifest["sha256"]:
                return None
            state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
            return state if state["step"] == step else None
        except (OSError, ValueError, KeyError, RuntimeError, EOFError):
            return None

    def latest(self, max_step: int) -> dict | None:
        """The valid snapshot with the largest step <= max_step (a run's own decay start), or None."""
        for step in reversed(self.steps()):
            if 0 < step <= max_step:
                state = self.load(step)
                if state is not None:
                    return state
        return None

    def store(self, state: dict) -> None:
        """Atomically write the snapshot of `state` (training.training_state); a valid one already there (a
        concurrent run of the same ladder got there first, with the same result) is kept, a corrupt one replaced."""
        step = state["step"]
        if self.load(step) is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".step-{step}.", dir=self.folder))
        try:
            model = {name: t.detach().to("cpu").clone() for name, t in state["model"].items()
                     if not (self.leave_out and name.endswith(self.leave_out))}
            torch.save({**state, "model": model}, tmp / STATE)
            (tmp / MANIFEST).write_text(json.dumps({"sha256": file_sha256(tmp / STATE), "step": step}))
            target = self.entry(step)
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def discard(self, step: int) -> None:
        """Remove the snapshot at `step` (a size whose decay starts there has its phase-2 cache entry now)."""
        shutil.rmtree(self.entry(step), ignore_errors=True)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file()) if self.folder.is_dir() else 0


def phase2_ladder_kwargs(trial: TrialConfig, size: int, cache_root: str | os.PathLike) -> dict:
    """What a trial's phase 2 passes to the training loop (`trunk`, `branch_sizes`) for its ladder; {} when the
    ladder is not shared."""
    if not trial.shared_ladder:
        return {}
    return {"trunk": TrunkSnapshots.for_trial(cache_root, trial),
            "branch_sizes": [m for m in trial.ladder_sizes if 0 < m < size]}


def discard_own_branch(trial: TrialConfig, cache_root: str | os.PathLike, total_steps: int) -> None:
    """After a shared-ladder trial stored its phase-2 encoder: drop the trunk snapshot at its own decay start. Only a
    size whose decay starts there needs it, and that size now hits the phase-2 cache; a size that lost it starts from
    an earlier snapshot (same result, more steps). Keeps the disk to the snapshots still to be used."""
    if trial.shared_ladder:
        TrunkSnapshots.for_trial(cache_root, trial).discard(decay_start(total_steps, trial.decay_fraction))


def example_passes(sizes, examples_per_step: int, *, shared: bool, decay_fraction: float = 0.2) -> int:
    """Phase-2 example passes (one epoch) of a ladder's sizes: each from scratch, or shared (the largest in full,
    run first; every other size from its branch step b = floor((1 - d) * S) on)."""
    sizes = sorted(size for size in sizes if size > 0)
    if not shared or not sizes:
        return sum(sizes)
    return sizes[-1] + sum(
        max(0, size - decay_start(math.ceil(size / examples_per_step), decay_fraction) * examples_per_step)
        for size in sizes[:-1])
