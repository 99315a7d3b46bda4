"""The training loop and the three phases on the smoke encoder (tiny random BERT, e5 tokenizer); no Ray."""
from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainables.errors import UserError
from trainables.formats import TaskModel, get_format
from trainables.formats.base import collate
from trainables.formats.retrieval import embed, retrieval_accuracy
from trainables.phases import intermediate_phase, target_phase, zero_shot_evaluation
from trainables.training import TrainConfig, batch_order, train
from trainables.types import (CHOICE, PAIR, RETRIEVAL, SINGLE, TARGET, ChoiceExample, PairExample,
                              RetrievalExample, Task, TextExample)

WORDS = "the a cat dog bird fish horse red blue green small big old runs sleeps eats sings flies swims".split()

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def make_encoder(smoke):
    """A fresh copy of the smoke encoder; seed != 0 re-draws every weight."""
    def make(seed: int = 0):
        encoder = copy.deepcopy(smoke[1])
        if seed:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for parameter in encoder.parameters():
                    parameter.normal_(std=0.02, generator=generator)
        return encoder
    return make


def sentence(rng: random.Random) -> str:
    return " ".join(rng.sample(WORDS, rng.randint(2, 4)))


def toy_examples(fmt: str, n: int, seed: int = 0, language: str = "en") -> list:
    """Learnable rules: pair = text_b repeats text_a; single = contains "good"; choice = the option with "yes"."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        text, label = sentence(rng), i % 2
        if fmt == PAIR:
            examples.append(PairExample(text, text if label else sentence(rng), label, language))
        elif fmt == SINGLE:
            examples.append(TextExample(f"{text} {'good' if label else 'bad'}", label, language))
        elif fmt == CHOICE:
            answer = i % 3
            options = tuple(f"{sentence(rng)} {'yes' if k == answer else 'no'}" for k in range(3))
            examples.append(ChoiceExample(text, options, answer, language))
        else:
            examples.append(RetrievalExample(text, text, language))
    return examples


def toy_task(fmt: str) -> Task:
    return Task(name=f"toy_{fmt}", role=TARGET, format=fmt, languages=("en", "fr"),
                metric="top1_accuracy" if fmt == RETRIEVAL else "accuracy",
                num_labels={PAIR: 2, SINGLE: 2, CHOICE: 3, RETRIEVAL: 0}[fmt], load=lambda split, language: [],
                max_length=32)


def head(encoder, fmt: str, num_labels: int | None = None, seed: int = 0) -> TaskModel:
    return TaskModel(encoder, get_format(fmt), toy_task(fmt).num_labels if num_labels is None else num_labels,
                     seed=seed)


def rows(tokenizer, fmt: str, examples: list, max_length: int = 32):
    return get_format(fmt).featurize(tokenizer, examples, max_length, toy_task(fmt))


def accuracy(model, tokenizer, examples: list, batch_size: int = 64) -> float:
    return zero_shot_evaluation(model, tokenizer, toy_task(model.fmt), {"en": examples}, device="cpu",
                                batch_size=batch_size, max_length=32)["en"]


CLASSIFICATION = [PAIR, SINGLE, CHOICE]
# Frozen word embeddings: the smoke encoder then trains 0.1M of its 16M parameters.
QUICK = dict(warmup_ratio=0.0, max_length=32, freeze_word_embeddings=True)


@pytest.mark.parametrize("fmt", CLASSIFICATION)
def test_training_lowers_the_loss_and_scores_are_points(tokenizer, make_encoder, fmt):
    examples = toy_examples(fmt, 12)
    model = head(make_encoder(), fmt)
    cfg = TrainConfig(lr=3e-3, epochs=20, batch_size=12, **QUICK)
    result = train(model, rows(tokenizer, fmt, examples), cfg, device="cpu")
    assert result.steps == result.global_step == len(result.losses) == 20
    assert sum(result.losses[-3:]) < 0.7 * sum(result.losses[:3])
    assert 0 <= accuracy(model, tokenizer, examples, batch_size=5) <= 100


def test_featurised_batches_match_the_tokenizers_padded_batch(tokenizer):
    """Featurising once and padding per batch gives exactly the tensors the tokenizer pads itself."""
    features = rows(tokenizer, CHOICE, toy_examples(CHOICE, 4))
    choice = collate(features.rows, features.pad_id)
    assert choice["input_ids"].shape[:2] == (4, 3) and choice["labels"].tolist() == [0, 1, 2, 0]
    pairs = toy_examples(PAIR, 5) + [PairExample(" ".join(WORDS), " ".join(WORDS), 1, "en")]
    batch = collate(rows(tokenizer, PAIR, pairs, max_length=10).rows, tokenizer.pad_token_id)
    expected = tokenizer([ex.text_a for ex in pairs], [ex.text_b for ex in pairs], truncation="longest_first",
                         max_length=10, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (6, 10)
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key
    with pytest.raises(UserError):
        head(None, RETRIEVAL, 0)


@pytest.mark.parametrize("batch_size, accum, world_size, epochs, steps", [
    (4, 1, 1, 1, 6), (4, 3, 1, 1, 2), (4, 3, 1, 2.5, 5), (4, 1, 2, 1, 3), (5, 2, 1, 1, 3), (4, 3, 2, 0.1, 1)])
def test_step_count_math(tokenizer, make_encoder, batch_size, accum, world_size, epochs, steps):
    model = head(make_encoder(), SINGLE)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, grad_accum_steps=accum, **QUICK)
    calls = []
    result = train(model, rows(tokenizer, SINGLE, toy_examples(SINGLE, 24)), cfg, device="cpu",
                   world_size=world_size, on_step=lambda *args: calls.append(args))
    assert result.steps == len(calls) == steps


def test_workers_split_each_epoch(tokenizer, make_encoder):
    seen = {0: [], 1: []}
    features = rows(tokenizer, SINGLE, toy_examples(SINGLE, 16))

    class Recording(list):   # the loop reads rows by index: record which ones each worker reads
        def __getitem__(self, index):
            seen[rank].append(index)
            return super().__getitem__(index)

    features.rows = Recording(features.rows)
    cfg = TrainConfig(epochs=1, batch_size=4, **QUICK)
    for rank in (0, 1):
        train(head(make_encoder(), SINGLE), features, cfg, device="cpu", rank=rank, world_size=2,
              wrap_model=lambda module: module)
    assert len(seen[0]) == len(seen[1]) == 8
    assert sorted(seen[0] + seen[1]) == list(range(16))


def test_trains_wrapped_in_ddp(tokenizer, make_encoder, tmp_path):
    """A one-process gloo group: DDP must find a gradient for every trainable parameter (BERT's pooler has none)."""
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'rendezvous'}")
    try:
        cfg = TrainConfig(epochs=1, batch_size=2, grad_accum_steps=2, **QUICK)
        result = train(head(make_encoder(), PAIR), rows(tokenizer, PAIR, toy_examples(PAIR, 8)), cfg,
                       device="cpu", wrap_model=DistributedDataParallel)
    finally:
        dist.destroy_process_group()
    assert result.steps == 2


