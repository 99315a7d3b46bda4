"""THE task registry: the one place that lists every task, offline (built from bible.db) and hub alike.

    from trainables.tasks import TASKS, get_task, load_examples, task_counts
    load_examples("en_paraphrase", "train", "en")      # -> list[PairExample]

Languages per split (split_languages): a train split holds the task's train_language only (English, or "all" for
multi_paraphrase, whose mixed pool also has fr/de/tl and cross-language pairs); an evaluation split holds every
language of the task, plus its train_language (English development data for a target trained in English).

Command line: `python -m trainables.tasks` prints a table with example counts; `--json` prints the registry as JSON;
`--task NAME` shows one task; hub tasks get counts only with `--include-hub` (loading them needs the hub), and show
the train size their declaration documents until then. A task with source "unavailable" (no public copy) is listed
with the reason.

Mixtures (several intermediate tasks trained at once, one head each: trainables/mixtures.py) are declared here too,
as `Mixture` records; a mixture's name stands wherever an intermediate task name does (`get_mixture`, `is_mixture`).
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import importlib
import json
import os
import pickle
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from trainables import bible_span_tagging, bible_tasks
from trainables.errors import UserError, exit_on_user_error
from trainables.types import (CHOICE, INTERMEDIATE, PAIR, RETRIEVAL, SAMPLINGS, SINGLE, SPAN, TAGGING, TARGET,
                              TEMPERATURE, Mixture, Task)

TWELVE = ("en", "fr", "de", "tl", "es", "pt", "it", "ar", "ru", "ko", "fa", "vi")
ELEVEN = TWELVE[1:]

OFFLINE_TASKS = [
    Task("en_paraphrase", INTERMEDIATE, PAIR, ("en",), "accuracy", 2, bible_tasks.en_paraphrase,
         description="two English translations (KJV/BBE/WEB) of one verse vs. neighbouring/same-chapter/random verses"),
    Task("en_crossref", INTERMEDIATE, PAIR, ("en",), "accuracy", 2, bible_tasks.en_crossref,
         description="is there a human-curated cross reference from verse A to verse B (WEB text)"),
    Task("en_next_verse", INTERMEDIATE, CHOICE, ("en",), "accuracy", 4, bible_tasks.en_next_verse, max_length=128,
         description="pick the verse that follows the context among 4 verses of the same chapter (WEB text)"),
    Task("multi_paraphrase", INTERMEDIATE, PAIR, ("fr", "de", "tl"), "accuracy", 2, bible_tasks.multi_paraphrase,
         train_language="all",
         description="two human translations of one verse within fr/de/tl or across them vs. hard negatives"),
    Task("genre", TARGET, SINGLE, TWELVE, "accuracy", 7, bible_tasks.genre, max_length=64,
         description="genre of the verse's book (law, history, wisdom, prophets, gospels/acts, epistles, apocalyptic)"),
    Task("paraphrase_x", TARGET, PAIR, ("fr", "de", "tl"), "accuracy", 2, bible_tasks.paraphrase_x,
         description="two translations of one verse vs. an overlap-matched verse of the same chapter"),
    Task("retrieval", TARGET, RETRIEVAL, ELEVEN, "top1_accuracy", 0, bible_tasks.retrieval,
         splits=("validation", "test"), max_length=128,
         description="find the translation of an English verse among all verses of the split (en -> X)"),
    Task("verse_qa", TARGET, SPAN, ("fr", "de", "tl"), "f1", 0, bible_span_tagging.verse_qa, max_length=384,
         max_answer_tokens=128,
         description="extractive QA: the question is a verse in one translation, the answer that verse's text in a "
                     "passage of 4-6 verses of its chapter in another translation of the same language"),
    Task("verse_qa_xlt", TARGET, SPAN, ELEVEN, "f1", 0, bible_span_tagging.verse_qa_xlt, max_length=384,
         max_answer_tokens=128,
         description="verse_qa across languages (as MLQA's G-XLT): an English (KJV) question verse, the passage in "
                     "language X; the same passages as verse_qa, trained on verse_qa's English data"),
    Task("verse_boundaries", TARGET, TAGGING, TWELVE, "entity_f1", 3, bible_span_tagging.verse_boundaries,
         max_length=384, label_names=bible_span_tagging.VERSE_LABELS,
         description="IOB2 verse segmentation of 2-5 consecutive verses without verse numbers: B-VERSE on each "
                     "verse's first word, I-VERSE on the rest (no word is O), entity F1 = exact verses"),
]


# Tasks of different formats, so a mixture cell runs offline: pairs and multiple choice, the smaller pool raised by T=2.
OFFLINE_MIXTURES = [
    Mixture("en_pair_choice", ("en_paraphrase", "en_next_verse"), TEMPERATURE, 2.0,
            description="en_paraphrase (pairs) + en_next_verse (multiple choice), p_i ~ n_i^(1/2)"),
]

# The hub declarations: module -> its lists of tasks and of mixtures (the registry works without these modules).
HUB_MODULES = {"trainables.hub": {"tasks": "HUB_TASKS", "mixtures": "HUB_MIXTURES"},
               "trainables.hub_multilingual": {"tasks": "MULTILINGUAL_TASKS"}}


def _hub_declarations(kind: str) -> list:
    """The "tasks" or "mixtures" that the HUB_MODULES which exist and import declare."""
    found = []
    for module_name, attributes in HUB_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found += getattr(module, attributes.get(kind, ""), []) if kind in attributes else []
    return found


def _hub_tasks() -> list[Task]:
    return _hub_declarations("tasks")


@lru_cache(maxsize=None)
def registry() -> dict[str, Task]:
    """name -> Task. Built on first use, so importing this module never imports the hub module (and datasets)."""
    tasks = {task.name: task for task in OFFLINE_TASKS}
    for task in _hub_tasks():
        tasks.setdefault(task.name, task)  # an offline task wins a name clash
    return tasks


def __getattr__(name: str):
    if name == "TASKS":  # module attribute computed on first access (PEP 562)
        return registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=None)
def mixture_registry() -> dict[str, Mixture]:
    """name -> Mixture, offline ones first (they win a name clash, as tasks do)."""
    mixtures = {}
    for mixture in OFFLINE_MIXTURES + _hub_declarations("mixtures"):
        mixtures.setdefault(mixture.name, mixture)
    return mixtures


def _unknown(name: str, kind: str, known) -> UserError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return UserError(f"unknown {kind} {name!r}; {hint}known {kind}s: {', '.join(known)}")


def get_task(name: str) -> Task:
    tasks = registry()
    if name not in tasks:
        if name in mixture_registry():
            raise UserError(f"{name} is a mixture of {', '.join(mixture_registry()[name].components)}, not a task")
        raise _unknown(name, "task", list(tasks) + list(mixture_registry()))
    return tasks[name]


def is_mixture(name: str) -> bool:
    return name in mixture_registry()


def intermediate_task_names(name: str) -> tuple[str, ...]:
    """The tasks an intermediate cell trains on: a mixture's components, or the task itself."""
    return get_mixture(name).components if is_mixture(name) else (name,)


