"""What the results mean: read trials (CSV or MLflow), fit curves, plot, report. Never imports torch.

Entry point: `python analysis/fit_curves.py --results results.csv --out DIR` (or `--experiment NAME
--tracking-uri URI`). Modules, in the order the data flows:
schema (the results contract) -> read_results (contract table, trial selection on validation) -> noise (how
uncertain each cell mean is: seeds and test set) -> curves (forms and fits) -> form_choice (rolling-origin
judgement, redone on every resample) -> bootstrap (intervals) -> answer (curves, comparisons) -> verdicts, advice,
languages, method, report, plots (summary.json, report.md, PNGs).
`synthetic` makes tables with known curves for the tests; `calibration` checks the intervals' coverage on them
(`python -m analysis.calibration`).
"""
