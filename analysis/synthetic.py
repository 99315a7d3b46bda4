"""Results tables with known curves, in the results-contract schema: for tests, calibration and timing."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.schema import COLUMNS

# A ladder on which the recovery criteria hold (s_inf within 1 point, alpha within 20%, from 3 seeds with noise
# 0.5; met by 38 of 40 random tables): it reaches 128 n0, where TRUTH is within 1 point of its ceiling.
LADDER = (0, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000)
# s(n) = s_inf - a * (n + n0)^(-alpha): from 40 at n = 0 towards 75.
TRUTH = {"s_inf": 75.0, "a": 35.0 * 500 ** 0.8, "alpha": 0.8, "n0": 500.0}


def power_law_score(n, s_inf, a, alpha, n0):
    return s_inf - a * (np.asarray(n, dtype=float) + n0) ** -alpha


def _score_function(curve):
    """A curve given as power-law parameters (as in TRUTH) or as a function of n."""
    return curve if callable(curve) else (lambda n: power_law_score(n, **curve))


def synthetic_table(curves: dict, sizes=LADDER, seeds: int = 3, noise: float = 0.5, languages=("fr",),
                    targets=("genre",), multilingual: dict | None = None, language_step: float = 0.0,
                    rng_seed: int = 0, test_examples: int | None = None) -> pd.DataFrame:
    """curves: English tier -> power-law parameters (as in TRUTH) or a function of n; multilingual:
    (quality, size) -> true score.

    The baseline (size 0) is drawn from the first tier's curve. Language i is shifted by -i * language_step points.
    Each run's score is the truth plus normal seed noise (sd `noise`); with `test_examples` m it also carries the
    binomial error of scoring on m test examples, common to the seeds of a cell (they are scored on the same
    examples), and the table says m in `n_examples`. No `avg` rows: the analysis computes them.
    """
    rng = np.random.default_rng(rng_seed)
    functions = {tier: _score_function(curve) for tier, curve in curves.items()}
    first = next(iter(functions.values()))
    cells = [("none", "none", 0, float(first(0)))]
    cells += [("english", tier, n, float(f(n))) for tier, f in functions.items() for n in sizes if n]
    cells += [("multilingual", quality, n, score) for (quality, n), score in (multilingual or {}).items()]
    rows = []
    for target in targets:
        for source, quality, size, score in cells:
            for i, language in enumerate(languages):
                truth = score - i * language_step
                test_error = 0.0
                if test_examples:
                    p = min(max(truth / 100, 0.0), 1.0)
                    test_error = 100 * rng.binomial(test_examples, p) / test_examples - 100 * p
                for seed in range(seeds):
                    trial = f"{source}-{quality}-{size}-{seed}"  # one trial scores every target
                    rows.append({"trial_id": trial, "stage": "replicate", "source": source, "quality": quality,
                                 "size": size, "seed": seed, "lr_intermediate": 2e-5, "lr_target": 1e-5,
                                 "target_task": target, "language": language, "metric": "accuracy",
                                 "score": truth + test_error + rng.normal(0, noise), "intermediate_task": "",
                                 "n_examples": float(test_examples) if test_examples else np.nan,
                                 "objective": np.nan})
    return pd.DataFrame(rows, columns=list(COLUMNS))
