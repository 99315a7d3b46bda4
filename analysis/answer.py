"""Fit every English curve, compare every multilingual cell against it, and put the answer into rows.

For each (target, language, English tier) the points are the cell means of the baseline (source none, n = 0;
shared by all tiers) and of the tier's sizes. Every form is fitted and judged by rolling-origin extrapolation
(analysis.form_choice); the resamples of the cell means (analysis.noise) redo fit and choice, and every derived
number is read off each resample's chosen form, so its interval includes the uncertainty of the form. A tier is
an English (intermediate task, quality) pair; the multilingual cells are compared with every tier.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import advice, verdicts
from analysis.bootstrap import interval, json_value
from analysis.curves import FORMS, gain_per_doubling
from analysis.form_choice import Choices, Judgement, choose, judge, resample_around_forms
from analysis.noise import CellNoise

BASELINE = ("none", "", "none", 0)  # (source, intermediate task, quality, size)


@dataclass
class TierFit:
    """One English tier's curve: what the comparisons, the advice and the plots need."""
    target_task: str
    language: str
    intermediate_task: str
    quality: str
    keys: list              # the cells of the curve, baseline first, by size
    noise: CellNoise
    judgement: Judgement
    choices: Choices | None  # None when no interval can be estimated (see noise.note())
    resampled: dict | None

    @property
    def tier(self) -> str:
        return tier_name(self.intermediate_task, self.quality)

    @property
    def form(self):
        return self.judgement.selected

    @property
    def params(self):
        return None if self.form is None else self.judgement.fits[self.form.name]

    @property
    def x(self) -> np.ndarray:
        return self.judgement.x

    def at_largest(self, form, P):
        return form.model(P, self.x[-1:])[:, 0]

    def steadiness(self, form, P):
        """The gain per doubling at the largest size minus STEADY_SHARE of the average gain per doubling so far."""
        positive = self.x[self.x > 0]
        if len(positive) < 2:
            return np.full(len(P), np.nan)
        ends = form.model(P, np.array([positive[0], positive[-1]]))
        average = (ends[:, 1] - ends[:, 0]) / np.log2(positive[-1] / positive[0])
        return gain_per_doubling(form, P, self.x[-1]) - verdicts.STEADY_SHARE * average

    def point_and_interval(self, quantity, measured=(), resampled=()):
        """quantity(form, P, *arrays) -> one number per row of P. Returns its value for the selected fit (with the
        arrays `measured`), its interval over the resamples (with `resampled`: one value per resample) and the
        resampled values themselves."""
        point = float(quantity(self.form, self.params[None], *(np.atleast_1d(a) for a in measured))[0])
        if self.choices is None:
            return point, None, np.array([point])
        values = self.choices.values(quantity, *resampled)
        return point, interval(values), values


def tier_name(intermediate_task: str, quality: str) -> str:
    return f"{intermediate_task}/{quality}" if intermediate_task else quality


def analyse(rows: pd.DataFrame, n_boot: int, seed: int):
    """Returns (curves, comparisons, tier_fits): the two row lists of summary.json and the fits for the plots."""
    rng = np.random.default_rng(seed)
    curves, comparisons, tier_fits = [], [], []
    for (target, language), group in rows.groupby(["target_task", "language"], sort=True):
        noise = CellNoise.from_cells(*cell_scores(group))
        resampled = noise.resample(n_boot, rng)
        tiers = sorted({key[1:3] for key in noise.scores if key[0] == "english"})
        for task, quality in tiers:
            keys = sorted((k for k in noise.scores if k[:3] == ("english", task, quality)), key=lambda k: k[3])
            keys = ([BASELINE] if BASELINE in noise.scores else []) + keys
            tier = _fit_tier(target, language, task, quality, keys, noise, resampled, rng)
            tier_fits.append(tier)
            selected = _curve_rows(tier)
            curves += selected
            chosen = next((row for row in selected if row["selected"]), None)
            for key in sorted(k for k in noise.scores if k[0] == "multilingual"):
                comparisons.append(_compare(key, tier, chosen))
    return curves, comparisons, tier_fits


def cell_scores(group: pd.DataFrame):
    """(source, intermediate task, quality, size) -> the scores of that cell, one per seed; and -> test examples."""
    scores, examples = {}, {}
    for (source, task, quality, size), cell in group.groupby(["source", "intermediate_task", "quality", "size"]):
        key = BASELINE if source == "none" else (source, task, quality, int(size))
        scores[key] = np.concatenate([scores.get(key, []), cell["score"].to_numpy(float)])
        examples[key] = float(cell["n_examples"].median())
    return scores, examples


def _fit_tier(target, language, task, quality, keys, noise: CellNoise, resampled, rng) -> TierFit:
    x = np.array([key[3] for key in keys], dtype=float)
    y = np.array([noise.mean(key) for key in keys])
    sd = np.ones(len(x)) if resampled is None else np.array([noise.standard_error(key) for key in keys])
    judgement = judge(x, y, sd)
    choices = None
    if judgement.selected is not None and resampled is not None:
        errors = np.stack([resampled[key] for key in keys], axis=1) - y
        choices = choose(judgement, resample_around_forms(judgement, errors, rng))
    return TierFit(target, language, task, quality, keys, noise, judgement, choices, resampled)


