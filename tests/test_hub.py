"""Hub adapters on fixture files in each hub dataset's own schema, loaded through `datasets.load_dataset`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainables import hub
from trainables.errors import UserError
from trainables.types import PairExample, RetrievalExample

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "hub"
TASKS = {task.name: task for task in hub.HUB_TASKS}


@pytest.fixture(scope="module", autouse=True)
def datasets_cache(tmp_path_factory):
    """Keep the arrow files `load_dataset` prepares from fixtures out of the user's cache."""
    datasets = pytest.importorskip("datasets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets_cache"))
        yield


@pytest.fixture
def fixtures(monkeypatch):
    monkeypatch.setenv(hub.FIXTURES_ENV, str(FIXTURES))


def test_registry_records():
    assert list(TASKS) == ["mnli", "qqp", "pawsx", "xnli", "tatoeba", "bucc"]
    expected = {  # role, format, num_labels, metric
        "mnli": ("intermediate", "pair", 3, "accuracy"), "qqp": ("intermediate", "pair", 2, "accuracy"),
        "pawsx": ("target", "pair", 2, "accuracy"), "xnli": ("target", "pair", 3, "accuracy"),
        "tatoeba": ("target", "retrieval", 0, "top1_accuracy"), "bucc": ("target", "retrieval", 0, "top1_accuracy"),
    }
    for name, (role, fmt, num_labels, metric) in expected.items():
        task = TASKS[name]
        assert (task.role, task.format, task.num_labels, task.metric) == (role, fmt, num_labels, metric)
        assert task.source == "hub" and task.train_language == "en" and task.max_length > 0 and task.description
    assert TASKS["mnli"].languages == TASKS["qqp"].languages == ("en",)
    assert set(TASKS["pawsx"].languages) == set("en de es fr ja ko zh".split())
    assert len(TASKS["xnli"].languages) == 15 and "sw" in TASKS["xnli"].languages
    assert len(TASKS["tatoeba"].languages) == 36 and "en" not in TASKS["tatoeba"].languages
    assert TASKS["bucc"].languages == ("de", "fr", "ru", "zh")
    assert TASKS["tatoeba"].splits == ("test",) and TASKS["bucc"].splits == ("validation", "test")
    assert TASKS["qqp"].splits == ("train", "validation")


def test_import_is_cheap_and_offline():
    code = "import sys, trainables.hub; assert 'datasets' not in sys.modules, 'datasets imported eagerly'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_mnli_splits(fixtures):
    train = TASKS["mnli"].load("train", "en")
    assert len(train) == 8 and all(isinstance(ex, PairExample) for ex in train)
    assert train[0] == PairExample(
        "Conceptually cream skimming has two basic dimensions - product and geography.",
        "Product and geography are what make cream skimming work. ", 1, "en")
    assert {ex.label for ex in train} == {0, 1} and all(ex.verses == () for ex in train)
    assert [ex.label for ex in TASKS["mnli"].load("validation", "en")] == [1, 2, 0]  # validation_matched
    assert [ex.label for ex in TASKS["mnli"].load("test", "en")] == [2, 2]  # validation_mismatched


def test_qqp_train_and_csv_validation(fixtures):
    train = TASKS["qqp"].load("train", "en")
    assert [ex.label for ex in train] == [0, 1, 0, 1]
    assert train[1].text_a == "How do I control my horny emotions?"
    assert train[1].text_b == "How do you control your horniness?"
    validation = TASKS["qqp"].load("validation", "en")  # fixture is a .csv: the "csv" builder
    assert [ex.label for ex in validation] == [0, 0, 1]
    assert validation[2].text_b == "What are some reasons to travel alone?"


def test_pawsx_languages_and_dropped_label(fixtures):
    german = TASKS["pawsx"].load("train", "de")
    assert len(german) == 2  # the third row is labeled -1
    assert [ex.label for ex in german] == [1, 0] and {ex.language for ex in german} == {"de"}
    assert german[0].text_a.startswith("Die NBA-Saison")
    assert [ex.label for ex in TASKS["pawsx"].load("train", "en")] == [0, 1, 0]
    french = TASKS["pawsx"].load("test", "fr")
    assert [(ex.label, ex.language) for ex in french] == [(1, "fr"), (0, "fr")]
    assert french[0].text_a == "C'est le siège du district de Zerendi dans la région d'Akmola."


