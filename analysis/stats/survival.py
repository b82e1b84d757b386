"""Time to event: the Kaplan–Meier estimate, the log-rank test and the Cox
proportional-hazards ratio.

statsmodels does the work for all three: `SurvfuncRight` (Kaplan–Meier
with Greenwood's variance), `survdiff` (log-rank) and `PHReg`, which offers
both Efron's and Breslow's handling of tied event times (lifelines'
CoxPHFitter offers Efron's only, so one library serves both). The tests
check them against R's survival package and, independently, lifelines.

What is written here is small: the pointwise confidence interval from the
Greenwood standard error (three transforms, as R's survfit `conf.type`) and
the median with its interval read off the curve and its bands exactly as R's
survfit does (Brookmeyer & Crowley, Biometrics 1982;38:29–41; a curve
lying exactly at 0.5 over an interval gives that interval's midpoint).

Conventions: `events` is 1 (or True) for an observed event and 0 for a
censored time; times are non-negative."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.duration.hazard_regression import PHReg
from statsmodels.duration.survfunc import SurvfuncRight, survdiff
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from analysis.stats.core import DEFAULT_ALPHA, Estimate, StatsInputError, TestResult, check_alpha

ConfidenceType = Literal["log-log", "log", "plain"]
Ties = Literal["efron", "breslow"]


# --- input checks -------------------------------------------------------------------------------


def _times(values: Any, name: str = "times") -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise StatsInputError(f"{name} must hold numbers.") from None
    if array.ndim != 1:
        raise StatsInputError(f"{name} must be one-dimensional (got shape {array.shape}).")
    if array.size == 0:
        raise StatsInputError(f"{name} is empty.")
    if not np.all(np.isfinite(array)):
        raise StatsInputError(f"{name} contains missing or infinite values; remove those participants first.")
    if np.any(array < 0):
        raise StatsInputError(f"{name} must not be negative (found {float(array.min())}).")
    return array


def _events(values: Any, n: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise StatsInputError("events must be coded 1 (event) / 0 (censored).") from None
    if array.ndim != 1:
        raise StatsInputError(f"events must be one-dimensional (got shape {array.shape}).")
    if len(array) != n:
        raise StatsInputError(f"events has {len(array)} values but times has {n}.")
    if not np.all(np.isfinite(array)) or not np.all((array == 0) | (array == 1)):
        raise StatsInputError("events must be coded 1 (event) / 0 (censored), or True/False.")
    return array


# --- Kaplan–Meier -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KaplanMeierStep:
    """One row of the Kaplan–Meier table, at a time with at least one event:
    the number at risk just before it, the events at it, the survival just
    after it, Greenwood's standard error and the pointwise interval (NaN
    where it does not exist, e.g. once survival is 0)."""

    time: float
    at_risk: int
    events: int
    survival: float
    std_error: float
    ci_low: float
    ci_high: float


def _pointwise_interval(
    survival: np.ndarray, std_error: np.ndarray, z: float, conf_type: ConfidenceType
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise limits from Greenwood's standard error of S, as R's survfit."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if conf_type == "plain":
            low, high = survival - z * std_error, survival + z * std_error
        elif conf_type == "log":
            spread = z * std_error / survival
            low, high = survival * np.exp(-spread), survival * np.exp(spread)
        else:  # log-log: S ** exp(±z·se(log S) / log S), se(log S) = se(S) / S
            spread = z * (std_error / survival) / np.log(survival)
            low, high = survival ** np.exp(-spread), survival ** np.exp(spread)
    undefined = (survival <= 0.0) | ~np.isfinite(std_error)
    if conf_type == "log-log":
        undefined |= survival >= 1.0
    low = np.where(undefined, np.nan, np.clip(low, 0.0, 1.0))
    high = np.where(undefined, np.nan, np.clip(high, 0.0, 1.0))
    return low, high


def _first_crossing(times: np.ndarray, curve: np.ndarray, level: float = 0.5) -> float | None:
    """The first time the step curve is at or below `level`; if it sits exactly
    at `level` until the next step, the midpoint of that flat stretch (R's
    quantile.survfit). None if it never gets there (or only NaN is left)."""
    tolerance = 1e-12
    below = np.flatnonzero(curve <= level + tolerance)
    if below.size == 0:
        return None
    first = int(below[0])
    if abs(curve[first] - level) <= tolerance and first + 1 < len(times):
        return float((times[first] + times[first + 1]) / 2.0)
    return float(times[first])


@dataclass(frozen=True)
class KaplanMeierResult:
    """A Kaplan–Meier curve. `median` is None when survival never falls to
    0.5 (median not reached); `median_ci_low` / `median_ci_high` are None
    where the band never reaches 0.5 (R prints NA). `table` lists the event
    times; `censored_times` are the censoring times (for tick marks) and
    `follow_up_times` every participant's time, event or censored."""

    n: int
    events: int
    alpha: float
    conf_type: ConfidenceType
    table: tuple[KaplanMeierStep, ...]
    censored_times: tuple[float, ...]
    median: float | None
    median_ci_low: float | None
    median_ci_high: float | None
    follow_up_times: tuple[float, ...]

    def survival_at(self, t: float) -> float:
        """S(t): 1 before the first event, constant between events. Beyond the
        longest follow-up the curve is unknown (NaN) unless it has already
        reached 0."""
        if not math.isfinite(t):
            raise StatsInputError(f"t must be a finite time (got {t}).")
        last_time = max(self.follow_up_times)
        survival = 1.0
        for step in self.table:
            if step.time > t:
                break
            survival = step.survival
        if t > last_time and survival > 0.0:
            return math.nan
        return survival

    def at_risk(self, times: Sequence[float]) -> list[int]:
        """Numbers at risk at each of `times` (participants whose time is ≥ t),
        for the table printed under a Kaplan–Meier plot."""
        if isinstance(times, int | float | np.integer | np.floating):
            raise StatsInputError("at_risk takes a list of times, e.g. at_risk([0, 6, 12]).")
        follow_up = np.asarray(self.follow_up_times)
        counts = []
        for t in times:
            if not math.isfinite(float(t)):
                raise StatsInputError(f"Times for the at-risk table must be finite (got {t}).")
            counts.append(int(np.sum(follow_up >= float(t))))
        return counts