def _curve_rows(tier: TierFit) -> list[dict]:
    judgement, rows = tier.judgement, []
    for form in FORMS:
        p = judgement.fits[form.name]
        errors = judgement.errors.get(form.name)
        row = {"target_task": tier.target_task, "language": tier.language, "source": "english",
               "intermediate_task": tier.intermediate_task, "quality": tier.quality, "tier": tier.tier,
               "form": form.name, "params": None, "asymptote": None, "asymptote_ci": None,
               "gain_per_doubling_at_max": None, "gain_per_doubling_ci": None, "steadiness": None,
               "steadiness_ci": None, "largest_size": int(tier.x[-1]), "baseline": None, "highest_score_ci": None,
               "holdout_sizes": [int(tier.x[h]) for h in judgement.holdouts] if errors else None,
               "extrapolation_errors": errors,
               "extrapolation_error": None if errors is None else float(np.sqrt(np.mean(np.square(errors)))),
               "form_share": None if tier.choices is None or form not in tier.choices.forms
               else tier.choices.share(form), "selected": form is tier.form, "categories": None,
               "category_shares": None, "ci_note": None, "verdict": None, "advice": None}
        rows.append(row)
        if p is None:
            row["ci_note"] = f"not fitted: {len(tier.x)} distinct sizes for {len(form.param_names)} parameters"
            continue
        row["params"] = {name: float(value) for name, value in form.readable_params(p).items()}
        row["asymptote"] = json_value(form.asymptote(p[None])[0])
        row["gain_per_doubling_at_max"] = float(gain_per_doubling(form, p[None], tier.x[-1])[0])
        row["steadiness"] = json_value(tier.steadiness(form, p[None])[0])
        row["baseline"] = float(form.model(p[None], np.zeros(1))[0, 0])
        if form not in judgement.candidates and judgement.candidates:
            row["ci_note"] = "not judged: " + ("its fit is flat at a bound (M4 cannot fall)"
                                               if form.degenerate(p[None])[0] else "too few sizes to extrapolate")
        if row["selected"]:
            _fill_selected(row, tier)
    return rows


def _fill_selected(row: dict, tier: TierFit) -> None:
    _, row["asymptote_ci"], _ = tier.point_and_interval(lambda f, P: f.asymptote(P))
    # The most the curve ever scores: its ceiling when it rises, its baseline when it falls.
    _, row["highest_score_ci"], _ = tier.point_and_interval(
        lambda f, P: np.maximum(f.model(P, np.zeros(1))[:, 0], f.asymptote(P)))
    gain, row["gain_per_doubling_ci"], gains = tier.point_and_interval(
        lambda f, P: gain_per_doubling(f, P, tier.x[-1]))
    steadiness, row["steadiness_ci"], steadinesses = tier.point_and_interval(tier.steadiness)
    no_interval = (-np.inf, np.inf)
    gain_ci = [verdicts.number(end) for end in row["gain_per_doubling_ci"] or (gain, gain)]
    steady_ci = (no_interval if np.isnan(steadiness) else
                 [verdicts.number(end) for end in row["steadiness_ci"] or (steadiness, steadiness)])
    row["categories"] = verdicts.categories(gain_ci, steady_ci)
    row["category_shares"] = (verdicts.category_shares(gains, steadinesses)
                              if tier.choices is not None and np.isfinite(steadinesses).all() else None)
    row["ci_note"] = tier.noise.note()
    row["verdict"] = verdicts.curve_verdict(row)
    row["advice"] = advice.for_curve(tier, gain, gain_ci, gains)


def _compare(key, tier: TierFit, curve_row) -> dict:
    _, task, quality, size = key
    noise, resampled = tier.noise, tier.resampled
    score = noise.mean(key)
    scores = None if resampled is None else resampled[key]
    row = {"target_task": tier.target_task, "language": tier.language, "multilingual_intermediate_task": task,
           "multilingual_quality": quality, "multilingual_tier": tier_name(task, quality), "multilingual_size": size,
           "multilingual_score": score, "multilingual_score_ci": None if scores is None else interval(scores),
           "english_intermediate_task": tier.intermediate_task, "english_quality": tier.quality,
           "english_tier": tier.tier, "english_form": tier.form.name if tier.form else None,
           "english_equivalent_size": None, "english_equivalent_size_ci": None, "multiplier": None,
           "multiplier_ci": None, "english_largest_size": int(tier.x[-1]), "difference_at_largest": None,
           "difference_at_largest_ci": None, "smallest_detectable_difference": None, "category": None,
           "ci_note": noise.note(), "verdict": None, "advice": None}
    if tier.form is not None:
        size_point, size_ci, _ = tier.point_and_interval(lambda f, P, s: f.equivalent_size(P, s), [score], [scores])
        row["english_equivalent_size"], row["english_equivalent_size_ci"] = json_value(size_point), size_ci
        row["multiplier"] = json_value(size_point / size)
        row["multiplier_ci"] = None if size_ci is None else [json_value(verdicts.number(end) / size)
                                                             for end in size_ci]
        difference, row["difference_at_largest_ci"], differences = tier.point_and_interval(
            lambda f, P, s: s - tier.at_largest(f, P), [score], [scores])
        row["difference_at_largest"] = difference
        if tier.choices is not None:
            row["smallest_detectable_difference"] = advice.detectable(differences)
        row["category"] = _category(size_point, size_ci, score, tier, curve_row)
        row["advice"] = advice.for_comparison(tier, key, difference, row["difference_at_largest_ci"], differences)
    row["verdict"] = verdicts.comparison_verdict(row)
    return row


def _category(size: float, size_ci, score: float, tier: TierFit, curve_row) -> str:
    highest_ci = curve_row["highest_score_ci"] if curve_row else None
    if highest_ci is not None and score > verdicts.number(highest_ci[1]):
        return "never"
    if size_ci is not None and verdicts.number(size_ci[0]) > verdicts.HORIZON * tier.x[-1]:
        return "never"
    if np.isinf(size):
        return "never in the selected form"
    if size == 0:
        return "baseline"
    return "beyond the measured range" if size > tier.x[-1] else "within the measured range"
