"""Design advice: the smallest difference the sweep could detect, and what would resolve an undetermined verdict.

- Smallest detectable difference: (z_0.975 + z_0.8) standard errors, the true difference that a two-sided 5% test
  finds with 80% probability; the standard error is the (tail-robust) spread of the resampled difference.
- Seeds or test examples to resolve a verdict: a verdict is undetermined when its interval holds a category
  boundary (+-FLAT_GAIN for the gain per doubling, 0 for the steadiness and for a difference). To exclude it at
  the current estimate, the interval's half-width on that side must shrink to the estimate's distance from the
  boundary, its variance by r = (distance / half-width)^2. The variance splits into a seed part S (shrinks as 1/k
  with k seeds per cell) and a test-set part T (as 1/m with m test examples): each cell's influence on the
  number is read off the resamples by least squares (the number regressed on the resampled cell means), S and T
  are the influences squared times each cell's seed and test variance. More seeds alone need r (S + T) > T, more
  test examples alone r (S + T) > S. This treats the form's uncertainty as shrinking with the noise, which is the
  hope rather than a promise: the sizes measured bound it too.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from analysis.bootstrap import spread
from analysis.verdicts import FLAT_GAIN, size_words

DETECTABLE_Z = float(norm.ppf(0.975) + norm.ppf(0.8))  # 2.80


def detectable(values) -> float | None:
    """The smallest true difference a two-sided 5% test finds with 80% probability (None when unknown)."""
    return _finite(DETECTABLE_Z * spread(values))


def for_curve(tier, gain: float, gain_ci, gains: np.ndarray) -> dict | None:
    """What would resolve the gain per doubling against the flat band, when its interval straddles an edge."""
    if tier.choices is None:
        return None
    advice = {"smallest_detectable_gain": detectable(gains)}
    crossing = [edge for edge in (-FLAT_GAIN, FLAT_GAIN) if gain_ci[0] < edge < gain_ci[1]]
    if crossing:
        advice.update(_needed(tier, tier.keys, gains, gain, gain_ci, crossing))
    return advice


def for_comparison(tier, key, difference: float, difference_ci, differences: np.ndarray) -> dict | None:
    """What would tell whether the multilingual cell beats the English curve at its largest size."""
    if tier.choices is None or difference_ci is None:
        return None
    low, high = (float(end) for end in difference_ci)
    if not low < 0 < high:
        return None
    return _needed(tier, tier.keys + [key], differences, difference, (low, high), [0.0])


def _needed(tier, keys, values, point, ci, edges) -> dict:
    """Seeds per cell, or test examples per score, that would exclude the nearest edge at the current estimate."""
    distance = min(abs(point - edge) for edge in edges)
    edge = min(edges, key=lambda e: abs(point - e))
    half_width = abs((ci[0] if edge < point else ci[1]) - point)
    noise = tier.noise
    seeds = int(np.median([len(noise.scores[key]) for key in keys]))
    examples = float(np.median([noise.test_examples.get(key, np.nan) for key in keys]))
    if distance == 0 or not np.isfinite(half_width) or half_width == 0:
        return {"resolve": "the estimate sits on a category boundary: no amount of replication decides it"}
    r = (distance / half_width) ** 2
    seed_part, test_part = _variance_parts(tier, keys, values)
    total = seed_part + test_part
    seeds_needed = (math.ceil(seeds * seed_part / (r * total - test_part))
                    if noise.knows_seed_noise and r * total > test_part else None)
    examples_needed = (math.ceil(examples * test_part / (r * total - seed_part))
                       if np.isfinite(examples) and r * total > seed_part else None)
    words = []
    if seeds_needed:
        words.append(f"about {seeds_needed} seeds per cell (now {seeds})")
    elif not noise.knows_seed_noise:
        words.append("a second seed per cell, to measure seed noise at all")
    if examples_needed:
        words.append(f"about {size_words(examples_needed)} test examples per score (now {size_words(examples)})")
    resolve = (" or ".join(words) + " would decide it if the estimate stays where it is") if words else \
        ("neither more seeds nor more test examples alone decide it: the form's uncertainty dominates; "
         "measure larger sizes")
    return {"resolve": resolve, "seeds_needed": seeds_needed, "test_examples_needed": examples_needed,
            "seed_share": _finite(seed_part / total) if total > 0 else None}


def _variance_parts(tier, keys, values) -> tuple[float, float]:
    """(seed part, test-set part) of the variance of `values` over the resamples, through each cell's influence."""
    noise = tier.noise
    deltas = np.stack([tier.resampled[key] - noise.mean(key) for key in keys], axis=1)
    finite = np.isfinite(values)
    if finite.sum() <= len(keys):
        return 0.0, 0.0
    centered = values[finite] - values[finite].mean()
    influence, *_ = np.linalg.lstsq(deltas[finite] - deltas[finite].mean(axis=0), centered, rcond=None)
    seed_variance = noise.seed_variance if noise.knows_seed_noise else 0.0
    seed_part = sum(g ** 2 * seed_variance / len(noise.scores[key]) for g, key in zip(influence, keys))
    test_part = sum(g ** 2 * noise.test_variance(key) for g, key in zip(influence, keys))
    return float(seed_part), float(test_part)


def _finite(x):
    return float(x) if x is not None and np.isfinite(x) else None