def get_mixture(name: str) -> Mixture:
    """The mixture declared under `name`, checked: its components are distinct intermediate tasks with train data,
    and its sampling rule is known."""
    if name not in mixture_registry():
        raise _unknown(name, "mixture", mixture_registry())
    mixture = mixture_registry()[name]
    for component in mixture.components:
        task = get_task(component)
        if task.role != INTERMEDIATE or "train" not in task.splits:
            raise UserError(f"mixture {name}: {component} is a {task.role} task; a mixture's components are "
                            f"intermediate tasks ({', '.join(names_with_role(INTERMEDIATE))})")
    if len(set(mixture.components)) != len(mixture.components) or len(mixture.components) < 2:
        raise UserError(f"mixture {name} needs two or more distinct components, not {', '.join(mixture.components)}")
    if mixture.sampling not in SAMPLINGS or not mixture.temperature > 0:
        raise UserError(f"mixture {name}: sampling must be one of {', '.join(SAMPLINGS)} with a temperature above 0, "
                        f"not {mixture.sampling!r} with {mixture.temperature}")
    return mixture


def names_with_role(role: str) -> list[str]:
    """The registry's tasks of one role (INTERMEDIATE or TARGET), by name."""
    return [name for name, task in registry().items() if task.role == role]


def evaluated_languages(task: Task, eval_languages) -> list[str]:
    """The languages a sweep scores a target in: its own, narrowed to `eval_languages` unless that is None."""
    return [lang for lang in task.languages if eval_languages is None or lang in eval_languages]


def split_languages(task: Task, split: str) -> tuple[str, ...]:
    """The language keys load_examples accepts for one split of a task."""
    if split == "train":
        return (task.train_language,)
    if "train" in task.splits and task.train_language not in task.languages:
        return (*task.languages, task.train_language)
    return task.languages


