"""Does more English intermediate data keep paying off for zero-shot cross-lingual transfer, or does a small,
high-quality multilingual set beat it? One sweep answers it with the X-STILTs recipe (Phang et al. 2020).

    python sweeps/scale_vs_quality.py                       # the laptop preset on a local Ray runtime
    python sweeps/scale_vs_quality.py --address auto        # the same on a running Ray cluster
    python sweeps/scale_vs_quality.py --preset smoke --dry-run

Stage 1 (search): Ray Tune + OptunaSearch (TPE) over the learning rates jointly with the data cell; every cell is
evaluated once first (points_to_evaluate), ASHA stops weak extra trials once they are scored on their first
target(s) (the cheap ones without phase 3 come first), before they train the next.
Stage 2 (replicate): each cell's best hyperparameters rerun with more seeds (and any cell left without a finished
trial gets one), which gives the analysis its confidence intervals.
Everything lands in STORAGE/EXPERIMENT: results.csv, the MLflow store (mlflow.db), the Optuna study
(optuna.db), the Tune experiments, trial checkpoints, the phase-2 cache and the analysis report.

Exit status: 0 when every trial finished and the analysis ran; 1 when a trial ended in an error (the sweep still
finishes the others and the analysis; the failed trials, their first error lines and the --resume command that
reruns them are printed); 2 for bad input (nothing ran); 3 when only the analysis failed.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from search_spaces.hyperparameters import default_point, is_searched  # noqa: E402
from search_spaces.presets import PRESETS, Preset  # noqa: E402
from sweeps.checks import check_address, check_inputs, connect_ray  # noqa: E402
from sweeps.disk_guard import install_excepthook  # noqa: E402
from sweeps.driver_lock import hold_driver_lock  # noqa: E402
from trainables.errors import UserError, exit_on_user_error  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: 'error: ...' on stderr and exit status 2, no usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="local",
                        help="Ray cluster: 'local' (start one in this process, dashboard on 127.0.0.1:8265), "
                             "'auto' (the cluster `ray start` made on this machine), 'ray://HOST:PORT' "
                             "(Ray client) or HOST:PORT (default: local)")
    parser.add_argument("--preset", default="laptop",
                        help=f"what to sweep: {', '.join(PRESETS)} (default: laptop; see search_spaces/presets.py)")
    parser.add_argument("--experiment", type=_experiment_name,
                        help="sweep name: folder under --storage-path and MLflow experiment "
                             "(default: scale-vs-quality-PRESET)")
    parser.add_argument("--storage-path", default="sweep_results",
                        help="folder for everything the sweep writes (default: ./sweep_results)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI: http(s)://HOST:PORT, sqlite:///FILE.db, "
                                               "postgresql://, mysql:// or mssql:// "
                                               "(default: sqlite:///STORAGE/EXPERIMENT/mlflow.db)")
    parser.add_argument("--num-samples", type=_at_least_1,
                        help="search-stage trials in all; at least one per data cell (default: cells + the "
                             "preset's extra trials)")
    parser.add_argument("--max-concurrent", type=_at_least_1, help="trials at once (default: the preset's)")
    parser.add_argument("--seeds", type=_at_least_1, help="seeds per data cell; seeds beyond the first are the "
                                                          "replicate stage (default: the preset's)")
    parser.add_argument("--english-sizes", type=_sizes, help="override the English size ladder, e.g. 0,500,2000")
    parser.add_argument("--multilingual-sizes", type=_sizes, help="override the multilingual sizes, e.g. 500,1000")
    parser.add_argument("--targets", type=_names,
                        help="target tasks, e.g. genre,verse_qa (default: the preset's; `python -m trainables.tasks` "
                             "lists them)")
    parser.add_argument("--intermediate-task", type=_names,
                        help="the English intermediate tasks or mixtures whose sizes the ladder grows, one ladder "
                             "each, e.g. mnli,xstilts_multitask (default: the preset's)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                        help="training and evaluation arithmetic: auto = bf16 autocast where the device does bf16 "
                             "natively (CPUs with AMX or AVX512-BF16, recent GPUs), else fp32 (default: the "
                             "preset's, auto)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted sweep: finished trials are kept, the Optuna study goes on")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost, run nothing")
    parser.add_argument("--no-analysis", action="store_true", help="skip the curve fitting at the end")
    return parser.parse_args(argv)


def _at_least_1(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of task names, e.g. genre,verse_qa")
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"a task is listed twice ({text})")
    return names


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of sizes, e.g. 0,500,2000") \
            from None
    if any(size < 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes cannot be negative ({text})")
    repeated = sorted({size for size in sizes if sizes.count(size) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"size {repeated[0]} is listed twice ({text})")
    return sizes


def _experiment_name(text: str) -> str:
    if not text.strip() or text in (".", "..") or any(sep in text for sep in ("/", "\\", "\0")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain folder name: give a name without '/', and "
                                         "--storage-path for where it goes")
    return text


def plan(preset: Preset, args) -> dict:
    cells = preset.cells()
    num_samples = args.num_samples if args.num_samples is not None else len(cells) + preset.extra_search_trials
    if num_samples < len(cells):
        raise UserError(f"--num-samples {num_samples} cannot cover the {len(cells)} data cells of preset "
                        f"{preset.name}: give at least {len(cells)}")
    seeds = args.seeds if args.seeds is not None else preset.seeds
    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    concurrent = args.max_concurrent if args.max_concurrent is not None else preset.max_concurrent
    if concurrent < 1:
        raise UserError("--max-concurrent must be at least 1")
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
    print(phase2_passes_line(preset, the_plan["cells"]))
    print(f"estimated cost: {the_plan['trials']} trials x ~{preset.seconds_per_trial_estimate:.0f} s / "
          f"{the_plan['max_concurrent']} at once = ~{the_plan['estimate_minutes']:.0f} min")
    print(f"results: {experiment_dir / 'results.csv'}; MLflow: {tracking_uri}")


def phase2_passes_line(preset: Preset, cells) -> str:
    """Phase-2 example passes of one seed over the cells: with the shared ladder (largest size first, the others
    from its trunk snapshots) and separately; the search's default point where a knob is searched."""
    from trainables.ladder import example_passes   # imports torch: only to print the plan
    from trainables.tasks import is_mixture

    knobs = {**preset.hyperparameters, **default_point(preset.hyperparameters)}
    epochs = preset.hyperparameters.get("epochs_intermediate", 1)
    per_step = knobs.get("batch_size", 16) * knobs.get("grad_accum_steps", 1) * preset.workers_per_trial
    ladders: dict[tuple, list[int]] = {}
    for cell in cells:
        if cell.size > 0:
            ladders.setdefault((cell.source, cell.task, cell.quality), []).append(cell.size)
    separate = sum(example_passes(sizes, per_step, shared=False) for sizes in ladders.values())
    if preset.ladder != "shared":
        return f"phase 2: {separate:,} example-passes per epoch per seed (ladder separate)"
    if not is_searched(epochs) and epochs != 1:
        return (f"phase 2: {separate * epochs:,} example-passes per seed (epochs_intermediate {epochs}: a shared "
                f"ladder needs one epoch, so each size trains separately)")
    shared = sum(example_passes(sizes, per_step, shared=not is_mixture(task),   # mixtures train separately
                                decay_fraction=knobs.get("decay_fraction", 0.2))
                 for (_, task, _), sizes in ladders.items())
    line = f"phase 2: {shared:,} example-passes per seed with the shared ladder ({separate:,} separate)"
    if is_searched(epochs):
        line += " for trials with one epoch (epochs_intermediate is searched; more epochs train each size alone)"
    return line


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
        if args.precision:
            preset = preset.with_overrides(precision=args.precision)
        if args.targets:
            preset = preset.with_overrides(targets=args.targets)
        if args.intermediate_task:
            preset = preset.with_overrides(english_tasks=args.intermediate_task)
        check_address(args.address)
        experiment = args.experiment or f"scale-vs-quality-{preset.name}"
        experiment_dir = Path(args.storage_path).resolve() / experiment
        tracking_uri = args.tracking_uri or f"sqlite:///{experiment_dir / 'mlflow.db'}"
        the_plan = plan(preset, args)
        check_inputs(preset, experiment_dir, tracking_uri, resume=args.resume, dry_run=args.dry_run)
        print_plan(preset, the_plan, experiment_dir, tracking_uri)
        if args.dry_run:
            return 0
        _driver_lock = hold_driver_lock(experiment_dir)   # held until this process ends
        install_excepthook()   # a full disk met outside Tune's loop is one line too (sweeps/disk_guard.py)
        quiet_console()
        print(connect_ray(args.address))

    # After the sweep finished what it could: exit 1 when any trial ended in an error (a summary of them and the
    # resume command on stderr), else 3 when the analysis failed, else 0.
    from sweeps.stages import finish_sweep, run_sweep   # imports Ray Tune, Optuna and MLflow: only when needed
    # Ctrl-C stops the whole sweep. Tune's own SIGINT handler would end the stage quietly and the next one would
    # start; sweeps/interrupt.py ends the stage as Tune's stop signal does and then raises KeyboardInterrupt.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        outcome = run_sweep(preset, the_plan, experiment=experiment, experiment_dir=experiment_dir,
                            tracking_uri=tracking_uri, resume=args.resume, resume_command=resume_command(argv))
    except KeyboardInterrupt:
        print(f"interrupted; finished trials are kept. Continue with: {resume_command(argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    analysis = None if args.no_analysis else run_analysis(
        experiment_dir, experiment, tracking_uri, mlflow_behind=not outcome["tracker"].client.caught_up())
    code, summary = finish_sweep(outcome, analysis)
    print(summary, file=sys.stderr if code else sys.stdout)
    # MLflow 3's UI opens an experiment on its GenAI overview whatever the experiment's tags say; the address's
    # workflowType opens the runs (the sidebar's "Model training" switch does the same).
    experiment_id = outcome["tracker"].experiment_id
    where = (f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"
             if tracking_uri.startswith("http") else
             f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000, then "
             f"http://127.0.0.1:5000/#/experiments/{experiment_id}?workflowType=machine_learning")
    print(f"MLflow: {where} (Views menu: 'Test scores per trial'); Optuna: optuna-dashboard "
          f"sqlite:///{experiment_dir / 'optuna.db'} --host 127.0.0.1")
    return code


