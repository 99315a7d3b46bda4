"""The report's figures: one PNG per target (a panel per language: the English curves with their 95% bands, the
measured points and the multilingual cells, over a log size axis that is linear between 0 and the smallest size,
so the baseline shows), and one PNG of the English-equivalent multipliers per language, grouped by script."""
from __future__ import annotations

import math
from itertools import cycle
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.languages import group_order, script  # noqa: E402
from analysis.report import language_order  # noqa: E402
from analysis.schema import AVG  # noqa: E402
from analysis.verdicts import number  # noqa: E402

MULTILINGUAL_MARKERS = "*DPXvs"


def plot_target(target: str, tier_fits, rows, path: Path) -> None:
    """tier_fits: the `TierFit`s of this target; rows: the prepared results rows of this target."""
    languages = language_order(fit.language for fit in tier_fits)
    tiers = sorted({fit.tier for fit in tier_fits})
    colors = dict(zip(tiers, cycle(plt.cm.tab10.colors)))
    multilingual = rows[rows["source"] == "multilingual"]
    markers = dict(zip(sorted(multilingual["quality"].unique()), cycle(MULTILINGUAL_MARKERS)))
    smallest = min(fit.x[fit.x > 0].min() for fit in tier_fits)

    ncols = min(4, len(languages))
    nrows = math.ceil(len(languages) / ncols)
    legend_inches = 0.9
    height = 3.2 * nrows + legend_inches
    # At least 9 inches wide, so that the legend below fits even under a single panel.
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(4 * ncols, 9), height), squeeze=False)
    for ax, language in zip(axes.flat, languages):
        for fit in (f for f in tier_fits if f.language == language):
            _plot_tier(ax, fit, colors[fit.tier], smallest)
        cells = multilingual[multilingual["language"] == language].groupby(["quality", "size"])["score"]
        for (quality, size), scores in cells:
            ax.errorbar(size, scores.mean(), yerr=scores.std() if len(scores) > 1 else None, ls="none",
                        marker=markers[quality], ms=10, color="black", mfc="gold", label=f"multilingual {quality}")
        ax.set_xscale("symlog", linthresh=smallest)
        ax.set_title(language)
        ax.set_xlabel("English intermediate examples")
        ax.set_ylabel("score")
    for ax in axes.flat[len(languages):]:
        ax.set_visible(False)
    _legend_below(fig, axes, legend_inches, height)
    fig.suptitle(target)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_tier(ax, fit, color, smallest) -> None:
    for key, size in zip(fit.keys, fit.x):
        scores = fit.noise.scores[key]
        ax.plot(np.full(len(scores), size), scores, ".", color=color, alpha=0.35)
    ax.plot(fit.x, fit.judgement.y, "o", color=color, label=f"English {fit.tier}")
    if fit.form is None:
        return
    grid = np.concatenate([[0.0], np.geomspace(smallest / 4, 2 * fit.x.max(), 120)])
    with np.errstate(all="ignore"):
        ax.plot(grid, fit.form.model(fit.params[None], grid)[0], "-", color=color, label=f"fit {fit.tier}, 95% band")
        if fit.choices is not None:
            low, high = np.nanquantile(fit.choices.values(lambda f, P: f.model(P, grid)), [0.025, 0.975], axis=0)
            ax.fill_between(grid, low, high, color=color, alpha=0.2)


def plot_multipliers(comparisons, path: Path) -> None:
    """A panel per target: each language's English-equivalent multiplier (English size over multilingual size)
    with its 95% interval, languages grouped by script (those sharing the English script first); a triangle at
    the top edge is 'never' or beyond the plotted range."""
    targets = sorted({row["target_task"] for row in comparisons})
    keys = sorted({(row["multilingual_tier"], row["multilingual_size"], row["english_tier"]) for row in comparisons})
    colors = dict(zip(keys, cycle(plt.cm.tab10.colors)))
    fig, axes = plt.subplots(len(targets), 1, figsize=(11, 3.6 * len(targets) + 0.9), squeeze=False)
    for ax, target in zip(axes[:, 0], targets):
        rows = [row for row in comparisons if row["target_task"] == target and row["multiplier"] is not None]
        languages = sorted({row["language"] for row in rows if row["language"] != AVG}, key=group_order)
        languages += [AVG] if any(row["language"] == AVG for row in rows) else []
        finite = [number(v) for row in rows for v in [row["multiplier"]] + (row["multiplier_ci"] or [])
                  if 0 < number(v) < np.inf]
        # Beyond a million English examples per multilingual one (or below a thousandth) is drawn at the edge.
        top = min(max(finite, default=10.0) * 3, 1e6)
        bottom = max(min(finite, default=0.1) / 3, 1e-3)
        for i, language in enumerate(languages):
            for j, key in enumerate(keys):
                _plot_multiplier(ax, i + (j - (len(keys) - 1) / 2) * 0.8 / len(keys), key, colors[key], bottom, top,
                                 [r for r in rows if r["language"] == language and _key(r) == key])
        ax.set_xticks(range(len(languages)))
        ax.set_xticklabels([language if language == AVG else f"{language}\n{script(language)}"
                            for language in languages], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(bottom, top * 1.5)
        ax.axhline(1, color="grey", lw=0.8, ls=":")
        ax.set_ylabel("English examples per\nmultilingual example")
        ax.set_title(target)
    height = 3.6 * len(targets) + 0.9
    _legend_below(fig, axes, 0.9, height, columns=2)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _key(row):
    return row["multilingual_tier"], row["multilingual_size"], row["english_tier"]


def _plot_multiplier(ax, x, key, color, bottom, top, rows) -> None:
    label = f"multilingual {key[0]} × {key[1]:g} vs English {key[2]}" if len(key[0] + key[2]) < 40 else \
        f"{key[0]} × {key[1]:g} vs {key[2]}"
    for row in rows:
        value = number(row["multiplier"])
        low, high = (number(v) for v in row["multiplier_ci"]) if row["multiplier_ci"] else (value, value)
        shown = min(max(value, bottom), top)
        ax.plot([x, x], [min(max(low, bottom), top), min(max(high, bottom), top)], color=color, lw=2)
        ax.plot(x, shown, "^" if value >= top else "v" if value <= bottom else "o", color=color, label=label)


def _legend_below(fig, axes, legend_inches, height, columns=3) -> None:
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), columns), frameon=False,
               fontsize=8)
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1 - 0.4 / height))  # room for the title above
