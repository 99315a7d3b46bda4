"""Hub tasks through `datasets.load_dataset`: pair classification (MNLI, QQP, ANLI, PAWS-X, XNLI), single-text
classification (SST-2), multiple choice (CommonsenseQA, Cosmos QA, HellaSwag), retrieval (Tatoeba, BUCC), extractive
QA (SQuAD, XQuAD, MLQA, TyDiQA-GoldP) and word tagging (PAN-X NER, UD POS).

Each dataset is one row of `SOURCES`: hub id, our language -> hub config, our split -> hub split, which hub column
fills which example field, and the function that turns one such row into an example (trainables/hub_rows.py). One
code path loads every one of them: `_load_rows` asks the hub, or, when `XSTILTS_HUB_FIXTURES=<dir>` is set, loads
`<dir>/<hub id, "/" as "__">/<config>/<hub split>.{jsonl,json,csv,parquet}` through the same `load_dataset` (builder
"json"/"csv"/"parquet"); the same row mapping then runs on either. Fixture files are written in the hub dataset's own
schema (column names, nested `answers`, ClassLabel integers). A split "a+b" is hub splits a and b, concatenated.

Each declaration carries the size of its train split as the hub documents it (`Task.train_size`), so a dry run checks
the size ladder without loading anything. A task of the paper with no public copy (CCG) is declared with source
"unavailable": the registry lists it, and loading it is a UserError that says why.

Rows without labels (label -1, "" or missing, a question without answers) are skipped and counted in a warning. A QA
answer that is not found at its character offset in the context stops the load with a UserError naming the row.

The multilingual intermediate pools (multi_xnli, multi_tydiqa) are declared in trainables/hub_multilingual.py and
load through `load_examples` with their own HubSource. Importing this module is cheap: `datasets` is imported only
when a task is loaded.
"""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional

from trainables.errors import UserError
from trainables.hub_rows import (COSMOS_OPTIONS, _choice, _lettered_choice, _numbered_answers, _pair, _retrieval,
                                 _single, _span, _tagging)
from trainables.types import (CHOICE, INTERMEDIATE, PAIR, RETRIEVAL, SINGLE, SPAN, TAGGING, TARGET, TEMPERATURE,
                              Mixture, Task)

FIXTURES_ENV = "XSTILTS_HUB_FIXTURES"
FIXTURE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
UNAVAILABLE = "unavailable"   # Task.source of a declared task that has no public copy
log = logging.getLogger(__name__)

# (fields of one hub row, renamed to example fields; our language) -> an example, or None for a row without labels
RowConverter = Callable[[dict, str], Optional[object]]


@dataclass(frozen=True)
class HubSource:
    hub_id: str
    configs: dict[str, str]   # our ISO 639-1 language -> hub config name
    splits: dict[str, str]    # our split -> hub split
    columns: dict[str, str]   # example field -> hub column
    to_example: RowConverter
    train_from: str = ""      # our train split is this other source's train split (XTREME trains XQuAD on SQuAD)
    keep: Optional[Callable[[dict, str], bool]] = None  # which rows of a config belong to a language, if not all
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)  # our split -> languages the hub lacks it in

    @property
    def split_names(self) -> tuple[str, ...]:
        return ("train",) * bool(self.train_from) + tuple(self.splits)


# --- the sources -----------------------------------------------------------------------------------------------

def _same(languages: str) -> dict[str, str]:
    return {lang: lang for lang in languages.split()}


THREE_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
# Hub test labels hidden: the hub's validation split is our test split (as MNLI's mismatched one), none is carved.
HIDDEN_TEST_SPLITS = {"train": "train", "test": "validation"}
PAIR_COLUMNS = {"text_a": "sentence1", "text_b": "sentence2", "label": "label"}
NLI_COLUMNS = {"text_a": "premise", "text_b": "hypothesis", "label": "label"}
RETRIEVAL_COLUMNS = {"query": "target_sentence", "target": "source_sentence"}
QA_COLUMNS = {"id": "id", "question": "question", "context": "context", "answers": "answers"}
XNLI_LANGUAGES = "ar bg de el en es fr hi ru sw th tr ur vi zh"
XNLI_SELECTION_PERCENT = 20   # of XNLI validation, held out for the xnli target's model selection
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
XQUAD_LANGUAGES = "ar de el en es hi ro ru th tr vi zh"
MLQA_LANGUAGES = "en ar de es hi vi zh"
MLQA_SPLITS = {"validation": "validation", "test": "test"}
# TyDiQA-GoldP ids start with the language's English name: "arabic-2387335860751143628-1".
TYDIQA_NAMES = {"ar": "arabic", "bn": "bengali", "en": "english", "fi": "finnish", "id": "indonesian",
                "ko": "korean", "ru": "russian", "sw": "swahili", "te": "telugu"}
