"""Curve forms for the score s against the English intermediate size n, and robust fits of many curves at once.

Three forms, each a small declarative record whose functions take a batch of parameter vectors P (shape R x k), so
that one call evaluates R curves:

- `power_law`: s(n) = s_inf - g * (1 + n/n0)^(-alpha). This is the issue's s_inf - a * (n + n0)^(-alpha) with
  a = g * n0^alpha; g = s_inf - s(0) is the total gain over the baseline, which keeps the fit well scaled. g < 0
  is allowed, so a falling curve is described as falling rather than forced flat.
- `m4`: the M4 estimator of Alabdulmohsin et al. (2022) on the error e = 100 - s:
  (e - e_inf) / (e_0 - e)^alpha = beta * n^c with c <= 0, so e(0) = e_0 puts the baseline on the curve. We fit it
  by least squares on the score (the paper regresses in log space), so all forms share one loss.
- `log_linear`: s(n) = b + k * log2(n + n0); the baseline form, with a gain of k per doubling for n >> n0 and no
  asymptote (n0 again puts the n = 0 baseline on the curve).

A curve is fitted to the cell means (one point per size), each residual divided by the standard error of its
mean (`analysis.noise`), so a size measured on few seeds or few test examples counts for less. Fits use
`scipy.optimize.least_squares` with the soft_l1 robust loss, bounds and several starts; the bootstrap refits a
thousand resamples at once with a vectorised Levenberg-Marquardt loop on the same objective (`refit_many`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import least_squares

# Residuals beyond about this many standard errors count linearly (soft_l1), so one bad cell cannot drag a curve;
# below it the loss is nearly least squares, which keeps the fit efficient under ordinary noise.
F_SCALE = 3.0
# A fit converges in 10-40 evaluations; on a flat curve it can wander along a ridge of equal cost for hundreds.
MAX_EVALUATIONS = 100
# An M4 fit with less total gain than this (points) is flat: on a falling curve M4 can do nothing else.
DEGENERATE_GAIN = 1e-3
# Newton steps for the M4 root (from its asymptotic guess), and the bracket of its logit (w/b from 1e-26 to
# 1 - 1e-26).
MAX_ROOT_STEPS = 6
ROOT_BRACKET = 60.0


@dataclass(frozen=True)
class Form:
    name: str
    param_names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    model: Callable[[np.ndarray, np.ndarray], np.ndarray]         # (P (R,k), n (N,)) -> scores (R,N)
    jacobian: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (P, n, model(P, n)) -> d s / d P, (R,N,k)
    starts: Callable[[np.ndarray, np.ndarray], list]              # (n, y) -> initial parameter vectors
    asymptote: Callable[[np.ndarray], np.ndarray]                 # P -> limit as n -> inf (R,); +-inf if none
    equivalent_size: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (P, score (R,)) -> smallest n, inf if never
    readable_params: Callable[[np.ndarray], dict]                 # one p -> the parameters as the papers write them
    # P -> (R,) True where the fit sits on a bound that keeps it from following the data (M4 cannot fall: on a
    # falling curve it ends flat, a shape the other forms already offer); such a fit is not judged.
    degenerate: Callable[[np.ndarray], np.ndarray] = lambda P: np.zeros(len(P), dtype=bool)


def _cols(P):
    return [P[:, i:i + 1] for i in range(P.shape[1])]


def _shape_guesses(n, y):
    """The mean at the smallest n, the largest cell mean, and the spread of the cell means (at least 1 point)."""
    sizes = np.unique(n)
    means = np.array([y[n == s].mean() for s in sizes])
    return means[0], means.max(), max(np.ptp(means), 1.0)


# --- power law with an offset --------------------------------------------------------------------------------------

def _power_model(P, n):
    s_inf, g, log_n0, alpha = _cols(P)
    return s_inf - g * (1 + n / np.exp(log_n0)) ** -alpha


def _power_jacobian(P, n, scores):
    s_inf, g, log_n0, alpha = _cols(P)
    u = 1 + n / np.exp(log_n0)
    pw = u ** -alpha
    return np.stack(np.broadcast_arrays(
        np.ones_like(pw), -pw, -g * alpha * pw * (u - 1) / u, g * pw * np.log(u)), axis=-1)


def _power_starts(n, y):
    first, top, spread = _shape_guesses(n, y)
    positive = n[n > 0]
    n0 = np.sqrt(positive.min() * positive.max())
    starts = []
    for headroom, alpha in itertools.product((0.25, 1.0), (0.3, 1.0)):
        s_inf = min(top + headroom * spread, 100.0)
        starts.append([s_inf, s_inf - first, np.log(n0), alpha])
    return starts


def _power_equivalent(P, score):
    s_inf, g, log_n0, alpha = P.T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n = np.exp(log_n0) * ((g / (s_inf - score)) ** (1 / alpha) - 1)
    reachable = (g > 0) & (score < s_inf)
    return np.where(score <= s_inf - g, 0.0, np.where(reachable, n, np.inf))


power_law = Form(
    name="power_law",
    param_names=("s_inf", "g", "log_n0", "alpha"),
    lower=(0.0, -100.0, 0.0, 0.01),
    upper=(100.0, 100.0, np.log(1e8), 5.0),
    model=_power_model,
    jacobian=_power_jacobian,
    starts=_power_starts,
    asymptote=lambda P: P[:, 0],
    equivalent_size=_power_equivalent,
    readable_params=lambda p: {"s_inf": p[0], "a": p[1] * np.exp(p[2]) ** p[3], "alpha": p[3], "n0": np.exp(p[2])},
)


# --- M4 on the error ------------------------------------------------------------------------------------------------

def _m4_excess(P, n):
    """w = e(n) - e_inf, the root in [0, b] (b = e_0 - e_inf) of w = beta n^c (b - w)^alpha.

    With w = b sigmoid(s) the equation becomes H(s) = log sigmoid(s) - alpha log(1 - sigmoid(s)) + (1 - alpha) log b
    - log(beta n^c) = 0, where H'(s) = 1 - sigmoid(s) + alpha sigmoid(s) lies between min(1, alpha) and
    max(1, alpha): Newton steps on s converge in a few iterations wherever the root is, kept inside a shrinking
    bracket (a step that leaves it bisects instead). Solved once per distinct size.
    """
    e_inf, b, log_beta, c, alpha = _cols(P)
    sizes, index = np.unique(n, return_inverse=True)
    positive = sizes > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # b = 0 and beta n^c = 0 end at w = 0
        offset = (1 - alpha) * np.log(b) - (log_beta + c * np.log(np.where(positive, sizes, 1.0)))
        # H is close to s + offset far left and to alpha s + offset far right: start at the matching root.
        s = np.clip(np.where(offset > 0, -offset, -offset / np.maximum(alpha, 1e-3)), -ROOT_BRACKET, ROOT_BRACKET)
        lo, hi = np.full_like(s, -ROOT_BRACKET), np.full_like(s, ROOT_BRACKET)
        for _ in range(MAX_ROOT_STEPS):
            h = -np.logaddexp(0, -s) + alpha * np.logaddexp(0, s) + offset
            lo, hi = np.where(h < 0, s, lo), np.where(h < 0, hi, s)
            sigmoid = 1 / (1 + np.exp(-s))
            step = s - h / (1 - sigmoid + alpha * sigmoid)
            s = np.where((step >= lo) & (step <= hi), step, (lo + hi) / 2)
    return np.where(positive, b / (1 + np.exp(-s)), b)[:, index]


def _m4_model(P, n):
    return 100.0 - P[:, :1] - _m4_excess(P, n)


def _m4_jacobian(P, n, scores):
    """Implicit differentiation of G(w) = w - beta n^c (b - w)^alpha = 0 at the root w.

    There dG/dw = (b - w + alpha w) / (b - w), so dw/dtheta = -q dG/dtheta with q = (b - w) / (b - w + alpha w).
    """
    e_inf, b, log_beta, c, alpha = _cols(P)
    w = 100.0 - e_inf - scores
    gap = np.maximum(b - w, 1e-300)
    q = gap / (gap + alpha * w)
    positive = (n > 0) & (q > 0)
    log_n = np.log(np.where(n > 0, n, 1.0))
    wq = np.where(positive, w * q, 0.0)
    d_b = np.where(n > 0, 1 - q, 1.0)
    return -np.stack(np.broadcast_arrays(
        np.ones_like(w), d_b, wq, wq * log_n, wq * np.log(gap)), axis=-1)


def _m4_starts(n, y):
    first, top, spread = _shape_guesses(n, y)
    positive = n[n > 0]
    x_mid = np.sqrt(positive.min() * positive.max())
    starts = []
    for headroom, alpha in itertools.product((0.25, 1.0), (0.5, 1.5)):
        s_inf = min(top + headroom * spread, 100.0)
        b = max(s_inf - first, 0.5)
        w_mid = b / 2  # the curve starts halfway up at the geometric middle of the sizes
        log_beta = np.log(w_mid / (b - w_mid) ** alpha) + 0.5 * np.log(x_mid)
        starts.append([100.0 - s_inf, b, log_beta, -0.5, alpha])
    return starts


def _m4_equivalent(P, score):
    e_inf, b, log_beta, c, alpha = P.T
    w = 100.0 - score - e_inf
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n = np.exp((np.log(w) - alpha * np.log(b - w) - log_beta) / c)
    return np.where(w >= b, 0.0, np.where((w > 0) & (c < 0), n, np.inf))


m4 = Form(
    name="m4",
    param_names=("e_inf", "b", "log_beta", "c", "alpha"),
    lower=(0.0, 0.0, -50.0, -5.0, 0.0),
    upper=(100.0, 100.0, 50.0, 0.0, 5.0),
    model=_m4_model,
    jacobian=_m4_jacobian,
    starts=_m4_starts,
    asymptote=lambda P: 100.0 - P[:, 0],
    equivalent_size=_m4_equivalent,
    readable_params=lambda p: {"eps_inf": p[0], "eps_0": p[0] + p[1], "beta": np.exp(p[2]), "c": p[3], "alpha": p[4]},
    degenerate=lambda P: P[:, 1] < DEGENERATE_GAIN,
)


# --- log-linear -----------------------------------------------------------------------------------------------------

def _log_linear_model(P, n):
    intercept, slope, log_n0 = _cols(P)
    return intercept + slope * np.log2(n + np.exp(log_n0))


def _log_linear_jacobian(P, n, scores):
    intercept, slope, log_n0 = _cols(P)
    shifted = n + np.exp(log_n0)
    return np.stack(np.broadcast_arrays(
        np.ones_like(shifted), np.log2(shifted), slope * np.exp(log_n0) / (shifted * np.log(2))), axis=-1)


def _log_linear_starts(n, y):
    starts = []
    for n0 in (n[n > 0].min() / 2, np.sqrt(n[n > 0].min() * n.max())):
        slope, intercept = np.polyfit(np.log2(n + n0), y, 1)
        starts.append([intercept, slope, np.log(n0)])
    return starts


def _log_linear_equivalent(P, score):
    intercept, slope, log_n0 = P.T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n = 2.0 ** ((score - intercept) / slope) - np.exp(log_n0)
    at_zero = intercept + slope * log_n0 / np.log(2)
    return np.where(score <= at_zero, 0.0, np.where(slope > 0, n, np.inf))


log_linear = Form(
    name="log_linear",
    param_names=("intercept", "slope", "log_n0"),
    lower=(-np.inf, -np.inf, 0.0),
    upper=(np.inf, np.inf, np.log(1e8)),
    model=_log_linear_model,
    jacobian=_log_linear_jacobian,
    starts=_log_linear_starts,
    asymptote=lambda P: np.where(P[:, 1] > 0, np.inf, np.where(P[:, 1] < 0, -np.inf, P[:, 0])),
    equivalent_size=_log_linear_equivalent,
    readable_params=lambda p: {"intercept": p[0], "gain_per_doubling": p[1], "n0": np.exp(p[2])},
)

FORMS = (power_law, m4, log_linear)  # also the order of preference when no form can be judged by extrapolation


# --- fitting --------------------------------------------------------------------------------------------------------

def robust_cost(residuals):
    """The soft_l1 cost least_squares minimises, summed over the last axis."""
    z = (residuals / F_SCALE) ** 2
    return F_SCALE ** 2 * np.sum(np.sqrt(1 + z) - 1, axis=-1)


def fit_one(form: Form, n: np.ndarray, y: np.ndarray, start, sd=None) -> tuple[np.ndarray, float]:
    """One robust, bounded least-squares fit from one start, residuals in units of `sd` (default 1 point);
    returns (parameters, robust cost)."""
    lower, upper = np.array(form.lower), np.array(form.upper)
    sd = np.ones_like(y) if sd is None else np.asarray(sd, dtype=float)
    last = {}  # the model at the last p: least_squares asks for the Jacobian where it just evaluated the residuals

    def scores(p):
        if "p" not in last or not np.array_equal(last["p"], p):
            last["p"], last["scores"] = p.copy(), form.model(p[None], n)[0]
        return last["scores"]

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        result = least_squares(lambda p: (scores(p) - y) / sd, np.clip(start, lower, upper),
                               jac=lambda p: form.jacobian(p[None], n, scores(p)[None])[0] / sd[:, None],
                               bounds=(lower, upper), loss="soft_l1", f_scale=F_SCALE, x_scale="jac",
                               max_nfev=MAX_EVALUATIONS)
    return result.x, float(robust_cost(result.fun))


def refit_many(form: Form, n: np.ndarray, Y: np.ndarray, p0: np.ndarray, sd=None) -> np.ndarray:
    """Fit the rows of Y (R x N, all at sizes n, residuals in units of `sd`) at once, each starting from p0 (the
    fit to the measured data): (R x k).

    The same objective as `fit_one` (soft_l1, same bounds), minimised by a Levenberg-Marquardt loop that runs on all
    R curves together: each step solves R small k x k systems with iteratively reweighted Gauss-Newton (weights
    1/sqrt(1 + (r/F_SCALE)^2), so the gradient is that of the robust cost), projects onto the bounds, and is kept
    only where it lowers that curve's robust cost. Fitting R curves one by one with least_squares is tens of times
    slower.
    """
    lower, upper = np.array(form.lower), np.array(form.upper)
    sd = np.ones(len(n)) if sd is None else np.asarray(sd, dtype=float)
    P = np.tile(np.asarray(p0, dtype=float), (len(Y), 1))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scores = form.model(P, n)
        cost = robust_cost((scores - Y) / sd)
        damping = np.full(len(Y), 1e-3)
        active = np.arange(len(Y))  # the curves still moving; only they are computed
        for _ in range(MAX_EVALUATIONS):
            r = (scores[active] - Y[active]) / sd
            J = form.jacobian(P[active], n, scores[active]) / sd[:, None]
            JtW = np.swapaxes(J, 1, 2) / np.sqrt(1 + (r / F_SCALE) ** 2)[:, None, :]
            gradient = (JtW @ r[..., None])[..., 0]
            # A parameter on a bound that the descent direction pushes outwards stays put this step.
            free = ~(((P[active] <= lower) & (gradient > 0)) | ((P[active] >= upper) & (gradient < 0)))
            A = (JtW @ J) * free[:, :, None] * free[:, None, :]
            gradient *= free
            diagonal = np.einsum("rkk->rk", A) + 1e-12
            lm = A + damping[active, None, None] * (diagonal[:, :, None] * np.eye(len(p0)))
            trial = np.clip(P[active] - np.linalg.solve(lm, gradient[..., None])[..., 0], lower, upper)
            trial_scores = form.model(trial, n)
            trial_cost = robust_cost((trial_scores - Y[active]) / sd)
            better = trial_cost < cost[active]
            converged = better & (cost[active] - trial_cost < 1e-10 * (1 + cost[active]))
            kept = active[better]
            P[kept], scores[kept], cost[kept] = trial[better], trial_scores[better], trial_cost[better]
            damping[active] = np.where(better, damping[active] / 3, damping[active] * 4)
            active = active[~converged & (damping[active] < 1e10)]
            if len(active) == 0:
                break
    return P


def fit_points(form: Form, n: np.ndarray, y: np.ndarray, sd=None):
    """The best of several starts for one curve, or None when the points cannot pin down the form's parameters."""
    if len(np.unique(n)) < len(form.param_names):
        return None
    fits = [fit_one(form, n, y, start, sd) for start in form.starts(n, y)]
    return min(fits, key=lambda fit: fit[1])[0]


def gain_per_doubling(form: Form, P: np.ndarray, n_max: float) -> np.ndarray:
    """The gain over the doubling that ends at n_max, s(n_max) - s(n_max / 2), for each row of P."""
    scores = form.model(P, np.array([n_max / 2, n_max]))
    return scores[:, 1] - scores[:, 0]
