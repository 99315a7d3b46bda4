"""The parts of an honest interval: cell noise, form choice by rolling origin, verdict rules, design advice."""
import numpy as np
import pytest

from analysis import verdicts
from analysis.answer import analyse
from analysis.curves import log_linear, m4, power_law
from analysis.form_choice import choose, judge, resample_around_forms
from analysis.noise import CellNoise
from analysis.read_results import prepare, validate
from analysis.synthetic import LADDER, TRUTH, synthetic_table
from analysis.verdicts import number

X = np.array(LADDER, dtype=float)


def one(rows, **where):
    found = [row for row in rows if all(row[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, len(found))
    return found[0]


def test_seed_noise_is_pooled_over_cells_and_test_noise_is_binomial():
    scores = {"a": np.array([50.0, 52.0, 54.0]), "b": np.array([70.0, 71.0]), "c": np.array([60.0])}
    noise = CellNoise.from_cells(scores, {"a": 100.0, "b": np.nan, "c": 100.0})
    assert noise.degrees_of_freedom == 3
    assert noise.seed_variance == pytest.approx((8.0 + 0.5) / 3)
    p = (0.52 * 100 + 1) / 102
    assert noise.test_variance("a") == pytest.approx(1e4 * p * (1 - p) / 100)
    assert noise.test_variance("b") == 0.0  # unknown test-set size
    assert noise.standard_error("a") == pytest.approx(np.sqrt(noise.seed_variance / 3 + noise.test_variance("a")))
    assert noise.note() is None


def test_resampled_means_carry_both_noises_and_the_uncertainty_of_sigma():
    """With 2 degrees of freedom sigma^2 is drawn from its scaled inverse chi-square: the resampled variance of a
    cell mean is heavy-tailed (t-like), wider than the plug-in sigma_hat^2 / k + v would be."""
    scores = {"a": np.array([50.0, 52.0, 54.0]), "b": np.array([70.0])}
    noise = CellNoise.from_cells(scores, {"a": 400.0, "b": 400.0})
    resampled = noise.resample(200_000, np.random.default_rng(0))
    assert resampled["a"].mean() == pytest.approx(52.0, abs=0.05)
    plug_in = noise.standard_error("a")
    inside = np.mean(np.abs(resampled["a"] - 52.0) < 1.96 * plug_in)
    assert 0.85 < inside < 0.94  # a normal with the plug-in variance would put 95% inside
    low, high = np.quantile(resampled["b"] - 70.0, [0.16, 0.84])  # one seed: its seed part is sigma^2 / 1
    assert (high - low) / 2 > np.sqrt(noise.test_variance("b") + noise.seed_variance)
    single = CellNoise.from_cells({"a": np.array([50.0])}, {"a": np.nan})
    assert single.resample(10, np.random.default_rng(0)) is None and single.note().startswith("cannot be estimated")


def test_rolling_origin_prefers_the_form_that_extrapolates():
    """Low noise: on a log-linear truth log_linear extrapolates within the noise (the flexible forms can mimic it,
    so it need not win: that is what the resampled choice is for); on a saturating truth log_linear extrapolates
    far worse than the selected form, which has a ceiling."""
    sd = np.full(len(X), 0.2)
    rng = np.random.default_rng(0)
    straight = judge(X, 40 + 2.5 * np.log2(1 + X / 100) + rng.normal(0, 0.2, len(X)), sd)
    assert len(straight.holdouts) == 3 and set(straight.errors) == {"power_law", "m4", "log_linear"}
    assert straight.score(log_linear) < 3 * len(straight.holdouts)  # about one standard error per held-out size
    assert straight.score(log_linear) - straight.score(straight.selected) < 2
    bending = judge(X, TRUTH["s_inf"] - TRUTH["a"] * (X + TRUTH["n0"]) ** -TRUTH["alpha"]
                    + rng.normal(0, 0.2, len(X)), sd)
    assert bending.selected in (power_law, m4)
    assert bending.score(log_linear) > bending.score(bending.selected) + 10


def test_every_resample_redoes_the_choice():
    """Between two forms that extrapolate about equally well the resamples split; the shares add up to one."""
    rng = np.random.default_rng(3)
    sd = np.full(len(X), 1.5)
    y = 75 - 35 * (1 + X / 500) ** -0.35 + rng.normal(0, 1.5, len(X))
    judgement = judge(X, y, sd)
    choices = choose(judgement, resample_around_forms(judgement, rng.normal(0, 1.5, (300, len(X))), rng))
    shares = [choices.share(form) for form in judgement.candidates]
    assert sum(shares) == pytest.approx(1.0)
    assert sum(share > 0.05 for share in shares) >= 2


def test_slow_saturation_does_not_claim_a_finite_english_equivalent_for_a_cell_above_the_ceiling():
    """The issue's example: a power law with alpha 0.35 and a multilingual cell above its true ceiling. Whatever
    form is selected, the interval must not exclude 'never'."""
    slow = {"s_inf": 75.0, "a": 35.0 * 500 ** 0.35, "alpha": 0.35, "n0": 500.0}
    table = synthetic_table({"clean": slow}, multilingual={("hq", 1000): 78.0}, rng_seed=4)
    rows, _ = prepare(validate(table, "t"))
    curves, comparisons, _ = analyse(rows[rows["language"] == "fr"], n_boot=300, seed=0)
    comparison = one(comparisons, language="fr")
    assert number(comparison["english_equivalent_size_ci"][1]) == float("inf")
    ceiling = one(curves, language="fr", selected=True)["asymptote_ci"]
    assert number(ceiling[0]) <= 75.0 <= number(ceiling[1])


@pytest.mark.parametrize("gain_ci, steady_ci, expected", [
    ((1.0, 2.0), (0.1, 0.5), ["rising"]),
    ((1.0, 2.0), (-0.8, -0.1), ["diminishing"]),
    ((1.0, 2.0), (-0.3, 0.4), ["rising", "diminishing"]),
    ((-0.4, 0.3), (-2.0, 0.0), ["flat"]),
    ((-2.0, -0.6), (-1.0, 1.0), ["falling"]),
    ((-0.2, 1.4), (-0.5, -0.1), ["diminishing", "flat"]),
    ((-1.0, 0.2), (-1.0, 1.0), ["flat", "falling"]),
])
def test_verdict_categories_follow_the_stated_rule(gain_ci, steady_ci, expected):
    assert verdicts.categories(gain_ci, steady_ci) == expected
    if len(expected) == 1:  # a decided verdict agrees with the category of any value inside the intervals
        assert verdicts.category(np.mean(gain_ci), np.mean(steady_ci)) == expected[0]


def test_undetermined_verdicts_come_with_advice():
    """A noisy single-language table: the curve's verdict is undetermined, names the category most resamples fall
    in, and the advice says how many seeds or test examples would decide it (more than now), and the smallest gain
    the sweep could detect."""
    table = synthetic_table({"clean": TRUTH}, seeds=3, noise=1.0, test_examples=200,
                            multilingual={("hq", 1000): 60.0}, rng_seed=2)
    rows, _ = prepare(validate(table, "t"))
    curves, comparisons, _ = analyse(rows[rows["language"] == "fr"], n_boot=300, seed=0)
    selected = one(curves, selected=True)
    advice = selected["advice"]
    assert advice["smallest_detectable_gain"] > 0
    assert len(selected["categories"]) > 1 and "undetermined" in selected["verdict"]
    assert advice["test_examples_needed"] is None or advice["test_examples_needed"] > 200
    assert advice["seeds_needed"] is None or advice["seeds_needed"] > 3
    assert 0 <= advice["seed_share"] <= 1
    comparison = one(comparisons)
    assert comparison["smallest_detectable_difference"] > 0
    # the verdict names the category most resamples fall in
    shares = selected["category_shares"]
    assert set(shares) <= set(verdicts.CATEGORIES) and abs(sum(shares.values()) - 1) < 1e-9
    leading = max(shares, key=shares.get)
    assert leading in selected["categories"]
    assert f", {leading} in {shares[leading]:.0%} of the resamples" in selected["verdict"]


def test_category_shares_count_the_resamples_by_the_stated_rule():
    gains = np.array([-1.0, -0.2, 0.3, 2.0, 2.0])
    steadiness = np.array([0.0, 0.0, 0.0, 0.5, -0.5])
    assert verdicts.category_shares(gains, steadiness) == {"rising": 0.2, "diminishing": 0.2, "flat": 0.4,
                                                           "falling": 0.2}
