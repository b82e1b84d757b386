"""Comparing the two arms on a binary outcome: risk difference, relative
risk, the chi-square and Fisher tests, and logistic regression adjusted for
the stratification factors.

statsmodels computes the Newcombe, Wald and Agresti–Caffo intervals for the
risk difference (`confint_proportions_2indep`) and fits the logistic model;
scipy computes the Katz interval for the relative risk, the chi-square test
and Fisher's exact test.

The Miettinen–Nurminen score interval (method "score") is written here: in
statsmodels 0.15 the restricted maximum-likelihood estimate behind its
"score" interval for a difference has a wrong coefficient (statsmodels issue
#10269, fix pending in pull request #10270), which moves the upper limit for
56/70 vs 48/80 from the published 0.3382 to 0.3440 and makes 9/10 vs 3/10
fail. The restricted estimate here is the closed-form root of Miettinen &
Nurminen (Stat Med 1985;4:213–226, Appendix 1), in the form given by
Farrington & Manning (Stat Med 1990;9:1447–1454), with the N/(N − 1)
variance factor of Miettinen & Nurminen, as in SAS PROC FREQ
(RISKDIFF(CL=MN)) and R's PropCIs::diffscoreci.

Conventions: group 1 is the arm being compared (x1 events of n1), group 2
the reference, so the difference is p1 − p2 and the ratio p1 / p2. On ratio
scales `Estimate.se` is the standard error of the logarithm."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats
from scipy.stats.contingency import relative_risk as scipy_relative_risk
from statsmodels.discrete.discrete_model import Logit
from statsmodels.stats.proportion import confint_proportions_2indep
from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationError, PerfectSeparationWarning

from analysis.stats.core import DEFAULT_ALPHA, Estimate, StatsInputError, TestResult, check_alpha

RiskDifferenceMethod = Literal["newcombe", "wald", "agresti-caffo", "score"]

# Our method names → statsmodels' names (statsmodels spells Newcombe "newcomb").
_STATSMODELS_DIFFERENCE_METHODS: dict[str, str] = {
    "newcombe": "newcomb",
    "wald": "wald",
    "agresti-caffo": "agresti-caffo",
}


# --- input checks -------------------------------------------------------------------------------


def _count(value: object, name: str) -> int:
    """A non-negative whole number (int, numpy integer, or a float with no fraction)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        raise StatsInputError(f"{name} must be a whole number (got {value!r}).")
    number = float(value)
    if not math.isfinite(number) or number != int(number):
        raise StatsInputError(f"{name} must be a whole number (got {value!r}).")
    if number < 0:
        raise StatsInputError(f"{name} must not be negative (got {value!r}).")
    return int(number)


def _two_groups(x1: object, n1: object, x2: object, n2: object) -> tuple[int, int, int, int]:
    counts = (_count(x1, "x1"), _count(n1, "n1"), _count(x2, "x2"), _count(n2, "n2"))
    for events, total, group in ((counts[0], counts[1], "1"), (counts[2], counts[3], "2")):
        if total == 0:
            raise StatsInputError(f"Group {group} has no subjects (n{group} = 0).")
        if events > total:
            raise StatsInputError(f"x{group} = {events} events cannot exceed n{group} = {total} subjects.")
    return counts


