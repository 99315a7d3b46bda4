"""Mixtures of intermediate tasks: sampling and component sizes, registry checks, the phase-2 cache key, training on
the smoke encoder (deterministic, resumed bit for bit), the analysis's series, and a real smoke sweep (slow)."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import secrets
import subprocess
import sys

import pytest
import torch

from test_sweep import REPO, mlflow_runs, one_line_error, reap, rows, scored
from trainables import tasks
from trainables.errors import UserError
from trainables.formats import format_of
from trainables.mixtures import (MixtureModel, _cell_sizes, component_sizes, interleaved_batches, intermediate_parts,
                                 joined_parts, mixture_record, sampling_probabilities, train_intermediate)
from trainables.phase2_cache import phase2_key
from trainables.subsets import pool_size, select_examples, tiers
from trainables.training import TrainConfig, train
from trainables.trial_config import TrialConfig
from trainables.types import PROPORTIONAL, TEMPERATURE, Mixture

MIXTURE = "en_pair_choice"   # the offline one: en_paraphrase (pairs) + en_next_verse (multiple choice), T = 2


def declare(monkeypatch, *mixtures: Mixture) -> None:
    """The registry's mixtures are `mixtures` for one test (the `fresh_registry` fixture forgets them)."""
    monkeypatch.setattr(tasks, "OFFLINE_MIXTURES", list(mixtures))
    tasks.mixture_registry.cache_clear()
    _cell_sizes.cache_clear()


@pytest.fixture(autouse=True)
def fresh_registry():
    yield
    tasks.mixture_registry.cache_clear()
    _cell_sizes.cache_clear()


def test_sampling_probabilities_proportional_and_with_a_temperature():
    pools = {"a": 900, "b": 100}
    proportional = Mixture("m", ("a", "b"), PROPORTIONAL)
    assert sampling_probabilities(proportional, pools) == pytest.approx({"a": 0.9, "b": 0.1})
    assert sampling_probabilities(Mixture("m", ("a", "b"), TEMPERATURE, 1.0), pools) == pytest.approx(
        {"a": 0.9, "b": 0.1})
    assert sampling_probabilities(Mixture("m", ("a", "b"), TEMPERATURE, 2.0), pools) == pytest.approx(
        {"a": 0.75, "b": 0.25})                                         # sqrt: 30 : 10


def test_component_sizes_add_up_follow_the_probabilities_nest_and_respect_the_pools():
    mixture = Mixture("m", ("a", "b", "c"), TEMPERATURE, 2.0)
    pools = {"a": 10_000, "b": 400, "c": 16}                          # p ~ 100 : 20 : 4
    previous = dict.fromkeys(pools, 0)
    for size in range(1, 600):
        sizes = component_sizes(mixture, pools, size)
        assert sum(sizes.values()) == size
        assert all(sizes[name] >= previous[name] for name in pools)    # sizes nest along the ladder
        assert all(sizes[name] <= pools[name] for name in pools)
        if size <= 200:                                               # no pool exhausted yet: within one of p * N
            assert all(abs(sizes[name] - share * size) < 1 for name, share in
                       sampling_probabilities(mixture, pools).items()), size
        previous = sizes
    assert previous["c"] == 16                                         # c ran out; a and b took the rest
    with pytest.raises(UserError, match="at most that many"):
        component_sizes(mixture, pools, 10_417)


def test_a_mixture_cell_takes_a_prefix_of_each_component_ladder():
    assert tiers(MIXTURE) == {"random": "random of every component", "hard": "hard of every component"}
    assert pool_size(MIXTURE, "random") == pool_size("en_paraphrase", "random") + pool_size("en_next_verse", "random")
    small, large = (intermediate_parts(MIXTURE, "hard", size, seed=3) for size in (40, 96))
    assert [task.name for task in large] == ["en_paraphrase", "en_next_verse"]
    assert [len(examples) for examples in large.values()] == [69, 27]   # 96 * (0.714, 0.286)
    for task, examples in small.items():
        assert examples == large[task][:len(examples)]
        assert examples == select_examples(task.name, "hard", len(examples), seed=3)
    assert mixture_record(MIXTURE, "hard", 96) == {
        "mixture_components": "en_paraphrase,en_next_verse",
        "mixture_component_sizes": "en_paraphrase=69,en_next_verse=27", "mixture_sampling": "temperature:2"}
    assert mixture_record("en_paraphrase", "hard", 96) == {}