def test_frozen_word_embeddings_stay_bit_identical(tokenizer, make_encoder):
    encoder = make_encoder()
    words_before = encoder.get_input_embeddings().weight.detach().clone()
    positions_before = encoder.embeddings.position_embeddings.weight.detach().clone()
    cfg = TrainConfig(lr=1e-3, epochs=2, batch_size=4, **QUICK)
    intermediate_phase(encoder, tokenizer, toy_task(PAIR), toy_examples(PAIR, 8), cfg, device="cpu")
    assert torch.equal(encoder.get_input_embeddings().weight, words_before)
    assert not torch.equal(encoder.embeddings.position_embeddings.weight, positions_before)
    # A later phase that does not freeze trains them again.
    target_phase(encoder, tokenizer, toy_task(SINGLE), toy_examples(SINGLE, 8),
                 TrainConfig(lr=1e-3, epochs=1, batch_size=4, max_length=32), device="cpu")
    assert not torch.equal(encoder.get_input_embeddings().weight, words_before)


def test_same_config_same_metrics(tokenizer, make_encoder):
    examples, encoder = toy_examples(PAIR, 10), make_encoder()
    cfg = TrainConfig(lr=5e-4, epochs=2, batch_size=3, seed=7, **QUICK)
    runs = []
    for _ in range(2):
        torch.manual_seed(12345 + len(runs))  # a different global RNG state must not matter
        model, result = target_phase(copy.deepcopy(encoder), tokenizer, toy_task(PAIR), examples, cfg, device="cpu")
        runs.append((result.losses, accuracy(model, tokenizer, examples)))
    assert runs[0] == runs[1]


