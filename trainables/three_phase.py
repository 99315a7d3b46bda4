"""One trial of the sweep on Ray Train: phase 2, phase 3 for each classification target, zero-shot evaluation.
With `ladder: shared`, phase 2 starts from its size ladder's trunk snapshot where a larger size left one
(trainables/ladder.py) and leaves snapshots for the smaller sizes.

`run_trial(config)` is the Ray Tune function trainable. It starts a `TorchTrainer` (workers and GPUs from the
config; DDP when there is more than one worker) whose workers run `trial_loop`, and forwards every
`ray.train.report` to Tune (trainables/tune_reports.py). The trainer is named after the Tune trial and stored
under the sweep's storage, so a trial that Tune restarts (driver crash + `--resume`) picks up its own last
checkpoint, and a worker that dies is restarted by Ray Train from the last checkpoint (FailureConfig).

What a trial reports: `global_step` (one counter that only grows across phases), `phase`, `loss`, `lr`,
`phase_first_step` / `phase_last_step` (the global steps where the phase in training starts and ends) and
`examples_per_s` (training throughput since the previous report), then
after each target `val.<target>.<language>` / `score.<target>.<language>` (validation / test, in points, plus
`avg`, and the format's secondary figures as `<language>/<figure>`; `n.<target>.<language>`: the test examples
behind each score), `truncated.<phase>.<what>` (training examples or words featurising could not keep),
`objective` (mean over the targets evaluated so far of the validation `avg`; NaN before the first),
`targets_evaluated` (how many targets the objective averages so far: ASHA's milestones, so it compares trials
on the same targets), and at the end
`phase2_cache_hit`, `resumed_from_step`, `peak_rss_mb` and `trial_complete = 1`. The config keys are documented in
trainables/trial_config.py.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

import numpy as np
import torch

import ray.train
import ray.train.torch
import ray.tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from analysis.schema import COUNT_PREFIX, TEST_PREFIX, TRUNCATED_PREFIX, VALIDATION_PREFIX, metric_key
from search_spaces.axes import DataCell
from trainables.ladder import discard_own_branch, phase2_ladder_kwargs
from trainables.models import file_sha256, load_encoder
from trainables.phase2_cache import Phase2Cache, phase2_key, trained_parameters
from trainables.mixtures import intermediate_model, intermediate_parts, train_intermediate
from trainables.phases import target_phase, zero_shot_evaluation
from trainables.precision import resolve_precision
from trainables.tasks import evaluated_languages, get_task, load_examples
from trainables.formats import TaskModel, format_of
from trainables.trial_config import TrialConfig
from trainables.tune_reports import fit_reporting_to_tune
from trainables.training import rank0_value

STATE_FILE = "trial_state.pt"
STATE_DIGEST = "trial_state.sha256"


def trial_env() -> dict:
    """Settings the trial workers need to see as the driver does (cache and data locations, offline mode).

    Ray Train's controller collects worker reports every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default) and a
    worker blocks on its next report until then: with fast (GPU or tiny-model) steps that capped training at a few
    steps per second (benchmarks/trainable_overhead.py measured 0.12 of plain PyTorch on the smoke model)."""
    names = ("XSTILTS_CACHE", "XSTILTS_BIBLE_DB", "XSTILTS_HUB_FIXTURES", "HF_HUB_OFFLINE", "HF_HOME")
    env = {name: os.environ[name] for name in names if name in os.environ}
    env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    return env


# ----------------------------------------------------------------------------------------------- Tune side
def run_trial(config: dict) -> None:
    """The Tune function trainable: one TorchTrainer run per trial."""
    trial_id = ray.tune.get_context().get_trial_id()
    fit_reporting_to_tune(lambda callbacks: build_trainer(config, name=train_run_name(trial_id, config),
                                                          callbacks=callbacks))


def train_run_name(trial_id: str, config: dict) -> str:
    """The Train run's name, as the Ray dashboard lists it: the Tune trial id (a restarted trial finds its own
    checkpoints under it) and the data cell and seed, so a cell's runs can be found by name."""
    cell = config.get("cell", "none").replace(":", "-")
    return f"trial-{trial_id}-{cell}-s{config.get('seed', 0)}"


