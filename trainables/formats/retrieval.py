"""Retrieval (BUCC, Tatoeba style): no head and no training; an English query finds its translation among all
targets of a split by cosine similarity of mean-pooled, L2-normalised hidden states of one layer. The score is the
mean of top-1 accuracy in both directions (English -> X and X -> English); each direction is reported beside it.
"""
from __future__ import annotations

import itertools
from statistics import mean

import torch
import torch.nn.functional as F
from torch import nn

from trainables.errors import UserError
from trainables.formats.base import Format, TaskModel
from trainables.models import mean_pool
from trainables.precision import autocast, resolve_precision
from trainables.types import RETRIEVAL


@torch.no_grad()
def embed(encoder: nn.Module, tokenizer, texts: list[str], *, device, layer: int = -1, batch_size: int = 64,
          max_length: int = 128, precision: str = "auto") -> torch.Tensor:
    """Mean-pooled, L2-normalised hidden states of `layer`, as a float32 (len(texts), hidden) CPU tensor.

    layer indexes `output_hidden_states`: 0 = the embeddings, i = after transformer layer i, -1 = the last layer.
    XTREME/X-STILTs take a middle layer for retrieval (e.g. 8 of 24 for XLM-R large). Texts are batched by length;
    pooling and normalisation run in float32 whatever the precision.
    """
    device = torch.device(device)
    encoder.to(device).eval()
    mixed_precision = autocast(device, resolve_precision(precision, device))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    pooled = torch.empty(len(texts), encoder.config.hidden_size)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in indices], truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt").to(device)
        with mixed_precision:
            hidden = encoder(**batch, output_hidden_states=True).hidden_states[layer]
        pooled[indices] = F.normalize(mean_pool(hidden.float(), batch["attention_mask"]), dim=-1).cpu()
    return pooled


def retrieval_accuracy(encoder: nn.Module, tokenizer, examples: list, *, device, layer: int = -1,
                       batch_size: int = 64, max_length: int = 128, precision: str = "auto",
                       query_embeddings: torch.Tensor | None = None,
                       target_embeddings: torch.Tensor | None = None) -> dict[str, float]:
    """Top-1 accuracy in points of finding each example's partner by cosine similarity, both ways.

    en_to_x: every query against all targets of `examples`; x_to_en: every target against all queries.
    `query_embeddings` / `target_embeddings` (from `embed`) pass texts embedded already.
    """
    if not examples:
        raise UserError("no retrieval examples")
    kwargs = dict(device=device, layer=layer, batch_size=batch_size, max_length=max_length, precision=precision)
    queries = embed(encoder, tokenizer, [ex.query for ex in examples], **kwargs) \
        if query_embeddings is None else query_embeddings
    targets = embed(encoder, tokenizer, [ex.target for ex in examples], **kwargs) \
        if target_embeddings is None else target_embeddings
    similarity = queries @ targets.T
    gold = torch.arange(len(examples))
    return {"en_to_x": 100.0 * (similarity.argmax(1) == gold).float().mean().item(),
            "x_to_en": 100.0 * (similarity.argmax(0) == gold).float().mean().item()}


class RetrievalFormat(Format):
    name = RETRIEVAL
    trains = False

    def evaluate(self, model, tokenizer, task, examples_by_language, *, device, batch_size=64, max_length=128,
                 layer=-1, precision="auto") -> dict[str, float]:
        """All languages in one pass: the distinct English queries are embedded once, the targets together."""
        kwargs = dict(device=device, batch_size=batch_size, max_length=max_length, precision=precision)
        encoder = model.encoder if isinstance(model, TaskModel) else model
        everything = [ex for examples in examples_by_language.values() for ex in examples]
        bounds = list(itertools.accumulate([0] + [len(examples) for examples in examples_by_language.values()]))
        queries = sorted({ex.query for ex in everything})
        query_vectors = embed(encoder, tokenizer, queries, layer=layer, **kwargs)
        row = {query: i for i, query in enumerate(queries)}
        target_vectors = embed(encoder, tokenizer, [ex.target for ex in everything], layer=layer, **kwargs)
        scores = {}
        for (language, examples), start, end in zip(examples_by_language.items(), bounds, bounds[1:]):
            directions = retrieval_accuracy(
                encoder, tokenizer, examples, layer=layer, **kwargs,
                query_embeddings=query_vectors[[row[ex.query] for ex in examples]],
                target_embeddings=target_vectors[start:end])
            scores[language] = mean(directions.values())
            scores.update({f"{language}/{direction}": value for direction, value in directions.items()})
        scores["avg"] = mean(scores[language] for language in examples_by_language)
        return scores
