"""Results tables with known curves, in the results-contract schema: for tests and for timing the analysis."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.read_results import COLUMNS

# A ladder on which the recovery criteria hold (s_inf within 1 point, alpha within 20%, from 3 seeds with noise
# 0.5; met by 39 of 40 random tables): it reaches 128 n0, where TRUTH is within 1 point of its ceiling.
LADDER = (0, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000)
# s(n) = s_inf - a * (n + n0)^(-alpha): from 40 at n = 0 towards 75.
TRUTH = {"s_inf": 75.0, "a": 35.0 * 500 ** 0.8, "alpha": 0.8, "n0": 500.0}


def power_law_score(n, s_inf, a, alpha, n0):
    return s_inf - a * (np.asarray(n, dtype=float) + n0) ** -alpha


def synthetic_table(curves: dict, sizes=LADDER, seeds: int = 3, noise: float = 0.5, languages=("fr",),
                    targets=("genre",), multilingual: dict | None = None, language_step: float = 0.0,
                    rng_seed: int = 0) -> pd.DataFrame:
    """curves: English tier -> power-law parameters (as in TRUTH); multilingual: (quality, size) -> true score.

    The baseline (size 0) is drawn from the first tier's curve. Language i is shifted by -i * language_step points.
    No `avg` rows: the analysis computes them.
    """
    rng = np.random.default_rng(rng_seed)
    first = next(iter(curves.values()))
    cells = [("none", "none", 0, power_law_score(0, **first))]
    cells += [("english", tier, n, power_law_score(n, **truth)) for tier, truth in curves.items() for n in sizes if n]
    cells += [("multilingual", quality, n, score) for (quality, n), score in (multilingual or {}).items()]
    rows = []
    for target in targets:
        for source, quality, size, score in cells:
            for seed in range(seeds):
                trial = f"{target}-{source}-{quality}-{size}-{seed}"
                for i, language in enumerate(languages):
                    rows.append((trial, "replicate", source, quality, size, seed, 2e-5, 1e-5, target, language,
                                 "accuracy", score - i * language_step + rng.normal(0, noise)))
    return pd.DataFrame(rows, columns=list(COLUMNS))