def build_trainer(config: dict, *, name: str, callbacks=()) -> TorchTrainer:
    trial = TrialConfig.from_dict(config)   # checks the keys before any worker starts
    use_gpu = trial.use_gpu
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    storage = Path(trial.storage_path or tempfile.gettempdir()) / "train_runs"
    resources = None
    if trial.torch_threads:
        # A worker holds the CPUs its threads use: Ray sets OMP_NUM_THREADS to the CPUs a worker holds (1 by
        # default), and a bf16 minimal loop in a Train worker ran at 5.8 examples/s with 1 against 51.7 with 2.
        resources = {"CPU": trial.torch_threads, **({"GPU": 1} if use_gpu else {})}
    return TorchTrainer(
        trial_loop, train_loop_config=trial.as_dict(),
        scaling_config=ScalingConfig(num_workers=trial.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=str(storage), callbacks=list(callbacks),
                             failure_config=FailureConfig(max_failures=trial.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)))


# ---------------------------------------------------------------------------------------------- worker side
def trial_loop(config: dict) -> None:
    """What every Train worker runs: phase 2 (or the cache), phase 3 per target, evaluation; resumable."""
    trial = TrialConfig.from_dict(config)
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if trial.torch_threads:
        torch.set_num_threads(trial.torch_threads)
    wrap_model = ray.train.torch.prepare_model if world_size > 1 else None
    # Resolved here, on the worker's own device, so the phase-2 cache key names the arithmetic really used.
    trial = dataclasses.replace(trial, precision=resolve_precision(trial.precision, device))
    progress, resume = _restore()
    tokenizer, encoder = load_encoder(trial.model)
    reporter = _Reporter(trial, progress, rank, world_size)
    loop = dict(device=device, rank=rank, world_size=world_size, wrap_model=wrap_model, on_step=reporter.on_step,
                on_phase_start=reporter.on_phase_start)

    # Phase 2: the intermediate task, unless the cell is the baseline or the cache already has it.
    cell = DataCell.from_id(trial.cell)
    if cell.size > 0:
        cache = Phase2Cache(trial.cache_dir or Path(trial.storage_path or tempfile.gettempdir())
                            / "phase2_cache")
        key = phase2_key(trial)
        cached = cache.load(key) if resume.get("stage") != "intermediate" else None
        cached = rank0_value(cached is not None) and cached
        if cached:
            encoder.load_state_dict(cached[0], strict=False)
            if progress["phase2_cache_hit"] is None:   # decided once; a resumed trial keeps its first answer
                progress["phase2_cache_hit"] = 1
                progress["global_step"] = cached[1]["steps"]
        else:
            parts = intermediate_parts(cell.task, cell.quality, cell.size, trial.seed)   # {task: examples}
            progress["phase"] = "intermediate"
            if trial.ladder == "shared" and not trial.shared_ladder and rank == 0:
                print(f"{trial.cell} s{trial.seed}: a shared ladder {trial.not_shared_because}: trained separately",
                      file=sys.stderr, flush=True)
            resume_state = _resume_state(resume, "intermediate", lambda: intermediate_model(encoder, parts, trial.seed))
            phase2_loop = dict(loop)
            if len(parts) > 1 and world_size > 1:   # each batch trains one head: DDP must allow the others idle
                phase2_loop["wrap_model"] = functools.partial(
                    ray.train.torch.prepare_model, parallel_strategy_kwargs={"find_unused_parameters": True})
            longest = max(parts, key=lambda task: task.max_length)
            encoder, result = train_intermediate(
                encoder, tokenizer, parts, trial.train_config("intermediate", longest), step_offset=0,
                resume_state=resume_state, on_checkpoint=reporter.checkpointer("intermediate"),
                **phase2_ladder_kwargs(trial, cell.size, cache.root), **phase2_loop)
            trunk_step = result.resumed_at if resume_state is None else 0
            if trunk_step and rank == 0:
                print(f"{trial.cell} s{trial.seed}: phase 2 continued from its ladder's trunk snapshot at step "
                      f"{trunk_step} of {result.steps}", file=sys.stderr, flush=True)
            progress["phase2_cache_hit"] = 0
            progress["global_step"] = result.global_step
            alone = cell.size * trial.epochs_intermediate   # what this size costs trained from scratch
            progress["phase2_passes"] = (max(0, alone - trunk_step * reporter.examples_per_step), alone)
            _note_truncated(progress, "intermediate", result.notes)
            if rank == 0:
                cache.store(key, trained_parameters(encoder), {"steps": result.global_step, "config": trial.as_dict(),
                                                               "trunk_step": trunk_step})
                discard_own_branch(trial, cache.root, result.steps)
    progress["phase2_cache_hit"] = progress["phase2_cache_hit"] or 0

    # Phase 3 and zero-shot evaluation, one target at a time, each on a copy of the phase-2 encoder.
    for target in evaluation_order(trial.targets):
        if target in progress["scores"]:
            continue
        task = get_task(target)
        model = encoder
        if format_of(task).trains:
            progress["phase"] = f"target:{target}"
            train_examples = _first_n(load_examples(target, "train", task.train_language),
                                      trial.target_train_size)
            resume_state = _resume_state(resume, f"target:{target}",
                                         lambda: TaskModel(encoder, format_of(task), task.num_labels, seed=trial.seed))
            model, result = target_phase(
                copy.deepcopy(encoder), tokenizer, task, train_examples, trial.train_config("target", task),
                step_offset=resume_state["step_offset"] if resume_state else progress["global_step"],
                resume_state=resume_state,
                on_checkpoint=reporter.checkpointer(f"target:{target}"), **loop)
            progress["global_step"] = result.global_step
            _note_truncated(progress, target, result.notes)
        progress["phase"] = f"evaluate:{target}"
        # A target without a validation split (Tatoeba, XQuAD) is scored on test only and leaves the objective.
        eval_sets = {split: _eval_sets(task, split, trial) for split in ("validation", "test") if split in task.splits}
        progress["scores"][target] = {
            split: zero_shot_evaluation(model, tokenizer, task, examples, device=device,
                                        max_length=min(task.max_length, trial.max_length),
                                        layer=trial.retrieval_layer, precision=trial.precision)
            for split, examples in eval_sets.items()}
        progress["counts"][target] = {language: len(examples) for language, examples in eval_sets["test"].items()}
        progress["counts"][target]["avg"] = sum(progress["counts"][target].values())
        reporter.report(checkpoint_stage="evaluated")
    progress["phase"] = "done"
    # With a checkpoint, so a finished trial that Tune restarts (a sweep resumed after a crash) only re-reports.
    reporter.report(checkpoint_stage="done", final=True)


