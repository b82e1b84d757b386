"""analysis.stats.accuracy against published values: pROC's own test values on the aSAH
data (AUC, DeLong variance and CI, DeLong test), Newcombe's (1998) table of binomial
intervals, R's binom.test and mcnemar.test outputs, and Altman & Bland's (1994) liver
scan example; plus a brute-force DeLong check, edge cases and bad input."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from analysis.stats.accuracy import (
    DelongResult,
    DiagnosticAccuracy,
    delong_test,
    diagnostic_accuracy,
    mcnemar,
    proportion_ci,
    roc_auc,
)
from analysis.stats.core import Estimate, StatsInputError, TestResult
from tests.reference_data import ENVIRONMENT_VARIABLE, reference_dir

REFERENCE_DIR = reference_dir()


# --- the aSAH reference data (pROC) -------------------------------------------------------------


@pytest.fixture(scope="module")
def asah() -> dict[str, np.ndarray]:
    path = REFERENCE_DIR / "aSAH.csv"
    if not path.is_file():
        pytest.fail(
            f"Reference data {path} is missing; the pROC checks cannot run without it "
            f"(set {ENVIRONMENT_VARIABLE} to the folder holding aSAH.csv).",
            pytrace=False,
        )
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 113, f"aSAH.csv should hold pROC's 113 patients, found {len(rows)}"
    columns = {
        # pROC's convention for these tests: outcome "Poor" is the positive class.
        "poor": np.array([row["outcome"] == "Poor" for row in rows]),
        "gender": np.array([row["gender"] for row in rows]),
    }
    for marker in ("wfns", "s100b", "ndka"):
        columns[marker] = np.array([float(row[marker]) for row in rows])
    assert int(columns["poor"].sum()) == 41
    return columns


# Values from pROC's test suite (tests/testthat/test-auc.R, test-var.R, test-ci.auc.R,
# test-roc.test.R), r.<marker> <- roc(aSAH$outcome, aSAH$<marker>), and the reference README.
PROC_AUC = {"wfns": 0.823678861788618, "ndka": 0.611957994579946, "s100b": 0.731368563685637}
PROC_DELONG_VARIANCE = {"wfns": 0.00146991470882363, "ndka": 0.0031908105493913, "s100b": 0.00266868245717244}


@pytest.mark.parametrize("marker", ["wfns", "ndka", "s100b"])
def test_it_matches_proc_auc_and_delong_variance_on_asah(asah, marker):
    result = roc_auc(asah["poor"], asah[marker])
    assert isinstance(result, Estimate)
    assert result.value == pytest.approx(PROC_AUC[marker], abs=1e-12)
    assert result.se is not None
    assert result.se**2 == pytest.approx(PROC_DELONG_VARIANCE[marker], rel=1e-10)
    assert result.p_value is None


def test_it_matches_proc_ci_auc_delong_for_ndka(asah):
    # pROC test-ci.auc.R: ci.auc(r.ndka) = c(0.501244999271703, 0.611957994579946, 0.722670989888189).
    result = roc_auc(asah["poor"], asah["ndka"])
    assert (result.ci_low, result.value, result.ci_high) == pytest.approx(
        (0.501244999271703, 0.611957994579946, 0.722670989888189), abs=1e-12
    )


def test_it_matches_proc_ci_auc_on_a_subset(asah):
    # pROC test-ci.auc.R: ci.auc(outcome ~ ndka, data = aSAH, subset = (gender == "Female"))
    # = c(0.5261398281, 0.6671428571, 0.8081458862).
    female = asah["gender"] == "Female"
    result = roc_auc(asah["poor"][female], asah["ndka"][female])
    assert (result.ci_low, result.value, result.ci_high) == pytest.approx(
        (0.5261398281, 0.6671428571, 0.8081458862), abs=1e-9
    )


def test_it_matches_proc_auc_ci_for_wfns_and_alpha_changes_the_width(asah):
    # 95 %: AUC ± 1.959964·sqrt(0.00146991470882363), pROC's ci.auc(r.wfns) = 0.7485–0.8988.
    result = roc_auc(asah["poor"], asah["wfns"])
    half_width = scipy_stats.norm.ppf(0.975) * math.sqrt(PROC_DELONG_VARIANCE["wfns"])
    assert result.ci_low == pytest.approx(PROC_AUC["wfns"] - half_width, abs=1e-12)
    assert result.ci_high == pytest.approx(PROC_AUC["wfns"] + half_width, abs=1e-12)
    assert round(result.ci_low, 4) == 0.7485 and round(result.ci_high, 4) == 0.8988
    wide = roc_auc(asah["poor"], asah["wfns"], alpha=0.01)
    narrow = roc_auc(asah["poor"], asah["wfns"], alpha=0.2)
    assert wide.ci_low < result.ci_low < narrow.ci_low < result.value
    assert wide.ci_high > result.ci_high > narrow.ci_high > result.value
    assert wide.se == result.se == narrow.se


# pROC test-roc.test.R: roc.test(r.a, r.b) — Z, p and the 95 % interval of AUC(a) − AUC(b).
PROC_DELONG_TESTS = [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
]


@pytest.mark.parametrize(("a", "b", "z", "p", "low", "high"), PROC_DELONG_TESTS)
def test_it_matches_proc_delong_test_on_asah(asah, a, b, z, p, low, high):
    result = delong_test(asah["poor"], asah[a], asah[b])
    assert isinstance(result, TestResult)
    assert isinstance(result, DelongResult)
    assert result.statistic == pytest.approx(z, abs=1e-10)
    assert result.p_value == pytest.approx(p, abs=1e-12)
    difference = result.difference
    assert difference.value == pytest.approx(PROC_AUC[a] - PROC_AUC[b], abs=1e-12)
    assert (difference.ci_low, difference.ci_high) == pytest.approx((low, high), abs=1e-10)
    assert difference.p_value == result.p_value
    assert difference.se == pytest.approx(difference.value / z, rel=1e-12)


def test_it_gives_the_opposite_z_and_the_same_p_when_the_scores_are_swapped(asah):
    # pROC test-roc.test.R: "two.sided roc.test produces identical p values when roc curves are reversed".
    forward = delong_test(asah["poor"], asah["wfns"], asah["s100b"])
    backward = delong_test(asah["poor"], asah["s100b"], asah["wfns"])
    assert backward.statistic == pytest.approx(-forward.statistic, abs=1e-12)
    assert backward.p_value == pytest.approx(forward.p_value, abs=1e-12)
    assert backward.difference.ci_low == pytest.approx(-forward.difference.ci_high, abs=1e-12)


def test_it_matches_the_delong_covariance_of_proc(asah):
    # pROC test-cov.R: cov(r.s100b, r.wfns) = 0.00119615567376754, so var(wfns − s100b) =
    # var(wfns) + var(s100b) − 2·cov.
    result = delong_test(asah["poor"], asah["wfns"], asah["s100b"])
    assert result.difference.se is not None
    expected = PROC_DELONG_VARIANCE["wfns"] + PROC_DELONG_VARIANCE["s100b"] - 2 * 0.00119615567376754
    assert result.difference.se**2 == pytest.approx(expected, rel=1e-10)


def test_identical_scores_give_z_zero_and_p_one(asah):
    # pROC test-roc.test.R: roc.test(r.wfns, r.wfns) has Z = 0 and p = 1. A monotone
    # transformation ranks every subject the same way, so it is the same ROC curve.
    same = delong_test(asah["poor"], asah["wfns"], asah["wfns"])
    transformed = delong_test(asah["poor"], asah["s100b"], np.log(asah["s100b"]))
    for result in (same, transformed):
        assert (result.statistic, result.p_value) == (0.0, 1.0)
        assert result.difference.value == 0.0 and result.difference.se == 0.0


def test_delong_result_as_dict_carries_the_difference(asah):
    result = delong_test(asah["poor"], asah["wfns"], asah["s100b"])
    values = result.as_dict()
    assert values["statistic"] == result.statistic and values["p_value"] == result.p_value
    assert values["difference"] == result.difference.value
    assert values["difference_ci_low"] == result.difference.ci_low
    assert values["difference_se"] == result.difference.se


# --- DeLong against its definition --------------------------------------------------------------


def _delong_by_definition(truth, scores_a, scores_b):
    """O(m·n) DeLong (1988): kernel ψ(x, y) = 1 if x > y, ½ if x = y, 0 otherwise;
    V10(x_i) = mean_j ψ(x_i, y_j), V01(y_j) = mean_i ψ(x_i, y_j); S = S10/m + S01/n."""
    truth = np.asarray(truth, dtype=bool)
    components = []
    for scores in (scores_a, scores_b):
        x = np.asarray(scores, dtype=float)[truth][:, None]
        y = np.asarray(scores, dtype=float)[~truth][None, :]
        kernel = (x > y) + 0.5 * (x == y)
        components.append((kernel.mean(), kernel.mean(axis=1), kernel.mean(axis=0)))
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = components
    m, n = len(v10_a), len(v01_a)
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    covariance = s10 / m + s01 / n
    contrast = np.array([1.0, -1.0])
    return auc_a, auc_b, covariance, float(contrast @ covariance @ contrast)


@pytest.mark.parametrize("seed", range(6))
def test_fast_delong_equals_the_definition_with_ties(seed):
    # Integer-valued scores (rating scales, like WFNS) make many ties, the case midranks must get right.
    rng = np.random.default_rng(seed)
    size = int(rng.integers(8, 60))
    truth = rng.random(size) < 0.4
    truth[:2], truth[2:4] = True, False
    scores_a = rng.integers(0, 6, size) + truth * rng.integers(0, 3, size)
    scores_b = np.round(rng.normal(truth * 0.8, 1.0, size), 1)
    auc_a, auc_b, covariance, difference_variance = _delong_by_definition(truth, scores_a, scores_b)

    result_a = roc_auc(truth, scores_a)
    result_b = roc_auc(truth, scores_b)
    assert result_a.value == pytest.approx(auc_a, abs=1e-12)
    assert result_b.value == pytest.approx(auc_b, abs=1e-12)
    assert result_a.se is not None and result_b.se is not None
    assert result_a.se**2 == pytest.approx(covariance[0, 0], rel=1e-9, abs=1e-15)
    assert result_b.se**2 == pytest.approx(covariance[1, 1], rel=1e-9, abs=1e-15)
    # The AUC is the Mann–Whitney U of the positives over m·n.
    u = scipy_stats.mannwhitneyu(scores_a[truth], scores_a[~truth]).statistic
    assert result_a.value == pytest.approx(u / (truth.sum() * (~truth).sum()), abs=1e-12)

    test = delong_test(truth, scores_a, scores_b)
    assert test.difference.se is not None
    assert test.difference.se**2 == pytest.approx(difference_variance, rel=1e-9)
    assert test.statistic == pytest.approx((auc_a - auc_b) / math.sqrt(difference_variance), rel=1e-9)


def test_auc_properties_perfect_reversed_and_uninformative():
    truth = [0, 0, 0, 1, 1, 1]
    perfect = roc_auc(truth, [1, 2, 3, 4, 5, 6])
    assert (perfect.value, perfect.se, perfect.ci_low, perfect.ci_high) == (1.0, 0.0, 1.0, 1.0)
    # Not flipped: a score that points the wrong way has AUC 0.
    reversed_ = roc_auc(truth, [6, 5, 4, 3, 2, 1])
    assert (reversed_.value, reversed_.ci_low, reversed_.ci_high) == (0.0, 0.0, 0.0)
    constant = roc_auc(truth, [7, 7, 7, 7, 7, 7])
    assert constant.value == 0.5 and constant.se == 0.0
    # Booleans and 0/1 integers are the same truth; the CI never leaves [0, 1].
    near_perfect = roc_auc([False, False, False, True, True, True], [1, 2, 4, 3, 5, 6])
    assert near_perfect.value == pytest.approx(8 / 9)
    assert 0.0 <= near_perfect.ci_low <= near_perfect.value <= near_perfect.ci_high == 1.0


def test_delong_refuses_a_zero_variance_with_different_aucs():
    truth = [0, 0, 0, 1, 1, 1]
    with pytest.raises(StatsInputError, match="variance of the AUC difference is zero"):
        delong_test(truth, [1, 2, 3, 4, 5, 6], [7, 7, 7, 7, 7, 7])


@pytest.mark.parametrize(
    ("truth", "scores", "message"),
    [
        ([0, 1, 1, 0], [0.1, 0.2, 0.3], "same subjects: truth has 4, scores has 3"),
        ([0, 1, 2, 0], [0.1, 0.2, 0.3, 0.4], r"0/1 or False/True \(found \[2.0\]\)"),
        (["Good", "Poor", "Poor", "Good"], [0.1, 0.2, 0.3, 0.4], "must hold numbers"),
        ([0, 1, 1, 0], [0.1, float("nan"), 0.3, 0.4], "missing or infinite"),
        ([0, 1, 1, 0], [0.1, None, 0.3, 0.4], "must hold numbers"),
        ([], [], "truth is empty"),
        ([[0, 1], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], "one-dimensional"),
        ([0, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], "at least two positive and two negative subjects"),
        ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], r"\(got 4 positive, 0 negative\)"),
    ],
)
def test_roc_auc_rejects_bad_input(truth, scores, message):
    with pytest.raises(StatsInputError, match=message):
        roc_auc(truth, scores)


def test_delong_test_rejects_bad_input():
    truth = [0, 0, 1, 1, 0]
    with pytest.raises(StatsInputError, match="scores_b has 4"):
        delong_test(truth, [1, 2, 3, 4, 5], [1, 2, 3, 4])
    with pytest.raises(StatsInputError, match="alpha must lie strictly between 0 and 1"):
        delong_test(truth, [1, 2, 3, 4, 5], [5, 4, 3, 2, 1], alpha=1.5)
    with pytest.raises(StatsInputError, match="alpha"):
        roc_auc(truth, [1, 2, 3, 4, 5], alpha=0)


# --- binomial intervals ------------------------------------------------------------------------

# Newcombe RG. Two-sided confidence intervals for the single proportion: comparison of seven
# methods. Stat Med 1998;17:857–872, Table I: method 3 (Wilson score, no continuity
# correction) and method 5 (Clopper–Pearson "exact"), 95 %, published to 4 decimals.
NEWCOMBE_TABLE_I = [
    (81, 263, (0.2553, 0.3662), (0.2527, 0.3676)),
    (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
    (0, 20, (0.0, 0.1611), (0.0, 0.1684)),
    (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
]


@pytest.mark.parametrize(("successes", "n", "wilson", "exact"), NEWCOMBE_TABLE_I)
def test_it_matches_newcombe_table_i(successes, n, wilson, exact):
    assert proportion_ci(successes, n) == pytest.approx(wilson, abs=5e-5)
    assert proportion_ci(successes, n, method="wilson") == pytest.approx(wilson, abs=5e-5)
    assert proportion_ci(successes, n, method="exact") == pytest.approx(exact, abs=5e-5)


def test_exact_matches_r_binom_test():
    # R documentation example for binom.test (Mendel's peas): binom.test(c(682, 243), p = 3/4)
    # prints "95 percent confidence interval: 0.7076683 0.7654066".
    assert proportion_ci(682, 925, method="exact") == pytest.approx((0.7076683, 0.7654066), abs=5e-8)


@pytest.mark.parametrize("method", ["wilson", "exact"])
def test_proportion_ci_properties(method):
    # The interval holds the estimate, and narrows as alpha grows.
    widths = []
    for alpha in (0.01, 0.05, 0.2):
        low, high = proportion_ci(7, 20, method=method, alpha=alpha)
        assert low < 7 / 20 < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # Successes and failures are symmetric: CI(x, n) mirrors CI(n − x, n).
    low, high = proportion_ci(3, 17, method=method)
    mirrored_low, mirrored_high = proportion_ci(14, 17, method=method)
    assert (low, high) == pytest.approx((1 - mirrored_high, 1 - mirrored_low), abs=1e-12)
    # No events and all events: the interval reaches the boundary exactly.
    assert proportion_ci(0, 12, method=method)[0] == 0.0
    assert proportion_ci(12, 12, method=method)[1] == 1.0
    # numpy integers and integral floats (e.g. from pandas sums) are accepted.
    assert proportion_ci(np.int64(3), 17.0, method=method) == (low, high)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"successes": 1, "n": 0}, "n must be at least 1"),
        ({"successes": 5, "n": 4}, r"successes \(5\) cannot exceed n \(4\)"),
        ({"successes": -1, "n": 4}, "successes must not be negative"),
        ({"successes": 2.5, "n": 4}, "successes must be a whole number"),
        ({"successes": "2", "n": 4}, "successes must be a whole number"),
        ({"successes": True, "n": 4}, "successes must be a whole number"),
        ({"successes": 2, "n": float("nan")}, "n must be a whole number"),
        ({"successes": 2, "n": 4, "method": "wald"}, r"Unknown method 'wald'; use one of \['exact', 'wilson'\]"),
        ({"successes": 2, "n": 4, "alpha": 0.0}, "alpha must lie strictly between 0 and 1"),
    ],
)
def test_proportion_ci_rejects_bad_input(arguments, message):
    with pytest.raises(StatsInputError, match=message):
        proportion_ci(**arguments)


# --- sensitivity, specificity, predictive values ------------------------------------------------


def _subjects(tp: int, fp: int, fn: int, tn: int) -> tuple[list[int], list[int]]:
    truth = [1] * tp + [0] * fp + [1] * fn + [0] * tn
    predicted = [1] * tp + [1] * fp + [0] * fn + [0] * tn
    return truth, predicted


def test_it_matches_altman_and_bland_liver_scan_example():
    # Altman DG, Bland JM. Diagnostic tests 1: sensitivity and specificity. BMJ 1994;308:1552
    # and Diagnostic tests 2: predictive values. BMJ 1994;309:102. Liver scan against
    # pathology in 344 patients: 231 TP, 32 FP, 27 FN, 54 TN; sensitivity 0.895,
    # specificity 0.628, PPV 0.878, NPV 0.667 (published to 3 decimals).
    truth, predicted = _subjects(231, 32, 27, 54)
    result = diagnostic_accuracy(truth, predicted)
    assert isinstance(result, DiagnosticAccuracy)
    assert (result.tp, result.fp, result.fn, result.tn, result.n) == (231, 32, 27, 54, 344)
    published = {"sensitivity": 0.895, "specificity": 0.628, "ppv": 0.878, "npv": 0.667}
    denominators = {"sensitivity": (231, 258), "specificity": (54, 86), "ppv": (231, 263), "npv": (54, 81)}
    for name, value in published.items():
        estimate = getattr(result, name)
        assert isinstance(estimate, Estimate)
        assert round(estimate.value, 3) == value
        successes, n = denominators[name]
        assert estimate.value == successes / n
        assert (estimate.ci_low, estimate.ci_high) == proportion_ci(successes, n, method="wilson")
        assert estimate.se is None and estimate.p_value is None
    exact = diagnostic_accuracy(truth, predicted, method="exact")
    assert exact.sensitivity is not None
    assert (exact.sensitivity.ci_low, exact.sensitivity.ci_high) == proportion_ci(231, 258, method="exact")


def test_diagnostic_accuracy_follows_newcombe_intervals_and_alpha():
    # 81 of 263 diseased detected: the sensitivity interval is Newcombe's Table I row 1.
    truth, predicted = _subjects(81, 10, 182, 40)
    result = diagnostic_accuracy(truth, predicted)
    assert result.sensitivity is not None
    assert (result.sensitivity.ci_low, result.sensitivity.ci_high) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    wide = diagnostic_accuracy(truth, predicted, alpha=0.01)
    assert wide.sensitivity is not None
    assert wide.sensitivity.ci_low < result.sensitivity.ci_low
    assert wide.sensitivity.ci_high > result.sensitivity.ci_high


def test_undefined_proportions_are_none():
    # No diseased subjects: sensitivity and PPV (no positive calls either) are undefined.
    result = diagnostic_accuracy([0, 0, 0, 0], [0, 0, 0, 0])
    assert (result.tp, result.fp, result.fn, result.tn) == (0, 0, 0, 4)
    assert result.sensitivity is None and result.ppv is None
    assert result.specificity is not None and result.specificity.value == 1.0
    assert result.npv is not None and result.npv.ci_high == 1.0
    # Everything called positive: NPV undefined, the rest defined.
    everyone_positive = diagnostic_accuracy([True, False, True], [True, True, True])
    assert everyone_positive.npv is None
    assert everyone_positive.specificity is not None and everyone_positive.specificity.value == 0.0
    assert everyone_positive.specificity.ci_low == 0.0


def test_perfect_test_has_all_four_at_one():
    truth, predicted = _subjects(12, 0, 0, 30)
    result = diagnostic_accuracy(truth, predicted)
    for estimate in (result.sensitivity, result.specificity, result.ppv, result.npv):
        assert estimate is not None and estimate.value == 1.0 and estimate.ci_high == 1.0 and estimate.ci_low < 1.0


@pytest.mark.parametrize(
    ("truth", "predicted", "arguments", "message"),
    [
        ([0, 1, 1], [0, 1], {}, "truth has 3, predicted has 2"),
        ([0, 1, 1], [0, 1, 3], {}, "predicted must be 0/1"),
        ([], [], {}, "truth is empty"),
        ([0, 1], [0, float("nan")], {}, "predicted contains missing or infinite values"),
        ([0, 1], [0, 1], {"method": "jeffreys"}, "Unknown method 'jeffreys'"),
        ([0, 1], [0, 1], {"alpha": 5}, "alpha must lie strictly between 0 and 1"),
    ],
)
def test_diagnostic_accuracy_rejects_bad_input(truth, predicted, arguments, message):
    with pytest.raises(StatsInputError, match=message):
        diagnostic_accuracy(truth, predicted, **arguments)


# --- McNemar ------------------------------------------------------------------------------------

# Agresti (1990), p. 350, the example of R's mcnemar.test documentation: presidential approval
# of 1600 voters in two surveys a month apart, matrix(c(794, 86, 150, 570), nrow = 2) in R,
# i.e. rows = first survey (approve, disapprove), columns = second survey.
PRESIDENTIAL_APPROVAL = [[794, 150], [86, 570]]


def test_it_matches_r_mcnemar_test_on_agresti_presidential_approval():
    # R: mcnemar.test(Performance) → McNemar's chi-squared = 16.818, df = 1, p-value = 4.115e-05.
    corrected = mcnemar(PRESIDENTIAL_APPROVAL, correction=True)
    assert isinstance(corrected, TestResult)
    assert corrected.statistic == pytest.approx(16.818, abs=5e-4)
    assert corrected.p_value == pytest.approx(4.115e-05, abs=5e-9)
    # Agresti (2007, An Introduction to Categorical Data Analysis, §8.1): z = (86 − 150) /
    # sqrt(86 + 150) = −4.17 without correction, so chi-square = z² = 4096 / 236.
    uncorrected = mcnemar(PRESIDENTIAL_APPROVAL)
    assert uncorrected.statistic == pytest.approx(4096 / 236, abs=1e-12)
    assert math.sqrt(uncorrected.statistic) == pytest.approx(4.17, abs=5e-3)
    assert uncorrected.p_value == pytest.approx(scipy_stats.chi2.sf(4096 / 236, 1), rel=1e-12)
    # The transposed table (the second survey as rows) gives the same test.
    assert mcnemar(np.transpose(PRESIDENTIAL_APPROVAL)) == uncorrected


def test_it_matches_r_mcnemar_test_with_continuity_correction_small_table():
    # R: mcnemar.test(matrix(c(6, 14, 2, 5), nrow = 2)) → McNemar's chi-squared = 7.5625,
    # df = 1, p-value = 0.00596 (b = 2, c = 14: (|2 − 14| − 1)² / 16).
    result = mcnemar([[6, 2], [14, 5]], correction=True)
    assert result.statistic == pytest.approx(7.5625, abs=1e-12)
    assert result.p_value == pytest.approx(0.00596, abs=5e-6)


def test_exact_mcnemar_is_the_two_sided_binomial_test():
    # 11 vs 3 discordant pairs: p = 2·P(X ≤ 3 | Binomial(14, ½)) = 2·470/16384 = 0.057373046875.
    result = mcnemar([[1, 11], [3, 5]], exact=True)
    assert result.statistic == 3.0
    assert result.p_value == pytest.approx(940 / 16384, abs=1e-15)
    assert result.p_value == pytest.approx(scipy_stats.binomtest(3, 14, 0.5).pvalue, abs=1e-15)
    # Balanced discordant cells: p is capped at 1.
    assert mcnemar([[4, 3], [3, 9]], exact=True).p_value == 1.0
    assert mcnemar([[4, 0], [0, 9]], exact=True).p_value == 1.0


def test_mcnemar_alternatives_agree_in_direction():
    table = [[30, 12], [40, 18]]
    plain = mcnemar(table)
    corrected = mcnemar(table, correction=True)
    exact = mcnemar(table, exact=True)
    assert plain.statistic == pytest.approx(28**2 / 52)
    assert corrected.statistic == pytest.approx(27**2 / 52)
    assert plain.p_value < corrected.p_value
    assert all(result.p_value < 0.001 for result in (plain, corrected, exact))


@pytest.mark.parametrize(
    ("table", "arguments", "message"),
    [
        ([[1, 2, 3], [4, 5, 6]], {}, r"2×2 table of counts \(got shape \(2, 3\)\)"),
        ([[1, -2], [3, 4]], {}, "must not be negative"),
        ([[1, 2.5], [3, 4]], {}, "whole numbers"),
        ([[1, float("nan")], [3, 4]], {}, "missing or infinite"),
        ([["a", "b"], ["c", "d"]], {}, "2×2 table of counts"),
        ([[5, 0], [0, 7]], {}, "No discordant pairs"),
        ([[5, 0], [0, 7]], {"correction": True}, "No discordant pairs"),
        ([[5, 1], [2, 7]], {"exact": True, "correction": True}, "chi-square version only"),
    ],
)
def test_mcnemar_rejects_bad_input(table, arguments, message):
    with pytest.raises(StatsInputError, match=message):
        mcnemar(table, **arguments)


def test_the_module_imports_without_django():
    # The library is used from notebooks: importing it must not pull in Django.
    import subprocess
    import sys

    code = "import sys, analysis.stats.accuracy; sys.exit(1 if any(m.startswith('django') for m in sys.modules) else 0)"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr or "analysis.stats.accuracy imported Django"
