"""The multilingual intermediate hub tasks (multi_xnli, multi_tydiqa), the overlap check that keeps every
intermediate pool apart from the evaluation splits, and the paper-nli / paper-qa presets: dry runs without the hub,
and (slow) each preset end to end on fixtures with the tiny model."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from search_spaces import hyperparameters as hp
from search_spaces.presets import PRESETS
from sweeps.overlap_check import check_no_overlap, normalised_text
from test_sweep import SWEEP, check_one_record, reap_ray, rows, scored  # noqa: F401 - reap_ray: a fixture
from trainables import hub
from trainables.errors import UserError
from trainables.hub_multilingual import MULTILINGUAL_TASKS
from trainables import tasks
from trainables.tasks import get_mixture, get_task, is_mixture, load_examples
from trainables.types import PairExample, SpanExample

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "hub"
# The fixtures hold these evaluation languages (tests/fixtures/make_multilingual_fixtures.py).
FIXTURE_LANGUAGES = {"paper-nli": ("en", "de"), "paper-qa": ("en", "ar", "de")}


@pytest.fixture(autouse=True)
def fixtures(tmp_path_factory, monkeypatch):
    """Hub tasks load from the fixtures; the arrow files `load_dataset` prepares stay out of the user's cache."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets_cache"))
    monkeypatch.setenv(hub.FIXTURES_ENV, str(FIXTURES))
    tasks._load.cache_clear()   # the registry's per-process memo of loaded examples: each test reads its fixtures


def fixture_preset(name: str):
    return PRESETS[name].with_overrides(eval_languages=FIXTURE_LANGUAGES[name])


def test_registry_records():
    assert [task.name for task in MULTILINGUAL_TASKS] == ["multi_xnli", "multi_tydiqa"]
    xnli, tydiqa = get_task("multi_xnli"), get_task("multi_tydiqa")
    assert (xnli.role, xnli.format, xnli.num_labels, xnli.source, xnli.splits) == (
        "intermediate", "pair", 3, "hub", ("train",))
    assert (tydiqa.role, tydiqa.format, tydiqa.metric, tydiqa.splits) == ("intermediate", "span", "f1", ("train",))
    assert xnli.train_language == tydiqa.train_language == "all"
    assert len(xnli.languages) == 14 and "en" not in xnli.languages
    assert set(tydiqa.languages) == set("ar bn fi id ko ru sw te".split())
    assert (xnli.train_size, tydiqa.train_size) == (14 * 1_992, 49_881 - 3_696)   # documented, for --dry-run
    assert get_task("xnli").splits == ("train", "validation", "test")


def test_multi_xnli_is_xnli_validation_without_the_selection_rows():
    pool = load_examples("multi_xnli", "train", "all")
    assert len(pool) == 14 * 12 and all(isinstance(ex, PairExample) for ex in pool)
    assert {ex.language for ex in pool} == set(get_task("multi_xnli").languages)
    german_pool = [ex for ex in pool if ex.language == "de"]
    assert german_pool == get_task("multi_xnli").load("train", "de")   # one language of the pool
    # The xnli target selects models on the first 20% of every language's validation rows: its premise group
    # 0 (3 rows of 15), in every language; the pool holds groups 1-4.
    for language in ("en", "de", "zh"):
        selection = load_examples("xnli", "validation", language)
        first = f"[xnli {language} dev 0] The river near the north opened in 1900."
        assert [ex.text_a for ex in selection] == [first] * 3
    assert not any(ex.text_a.startswith("[xnli de dev 0]") for ex in german_pool)
    assert {ex.text_a.split("]")[0].rsplit(" ", 1)[1] for ex in pool} == {"1", "2", "3", "4"}


