"""Does a 95% interval cover the truth 95% of the time? Synthetic sweeps whose truth is known, analysed end to end.

Four families of true English curves, drawn at random for each table (scores in points, n the English size):
- saturating: a power law s_inf - g (1 + n/n0)^-alpha rising by g in [15, 35] towards s_inf in [60, 85],
  alpha in [0.3, 1], n0 in [200, 2000] (log-uniform); its ceiling is s_inf.
- log_linear: s0 + k log2(1 + n/n0), k in [1, 3] points per doubling, no ceiling.
- flat: a constant in [40, 80]; its ceiling is that constant.
- falling: half of them a power law falling by [8, 25] points (alpha in [0.2, 0.6]), half log-linear with
  k in [-3, -1]; the English-equivalent size of any score above the baseline is "never".
Each table has the English ladder 0, 250, ..., 64k, 3 seeds, seed noise sd in [0.5, 2], a test set of m examples
(log-uniform in [50, 2000], binomial error common to a cell's seeds), and two multilingual cells: one scoring what
English reaches at a size n* in [500, 32k], one hard case (above the ceiling, or beyond the measured range for
log-linear curves, or above the baseline of a falling curve).

    python -m analysis.calibration --tables 240      # prints the coverage table per family
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from analysis import verdicts
from analysis.answer import analyse
from analysis.read_results import prepare, validate
from analysis.synthetic import LADDER, synthetic_table

FAMILIES = ("saturating", "log_linear", "flat", "falling")
INTERVALS = ("ceiling", "gain", "equivalent_within", "equivalent_hard")


@dataclass
class Truth:
    family: str
    score: Callable[[np.ndarray], np.ndarray]
    ceiling: float | None   # +inf: none; None: not a ceiling (a falling curve's floor), not checked
    increasing: bool

    def equivalent_size(self, target: float) -> float:
        """The smallest n >= 0 at which the true curve reaches `target` (inf: never)."""
        if target <= self.score(0.0):
            return 0.0
        if not self.increasing or self.score(1e12) < target:
            return np.inf
        return float(np.exp(brentq(lambda t: self.score(np.exp(t)) - target, -5.0, np.log(1e12), xtol=1e-9)))


def _log_uniform(rng, low, high):
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _power(s_inf, g, n0, alpha):
    return lambda n: s_inf - g * (1 + np.asarray(n, dtype=float) / n0) ** -alpha


def _log_linear(s0, k, n0):
    return lambda n: s0 + k * np.log2(1 + np.asarray(n, dtype=float) / n0)


def draw_truth(family: str, rng: np.random.Generator) -> Truth:
    if family == "saturating":
        s_inf = rng.uniform(60, 85)
        score = _power(s_inf, rng.uniform(15, 35), _log_uniform(rng, 200, 2000), rng.uniform(0.3, 1.0))
        return Truth(family, score, s_inf, True)
    if family == "log_linear":
        score = _log_linear(rng.uniform(35, 50), rng.uniform(1, 3), _log_uniform(rng, 50, 500))
        return Truth(family, score, np.inf, True)
    if family == "flat":
        level = rng.uniform(40, 80)
        return Truth(family, lambda n: np.full(np.shape(n), level, dtype=float), level, False)
    start = rng.uniform(60, 90)
    if rng.random() < 0.5:
        drop = rng.uniform(8, 25)
        score = _power(start - drop, -drop, _log_uniform(rng, 200, 2000), rng.uniform(0.2, 0.6))
    else:
        score = _log_linear(start, -rng.uniform(1, 3), _log_uniform(rng, 50, 500))
    return Truth(family, score, None, False)


def _hard_score(truth: Truth, rng) -> float:
    if truth.family == "log_linear":  # reached only beyond the measured range
        return float(truth.score(LADDER[-1] * _log_uniform(rng, 2, 8)))
    if truth.family == "falling":
        return float(truth.score(0.0)) + rng.uniform(2, 6)
    return truth.ceiling + rng.uniform(1, 5) if truth.family == "saturating" else truth.ceiling + rng.uniform(2, 6)


def true_verdict_numbers(truth: Truth) -> tuple[float, float]:
    """(gain per doubling at the largest size, steadiness) of the true curve, as analysis.verdicts defines them."""
    n_1, n_max = LADDER[1], LADDER[-1]
    gain = float(truth.score(n_max) - truth.score(n_max / 2))
    average = float(truth.score(n_max) - truth.score(n_1)) / np.log2(n_max / n_1)
    return gain, gain - verdicts.STEADY_SHARE * average


def _covers(ci, value) -> bool | None:
    if ci is None:
        return False
    low, high = (verdicts.number(end) for end in ci)
    return bool(low <= value <= high)


def one_table(family: str, rng: np.random.Generator, n_boot: int) -> dict:
    truth = draw_truth(family, rng)
    noise, examples = rng.uniform(0.5, 2.0), int(round(_log_uniform(rng, 50, 2000)))
    within = float(truth.score(_log_uniform(rng, 500, 32000)))
    hard = _hard_score(truth, rng)
    table = synthetic_table({"english": truth.score}, seeds=3, noise=noise, test_examples=examples,
                            multilingual={("within", 1000): within, ("hard", 1000): hard},
                            rng_seed=int(rng.integers(2 ** 32)))
    rows, _ = prepare(validate(table, "synthetic table"))
    curves, comparisons, _ = analyse(rows[rows["language"] != "avg"], n_boot, int(rng.integers(2 ** 32)))
    curve = next(row for row in curves if row["selected"])
    by_cell = {row["multilingual_quality"]: row for row in comparisons}
    gain, steadiness = true_verdict_numbers(truth)
    right = verdicts.category(gain, steadiness)
    record = {"family": family, "noise": noise, "test_examples": examples, "form": curve["form"],
              "gain": _covers(curve["gain_per_doubling_ci"], gain),
              "ceiling": None if truth.ceiling is None else _covers(curve["asymptote_ci"], truth.ceiling),
              "equivalent_within": _covers(by_cell["within"]["english_equivalent_size_ci"],
                                           truth.equivalent_size(within)),
              "equivalent_hard": _covers(by_cell["hard"]["english_equivalent_size_ci"], truth.equivalent_size(hard)),
              "true_category": right, "categories": "/".join(curve["categories"]),
              "verdict_right": right in curve["categories"], "decided": len(curve["categories"]) == 1,
              "leading_right": _leading(curve) == right}
    if truth.family == "log_linear":  # no ceiling: checked is only that none is claimed
        record["ceiling"] = None
    return record


def _leading(curve: dict) -> str | None:
    """The category most resamples fall in (the decided one where only one is left)."""
    if len(curve["categories"]) == 1:
        return curve["categories"][0]
    shares = curve.get("category_shares") or {}
    return max(shares, key=shares.get) if shares else None


def calibrate(tables: int, seed: int = 0, n_boot: int = 250) -> pd.DataFrame:
    """One record per table, the families taking turns."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame([one_table(FAMILIES[i % len(FAMILIES)], rng, n_boot) for i in range(tables)])