def test_bad_mixtures_are_one_line_errors(monkeypatch):
    declare(monkeypatch, *tasks.OFFLINE_MIXTURES, Mixture("with_target", ("en_paraphrase", "genre")),
            Mixture("with_typo", ("en_paraphrase", "en_nextverse")), Mixture("alone", ("en_paraphrase",)),
            Mixture("hot", ("en_paraphrase", "en_crossref"), TEMPERATURE, 0.0))
    for name, message in (("with_target", "genre is a target task"), ("with_typo", "did you mean en_next_verse"),
                          ("alone", "two or more distinct components"), ("hot", "temperature above 0"),
                          ("en_pair_choise", "did you mean en_pair_choice")):
        with pytest.raises(UserError, match=message) as error:
            tasks.get_mixture(name)
        assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="is a mixture of en_paraphrase, en_next_verse, not a task"):
        tasks.get_task(MIXTURE)


BAD_MIXTURE_DRIVER = """import sys
from trainables import tasks
from trainables.types import Mixture
tasks.OFFLINE_MIXTURES.append(Mixture("with_genre", ("en_paraphrase", "genre")))
from sweeps.scale_vs_quality import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_mixture_of_a_target_task_is_a_one_line_error_at_the_cli(tmp_path):
    done = subprocess.run([sys.executable, "-c", BAD_MIXTURE_DRIVER, "--preset", "smoke", "--intermediate-task",
                           "with_genre", "--dry-run", "--storage-path", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    one_line_error(done, "mixture with_genre: genre is a target task")


def test_every_declared_mixture_is_valid():
    from trainables.hub import HUB_MIXTURES

    assert {m.name for m in HUB_MIXTURES} <= set(tasks.mixture_registry())
    for name in tasks.mixture_registry():
        mixture = tasks.get_mixture(name)
        assert mixture.description and not set(mixture.components) & set(tasks.registry()) - set(
            tasks.names_with_role("intermediate"))
        assert name not in tasks.registry()


def test_the_cache_key_covers_the_mixture(monkeypatch):
    def key(cell, **changes):
        return phase2_key(TrialConfig(model="smoke", cell=cell, seed=0, **changes))

    mixture = key(f"english:{MIXTURE}:random:96")
    singles = {key(f"english:{task}:random:96") for task in ("en_paraphrase", "en_next_verse")}
    assert mixture not in singles and mixture != key(f"english:{MIXTURE}:random:64")
    # a mixture trains separately whatever the preset asks: the shared-ladder knobs are no part of its key
    shared = TrialConfig(model="smoke", cell=f"english:{MIXTURE}:random:96", ladder="shared")
    assert not shared.shared_ladder and "mixture" in shared.not_shared_because
    assert phase2_key(shared) == mixture
    # the same name declared with another sampling rule is another encoder
    declare(monkeypatch, dataclasses.replace(tasks.get_mixture(MIXTURE), temperature=1.0))
    assert key(f"english:{MIXTURE}:random:96") != mixture


def test_interleaved_batches_cover_every_row_once_one_part_per_batch():
    parts = (10, 7, 3)
    first = interleaved_batches(parts, 4, 5, ("a", "b", "c"), epoch=0)
    assert first == interleaved_batches(parts, 4, 5, ("a", "b", "c"), epoch=0)
    assert first != interleaved_batches(parts, 4, 5, ("a", "b", "c"), epoch=1)
    assert sorted(row for batch in first for row in batch) == list(range(20))
    assert len(first) == 3 + 2 + 1
    bounds = [(0, 10), (10, 17), (17, 20)]
    assert all(any(all(lo <= row < hi for row in batch) for lo, hi in bounds) for batch in first)


# ----------------------------------------------------------------------------------------- on the smoke encoder
CFG = TrainConfig(lr=3e-3, epochs=2, batch_size=4, max_length=24, seed=3, precision="fp32", checkpoint_every=3)


def trained(smoke, parts, cfg=CFG, **loop):
    tokenizer, encoder = smoke
    encoder, result = train_intermediate(copy.deepcopy(encoder), tokenizer, parts, cfg, device="cpu", **loop)
    return {name: p.detach().clone() for name, p in encoder.named_parameters()}, result


def identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.usefixtures("one_thread")
def test_mixture_phase_2_is_deterministic_and_resumes_bit_for_bit(smoke):
    parts = intermediate_parts(MIXTURE, "random", 16, seed=0)          # 11 pairs + 5 choices: 3 + 2 batches
    assert [len(examples) for examples in parts.values()] == [11, 5]
    saved = []
    first, result = trained(smoke, parts, on_checkpoint=lambda state: saved.append(copy.deepcopy(state)))
    assert result.steps == 10 and [state["step"] for state in saved] == [3, 6, 9, 10]
    again, _ = trained(smoke, parts)
    assert identical(first, again)
    assert not identical(first, trained(smoke, parts, dataclasses.replace(CFG, seed=4))[0])
    assert not identical(first, dict(smoke[1].named_parameters()))

    # resumed from the checkpoint at step 6 (in the second epoch) on a fresh encoder: the same weights, bit for bit
    resumed, resumed_result = trained(smoke, parts, resume_state=saved[1])
    assert resumed_result.resumed_at == 6 and resumed_result.losses == result.losses
    assert identical(resumed, first)


def test_each_batch_goes_through_its_own_head(smoke):
    tokenizer, encoder = smoke
    parts = intermediate_parts(MIXTURE, "random", 12, seed=0)
    model = MixtureModel(copy.deepcopy(encoder), list(parts), seed=0)
    heads = [copy.deepcopy(head.state_dict()) for head in model.heads]
    features = [format_of(t).featurize(tokenizer, ex, 32, t) for t, ex in parts.items()]
    cfg = dataclasses.replace(CFG, epochs=1, checkpoint_every=0)
    train(model, joined_parts(features, [t.name for t in parts]), cfg, device="cpu",
          batches=lambda epoch: [[0, 1, 2, 3]])   # one batch, all pairs: only the pair head learns
    assert not torch.equal(heads[0]["weight"], model.heads[0].weight)
    assert torch.equal(heads[1]["weight"], model.heads[1].weight)


# ------------------------------------------------------------------------------------------------- the analysis
def test_a_mixture_is_its_own_series_beside_the_single_tasks(tmp_path):
    from analysis.answer import analyse
    from analysis.progress_plot import series
    from analysis.read_results import prepare, read_csv
    from sweeps.results_table import ResultsTable, result_rows

    names = {"genre": "accuracy"}
    table = ResultsTable(tmp_path / "results.csv")
    cells = {"none": 40.0}
    for size, gain in ((100, 2.0), (200, 3.0), (400, 4.0), (800, 4.5)):
        cells[f"english:en_paraphrase:random:{size}"] = 40.0 + gain
        cells[f"english:{MIXTURE}:random:{size}"] = 41.0 + 2 * gain
    for index, (cell, score) in enumerate(cells.items()):
        for seed in range(2):
            config = {"cell": cell, "seed": seed, "lr_intermediate": 1e-4, "lr_target": 1e-4, "targets": ["genre"]}
            metrics = {"score.genre.fr": score + seed, "score.genre.avg": score + seed, "n.genre.fr": 200,
                       "n.genre.avg": 200, "objective": 50.0}
            table.record(result_rows(f"t{index}-{seed}", "search", config, metrics, names))
    rows, _ = prepare(read_csv(tmp_path / "results.csv"))
    lines = series(rows[rows["language"] == "avg"])
    assert set(lines) == {("none", "none"), ("english", "en_paraphrase/random"), ("english", f"{MIXTURE}/random")}
    assert list(lines[("english", f"{MIXTURE}/random")]["score"]) == [45.5, 47.5, 49.5, 50.5]
    _, _, fits = analyse(rows, n_boot=20, seed=0)
    assert {fit.tier for fit in fits} == {"en_paraphrase/random", f"{MIXTURE}/random"}
    mixture_fit = next(fit for fit in fits if fit.intermediate_task == MIXTURE and fit.language == "avg")
    assert list(mixture_fit.x) == [0, 100, 200, 400, 800]             # the shared baseline, then its own sizes


# ------------------------------------------------------------------------------------------- a real smoke sweep
MIXTURE_DRIVER = """import sys
from search_spaces.presets import PRESETS
PRESETS["smoke"] = PRESETS["smoke"].with_overrides(english_qualities=("random",), extra_search_trials=0)
from sweeps.scale_vs_quality import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_mixture_cell_trains_and_scores_through_the_sweep(tmp_path, monkeypatch):
    """The smoke preset with --intermediate-task en_pair_choice (its shared ladder falls back to separate): the
    mixture cells train both heads, are scored, and results.csv, MLflow and the analysis name the mixture."""
    marker = f"XSTILTS_TEST_RUN={secrets.token_hex(8)}"
    monkeypatch.setenv(*marker.split("="))
    storage, experiment = tmp_path / "store", "smoke-mixture"
    try:
        done = subprocess.run(
            [sys.executable, "-c", MIXTURE_DRIVER, "--preset", "smoke", "--intermediate-task", MIXTURE,
             "--english-sizes", "0,32,64", "--storage-path", str(storage), "--experiment", experiment],
            capture_output=True, text=True, timeout=600, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "0"})
    finally:
        reap(marker.encode())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = rows(storage / experiment)
    english = [r for r in table if r["source"] == "english"]
    assert {r["intermediate_task"] for r in english} == {MIXTURE}
    assert {r["size"] for r in english if scored(r)} == {"32", "64"}
    assert {(r["target_task"], r["language"]) for r in english if scored(r)} >= {("genre", "avg"),
                                                                                  ("retrieval", "avg")}
    _, _, children = mlflow_runs(storage / experiment, experiment)
    mixture_runs = [run for run in children if run.data.params["intermediate_task"] == MIXTURE]
    assert {run.data.params["size"] for run in mixture_runs} == {"32", "64"}
    for run in mixture_runs:
        assert {key: run.data.params[key] for key in mixture_record(MIXTURE, "random", 1)} == mixture_record(
            MIXTURE, "random", int(run.data.params["size"]))
    assert not any("mixture_component_sizes" in run.data.params for run in children if run not in mixture_runs)
    summary = json.loads((storage / experiment / "analysis" / "summary.json").read_text())
    assert {row["tier"] for row in summary["curves"]} == {f"{MIXTURE}/random"}


def test_the_overlap_check_looks_into_a_mixtures_components(monkeypatch):
    """A mixture cell is checked through its components (each hub component's pool against the evaluation splits;
    the offline ones have their own proof), never looked up as a task ("... is a mixture, not a task")."""
    from search_spaces.presets import PRESETS
    from sweeps.overlap_check import check_no_overlap

    monkeypatch.setenv("XSTILTS_HUB_FIXTURES", str(REPO / "tests" / "fixtures" / "hub"))
    check_no_overlap(PRESETS["smoke"].with_overrides(english_tasks=(MIXTURE,)))
    check_no_overlap(PRESETS["paper-nli"].with_overrides(english_tasks=("xstilts_multitask",), targets=("xnli",),
                                                         eval_languages=("en",)))
