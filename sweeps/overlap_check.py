"""No intermediate training example is also an evaluation example: checked on the texts before any sweep trains.

For every hub intermediate task of the preset's cells (English and multilingual; a mixture's components), its whole
train pool is compared with every hub target's validation and test split in every language the sweep scores
(validation selects models, test is reported: a row of either that was trained on would flatter the cell that saw
it). Examples are compared by their normalised text: every text field of the example (premise and hypothesis;
question and context; query and target; the words), Unicode NFKC, case-folded, whitespace collapsed. Any shared
example stops the sweep with one line naming the pair, the split, the language and the count.

It loads what the trials load, the same way (the hub, or XSTILTS_HUB_FIXTURES), so it runs on fixtures here and on
the hub on a cluster; --dry-run, which loads no hub data, skips it. Offline (Bible) tasks are left to their own
proof, by verse ids (tests/test_leakage.py): the Bible repeats some verses word for word, so equal texts there are
not the same example.
"""
from __future__ import annotations

import dataclasses
import unicodedata

from search_spaces.presets import Preset
from trainables.errors import UserError
from trainables.tasks import evaluated_languages, get_task, intermediate_task_names, load_examples

TEXT_FIELDS = ("text", "text_a", "text_b", "context", "question", "choices", "query", "target", "words")
EVALUATION_SPLITS = ("validation", "test")


def normalised_text(example) -> str:
    parts = []
    for field in dataclasses.fields(example):
        if field.name in TEXT_FIELDS:
            value = getattr(example, field.name)
            parts += value if isinstance(value, tuple) else [value]
    return "\x1f".join(" ".join(unicodedata.normalize("NFKC", part).casefold().split()) for part in parts)


def _texts(examples) -> set[str]:
    return {normalised_text(example) for example in examples}


def check_no_overlap(preset: Preset) -> None:
    """A UserError when an intermediate pool shares an example with an evaluation split the sweep scores."""
    pools = {}
    for cell in preset.cells():
        if cell.size == 0:
            continue
        for task in map(get_task, intermediate_task_names(cell.task)):
            if task.source == "hub" and task.name not in pools:
                pools[task.name] = _texts(load_examples(task.name, "train", task.train_language))
    if not pools:
        return
    for target in preset.targets:
        task = get_task(target)
        if task.source != "hub":
            continue
        for split in (s for s in EVALUATION_SPLITS if s in task.splits):
            for language in evaluated_languages(task, preset.eval_languages):
                evaluated = _texts(load_examples(target, split, language))
                for name, pool in pools.items():
                    shared = len(evaluated & pool)
                    if shared:
                        raise UserError(
                            f"intermediate task {name} (train) and target {target} ({split}, {language}) share "
                            f"{shared} example(s) with the same normalised text: an evaluation example would be "
                            f"trained on; choose another intermediate task or target, or fix the data")
