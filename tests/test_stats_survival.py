"""analysis.stats.survival against R's survival package (the aml data and
Therneau & Grambsch's hand-worked examples) and, independently, lifelines;
plus properties every curve and test must have, and clear errors for bad
input. No database."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test, multivariate_logrank_test
from lifelines.utils import median_survival_times

from analysis.stats.core import Estimate, StatsInputError, TestResult
from analysis.stats.survival import KaplanMeierResult, cox_hazard_ratio, kaplan_meier, logrank

# R survival package, data set `aml` (Miller, Survival Analysis, 1981/1997): remission
# times in weeks of 23 patients with acute myelogenous leukaemia, by maintenance
# chemotherapy. with(aml, Surv(time, status)) prints
#   9 13 13+ 18 23 28+ 31 34 45+ 48 161+ | 5 5 8 8 12 16+ 23 27 30 33 43 45
# the first 11 Maintained, the last 12 Nonmaintained (+ = censored).
MAINTAINED_TIMES = [9, 13, 13, 18, 23, 28, 31, 34, 45, 48, 161]
MAINTAINED_EVENTS = [1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0]
NONMAINTAINED_TIMES = [5, 5, 8, 8, 12, 16, 23, 27, 30, 33, 43, 45]
NONMAINTAINED_EVENTS = [1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1]
AML_TIMES = MAINTAINED_TIMES + NONMAINTAINED_TIMES
AML_EVENTS = MAINTAINED_EVENTS + NONMAINTAINED_EVENTS
AML_NONMAINTAINED = [0] * 11 + [1] * 12  # coxph's x: "Nonmaintained" vs the reference "Maintained"

# summary(survfit(Surv(time, status) ~ x, data = aml)) — R's default conf.type = "log"
# (survival package, tests/doaml.Rout.save): time, n.risk, n.event, survival, std.err, lower, upper.
R_MAINTAINED = [
    (9, 11, 1, 0.909, 0.0867, 0.7541, 1.000),
    (13, 10, 1, 0.818, 0.1163, 0.6192, 1.000),
    (18, 8, 1, 0.716, 0.1397, 0.4884, 1.000),
    (23, 7, 1, 0.614, 0.1526, 0.3769, 0.999),
    (31, 5, 1, 0.491, 0.1642, 0.2549, 0.946),
    (34, 4, 1, 0.368, 0.1627, 0.1549, 0.875),
    (48, 2, 1, 0.184, 0.1535, 0.0359, 0.944),
]
R_NONMAINTAINED = [
    (5, 12, 2, 0.8333, 0.1076, 0.6470, 1.000),
    (8, 10, 2, 0.6667, 0.1361, 0.4468, 0.995),
    (12, 8, 1, 0.5833, 0.1423, 0.3616, 0.941),
    (23, 6, 1, 0.4861, 0.1481, 0.2675, 0.883),
    (27, 5, 1, 0.3889, 0.1470, 0.1854, 0.816),
    (30, 4, 1, 0.2917, 0.1387, 0.1148, 0.741),
    (33, 3, 1, 0.1944, 0.1219, 0.0569, 0.664),
    (43, 2, 1, 0.0972, 0.0919, 0.0153, 0.620),
]


def _half_unit(printed: float) -> float:
    """Half a unit in the last printed decimal of a number R printed."""
    text = f"{printed}"
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10.0 ** (-max(decimals, 3)) + 1e-9


# --- Kaplan–Meier -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "events", "published"),
    [(MAINTAINED_TIMES, MAINTAINED_EVENTS, R_MAINTAINED), (NONMAINTAINED_TIMES, NONMAINTAINED_EVENTS, R_NONMAINTAINED)],
)
def test_kaplan_meier_table_matches_r_survfit_for_aml(
    times: list[int], events: list[int], published: list[tuple[float, ...]]
) -> None:
    curve = kaplan_meier(times, events, conf_type="log")
    assert len(curve.table) >= len(published)
    for step, (time, at_risk, n_event, survival, std_error, low, high) in zip(curve.table, published, strict=False):
        assert (step.time, step.at_risk, step.events) == (time, at_risk, n_event)
        assert step.survival == pytest.approx(survival, abs=_half_unit(survival))
        assert step.std_error == pytest.approx(std_error, abs=5e-5 + 1e-9)
        assert step.ci_low == pytest.approx(low, abs=_half_unit(low))
        assert step.ci_high == pytest.approx(high, abs=_half_unit(high))


def test_the_interval_does_not_exist_once_survival_is_zero() -> None:
    # R: at week 45 the Nonmaintained curve reaches 0; std.err NaN and both limits NA.
    last = kaplan_meier(NONMAINTAINED_TIMES, NONMAINTAINED_EVENTS, conf_type="log").table[-1]
    assert (last.time, last.at_risk, last.events, last.survival) == (45, 1, 1, 0.0)
    assert math.isnan(last.std_error) and math.isnan(last.ci_low) and math.isnan(last.ci_high)


def test_medians_and_their_intervals_match_r_survfit_for_aml() -> None:
    # print(survfit(Surv(time, status) ~ x, data = aml)): median 0.95LCL 0.95UCL
    #   x=Maintained 31 18 NA; x=Nonmaintained 23 8 NA (R's default "log" bands).
    maintained = kaplan_meier(MAINTAINED_TIMES, MAINTAINED_EVENTS, conf_type="log")
    nonmaintained = kaplan_meier(NONMAINTAINED_TIMES, NONMAINTAINED_EVENTS, conf_type="log")
    assert (maintained.median, maintained.median_ci_low, maintained.median_ci_high) == (31.0, 18.0, None)
    assert (nonmaintained.median, nonmaintained.median_ci_low, nonmaintained.median_ci_high) == (23.0, 8.0, None)
    assert (maintained.n, maintained.events, nonmaintained.n, nonmaintained.events) == (11, 7, 12, 11)


@pytest.mark.parametrize(("times", "events"), [(MAINTAINED_TIMES, MAINTAINED_EVENTS), (AML_TIMES, AML_EVENTS)])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_log_log_interval_and_median_agree_with_lifelines(times: list[int], events: list[int], alpha: float) -> None:
    curve = kaplan_meier(times, events, alpha=alpha)  # "log-log" is the default
    assert curve.conf_type == "log-log"
    fitter = KaplanMeierFitter(alpha=alpha).fit(times, events)
    bands = fitter.confidence_interval_
    for step in curve.table:
        assert step.survival == pytest.approx(fitter.survival_function_.loc[step.time].iloc[0], abs=1e-12)
        if step.survival > 0:
            assert step.ci_low == pytest.approx(bands.loc[step.time].iloc[0], abs=1e-10)
            assert step.ci_high == pytest.approx(bands.loc[step.time].iloc[1], abs=1e-10)
    assert curve.median == pytest.approx(fitter.median_survival_time_)
    lifelines_interval = median_survival_times(bands).iloc[0].tolist()
    ours = [math.inf if limit is None else limit for limit in (curve.median_ci_low, curve.median_ci_high)]
    assert ours == pytest.approx(lifelines_interval)


def test_plain_interval_is_survival_plus_minus_z_standard_errors_cut_to_zero_one() -> None:
    curve = kaplan_meier(MAINTAINED_TIMES, MAINTAINED_EVENTS, conf_type="plain")
    for step in curve.table:
        assert step.ci_low == pytest.approx(max(0.0, step.survival - 1.959964 * step.std_error), abs=1e-6)
        assert step.ci_high == pytest.approx(min(1.0, step.survival + 1.959964 * step.std_error), abs=1e-6)


def test_a_smaller_alpha_widens_every_pointwise_interval() -> None:
    for conf_type in ("log-log", "log", "plain"):
        wide = kaplan_meier(AML_TIMES, AML_EVENTS, alpha=0.01, conf_type=conf_type)  # type: ignore[arg-type]
        narrow = kaplan_meier(AML_TIMES, AML_EVENTS, alpha=0.2, conf_type=conf_type)  # type: ignore[arg-type]
        for w, n in zip(wide.table, narrow.table, strict=True):
            if w.survival > 0:
                assert w.ci_low <= n.ci_low <= w.survival <= n.ci_high <= w.ci_high
                assert (w.ci_low, w.ci_high) != (n.ci_low, n.ci_high)


def test_survival_at_reads_the_step_function() -> None:
    curve = kaplan_meier(MAINTAINED_TIMES, MAINTAINED_EVENTS)
    assert curve.survival_at(0) == 1.0
    assert curve.survival_at(8.99) == 1.0
    assert curve.survival_at(9) == pytest.approx(10 / 11)  # right-continuous: the event at 9 counts
    assert curve.survival_at(20) == pytest.approx(0.716, abs=5e-4)  # S(18), until the next event at 23
    assert curve.survival_at(30) == pytest.approx(0.614, abs=5e-4)  # S(23), constant until 31
    assert curve.survival_at(30) == curve.survival_at(23)
    assert curve.survival_at(161) == pytest.approx(0.184, abs=5e-4)  # last follow-up: still known
    assert math.isnan(curve.survival_at(200))  # beyond the longest follow-up: unknown
    ended = kaplan_meier(NONMAINTAINED_TIMES, NONMAINTAINED_EVENTS)
    assert ended.survival_at(1000) == 0.0  # the curve reached 0 at week 45
    with pytest.raises(StatsInputError, match="finite"):
        curve.survival_at(math.nan)


def test_at_risk_counts_follow_up_at_or_beyond_each_time() -> None:
    curve = kaplan_meier(MAINTAINED_TIMES, MAINTAINED_EVENTS)
    # Times ≥ t among 9 13 13 18 23 28 31 34 45 48 161; R: summary(fit, times = c(0, 10, ...))$n.risk.
    assert curve.at_risk([0, 9, 10, 13, 20, 30, 40, 50, 161, 200]) == [11, 11, 10, 10, 7, 5, 3, 1, 1, 0]
    for step in curve.table:
        assert curve.at_risk([step.time]) == [step.at_risk]
    assert curve.censored_times == (13.0, 28.0, 45.0, 161.0)


@pytest.mark.parametrize("times", [[3.0, 1.0, 4.0, 2.0], [5.0, 1.0, 3.0], [2.0, 2.0, 7.0, 9.0, 11.0, 30.0]])
def test_without_censoring_the_median_is_the_sample_median(times: list[float]) -> None:
    # With no censoring the curve is the empirical survival function; where it sits at
    # exactly 0.5 the midpoint of the flat stretch is taken, as R's quantile.survfit.
    curve = kaplan_meier(times, [1] * len(times))
    assert curve.median == pytest.approx(float(np.median(times)))
    assert curve.table[-1].survival == 0.0


def test_a_curve_without_events_stays_at_one() -> None:
    curve = kaplan_meier([3, 5, 8], [0, 0, 0])
    assert curve.table == () and curve.events == 0
    assert curve.median is None and curve.median_ci_low is None and curve.median_ci_high is None
    assert curve.survival_at(8) == 1.0
    assert curve.at_risk([0, 4, 9]) == [3, 2, 0]


def test_kaplan_meier_result_is_the_public_type() -> None:
    assert isinstance(kaplan_meier(AML_TIMES, AML_EVENTS), KaplanMeierResult)


@pytest.mark.parametrize(
    ("times", "events", "kwargs", "message"),
    [
        ([], [], {}, "times is empty"),
        ([1, 2, -3], [1, 0, 1], {}, "must not be negative"),
        ([1, 2, float("nan")], [1, 0, 1], {}, "missing or infinite"),
        ([1, 2, 3], [1, 0], {}, "events has 2 values but times has 3"),
        ([1, 2, 3], [1, 0, 2], {}, "events must be coded 1"),
        ([[1, 2], [3, 4]], [[1, 0], [1, 0]], {}, "one-dimensional"),
        (["a", "b"], [1, 0], {}, "must hold numbers"),
        ([1, 2, 3], [1, 0, 1], {"conf_type": "arcsine"}, "Unknown conf_type"),
        ([1, 2, 3], [1, 0, 1], {"alpha": 0}, "alpha"),
    ],
)
def test_kaplan_meier_rejects_bad_input(times: object, events: object, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        kaplan_meier(times, events, **kwargs)  # type: ignore[arg-type]


# --- log-rank -----------------------------------------------------------------------------------


def test_logrank_matches_r_survdiff_for_aml() -> None:
    # survdiff(Surv(time, status) ~ x, data = aml): Chisq = 3.4 on 1 degrees of freedom,
    # p = 0.0653 (survival package, tests/doaml.Rout.save).
    result = logrank(AML_TIMES, AML_EVENTS, ["Maintained"] * 11 + ["Nonmaintained"] * 12)
    assert isinstance(result, TestResult)
    assert result.statistic == pytest.approx(3.4, abs=0.05)
    assert result.p_value == pytest.approx(0.0653, abs=5e-5)
    independent = logrank_test(MAINTAINED_TIMES, NONMAINTAINED_TIMES, MAINTAINED_EVENTS, NONMAINTAINED_EVENTS)
    assert result.statistic == pytest.approx(independent.test_statistic, rel=1e-10)
    assert result.p_value == pytest.approx(independent.p_value, rel=1e-10)


def test_logrank_with_three_groups_agrees_with_lifelines() -> None:
    rng = np.random.default_rng(7)
    groups = np.repeat(["A", "B", "C"], 40)
    scale = np.select([groups == "A", groups == "B"], [10.0, 14.0], 20.0)
    event_times = np.round(rng.exponential(scale), 1)
    censor_times = np.round(rng.uniform(5, 40, size=120), 1)
    times = np.minimum(event_times, censor_times)
    events = (event_times <= censor_times).astype(int)
    ours = logrank(times.tolist(), events.tolist(), groups.tolist())
    independent = multivariate_logrank_test(times, groups, events)
    assert ours.statistic == pytest.approx(independent.test_statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(independent.p_value, rel=1e-9)
    assert independent.degrees_of_freedom == 2


def test_logrank_does_not_depend_on_group_labels_or_order() -> None:
    forward = logrank(AML_TIMES, AML_EVENTS, [1] * 11 + [2] * 12)
    relabelled = logrank(AML_TIMES[::-1], AML_EVENTS[::-1], (["b"] * 12 + ["a"] * 11))
    assert relabelled.statistic == pytest.approx(forward.statistic, rel=1e-12)
    identical = logrank(MAINTAINED_TIMES * 2, MAINTAINED_EVENTS * 2, [0] * 11 + [1] * 11)
    assert identical.statistic == pytest.approx(0.0, abs=1e-12) and identical.p_value == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("times", "events", "groups", "message"),
    [
        ([1, 2, 3], [1, 0, 1], [0, 0, 0], "at least two groups"),
        ([1, 2, 3], [0, 0, 0], [0, 1, 1], "no events"),
        ([1, 2, 3], [1, 0, 1], [0, 1], "groups has 2 values"),
        ([1, 2, 3], [1, 0, 1], [0, None, 1], "groups contains missing"),
    ],
)
def test_logrank_rejects_bad_input(times: list[int], events: list[int], groups: list[object], message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        logrank(times, events, groups)


# --- Cox proportional hazards -------------------------------------------------------------------


def test_cox_efron_matches_r_coxph_for_aml() -> None:
    # coxph(Surv(time, status) ~ x, data = aml):
    #   xNonmaintained coef 0.9155, exp(coef) 2.4981, se(coef) 0.5119, z 1.788, p 0.0737.
    estimate = cox_hazard_ratio(AML_TIMES, AML_EVENTS, AML_NONMAINTAINED)
    assert isinstance(estimate, Estimate)
    assert math.log(estimate.value) == pytest.approx(0.9155, abs=5e-5)
    assert estimate.value == pytest.approx(2.4981, abs=5e-5)
    assert estimate.se == pytest.approx(0.5119, abs=5e-5)
    assert estimate.p_value == pytest.approx(0.0737, abs=5e-5)
    assert math.log(estimate.ci_high / estimate.value) == pytest.approx(1.959964 * 0.5119, abs=1e-3)


def test_cox_breslow_matches_r_coxph_for_aml() -> None:
    # coxph(Surv(aml$time, aml$status) ~ aml$x, method = "breslow"): coef 0.904, exp(coef) 2.47,
    # se(coef) 0.512, p 0.078 (survival package, tests/doaml.Rout.save; "these results can be found in Miller").
    estimate = cox_hazard_ratio(AML_TIMES, AML_EVENTS, AML_NONMAINTAINED, ties="breslow")
    assert math.log(estimate.value) == pytest.approx(0.904, abs=5e-4)
    assert estimate.value == pytest.approx(2.47, abs=5e-3)
    assert estimate.se == pytest.approx(0.512, abs=5e-4)
    assert estimate.p_value == pytest.approx(0.078, abs=5e-4)


# Therneau & Grambsch, Modeling Survival Data (2000), Appendix E, data set 1 (also the survival
# package's tests/book1.R and book2.R): time 1 1 6 6 8 9, status 1 0 1 1 0 1, x 1 1 1 0 0 0.
BOOK_TIMES = [9, 1, 1, 6, 6, 8]
BOOK_EVENTS = [1, 1, 0, 1, 1, 0]
BOOK_X = [0, 1, 1, 1, 0, 0]


def test_cox_breslow_matches_the_closed_form_of_therneau_and_grambsch() -> None:
    # Breslow: the score (6 + 3r − r²) / ((r + 1)(r + 3)) = 0 gives r = e^β = (3 + √33) / 2,
    # β = 1.4752849; information r/(r+1)² + 6r/(r+3)².
    r = (3 + math.sqrt(33)) / 2
    estimate = cox_hazard_ratio(BOOK_TIMES, BOOK_EVENTS, BOOK_X, ties="breslow")
    assert math.log(estimate.value) == pytest.approx(1.4752849, abs=1e-6)
    assert estimate.value == pytest.approx(r, rel=1e-6)
    assert estimate.se == pytest.approx((r / (r + 1) ** 2 + 6 * r / (r + 3) ** 2) ** -0.5, rel=1e-5)


def test_cox_efron_matches_the_closed_form_of_therneau_and_grambsch() -> None:
    # Efron: score (30 + 23r − r³) / ((r+1)(r+3)(r+5)) = 0, β = 1.676857; information
    # Σ p(1 − p) over p = r/(r+1), r/(r+5), r/(r+3).
    estimate = cox_hazard_ratio(BOOK_TIMES, BOOK_EVENTS, BOOK_X, ties="efron")
    beta = math.log(estimate.value)
    assert beta == pytest.approx(1.676857, abs=1e-6)
    r = estimate.value
    assert 30 + 23 * r - r**3 == pytest.approx(0.0, abs=1e-4)
    information = sum(p * (1 - p) for p in (r / (r + 1), r / (r + 5), r / (r + 3)))
    assert estimate.se == pytest.approx(information**-0.5, rel=1e-5)


def test_cox_efron_agrees_with_lifelines() -> None:
    frame = pd.DataFrame({"time": AML_TIMES, "status": AML_EVENTS, "x": AML_NONMAINTAINED})
    fitter = CoxPHFitter().fit(frame, duration_col="time", event_col="status")
    estimate = cox_hazard_ratio(AML_TIMES, AML_EVENTS, AML_NONMAINTAINED, alpha=0.1)
    # lifelines stops its Newton steps at a looser tolerance: agreement to about 1e-6.
    assert math.log(estimate.value) == pytest.approx(fitter.params_["x"], abs=5e-6)
    assert estimate.se == pytest.approx(fitter.standard_errors_["x"], rel=1e-5)
    assert estimate.p_value == pytest.approx(fitter.summary.loc["x", "p"], rel=1e-5)


def test_reversing_the_covariate_inverts_the_hazard_ratio() -> None:
    forward = cox_hazard_ratio(AML_TIMES, AML_EVENTS, AML_NONMAINTAINED)
    backward = cox_hazard_ratio(AML_TIMES, AML_EVENTS, [1 - x for x in AML_NONMAINTAINED])
    assert backward.value == pytest.approx(1 / forward.value, rel=1e-8)
    assert (backward.ci_low, backward.ci_high) == pytest.approx((1 / forward.ci_high, 1 / forward.ci_low), rel=1e-8)
    assert backward.p_value == pytest.approx(forward.p_value, rel=1e-8)
    wider = cox_hazard_ratio(AML_TIMES, AML_EVENTS, AML_NONMAINTAINED, alpha=0.01)
    assert wider.ci_low < forward.ci_low and wider.ci_high > forward.ci_high


def test_cox_refuses_a_hazard_ratio_that_is_not_estimable() -> None:
    # Every event in the group with x = 1: the partial likelihood increases without bound.
    with pytest.raises(StatsInputError, match="not estimable"):
        cox_hazard_ratio([1, 2, 3, 4, 5, 6], [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0])


@pytest.mark.parametrize(
    ("covariate", "events", "kwargs", "message"),
    [
        ([1, 1, 1, 1], [1, 0, 1, 1], {}, "same for every participant"),
        ([0, 1, 0, 1], [0, 0, 0, 0], {}, "no events"),
        ([0, 1, 0], [1, 0, 1, 1], {}, "one value per participant"),
        ([0, 1, None, 1], [1, 0, 1, 1], {}, "missing or infinite"),
        (["a", "b", "a", "b"], [1, 0, 1, 1], {}, "must hold numbers"),
        ([0, 1, 0, 1], [1, 0, 1, 1], {"ties": "exact"}, "Unknown ties"),
    ],
)
def test_cox_rejects_bad_input(
    covariate: list[object], events: list[int], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(StatsInputError, match=message):
        cox_hazard_ratio([3, 5, 7, 9], events, covariate, **kwargs)  # type: ignore[arg-type]


def test_logrank_needs_labels_and_at_risk_needs_a_list() -> None:
    with pytest.raises(StatsInputError, match="groups must hold labels"):
        logrank([1, 2, 3], [1, 0, 1], [[0], [1], [1]])
    with pytest.raises(StatsInputError, match="list of times"):
        kaplan_meier(AML_TIMES, AML_EVENTS).at_risk(10)  # type: ignore[arg-type]
