"""Presets: everything a sweep varies or fixes, by name. Change a sweep here, never in training code."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from search_spaces import hyperparameters as hp
from search_spaces.axes import DataCell, data_cells


@dataclass(frozen=True)
class Preset:
    name: str
    model: str                              # registry of trainables.models.load_encoder: a short name, hub id or path
    english_tasks: tuple[str, ...]          # one size ladder per task (or mixture), each in every English tier
    english_qualities: tuple[str, ...]
    english_sizes: tuple[int, ...]          # 0 is the baseline cell (no intermediate phase)
    multilingual_task: str
    multilingual_qualities: tuple[str, ...]
    multilingual_sizes: tuple[int, ...]
    targets: tuple[str, ...]                # target tasks, evaluated zero-shot in every language of eval_languages
    eval_languages: tuple[str, ...] | None  # None: every language of each target
    hyperparameters: dict = field(default_factory=dict)
    target_train_size: int = 2000           # English examples of each classification target (phase 3)
    max_eval_examples: int = 200            # test examples per language; retrieval: candidates per language
    max_validation_examples: int | None = None  # validation (the search objective) per language; None: as test
    max_length: int = 128                   # cap on every task's own max_length (shorter = faster on CPU)
    precision: str = "auto"                 # auto (bf16 where the device does it natively) | bf16 | fp32
    extra_search_trials: int = 4            # Optuna trials beyond one per data cell
    seeds: int = 1                          # seeds per cell in the replicate stage (1 = search stage only)
    max_concurrent: int = 2
    gpus_per_trial: float = 0               # 0: CPU; >0 asks Ray for GPUs (one Train worker per GPU)
    workers_per_trial: int = 1
    torch_threads: int | None = None        # CPU threads per Train worker; None: Ray's (one per reserved CPU)
    checkpoint_every: int = 50              # optimizer steps between checkpoints inside a phase
    retrieval_layer: int = -1               # hidden layer pooled for retrieval (-1 = last)
    seconds_per_trial_estimate: float = 60  # for --dry-run's cost estimate
    ladder: str = "shared"                  # shared: one phase-2 run per size ladder (trials with more than one
                                            # epoch of phase 2 fall back to separate); separate: each size alone

    def cells(self) -> list[DataCell]:
        return data_cells(self.english_tasks, self.english_qualities, self.english_sizes,
                          self.multilingual_task, self.multilingual_qualities, self.multilingual_sizes)

    def with_overrides(self, **changes) -> "Preset":
        return replace(self, **changes)

    def trial_constants(self) -> dict:
        """The part of every trial config that the search does not vary (see trainables/trial_config.py)."""
        constants = {name: value for name, value in self.hyperparameters.items() if not hp.is_searched(value)}
        constants.update(model=self.model, seed=0, targets=list(self.targets),
                         eval_languages=list(self.eval_languages) if self.eval_languages else None,
                         target_train_size=self.target_train_size, max_eval_examples=self.max_eval_examples,
                         max_validation_examples=self.max_validation_examples,
                         max_length=self.max_length, precision=self.precision,
                         checkpoint_every=self.checkpoint_every,
                         retrieval_layer=self.retrieval_layer, num_workers=self.workers_per_trial,
                         use_gpu=self.gpus_per_trial > 0, torch_threads=self.torch_threads,
                         ladder=self.ladder, ladder_cells=[cell.cell_id for cell in self.cells()])
        return constants


PRESETS = {
    # The tiny random model: the whole sweep runs in a couple of minutes on 2 cores (tests use it).
    "smoke": Preset(
        name="smoke", model="smoke",
        english_tasks=("en_paraphrase",), english_qualities=("random", "hard"), english_sizes=(0, 32, 96),
        multilingual_task="multi_paraphrase", multilingual_qualities=("random",), multilingual_sizes=(32,),
        targets=("genre", "retrieval"), eval_languages=("en", "fr", "de"),
        hyperparameters=hp.SMOKE, target_train_size=64, max_eval_examples=32, max_length=48,
        extra_search_trials=1, max_concurrent=2, checkpoint_every=4, seconds_per_trial_estimate=15),
    # Every task format in one tiny sweep (a few minutes): multiple choice (en_next_verse) and pairs
    # (multi_paraphrase) as intermediate tasks; single-text classification (genre), span QA (verse_qa), tagging
    # (verse_boundaries) and retrieval as targets. Longer inputs than smoke, so QA passages fit a few windows.
    "smoke-formats": Preset(
        name="smoke-formats", model="smoke",
        english_tasks=("en_next_verse",), english_qualities=("random",), english_sizes=(0, 64),
        multilingual_task="multi_paraphrase", multilingual_qualities=("random",), multilingual_sizes=(32,),
        targets=("genre", "verse_qa", "verse_boundaries", "retrieval"), eval_languages=("en", "fr", "de"),
        hyperparameters=hp.SMOKE, target_train_size=64, max_eval_examples=24, max_length=128,
        extra_search_trials=0, max_concurrent=2, checkpoint_every=4,
        seconds_per_trial_estimate=40),
    # The default: multilingual-e5-small offline on a 2-core laptop (bf16 on CPUs with AMX/AVX512-BF16, about 50
    # pairs/s in benchmarks/trainable_overhead.py): the ladder's minimum shape (0 to 8k in 5 steps, 2 tiers, 3
    # multilingual sizes), one learning-rate point per cell, 3 seeds per cell (the replicate stage) and 300 test
    # examples per language (genre sentences; retrieval candidates), so every score has an interval.
    # `--seeds 1` is the quick path. Bigger machines: add extra_search_trials.
    "laptop": Preset(
        name="laptop", model="multilingual-e5-small",
        english_tasks=("en_paraphrase",), english_qualities=("random", "hard"),
        english_sizes=(0, 1000, 2000, 4000, 8000),
        multilingual_task="multi_paraphrase", multilingual_qualities=("random",),
        multilingual_sizes=(250, 500, 1000),
        targets=("genre", "retrieval"), eval_languages=None,
        hyperparameters=hp.LAPTOP, target_train_size=1000, max_eval_examples=300, max_validation_examples=100,
        # Two trials at once on one thread each: 1.24x the training throughput of one trial on two threads
        # (e5-small, batch 32, length 48: 2 x 35.7 against 57.5 pairs/s), and one trial's single-threaded fixed
        # costs overlap the other's training.
        max_length=48, extra_search_trials=0, seeds=3, max_concurrent=2, torch_threads=1, checkpoint_every=100,
        # Each size trains alone, with the recipe's linear schedule: with the shared ladder's warmup-stable-decay
        # schedule at this preset's one learning-rate point, seed 0 of six English cells scored 2-10 points lower on
        # genre than the linear schedule's seed means (README, "One training run per size ladder").
        ladder="separate",
        # one trial alone on 2 threads on a quiet 2-core AMX machine (2026-12-06): English 8k 300 s, baseline
        # ~150 s, ~190 s on average; two at once on one thread each: ~280 s a trial, 140 s of wall time
        seconds_per_trial_estimate=280),
    # The paper's settings: xlm-roberta-large, hub tasks, full pools, GPUs. Need hub access and a GPU cluster. Each
    # sets an English ladder against multilingual data of the same task (trainables/hub_multilingual.py).
    # NLI: MNLI vs XNLI's human-translated validation sets (14 languages; the xnli target selects models on the 20%
    # of XNLI validation held out of that pool), scored on XNLI, PAWS-X and the retrieval tasks.
    "paper-nli": Preset(
        name="paper-nli", model="xlm-roberta-large",
        # Two English ladders: MNLI alone, and the paper's multi-task mixture of its intermediate tasks (mnli, qqp,
        # squad, anli, commonsense_qa, cosmos_qa, hellaswag; p_i ~ n_i^(1/2)), so the analysis sets each against
        # the multilingual cells; the report gives both curves side by side.
        english_tasks=("mnli", "xstilts_multitask"), english_qualities=("random",),
        english_sizes=(0, 1000, 4000, 16000, 64000, 256000, 392702),
        multilingual_task="multi_xnli", multilingual_qualities=("random",),
        multilingual_sizes=(1000, 4000, 16000),
        targets=("xnli", "pawsx", "tatoeba", "bucc"), eval_languages=None,
        hyperparameters=hp.PAPER, target_train_size=100000, max_eval_examples=5000, max_length=128,
        extra_search_trials=40, seeds=3, max_concurrent=8, gpus_per_trial=1, checkpoint_every=1000,
        retrieval_layer=8, seconds_per_trial_estimate=3600),
    # QA: SQuAD v1.1 vs TyDiQA-GoldP's native non-English train questions (8 languages), scored on XQuAD, MLQA and
    # TyDiQA-GoldP (whose validation split, its test, is apart from that pool). Phase 3 trains on SQuAD (XQuAD,
    # MLQA) or TyDiQA's English part, as XTREME does.
    "paper-qa": Preset(
        name="paper-qa", model="xlm-roberta-large",
        english_tasks=("squad",), english_qualities=("random",),
        english_sizes=(0, 1000, 4000, 16000, 64000, 87599),
        multilingual_task="multi_tydiqa", multilingual_qualities=("random",),
        multilingual_sizes=(1000, 4000, 16000),
        targets=("xquad", "mlqa", "tydiqa"), eval_languages=None,
        hyperparameters=hp.PAPER, target_train_size=87599, max_eval_examples=5000, max_length=384,
        extra_search_trials=40, seeds=3, max_concurrent=8, gpus_per_trial=1, checkpoint_every=1000,
        retrieval_layer=8, seconds_per_trial_estimate=5400),
}
# `paper` is paper-nli under its old name (the NLI setting the paper preset has always been).
PRESETS["paper"] = PRESETS["paper-nli"].with_overrides(name="paper")