PANX_LANGUAGES = ("af ar bg bn de el en es et eu fa fi fr he hi hu id it ja jv ka kk ko ml mr ms my nl pt ru sw "
                  "ta te th tl tr ur vi yo zh")
PANX_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")   # the hub's ClassLabel order
# XTREME's UD POS treebank languages: ISO 639-1 -> the English language name in the config name.
UDPOS_NAMES = {
    "af": "Afrikaans", "ar": "Arabic", "eu": "Basque", "bg": "Bulgarian", "zh": "Chinese", "nl": "Dutch",
    "en": "English", "et": "Estonian", "fi": "Finnish", "fr": "French", "de": "German", "el": "Greek",
    "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "kk": "Kazakh", "ko": "Korean", "mr": "Marathi", "fa": "Persian", "pt": "Portuguese", "ru": "Russian",
    "es": "Spanish", "tl": "Tagalog", "ta": "Tamil", "te": "Telugu", "th": "Thai", "tr": "Turkish", "ur": "Urdu",
    "vi": "Vietnamese", "yo": "Yoruba",
}
UPOS_TAGS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
             "SCONJ", "SYM", "VERB", "X")   # the hub's ClassLabel order


def _tydiqa_row_in(fields: dict, language: str) -> bool:
    return fields["id"].split("-", 1)[0] == TYDIQA_NAMES[language]


