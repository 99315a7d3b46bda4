"""Numbers into words by stated rules: the verdict categories and the one-line verdicts of summary.json and report.md.

The curve's verdict comes from two numbers at the largest English size n_max, each with its 95% interval:
- the gain per doubling G = s(n_max) - s(n_max / 2), over the last doubling of the fitted curve (what the
  measured sizes show; the next doubling, s(2 n_max) - s(n_max), would be a forecast that only the form decides), and
- its steadiness D = G - STEADY_SHARE * Gbar, where Gbar is the curve's average gain per doubling between the
  smallest positive size n_1 and n_max: (s(n_max) - s(n_1)) / log2(n_max / n_1).
Categories: falling when G < -FLAT_GAIN; flat when |G| <= FLAT_GAIN; otherwise rising when D >= 0 (the last doubling
still pays at least STEADY_SHARE of the average doubling: no sign of diminishing returns yet) and diminishing when
D < 0. The verdict names every category the intervals allow: one is a decided verdict, several an undetermined one.
"""
from __future__ import annotations

import math

import numpy as np

# Below half a point per doubling of the English set (about the seed-to-seed noise of one run) we call a curve flat:
# the next doubling costs as much data as everything before it and buys less than the noise.
FLAT_GAIN = 0.5
# A doubling that pays less than three quarters of the average doubling so far counts as diminishing returns.
STEADY_SHARE = 0.75
# An English-equivalent size whose whole interval lies beyond this many times the largest size measured (ten more
# doublings) counts as never: a curve that flat or that close to its ceiling is no amount of data away.
HORIZON = 2 ** 10
CATEGORIES = ("rising", "diminishing", "flat", "falling")
MEANING = {"rising": "still rises at its earlier pace", "diminishing": "still rises, but by less with every doubling",
           "flat": "has flattened", "falling": "falls"}


def category(gain: float, steadiness: float) -> str:
    """The category of exact values (the truth of a synthetic curve, or a point estimate)."""
    if gain < -FLAT_GAIN:
        return "falling"
    if gain <= FLAT_GAIN:
        return "flat"
    return "rising" if steadiness >= 0 else "diminishing"


def categories(gain_ci, steadiness_ci) -> list[str]:
    """Every category that values inside both intervals could have, in CATEGORIES order."""
    (g_low, g_high), (d_low, d_high) = gain_ci, steadiness_ci
    allowed = {"falling": g_low < -FLAT_GAIN, "flat": g_low <= FLAT_GAIN and g_high >= -FLAT_GAIN,
               "rising": g_high > FLAT_GAIN and d_high >= 0, "diminishing": g_high > FLAT_GAIN and d_low < 0}
    return [name for name in CATEGORIES if allowed[name]]


def category_shares(gains, steadiness) -> dict[str, float]:
    """The share of the resamples in each category (resampled gains and steadiness, one value per resample): how
    strongly the data lean where the intervals leave several categories."""
    names = [category(g, d) for g, d in zip(np.asarray(gains, float), np.asarray(steadiness, float))]
    return {name: names.count(name) / len(names) for name in CATEGORIES if name in names}


def size_words(n) -> str:
    if n is None or math.isinf(n):
        return "never"
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    if n >= 1e3:
        return f"{n / 1e3:.3g}k"
    return f"{n:.0f}"


def number(x) -> float:
    """A value of summary.json back into a float: numbers as they are, 'inf' and '-inf' as infinities."""
    return float(x)


def ci_words(ci, fmt=lambda x: f"{x:.1f}") -> str:
    if ci is None:
        return ""
    low, high = (number(end) for end in ci)
    if low == high == math.inf:
        return " (in at least 97.5% of the resamples)"
    return f" [{_end(low, fmt)}, {_end(high, fmt)}]"


def _end(x, fmt) -> str:
    return "∞" if x == math.inf else "-∞" if x == -math.inf else fmt(x)


def signed(x) -> str:
    return _end(x, lambda v: f"{v:+.2f}")


def curve_verdict(row: dict) -> str:
    """For the selected form of one English tier: the category (or the categories it cannot tell apart), the gain
    per doubling at the largest size, and the ceiling."""
    largest = size_words(row["largest_size"])
    names = row["categories"]
    if len(names) == 1:
        words = f"English '{row['tier']}' is {names[0]}: it {MEANING[names[0]]}"
    else:
        words = (f"English '{row['tier']}' is undetermined ({' or '.join(names)}): cannot tell from sizes up to "
                 f"{largest}")
        shares = row.get("category_shares")
        if shares:
            leading = max(shares, key=shares.get)
            words += f", {leading} in {shares[leading]:.0%} of the resamples"
    words += (f"; {signed(number(row['gain_per_doubling_at_max']))}{ci_words(row['gain_per_doubling_ci'], signed)}"
              f" points over the doubling to {largest}")
    words += "; " + ceiling_words(row)
    if row["ci_note"]:
        words += f" ({row['ci_note']})"
    return words


def ceiling_words(row: dict) -> str:
    largest = size_words(row["largest_size"])
    ci = row["asymptote_ci"]
    value = number(row["asymptote"]) if row["asymptote"] is not None else math.nan
    if value == -math.inf:
        return f"no floor in the selected form{ci_words(ci)}"
    if value < number(row["baseline"]):
        return f"levels off at {value:.1f}{ci_words(ci)}"
    if ci is None:
        return "no ceiling in the selected form" if math.isinf(value) else f"ceiling {value:.1f} (no interval)"
    low, high = (number(end) for end in ci)
    if low == math.inf:
        return f"no ceiling in sight up to {largest}"
    if high == math.inf:
        shown = f"{value:.1f}, " if math.isfinite(value) else ""
        return (f"ceiling {shown}at least {low:.1f} if any: cannot tell from sizes up to {largest} whether there "
                f"is one")
    return f"ceiling {value:.1f}{ci_words(ci)}"


def comparison_verdict(row: dict) -> str:
    multilingual = (f"{size_words(row['multilingual_size'])} '{row['multilingual_tier']}' multilingual examples "
                    f"({row['multilingual_score']:.1f})")
    english = f"English '{row['english_tier']}'"
    if row["english_form"] is None:
        return f"{multilingual}: no {english} curve could be fitted to compare with"
    size, ci = number(row["english_equivalent_size"]), row["english_equivalent_size_ci"]
    interval = ci_words(ci, size_words)
    kind = row["category"]
    if kind == "never":
        return (f"{multilingual} stay above the most the {english} curve scores: no amount of that English data is "
                f"predicted to match (English-equivalent size{interval or ' never'})")
    if kind == "baseline":
        return (f"{multilingual} do no better than the {english} curve's baseline without intermediate training "
                f"(English-equivalent size 0{interval})")
    if kind == "never in the selected form":
        return (f"{multilingual} stay above the selected {english} curve, but cannot tell whether any amount would "
                f"match (English-equivalent size{interval})")
    words = (f"{multilingual} match {size_words(size)}{interval} {english} examples, "
             f"{size / row['multilingual_size']:.1f}x their number")
    if kind == "beyond the measured range":
        words += (f" (beyond the measured range: extrapolated from sizes up to "
                  f"{size_words(row['english_largest_size'])})")
    return words