@lru_cache(maxsize=None)
def _load(task_name: str, split: str, language: str) -> tuple:
    task = get_task(task_name)
    if task.source != "offline":
        return tuple(task.load(split, language))
    # Offline tasks take seconds to build from bible.db and every Ray trial is a fresh process: keep them on disk,
    # under a fingerprint of the builders' code and the database, written atomically.
    path = _disk_cache() / f"{task_name}-{split}-{language}.pkl"
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        pass
    examples = tuple(task.load(split, language))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
        pickle.dump(examples, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(handle.name, path)
    return examples


@lru_cache(maxsize=1)
def _disk_cache() -> Path:
    from trainables import bible, bible_span_tagging, bible_tasks, types
    from trainables.models import cache_root

    fingerprint = hashlib.sha256()
    for module in (bible, bible_tasks, bible_span_tagging, types):
        fingerprint.update(Path(module.__file__).read_bytes())
    database = bible.db_path()
    fingerprint.update(f"{database.resolve()}:{database.stat().st_size}:{database.stat().st_mtime_ns}".encode())
    return cache_root() / "tasks" / fingerprint.hexdigest()[:20]


def load_examples(task_name: str, split: str, language: str) -> list:
    """The examples of one split and language of a task (built once per process, then served from memory)."""
    task = get_task(task_name)
    if split not in task.splits:
        raise UserError(f"task {task_name} has no split {split!r}; valid: {', '.join(task.splits)}")
    languages = split_languages(task, split)
    if language not in languages:
        raise UserError(f"task {task_name} has no {split} data in language {language!r}; "
                        f"valid: {', '.join(languages)}")
    return list(_load(task_name, split, language))


def task_counts(task: Task) -> dict[str, dict[str, int]]:
    """{split: {language: number of examples}}."""
    return {split: {lang: len(_load(task.name, split, lang)) for lang in split_languages(task, split)}
            for split in task.splits}


# --- command line --------------------------------------------------------------------------------------------------

def _counts(task: Task, include_hub: bool) -> dict | None:
    """{split: {language: examples}}; None for a hub task unless asked. An unavailable task has nothing to count."""
    if task.source == "unavailable":
        return {split: {} for split in task.splits}
    return task_counts(task) if task.source != "hub" or include_hub else None


def _record(task: Task, counts: dict | None) -> dict:
    return {"name": task.name, "role": task.role, "format": task.format, "metric": task.metric,
            "num_labels": task.num_labels, "languages": list(task.languages), "train_language": task.train_language,
            "splits": list(task.splits), "source": task.source, "max_length": task.max_length,
            "description": task.description, "train_size": task.train_size, "counts": counts}


def _table(records: list[dict]) -> str:
    """One row per task; evaluation counts as "language validation/test", four languages per line."""
    head = f"{'task':<17} {'role':<12} {'format':<10} {'metric':<13} {'source':<11} {'train':>13}  "
    lines = [head + "evaluation: language validation/test", "-" * 122]
    for r in records:
        fmt = f"{r['format']}/{r['num_labels']}" if r["num_labels"] else r["format"]
        counts = r["counts"]
        if r["source"] == "unavailable":
            train, cells = "-", [r["description"]]
        elif counts is None:
            train = f"{r['train_size']:,}" if r["train_size"] else "-"
            documented = "train as the hub documents it; " if r["train_size"] else ""
            cells = [f"{', '.join(r['languages'])} ({documented}counts need hub access: --include-hub)"]
        else:
            train = f"{sum(counts['train'].values()):,}" if "train" in counts else "-"
            if "train" in counts and r["train_language"] != "en":
                train = f"{r['train_language']} {train}"
            eval_splits = [s for s in r["splits"] if s != "train"]
            cells = [f"{lang} {'/'.join(f'{counts[s][lang]:,}' for s in eval_splits)}"
                     for lang in (counts[eval_splits[0]] if eval_splits else [])]
        rows = ["  ".join(cells[i:i + 4]) for i in range(0, len(cells), 4)]
        lines.append(f"{r['name']:<17} {r['role']:<12} {fmt:<10} {r['metric']:<13} {r['source']:<11} {train:>13}  "
                     + f"\n{'':<{len(head)}}".join(rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainables.tasks", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the registry as JSON, with counts")
    parser.add_argument("--include-hub", action="store_true", help="also count hub tasks (needs hub access)")
    parser.add_argument("--task", action="append", metavar="NAME", help="only this task (repeatable)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        tasks = [get_task(name) for name in args.task] if args.task else list(registry().values())
        records = [_record(t, _counts(t, args.include_hub)) for t in tasks]
        if args.json:
            json.dump({r["name"]: r for r in records}, sys.stdout, indent=2)
            print()
        else:
            print(_table(records))
            if not args.task:
                print("\nmixtures (intermediate; one head per component):")
                for m in mixture_registry().values():
                    rule = m.sampling if m.sampling != TEMPERATURE else f"{m.sampling} T={m.temperature:g}"
                    print(f"  {m.name:<17} {' + '.join(m.components)}  ({rule})")


if __name__ == "__main__":
    main()
