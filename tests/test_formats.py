"""Span QA and tagging formats on the smoke encoder: featurising <-> decoding round trips, truncation counts, the
loss going down, and what zero-shot evaluation reports. The registry's contract for every format."""
from __future__ import annotations

import copy
import random

import pytest
import torch

from trainables.errors import UserError
from trainables.formats import FORMATS, TaskModel, get_format
from trainables.formats.base import IGNORE, collate
from trainables.phases import target_phase, zero_shot_evaluation
from trainables.training import TrainConfig, train
from trainables.types import EXAMPLE_TYPES, SPAN, TAGGING, TARGET, SpanExample, TaggingExample, Task

WORDS = "the a cat dog bird fish horse red blue green small big old runs sleeps eats sings flies swims".split()
NER = ("O", "B-ANIMAL", "I-ANIMAL")
ANIMALS = {"cat", "dog", "bird", "fish", "horse"}

pytestmark = pytest.mark.usefixtures("one_thread")


def task(fmt: str, metric: str, **fields) -> Task:
    return Task(name=f"toy_{fmt}", role=TARGET, format=fmt, languages=("en", "fr"), metric=metric,
                num_labels=len(NER) if fmt == TAGGING else 0, load=lambda split, language: [], max_length=48,
                label_names=NER if fmt == TAGGING else (), **fields)


def qa_examples(n: int, sentences: int = 4, seed: int = 0, language: str = "en") -> list[SpanExample]:
    """The context is `sentences` short sentences; the question repeats one of them; the answer is that sentence."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        parts = [" ".join(rng.sample(WORDS, 3)) + "." for _ in range(sentences)]
        pick = rng.randrange(sentences)
        context = " ".join(parts)
        start = context.index(parts[pick])
        examples.append(SpanExample(parts[pick], context, ((parts[pick], start),), language, id=str(i)))
    return examples


def tag_examples(n: int, seed: int = 0, language: str = "en", length: int = 6) -> list[TaggingExample]:
    """Animals are entities; "big" before an animal belongs to it (B on "big", I on the animal)."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        words = tuple(rng.choice(WORDS) for _ in range(length))
        labels = []
        for k, word in enumerate(words):
            if word in ANIMALS:
                labels.append(2 if k and words[k - 1] == "big" else 1)
            else:
                labels.append(1 if word == "big" and k + 1 < len(words) and words[k + 1] in ANIMALS else 0)
        examples.append(TaggingExample(words, tuple(labels), language))
    return examples


def perfect_outputs(features, fmt) -> list[torch.Tensor]:
    """Logits that put all mass on each row's training labels (what a perfectly trained head would output)."""
    outputs = []
    for row in features.rows:
        length = len(row["input_ids"])
        if fmt == SPAN:
            logits = torch.full((length, 2), -10.0)
            logits[row["start_positions"], 0] = logits[row["end_positions"], 1] = 10.0
        else:
            logits = torch.full((length, len(NER)), -10.0)
            for token, label in enumerate(row["labels"]):
                if label != IGNORE:
                    logits[token, label] = 10.0
        outputs.append(logits)
    return outputs


def test_every_example_type_has_a_format_and_retrieval_has_no_head():
    assert set(FORMATS) == set(EXAMPLE_TYPES)
    assert [name for name, fmt in FORMATS.items() if not fmt.trains] == ["retrieval"]
    with pytest.raises(UserError, match="unknown task format"):
        get_format("spam")


def test_span_windows_labels_and_decoding_round_trip(tokenizer):
    qa, fmt = task(SPAN, "f1"), get_format(SPAN)
    examples = qa_examples(6, sentences=12)   # contexts longer than one 48-token window
    features = fmt.featurize(tokenizer, examples, 48, qa)
    assert len(features) > len(examples) and sorted(set(features.example_index)) == list(range(6))
    assert features.notes == {"answers_truncated": 0, "questions_shortened": 0}
    for row, extra, index in zip(features.rows, features.extra, features.example_index):
        assert len(row["input_ids"]) <= 48
        if row["start_positions"]:   # a window that holds the answer: its tokens spell it
            first, last = extra["offsets"][row["start_positions"]], extra["offsets"][row["end_positions"]]
            assert examples[index].context[first[0]:last[1]].strip() == examples[index].answers[0][0]
    predictions = fmt.decode(perfect_outputs(features, SPAN), features, examples, qa)
    assert predictions == [ex.answers[0][0] for ex in examples]
    assert fmt.score(predictions, examples, qa) == {"score": 100.0, "exact_match": 100.0}


