"""Bootstrap over seeds and trials: resample each cell's runs, refit, and read off percentile intervals.

Each data cell (source, quality, size) of one (target, language) has one score per seed (after trial selection).
A resample draws, independently per cell, as many scores as the cell has, with replacement (stretched about the
cell mean so that few seeds do not shrink the spread, see `resample_cells`). The baseline cell is drawn once per
resample and shared by every English tier, so tiers are compared on the same baseline. Seeds are resampled within
cells rather than as whole curves: with the usual 3 seeds a whole-curve bootstrap has only 10 distinct resamples.
The price is that it ignores the correlation the nested subsets put between the sizes of one seed.

A cell with a single score cannot be resampled; anything that depends on one gets no interval, with a reason.
"""
from __future__ import annotations

import numpy as np

from analysis.curves import Form, refit_many

LEVEL = 0.95


def resample_cells(cells: dict, n_boot: int, rng: np.random.Generator) -> dict:
    """cells: key -> scores (1-D). Returns key -> (n_boot x count) resampled scores, or None for single-score cells."""
    resampled = {}
    for key in sorted(cells):
        scores = np.asarray(cells[key], dtype=float)
        if len(scores) < 2:
            resampled[key] = None
        else:
            # The mean of n scores drawn with replacement varies by only sqrt((n - 1) / n) of the cell mean's
            # standard error (0.82 for 3 seeds); stretching the draws about the mean puts that factor back.
            draws = scores[rng.integers(0, len(scores), size=(n_boot, len(scores)))]
            resampled[key] = scores.mean() + (draws - scores.mean()) * np.sqrt(len(scores) / (len(scores) - 1))
    return resampled


def single_score_note(keys) -> str:
    names = [f"{source}/{quality}/{size}" for source, quality, size in keys]
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"cannot be estimated: a single seed in {', '.join(names[:3])}{more}"


def refit(form: Form, n: np.ndarray, Y: np.ndarray, p_full: np.ndarray) -> np.ndarray:
    """Fit every resample (rows of Y), warm-started from the full-data fit; returns (n_boot x k) parameters."""
    return refit_many(form, n, Y, p_full)


def interval(values) -> list | None:
    """The central 95% percentile interval; +inf (never reached) survives as an open upper end (None)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(values, [tail, 1 - tail], method="inverted_cdf")
    return [_finite_or_none(low), _finite_or_none(high)]


def _finite_or_none(x):
    return float(x) if np.isfinite(x) else None