def _table(table: Any) -> np.ndarray:
    """A two-dimensional table of counts, at least 2 × 2, every row and column used."""
    try:
        array = np.asarray(table, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise StatsInputError(f"The table must hold counts (could not read it as numbers: {error}).") from None
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 2:
        raise StatsInputError(f"The table must be two-dimensional and at least 2 × 2 (got shape {array.shape}).")
    if not np.all(np.isfinite(array)):
        raise StatsInputError("The table contains missing or infinite values.")
    if np.any(array < 0):
        raise StatsInputError("The table contains negative counts.")
    if np.any(array != np.round(array)):
        raise StatsInputError("The table must hold whole-number counts.")
    for axis, label in ((1, "row"), (0, "column")):
        empty = np.flatnonzero(array.sum(axis=axis) == 0)
        if empty.size:
            raise StatsInputError(
                f"{label.capitalize()} {int(empty[0]) + 1} of the table is empty; "
                "every row and column needs at least one subject."
            )
    return array.astype(np.int64)


def _binary_vector(values: Any, name: str) -> np.ndarray:
    """A non-empty one-dimensional vector of 0/1 (or False/True), as floats."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise StatsInputError(f"{name} must be coded 0/1 or False/True.") from None
    if array.ndim != 1:
        raise StatsInputError(f"{name} must be one-dimensional (got shape {array.shape}).")
    if array.size == 0:
        raise StatsInputError(f"{name} is empty.")
    if not np.all(np.isfinite(array)):
        raise StatsInputError(f"{name} contains missing values; remove those participants first.")
    if not np.all((array == 0) | (array == 1)):
        others = sorted({float(v) for v in array[(array != 0) & (array != 1)]})[:5]
        raise StatsInputError(f"{name} must be coded 0/1 or False/True (found {others}).")
    return array


# --- risk difference ----------------------------------------------------------------------------


def _restricted_proportions(x1: int, n1: int, x2: int, n2: int, delta: float) -> tuple[float, float]:
    """Maximum-likelihood estimates of (p1, p2) under the constraint p1 − p2 = delta.

    The score equation is a cubic in p1; its root in the admissible range is
    the trigonometric solution of Miettinen & Nurminen (1985), written as in
    Farrington & Manning (1990), eq. (4)."""
    p1_hat, p2_hat = x1 / n1, x2 / n2
    theta = n2 / n1
    a = 1.0 + theta
    b = -(1.0 + theta + p1_hat + theta * p2_hat + delta * (theta + 2.0))
    c = delta * delta + delta * (2.0 * p1_hat + theta + 1.0) + p1_hat + theta * p2_hat
    d = -p1_hat * delta * (1.0 + delta)
    v = b**3 / (27.0 * a**3) - b * c / (6.0 * a**2) + d / (2.0 * a)
    radicand = max(b * b / (9.0 * a * a) - c / (3.0 * a), 0.0)
    u = math.copysign(math.sqrt(radicand), v) if v != 0 else math.sqrt(radicand)
    if u == 0.0:
        p1 = -b / (3.0 * a)  # triple root
    else:
        w = (math.pi + math.acos(min(1.0, max(-1.0, v / u**3)))) / 3.0
        p1 = 2.0 * u * math.cos(w) - b / (3.0 * a)
    p1 = min(max(p1, max(0.0, delta)), min(1.0, 1.0 + delta))  # rounding only
    return p1, p1 - delta


def _miettinen_nurminen_z(x1: int, n1: int, x2: int, n2: int, delta: float) -> float:
    """Score statistic for H0: p1 − p2 = delta, with the N/(N − 1) variance factor."""
    p1, p2 = _restricted_proportions(x1, n1, x2, n2, delta)
    total = n1 + n2
    variance = (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2) * total / (total - 1.0)
    distance = x1 / n1 - x2 / n2 - delta
    if variance <= 0.0:
        return 0.0 if distance == 0.0 else math.copysign(math.inf, distance)
    return distance / math.sqrt(variance)


def _miettinen_nurminen_interval(x1: int, n1: int, x2: int, n2: int, alpha: float) -> tuple[float, float]:
    """All delta whose score test is not rejected at level alpha (two-sided)."""
    critical = float(scipy_stats.norm.isf(alpha / 2.0))
    observed = x1 / n1 - x2 / n2
    edge = 1e-12

    def lower_equation(delta: float) -> float:
        return _miettinen_nurminen_z(x1, n1, x2, n2, delta) - critical

    def upper_equation(delta: float) -> float:
        return _miettinen_nurminen_z(x1, n1, x2, n2, delta) + critical

    if observed <= -1.0 or lower_equation(-1.0 + edge) <= 0.0:
        low = -1.0
    else:
        low = float(optimize.brentq(lower_equation, -1.0 + edge, observed, xtol=1e-12))
    if observed >= 1.0 or upper_equation(1.0 - edge) >= 0.0:
        high = 1.0
    else:
        high = float(optimize.brentq(upper_equation, observed, 1.0 - edge, xtol=1e-12))
    return low, high


def risk_difference(
    x1: int,
    n1: int,
    x2: int,
    n2: int,
    method: RiskDifferenceMethod = "newcombe",
    alpha: float = DEFAULT_ALPHA,
) -> Estimate:
    """The difference of proportions p1 − p2 = x1/n1 − x2/n2 with a (1 − alpha) interval.

    Methods:
    - "newcombe": Newcombe's hybrid score interval (Stat Med 1998;17:873–890,
      method 10), from Wilson intervals of each proportion; statsmodels.
    - "wald": the simple asymptotic interval with the unpooled standard
      error (Newcombe's method 1); statsmodels. `se` and a Wald p-value are
      given; with 0 or all events in both groups its width is zero.
    - "agresti-caffo": Wald after adding one success and one failure to each
      group (Am Stat 2000;54:280–288); statsmodels, limits cut to [−1, 1].
    - "score": Miettinen–Nurminen asymptotic score interval (Stat Med
      1985;4:213–226), computed here (see the module notes); `p_value` is
      the Miettinen–Nurminen score test of p1 = p2, so it is below alpha
      exactly when the interval excludes 0.
    `se` and `p_value` are None for "newcombe" and "agresti-caffo", which
    are intervals without a matching test; use `chi_square` or
    `fisher_exact` for the test."""
    alpha = check_alpha(alpha)
    x1, n1, x2, n2 = _two_groups(x1, n1, x2, n2)
    difference = x1 / n1 - x2 / n2
    if method == "score":
        low, high = _miettinen_nurminen_interval(x1, n1, x2, n2, alpha)
        z = _miettinen_nurminen_z(x1, n1, x2, n2, 0.0)
        return Estimate(difference, low, high, se=None, p_value=float(2.0 * scipy_stats.norm.sf(abs(z))))
    if method not in _STATSMODELS_DIFFERENCE_METHODS:
        raise StatsInputError(f"Unknown method {method!r}; choose one of 'newcombe', 'wald', 'agresti-caffo', 'score'.")
    low, high = confint_proportions_2indep(
        x1, n1, x2, n2, method=_STATSMODELS_DIFFERENCE_METHODS[method], compare="diff", alpha=alpha
    )
    low, high = max(float(low), -1.0), min(float(high), 1.0)
    if method != "wald":
        return Estimate(difference, low, high)
    p1, p2 = x1 / n1, x2 / n2
    se = math.sqrt(p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2)
    p_value = float(2.0 * scipy_stats.norm.sf(abs(difference) / se)) if se > 0 else None
    return Estimate(difference, low, high, se=se, p_value=p_value)


# --- relative risk ------------------------------------------------------------------------------


def relative_risk(x1: int, n1: int, x2: int, n2: int, alpha: float = DEFAULT_ALPHA) -> Estimate:
    """The risk ratio (x1/n1) / (x2/n2) with Katz's log interval
    (Katz et al., Biometrics 1978;34:469–474): exp(log RR ± z·se), where
    se = sqrt(1/x1 − 1/n1 + 1/x2 − 1/n2) is `Estimate.se`; `p_value` is the
    Wald test of log RR = 0. As R's epitools::riskratio (method "wald").

    The log interval does not exist when either group has no events (the
    ratio is 0 or infinite); that raises StatsInputError rather than
    returning an interval that is not one."""
    alpha = check_alpha(alpha)
    x1, n1, x2, n2 = _two_groups(x1, n1, x2, n2)
    if x1 == 0 or x2 == 0:
        empty = " and ".join(f"group {g}" for g, x in (("1", x1), ("2", x2)) if x == 0)
        raise StatsInputError(
            f"The Katz log interval for the relative risk needs at least one event in each group; "
            f"{empty} has none. Report the risk difference instead."
        )
    result = scipy_relative_risk(exposed_cases=x1, exposed_total=n1, control_cases=x2, control_total=n2)
    interval = result.confidence_interval(confidence_level=1.0 - alpha)
    se = math.sqrt(1.0 / x1 - 1.0 / n1 + 1.0 / x2 - 1.0 / n2)
    ratio = float(result.relative_risk)
    p_value = float(2.0 * scipy_stats.norm.sf(abs(math.log(ratio)) / se)) if se > 0 else 1.0
    return Estimate(ratio, float(interval.low), float(interval.high), se=se, p_value=p_value)


# --- tests on contingency tables ----------------------------------------------------------------


def chi_square(table: Any, correction: bool = True) -> TestResult:
    """Pearson's chi-square test of independence on an r × c table of counts
    (scipy.stats.chi2_contingency; as R's chisq.test). `correction` applies
    Yates' continuity correction, which is used only for 2 × 2 tables (one
    degree of freedom), as in R. The statistic is chi-square with
    (r − 1)(c − 1) degrees of freedom."""
    counts = _table(table)
    result = scipy_stats.chi2_contingency(counts, correction=bool(correction))
    return TestResult(float(result.statistic), float(result.pvalue))


def fisher_exact(table: Any) -> TestResult:
    """Fisher's exact test on a 2 × 2 table, two-sided (scipy.stats.fisher_exact;
    the two-sided p-value sums the tables no more probable than the one
    observed, as R's fisher.test).

    `statistic` is the sample odds ratio (a·d)/(b·c) of the table
    [[a, b], [c, d]] — not the conditional maximum-likelihood estimate that
    R's fisher.test prints; it is 0 or infinite when a cell is empty."""
    counts = _table(table)
    if counts.shape != (2, 2):
        raise StatsInputError(
            f"fisher_exact takes a 2 × 2 table (got {counts.shape[0]} × {counts.shape[1]}); "
            "use chi_square for larger tables."
        )
    result = scipy_stats.fisher_exact(counts, alternative="two-sided")
    return TestResult(float(result.statistic), float(result.pvalue))


# --- logistic regression ------------------------------------------------------------------------


@dataclass(frozen=True)
class LogisticRegressionResult:
    """A logistic model of the outcome on the arm and the covariates.

    `odds_ratio` is the arm's adjusted odds ratio with its Wald interval and
    p-value (`se` is that of the log odds ratio). `coefficients` maps each
    term to its coefficient on the log-odds scale, with Wald interval, SE
    and p-value: "intercept", "arm", a numeric covariate by its name, and a
    categorical one as "name[level]" for each level but the first (sorted)
    one, which is the reference."""

    odds_ratio: Estimate
    coefficients: dict[str, Estimate]
    n: int
    events: int


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _is_missing(value: object) -> bool:
    return value is None or (_is_number(value) and math.isnan(float(value)))  # type: ignore[arg-type]


def _level_order(level: object) -> tuple[int, float, str]:
    """Numbers first, in numeric order, then everything else by its text."""
    if _is_number(level):
        return (0, float(level), "")  # type: ignore[arg-type]
    return (1, 0.0, str(level))


def _design_columns(
    covariates: Mapping[str, Sequence[Any]], categorical: set[str], n: int
) -> tuple[list[str], list[np.ndarray]]:
    names: list[str] = []
    columns: list[np.ndarray] = []
    for name, values in covariates.items():
        column = list(values)
        if len(column) != n:
            raise StatsInputError(f"Covariate {name!r} has {len(column)} values but the outcome has {n}.")
        missing = [i for i, v in enumerate(column) if _is_missing(v)]
        if missing:
            raise StatsInputError(
                f"Covariate {name!r} is missing for {len(missing)} participant(s) "
                f"(first at position {missing[0]}); remove them or fill the value first."
            )
        if name not in categorical and all(_is_number(v) for v in column):
            numeric = np.asarray(column, dtype=np.float64)
            if not np.all(np.isfinite(numeric)):
                raise StatsInputError(f"Covariate {name!r} contains infinite values.")
            names.append(name)
            columns.append(numeric)
            continue
        levels = sorted(set(column), key=_level_order)
        for level in levels[1:]:
            names.append(f"{name}[{level}]")
            columns.append(np.array([1.0 if v == level else 0.0 for v in column]))
    return names, columns


def logistic_regression(
    outcome: Sequence[Any],
    arm: Sequence[Any],
    covariates: Mapping[str, Sequence[Any]] | None = None,
    alpha: float = DEFAULT_ALPHA,
    categorical: Iterable[str] = (),
) -> LogisticRegressionResult:
    """Logistic regression of a binary outcome on the arm, adjusted for covariates
    (maximum likelihood, statsmodels Logit; Wald intervals, as SAS PROC
    LOGISTIC's and R's confint.default — not R's profile-likelihood confint).

    `outcome` and `arm` are 0/1 (or False/True); arm = 1 is the arm whose
    odds ratio is reported against arm = 0. `covariates` maps a name to one
    value per participant. A covariate whose values are all numbers is
    entered as a number unless its name is in `categorical`; any other
    covariate (a site code, an indication) is a factor with one indicator per
    level, the first level in sorted order being the reference — so list
    numerically coded stratification factors in `categorical`.

    Raises StatsInputError for missing values, collinear terms, or when the
    model cannot be estimated because some term predicts the outcome
    perfectly (separation: e.g. a stratum without any event)."""
    alpha = check_alpha(alpha)
    y = _binary_vector(outcome, "outcome")
    arm_column = _binary_vector(arm, "arm")
    if len(arm_column) != len(y):
        raise StatsInputError(f"arm has {len(arm_column)} values but the outcome has {len(y)}.")
    if np.all(arm_column == arm_column[0]):
        raise StatsInputError("Every participant is in the same arm; there is nothing to compare.")
    if np.all(y == y[0]):
        raise StatsInputError("The outcome is the same for every participant; the odds ratio is not estimable.")
    categorical_names = set(categorical)
    unknown = categorical_names - set(covariates or {})
    if unknown:
        raise StatsInputError(f"categorical names covariates that were not given: {sorted(unknown)}.")
    names, columns = _design_columns(covariates or {}, categorical_names, len(y))
    terms = ["intercept", "arm", *names]
    design = np.column_stack([np.ones_like(y), arm_column, *columns])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise StatsInputError(
            "The arm and covariates are collinear (a covariate is constant, duplicates another, or a "
            "stratum level coincides with the arm); drop or merge the redundant terms."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            fit = Logit(y, design).fit(method="newton", maxiter=100, disp=0)
        except (PerfectSeparationError, PerfectSeparationWarning, ConvergenceWarning, np.linalg.LinAlgError):
            raise StatsInputError(
                "The logistic model cannot be estimated: some term predicts the outcome perfectly "
                "(for example a stratum in which no participant, or every participant, has the "
                "outcome). Merge sparse strata or report the unadjusted comparison."
            ) from None
    if not fit.mle_retvals.get("converged", False):
        raise StatsInputError("The logistic model did not converge; merge sparse strata and try again.")
    params = np.asarray(fit.params)
    standard_errors = np.asarray(fit.bse)
    p_values = np.asarray(fit.pvalues)
    intervals = np.asarray(fit.conf_int(alpha=alpha))
    if not np.all(np.isfinite(standard_errors)) or np.any(standard_errors > 1e3):
        raise StatsInputError(
            "The logistic model is not estimable (standard errors diverge, a sign of separation); "
            "merge sparse strata or report the unadjusted comparison."
        )
    coefficients = {
        term: Estimate(
            float(params[i]),
            float(intervals[i, 0]),
            float(intervals[i, 1]),
            se=float(standard_errors[i]),
            p_value=float(p_values[i]),
        )
        for i, term in enumerate(terms)
    }
    arm_coefficient = coefficients["arm"]
    odds_ratio = Estimate(
        math.exp(arm_coefficient.value),
        math.exp(arm_coefficient.ci_low),
        math.exp(arm_coefficient.ci_high),
        se=arm_coefficient.se,
        p_value=arm_coefficient.p_value,
    )
    return LogisticRegressionResult(odds_ratio=odds_ratio, coefficients=coefficients, n=len(y), events=int(y.sum()))