def test_multi_xnli_refuses_languages_out_of_row_order(tmp_path, monkeypatch):
    copy = tmp_path / "hub"
    shutil.copytree(FIXTURES / "facebook__xnli", copy / "facebook__xnli")
    greek = copy / "facebook__xnli" / "el" / "validation.jsonl"
    lines = greek.read_text(encoding="utf-8").splitlines(keepends=True)
    greek.write_text("".join(lines[:3] + lines[4:] + lines[3:4]), encoding="utf-8")   # one pool row moved last
    monkeypatch.setenv(hub.FIXTURES_ENV, str(copy))
    with pytest.raises(UserError, match=r"facebook/xnli \(el, validation\[20%:\]\) does not list the translations "
                                        r"of the en rows in their order"):
        load_examples("multi_xnli", "train", "all")


def test_multi_tydiqa_is_the_non_english_train_rows():
    pool = load_examples("multi_tydiqa", "train", "all")
    assert all(isinstance(ex, SpanExample) for ex in pool)
    assert {ex.language for ex in pool} == set("ar bn fi id ko ru sw te".split())
    assert len(pool) == 1 + 8 * 3   # the hand-picked Arabic row and 3 generated rows per language
    assert all(ex.id.split("-")[0] == hub.TYDIQA_NAMES[ex.language] for ex in pool)
    english = {ex.id for ex in load_examples("tydiqa", "train", "en")}
    assert english and not english & {ex.id for ex in pool}


def test_normalised_text_ignores_case_width_and_spacing():
    a = PairExample("Ｔhe  river\nopened.", "It is OLD.", 0, "en")
    b = PairExample("the river opened.", "it is old.", 2, "de")
    assert normalised_text(a) == normalised_text(b)
    assert normalised_text(a) != normalised_text(PairExample("the river opened. it is old.", "", 0, "en"))


@pytest.mark.parametrize("name", ["paper-nli", "paper-qa"])
def test_overlap_check_passes_on_the_paper_presets(name):
    check_no_overlap(fixture_preset(name))