SOURCES: dict[str, HubSource] = {
    # GLUE test labels are hidden (-1), so MNLI's mismatched validation set serves as our test split, and QQP
    # has no test split.
    "mnli": HubSource(
        "nyu-mll/glue", {"en": "mnli"},
        {"train": "train", "validation": "validation_matched", "test": "validation_mismatched"}, NLI_COLUMNS, _pair),
    "qqp": HubSource(
        "nyu-mll/glue", {"en": "qqp"}, {"train": "train", "validation": "validation"},
        {"text_a": "question1", "text_b": "question2", "label": "label"}, _pair),
    "pawsx": HubSource("google-research-datasets/paws-x", _same(PAWSX_LANGUAGES), THREE_SPLITS, PAIR_COLUMNS, _pair),
    # Validation is the first 20% of XNLI's validation split (trainables/hub_multilingual.py: the other 80% is the
    # multilingual intermediate pool multi_xnli).
    "xnli": HubSource("facebook/xnli", _same(XNLI_LANGUAGES),
                      {"train": "train", "validation": f"validation[:{XNLI_SELECTION_PERCENT}%]", "test": "test"},
                      NLI_COLUMNS, _pair),
    # XTREME puts the non-English side in source_sentence and English in target_sentence. Tatoeba has a single
    # hub split ("validation"), used by XTREME as the test set.
    "tatoeba": HubSource(
        "google/xtreme", {lang: f"tatoeba.{iso3}" for lang, iso3 in TATOEBA_ISO3.items()}, {"test": "validation"},
        RETRIEVAL_COLUMNS, _retrieval),
    # BUCC rows are the gold pairs only; validation is the BUCC "sample" set, test the BUCC "training" set.
    "bucc": HubSource(
        "google/xtreme", {lang: f"bucc18.{lang}" for lang in BUCC_LANGUAGES.split()},
        {"validation": "validation", "test": "test"}, RETRIEVAL_COLUMNS, _retrieval),
    "squad": HubSource("rajpurkar/squad", {"en": "plain_text"}, {"train": "train", "validation": "validation"},
                       QA_COLUMNS, _span),
    # XQuAD's one hub split is XTREME's test set; like MLQA it trains on SQuAD v1.1.
    "xquad": HubSource("google/xquad", {lang: f"xquad.{lang}" for lang in XQUAD_LANGUAGES.split()},
                       {"test": "validation"}, QA_COLUMNS, _span, train_from="squad"),
    # MLQA as XTREME packages it (parquet): configs MLQA.<context language>.<question language>. Every example's
    # `language` is the non-English side X, so a results row keeps one language: X-X, an English question on an
    # X context (question_language "en"), and an X question on an English context (context_language "en").
    "mlqa": HubSource("google/xtreme", {lang: f"MLQA.{lang}.{lang}" for lang in MLQA_LANGUAGES.split()},
                      MLQA_SPLITS, QA_COLUMNS, _span, train_from="squad"),
    "mlqa_en_question": HubSource(
        "google/xtreme", {lang: f"MLQA.{lang}.en" for lang in MLQA_LANGUAGES.split()}, MLQA_SPLITS, QA_COLUMNS,
        partial(_span, question_language="en"), train_from="squad"),
    "mlqa_en_context": HubSource(
        "google/xtreme", {lang: f"MLQA.en.{lang}" for lang in MLQA_LANGUAGES.split()}, MLQA_SPLITS, QA_COLUMNS,
        partial(_span, context_language="en"), train_from="squad"),
    # One config holds every language. XTREME trains on the English part of the GoldP train split and tests on
    # the dev split.
    "tydiqa": HubSource("google/xtreme", {lang: "tydiqa" for lang in TYDIQA_NAMES},
                        {"train": "train", "test": "validation"}, QA_COLUMNS, _span, keep=_tydiqa_row_in),
    "panx": HubSource("google/xtreme", {lang: f"PAN-X.{lang}" for lang in PANX_LANGUAGES.split()}, THREE_SPLITS,
                      {"words": "tokens", "labels": "ner_tags"}, _tagging),
    "udpos": HubSource(
        "google/xtreme", {lang: f"udpos.{name}" for lang, name in UDPOS_NAMES.items()}, THREE_SPLITS,
        {"words": "tokens", "labels": "pos_tags"}, _tagging,
        missing={"train": ("th", "tl", "yo"), "validation": ("kk", "th", "tl", "yo")}),
    # One task over ANLI's three rounds, as X-STILTs trained on ANLI (jiant also declares a task per round; round 1
    # alone would cap the size ladder at 16,946).
    "anli": HubSource("facebook/anli", {"en": "plain_text"},
                      {"train": "train_r1+train_r2+train_r3", "validation": "dev_r1+dev_r2+dev_r3",
                       "test": "test_r1+test_r2+test_r3"}, NLI_COLUMNS, _pair),
    "commonsense_qa": HubSource(
        "tau/commonsense_qa", {"en": "default"}, HIDDEN_TEST_SPLITS,
        {"question": "question", "choices": "choices", "answer": "answerKey"}, _lettered_choice),
    "cosmos_qa": HubSource(
        "allenai/cosmos_qa", {"en": "default"}, HIDDEN_TEST_SPLITS,
        {"context": "context", "question": "question", "label": "label",
         **{f"answer{i}": f"answer{i}" for i in range(COSMOS_OPTIONS)}}, _numbered_answers),
    "hellaswag": HubSource("Rowan/hellaswag", {"en": "default"}, HIDDEN_TEST_SPLITS,
                           {"context": "ctx", "choices": "endings", "label": "label"}, _choice),
    "sst2": HubSource("nyu-mll/glue", {"en": "sst2"}, HIDDEN_TEST_SPLITS, {"text": "sentence", "label": "label"},
                      _single),
}

# Tasks of the paper without a public copy: name -> why.
UNAVAILABLE_REASONS = {
    "ccg": "CCGbank (LDC2005T13) is licensed by the Linguistic Data Consortium and has no public hub copy",
}


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
    """The hub dataset `hub_id`/`config`, split `split` (a `datasets.Dataset`; "a+b" concatenates hub splits a and
    b; "validation[:20%]" is datasets' slice of a split), from the hub or from fixtures."""
    import datasets

    if "+" in split:
        return datasets.concatenate_datasets([_load_rows(hub_id, config, part) for part in split.split("+")])
    fixtures = os.environ.get(FIXTURES_ENV)
    if fixtures:   # a sliced split ("validation[:20%]") reads the file of its whole split
        whole = split.split("[", 1)[0]
        path = _fixture_file(fixtures, hub_id, config, whole)
        return datasets.load_dataset(FIXTURE_BUILDERS[path.suffix], data_files={whole: str(path)}, split=split)
    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except _hub_unreachable_errors() as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"{hub_id} ({config}) needs Hugging Face hub access, or local files in the hub's schema "
                        f"via {FIXTURES_ENV}=<dir> ({reason})") from err
    except (RuntimeError, ValueError, FileNotFoundError) as err:   # e.g. a script-based dataset, a renamed split
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"datasets {datasets.__version__} cannot load {hub_id} ({config}, split {split}): {reason}; "
                        f"update its SOURCES row in trainables/hub.py or point {FIXTURES_ENV} at local files") from err


