"""Trial design and interim monitoring: Lan–DeMets group sequential
boundaries, conditional power, and the sample size for comparing two
proportions.

No maintained Python library computes Lan–DeMets boundaries, so they are
computed here with the recursive numerical integration of Armitage,
McPherson & Rowe (1969) in the form given by Jennison & Turnbull (2000,
ch. 19), with scipy for the normal distribution and the root finder. The
results are tested against gsDesign and rpact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from analysis.stats.core import StatsInputError, check_alpha

Spending = Literal["obrien-fleming", "pocock"]
SPENDING_FUNCTIONS: tuple[str, ...] = ("obrien-fleming", "pocock")

# Jennison & Turnbull's grid parameter: 6r − 1 grid points per look before
# Simpson's midpoints are added. gsDesign uses r = 18; r = 32 moves the
# boundaries by less than 1e-6 compared with r = 64.
_GRID_R = 32
# Below this the spending increment cannot be told from rounding error, and
# the look gets no finite boundary (nothing can be spent there).
_NEGLIGIBLE_ALPHA = 1e-300


@dataclass(frozen=True)
class GroupSequentialBounds:
    """One-sided efficacy boundaries on the z scale, one per look.

    `z[k]` is the boundary at information fraction `timing[k]` (stop for
    efficacy when the observed z is at or above it); `nominal_alpha[k]` is
    the one-sided p-value that boundary corresponds to, 1 − Φ(z[k]);
    `cumulative_alpha_spent[k]` is the spending function at `timing[k]`,
    the probability under the null hypothesis of stopping at or before
    look k."""

    timing: list[float]
    z: list[float]
    nominal_alpha: list[float]
    cumulative_alpha_spent: list[float]
    alpha: float
    spending: str

    def as_dict(self) -> dict[str, object]:
        return {
            "timing": list(self.timing),
            "z": list(self.z),
            "nominal_alpha": list(self.nominal_alpha),
            "cumulative_alpha_spent": list(self.cumulative_alpha_spent),
            "alpha": self.alpha,
            "spending": self.spending,
        }


def alpha_spending(timing: Sequence[float], *, alpha: float, spending: Spending) -> list[float]:
    """The Lan–DeMets spending function α(t) at each information fraction.

    O'Brien–Fleming type (Lan & DeMets 1983, one-sided α):
    α(t) = 2 − 2Φ(z_{1−α/2} / √t), written 2·(1 − Φ(·)) for precision.
    Pocock type (Lan & DeMets 1983): α(t) = α·ln(1 + (e − 1)t).
    Both equal α at t = 1 (gsDesign's sfLDOF and sfLDPocock)."""
    alpha = check_alpha(alpha)
    fractions = _check_timing(timing)
    if spending == "obrien-fleming":
        return [float(2.0 * norm.sf(norm.isf(alpha / 2.0) / math.sqrt(t))) for t in fractions]
    if spending == "pocock":
        return [float(alpha * math.log1p((math.e - 1.0) * t)) for t in fractions]
    raise StatsInputError(f"spending must be one of {', '.join(SPENDING_FUNCTIONS)} (got {spending!r}).")


def group_sequential_bounds(
    timing: Sequence[float], alpha: float = 0.025, spending: Spending = "obrien-fleming"
) -> GroupSequentialBounds:
    """One-sided efficacy z boundaries by Lan–DeMets alpha spending.

    `timing` is the information fraction of each look, strictly increasing
    in (0, 1]; looks need not be equally spaced. The last fraction may be
    below 1: the boundaries of the looks so far do not depend on looks yet
    to come, so an interim report passes the fractions observed so far and
    gets the same boundaries as the full design would give them.

    At look k the boundary b_k solves
    P(Z_1 < b_1, …, Z_{k−1} < b_{k−1}, Z_k ≥ b_k) = α(t_k) − α(t_{k−1})
    under the null hypothesis, where (Z_1, …, Z_K) is multivariate normal
    with corr(Z_i, Z_j) = √(t_i / t_j). The probability is computed by the
    recursive numerical integration of Armitage, McPherson & Rowe (1969) on
    the grid of Jennison & Turnbull (2000, ch. 19; Simpson's rule) and b_k
    is found with Brent's method. No futility boundary is used (the
    efficacy boundaries are those of a design with non-binding futility).
    """
    alpha = check_alpha(alpha)
    if spending not in SPENDING_FUNCTIONS:
        raise StatsInputError(f"spending must be one of {', '.join(SPENDING_FUNCTIONS)} (got {spending!r}).")
    fractions = _check_timing(timing)
    cumulative = alpha_spending(fractions, alpha=alpha, spending=spending)
    increments = np.diff(np.concatenate(([0.0], cumulative)))

    bounds: list[float] = []
    # Continuation density h(z) of the previous look (Z below its boundary),
    # already multiplied by the quadrature weights of its grid points.
    grid = np.empty(0)
    weighted_density = np.empty(0)
    for k, t in enumerate(fractions):
        if k == 0:
            boundary = float(norm.isf(increments[0])) if increments[0] > _NEGLIGIBLE_ALPHA else math.inf
            grid, weights = _grid(boundary)
            weighted_density = weights * norm.pdf(grid)
        else:
            previous = fractions[k - 1]
            step = t - previous
            boundary = _solve_boundary(grid, weighted_density, previous, t, float(increments[k]))
            new_grid, weights = _grid(boundary)
            # Z_k·√t_k = Z_{k−1}·√t_{k−1} + N(0, t_k − t_{k−1}) under the null.
            scaled = (new_grid[:, None] * math.sqrt(t) - grid[None, :] * math.sqrt(previous)) / math.sqrt(step)
            transition = math.sqrt(t / step) * norm.pdf(scaled)
            weighted_density = weights * (transition @ weighted_density)
            grid = new_grid
        bounds.append(boundary)

    return GroupSequentialBounds(
        timing=list(fractions),
        z=bounds,
        nominal_alpha=[float(norm.sf(b)) for b in bounds],
        cumulative_alpha_spent=[float(c) for c in cumulative],
        alpha=alpha,
        spending=spending,
    )


def conditional_power(
    z_interim: float,
    information_fraction: float,
    drift: float | Literal["current_trend"] | None = None,
    alpha: float = 0.025,
    boundary: float | None = None,
    *,
    power: float = 0.8,
) -> float:
    """The probability that the final z statistic reaches `boundary`, given
    the interim z at `information_fraction` t (0 < t < 1).

    B-value formula (Lan & Wittes 1988; Proschan, Lan & Wittes 2006, ch. 3;
    Jennison & Turnbull 2000, ch. 10): with B(t) = z_t·√t and θ the drift,
    the expected final z statistic, B(1) − B(t) ~ N(θ(1 − t), 1 − t) and

        CP = 1 − Φ((c − z_t·√t − θ(1 − t)) / √(1 − t)).

    `drift` chooses θ:
    - None: the design alternative of a fixed-sample design with one-sided
      `alpha` and `power`, θ = z_{1−α} + z_{power} (2.80 for 0.025 and 0.8);
      a group sequential design whose maximum information was inflated has
      a larger drift, pass it as a number;
    - "current_trend": the effect seen so far continues, θ = z_t/√t, which
      gives CP = 1 − Φ((c − z_t/√t) / √(1 − t));
    - a number: θ itself (0 gives the conditional type I error).
    `boundary` c is the final critical value: None means z_{1−α} (a
    fixed-sample final test); pass the last group sequential boundary when
    there is one. Interim looks still to come are not accounted for.
    """
    z_value = _finite(z_interim, "z_interim")
    t = _finite(information_fraction, "information_fraction")
    if not 0.0 < t < 1.0:
        raise StatsInputError(
            f"information_fraction must lie strictly between 0 and 1 (got {information_fraction}); "
            "at the final analysis there is nothing left to predict."
        )
    alpha = check_alpha(alpha)
    critical = norm.isf(alpha) if boundary is None else _finite(boundary, "boundary")
    if drift is None:
        if not 0.0 < power < 1.0:
            raise StatsInputError(f"power must lie strictly between 0 and 1 (got {power}).")
        theta = float(norm.isf(alpha) + norm.ppf(power))
    elif isinstance(drift, str):
        if drift != "current_trend":
            raise StatsInputError(f'drift must be None, "current_trend" or a number (got {drift!r}).')
        theta = z_value / math.sqrt(t)
    else:
        theta = _finite(drift, "drift")
    numerator = critical - z_value * math.sqrt(t) - theta * (1.0 - t)
    return float(norm.sf(numerator / math.sqrt(1.0 - t)))


def sample_size_two_proportions(
    p1: float, p2: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> float:
    """Participants in group 1 (before rounding up) for a two-sided test of
    p1 = p2 at level `alpha` with the given power; group 2 gets
    `ratio` × that many (ratio = n2/n1).

    With ratio = 1 this is R's power.prop.test (strict = FALSE): its power
    equation
        power = Φ((|p1 − p2|·√n − z_{1−α/2}·√(2·p̄·q̄)) / √(p1q1 + p2q2)),
    p̄ = (p1 + p2)/2, solved for n with Brent's method as R solves it with
    uniroot. For ratio ≠ 1 the same normal approximation (pooled variance
    under the null, unpooled under the alternative; Fleiss, Levin & Paik
    2003, ch. 4, without continuity correction) with n2 = ratio·n1 and the
    pooled p̄ = (p1 + ratio·p2)/(1 + ratio):
        power = Φ((|p1 − p2| − z_{1−α/2}·√(p̄q̄(1/n1 + 1/n2))) / √(p1q1/n1 + p2q2/n2)).
    Not statsmodels' NormalIndPower with proportion_effectsize: that uses
    Cohen's arcsine effect size h and gives different numbers."""
    first = _probability(p1, "p1")
    second = _probability(p2, "p2")
    if first == second:
        raise StatsInputError("p1 and p2 are equal: no sample size detects a difference of zero.")
    alpha = check_alpha(alpha)
    if not 0.0 < power < 1.0:
        raise StatsInputError(f"power must lie strictly between 0 and 1 (got {power}).")
    allocation = _finite(ratio, "ratio")
    if allocation <= 0.0:
        raise StatsInputError(f"ratio (n2/n1) must be positive (got {ratio}).")

    def shortfall(n1: float) -> float:
        return _power(n1, first, second, alpha, allocation) - power

    smallest = 1e-9
    if shortfall(smallest) >= 0.0:
        raise StatsInputError(
            f"power {power} is below what the test reaches with any sample at all; ask for more power."
        )
    largest = 1e3
    while shortfall(largest) < 0.0:
        largest *= 10.0
        if largest > 1e15:
            raise StatsInputError("the sample size needed is beyond 1e15 per group; the difference is too small.")
    return float(brentq(shortfall, smallest, largest, xtol=1e-12, rtol=1e-14, maxiter=500))


def power_two_proportions(n1: float, p1: float, p2: float, alpha: float = 0.05, ratio: float = 1.0) -> float:
    """The power of the two-sided test of p1 = p2 with n1 participants in
    group 1 and ratio × n1 in group 2: the power equation that
    sample_size_two_proportions solves (R's power.prop.test with
    strict = FALSE when ratio = 1; the far tail is not counted)."""
    size = _finite(n1, "n1")
    if size <= 0.0:
        raise StatsInputError(f"n1 must be positive (got {n1}).")
    allocation = _finite(ratio, "ratio")
    if allocation <= 0.0:
        raise StatsInputError(f"ratio (n2/n1) must be positive (got {ratio}).")
    return _power(size, _probability(p1, "p1"), _probability(p2, "p2"), check_alpha(alpha), allocation)


def _power(n1: float, p1: float, p2: float, alpha: float, ratio: float) -> float:
    n2 = ratio * n1
    pooled = (p1 + ratio * p2) / (1.0 + ratio)
    null_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    alternative_se = math.sqrt(p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2)
    critical = norm.isf(alpha / 2.0)
    return float(norm.cdf((abs(p1 - p2) - critical * null_se) / alternative_se))


def _solve_boundary(
    grid: np.ndarray, weighted_density: np.ndarray, previous: float, current: float, increment: float
) -> float:
    """The boundary at which the probability of continuing to the previous
    look and crossing at this one equals the alpha to spend here."""
    if increment <= _NEGLIGIBLE_ALPHA:
        return math.inf
    step = current - previous

    def excess(boundary: float) -> float:
        scaled = (boundary * math.sqrt(current) - grid * math.sqrt(previous)) / math.sqrt(step)
        return float(np.sum(weighted_density * norm.sf(scaled))) - increment

    # excess(-10) is the probability of reaching this look minus the
    # increment, positive while less than all alpha is spent; excess(40) is
    # −increment.
    return float(brentq(excess, -10.0, 40.0, xtol=1e-12, rtol=1e-14, maxiter=500))


def _grid(upper: float) -> tuple[np.ndarray, np.ndarray]:
    """Jennison & Turnbull's (2000, ch. 19) grid for a standard normal z
    below `upper`, with Simpson's rule weights: points dense in ±3 and
    spreading logarithmically into the tails, cut at the boundary, plus the
    midpoints between them."""
    r = _GRID_R
    i = np.arange(1, 6 * r, dtype=float)
    points = np.where(
        i < r,
        -3.0 - 4.0 * np.log(r / i),
        np.where(i <= 5 * r, -3.0 + 3.0 * (i - r) / (2.0 * r), 3.0 + 4.0 * np.log(r / (6.0 * r - i))),
    )
    if math.isfinite(upper):
        points = np.append(points[points < upper], upper)
    widths = np.diff(points)
    nodes = np.empty(2 * len(points) - 1)
    nodes[0::2] = points
    nodes[1::2] = points[:-1] + widths / 2.0
    weights = np.zeros_like(nodes)
    weights[0:-1:2] += widths / 6.0
    weights[2::2] += widths / 6.0
    weights[1::2] += 4.0 * widths / 6.0
    return nodes, weights


def _check_timing(timing: Sequence[float]) -> list[float]:
    try:
        fractions = [float(t) for t in timing]
    except (TypeError, ValueError) as error:
        raise StatsInputError(f"timing must be a sequence of information fractions ({error}).") from None
    if not fractions:
        raise StatsInputError("timing is empty: give the information fraction of at least one look.")
    for t in fractions:
        if not math.isfinite(t) or not 0.0 < t <= 1.0:
            raise StatsInputError(f"information fractions must lie in (0, 1] (got {t}).")
    for earlier, later in pairwise(fractions):
        if later <= earlier:
            raise StatsInputError(f"information fractions must increase strictly (got {earlier} then {later}).")
    return fractions


def _finite(value: float, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StatsInputError(f"{name} must be a number (got {value!r}).") from None
    if not math.isfinite(number):
        raise StatsInputError(f"{name} must be finite (got {value}).")
    return number


def _probability(value: float, name: str) -> float:
    number = _finite(value, name)
    if not 0.0 < number < 1.0:
        raise StatsInputError(f"{name} must lie strictly between 0 and 1 (got {value}).")
    return number
