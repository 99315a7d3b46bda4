"""What the results mean: read trials (CSV or MLflow), fit curves, plot, report. Never imports torch."""