def load_examples(name: str, split: str, language: str, source: Optional[HubSource] = None) -> list:
    """Examples of hub task `name` for one of our splits (train/validation/test) and ISO 639-1 language; `source`
    is the task's HubSource when it is declared outside SOURCES (trainables/hub_multilingual.py)."""
    if name in UNAVAILABLE_REASONS:
        raise UserError(f"task '{name}' is unavailable: {UNAVAILABLE_REASONS[name]}; choose another task")
    if source is None and name not in SOURCES:
        raise UserError(f"unknown hub task '{name}'; valid: {', '.join(SOURCES)}")
    source = source or SOURCES[name]
    if split not in source.split_names:
        raise UserError(f"task '{name}' has no split '{split}'; valid: {', '.join(source.split_names)}")
    if split == "train" and source.train_from:
        return load_examples(source.train_from, split, language)
    if language not in source.configs:
        raise UserError(f"task '{name}' has no language '{language}'; valid: {', '.join(source.configs)}")
    if language in source.missing.get(split, ()):
        raise UserError(f"{source.hub_id} has no {split} split for '{language}' (task '{name}'); languages "
                        f"without one: {', '.join(source.missing[split])}")
    config, hub_split = source.configs[language], source.splits[split]
    rows = _load_rows(source.hub_id, config, hub_split)
    missing = sorted(set(source.columns.values()) - set(rows.column_names))
    if missing:
        raise UserError(f"{source.hub_id} ({config}, {hub_split}) lacks the columns {missing}; "
                        f"it has {rows.column_names}")
    examples, unlabeled = [], 0
    for index, row in enumerate(rows):
        fields = {field_name: row[column] for field_name, column in source.columns.items()}
        if source.keep is not None and not source.keep(fields, language):
            continue
        try:
            example = source.to_example(fields, language)
        except UserError as err:
            raise UserError(f"{source.hub_id} ({config}, {hub_split}) row {index}: {err}") from None
        if example is None:
            unlabeled += 1
        else:
            examples.append(example)
    if unlabeled:
        log.warning("%s (%s, %s): skipped %d rows without labels, kept %d", source.hub_id, config, hub_split,
                    unlabeled, len(examples))
    return examples


def _task(name: str, role: str, fmt: str, metric: str, max_length: int, description: str, num_labels: int = 0,
          label_names: tuple[str, ...] = (), train_size: int = 0, source: Optional[HubSource] = None,
          load: Optional[Callable[[str, str], list]] = None, train_language: str = "en") -> Task:
    """A hub task's Task record; `source` and `load` for one declared outside SOURCES (trainables/hub_multilingual)."""
    declared = source or SOURCES[name]
    return Task(
        name=name, role=role, format=fmt, languages=tuple(declared.configs), metric=metric,
        num_labels=num_labels or len(label_names), load=load or partial(load_examples, name),
        splits=declared.split_names, train_language=train_language, source="hub", max_length=max_length,
        description=description, label_names=label_names, train_size=train_size)


SQUAD_TRAIN_SIZE = 87_599   # also the train split of the QA targets that train on SQuAD


