"""The cell-means table: seed noise pooled over the cells, test-set noise added, t quantile, clipped to 0-100."""
import numpy as np
import pytest
from scipy import stats

from analysis.cell_means import cell_means, markdown
from analysis.noise import CellNoise
from analysis.read_results import prepare, validate
from analysis.synthetic import TRUTH, synthetic_table


def test_cell_means_carry_pooled_seed_noise_and_test_noise():
    table = synthetic_table({"random": TRUTH}, sizes=(0, 500, 2000), seeds=3, noise=1.0,
                            test_examples=300, languages=("fr", "de"))
    rows, _ = prepare(validate(table, "synthetic"))
    cells = cell_means(rows)
    fr = [row for row in cells if row["language"] == "fr"]
    assert len(fr) == 3 and [row["size"] for row in fr] == [0, 500, 2000] and all(r["seeds"] == 3 for r in fr)
    group = rows[(rows["language"] == "fr")]
    for row in fr:
        scores = group[group["size"] == row["size"]]["score"].to_numpy()
        assert row["mean"] == pytest.approx(scores.mean())
    # by hand: seed variance pooled over the three cells (6 degrees of freedom) plus the binomial term
    noise = CellNoise.from_cells({r["size"]: group[group["size"] == r["size"]]["score"].to_numpy() for r in fr},
                                 {r["size"]: 300.0 for r in fr})
    half = stats.t.ppf(0.975, 6) * noise.standard_error(500)
    assert fr[1]["degrees_of_freedom"] == 6
    assert fr[1]["ci"] == pytest.approx([fr[1]["mean"] - half, fr[1]["mean"] + half])
    lines = markdown(cells, language="fr")
    assert lines[0] == "| cell | genre |" and len(lines) == 5 and "(n=3)" in lines[2]


def test_interval_stays_within_0_and_100_and_single_seeds_use_test_noise_only():
    table = synthetic_table({"random": lambda n: 0.5}, sizes=(0, 500), seeds=1, noise=0.0, test_examples=50)
    rows, _ = prepare(validate(table, "synthetic"))
    cells = [row for row in cell_means(rows) if row["language"] == "fr"]
    assert all(row["degrees_of_freedom"] == 0 and row["seed_sd"] is None for row in cells)
    assert all(row["ci"][0] == 0.0 and row["ci"][1] > row["mean"] for row in cells)
    assert np.isfinite([row["ci"][1] for row in cells]).all()
