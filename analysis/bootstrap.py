"""Intervals from resampled values, and the JSON form of numbers that may be infinite.

Each resample (analysis.noise) redoes the whole fit, form choice included (analysis.form_choice), so the spread of a
derived number over the resamples holds the noise of the cell means and the uncertainty of the form. The interval
is the central 95% of that spread (percentile interval). Infinite values are kept: +inf for an English-equivalent
size means "never reached", for a ceiling "no ceiling" (a log-linear resample), so a share of them above 2.5% opens
the interval's upper end. In summary.json an infinite value is the string "inf" or "-inf" (float() reads both).
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.95


def interval(values) -> list | None:
    """The central 95% of the finite and infinite values (NaN dropped): [low, high] in JSON form, or None."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(values, [tail, 1 - tail], method="inverted_cdf")
    return [json_value(low), json_value(high)]


def spread(values) -> float:
    """A standard deviation robust to the tails: half the central 68% range of the finite values (NaN if none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return np.nan
    low, high = np.quantile(values, [0.16, 0.84])
    return float((high - low) / 2)


def json_value(x):
    """A number for summary.json: NaN -> None, +-inf -> 'inf' / '-inf', anything else a float."""
    x = float(x)
    if np.isnan(x):
        return None
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x