def _fixtures_with_a_leak(tmp_path: Path) -> Path:
    """A copy of the fixtures whose XNLI German test split also holds one row of the multi_xnli pool."""
    copy = tmp_path / "hub"
    shutil.copytree(FIXTURES, copy)
    pool_row = (FIXTURES / "facebook__xnli" / "de" / "validation.jsonl").read_text(encoding="utf-8").splitlines()[7]
    row = json.loads(pool_row)
    row["premise"] = "  " + row["premise"].upper()   # a leak is a leak in any case or spacing
    with open(copy / "facebook__xnli" / "de" / "test.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return copy


def test_overlap_check_refuses_a_pool_row_in_an_evaluation_split(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.FIXTURES_ENV, str(_fixtures_with_a_leak(tmp_path)))
    with pytest.raises(UserError, match=r"^intermediate task multi_xnli \(train\) and target xnli \(test, de\) "
                                        r"share 1 example\(s\)"):
        check_no_overlap(fixture_preset("paper-nli"))


def test_a_sweep_with_an_overlap_stops_before_training(tmp_path):
    """The sweep command: one line on stderr (beside the progress bars of `datasets`, off here), exit status 2,
    nothing trained."""
    driver = PAPER_DRIVER % {"name": "paper-nli", "overrides": {"eval_languages": ("en", "de")}}
    env = {**os.environ, "PYTHONPATH": str(REPO), hub.FIXTURES_ENV: str(_fixtures_with_a_leak(tmp_path)),
           "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    storage = tmp_path / "store"
    done = subprocess.run([sys.executable, "-c", driver, "--preset", "paper-nli", "--english-sizes", "0,8",
                           "--multilingual-sizes", "32", "--storage-path", str(storage)],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: intermediate task multi_xnli (train) and target xnli "
                                                   "(test, de) share 1 example(s)"), done.stderr[-2000:]
    assert not list(storage.rglob("results.csv")) and not list(storage.rglob("train_runs"))


@pytest.mark.parametrize("name, intermediate, pool", [("paper-nli", "multi_xnli", "27888"),
                                                      ("paper-qa", "multi_tydiqa", "46185")])
def test_paper_dry_runs_need_no_hub(tmp_path, name, intermediate, pool):
    env = {key: value for key, value in os.environ.items() if key != hub.FIXTURES_ENV}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"))
    done = subprocess.run(SWEEP + ["--preset", name, "--dry-run", "--storage-path", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"multilingual  {intermediate}" in done.stdout and "estimated cost" in done.stdout
    assert not (tmp_path / "hf" / "datasets").exists()   # nothing was loaded
    too_big = subprocess.run(SWEEP + ["--preset", name, "--dry-run", "--multilingual-sizes", str(int(pool) + 1),
                                      "--storage-path", str(tmp_path / "store")],
                             capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert too_big.returncode == 2 and f"above its pool of {pool} examples" in too_big.stderr


# ----------------------------------------------------------------------------------------------- end to end (slow)
# The sweep command with a paper preset shrunk to the fixtures and the tiny model (as test_sweep's DRIVER does).
PAPER_DRIVER = """import sys
from search_spaces import hyperparameters as hp
from search_spaces.presets import PRESETS
PRESETS[%(name)r] = PRESETS[%(name)r].with_overrides(**%(overrides)r)
from sweeps.scale_vs_quality import main
sys.exit(main(sys.argv[1:]))
"""
TINY = {"model": "smoke", "hyperparameters": hp.SMOKE, "target_train_size": 16, "max_eval_examples": 32,
        "extra_search_trials": 0, "seeds": 1, "max_concurrent": 2, "gpus_per_trial": 0, "checkpoint_every": 4,
        "retrieval_layer": -1, "seconds_per_trial_estimate": 20}
TINY_PRESETS = {   # sizes within the fixture pools: MNLI 8, multi_xnli 168, SQuAD 3, multi_tydiqa 25
    "paper-nli": {**TINY, "english_sizes": (0, 4, 8), "multilingual_sizes": (32,), "max_length": 48},
    "paper-qa": {**TINY, "english_sizes": (0, 2, 3), "multilingual_sizes": (16,), "max_length": 128},
}


@pytest.mark.slow
@pytest.mark.usefixtures("reap_ray")
@pytest.mark.parametrize("name", ["paper-nli", "paper-qa"])
def test_paper_preset_end_to_end_on_fixtures(tmp_path, name):
    """Phase 2 (English ladder and multilingual cell), phase 3, zero-shot evaluation of every target in every
    fixture language, results.csv, MLflow and the analysis."""
    storage, experiment = tmp_path / "store", f"{name}-fixtures"
    overrides = {**TINY_PRESETS[name], "eval_languages": FIXTURE_LANGUAGES[name]}
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "0", hub.FIXTURES_ENV: str(FIXTURES),
           "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", PAPER_DRIVER % {"name": name, "overrides": overrides},
                           "--preset", name, "--seeds", "1", "--storage-path", str(storage),
                           "--experiment", experiment], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = rows(storage / experiment)
    preset = PRESETS[name]
    assert {r["source"] for r in table} == {"none", "english", "multilingual"}
    assert {r["intermediate_task"] for r in table if r["source"] == "multilingual"} == {preset.multilingual_task}
    # every English ladder of the preset (paper-nli: MNLI and the hub mixture of the paper's intermediate tasks)
    assert {r["intermediate_task"] for r in table if r["source"] == "english"} == set(preset.english_tasks)
    for target in preset.targets:
        languages = set(get_task(target).languages) & set(FIXTURE_LANGUAGES[name])
        for source in ("none", "english", "multilingual"):
            mine = [r for r in table if r["target_task"] == target and r["source"] == source]
            assert {r["language"] for r in mine} == languages | {"avg"}, (target, source)
            assert all(scored(r) and math.isfinite(float(r["score"])) for r in mine), (target, source)
    client, parent, children = check_one_record(storage / experiment, experiment)
    assert parent.info.status == "FINISHED" and {run.info.status for run in children} == {"FINISHED"}
    for run in children:   # a mixture cell's runs record its components and their sizes
        if is_mixture(run.data.params.get("intermediate_task", "")):
            assert run.data.params["mixture_components"] == ",".join(get_mixture(run.data.params[
                "intermediate_task"]).components) and "=" in run.data.params["mixture_component_sizes"]
    summary = json.loads((storage / experiment / "analysis" / "summary.json").read_text())
    assert summary["data"]["rows_read"] == len(table)