def evaluation_order(targets) -> list[str]:
    """The targets in the order a trial scores them: those without phase 3 (retrieval: evaluation only) first, then
    the trained ones; within each, those with a validation split (which the objective averages) first, else in the
    given order. The cheap scores come first, so the search's early stopping (ASHA, milestones at
    `targets_evaluated`) can stop a weak trial before it pays for any phase 3. A target's score does not depend on
    the order (each trains on its own copy of the phase-2 encoder)."""
    tasks = [get_task(name) for name in targets]
    return [task.name for task in sorted(tasks, key=lambda task: (format_of(task).trains,
                                                                  "validation" not in task.splits))]


def _note_truncated(progress: dict, phase: str, notes: dict[str, int]) -> None:
    progress.setdefault("truncated", {}).update({f"{phase}.{what}": n for what, n in notes.items()})


def _first_n(examples: list, n: int | None, seed: int = 0) -> list:
    """A fixed subset: the first n of one seeded permutation (the same for every trial of a sweep)."""
    if n is None or n >= len(examples):
        return list(examples)
    order = np.random.default_rng(seed).permutation(len(examples))[:n]
    return [examples[i] for i in order]


def _eval_sets(task, split: str, trial: TrialConfig) -> dict[str, list]:
    languages = evaluated_languages(task, trial.eval_languages)
    cap = trial.max_eval_examples
    if split == "validation" and trial.max_validation_examples is not None:
        cap = trial.max_validation_examples
    return {lang: _first_n(load_examples(task.name, split, lang), cap) for lang in languages}


