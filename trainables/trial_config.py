"""The trial config: every key one trial reads, with its default and meaning, in one dataclass.

Ray Tune hands a trial a plain dict (the preset's constants plus what the search chose); the trial turns it into a
TrialConfig once, at the top (`TrialConfig.from_dict`). Everything else derives from the fields here: what
determines the phase-2 encoder (the phase-2 cache key: fields marked PHASE2, and those marked SHARED_LADDER where the
ladder is shared), what MLflow records as run params (fields marked PARAM), and each phase's training config
(`train_config`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from trainables.errors import UserError
from trainables.training import TrainConfig

PHASE2 = {"phase2": True}                  # changes the phase-2 encoder: part of the phase-2 cache key
PARAM = {"param": True}                    # recorded as an MLflow run param
BOTH = {**PHASE2, **PARAM}
SHARED_LADDER = {"shared_ladder": True}    # part of the phase-2 cache key only where the ladder is shared, so the
                                           # keys of `separate` runs are those from before the knob existed
LADDERS = ("shared", "separate")


@dataclass(frozen=True)
class TrialConfig:
    model: str = field(default="smoke", metadata=BOTH)          # load_encoder name: short name, hub id or path
    cell: str = field(default="none", metadata=BOTH)            # DataCell.cell_id: source:task:quality:size | none
    seed: int = field(default=0, metadata=BOTH)                 # data subset, data order, dropout, head init
    targets: tuple[str, ...] = ("genre", "retrieval")           # target tasks, in the order they are trained
    eval_languages: tuple[str, ...] | None = None               # None: every language of each target
    lr_intermediate: float = field(default=5e-5, metadata=BOTH)
    lr_target: float = field(default=5e-5, metadata=PARAM)
    epochs_intermediate: float = field(default=1, metadata=BOTH)
    epochs_target: float = field(default=1, metadata=PARAM)
    batch_size: int = field(default=16, metadata=BOTH)          # examples per micro-batch per worker
    grad_accum_steps: int = field(default=1, metadata=PHASE2)
    warmup_ratio: float = field(default=0.1, metadata=BOTH)
    weight_decay: float = field(default=0.01, metadata=PHASE2)
    max_grad_norm: float = field(default=1.0, metadata=PHASE2)
    freeze_word_embeddings: bool = field(default=False, metadata=BOTH)
    precision: str = field(default="auto", metadata=BOTH)       # auto (bf16 where native) | bf16 | fp32
    max_length: int = field(default=128, metadata=BOTH)         # cap on each task's own max_length
    target_train_size: int = field(default=1000, metadata=PARAM)  # English phase-3 examples per trained target
    length_windows: int = field(default=0, metadata=PARAM)     # phase 3: length-grouped batches in windows of
                                                                 # this many batches (training.batch_order); 0: off
    max_eval_examples: int = 200                                 # test examples per language (retrieval: candidates)
    max_validation_examples: int | None = None                   # validation examples per language; None: as test
    retrieval_layer: int = -1                                    # hidden layer pooled for retrieval (-1 = last)
    checkpoint_every: int = 50                                   # optimizer steps between checkpoints in a phase
    report_every: int = 5                                        # optimizer steps between loss reports
    num_workers: int = field(default=1, metadata=PHASE2)        # Train workers (DDP when more than one)
    use_gpu: bool | None = None                                  # None: use GPUs when the cluster has any
    torch_threads: int | None = None                             # CPU threads per worker; None: Ray's default
    max_failures: int = 2                                        # worker restarts Ray Train allows per trial
    storage_path: str | None = None                              # trainer runs and checkpoints (sweep's storage)
    cache_dir: str | None = None                                 # phase-2 cache; None: <storage_path>/phase2_cache
    fail_at_step: int | None = None                              # fault injection: rank 0 dies once at this step
    pause_at_step: int | None = None                             # fault injection: rank 0 waits once at this step
    # Shared ladders (trainables/ladder.py): phase 2 as warmup-stable-decay over one epoch in the subset's order, a
    # size starting from the trunk snapshot a larger size left at its decay start. `separate`: each size from
    # scratch (linear schedule, shuffled). A shared ladder needs epochs_intermediate == 1, else it runs separate.
    ladder: str = field(default="separate", metadata={**SHARED_LADDER, **PARAM})   # shared | separate
    ladder_cells: tuple[str, ...] = ()     # the sweep's cell ids: those of this cell's source/task/tier are its ladder
    warmup_steps: int = field(default=10, metadata=SHARED_LADDER)      # wsd warm-up, the same for every size
    decay_fraction: float = field(default=0.2, metadata=SHARED_LADDER)  # wsd: share of the steps spent decaying

    def __post_init__(self):
        if self.ladder not in LADDERS:
            raise UserError(f"ladder must be one of {', '.join(LADDERS)}, not {self.ladder!r}")
        if not 0 < self.decay_fraction <= 1:
            raise UserError(f"decay_fraction must be in (0, 1], not {self.decay_fraction}")

    @property
    def shared_ladder(self) -> bool:
        """Whether phase 2 runs as a shared ladder: asked for, over exactly one epoch, and not of a mixture."""
        return self.ladder == "shared" and self.not_shared_because is None

    @property
    def not_shared_because(self) -> str | None:
        """Why a shared ladder cannot run this cell's phase 2 (None where it can)."""
        if self.epochs_intermediate != 1:
            return f"needs one epoch of phase 2, not {self.epochs_intermediate}"
        from trainables.tasks import is_mixture   # the registry, only once a cell names a task
        if self.cell != "none" and is_mixture(self.cell.split(":")[1]):
            return ("needs every size's batches to be a prefix of the largest size's, which a mixture's interleaving "
                    "of its tasks does not give")
        return None

    @property
    def ladder_sizes(self) -> tuple[int, ...]:
        """The sizes of this cell's ladder (the cells of ladder_cells with its source, task and tier), ascending."""
        prefix = self.cell.rsplit(":", 1)[0] + ":"
        return tuple(sorted({int(cell.rsplit(":", 1)[1]) for cell in self.ladder_cells if cell.startswith(prefix)}))

    @classmethod
    def from_dict(cls, config: dict) -> TrialConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise UserError(f"unknown trial config keys {unknown}; known: {', '.join(sorted(known))}")
        values = dict(config)
        for name in ("targets", "eval_languages", "ladder_cells"):   # Tune and JSON hand lists
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def marked(self, mark: dict) -> dict:
        """The fields carrying `mark` (PHASE2 or PARAM), by name."""
        key = next(iter(mark))
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get(key)}

    def train_config(self, phase: str, task) -> TrainConfig:
        """The training loop's config for phase "intermediate" or "target" on `task`."""
        shared = dict(schedule="wsd", shuffle=False, warmup_steps=self.warmup_steps,
                      decay_fraction=self.decay_fraction) if phase == "intermediate" and self.shared_ladder else {}
        return TrainConfig(**shared,
            lr=getattr(self, f"lr_{phase}"), epochs=getattr(self, f"epochs_{phase}"), batch_size=self.batch_size,
            grad_accum_steps=self.grad_accum_steps, warmup_ratio=self.warmup_ratio, weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm, max_length=min(task.max_length, self.max_length),
            freeze_word_embeddings=self.freeze_word_embeddings, seed=self.seed,
            checkpoint_every=self.checkpoint_every, precision=self.precision,
            length_windows=self.length_windows if phase == "target" else 0)


def trial_config_defaults() -> dict:
    """Every key a trial reads, with its default, as the dict Tune passes around."""
    return TrialConfig().as_dict()