HUB_TASKS: list[Task] = [
    _task("mnli", INTERMEDIATE, PAIR, "accuracy", 128,
          "MultiNLI (GLUE): English premise/hypothesis -> entailment, neutral, contradiction.", num_labels=3,
          train_size=392_702),
    _task("qqp", INTERMEDIATE, PAIR, "accuracy", 128,
          "Quora Question Pairs (GLUE): are two English questions duplicates?", num_labels=2, train_size=363_846),
    _task("pawsx", TARGET, PAIR, "accuracy", 128,
          "PAWS-X: paraphrase identification of adversarial sentence pairs in 7 languages.", num_labels=2,
          train_size=49_401),
    _task("xnli", TARGET, PAIR, "accuracy", 128,
          "XNLI: MNLI-style natural language inference in 15 languages; validation is the first 20% of XNLI's, "
          "the rest being the multi_xnli pool.", num_labels=3, train_size=392_702),
    _task("tatoeba", TARGET, RETRIEVAL, "top1_accuracy", 64,
          "Tatoeba (XTREME): find the translation of an English sentence among all sentences of one of 36 languages."),
    _task("bucc", TARGET, RETRIEVAL, "top1_accuracy", 128,
          "BUCC 2018 (XTREME): retrieve the gold translation of an English sentence in de/fr/ru/zh."),
    _task("squad", INTERMEDIATE, SPAN, "f1", 384,
          "SQuAD v1.1: extractive question answering on English Wikipedia paragraphs.", train_size=SQUAD_TRAIN_SIZE),
    _task("xquad", TARGET, SPAN, "f1", 384,
          "XQuAD: 1,190 SQuAD v1.1 dev questions in English and 11 professional translations; trains on SQuAD.",
          train_size=SQUAD_TRAIN_SIZE),
    _task("mlqa", TARGET, SPAN, "mlqa_f1", 384,
          "MLQA: extractive QA with question and context in one of 7 languages; trains on SQuAD v1.1.",
          train_size=SQUAD_TRAIN_SIZE),
    _task("mlqa_en_question", TARGET, SPAN, "mlqa_f1", 384,
          "MLQA cross-lingual: an English question on a context in language X (the row's language).",
          train_size=SQUAD_TRAIN_SIZE),
    _task("mlqa_en_context", TARGET, SPAN, "mlqa_f1", 384,
          "MLQA cross-lingual: a question in language X (the row's language) on an English context.",
          train_size=SQUAD_TRAIN_SIZE),
    _task("tydiqa", TARGET, SPAN, "f1", 384,
          "TyDiQA-GoldP (XTREME): information-seeking QA in 9 languages; trains on its English part.",
          train_size=3_696),   # XTREME's count of the English rows in the hub's 49,881-row train split
    _task("panx", TARGET, TAGGING, "entity_f1", 128,
          "PAN-X / WikiANN (XTREME): named entities (PER, ORG, LOC) in IOB2 tags, 40 languages.",
          label_names=PANX_TAGS, train_size=20_000),
    _task("udpos", TARGET, TAGGING, "token_accuracy", 128,
          "UD POS (XTREME): universal part-of-speech tags of Universal Dependencies v2.5 treebanks, 33 languages.",
          label_names=UPOS_TAGS, train_size=21_253),
    _task("anli", INTERMEDIATE, PAIR, "accuracy", 256,
          "Adversarial NLI, rounds 1-3 together: premise/hypothesis -> entailment, neutral, contradiction.",
          num_labels=3, train_size=16_946 + 45_460 + 100_459),
    _task("commonsense_qa", INTERMEDIATE, CHOICE, "accuracy", 64,
          "CommonsenseQA: the answer to an English commonsense question among 5 options.", num_labels=5,
          train_size=9_741),
    _task("cosmos_qa", INTERMEDIATE, CHOICE, "accuracy", 256,
          "Cosmos QA: commonsense reading comprehension; a narrative and a question, 4 candidate answers.",
          num_labels=COSMOS_OPTIONS, train_size=25_262),
    _task("hellaswag", INTERMEDIATE, CHOICE, "accuracy", 128,
          "HellaSwag: the plausible ending of an ActivityNet or WikiHow context among 4.", num_labels=4,
          train_size=39_905),
    _task("sst2", INTERMEDIATE, SINGLE, "accuracy", 64,
          "SST-2 (GLUE): sentiment (negative, positive) of an English movie-review sentence.", num_labels=2,
          train_size=67_349),
    Task("ccg", INTERMEDIATE, TAGGING, ("en",), "token_accuracy", 0, partial(load_examples, "ccg"), source=UNAVAILABLE,
         description=f"CCG supertagging, an X-STILTs intermediate task. Unavailable: {UNAVAILABLE_REASONS['ccg']}."),
]

# The paper's multi-task intermediate training (Phang et al. 2020: "multi-task intermediate offers small additional
# improvements"), over the paper's intermediate tasks that have a public copy here. Temperature 2 keeps MNLI and QQP
# (about 380k examples each) from drowning CommonsenseQA (10k); the paper's own mixing rule is not restated here.
HUB_MIXTURES: list[Mixture] = [
    Mixture("xstilts_multitask", ("mnli", "qqp", "squad", "anli", "commonsense_qa", "cosmos_qa", "hellaswag"),
            TEMPERATURE, 2.0, description="the paper's intermediate tasks at once, p_i ~ n_i^(1/2)"),
]
