"""Fit every English curve, compare every multilingual cell against it, and put the answer into rows.

For each (target, language, English quality tier) the points are the baseline (source none, n = 0; shared by all
tiers) and the tier's sizes, one score per seed. Every form is fitted; the one that best predicts the largest size
from the smaller ones is selected, and only it is bootstrapped: every derived number uses the selected form.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import bootstrap, verdicts
from analysis.curves import FORMS, Form, extrapolation_error, fit_points, gain_per_doubling

BASELINE = ("none", "none", 0)


@dataclass
class TierFit:
    """The selected fit of one English tier: what the comparisons and the plots need."""
    target_task: str
    language: str
    quality: str
    n: np.ndarray
    y: np.ndarray
    form: Form | None       # None when no form could be fitted
    params: np.ndarray | None
    boot: np.ndarray | None  # parameters refitted on each resample; None when the interval cannot be estimated
    ci_note: str | None      # why there is no interval


def analyse(rows: pd.DataFrame, n_boot: int, seed: int):
    """Returns (curves, comparisons, tier_fits): the two row lists of summary.json and the fits for the plots."""
    rng = np.random.default_rng(seed)
    curves, comparisons, tier_fits = [], [], []
    for (target, language), group in rows.groupby(["target_task", "language"], sort=True):
        cells = _cells(group)
        resampled = bootstrap.resample_cells(cells, n_boot, rng)
        for quality in sorted({q for source, q, _ in cells if source == "english"}):
            keys = sorted(k for k in cells if k[:2] == ("english", quality))
            if BASELINE in cells:
                keys = [BASELINE] + keys
            tier, fit_rows = _fit_tier(target, language, quality, keys, cells, resampled)
            tier_fits.append(tier)
            curves += fit_rows
            asymptote = next((row["asymptote"] for row in fit_rows if row["selected"]), None)
            for key in sorted(k for k in cells if k[0] == "multilingual"):
                comparisons.append(_compare(key, cells[key], resampled[key], tier, asymptote))
    return curves, comparisons, tier_fits


def _cells(group: pd.DataFrame) -> dict:
    """(source, quality, size) -> the scores of that cell, one per seed."""
    cells = {}
    for (source, quality, size), scores in group.groupby(["source", "quality", "size"])["score"]:
        key = BASELINE if source == "none" else (source, quality, int(size))
        cells[key] = np.concatenate([cells.get(key, []), scores.to_numpy(float)])
    return cells


def _fit_tier(target, language, quality, keys, cells, resampled):
    n = np.concatenate([np.full(len(cells[k]), k[2], dtype=float) for k in keys])
    y = np.concatenate([cells[k] for k in keys])
    fits = {form.name: fit_points(form, n, y) for form in FORMS}
    errors = {form.name: None if fits[form.name] is None else extrapolation_error(form, n, y) for form in FORMS}
    judged = [form for form in FORMS if errors[form.name] is not None]
    fitted = [form for form in FORMS if fits[form.name] is not None]
    selected = min(judged, key=lambda form: abs(errors[form.name])) if judged else next(iter(fitted), None)

    tier = TierFit(target, language, quality, n, y, selected, None, None, None)
    if selected is not None:
        tier.params = fits[selected.name]
        single = [k for k in keys if resampled[k] is None]
        if single:
            tier.ci_note = bootstrap.single_score_note(single)
        else:
            Y = np.concatenate([resampled[k] for k in keys], axis=1)
            tier.boot = bootstrap.refit(selected, n, Y, tier.params)
    return tier, [_curve_row(tier, form, fits[form.name], errors[form.name]) for form in FORMS]


def _curve_row(tier: TierFit, form: Form, p, extrapolation) -> dict:
    n_max = float(tier.n.max())
    selected = form is tier.form
    row = {"target_task": tier.target_task, "language": tier.language, "source": "english", "quality": tier.quality,
           "form": form.name, "params": None, "asymptote": None, "asymptote_ci": None,
           "gain_per_doubling_at_max": None, "gain_per_doubling_ci": None, "largest_size": int(n_max),
           "extrapolation_error": extrapolation, "selected": selected, "ci_note": None, "verdict": None}
    if p is None:
        sizes = len(np.unique(tier.n))
        row["ci_note"] = f"not fitted: {sizes} distinct sizes for {len(form.param_names)} parameters"
        return row
    row["params"] = {name: float(value) for name, value in form.readable_params(p).items()}
    row["asymptote"] = _float(form.asymptote(p[None])[0])
    row["gain_per_doubling_at_max"] = float(gain_per_doubling(form, p[None], n_max)[0])
    if not selected:
        row["ci_note"] = "bootstrap run for the selected form only"
        return row
    if tier.boot is None:
        row["ci_note"] = tier.ci_note
    else:
        row["asymptote_ci"] = bootstrap.interval(form.asymptote(tier.boot))
        row["gain_per_doubling_ci"] = bootstrap.interval(gain_per_doubling(form, tier.boot, n_max))
    row["verdict"] = verdicts.curve_verdict(row)
    return row


def _compare(key, scores, resampled_scores, tier: TierFit, asymptote) -> dict:
    _, quality, size = key
    score = float(scores.mean())
    row = {"target_task": tier.target_task, "language": tier.language, "multilingual_quality": quality,
           "multilingual_size": size, "multilingual_score": score, "english_quality": tier.quality,
           "english_form": tier.form.name if tier.form else None, "english_equivalent_size": None,
           "english_equivalent_size_ci": None, "english_largest_size": int(tier.n.max()), "ci_note": None,
           "verdict": None}
    if tier.form is not None:
        row["english_equivalent_size"] = _float(tier.form.equivalent_size(tier.params[None], np.array([score]))[0])
        if tier.boot is None:
            row["ci_note"] = tier.ci_note
        elif resampled_scores is None:
            row["ci_note"] = bootstrap.single_score_note([key])
        else:
            sizes = tier.form.equivalent_size(tier.boot, resampled_scores.mean(axis=1))
            row["english_equivalent_size_ci"] = bootstrap.interval(sizes)
    row["verdict"] = verdicts.comparison_verdict(row, asymptote)
    return row


def _float(x):
    """A JSON-ready number: NaN (no asymptote) and inf (never reached) become None."""
    return float(x) if np.isfinite(x) else None