def test_length_grouped_batches_hold_each_row_once_and_pad_less():
    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(1000)]
    plain = batch_order(1000, 32, seed=5, epoch=0)
    grouped = batch_order(1000, 32, seed=5, epoch=0, lengths=lengths, length_windows=8)
    assert sorted(i for batch in grouped for i in batch) == list(range(1000)) and len(grouped) == len(plain)
    assert grouped == batch_order(1000, 32, seed=5, epoch=0, lengths=lengths, length_windows=8)   # seeded
    assert grouped != batch_order(1000, 32, seed=5, epoch=1, lengths=lengths, length_windows=8)   # per epoch

    def padded(batches):
        return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    assert sum(lengths) / padded(plain) < 0.6 and sum(lengths) / padded(grouped) > 0.85
    # each batch comes from one window of 8 batches of the shuffled order: the shuffle still mixes the epoch
    position = {i: k for k, i in enumerate(i for batch in plain for i in batch)}
    assert all(len({position[i] // (32 * 8) for i in batch}) == 1 for batch in grouped)
    assert batch_order(1000, 32, seed=5, epoch=0, lengths=lengths, length_windows=0) == plain


@pytest.mark.parametrize("resume_at, length_windows", [(2, 0), (4, 0), (2, 2)])
def test_interrupted_and_resumed_equals_uninterrupted(tokenizer, make_encoder, resume_at, length_windows):
    examples = toy_examples(CHOICE, 10)
    # 10 examples in batches of 3 (a short last batch), 2 micro-batches a step, 2.5 epochs -> 5 steps, with warm-up.
    cfg = TrainConfig(lr=1e-3, epochs=2.5, batch_size=3, grad_accum_steps=2, warmup_ratio=0.4, checkpoint_every=2,
                      max_length=32, length_windows=length_windows)
    checkpoints, saved = [], {}

    def on_checkpoint(state):  # the state holds live tensors: copy what is kept
        checkpoints.append(state["step"])
        if state["step"] == resume_at:
            saved.update(copy.deepcopy(state))

    features = rows(tokenizer, CHOICE, examples)
    straight = head(make_encoder(), CHOICE)
    full = train(straight, features, cfg, device="cpu", on_checkpoint=on_checkpoint)
    assert checkpoints == [2, 4, 5]

    steps = []
    resumed = head(make_encoder(seed=99), CHOICE, seed=99)  # other init: everything must come from the state
    rest = train(resumed, features, cfg, device="cpu", resume_state=saved,
                 on_step=lambda step, loss, lr: steps.append(step))
    assert steps == list(range(resume_at + 1, 6))
    assert rest.losses == full.losses
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    scores = [accuracy(m, tokenizer, examples) for m in (straight, resumed)]
    assert scores[0] == scores[1]


def test_step_counter_grows_across_phases_and_encoder_carries_over(tokenizer, make_encoder):
    steps, lrs = [], []
    record = dict(on_step=lambda step, loss, lr: (steps.append(step), lrs.append(lr)))
    encoder = make_encoder()
    cfg = TrainConfig(lr=1e-3, epochs=1, batch_size=2, warmup_ratio=0.5, max_length=32, freeze_word_embeddings=True)
    trained, phase2 = intermediate_phase(encoder, tokenizer, toy_task(PAIR), toy_examples(PAIR, 8), cfg,
                                         device="cpu", step_offset=100, **record)
    assert trained is encoder and phase2.global_step == 104
    model, phase3 = target_phase(trained, tokenizer, toy_task(CHOICE), toy_examples(CHOICE, 6), cfg, device="cpu",
                                 step_offset=phase2.global_step, **record)
    assert model.encoder is encoder and model.head.out_features == 1
    assert steps[0] == 101 and steps == sorted(set(steps)) and steps[-1] == phase3.global_step == 107
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-3)  # linear warm-up from 0


@pytest.mark.parametrize("fmt", CLASSIFICATION)
def test_zero_shot_evaluation_scores_every_language(tokenizer, make_encoder, fmt):
    task = toy_task(fmt)
    model = head(make_encoder(), fmt)
    by_language = {"fr": toy_examples(fmt, 6, seed=1, language="fr"), "de": toy_examples(fmt, 4, 2, "de")}
    scores = zero_shot_evaluation(model, tokenizer, task, by_language, device="cpu", batch_size=4)
    assert set(scores) == {"fr", "de", "avg"}
    assert all(0 <= score <= 100 for score in scores.values())
    assert scores["avg"] == pytest.approx((scores["fr"] + scores["de"]) / 2)
    with pytest.raises(UserError):
        zero_shot_evaluation(model.encoder, tokenizer, task, by_language, device="cpu")


def test_retrieval_of_identical_texts_is_perfect(tokenizer, make_encoder):
    task, encoder = toy_task(RETRIEVAL), make_encoder()
    by_language = {"fr": toy_examples(RETRIEVAL, 8, 1, "fr"), "de": toy_examples(RETRIEVAL, 5, 2, "de")}
    for layer in (-1, 1):
        scores = zero_shot_evaluation(encoder, tokenizer, task, by_language, device="cpu", batch_size=3, layer=layer)
        assert scores == {"fr": 100.0, "fr/en_to_x": 100.0, "fr/x_to_en": 100.0,
                          "de": 100.0, "de/en_to_x": 100.0, "de/x_to_en": 100.0, "avg": 100.0}
    with pytest.raises(UserError):
        target_phase(encoder, tokenizer, task, by_language["fr"], TrainConfig(), device="cpu")


def test_retrieval_of_unrelated_texts_is_in_range_and_layers_differ(tokenizer, make_encoder):
    encoder = make_encoder()
    rng = random.Random(3)
    examples = [RetrievalExample(sentence(rng), sentence(rng), "fr") for _ in range(8)]
    scores = retrieval_accuracy(encoder, tokenizer, examples, device="cpu", batch_size=3, max_length=32)
    assert set(scores) == {"en_to_x", "x_to_en"} and all(0 <= s <= 100 for s in scores.values())
    texts = [ex.query for ex in examples]
    last, first = (embed(encoder, tokenizer, texts, device="cpu", layer=layer, batch_size=3) for layer in (-1, 1))
    assert last.shape == (8, encoder.config.hidden_size) and torch.allclose(last.norm(dim=-1), torch.ones(8))
    assert not torch.allclose(last, first)