def quiet_console() -> None:
    """Keep what Ray Tune prints that is not the user's business out of the terminal (sweeps/progress.py shows the
    sweep; errors and warnings still show): its warnings about operations slower than 0.5 s (on a busy laptop,
    every MLflow write) below 5 s, its new console reporter (an experiment box, paths and a TensorBoard hint,
    whatever the verbosity: the legacy one honours verbose=0) and its INFO lines. Before Ray Tune is imported: it
    reads the threshold then."""
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)


EXIT_INTERRUPTED = 130   # what a shell reports for a program ended by Ctrl-C


def resume_command(argv=None) -> str:
    """The command that continues this sweep: the same arguments, with --resume."""
    args = [arg for arg in (sys.argv[1:] if argv is None else argv) if arg != "--resume"]
    script = Path(__file__).resolve()
    shown = os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)
    return shlex.join(["python", shown, *args, "--resume"])


def run_analysis(experiment_dir: Path, experiment: str, tracking_uri: str, *,
                 mlflow_behind: bool = False) -> tuple[int, str]:
    """Fit the curves (analysis/fit_curves.py, which also logs its report to the MLflow parent run); returns its
    exit status and the command that reruns it. While MLflow still misses writes (its server is away: they wait in
    mlflow_pending.jsonl), the analysis reads results.csv, which has every row, and its report stays on disk."""
    out = experiment_dir / "analysis"
    source = (["--results", str(experiment_dir / "results.csv")] if mlflow_behind else
              ["--experiment", experiment, "--tracking-uri", tracking_uri])
    command = [sys.executable, str(REPO / "analysis" / "fit_curves.py"), *source, "--out", str(out), "--overwrite"]
    if mlflow_behind:
        print(f"MLflow at {tracking_uri} has not had every write yet (mlflow_pending.jsonl; --resume replays "
              "them): the analysis reads results.csv", file=sys.stderr, flush=True)
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode == 0:
        print(f"analysis report: {out / 'report.md'}" +
              ("" if mlflow_behind else " (also an artifact of the sweep's MLflow parent run)"))
    return done.returncode, shlex.join(command)

if __name__ == "__main__":
    sys.exit(main())
