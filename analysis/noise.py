"""How uncertain a cell mean is, and resampled cell means that carry that uncertainty.

A cell (source, quality, size) of one (target, language) has one score per seed. Its mean varies for two reasons:
- *seed noise*: training randomness, variance sigma^2 per run. Estimated by pooling the within-cell variances of
  every cell of the (target, language) that has two or more seeds (k_c seeds give k_c - 1 degrees of freedom), so
  3 seeds per cell over a dozen cells give some 24 degrees of freedom instead of 2 per cell.
- *test-set noise*: the score is measured on m test examples, so it is off by a binomial error of variance
  100^2 p (1 - p) / m points^2 (p from the cell mean, kept off 0 and 1 by one pseudo-example each side). The seeds
  of a cell are scored on the same test examples and behave alike, so this error is common to them: their spread
  does not show it, and it is added. Counted independent between cells (models trained on different data get
  different examples wrong); the part that is not, shared by all cells, shifts levels and not the gains.
  For a mean of per-example scores in [0, 1] that are not 0/1 (span QA's token F1) the binomial variance is an
  upper bound; for entity-level F1 (a ratio over the entities of m sentences) it is an approximation.

Var(cell mean) = sigma^2 / k_c + v_c. A resample draws sigma^2 from its scaled inverse chi-square distribution
(sigma_hat^2 * df / chi^2_df), which is what turns normal intervals into t intervals when the degrees of freedom are
few, and then every cell mean's error as normal noise of that variance, one sigma^2 per resample for all cells.
`resample` returns the measured means plus these errors; the curve fits start from fitted curves instead
(analysis.form_choice.resample_around_forms).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CellNoise:
    """The seed scores of every cell of one (target, language), and what is known of their noise."""
    scores: dict            # key -> seed scores (1-D)
    test_examples: dict     # key -> test examples behind each score (NaN when the table does not say)
    seed_variance: float    # pooled within-cell variance; NaN when no cell has two seeds
    degrees_of_freedom: int

    @classmethod
    def from_cells(cls, scores: dict, test_examples: dict) -> "CellNoise":
        spread = [(np.var(s, ddof=1) * (len(s) - 1), len(s) - 1) for s in scores.values() if len(s) > 1]
        df = sum(d for _, d in spread)
        variance = sum(v for v, _ in spread) / df if df else np.nan
        return cls(scores, test_examples, variance, df)

    def mean(self, key) -> float:
        return float(np.mean(self.scores[key]))

    def test_variance(self, key) -> float:
        """The binomial variance of the score on the cell's test examples (0 when their number is unknown)."""
        m = self.test_examples.get(key, np.nan)
        if not np.isfinite(m) or m <= 0:
            return 0.0
        p = (self.mean(key) / 100 * m + 1) / (m + 2)
        return 100.0 ** 2 * p * (1 - p) / m

    def standard_error(self, key, seed_variance=None) -> float:
        """Of the cell mean; seed noise counts as 0 when it cannot be estimated (see `note`)."""
        variance = self.seed_variance if seed_variance is None else seed_variance
        seed_part = variance / len(self.scores[key]) if np.isfinite(variance) else 0.0
        return float(np.sqrt(seed_part + self.test_variance(key)))

    @property
    def knows_seed_noise(self) -> bool:
        return self.degrees_of_freedom > 0

    @property
    def knows_test_noise(self) -> bool:
        return any(np.isfinite(m) and m > 0 for m in self.test_examples.values())

    def note(self) -> str | None:
        """Why intervals are missing or partial; None when both kinds of noise are estimated."""
        if not self.knows_seed_noise and not self.knows_test_noise:
            return "cannot be estimated: a single seed per cell and no test-set size (n_examples)"
        if not self.knows_seed_noise:
            return "test-set noise only: a single seed per cell, so seed noise is not counted"
        if not self.knows_test_noise:
            return "seed noise only: the table does not give the test-set size (n_examples)"
        return None

    def resample(self, n_boot: int, rng: np.random.Generator) -> dict | None:
        """key -> (n_boot,) resampled cell means; None when neither kind of noise is known."""
        if not self.knows_seed_noise and not self.knows_test_noise:
            return None
        if self.knows_seed_noise:
            seed_variance = self.seed_variance * self.degrees_of_freedom / rng.chisquare(self.degrees_of_freedom,
                                                                                       n_boot)
        else:
            seed_variance = np.zeros(n_boot)
        resampled = {}
        for key in self.scores:
            variance = seed_variance / len(self.scores[key]) + self.test_variance(key)
            resampled[key] = self.mean(key) + np.sqrt(variance) * rng.standard_normal(n_boot)
        return resampled
