"""Every cell's mean score with its 95% interval: the plain table under the curves.

For each (target, language, cell): the mean over its seeds, and an interval from the same noise model as the curves
(analysis.noise: seed variance pooled over the cells of the (target, language), plus the binomial test-set error of
the cell's test examples), with a t quantile on the pooled degrees of freedom (normal when only test-set noise is
known), kept within 0-100. It is about the cell's mean at this test-set size, not about a difference between
cells (the curves and comparisons carry those).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.answer import cell_scores
from analysis.noise import CellNoise


def cell_means(rows: pd.DataFrame, level: float = 0.95) -> list[dict]:
    table = []
    for (target, language), group in rows.groupby(["target_task", "language"], sort=True):
        noise = CellNoise.from_cells(*cell_scores(group))
        df = noise.degrees_of_freedom
        quantile = stats.t.ppf(0.5 + level / 2, df) if df else stats.norm.ppf(0.5 + level / 2)
        for key in sorted(noise.scores, key=lambda k: (k[0] != "none", k)):
            mean, error = noise.mean(key), noise.standard_error(key)
            known = noise.knows_seed_noise or noise.knows_test_noise
            table.append({
                "target_task": target, "language": language, "source": key[0], "intermediate_task": key[1],
                "quality": key[2], "size": int(key[3]), "seeds": int(len(noise.scores[key])), "mean": mean,
                "ci": [max(0.0, mean - quantile * error), min(100.0, mean + quantile * error)] if known else None,
                "test_examples": _known(noise.test_examples.get(key)), "degrees_of_freedom": df,
                "seed_sd": float(np.sqrt(noise.seed_variance)) if noise.knows_seed_noise else None})
    return table


def _known(value) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def markdown(table: list[dict], language: str = "avg") -> list[str]:
    """One row per cell, one column per target: mean [95% interval] (seeds) for one language."""
    targets = sorted({row["target_task"] for row in table})
    cells = sorted({(r["source"], r["intermediate_task"], r["quality"], r["size"]) for r in table},
                   key=lambda c: (c[0] != "none", c[0], c[2], c[3]))
    by_key = {(r["target_task"], r["source"], r["intermediate_task"], r["quality"], r["size"]): r
              for r in table if r["language"] == language}
    lines = [f"| cell | {' | '.join(targets)} |", "|---" * (len(targets) + 1) + "|"]
    for source, task, quality, size in cells:
        label = "none (baseline)" if source == "none" else f"{source} {task}/{quality} {size:,}"
        values = []
        for target in targets:
            row = by_key.get((target, source, task, quality, size))
            if row is None:
                values.append("-")
            elif row["ci"] is None:
                values.append(f"{row['mean']:.1f} (n={row['seeds']})")
            else:
                values.append(f"{row['mean']:.1f} [{row['ci'][0]:.1f}, {row['ci'][1]:.1f}] (n={row['seeds']})")
        lines.append(f"| {label} | {' | '.join(values)} |")
    return lines