# ------------------------------------------------------------------------------------ reporting and resume
def _fresh_progress() -> dict:
    return {"global_step": 0, "phase": "start", "phase2_cache_hit": None, "scores": {}, "counts": {},
            "loss": None, "resumed_from_step": None, "truncated": {}}


def _restore() -> tuple[dict, dict]:
    """(progress, resume) from the trial's last checkpoint; resume = {"stage", "train_state"} of a phase that
    was interrupted, or {}."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return _fresh_progress(), {}
    with checkpoint.as_directory() as folder:
        return restore_from(Path(folder))


def write_state(folder: Path, state: dict) -> None:
    """The checkpoint's state file and its sha256 beside it (restore_from checks it)."""
    torch.save(state, folder / STATE_FILE)
    (folder / STATE_DIGEST).write_text(file_sha256(folder / STATE_FILE))


def restore_from(folder: Path) -> tuple[dict, dict]:
    """_restore's answer from a checkpoint folder. A damaged checkpoint (its sha256 does not match, or it does not
    load) is no state to continue from: the trial says so and starts again from the beginning, which gives the same
    result (training is deterministic), instead of failing on every retry."""
    try:
        digest = (folder / STATE_DIGEST).read_text().strip() if (folder / STATE_DIGEST).exists() else None
        if digest is not None and digest != file_sha256(folder / STATE_FILE):
            raise ValueError("sha256 mismatch")
        saved = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False)
        progress = saved["progress"]
    except Exception as err:   # noqa: BLE001 - any unreadable checkpoint is treated the same way
        print(f"checkpoint {folder} is damaged ({type(err).__name__}: {err}); recomputing the trial from the start",
              file=sys.stderr, flush=True)
        return _fresh_progress(), {}
    progress["resumed_from_step"] = progress["global_step"]
    return progress, saved.get("resume") or {}


def _resume_state(resume: dict, stage: str, fresh_model) -> dict | None:
    """The interrupted phase's training state, completed with the parameters that were not saved (frozen ones) from
    `fresh_model()`, the phase's model before training (made only when there is a state to complete)."""
    if resume.get("stage") != stage:
        return None
    state = dict(resume["train_state"])
    state["model"] = {**fresh_model().state_dict(), **state["model"]}
    return state


