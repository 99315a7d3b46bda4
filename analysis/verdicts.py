"""Numbers into words: the one-line verdicts of summary.json and report.md."""
from __future__ import annotations

# Below half a point per doubling of the English set (about the seed-to-seed noise of one run) we call a curve flat:
# the next doubling costs as much data as everything before it and buys less than the noise.
FLAT_GAIN = 0.5


def size_words(n) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    if n >= 1e3:
        return f"{n / 1e3:.3g}k"
    return f"{n:.0f}"


def ci_words(ci, fmt=lambda x: f"{x:.1f}") -> str:
    if ci is None:
        return ""
    low, high = ci
    return f" [{fmt(low) if low is not None else '∞'}, {fmt(high) if high is not None else '∞'}]"


def trend(gain: float, ci) -> str:
    """How the curve moves at its largest size, judged on the interval of the gain per doubling when there is one."""
    low, high = ci if ci is not None else (gain, gain)
    if low > FLAT_GAIN:
        return "still rises"
    if high < -FLAT_GAIN:
        return "falls"
    if low >= -FLAT_GAIN and high <= FLAT_GAIN:
        return "has flattened"
    return "may be flattening" if high > FLAT_GAIN else "may be falling"


def curve_verdict(row: dict) -> str:
    """For the selected form of one English tier."""
    words = (f"English '{row['quality']}' {trend(row['gain_per_doubling_at_max'], row['gain_per_doubling_ci'])}: "
             f"{row['gain_per_doubling_at_max']:+.2f}{ci_words(row['gain_per_doubling_ci'], lambda x: f'{x:+.2f}')} "
             f"points per doubling at {size_words(row['largest_size'])}")
    if row["asymptote"] is None:
        words += ", no ceiling in the log-linear form"
    else:
        words += f", ceiling {row['asymptote']:.1f}{ci_words(row['asymptote_ci'])}"
    if row["ci_note"]:
        words += f" ({row['ci_note']})"
    return words


def comparison_verdict(row: dict, asymptote) -> str:
    multilingual = (f"{size_words(row['multilingual_size'])} '{row['multilingual_quality']}' multilingual examples "
                    f"({row['multilingual_score']:.1f})")
    english = f"English '{row['english_quality']}'"
    if row["english_form"] is None:
        return f"{multilingual}: no {english} curve could be fitted to compare with"
    size = row["english_equivalent_size"]
    if size is None:
        above = f"the {english} ceiling ({asymptote:.1f})" if asymptote is not None else f"the {english} curve"
        return f"{multilingual} stay above {above}: no amount of that English data is predicted to match"
    if size == 0:
        return f"{multilingual} do no better than the {english} curve's baseline without intermediate training"
    words = (f"{multilingual} match {size_words(size)}{ci_words(row['english_equivalent_size_ci'], size_words)} "
             f"{english} examples, {size / row['multilingual_size']:.1f}x their number")
    if size > row["english_largest_size"]:
        words += f" (beyond the largest English set measured, {size_words(row['english_largest_size'])})"
    return words
