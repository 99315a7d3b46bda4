"""Fit diminishing-returns curves to a sweep's results, compare with the multilingual cells, answer the question.

    python analysis/fit_curves.py --results STORAGE/EXP/results.csv --out STORAGE/EXP/analysis
    python analysis/fit_curves.py --experiment EXP --tracking-uri sqlite:///mlflow.db --out DIR

Writes DIR/summary.json, DIR/report.md, one PNG per target and english_equivalent_multipliers.png (the
English-equivalent size of the multilingual cells per language); reading from MLflow, also logs them as
artifacts of the sweep's parent run. Bad input: one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the `analysis` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import plots  # noqa: E402
from analysis.answer import analyse  # noqa: E402
from analysis.cell_means import cell_means  # noqa: E402
from analysis.read_results import AnalysisInputError, log_artifacts, prepare, read_csv, read_mlflow  # noqa: E402
from analysis.report import MULTIPLIERS, write_report, write_summary  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise AnalysisInputError(f"{message} (see --help)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = _Parser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--results", type=Path, help="the sweep's results.csv")
    source.add_argument("--experiment", help="MLflow experiment of the sweep (needs --tracking-uri)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. sqlite:///mlflow.db")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; must be empty)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    args = parser.parse_args(argv)
    if args.experiment and not args.tracking_uri:
        parser.error("--experiment needs --tracking-uri")
    if args.tracking_uri and not args.experiment:
        parser.error("--tracking-uri goes with --experiment, not --results")
    if args.bootstrap < 100:
        parser.error("--bootstrap needs at least 100 resamples for a 95% interval")
    return args


def run(args: argparse.Namespace) -> list[Path]:
    if args.out.exists() and not args.out.is_dir():
        raise AnalysisInputError(f"--out {args.out} is a file; pass a folder")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise AnalysisInputError(f"{args.out} is not empty; choose another --out or pass --overwrite")
    if args.results is not None:
        table, parent_run, left_out = read_csv(args.results), None, {}
        source = str(args.results)
    else:
        table, parent_run, left_out = read_mlflow(args.experiment, args.tracking_uri)
        source = f"MLflow experiment '{args.experiment}' (run {parent_run})"
    rows, counts = prepare(table)
    curves, comparisons, tier_fits = analyse(rows, args.bootstrap, args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    metrics = rows.groupby("target_task")["metric"].first().to_dict()
    plot_files = {}
    for target in sorted(metrics):
        fits = [fit for fit in tier_fits if fit.target_task == target]
        if fits:
            plot_files[target] = re.sub(r"[^\w.-]", "_", target) + ".png"
            plots.plot_target(target, fits, rows[rows["target_task"] == target], args.out / plot_files[target])
    if any(row["multiplier"] is not None for row in comparisons):
        plot_files[MULTIPLIERS] = "english_equivalent_multipliers.png"
        plots.plot_multipliers(comparisons, args.out / plot_files[MULTIPLIERS])
    data = {"input": source, **counts, **left_out, "bootstrap_resamples": args.bootstrap, "seed": args.seed}
    cells = cell_means(rows)
    write_summary(args.out / "summary.json", curves, comparisons, data, cells)
    write_report(args.out / "report.md", curves, comparisons, data, metrics, plot_files, cells)
    written = [args.out / "summary.json", args.out / "report.md"] + [args.out / f for f in plot_files.values()]
    if parent_run is not None:
        log_artifacts(args.tracking_uri, parent_run, written)
    return written


def main(argv=None) -> int:
    start = time.perf_counter()
    try:
        written = run(parse_args(argv))
    except AnalysisInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(str(p) for p in written)} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
