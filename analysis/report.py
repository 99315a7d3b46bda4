"""Write summary.json and report.md from the rows `analysis.answer.analyse` returns."""
from __future__ import annotations

import json
from pathlib import Path

from analysis.cell_means import markdown as cell_markdown
from analysis.curves import FORMS
from analysis.languages import group_order, script, shares_english_script
from analysis.method import method_text
from analysis.schema import AVG
from analysis.verdicts import ci_words, number, signed, size_words


MULTIPLIERS = "(multipliers)"  # the key of the multiplier figure among the per-target figures (no task is named so)


def write_summary(path: Path, curves, comparisons, data: dict, cells=()) -> None:
    with open(path, "w") as f:
        json.dump({"curves": curves, "comparisons": comparisons, "cells": list(cells), "data": data}, f, indent=1,
                  allow_nan=False)


def language_order(languages):
    return sorted(set(languages), key=lambda language: (language != AVG, language))


def write_report(path: Path, curves, comparisons, data: dict, metrics: dict, plots: dict, cells=()) -> None:
    selected = [row for row in curves if row["selected"]]
    lines = ["# Does more English intermediate data keep paying off?", "", _input_line(data), "", "## Verdicts", ""]
    for target in sorted(metrics):
        for language in language_order(row["language"] for row in curves if row["target_task"] == target):
            lines.append(f"- **{target} / {language}**: " + _language_verdict(
                [r for r in selected if (r["target_task"], r["language"]) == (target, language)],
                [r for r in comparisons if (r["target_task"], r["language"]) == (target, language)]))
    if comparisons:
        lines += ["", "## English-equivalent size per language", ""]
        if MULTIPLIERS in plots:
            lines += [f"![English-equivalent multipliers]({plots[MULTIPLIERS]})", ""]
        for target in sorted({row["target_task"] for row in comparisons}):
            lines += _multiplier_table(target, [r for r in comparisons if r["target_task"] == target])
    for target in sorted(metrics):
        lines += ["", f"## {target} ({metrics[target]}, points)", ""]
        if target in plots:
            lines += [f"![{target}]({plots[target]})", ""]
        lines += _curve_table([row for row in curves if row["target_task"] == target])
        target_comparisons = [row for row in comparisons if row["target_task"] == target]
        if target_comparisons:
            lines += [""] + _comparison_table(target_comparisons)
    if cells:
        lines += ["", "## Cell means, averaged over the languages", "",
                  "Mean over the seeds [95% interval with seed and test-set noise] (seeds); summary.json has every "
                  "language.", ""] + cell_markdown(list(cells))
    lines += ["", "## Design advice", ""] + _advice(selected, comparisons)
    lines += ["", method_text(data["bootstrap_resamples"], data["seed"])]
    path.write_text("\n".join(lines) + "\n")


def _input_line(data: dict) -> str:
    nan = data["nan_rows"]
    by_target = ", ".join(f"{k}: {v}" for k, v in sorted(data["nan_rows_by_target"].items()))
    runs = ""
    if "failed_runs" in data:
        runs = (f" MLflow runs left out with their partial scores: {data['failed_runs']} FAILED (counted among the "
                f"trials without any score), {data['killed_runs']} KILLED (stopped early by the scheduler).")
    return (f"Input: {data['input']}. Rows read: {data['rows_read']}. Rows with a NaN score, left out: {nan}"
            f"{f' ({by_target})' if nan else ''}; trials without any score: {data['failed_trials']}.{runs} "
            f"Trials not selected: {data['trials_not_selected']} (one per cell and seed, chosen on validation; "
            f"{data['chosen_without_objective']} of {data['cells_with_choice']} choices had no validation objective "
            f"and kept the first trial). Bootstrap: {data['bootstrap_resamples']} resamples, seed {data['seed']}.")


def _language_verdict(selected_rows, comparison_rows) -> str:
    parts = [row["verdict"] for row in selected_rows] or ["no English curve could be fitted"]
    if comparison_rows:
        best = max(row["multilingual_score"] for row in comparison_rows)
        parts += [row["verdict"] for row in comparison_rows if row["multilingual_score"] == best]
    return "; ".join(parts) + "."


def _multiplier_table(target: str, rows) -> list:
    lines = [f"### {target}", "", "| language | script | shares English script | multilingual cell | English tier "
             "| English-equivalent size [95% CI] | multiplier [95% CI] | reading |", "|---" * 8 + "|"]
    languages = sorted({row["language"] for row in rows if row["language"] != AVG}, key=group_order)
    for language in languages + ([AVG] if any(row["language"] == AVG for row in rows) else []):
        for row in _sorted_comparisons(r for r in rows if r["language"] == language):
            if row["english_form"] is None:
                continue
            shares = "" if language == AVG else "yes" if shares_english_script(language) else "no"
            lines.append(f"| {language} | {'' if language == AVG else script(language)} | {shares} | "
                         f"{_cell(row)} | {row['english_tier']} | {_size_with_ci(row)} | "
                         f"{_times(row['multiplier'])}{ci_words(row['multiplier_ci'], _times)} | {row['category']} |")
    return lines + [""]


