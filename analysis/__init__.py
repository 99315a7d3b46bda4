"""What the results mean: read trials (CSV or MLflow), fit curves, plot, report. Never imports torch.

Entry point: `python analysis/fit_curves.py --results results.csv --out DIR` (or `--experiment NAME
--tracking-uri URI`). Modules, in the order the data flows:
read_results (contract table, trial selection) -> curves (forms and fits) -> bootstrap (intervals) ->
answer (curves, comparisons) -> verdicts, report, plots (summary.json, report.md, PNGs).
`synthetic` makes tables with known curves for the tests.
"""
