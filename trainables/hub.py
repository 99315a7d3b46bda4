"""Hub tasks: MNLI, QQP, PAWS-X, XNLI, Tatoeba and BUCC through `datasets.load_dataset`.

Each dataset is one row of `SOURCES`: hub id, our language -> hub config, our split -> hub split, and which hub
column fills which example field. One code path loads every one of them: `_load_rows` asks the hub, or, when
`XSTILTS_HUB_FIXTURES=<dir>` is set, loads `<dir>/<hub id, "/" as "__">/<config>/<hub split>.{jsonl,json,csv,parquet}`
through the same `load_dataset` (builder "json"/"csv"/"parquet"); the same row mapping then runs on either.
Fixture files are written in the hub dataset's own schema (column names and label encodings).

Importing this module is cheap: `datasets` is imported only when a task is loaded.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from trainables.errors import UserError
from trainables.types import (INTERMEDIATE, PAIR, RETRIEVAL, TARGET, PairExample, RetrievalExample, Task)

FIXTURES_ENV = "XSTILTS_HUB_FIXTURES"
FIXTURE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class HubSource:
    hub_id: str
    configs: dict[str, str]   # our ISO 639-1 language -> hub config name
    splits: dict[str, str]    # our split -> hub split
    columns: dict[str, str]   # example field -> hub column


def _same(languages: str) -> dict[str, str]:
    return {lang: lang for lang in languages.split()}


PAIR_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
XNLI_LANGUAGES = "ar bg de el en es fr hi ru sw th tr ur vi zh"
PAWSX_LANGUAGES = "en de es fr ja ko zh"
# XTREME's 36 Tatoeba languages: ISO 639-1 -> the ISO 639-3 code in the config name (zh is Mandarin, "cmn").
TATOEBA_ISO3 = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "es": "spa", "et": "est",
    "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hu": "hun", "id": "ind",
    "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz", "ko": "kor", "ml": "mal", "mr": "mar",
    "nl": "nld", "pt": "por", "ru": "rus", "sw": "swh", "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl",
    "tr": "tur", "ur": "urd", "vi": "vie", "zh": "cmn",
}
BUCC_LANGUAGES = "de fr ru zh"

SOURCES: dict[str, HubSource] = {
    # GLUE test labels are hidden (-1), so MNLI's mismatched validation set serves as our test split, and QQP
    # has no test split.
    "mnli": HubSource(
        "nyu-mll/glue", {"en": "mnli"},
        {"train": "train", "validation": "validation_matched", "test": "validation_mismatched"},
        {"text_a": "premise", "text_b": "hypothesis", "label": "label"}),
    "qqp": HubSource(
        "nyu-mll/glue", {"en": "qqp"}, {"train": "train", "validation": "validation"},
        {"text_a": "question1", "text_b": "question2", "label": "label"}),
    "pawsx": HubSource(
        "google-research-datasets/paws-x", _same(PAWSX_LANGUAGES), PAIR_SPLITS,
        {"text_a": "sentence1", "text_b": "sentence2", "label": "label"}),
    "xnli": HubSource(
        "facebook/xnli", _same(XNLI_LANGUAGES), PAIR_SPLITS,
        {"text_a": "premise", "text_b": "hypothesis", "label": "label"}),
    # XTREME puts the non-English side in source_sentence and English in target_sentence. Tatoeba has a single
    # hub split ("validation"), used by XTREME as the test set.
    "tatoeba": HubSource(
        "google/xtreme", {lang: f"tatoeba.{iso3}" for lang, iso3 in TATOEBA_ISO3.items()}, {"test": "validation"},
        {"query": "target_sentence", "target": "source_sentence"}),
    # BUCC rows are the gold pairs only; validation is the BUCC "sample" set, test the BUCC "training" set.
    "bucc": HubSource(
        "google/xtreme", {lang: f"bucc18.{lang}" for lang in BUCC_LANGUAGES.split()},
        {"validation": "validation", "test": "test"},
        {"query": "target_sentence", "target": "source_sentence"}),
}


def _to_example(fmt: str, fields: dict, language: str):
    """One hub row (already renamed to example fields) -> an example, or None for an unlabeled row."""
    if fmt == PAIR:
        if fields["label"] is None or int(fields["label"]) == -1:
            return None
        return PairExample(fields["text_a"], fields["text_b"], int(fields["label"]), language)
    # Tatoeba sentences keep the newline of the line they were read from.
    return RetrievalExample(fields["query"].strip(), fields["target"].strip(), language)


def _fixture_file(root: str, hub_id: str, config: str, split: str) -> Path:
    folder = Path(root) / hub_id.replace("/", "__") / config
    for suffix in FIXTURE_BUILDERS:
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    raise UserError(f"no fixture for {hub_id} config {config} split {split}: expected {folder / split}.jsonl "
                    f"(or .json/.csv/.parquet) under {FIXTURES_ENV}={root}")


def _hub_unreachable_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "the hub could not be reached and nothing is cached", across datasets 3.x-5.x."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("huggingface_hub.errors", "LocalEntryNotFoundError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _load_rows(hub_id: str, config: str, split: str):
    """The hub dataset `hub_id`/`config`, split `split` (a `datasets.Dataset`), from the hub or from fixtures."""
    import datasets

    fixtures = os.environ.get(FIXTURES_ENV)
    if fixtures:
        path = _fixture_file(fixtures, hub_id, config, split)
        return datasets.load_dataset(FIXTURE_BUILDERS[path.suffix], data_files={split: str(path)}, split=split)
    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except _hub_unreachable_errors() as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"{hub_id} ({config}) needs Hugging Face hub access, or local files in the hub's schema "
                        f"via {FIXTURES_ENV}=<dir> ({reason})") from err


def load_examples(name: str, split: str, language: str) -> list:
    """Examples of hub task `name` for one of our splits (train/validation/test) and ISO 639-1 language."""
    if name not in SOURCES:
        raise UserError(f"unknown hub task '{name}'; valid: {', '.join(SOURCES)}")
    source = SOURCES[name]
    if language not in source.configs:
        raise UserError(f"task '{name}' has no language '{language}'; valid: {', '.join(source.configs)}")
    if split not in source.splits:
        raise UserError(f"task '{name}' has no split '{split}'; valid: {', '.join(source.splits)}")
    config, hub_split = source.configs[language], source.splits[split]
    rows = _load_rows(source.hub_id, config, hub_split)
    missing = sorted(set(source.columns.values()) - set(rows.column_names))
    if missing:
        raise UserError(f"{source.hub_id} ({config}, {hub_split}) lacks the columns {missing}; "
                        f"it has {rows.column_names}")
    fmt = PAIR if "label" in source.columns else RETRIEVAL
    examples = (_to_example(fmt, {field: row[col] for field, col in source.columns.items()}, language)
                for row in rows)
    return [example for example in examples if example is not None]


def _task(name: str, role: str, fmt: str, num_labels: int, max_length: int, description: str) -> Task:
    source = SOURCES[name]
    return Task(
        name=name, role=role, format=fmt, languages=tuple(source.configs),
        metric="accuracy" if fmt == PAIR else "top1_accuracy", num_labels=num_labels,
        load=partial(load_examples, name), splits=tuple(source.splits), source="hub", max_length=max_length,
        description=description)


HUB_TASKS: list[Task] = [
    _task("mnli", INTERMEDIATE, PAIR, 3, 128,
          "MultiNLI (GLUE): English premise/hypothesis -> entailment, neutral, contradiction."),
    _task("qqp", INTERMEDIATE, PAIR, 2, 128,
          "Quora Question Pairs (GLUE): are two English questions duplicates?"),
    _task("pawsx", TARGET, PAIR, 2, 128,
          "PAWS-X: paraphrase identification of adversarial sentence pairs in 7 languages."),
    _task("xnli", TARGET, PAIR, 3, 128,
          "XNLI: MNLI-style natural language inference in 15 languages."),
    _task("tatoeba", TARGET, RETRIEVAL, 0, 64,
          "Tatoeba (XTREME): find the translation of an English sentence among all sentences of one of 36 languages."),
    _task("bucc", TARGET, RETRIEVAL, 0, 128,
          "BUCC 2018 (XTREME): retrieve the gold translation of an English sentence in de/fr/ru/zh."),
]