class _Reporter:
    """Sends metrics (every `report_every` steps) and checkpoints (at phase checkpoints and after each target)."""

    def __init__(self, trial: TrialConfig, progress: dict, rank: int, world_size: int = 1):
        self.trial, self.progress, self.rank = trial, progress, rank
        self.examples_per_step = trial.batch_size * trial.grad_accum_steps * world_size
        self.rate_mark: tuple[float, int] | None = None   # (time, global step) of the last measured report

    def on_phase_start(self, first_step: int, last_step: int) -> None:
        self.progress["phase_steps"] = (first_step, last_step)
        self.rate_mark = None

    def on_step(self, global_step: int, loss: float, lr: float) -> None:
        self.progress.update(global_step=global_step, loss=loss, lr=lr)
        self._maybe_fail(global_step)
        if global_step % self.trial.report_every == 0:
            now = time.perf_counter()
            if self.rate_mark is not None and now > self.rate_mark[0]:
                steps = global_step - self.rate_mark[1]
                self.progress["examples_per_s"] = steps * self.examples_per_step / (now - self.rate_mark[0])
            self.rate_mark = (now, global_step)
            ray.train.report(self.metrics())

    def checkpointer(self, stage: str):
        def on_checkpoint(train_state: dict) -> None:
            # Frozen word embeddings come back from the base model: leave the biggest matrix out of checkpoints.
            frozen = self.trial.freeze_word_embeddings
            slim = {**train_state, "model": {k: v for k, v in train_state["model"].items()
                                             if not (frozen and k.endswith("word_embeddings.weight"))}}
            self.report(checkpoint_stage=stage, resume={"stage": stage, "train_state": slim})
        return on_checkpoint

    def report(self, *, checkpoint_stage: str | None = None, resume: dict | None = None, final: bool = False):
        metrics = self.metrics(final=final)
        if self.rank != 0 or checkpoint_stage is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            write_state(Path(folder), {"progress": self.progress, "resume": resume})
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))

    def metrics(self, final: bool = False) -> dict:
        p = self.progress
        metrics = {"global_step": p["global_step"], "phase": p["phase"]}
        if p.get("phase_steps"):   # where the phase being trained (or the last one trained) starts and ends
            rate = p.get("examples_per_s", math.nan)
            steps_left = p["phase_steps"][1] - p["global_step"]
            metrics.update(phase_first_step=p["phase_steps"][0], phase_last_step=p["phase_steps"][1],
                           examples_per_s=rate,
                           phase_seconds_left=steps_left * self.examples_per_step / rate if rate > 0 else math.nan)
        if p.get("loss") is not None:
            metrics.update(loss=p["loss"], lr=p["lr"])
        for target, splits in p["scores"].items():
            for split, prefix in (("validation", VALIDATION_PREFIX), ("test", TEST_PREFIX)):
                scores = splits.get(split, {})
                metrics.update({metric_key(prefix, target, lang): value for lang, value in scores.items()})
        for target, counts in p.get("counts", {}).items():
            metrics.update({metric_key(COUNT_PREFIX, target, lang): n for lang, n in counts.items()})
        # The running objective: the mean validation `avg` over the targets evaluated so far (NaN before the
        # first), in every report, because Tune's searchers expect their metric in every result.
        evaluated = [s["validation"]["avg"] for s in p["scores"].values() if "validation" in s]
        metrics["objective"] = mean(evaluated) if evaluated else math.nan
        metrics["targets_evaluated"] = len(evaluated)
        # What featurising could not keep in training (answers outside every window, words cut off), per phase.
        metrics.update({f"{TRUNCATED_PREFIX}.{what}": n for what, n in p.get("truncated", {}).items()})
        if final:
            metrics["phase2_cache_hit"] = p["phase2_cache_hit"]
            # phase-2 example passes this trial trained, and what its size alone would have (0, 0: a cache hit)
            metrics["phase2_example_passes"], metrics["phase2_example_passes_alone"] = p.get("phase2_passes", (0, 0))
            metrics["resumed_from_step"] = -1 if p["resumed_from_step"] is None else p["resumed_from_step"]
            metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            metrics["worker_node_id"] = ray.get_runtime_context().get_node_id()
            metrics["precision"] = self.trial.precision
            metrics["trial_complete"] = 1
        return metrics

    def _maybe_fail(self, global_step: int) -> None:
        """Fault injection, once per cell (a marker file remembers): at `fail_at_step` rank 0 dies; at
        `pause_at_step` rank 0 writes its node id and process id into the marker and waits (up to 10 minutes) until a
        file named `pause-released` appears in the storage folder, so that a test can kill the node under a running
        trial."""
        if self.rank != 0 or global_step not in (self.trial.fail_at_step, self.trial.pause_at_step):
            return
        storage = Path(self.trial.storage_path)
        fail = global_step == self.trial.fail_at_step
        marker = storage / f"{'fault-injected' if fail else 'paused'}-{self.trial.cell}-{global_step}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        if fail:
            marker.write_text("killed once\n")
            os._exit(1)
        written = marker.with_name(f".{marker.name}")   # renamed into place: a reader never sees half of it
        written.write_text(f"{ray.get_runtime_context().get_node_id()} {os.getpid()}")
        os.replace(written, marker)
        deadline = time.monotonic() + 600
        while not (storage / "pause-released").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
