"""Phase 2 of one size ladder trained both ways: every size on its own, and as a shared ladder.

    python benchmarks/shared_ladder.py                                   # e5-small, en_paraphrase 1000..8000
    python benchmarks/shared_ladder.py --model smoke --sizes 64,128,256  # quick check (under a minute)

separate: each size from scratch, as `ladder: separate` trials do (linear warm-up and decay, shuffled order).
shared:   the largest size first (warmup-stable-decay, the subset's order), storing a trunk snapshot at every smaller
          size's decay start; then each smaller size from its snapshot (trainables/ladder.py).
It prints each run's wall time, example passes (rows trained) and the 1-minute load average beside each, the totals
and the ratio shared/separate (the goal for phase 2 is at most 0.7), and the disk one set of snapshots takes. On a
shared 2-core machine other load moves wall times a lot: compare the example passes, and the wall ratio only where
the load averages beside the two totals agree.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from trainables.ladder import TrunkSnapshots  # noqa: E402
from trainables.models import load_encoder  # noqa: E402
from trainables.phases import intermediate_phase  # noqa: E402
from trainables.subsets import select_examples  # noqa: E402
from trainables.tasks import get_task  # noqa: E402
from trainables.training import TrainConfig  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="multilingual-e5-small", help="load_encoder name (smoke: tiny model)")
    parser.add_argument("--sizes", default="1000,2000,4000,8000", help="the ladder's sizes (default: the laptop's)")
    parser.add_argument("--task", default="en_paraphrase")
    parser.add_argument("--quality", default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--decay-fraction", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--freeze-word-embeddings", default=None, action=argparse.BooleanOptionalAction,
                        help="default: frozen except for the smoke model (as the presets do)")
    return parser.parse_args(argv)


def load1() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = sorted(int(size) for size in args.sizes.split(","))
    torch.set_num_threads(args.threads)
    freeze = args.model != "smoke" if args.freeze_word_embeddings is None else args.freeze_word_embeddings
    tokenizer, base = load_encoder(args.model)
    task = get_task(args.task)
    examples = select_examples(args.task, args.quality, sizes[-1], args.seed)   # every size is a prefix of these
    separate_cfg = TrainConfig(lr=args.lr, epochs=1, batch_size=args.batch_size, warmup_ratio=0.1,
                               max_length=min(task.max_length, args.max_length), freeze_word_embeddings=freeze,
                               seed=args.seed, checkpoint_every=0, precision=args.precision)
    shared_cfg = dataclasses.replace(separate_cfg, schedule="wsd", shuffle=False, warmup_steps=args.warmup_steps,
                                     decay_fraction=args.decay_fraction)
    print(f"{args.model}, {args.task}/{args.quality}, sizes {sizes}, batch {args.batch_size}, length "
          f"{separate_cfg.max_length}, {args.threads} threads, word embeddings {'frozen' if freeze else 'trained'}; "
          f"{load1()} at the start")

    def run(mode: str, size: int, cfg: TrainConfig, **loop) -> tuple[float, int]:
        start = time.perf_counter()
        _, result = intermediate_phase(copy.deepcopy(base), tokenizer, task, examples[:size], cfg, device="cpu",
                                       **loop)
        seconds = time.perf_counter() - start
        passes = size - min(size, result.resumed_at * cfg.batch_size)
        print(f"  {mode:<8} {size:>7,}  {seconds:8.1f} s ({load1()})  {passes:>7,} example passes  "
              f"from step {result.resumed_at} of {result.steps}", flush=True)
        return seconds, passes

    totals = {}
    print("separate (each size from scratch, linear schedule, shuffled):")
    runs = [run("separate", size, separate_cfg) for size in sizes]
    totals["separate"] = (sum(s for s, _ in runs), sum(p for _, p in runs), load1())
    with tempfile.TemporaryDirectory(prefix="trunks-") as folder:
        trunk = TrunkSnapshots(folder, leave_out=("word_embeddings.weight",) if freeze else ())
        print("shared (largest first, then each size from its trunk snapshot; wsd schedule, subset order):")
        runs = [run("shared", size, shared_cfg, trunk=trunk, branch_sizes=[m for m in sizes if m < size])
                for size in reversed(sizes)]
        totals["shared"] = (sum(s for s, _ in runs), sum(p for _, p in runs), load1())
        snapshots, disk = len(trunk.steps()), trunk.disk_bytes()
    for mode, (seconds, passes, load) in totals.items():
        print(f"total {mode:<8} {seconds:8.1f} s ({load})  {passes:>8,} example passes")
    print(f"shared/separate: wall {totals['shared'][0] / totals['separate'][0]:.2f}, example passes "
          f"{totals['shared'][1] / totals['separate'][1]:.2f} (goal <= 0.7 for phase 2)")
    print(f"one set of trunk snapshots: {snapshots} snapshots, {disk / 2**20:.1f} MiB "
          f"({disk / max(1, snapshots) / 2**20:.1f} MiB each: trained parameters and AdamW's two moments)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
