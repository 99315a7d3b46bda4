"""Phase-2 cache: the encoder after intermediate training, stored under a hash of everything that determines it.

Trials that differ only in phase 3 or in their targets (another target learning rate, a new target task) load the
intermediate encoder instead of training it again. Only the parameters phase 2 trained are stored (frozen word
embeddings come back from the base model), as safetensors plus a manifest with their sha256, written last. Writes go
to a temporary sibling folder renamed into place, so a crash never leaves a half-written entry; an entry whose
manifest is missing or whose hash does not match is treated as absent and recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from search_spaces.axes import DataCell
from trainables.mixtures import MIXTURE_CODE_VERSION, mixture_record
from trainables.models import file_sha256
from trainables.trial_config import PHASE2, SHARED_LADDER, TrialConfig

# Bump when phase-2 training changes in a way that changes its result (loop, loss, data order, head).
PHASE2_CODE_VERSION = 2   # 2: bf16 autocast on CPU, cheaper dropout masks


WEIGHTS = "encoder.safetensors"
MANIFEST = "manifest.json"


def phase2_key(trial: TrialConfig) -> str:
    """A hash of the trial-config fields marked PHASE2 (what determines the encoder; targets, lr_target and the
    like do not), those marked SHARED_LADDER where the ladder is shared, a mixture's components, their sizes and its
    sampling rule where the cell is a mixture's, and the code version."""
    fields = trial.marked(PHASE2)
    if trial.shared_ladder:
        fields.update(trial.marked(SHARED_LADDER))
    cell = DataCell.from_id(trial.cell)
    mixture = mixture_record(cell.task, cell.quality, cell.size) if cell.size else {}
    if mixture:
        fields["mixture"] = {**mixture, "mixture_code_version": MIXTURE_CODE_VERSION}
    fields["phase2_code_version"] = PHASE2_CODE_VERSION
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Phase2Cache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(the stored trained parameters, the description stored with them), or None when the entry is absent,
        partial or corrupt."""
        folder = self.entry(key)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            if file_sha256(folder / WEIGHTS) != manifest["sha256"]:
                return None
            return load_file(str(folder / WEIGHTS)), manifest["description"]
        except (OSError, ValueError, KeyError):
            return None

    def store(self, key: str, trained: dict[str, torch.Tensor], description: dict) -> None:
        """Atomically write an entry; an existing valid entry (another trial got there first) is kept."""
        if self.load(key) is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root))
        try:
            tensors = {name: t.detach().to("cpu").contiguous() for name, t in trained.items()}
            save_file(tensors, str(tmp / WEIGHTS))
            manifest = {"sha256": file_sha256(tmp / WEIGHTS), "description": description}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
            target = self.entry(key)
            if target.exists():          # a corrupt leftover: replace it
                shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def trained_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training can change (frozen ones are restored from the base model)."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}