def _times(x) -> str:
    x = number(x)
    return "never" if x == float("inf") else f"{x:,.0f}x" if x >= 10 else f"{x:.2g}x"


def _cell(row) -> str:
    return f"{row['multilingual_tier']} × {size_words(row['multilingual_size'])}"


def _size_with_ci(row) -> str:
    return size_words(number(row["english_equivalent_size"])) + ci_words(row["english_equivalent_size_ci"],
                                                                          size_words)


def _sorted_comparisons(rows):
    return sorted(rows, key=lambda r: (r["multilingual_tier"], r["multilingual_size"], r["english_tier"]))


def _curve_table(rows) -> list:
    header = ("| language | English tier | selected form (share of resamples) | ceiling [95% CI] "
              "| gain over the doubling to the largest n [95% CI] | verdict | "
              + " | ".join(f"rolling-origin error, {form.name}" for form in FORMS) + " |")
    lines = ["### English curves", "", header, "|" + "---|" * (6 + len(FORMS))]
    by_curve = {}
    for row in rows:
        by_curve.setdefault((row["language"], row["tier"]), {})[row["form"]] = row
    for language in language_order(language for language, _ in by_curve):
        for tier in sorted(t for lang, t in by_curve if lang == language):
            forms = by_curve[(language, tier)]
            chosen = next((row for row in forms.values() if row["selected"]), None)
            errors = [_error_cell(forms[form.name]) for form in FORMS]
            if chosen is None:
                lines.append(f"| {language} | {tier} | none fitted | | | | " + " | ".join(errors) + " |")
                continue
            share = f" ({chosen['form_share']:.0%})" if chosen["form_share"] is not None else ""
            asymptote = number(chosen["asymptote"]) if chosen["asymptote"] is not None else float("nan")
            ceiling = "none" if asymptote in (float("inf"), float("-inf")) else f"{asymptote:.1f}"
            gain = (signed(chosen["gain_per_doubling_at_max"]) + ci_words(chosen["gain_per_doubling_ci"], signed)
                    + f" to {size_words(chosen['largest_size'])}")
            lines.append(f"| {language} | {tier} | {chosen['form']}{share} | {ceiling}"
                         f"{ci_words(chosen['asymptote_ci'])} | {gain} | {' or '.join(chosen['categories'])} | "
                         + " | ".join(errors) + " |")
    return lines


def _error_cell(row) -> str:
    if row["extrapolation_error"] is None:
        return "–"
    text = f"{row['extrapolation_error']:.2f}"
    if row["form_share"] is not None:
        text += f" ({row['form_share']:.0%})"
    return f"**{text}**" if row["selected"] else text


def _comparison_table(rows) -> list:
    lines = ["### Multilingual cells against the English curves", "",
             "| language | multilingual cell | score [95% CI] | English tier | English-equivalent size [95% CI] | "
             "minus English at its largest size [95% CI] | verdict |", "|---|---|---|---|---|---|---|"]
    for language in language_order(row["language"] for row in rows):
        for row in _sorted_comparisons(r for r in rows if r["language"] == language):
            equivalent, difference = "–", "–"
            if row["english_form"] is not None:
                equivalent = _size_with_ci(row)
                difference = signed(row["difference_at_largest"]) + ci_words(row["difference_at_largest_ci"], signed)
            lines.append(f"| {language} | {_cell(row)} | {row['multilingual_score']:.1f}"
                         f"{ci_words(row['multilingual_score_ci'])} | {row['english_tier']} | {equivalent} | "
                         f"{difference} | {row['verdict']} |")
    return lines


def _advice(selected, comparisons) -> list:
    lines = ["What the sweep could have seen, and what would decide what it could not (at 80% power, 5% two-sided; "
             "see Method).", "", "| target | language | English tier | question | smallest detectable | "
             "to decide it |", "|---|---|---|---|---|---|"]
    for row in sorted(selected, key=lambda r: (r["target_task"], r["language"] != AVG, r["language"], r["tier"])):
        advice = row["advice"] or {}
        detectable = advice.get("smallest_detectable_gain")
        lines.append(f"| {row['target_task']} | {row['language']} | {row['tier']} | gain per doubling at "
                     f"{size_words(row['largest_size'])} ({' or '.join(row['categories'])}) | "
                     f"{'–' if detectable is None else f'{detectable:.2f} points'} | "
                     f"{advice.get('resolve', 'decided' if len(row['categories']) == 1 else '–')} |")
    for row in sorted(comparisons, key=lambda r: (r["target_task"], r["language"] != AVG, r["language"])):
        detectable = row["smallest_detectable_difference"]
        advice = row["advice"] or {}
        resolve = advice.get("resolve", "decided" if row["difference_at_largest_ci"] is not None else "–")
        lines.append(f"| {row['target_task']} | {row['language']} | {row['english_tier']} | {_cell(row)} minus "
                     f"English at {size_words(row['english_largest_size'])} | "
                     f"{'–' if detectable is None else f'{detectable:.1f} points'} | {resolve} |")
    return lines
