"""Write summary.json and report.md from the rows `analysis.answer.analyse` returns."""
from __future__ import annotations

import json
from pathlib import Path

from analysis import verdicts
from analysis.curves import FORMS
from analysis.read_results import AVG
from analysis.verdicts import ci_words, size_words


def write_summary(path: Path, curves, comparisons, data: dict) -> None:
    with open(path, "w") as f:
        json.dump({"curves": curves, "comparisons": comparisons, "data": data}, f, indent=1, allow_nan=False)


def language_order(languages):
    return sorted(set(languages), key=lambda language: (language != AVG, language))


def write_report(path: Path, curves, comparisons, data: dict, metrics: dict, plots: dict) -> None:
    selected = [row for row in curves if row["selected"]]
    lines = ["# Does more English intermediate data keep paying off?", "", _input_line(data), "", "## Verdicts", ""]
    for target in sorted(metrics):
        for language in language_order(row["language"] for row in curves if row["target_task"] == target):
            lines.append(f"- **{target} / {language}**: " + _language_verdict(
                [r for r in selected if (r["target_task"], r["language"]) == (target, language)],
                [r for r in comparisons if (r["target_task"], r["language"]) == (target, language)]))
    for target in sorted(metrics):
        lines += ["", f"## {target} ({metrics[target]}, points)", ""]
        if target in plots:
            lines += [f"![{target}]({plots[target]})", ""]
        lines += _curve_table([row for row in curves if row["target_task"] == target])
        target_comparisons = [row for row in comparisons if row["target_task"] == target]
        if target_comparisons:
            lines += [""] + _comparison_table(target_comparisons)
    lines += ["", METHOD.format(n_boot=data["bootstrap_resamples"], seed=data["seed"], flat=verdicts.FLAT_GAIN)]
    path.write_text("\n".join(lines) + "\n")


def _input_line(data: dict) -> str:
    nan = data["nan_rows"]
    by_target = ", ".join(f"{k}: {v}" for k, v in sorted(data["nan_rows_by_target"].items()))
    return (f"Input: {data['input']}. Rows read: {data['rows_read']}. Rows with a NaN score, left out: {nan}"
            f"{f' ({by_target})' if nan else ''}; trials without any score: {data['failed_trials']}. "
            f"(Trial, target) pairs not selected: {data['trials_not_selected']} (see Method). "
            f"Bootstrap: {data['bootstrap_resamples']} resamples, seed {data['seed']}.")


def _language_verdict(selected_rows, comparison_rows) -> str:
    parts = [row["verdict"] for row in selected_rows] or ["no English curve could be fitted"]
    if comparison_rows:
        best = max(row["multilingual_score"] for row in comparison_rows)
        parts += [row["verdict"] for row in comparison_rows if row["multilingual_score"] == best]
    return "; ".join(parts) + "."


def _curve_table(rows) -> list:
    header = ("| language | English tier | selected form | ceiling [95% CI] "
              "| gain per doubling at largest n [95% CI] | "
              + " | ".join(f"extrapolation error, {form.name}" for form in FORMS) + " |")
    lines = ["### English curves", "", header, "|" + "---|" * (5 + len(FORMS))]
    by_curve = {}
    for row in rows:
        by_curve.setdefault((row["language"], row["quality"]), {})[row["form"]] = row
    for language in language_order(language for language, _ in by_curve):
        for quality in sorted(q for lang, q in by_curve if lang == language):
            forms = by_curve[(language, quality)]
            chosen = next((row for row in forms.values() if row["selected"]), None)
            errors = [_error_cell(forms[form.name]) for form in FORMS]
            if chosen is None:
                lines.append(f"| {language} | {quality} | none fitted | | | " + " | ".join(errors) + " |")
                continue
            ceiling = "none" if chosen["asymptote"] is None else f"{chosen['asymptote']:.1f}"
            gain = f"{chosen['gain_per_doubling_at_max']:+.2f}"
            lines.append(f"| {language} | {quality} | {chosen['form']} | {ceiling}{ci_words(chosen['asymptote_ci'])} "
                         f"| {gain}{ci_words(chosen['gain_per_doubling_ci'], lambda x: f'{x:+.2f}')} at "
                         f"{size_words(chosen['largest_size'])} | " + " | ".join(errors) + " |")
    return lines


