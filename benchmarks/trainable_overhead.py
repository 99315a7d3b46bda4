"""Phase-2 training throughput in one run: the Ray Train trainable, the same loop in plain PyTorch (in the chosen
precision and in fp32), and the minimal loop that is the yardstick; evaluation throughput; the ratios.

    python benchmarks/trainable_overhead.py                          # e5-small, 200 steps, batch 32, length 64
    python benchmarks/trainable_overhead.py --options                 # + every kernel option on the minimal loop
    python benchmarks/trainable_overhead.py --model smoke --steps 50 --fp32-steps 20   # a quick check
    python benchmarks/trainable_overhead.py --checkpoint-every 100 0 --json overhead.json

Both sides run `intermediate_phase` on the same examples (en_paraphrase, random tier, steps x batch-size of them,
one epoch, seed 0) with the same TrainConfig (built by the trial's own `TrialConfig.train_config`) and the same torch
threads. The plain side calls it in this process; the Ray side runs `build_trainer(...).fit()` (1 worker) on a
trial config whose cell is that data and whose target list is empty, with the trial's real reporting and
checkpointing. examples/s counts the steps after the first (its warm-up is left out): from the end of step 1 to the
return of the phase, so the last checkpoint is inside the window; model loading and data building are outside it
and appear in the end-to-end times. Goals on 2 CPU cores: plain chosen / plain fp32 >= 1.8 (stretch 2.5), plain /
minimal loop >= 0.9, ray / plain >= 0.95, peak worker memory <= 3 GB.
The time inside the trial's report and checkpoint calls is printed on its own because it can dominate: Ray Train's
result queue holds one report and its controller collects it every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by
default), so a report made before the previous one was collected blocks until then.
With a GPU it also prints the model FLOP utilisation of an xlm-roberta-large-shaped encoder in bf16.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from minimal_loop import OPTIONS, Variant, minimal_loop
from trainables import three_phase
from trainables.models import load_encoder
from trainables.phases import intermediate_phase, zero_shot_evaluation
from trainables.precision import cpu_has_native_bf16, resolve_precision
from trainables.subsets import select_examples
from trainables.tasks import get_task
from trainables.three_phase import trial_env
from trainables.trial_config import TrialConfig, trial_config_defaults
from trainables.formats import TaskModel, format_of

TASK, QUALITY, SEED = "en_paraphrase", "random", 0
# bf16 dense tensor-core peaks (no sparsity), TFLOP/s; the first name contained in the device name wins.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0,
                    "L40S": 362.1, "L40": 181.0, "L4": 121.0, "A10": 125.0}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timings(steps: list[float], end: float, batch_size: int, load_1m: float) -> dict:
    """Throughput over the window from the end of step 1 to the end of the phase (steps = stamps after each step)."""
    seconds = end - steps[0]
    intervals = [b - a for a, b in zip(steps, steps[1:])] or [seconds]
    return {"steps": len(steps) - 1, "seconds": seconds, "examples_per_s": (len(steps) - 1) * batch_size / seconds,
            "median_step_examples_per_s": batch_size / statistics.median(intervals), "load_1m": load_1m}


def run_plain(config: dict, device: str) -> dict:
    start = time.time()
    tokenizer, encoder = load_encoder(config["model"])
    task = get_task(TASK)
    examples = select_examples(TASK, QUALITY, int(config["cell"].split(":")[-1]), SEED)
    cfg = TrialConfig.from_dict(config).train_config("intermediate", task)
    steps = []
    intermediate_phase(encoder, tokenizer, task, examples, cfg, device=device,
                       on_step=lambda *_: steps.append(time.time()))
    end = time.time()
    return {**timings(steps, end, config["batch_size"], os.getloadavg()[0]), "peak_rss_mb": peak_rss_mb(),
            "end_to_end_s": end - start, "before_window_s": steps[0] - start}


def timed_trial_loop(stamps_file: str):
    """The per-worker loop: the real `three_phase.trial_loop`, with its phase 2 wrapped to time every step (after
    the trial's own on_step, i.e. its report), every checkpoint, and the phase's end. Patched in the worker only."""
    def loop(config: dict) -> None:
        from trainables import three_phase as tp
        stamps = {"loop_start": time.time(), "steps": [], "report_s": [], "checkpoint_s": []}
        real_phase = tp.train_intermediate

        def timed_phase(*args, on_step, on_checkpoint, **kwargs):
            def step(global_step, *step_args):
                before = time.time()
                on_step(global_step, *step_args)  # sends ray.train.report every report_every steps
                if global_step % config["report_every"] == 0:
                    stamps["report_s"].append(time.time() - before)
                stamps["steps"].append(time.time())

            def checkpoint(state):
                before = time.time()
                on_checkpoint(state)
                stamps["checkpoint_s"].append(time.time() - before)
            result = real_phase(*args, on_step=step, on_checkpoint=checkpoint, **kwargs)
            stamps.update(phase_end=time.time(), peak_rss_mb=peak_rss_mb(), load_1m=os.getloadavg()[0])
            return result

        tp.train_intermediate = timed_phase
        tp.trial_loop(config)
        Path(stamps_file).write_text(json.dumps(stamps))
    return loop


def run_ray(config: dict, checkpoint_every: int, workdir: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"ckpt{checkpoint_every}-", dir=workdir))
    stamps_file = run_dir / "stamps.json"
    # A fresh phase-2 cache, so phase 2 really trains; the driver does not wait on a Tune callback here.
    config = {**config, "checkpoint_every": checkpoint_every, "storage_path": str(run_dir),
              "cache_dir": str(run_dir / "cache")}
    trainer = three_phase.build_trainer(config, name=f"overhead-{run_dir.name}")
    trainer.train_loop_per_worker = timed_trial_loop(str(stamps_file))  # read by fit(), not at construction
    start = time.time()
    trainer.fit()
    end = time.time()
    s = json.loads(stamps_file.read_text())
    return {**timings(s["steps"], s["phase_end"], config["batch_size"], s["load_1m"]),
            "peak_rss_mb": s["peak_rss_mb"], "end_to_end_s": end - start, "worker_start_s": s["loop_start"] - start,
            "before_window_s": s["steps"][0] - start, "after_window_s": end - s["phase_end"],
            "report_s": s["report_s"], "checkpoint_s": s["checkpoint_s"]}


def gpu_mfu(steps: int, peak_tflops: float | None) -> dict:
    """Forward + backward of a random-init xlm-roberta-large-shaped encoder, bf16 autocast, batch 32 x 128 tokens."""
    from transformers import XLMRobertaConfig, XLMRobertaModel
    config = XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1)
    model = XLMRobertaModel(config, add_pooling_layer=False).cuda().train()
    batch, length = 32, 128
    ids = torch.randint(5, config.vocab_size, (batch, length), device="cuda")
    mask = torch.ones_like(ids)
    embeddings = model.embeddings
    lookups = sum(t.weight.numel() for t in (embeddings.word_embeddings, embeddings.position_embeddings,
                                             embeddings.token_type_embeddings))
    non_embedding = sum(p.numel() for p in model.parameters()) - lookups
    # 6 N per token for the matmuls (2 forward + 4 backward) plus the attention scores and mixing
    # (QK^T and AV: 2 x 2 L d T forward, x3 with backward), as in PaLM's appendix B: 6 N + 12 L d T per token.
    layers, hidden = config.num_hidden_layers, config.hidden_size
    flops_per_step = batch * length * (6 * non_embedding + 12 * layers * hidden * length)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            states = model(input_ids=ids, attention_mask=mask).last_hidden_state
        states.float().mean().backward()
        model.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    name = torch.cuda.get_device_name()
    peak = peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    achieved = flops_per_step / seconds / 1e12
    return {"device": name, "non_embedding_params": non_embedding, "step_s": seconds, "achieved_tflops": achieved,
            "peak_tflops": peak, "mfu": achieved / peak if peak else None}


def eval_throughput(config: dict, precision: str, device: str, count: int) -> dict:
    """Zero-shot evaluation (featurise, forward batched by length, argmax, accuracy) of the pair task's head in
    `precision`."""
    tokenizer, encoder = load_encoder(config["model"])
    task = get_task(TASK)
    examples = select_examples(TASK, QUALITY, count, SEED)
    model = TaskModel(encoder, format_of(task), task.num_labels)
    evaluate = functools.partial(zero_shot_evaluation, model, tokenizer, task, device=device,
                                 max_length=config["max_length"], precision=precision)
    evaluate({"en": examples[:64]})   # warm-up
    start = time.time()
    evaluate({"en": examples})
    seconds = time.time() - start
    return {"examples_per_s": count / seconds, "seconds": seconds, "load_1m": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="multilingual-e5-small")
    parser.add_argument("--steps", type=int, default=200, help="steps of the chosen-precision runs")
    parser.add_argument("--fp32-steps", type=int, default=60, help="steps of the fp32 plain run (it is slower)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                        help="the chosen precision (auto: bf16 where the device does it natively)")
    parser.add_argument("--checkpoint-every", type=int, nargs="+", default=[100],
                        help="one Ray run per value (0 = no checkpoints); the laptop preset uses 100")
    parser.add_argument("--report-every", type=int, default=trial_config_defaults()["report_every"])
    parser.add_argument("--no-freeze-word-embeddings", dest="freeze", action="store_false",
                        help="train the word embeddings too (the laptop preset freezes them)")
    parser.add_argument("--eval-examples", type=int, default=512)
    parser.add_argument("--options", action="store_true",
                        help="also time every kernel option on the minimal loop (benchmarks/minimal_loop.py)")
    parser.add_argument("--mfu-steps", type=int, default=20)
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    chosen = resolve_precision(args.precision, device)
    config = {**trial_config_defaults(), "model": args.model, "seed": SEED,
              "cell": f"english:{TASK}:{QUALITY}:{args.steps * args.batch_size}", "targets": [],
              "lr_intermediate": 5e-5, "epochs_intermediate": 1, "batch_size": args.batch_size,
              "max_length": args.max_length, "freeze_word_embeddings": args.freeze, "precision": chosen,
              "report_every": args.report_every, "torch_threads": args.threads, "use_gpu": cuda, "max_failures": 0}
    fp32_config = {**config, "precision": "fp32",
                   "cell": f"english:{TASK}:{QUALITY}:{args.fp32_steps * args.batch_size}"}
    torch.set_num_threads(args.threads)
    print(f"{args.model}: batch {args.batch_size}, length {args.max_length}, {args.threads} torch threads, frozen "
          f"word embeddings: {args.freeze}, device: {device}, chosen precision: {chosen} (CPU native bf16: "
          f"{cpu_has_native_bf16()}); reports every {args.report_every} steps, collected every "
          f"{trial_env()['RAY_TRAIN_HEALTH_CHECK_INTERVAL_S']} s (the sweep's setting)")

    header = f"{'side':<26}{'steps':>6}{'examples/s':>12}{'seconds':>9}{'median-step ex/s':>18}{'peak RSS MB':>13}"
    print(f"{header}{'load 1m':>9}\n(steps after the first; median-step ex/s = batch / median step time, "
          "less sensitive to bursts of other load; load 1m = the machine's load average at the end)", flush=True)
    rows = {}

    def add_row(side: str, r: dict) -> None:
        rows[side] = r
        print(f"{side:<26}{r['steps']:>6}{r['examples_per_s']:>12.2f}{r['seconds']:>9.1f}"
              f"{r.get('median_step_examples_per_s', float('nan')):>18.2f}{r.get('peak_rss_mb', float('nan')):>13.0f}"
              f"{r['load_1m']:>9.1f}", flush=True)

    minimal = Variant(chosen, "sdpa" if cuda else "eager", "torch" if cuda else "cheap")
    add_row(f"minimal {chosen}", minimal_loop(args.model, minimal, steps=min(args.steps, 40),
                                              batch_size=args.batch_size, length=args.max_length, device=device))
    add_row(f"plain {chosen}", run_plain(config, device))
    if chosen != "fp32":
        add_row("plain fp32", run_plain(fp32_config, device))
    init_start = time.time()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": trial_env()})   # a runtime of its own, with the sweep's settings
    ray_init_s = time.time() - init_start
    with tempfile.TemporaryDirectory(prefix="trainable-overhead-") as workdir:
        for every in args.checkpoint_every:
            add_row(f"ray {chosen} ckpt={every}", run_ray(config, every, Path(workdir)))
    ray.shutdown()

    plain = rows[f"plain {chosen}"]
    ratios = {"plain_vs_minimal": plain["examples_per_s"] / rows[f"minimal {chosen}"]["examples_per_s"]}
    if chosen != "fp32":
        ratios["chosen_vs_fp32_plain"] = plain["examples_per_s"] / rows["plain fp32"]["examples_per_s"]
        print(f"ratio plain {chosen} / plain fp32: {ratios['chosen_vs_fp32_plain']:.2f} (goal >= 1.8, stretch 2.5)")
    print(f"ratio plain {chosen} / minimal loop: {ratios['plain_vs_minimal']:.3f} (goal >= 0.9)")
    for side, r in rows.items():
        if not side.startswith("ray"):
            continue
        inside = sum(r["report_s"]) + sum(r["checkpoint_s"])
        ratios[side] = {"examples_per_s": r["examples_per_s"] / plain["examples_per_s"],
                        "median_step": r["median_step_examples_per_s"] / plain["median_step_examples_per_s"],
                        "time_outside_report_and_checkpoint": 1 - inside / r["seconds"]}
        print(f"ratio {side} / plain {chosen}: {ratios[side]['examples_per_s']:.3f} (median-step "
              f"{ratios[side]['median_step']:.3f}; goal >= 0.95); share of its window spent outside report and "
              f"checkpoint calls: {ratios[side]['time_outside_report_and_checkpoint']:.3f}; peak worker RSS "
              f"{r['peak_rss_mb'] / 1024:.2f} GB (goal <= 3)")

    print(f"\nEnd-to-end wall times (not part of the ratio):\n  plain: {plain['end_to_end_s']:.1f} s = "
          f"{plain['before_window_s']:.1f} s model load + data + step 1, then {plain['seconds']:.1f} s training")
    print(f"  ray.init (once): {ray_init_s:.1f} s")
    for side, r in rows.items():
        if not side.startswith("ray"):
            continue
        reports, checkpoints = r["report_s"], r["checkpoint_s"]
        print(f"  {side}: fit() {r['end_to_end_s']:.1f} s = {r['worker_start_s']:.1f} s worker-group start-up, "
              f"{r['before_window_s'] - r['worker_start_s']:.1f} s model load + data + step 1, "
              f"{r['seconds']:.1f} s training, {r['after_window_s']:.1f} s after phase 2 "
              f"(phase-2 cache store, final report with checkpoint, shutdown)")
        print(f"    inside training: {len(reports)} reports took {sum(reports):.2f} s (max "
              f"{max(reports, default=0):.2f}); {len(checkpoints)} checkpoints took {sum(checkpoints):.2f} s "
              f"({', '.join(f'{c:.2f}' for c in checkpoints) or '-'})")

    evaluation = {precision: eval_throughput(config, precision, device, args.eval_examples)
                  for precision in dict.fromkeys((chosen, "fp32"))}
    print(f"\nEvaluation forward ({args.eval_examples} pairs, batched by length): " + ", ".join(
        f"{p} {e['examples_per_s']:.0f} ex/s (load {e['load_1m']:.1f})" for p, e in evaluation.items()) +
        (f"; ratio {evaluation[chosen]['examples_per_s'] / evaluation['fp32']['examples_per_s']:.2f}"
         if chosen != "fp32" else ""))

    options = []
    if args.options:
        print("\nKernel options on the minimal loop (random tokens, same shape and recipe):")
        for variant in OPTIONS:
            if variant.precision == "bf16" and chosen == "fp32" or (cuda and variant.dropout == "cheap"):
                continue
            r = minimal_loop(args.model, variant, steps=min(args.steps, 20), batch_size=args.batch_size,
                             length=args.max_length, device=device)
            options.append(r)
            print(f"  {r['variant']:<36}{r['examples_per_s']:>8.1f} ex/s  (first step {r['first_step_s']:.1f} s, "
                  f"load {r['load_1m']:.1f})", flush=True)

    mfu = None
    if cuda:
        mfu = gpu_mfu(args.mfu_steps, args.peak_tflops)
        print(f"\nMFU, xlm-roberta-large shape ({mfu['non_embedding_params'] / 1e6:.0f}M non-embedding params), "
              f"bf16 autocast, batch 32 x 128, forward+backward on {mfu['device']}:\n"
              f"  FLOPs per step = tokens x (6 N_non_embedding + 12 layers x hidden x length)\n"
              f"  {mfu['step_s'] * 1e3:.1f} ms/step, {mfu['achieved_tflops']:.0f} TFLOP/s achieved, peak "
              f"{mfu['peak_tflops'] or 'unknown (pass --peak-tflops)'}" +
              (f", MFU {mfu['mfu']:.1%}" if mfu["mfu"] is not None else ""))
    else:
        print("\nMFU part skipped: no GPU present (torch.cuda.is_available() is False).")

    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "ratios": ratios,
                                               "evaluation": evaluation, "options": options,
                                               "ray_init_s": ray_init_s, "mfu": mfu}, indent=2) + "\n")


if __name__ == "__main__":
    main()