def kaplan_meier(
    times: Sequence[float],
    events: Sequence[Any],
    alpha: float = DEFAULT_ALPHA,
    conf_type: ConfidenceType = "log-log",
) -> KaplanMeierResult:
    """Kaplan–Meier estimate of the survival function (statsmodels SurvfuncRight)
    with Greenwood's standard error and a pointwise (1 − alpha) interval.

    `conf_type` is the transform of the interval, as R's survfit: "log-log"
    (the default here, as SAS PROC LIFETEST's and lifelines'; limits stay in
    [0, 1]), "log" (R's default) or "plain". The median and its interval are
    where the curve and its bands first reach 0.5 (Brookmeyer & Crowley
    1982, as R's survfit)."""
    alpha = check_alpha(alpha)
    if conf_type not in ("log-log", "log", "plain"):
        raise StatsInputError(f"Unknown conf_type {conf_type!r}; choose 'log-log', 'log' or 'plain'.")
    time_values = _times(times)
    event_values = _events(events, len(time_values))
    z = float(scipy_stats.norm.isf(alpha / 2.0))
    if event_values.sum() > 0:
        curve = SurvfuncRight(time_values, event_values)
        step_times = np.asarray(curve.surv_times, dtype=np.float64)
        survival = np.asarray(curve.surv_prob, dtype=np.float64)
        std_error = np.asarray(curve.surv_prob_se, dtype=np.float64)
        at_risk = np.asarray(curve.n_risk)
        step_events = np.asarray(curve.n_events)
    else:
        step_times = survival = std_error = np.empty(0)
        at_risk = step_events = np.empty(0, dtype=np.int64)
    low, high = _pointwise_interval(survival, std_error, z, conf_type)
    table = tuple(
        KaplanMeierStep(
            time=float(step_times[i]),
            at_risk=int(at_risk[i]),
            events=int(step_events[i]),
            survival=float(survival[i]),
            std_error=float(std_error[i]),
            ci_low=float(low[i]),
            ci_high=float(high[i]),
        )
        for i in range(len(step_times))
    )
    return KaplanMeierResult(
        n=len(time_values),
        events=int(event_values.sum()),
        alpha=alpha,
        conf_type=conf_type,
        table=table,
        censored_times=tuple(float(t) for t in np.sort(time_values[event_values == 0])),
        median=_first_crossing(step_times, survival),
        median_ci_low=_first_crossing(step_times, low),
        median_ci_high=_first_crossing(step_times, high),
        follow_up_times=tuple(float(t) for t in time_values),
    )