def _error_cell(row) -> str:
    if row["extrapolation_error"] is None:
        return "–"
    text = f"{row['extrapolation_error']:+.2f}"
    return f"**{text}**" if row["selected"] else text


def _comparison_table(rows) -> list:
    lines = ["### Multilingual cells against the English curves", "",
             "| language | multilingual cell | score | English tier | English-equivalent size [95% CI] | verdict |",
             "|---|---|---|---|---|---|"]
    for language in language_order(row["language"] for row in rows):
        for row in sorted((r for r in rows if r["language"] == language),
                          key=lambda r: (r["multilingual_quality"], r["multilingual_size"], r["english_quality"])):
            size = row["english_equivalent_size"]
            equivalent = ("never" if size is None and row["english_form"] else "–" if size is None
                          else size_words(size) + ci_words(row["english_equivalent_size_ci"], size_words))
            if row["ci_note"] and size is not None and row["english_equivalent_size_ci"] is None:
                equivalent += " (no interval)"
            lines.append(f"| {language} | {row['multilingual_quality']} × {size_words(row['multilingual_size'])} | "
                         f"{row['multilingual_score']:.1f} | {row['english_quality']} | {equivalent} | "
                         f"{row['verdict']} |")
    return lines


METHOD = """## Method

- **Points.** Each English curve is the score against the English intermediate size n for one target, language and
  quality tier; the baseline without intermediate training (source none) is its n = 0 point, shared by all tiers.
  `avg` is the mean over a target's languages (computed per trial where the table lacks it). Rows with a NaN score
  (failed trials) are left out and counted above.
- **Trial selection.** For each (target, cell, seed) we keep one trial: the replicate-stage trial when there is one,
  otherwise the search-stage trial with the best `avg` score on that target. Taking the best of several learning
  rates by the very score we then plot biases a cell upwards, and more so in cells the searcher visited more often,
  which bends the curve; replicate runs reuse hyperparameters chosen in the search and are not selected on their own
  score, so they are preferred wherever they exist.
- **Forms.** power_law: s(n) = s_inf - a (n + n0)^(-alpha); m4 (Alabdulmohsin et al. 2022) on the error e = 100 - s:
  (e - e_inf) / (e_0 - e)^alpha = beta n^c; log_linear: s = b + k log2(n + n0) (no ceiling). Fitted with
  scipy's least_squares, soft_l1 loss (scale 1 point), bounds and several starts; a form needs at least as many
  distinct sizes as it has parameters.
- **Selection by extrapolation.** Each form is refitted without the largest English size and predicts it; the
  extrapolation error is predicted minus measured mean, in points. The form with the smallest absolute error is
  selected (bold); when no form can be judged, the first fitted of power_law, m4, log_linear is used.
- **Uncertainty.** {n_boot} bootstrap resamples (seed {seed}): within every cell the seeds are drawn with
  replacement (and stretched about the cell mean by sqrt(k/(k-1)) for k seeds, since a plain resample of 3 values
  understates the spread of their mean), the selected form is refitted (warm-started from the full fit), and every
  derived number is recomputed; intervals are the 2.5% and 97.5% percentiles. Seeds are resampled within cells,
  not as whole curves (3 seeds give only 10 distinct whole-curve resamples), which ignores the correlation the
  nested subsets put between the sizes of one seed. A cell with a single seed gives no interval. ∞ in an interval:
  in more than 2.5% of the resamples the English curve never reaches the score.
- **Verdicts.** On the interval of the gain per doubling at the largest size (the point estimate when there is no
  interval): a curve still rises when the interval lies above {flat} points (about the seed noise of one run), falls
  when it lies below -{flat}, has flattened when it lies within ±{flat}, and otherwise may be flattening (or
  falling). The English-equivalent size of a multilingual cell is the smallest n at which the
  selected English curve reaches the cell's mean score; "never" when the ceiling stays below it."""
