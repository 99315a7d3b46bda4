"""Entry points a person runs: scale_vs_quality.py is the sweep."""