# --- log-rank -----------------------------------------------------------------------------------


def logrank(times: Sequence[float], events: Sequence[Any], groups: Sequence[Any]) -> TestResult:
    """The log-rank test that the survival curves of the groups are equal
    (statsmodels survdiff; as R's survdiff with rho = 0, Mantel 1966). The
    statistic is chi-square on (number of groups − 1) degrees of freedom."""
    time_values = _times(times)
    event_values = _events(events, len(time_values))
    group_values = list(groups)
    if len(group_values) != len(time_values):
        raise StatsInputError(f"groups has {len(group_values)} values but times has {len(time_values)}.")
    if any(g is None or (isinstance(g, float) and math.isnan(g)) for g in group_values):
        raise StatsInputError("groups contains missing values; remove those participants first.")
    try:
        codes_by_group: dict[Any, int] = {}
        codes = np.array([codes_by_group.setdefault(g, len(codes_by_group)) for g in group_values])
    except TypeError:
        raise StatsInputError("groups must hold labels such as arm names or codes.") from None
    if len(codes_by_group) < 2:
        raise StatsInputError("The log-rank test needs at least two groups.")
    if event_values.sum() == 0:
        raise StatsInputError("There are no events; the log-rank test needs at least one.")
    chi_square, p_value = survdiff(time_values, event_values, codes)
    return TestResult(float(chi_square), float(p_value))


# --- Cox proportional hazards -------------------------------------------------------------------


def cox_hazard_ratio(
    times: Sequence[float],
    events: Sequence[Any],
    covariate: Sequence[float],
    ties: Ties = "efron",
    alpha: float = DEFAULT_ALPHA,
) -> Estimate:
    """Hazard ratio per unit of `covariate` (for an arm coded 0/1: arm 1 vs 0)
    from a Cox proportional-hazards model (statsmodels PHReg, partial
    likelihood), with the Wald interval exp(β ± z·se) and Wald p-value;
    `Estimate.se` is the standard error of β = log HR.

    `ties`: "efron" (R's coxph default) or "breslow" (SAS PROC PHREG's and
    Stata's default). Raises StatsInputError when β is not estimable, e.g.
    when every event is in one group (monotone likelihood)."""
    alpha = check_alpha(alpha)
    if ties not in ("efron", "breslow"):
        raise StatsInputError(f"Unknown ties {ties!r}; choose 'efron' or 'breslow'.")
    time_values = _times(times)
    event_values = _events(events, len(time_values))
    try:
        covariate_values = np.asarray(covariate, dtype=np.float64)
    except (TypeError, ValueError):
        raise StatsInputError("covariate must hold numbers (code the arm 0/1).") from None
    if covariate_values.ndim != 1 or len(covariate_values) != len(time_values):
        raise StatsInputError(f"covariate must have one value per participant ({len(time_values)}).")
    if not np.all(np.isfinite(covariate_values)):
        raise StatsInputError("covariate contains missing or infinite values; remove those participants first.")
    if np.all(covariate_values == covariate_values[0]):
        raise StatsInputError("covariate is the same for every participant; the hazard ratio is not estimable.")
    if event_values.sum() == 0:
        raise StatsInputError("There are no events; the hazard ratio is not estimable.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            fit = PHReg(time_values, covariate_values[:, None], status=event_values, ties=ties).fit()
        except (ConvergenceWarning, np.linalg.LinAlgError):
            raise StatsInputError(
                "The hazard ratio is not estimable: the partial likelihood has no maximum (for example "
                "every event is in one group)."
            ) from None
    beta = float(np.asarray(fit.params)[0])
    se = float(np.asarray(fit.bse)[0])
    if not math.isfinite(se) or se <= 0.0 or abs(beta) > 50.0:
        raise StatsInputError("The hazard ratio is not estimable (its standard error diverges).")
    z = float(scipy_stats.norm.isf(alpha / 2.0))
    p_value = float(2.0 * scipy_stats.norm.sf(abs(beta) / se))
    return Estimate(math.exp(beta), math.exp(beta - z * se), math.exp(beta + z * se), se=se, p_value=p_value)
