"""The report's Method section: how every number in it was made, in the order the data flow."""
from __future__ import annotations

from analysis.curves import F_SCALE
from analysis.form_choice import HOLDOUTS
from analysis.verdicts import FLAT_GAIN, HORIZON, STEADY_SHARE

METHOD = """## Method

- **Points.** Each English curve is the mean score against the English intermediate size n for one target,
  language and English tier (intermediate task and quality); the baseline without intermediate training (source
  none) is its n = 0 point, shared by all tiers. `avg` is the mean over a target's languages (computed per trial
  where the table lacks it, its test examples summed). Rows with a NaN score (failed trials) are left out and
  counted above.
- **Trial selection, on validation only.** One trial per (cell, seed), the same for every target: the
  replicate-stage trial when there is one (it reruns hyperparameters the search chose on validation), otherwise the
  trial with the best validation objective. Test scores are reported, never used to choose: choosing among
  learning rates by the score we then plot would bias each cell upwards, more so where the searcher looked more
  often. Tables without an objective (older ones) keep the first trial by id and are counted above.
- **Noise of a cell mean.** Seed noise: the within-cell variances of all cells of the (target, language) with two
  or more seeds, pooled (k - 1 degrees of freedom per cell). Test-set noise: the binomial variance
  100^2 p (1 - p) / m of a score on m test examples (`n_examples`; for `avg` the sum over languages), common to the
  seeds of a cell, so added to the seed part: Var = sigma^2 / k + v. Counted as independent between cells. With a
  single seed per cell only the test-set part is known (noted); with neither, there is no interval.
- **Forms.** power_law: s(n) = s_inf - a (n + n0)^(-alpha); m4 (Alabdulmohsin et al. 2022) on the error
  e = 100 - s: (e - e_inf) / (e_0 - e)^alpha = beta n^c; log_linear: s = b + k log2(n + n0) (no ceiling). Fitted to
  the cell means with residuals in standard errors, scipy's least_squares, soft_l1 loss (scale {f_scale:g}
  standard errors), bounds and several starts; a form needs at least as many sizes as it has parameters. M4 cannot
  fall: on a falling curve its fit is flat at a bound and it is not judged.
- **Form choice by rolling-origin extrapolation.** For each of the last {holdouts} sizes, every form is fitted to
  the sizes below it and predicts it; a form's score is the sum of its squared prediction errors in standard errors
  of the held-out mean (the table shows their root mean square in points; the selected form in bold). The lowest
  score is selected; only forms that can be judged on the same held-out sizes compete.
- **Intervals include the form's uncertainty.** {n_boot} resamples (seed {seed}). Each resample starts from the fit
  of one judged form, drawn with weight exp(-score / 2) (a form that extrapolated worse weighs less), adds to every
  cell mean a normal error of the variance above with sigma^2 drawn from its scaled inverse chi-square distribution
  (t-like intervals with few degrees of freedom), and then redoes the fits and the form choice. Every derived
  number comes from each resample's chosen form; intervals are the 2.5% and 97.5% percentiles. The share of
  resamples choosing each form is shown next to it. ∞ in an interval: in more than 2.5% of the resamples the curve
  has no ceiling, or never reaches the score. A synthetic calibration (`python -m analysis.calibration`) checks
  that these intervals cover the truth in at least 92% of tables per curve family.
- **Verdicts.** From the gain per doubling at the largest size, G = s(n_max) - s(n_max / 2) on the fitted curve
  (the doubling that ends at the largest size; the next one would be a forecast that only the form decides), and
  its steadiness D = G - {steady} x (the average gain per doubling between the smallest positive size and n_max),
  with their intervals: falling when G < -{flat}; flat when |G| <= {flat}; rising when G > {flat} and D >= 0 (no sign of
  diminishing returns yet); diminishing when G > {flat} and D < 0. A verdict names every category the intervals
  allow: "undetermined (A or B)" means the sizes and noise measured cannot tell them apart. The ceiling is
  undetermined ("at least X, if any") when more than 2.5% of the resamples choose a form without one.
- **English-equivalent size** of a multilingual cell: the smallest n at which the English curve reaches the cell's
  mean score, and the multiplier: that n over the cell's size. "never" when the score lies above the interval of the
  most the English curve scores (its ceiling if it rises, its baseline if it falls), or when the whole interval of
  the size lies beyond {horizon} times the largest size measured;
  "beyond the measured range" when the curve must be extrapolated to reach it; the interval is given either way.
- **Design advice.** Smallest detectable difference: 2.8 standard errors of the resampled difference (a two-sided
  5% test with 80% power). For an undetermined verdict, the seeds per cell or test examples per score that would
  shrink the interval to exclude the nearest category boundary if the estimate stayed where it is, from each cell's
  influence on the number (a regression over the resamples) and the cell's seed and test-set variances."""


def method_text(n_boot: int, seed: int) -> str:
    return METHOD.format(n_boot=n_boot, seed=seed, flat=FLAT_GAIN, steady=STEADY_SHARE, holdouts=HOLDOUTS,
                         f_scale=F_SCALE, horizon=f"{HORIZON:,}")