def test_xnli_languages(fixtures):
    assert [ex.label for ex in TASKS["xnli"].load("train", "en")] == [1, 0, 0]
    german = TASKS["xnli"].load("test", "de")
    assert [ex.label for ex in german] == [1, 2, 0] and german[1].text_b == "Er sagte kein Wort."
    chinese = TASKS["xnli"].load("test", "zh")
    assert chinese[0] == PairExample("他说，妈妈，我回来了。", "校车把他放下后，他立即给他妈妈打了电话。", 1, "zh")


def test_tatoeba_query_is_english(fixtures):
    german = TASKS["tatoeba"].load("test", "de")  # config tatoeba.deu, hub split "validation"
    assert len(german) == 4 and all(isinstance(ex, RetrievalExample) for ex in german)
    assert german[0] == RetrievalExample("I have to go to sleep.", "Ich muss schlafen gehen.", "de")
    assert german[3].target == 'Das Passwort ist "Muiriel".'  # trailing newline stripped, quotes kept
    chinese = TASKS["tatoeba"].load("test", "zh")  # config tatoeba.cmn
    assert (chinese[1].query, chinese[1].target) == ("I have to go to sleep.", "我该去睡觉了。")
    assert {ex.language for ex in chinese} == {"zh"}


def test_bucc_gold_pairs(fixtures):
    validation = TASKS["bucc"].load("validation", "de")
    assert validation == [
        RetrievalExample("The town lies on the bank of the Rhine.", "Die Stadt liegt am Ufer des Rheins.", "de"),
        RetrievalExample("He was born in Berlin in 1902.", "Er wurde 1902 in Berlin geboren.", "de"),
    ]
    assert len(TASKS["bucc"].load("test", "de")) == 3
    chinese = TASKS["bucc"].load("test", "zh")
    assert chinese[1] == RetrievalExample("The film was released in 2005.", "这部电影于2005年上映。", "zh")


def test_parquet_fixture(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "google__xtreme" / "tatoeba.fra"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"source_sentence": ["Je dois dormir.\n"], "target_sentence": ["I must sleep.\n"],
                             "source_lang": ["fra"], "target_lang": ["eng"]}), folder / "validation.parquet")
    monkeypatch.setenv(hub.FIXTURES_ENV, str(tmp_path))
    assert TASKS["tatoeba"].load("test", "fr") == [RetrievalExample("I must sleep.", "Je dois dormir.", "fr")]


@pytest.mark.parametrize("name, split, language, valid", [
    ("xnli", "test", "xx", "ar, bg, de"),
    ("pawsx", "dev", "de", "train, validation, test"),
    ("qqp", "test", "en", "train, validation"),
    ("tatoeba", "train", "de", "test"),
    ("bucc", "test", "en", "de, fr, ru, zh"),
])
def test_unknown_language_or_split(fixtures, name, split, language, valid):
    with pytest.raises(UserError, match=valid):
        TASKS[name].load(split, language)


def test_unknown_task_and_missing_fixture(fixtures):
    with pytest.raises(UserError, match="valid: mnli, qqp, pawsx, xnli, tatoeba, bucc"):
        hub.load_examples("squad", "train", "en")
    with pytest.raises(UserError, match="no fixture for facebook/xnli config sw split test"):
        TASKS["xnli"].load("test", "sw")


def test_wrong_schema_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "facebook__xnli" / "fr"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_text('{"sentence1": "a", "sentence2": "b", "label": 0}\n')
    monkeypatch.setenv(hub.FIXTURES_ENV, str(tmp_path))
    with pytest.raises(UserError, match=r"lacks the columns \['hypothesis', 'premise'\]"):
        TASKS["xnli"].load("test", "fr")


def test_offline_without_fixtures_is_one_clean_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != hub.FIXTURES_ENV}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), HF_DATASETS_CACHE=str(tmp_path / "datasets"))
    code = ("from trainables.errors import exit_on_user_error\nfrom trainables.hub import HUB_TASKS\n"
            "with exit_on_user_error():\n    HUB_TASKS[0].load('train', 'en')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: nyu-mll/glue (mnli) needs Hugging Face hub access")
    assert hub.FIXTURES_ENV in last