def test_mlqa_answers_are_normalised_in_the_contexts_language():
    """A German question on an English context (MLQA G-XLT): English articles are dropped, German ones are not."""
    mlqa, fmt = task(SPAN, "mlqa_f1"), get_format(SPAN)
    english_context = SpanExample("Wo?", "in the garden", (("garden", 7),), "de", context_language="en")
    german_context = SpanExample("Wo?", "im Garten", (("Garten", 3),), "de")
    assert fmt.score(["the garden"], [english_context], mlqa)["exact_match"] == 100.0
    assert fmt.score(["der Garten"], [german_context], mlqa)["exact_match"] == 100.0
    assert fmt.score(["the Garten"], [german_context], mlqa)["exact_match"] == 0.0


def test_span_answer_in_no_window_is_counted(tokenizer):
    long_answer = " ".join(WORDS * 3)
    context = f"first words. {long_answer} last words."
    example = SpanExample("what?", context, ((long_answer, context.index(long_answer)),), "en")
    features = get_format(SPAN).featurize(tokenizer, [example] + qa_examples(2), 32, task(SPAN, "f1"))
    assert features.notes == {"answers_truncated": 1, "questions_shortened": 0}


def test_long_questions_are_shortened_so_windows_keep_context(tokenizer):
    """A question of 90 words in windows of 48 tokens: cut to 24 tokens, counted, and the answer still found."""
    question = " ".join(WORDS * 5)
    example = SpanExample(question, "the cat runs. a dog sleeps.", (("a dog sleeps.", 14),), "en")
    features = get_format(SPAN).featurize(tokenizer, [example], 48, task(SPAN, "f1"))
    assert features.notes == {"answers_truncated": 0, "questions_shortened": 1}
    assert all(len(row["input_ids"]) <= 48 for row in features.rows)


def test_tagging_labels_sit_on_first_subtokens_and_decode_back(tokenizer):
    ner, fmt = task(TAGGING, "entity_f1"), get_format(TAGGING)
    examples = tag_examples(8)
    features = fmt.featurize(tokenizer, examples, 48, ner)
    assert features.notes == {"words_truncated": 0}
    for row, example in zip(features.rows, examples):
        assert [label for label in row["labels"] if label != IGNORE] == list(example.labels)
    predictions = fmt.decode(perfect_outputs(features, TAGGING), features, examples, ner)
    assert predictions == [list(ex.labels) for ex in examples]
    assert fmt.score(predictions, examples, ner) == {"score": 100.0}
    batch = collate(features.rows, features.pad_id)
    assert batch["labels"].shape == batch["input_ids"].shape and (batch["labels"] == IGNORE).any()


def test_tagging_words_cut_off_are_counted_and_scored_wrong(tokenizer):
    pos, fmt = task(TAGGING, "token_accuracy"), get_format(TAGGING)
    examples = tag_examples(2, length=30)
    features = fmt.featurize(tokenizer, examples, 12, pos)   # 10 word tokens at most of 30 words
    assert features.notes["words_truncated"] >= 40
    predictions = fmt.decode(perfect_outputs(features, TAGGING), features, examples, pos)
    kept = 60 - features.notes["words_truncated"]
    assert fmt.score(predictions, examples, pos)["score"] == pytest.approx(100.0 * kept / 60)


@pytest.mark.parametrize("fmt, metric, make", [(SPAN, "f1", qa_examples), (TAGGING, "entity_f1", tag_examples)])
def test_training_lowers_the_loss_and_evaluation_reports_every_language(tokenizer, smoke, fmt, metric, make):
    toy = task(fmt, metric)
    examples = make(16)
    cfg = TrainConfig(lr=3e-3, epochs=12, batch_size=16, warmup_ratio=0.0, max_length=48,
                      freeze_word_embeddings=True)
    model, result = target_phase(copy.deepcopy(smoke[1]), tokenizer, toy, examples, cfg, device="cpu")
    assert sum(result.losses[-3:]) < 0.7 * sum(result.losses[:3])
    scores = zero_shot_evaluation(model, tokenizer, toy, {"fr": make(5, seed=1, language="fr"),
                                                          "de": make(3, seed=2, language="de")}, device="cpu")
    figures = ("answers_truncated", "questions_shortened", "exact_match") if fmt == SPAN else ("words_truncated",)
    expected = {"fr", "de", "avg"} | {f"{language}/{figure}" for language in ("fr", "de") for figure in figures}
    assert set(scores) == expected
    assert all(0 <= scores[key] <= 100 for key in ("fr", "de", "avg"))
    assert scores["avg"] == pytest.approx((scores["fr"] + scores["de"]) / 2)


def test_train_runs_on_span_windows_not_examples(tokenizer, smoke):
    examples = qa_examples(4, sentences=12)
    fmt = get_format(SPAN)
    features = fmt.featurize(tokenizer, examples, 48, task(SPAN, "f1"))
    model = TaskModel(copy.deepcopy(smoke[1]), fmt, 0)
    result = train(model, features, TrainConfig(epochs=1, batch_size=2, max_length=48), device="cpu")
    assert result.steps == -(-len(features) // 2) > 2
