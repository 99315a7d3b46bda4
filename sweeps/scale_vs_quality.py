"""Does more English intermediate data keep paying off for zero-shot cross-lingual transfer, or does a small,
high-quality multilingual set beat it? One sweep answers it with the X-STILTs recipe (Phang et al. 2020).

    python sweeps/scale_vs_quality.py                       # the laptop preset on a local Ray runtime
    python sweeps/scale_vs_quality.py --address auto        # the same on a running Ray cluster
    python sweeps/scale_vs_quality.py --preset smoke --dry-run

Stage 1 (search): Ray Tune + OptunaSearch (TPE) over the learning rates jointly with the data cell; every cell is
evaluated once first (points_to_evaluate), ASHA stops hopeless extra trials on the global step counter.
Stage 2 (replicate): each cell's best hyperparameters rerun with more seeds (and any cell left without a finished
trial gets one), which gives the analysis its confidence intervals.
Everything lands in STORAGE/EXPERIMENT: results.csv, the MLflow store (mlflow.db), the Optuna study
(optuna.db), the Tune experiments, trial checkpoints, the phase-2 cache and the analysis report.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from search_spaces.hyperparameters import is_searched  # noqa: E402
from search_spaces.presets import PRESETS, Preset  # noqa: E402
from sweeps.checks import check_address, check_inputs, connect_ray  # noqa: E402
from trainables.errors import UserError, exit_on_user_error  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="local",
                        help="Ray cluster: 'local' (start one in this process, dashboard on 127.0.0.1:8265), "
                             "'auto' (the cluster `ray start` made on this machine), 'ray://HOST:PORT' "
                             "(Ray client) or HOST:PORT (default: local)")
    parser.add_argument("--preset", default="laptop",
                        help=f"what to sweep: {', '.join(PRESETS)} (default: laptop; see search_spaces/presets.py)")
    parser.add_argument("--experiment", help="sweep name: folder under --storage-path and MLflow experiment "
                                             "(default: scale-vs-quality-PRESET)")
    parser.add_argument("--storage-path", default="sweep_results",
                        help="folder for everything the sweep writes (default: ./sweep_results)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://127.0.0.1:5000 "
                                               "(default: sqlite:///STORAGE/EXPERIMENT/mlflow.db)")
    parser.add_argument("--num-samples", type=int,
                        help="search-stage trials in all; at least one per data cell (default: cells + the "
                             "preset's extra trials)")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: the preset's)")
    parser.add_argument("--seeds", type=int, help="seeds per data cell; seeds beyond the first are the "
                                                  "replicate stage (default: the preset's)")
    parser.add_argument("--english-sizes", type=_sizes, help="override the English size ladder, e.g. 0,500,2000")
    parser.add_argument("--multilingual-sizes", type=_sizes, help="override the multilingual sizes, e.g. 500,1000")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted sweep: finished trials are kept, the Optuna study goes on")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost, run nothing")
    parser.add_argument("--no-analysis", action="store_true", help="skip the curve fitting at the end")
    return parser.parse_args(argv)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of sizes") from None
    if any(size < 0 for size in sizes):
        raise argparse.ArgumentTypeError("sizes cannot be negative")
    return sizes


def plan(preset: Preset, args) -> dict:
    cells = preset.cells()
    num_samples = args.num_samples if args.num_samples is not None else len(cells) + preset.extra_search_trials
    if num_samples < len(cells):
        raise UserError(f"--num-samples {num_samples} cannot cover the {len(cells)} data cells of preset "
                        f"{preset.name}: give at least {len(cells)}")
    seeds = args.seeds if args.seeds is not None else preset.seeds
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    concurrent = args.max_concurrent or preset.max_concurrent
    trials = num_samples + len(cells) * (seeds - 1)
    return {"cells": cells, "num_samples": num_samples, "seeds": seeds, "max_concurrent": concurrent,
            "trials": trials,
            "estimate_minutes": trials * preset.seconds_per_trial_estimate / concurrent / 60}


def print_plan(preset: Preset, the_plan: dict, experiment_dir: Path, tracking_uri: str) -> None:
    print(f"preset {preset.name}: model {preset.model}, targets {', '.join(preset.targets)}, "
          f"languages {', '.join(preset.eval_languages) if preset.eval_languages else 'all of each target'}")
    print(f"{len(the_plan['cells'])} data cells:")
    for cell in the_plan["cells"]:
        print(f"  {cell.source:<13} {cell.task or '-':<18} {cell.quality:<8} {cell.size:>7}")
    searched = {k: v for k, v in preset.hyperparameters.items() if is_searched(v)}
    print(f"search stage: {the_plan['num_samples']} trials (Optuna TPE over cell x {', '.join(searched)})")
    print(f"replicate stage: {len(the_plan['cells']) * (the_plan['seeds'] - 1)} trials "
          f"({the_plan['seeds']} seeds per cell in all)")
    print(f"estimated cost: {the_plan['trials']} trials x ~{preset.seconds_per_trial_estimate:.0f} s / "
          f"{the_plan['max_concurrent']} at once = ~{the_plan['estimate_minutes']:.0f} min")
    print(f"results: {experiment_dir / 'results.csv'}; MLflow: {tracking_uri}")


def main(argv=None) -> int:
    args = parse_args(argv)
    with exit_on_user_error():
        if args.preset not in PRESETS:
            raise UserError(f"unknown preset {args.preset!r}: choose one of {', '.join(PRESETS)}")
        preset = PRESETS[args.preset]
        if args.english_sizes:
            preset = preset.with_overrides(english_sizes=args.english_sizes)
        if args.multilingual_sizes:
            preset = preset.with_overrides(multilingual_sizes=args.multilingual_sizes)
        check_address(args.address)
        experiment = args.experiment or f"scale-vs-quality-{preset.name}"
        experiment_dir = Path(args.storage_path).resolve() / experiment
        tracking_uri = args.tracking_uri or f"sqlite:///{experiment_dir / 'mlflow.db'}"
        the_plan = plan(preset, args)
        check_inputs(preset, experiment_dir, tracking_uri, resume=args.resume, dry_run=args.dry_run)
        print_plan(preset, the_plan, experiment_dir, tracking_uri)
        if args.dry_run:
            return 0
        connect_ray(args.address)

    from sweeps.stages import run_sweep   # imports Ray Tune, Optuna and MLflow: only when there is work
    report = run_sweep(preset, the_plan, experiment=experiment, experiment_dir=experiment_dir,
                       tracking_uri=tracking_uri, resume=args.resume)
    if not args.no_analysis:
        run_analysis(experiment_dir, experiment, tracking_uri)
    print(report)
    return 0


def run_analysis(experiment_dir: Path, experiment: str, tracking_uri: str) -> None:
    script = REPO / "analysis" / "fit_curves.py"
    if not script.exists():
        print("analysis/fit_curves.py not found: skipping the analysis", file=sys.stderr)
        return
    out = experiment_dir / "analysis"
    command = [sys.executable, str(script), "--experiment", experiment, "--tracking-uri", tracking_uri,
               "--out", str(out), "--overwrite"]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode == 0:
        print(f"analysis report: {out / 'report.md'} (also an artifact of the sweep's MLflow parent run)")
    else:
        print(f"the analysis failed (exit {done.returncode}); rerun it with: {' '.join(command)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
