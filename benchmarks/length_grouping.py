"""Phase 3 with plain and with length-grouped batches (TrainConfig.length_windows), in one run.

    python benchmarks/length_grouping.py                         # e5-small, genre, 1000 examples, 1 epoch, batch 32
    python benchmarks/length_grouping.py --model smoke --examples 256

The laptop preset's phase 3 (3 epochs of 1,000 genre sentences in every trial) is most of its training; a batch pads
to its longest row, and Bible verses vary in length. Both runs train the same examples with the same seed and
config; the grouped one sorts rows by length within windows of `--windows` batches of the shuffled order. It prints,
for each, examples/s, the share of real (non-padding) tokens, the final training loss and the load average beside
them, then the ratio grouped/plain (alternating the order over `--repeats` rounds; the machine is shared).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from trainables.formats import format_of  # noqa: E402
from trainables.formats.base import row_length  # noqa: E402
from trainables.models import load_encoder  # noqa: E402
from trainables.phases import target_phase  # noqa: E402
from trainables.tasks import get_task, load_examples  # noqa: E402
from trainables.training import TrainConfig, batch_order  # noqa: E402


def real_token_share(lengths: list[int], cfg: TrainConfig) -> float:
    batches = batch_order(len(lengths), cfg.batch_size, cfg.seed, 0, lengths=lengths, length_windows=cfg.length_windows)
    return sum(lengths) / sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--task", default="genre")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=8, help="batches per length window (the laptop preset's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    task = get_task(args.task)
    examples = load_examples(args.task, "train", task.train_language)[:args.examples]
    tokenizer, encoder = load_encoder(args.model)
    plain = TrainConfig(lr=2e-4, epochs=1, batch_size=args.batch_size, max_length=min(task.max_length, 64),
                        freeze_word_embeddings=True, seed=0)
    grouped = dataclasses.replace(plain, length_windows=args.windows)
    features = format_of(task).featurize(tokenizer, examples, plain.max_length, task)
    lengths = [row_length(row) for row in features.rows]
    print(f"{args.model}, {args.task}: {len(examples)} examples, batch {args.batch_size}, length <= "
          f"{plain.max_length}, {args.threads} threads; mean row length {statistics.mean(lengths):.1f}")
    rates = {"plain": [], "grouped": []}
    for round_ in range(args.repeats):
        order = [("plain", plain), ("grouped", grouped)]
        for name, cfg in order if round_ % 2 == 0 else reversed(order):
            start = time.perf_counter()
            _, result = target_phase(copy.deepcopy(encoder), tokenizer, task, examples, cfg, device="cpu")
            seconds = time.perf_counter() - start
            rates[name].append(len(examples) / seconds)
            print(f"  {name:<8} {len(examples) / seconds:7.1f} examples/s  "
                  f"real tokens {real_token_share(lengths, cfg):.2f}"
                  f"  last loss {result.losses[-1]:.3f}  ({seconds:.1f} s, load {os.getloadavg()[0]:.1f})", flush=True)
    ratio = statistics.median(rates["grouped"]) / statistics.median(rates["plain"])
    print(f"ratio grouped / plain (median examples/s): {ratio:.2f}")


if __name__ == "__main__":
    main()
