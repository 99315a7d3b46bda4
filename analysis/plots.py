"""One PNG per target: a panel per language with the English curves, their 95% bands, the measured points and the
multilingual cells, over a log size axis (linear between 0 and the smallest size, so the baseline shows)."""
from __future__ import annotations

import math
from itertools import cycle
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.report import language_order  # noqa: E402

MULTILINGUAL_MARKERS = "*DPXvs"


def plot_target(target: str, tier_fits, rows, path: Path) -> None:
    """tier_fits: the `TierFit`s of this target; rows: the prepared results rows of this target."""
    languages = language_order(fit.language for fit in tier_fits)
    qualities = sorted({fit.quality for fit in tier_fits})
    colors = dict(zip(qualities, cycle(plt.cm.tab10.colors)))
    multilingual = rows[rows["source"] == "multilingual"]
    markers = dict(zip(sorted(multilingual["quality"].unique()), cycle(MULTILINGUAL_MARKERS)))
    smallest = min(fit.n[fit.n > 0].min() for fit in tier_fits)

    ncols = min(4, len(languages))
    nrows = math.ceil(len(languages) / ncols)
    legend_inches = 0.9
    height = 3.2 * nrows + legend_inches
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, height), squeeze=False)
    for ax, language in zip(axes.flat, languages):
        for fit in (f for f in tier_fits if f.language == language):
            _plot_tier(ax, fit, colors[fit.quality], smallest)
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
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 4), frameon=False)
    fig.suptitle(target)
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_tier(ax, fit, color, smallest) -> None:
    sizes = np.unique(fit.n)
    ax.plot(fit.n, fit.y, ".", color=color, alpha=0.35)
    ax.plot(sizes, [fit.y[fit.n == s].mean() for s in sizes], "o", color=color, label=f"English {fit.quality}")
    if fit.form is None:
        return
    grid = np.concatenate([[0.0], np.geomspace(smallest / 4, 2 * fit.n.max(), 120)])
    with np.errstate(all="ignore"):
        ax.plot(grid, fit.form.model(fit.params[None], grid)[0], "-", color=color, label=f"fit {fit.quality}, 95% band")
        if fit.boot is not None:
            low, high = np.nanquantile(fit.form.model(fit.boot, grid), [0.025, 0.975], axis=0)
            ax.fill_between(grid, low, high, color=color, alpha=0.2)
