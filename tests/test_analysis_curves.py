"""The curve forms and fits, and recovery of known curves from synthetic tables (analysis/curves.py, answer.py)."""
import numpy as np
import pytest

from analysis.answer import analyse
from analysis.curves import FORMS, fit_one, fit_points, m4, power_law, refit_many, robust_cost
from analysis.read_results import prepare
from analysis.synthetic import LADDER, TRUTH, power_law_score, synthetic_table
from analysis.verdicts import number

SIZES = np.repeat(np.array(LADDER, dtype=float), 3)
PARAMS = {"power_law": [70.0, 30.0, np.log(500.0), 0.6], "m4": [30.0, 30.0, 5.0, -0.6, 0.8],
          "log_linear": [40.0, 2.0, np.log(300.0)]}


def one(rows, **where):
    found = [row for row in rows if all(row[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, len(found))
    return found[0]


@pytest.mark.parametrize("form", FORMS, ids=lambda form: form.name)
def test_jacobian_matches_finite_differences(form):
    P = np.array([PARAMS[form.name]])
    n = SIZES
    numeric = np.empty((len(n), P.shape[1]))
    for i in range(P.shape[1]):
        h = 1e-6 * max(1.0, abs(P[0, i]))
        up, down = P.copy(), P.copy()
        up[0, i] += h
        down[0, i] -= h
        numeric[:, i] = (form.model(up, n) - form.model(down, n))[0] / (2 * h)
    np.testing.assert_allclose(form.jacobian(P, n, form.model(P, n))[0], numeric, atol=1e-5)


@pytest.mark.parametrize("form", FORMS, ids=lambda form: form.name)
def test_equivalent_size_inverts_the_curve(form):
    P = np.array([PARAMS[form.name]])
    for n in (300.0, 3000.0, 30000.0):
        score = form.model(P, np.array([n]))[0]
        assert form.equivalent_size(P, score)[0] == pytest.approx(n, rel=1e-6)
    below_baseline = form.model(P, np.array([0.0]))[0] - 1
    assert form.equivalent_size(P, below_baseline)[0] == 0
    if form.name != "log_linear":
        above_ceiling = form.asymptote(P) + 1
        assert form.equivalent_size(P, above_ceiling)[0] == np.inf


@pytest.mark.parametrize("form", [power_law, m4], ids=lambda form: form.name)
def test_vectorised_refit_matches_least_squares(form):
    """Same weighted robust objective, same minimum: residuals in units of sd (here unequal, as cell means are)."""
    rng = np.random.default_rng(0)
    sd = np.linspace(0.3, 1.5, len(SIZES))
    y = power_law_score(SIZES, **TRUTH) + rng.normal(0, 1, len(SIZES)) * sd
    Y = y + rng.normal(0, 1, (8, len(y))) * sd
    p = fit_points(form, SIZES, y, sd)
    P = refit_many(form, SIZES, Y, p, sd)
    for i in range(len(Y)):
        _, cost = fit_one(form, SIZES, Y[i], p, sd)
        residuals = (form.model(P[i:i + 1], SIZES)[0] - Y[i]) / sd
        assert robust_cost(residuals) == pytest.approx(cost, abs=1e-6)


def test_m4_root_matches_bisection_over_its_parameter_range():
    """The Newton root of the M4 equation agrees with 100 plain bisections anywhere inside the bounds."""
    rng = np.random.default_rng(1)
    lower, upper = np.array(m4.lower), np.array(m4.upper)
    P = lower + rng.random((5000, 5)) * (upper - lower)
    n = np.array(LADDER[1:], dtype=float)
    e_inf, b, log_beta, c, alpha = (P[:, i:i + 1] for i in range(5))
    f = np.exp(log_beta + c * np.log(n))
    lo, hi = np.zeros_like(f * b), np.broadcast_to(b, f.shape).copy()
    with np.errstate(over="ignore"):
        for _ in range(100):
            mid = (lo + hi) / 2
            below = mid < f * (b - mid) ** alpha
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    expected = 100.0 - e_inf - (lo + hi) / 2
    np.testing.assert_allclose(m4.model(P, n), expected, rtol=0, atol=1e-9)


def test_a_form_needs_as_many_sizes_as_parameters():
    n = np.array([0.0, 0, 100, 100, 200, 200])
    y = np.array([40.0, 40, 50, 50, 55, 55])
    assert fit_points(power_law, n, y) is None
    assert fit_points(m4, n, y) is None


@pytest.mark.parametrize("rng_seed", [0, 1, 2])
def test_recovers_known_curve_and_english_equivalent_size(rng_seed):
    """s_inf within 1 point and alpha within 20% from 3 seeds with noise 0.5 on LADDER; the English-equivalent size
    of a multilingual cell that scores what 2,000 English examples score, within a factor 1.5."""
    true_size = 2000
    table = synthetic_table({"clean": TRUTH}, multilingual={("hq", 1000): power_law_score(true_size, **TRUTH)},
                            rng_seed=rng_seed)
    curves, comparisons, _ = analyse(prepare(table)[0], n_boot=200, seed=0)
    fitted = one(curves, language="fr", form="power_law")["params"]
    assert fitted["s_inf"] == pytest.approx(TRUTH["s_inf"], abs=1)
    assert fitted["alpha"] == pytest.approx(TRUTH["alpha"], rel=0.2)
    selected = one(curves, language="fr", selected=True)
    low, high = (number(end) for end in selected["asymptote_ci"])
    assert low < number(selected["asymptote"]) < high
    assert low < TRUTH["s_inf"] < high
    comparison = one(comparisons, language="fr")
    assert true_size / 1.5 < comparison["english_equivalent_size"] < true_size * 1.5
    low, high = (number(end) for end in comparison["english_equivalent_size_ci"])
    assert low < comparison["english_equivalent_size"] < high and low < true_size < high
    for row in curves:
        if row["language"] == "fr":
            assert row["extrapolation_error"] is not None