def coverage_table(records: pd.DataFrame) -> pd.DataFrame:
    """Per family (and overall): the share of tables whose interval covers the truth, for each interval where it
    applies, and the verdicts: right (the truth's category is among the verdict's), decided (one category named)
    and decided and right; leading_right: the category most resamples fall in is the truth's."""
    def summary(group):
        row = {"tables": len(group)}
        for name in INTERVALS:
            checked = group[name].dropna()
            row[name] = checked.astype(float).mean() if len(checked) else np.nan
        row["verdict_right"] = group["verdict_right"].mean()
        row["decided"] = group["decided"].mean()
        row["decided_and_right"] = (group["decided"] & group["verdict_right"]).mean()
        row["leading_right"] = group["leading_right"].mean()
        return pd.Series(row)

    table = records.groupby("family", sort=False).apply(summary, include_groups=False)
    table.loc["all"] = summary(records)
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=250)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    records = calibrate(args.tables, args.seed, args.bootstrap)
    print(coverage_table(records).round(3).to_string())
    by_size = records.groupby(pd.cut(records["test_examples"], [0, 200, 800, 2000]), observed=True)
    print("\nverdicts by test-set size:\n" + by_size[["verdict_right", "decided", "leading_right"]].mean()
          .round(3).to_string())
    print(f"{args.tables} tables, {args.bootstrap} resamples each, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
