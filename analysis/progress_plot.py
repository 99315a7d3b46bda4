"""The sweep's curves so far, drawn after every finished trial: one PNG per target with its average test score
over the languages against the intermediate data size (English tiers as lines, multilingual cells as markers, the
baseline as a dashed line), each point the mean over the seeds measured so far. The sweep logs them to its MLflow
parent run (`progress/`), so the curves can be watched as they grow; the report's figures (analysis/plots.py) come
at the end, with the fitted curves and their intervals.

    paths = plot_progress(Path("sweep_results/scale-vs-quality-laptop/results.csv"), Path("/tmp/progress"))
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.answer import tier_name  # noqa: E402
from analysis.read_results import AnalysisInputError, read_csv, select_trials, with_avg  # noqa: E402
from analysis.schema import AVG  # noqa: E402


def plot_progress(results: Path, out_dir: Path) -> list[Path]:
    """One PNG per target of the scores in `results` so far (trials chosen on validation, as the analysis does);
    nothing before the first English trial has a score."""
    try:
        table = read_csv(results)
    except AnalysisInputError:   # no table yet, or no english rows yet: nothing to draw
        return []
    scored = table[table["score"].notna()]
    if scored.empty:
        return []
    rows, _ = select_trials(with_avg(scored))
    rows = rows[rows["language"] == AVG]
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_plot_target(target, part, out_dir / f"{target}.png") for target, part in rows.groupby("target_task")]


def series(rows: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(source, tier) -> the mean score, seeds and metric of each size of that series, by size; a tier is an
    (intermediate task, quality) pair as in the report (analysis.answer.tier_name), so a mixture is its own line."""
    means = rows.groupby(["source", "intermediate_task", "quality", "size"], as_index=False).agg(
        score=("score", "mean"), seeds=("seed", "nunique"), metric=("metric", "first"))
    return {(source, tier_name(task, quality)): cell.sort_values("size")
            for (source, task, quality), cell in means.groupby(["source", "intermediate_task", "quality"])}


def _plot_target(target: str, rows: pd.DataFrame, path: Path) -> Path:
    lines = series(rows)
    means = pd.concat(lines.values())
    fig, ax = plt.subplots(figsize=(7, 4.2))
    baseline = means[means["source"] == "none"]
    if not baseline.empty:
        ax.axhline(baseline["score"].iloc[0], color="grey", linestyle="--",
                   label=f"baseline (n={int(baseline['seeds'].iloc[0])})")
    for source, marker, style in (("english", "o", "-"), ("multilingual", "*", "")):
        for tier, cell in ((tier, cell) for (of, tier), cell in lines.items() if of == source):
            ax.plot(cell["size"], cell["score"], marker=marker, linestyle=style, markersize=8 if style else 12,
                    label=f"{source} {tier} (seeds {cell['seeds'].min()}-{cell['seeds'].max()})")
    sizes = means.loc[means["size"] > 0, "size"]
    ax.set_xscale("symlog", linthresh=int(sizes.min()) if len(sizes) else 1)   # linear below it: the baseline shows
    ax.set_xlabel("intermediate examples")
    ax.set_ylabel(f"{means['metric'].iloc[0]}, average over languages (points)")
    ax.set_title(f"{target}: test scores so far (mean over seeds; intervals in the final report)")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
