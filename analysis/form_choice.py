"""Which curve form: judged by rolling-origin extrapolation, on the data and again on every resample.

The question is about sizes beyond the ones fitted, so a form is judged by how well it extrapolates (Alabdulmohsin
et al. 2022): for each of the last `HOLDOUTS` sizes n_(h), every form is fitted to the sizes below it and predicts
it. A form's score is the sum of its squared prediction errors, each in standard errors of the held-out cell mean;
the smallest score wins. Only forms that can be judged on the same held-out sizes compete (a form needs as many
sizes as it has parameters before the first of them). `choose` repeats the whole judgement on resampled cell means
(`resample_around_forms`), warm-started from the fits to the data, so the spread of the choices is part of every
interval.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.curves import FORMS, Form, fit_points, refit_many

HOLDOUTS = 3


@dataclass
class Judgement:
    """The fits of one curve (x: its sizes in increasing order) and which form extrapolates best."""
    x: np.ndarray
    y: np.ndarray
    sd: np.ndarray
    fits: dict                      # form name -> parameters fitted to every size (None: too few sizes)
    candidates: tuple = ()          # the forms that were judged, in FORMS order
    holdouts: tuple = ()            # indices into x of the held-out sizes
    partial: dict = field(default_factory=dict)  # (form name, holdout) -> parameters fitted to x[:holdout]
    errors: dict = field(default_factory=dict)   # form name -> predicted minus measured mean at each holdout
    selected: Form | None = None

    def score(self, form: Form) -> float:
        return float(np.sum((np.array(self.errors[form.name]) / self.sd[list(self.holdouts)]) ** 2))


def judge(x: np.ndarray, y: np.ndarray, sd: np.ndarray) -> Judgement:
    """Fit every form, judge those that can be judged, select one (the first fitted in FORMS if none can be)."""
    fits = {form.name: fit_points(form, x, y, sd) for form in FORMS}
    fitted = [form for form in FORMS if fits[form.name] is not None and not form.degenerate(fits[form.name][None])[0]]
    last = range(len(x) - 1, max(len(x) - 1 - HOLDOUTS, 0), -1)
    candidates = tuple(form for form in fitted if any(h >= len(form.param_names) for h in last))
    holdouts = tuple(h for h in last if all(h >= len(form.param_names) for form in candidates))
    judgement = Judgement(x, y, sd, fits, candidates, holdouts)
    for form in candidates:
        for h in holdouts:
            p = fit_points(form, x[:h], y[:h], sd[:h])
            judgement.partial[(form.name, h)] = p
            judgement.errors.setdefault(form.name, []).append(float(form.model(p[None], x[h:h + 1])[0, 0] - y[h]))
    if candidates:
        judgement.selected = min(candidates, key=judgement.score)
    elif fitted:
        judgement.selected = fitted[0]
    return judgement


@dataclass
class Choices:
    """Each resample's form and fit: `forms[chosen[r]]` with parameters `params[chosen[r]][r]`."""
    forms: tuple
    chosen: np.ndarray
    params: list

    def values(self, quantity, *per_resample) -> np.ndarray:
        """quantity(form, P, *arrays) -> (rows of P, ...) numbers, evaluated for each resample with the form it
        chose; each array in per_resample (length R) is passed on restricted to the resamples of that form."""
        out = None
        for i, form in enumerate(self.forms):
            picked = self.chosen == i
            if picked.any():
                values = np.asarray(quantity(form, self.params[i][picked], *(a[picked] for a in per_resample)))
                if out is None:
                    out = np.full((len(self.chosen),) + values.shape[1:], np.nan)
                out[picked] = values
        return out

    def share(self, form: Form) -> float:
        return float(np.mean([self.forms[i] is form for i in self.chosen]))


def plausibility(judgement: Judgement) -> np.ndarray:
    """Weights of the judged forms, exp(-score / 2) normalised: a form that extrapolated worse by 2 standard errors
    at one held-out size weighs e^-2 as much as the best (the weights a normal likelihood of the errors gives)."""
    scores = np.array([judgement.score(form) for form in judgement.candidates])
    weights = np.exp(-(scores - scores.min()) / 2)
    return weights / weights.sum()


def resample_around_forms(judgement: Judgement, noise: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resampled cell means (R x C): the fit of a judged form, drawn for each resample by plausibility, plus noise
    (R x C, drawn about zero). Starting every resample from the selected fit would hide the other forms (their
    resamples would mostly choose the selected one again); starting from the measured means adds the noise twice
    and lets the flexible forms bend to it. Drawn this way, each plausible form is the truth of some resamples."""
    forms = judgement.candidates or (judgement.selected,)
    fitted = np.stack([form.model(judgement.fits[form.name][None], judgement.x)[0] for form in forms])
    weights = plausibility(judgement) if judgement.candidates else np.ones(1)
    return fitted[rng.choice(len(forms), size=len(noise), p=weights)] + noise


def choose(judgement: Judgement, Y: np.ndarray) -> Choices:
    """Redo fit and choice on every row of Y (resampled cell means at the sizes judgement.x)."""
    x, sd = judgement.x, judgement.sd
    if not judgement.candidates:
        form = judgement.selected
        return Choices((form,), np.zeros(len(Y), dtype=int), [refit_many(form, x, Y, judgement.fits[form.name], sd)])
    scores, params = [], []
    for form in judgement.candidates:
        params.append(refit_many(form, x, Y, judgement.fits[form.name], sd))
        score = np.where(form.degenerate(params[-1]), np.inf, 0.0)
        for h in judgement.holdouts:
            P = refit_many(form, x[:h], Y[:, :h], judgement.partial[(form.name, h)], sd[:h])
            score += ((form.model(P, x[h:h + 1])[:, 0] - Y[:, h]) / sd[h]) ** 2
        scores.append(score)
    # A resample whose fit broke down (NaN score) cannot choose that form.
    chosen = np.argmin(np.where(np.isfinite(scores), scores, np.inf), axis=0)
    return Choices(judgement.candidates, chosen, params)
