"""analysis.stats.arms against published values: Newcombe's 1998 table of
intervals for a difference of proportions, SAS and R (PropCIs, epitools,
chisq.test, fisher.test) output, Agresti's AZT example and Stata's logit on
the Spector–Mazzeo data; plus the properties every interval and test must
have, and clear errors for bad input. No database."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import optimize
from scipy import stats as scipy_stats

from analysis.stats.arms import (
    _restricted_proportions,
    chi_square,
    fisher_exact,
    logistic_regression,
    relative_risk,
    risk_difference,
)
from analysis.stats.core import Estimate, StatsInputError, TestResult

# Newcombe RG. Interval estimation for the difference between independent
# proportions: comparison of eleven methods. Stat Med 1998;17:873–890,
# Table II, examples (a)–(h), as (x1, n1, x2, n2). Limits are printed to 4
# decimals, hence the tolerance of half a unit in the 4th decimal.
NEWCOMBE_EXAMPLES = [
    (56, 70, 48, 80),
    (9, 10, 3, 10),
    (6, 7, 2, 7),
    (5, 56, 0, 29),
    (0, 10, 0, 20),
    (0, 10, 0, 10),
    (10, 10, 0, 20),
    (10, 10, 0, 10),
]
# Table II, method 10: score interval without continuity correction (Newcombe's hybrid).
NEWCOMBE_METHOD_10 = [
    (0.0524, 0.3339),
    (0.1705, 0.8090),
    (0.0582, 0.8062),
    (-0.0381, 0.1926),
    (-0.1611, 0.2775),
    (-0.2775, 0.2775),
    (0.6791, 1.0000),
    (0.6075, 1.0000),
]
# Table II, method 6: Miettinen–Nurminen asymptotic score interval. Example (d)
# is also checked in R's ratesci package tests (scoreci(5, 0, 56, 29) → −0.0326, 0.1933).
NEWCOMBE_METHOD_6 = [
    (0.0528, 0.3382),
    (0.1700, 0.8406),
    (0.0342, 0.8534),
    (-0.0326, 0.1933),
    (-0.1658, 0.2844),
    (-0.2879, 0.2879),
    (0.7156, 1.0000),
    (0.6636, 1.0000),
]
PRINTED_4_DECIMALS = 5e-5 + 1e-9


def _interval(estimate: Estimate) -> tuple[float, float]:
    return estimate.ci_low, estimate.ci_high


# --- risk difference: published intervals -------------------------------------------------------


@pytest.mark.parametrize(("counts", "published"), list(zip(NEWCOMBE_EXAMPLES, NEWCOMBE_METHOD_10, strict=True)))
def test_newcombe_interval_matches_newcombe_1998_table_ii_method_10(
    counts: tuple[int, int, int, int], published: tuple[float, float]
) -> None:
    estimate = risk_difference(*counts, method="newcombe")
    assert estimate.value == pytest.approx(counts[0] / counts[1] - counts[2] / counts[3], abs=1e-12)
    assert _interval(estimate) == pytest.approx(published, abs=PRINTED_4_DECIMALS)


def test_the_default_method_is_newcombe() -> None:
    # 56/70 − 48/80 = 0.2000, 95 % CI 0.0524 to 0.3339 (Newcombe 1998, Table II (a), method 10).
    estimate = risk_difference(56, 70, 48, 80)
    assert estimate.value == pytest.approx(0.2, abs=1e-12)
    assert _interval(estimate) == pytest.approx((0.0524, 0.3339), abs=PRINTED_4_DECIMALS)
    assert estimate.se is None and estimate.p_value is None


@pytest.mark.parametrize(("counts", "published"), list(zip(NEWCOMBE_EXAMPLES, NEWCOMBE_METHOD_6, strict=True)))
def test_score_interval_matches_newcombe_1998_table_ii_method_6(
    counts: tuple[int, int, int, int], published: tuple[float, float]
) -> None:
    assert _interval(risk_difference(*counts, method="score")) == pytest.approx(published, abs=PRINTED_4_DECIMALS)


def test_score_interval_matches_r_propcis_diffscoreci_to_seven_digits() -> None:
    # R: PropCIs::diffscoreci(7, 34, 1, 34, 0.95) → 0.0270416 0.3452912 (quoted in
    # statsmodels' test_proportion.py::test_confint_2indep_propcis; Perondi et al. 2004 trial).
    estimate = risk_difference(7, 34, 1, 34, method="score")
    assert _interval(estimate) == pytest.approx((0.0270416, 0.3452912), abs=1e-6)


def test_wald_and_agresti_caffo_match_r_propcis_wald2ci() -> None:
    # R: PropCIs::wald2ci(7, 34, 1, 34, 0.95, adjust="Wald") → 0.02916942 0.32377176,
    #    adjust="AC" → 0.01161167 0.32172166 (quoted in statsmodels' tests).
    assert _interval(risk_difference(7, 34, 1, 34, method="wald")) == pytest.approx((0.02916942, 0.32377176), abs=1e-7)
    assert _interval(risk_difference(7, 34, 1, 34, method="agresti-caffo")) == pytest.approx(
        (0.01161167, 0.32172166), abs=1e-7
    )


# SAS PROC FREQ RISKDIFF output for Newcombe's examples (a), (b), (g), WUSS 2016 conference
# paper 127 ("confidence intervals for the difference of binomial proportions in SAS"), p. 9;
# Agresti–Caffo limits above 1 are printed as 1.
@pytest.mark.parametrize(
    ("method", "counts", "published"),
    [
        ("wald", (56, 70, 48, 80), (0.0575, 0.3425)),
        ("wald", (9, 10, 3, 10), (0.2605, 0.9395)),
        ("wald", (10, 10, 0, 20), (1.0, 1.0)),
        ("agresti-caffo", (56, 70, 48, 80), (0.0525, 0.3358)),
        ("agresti-caffo", (9, 10, 3, 10), (0.1600, 0.8400)),
        ("agresti-caffo", (10, 10, 0, 20), (0.6922, 1.0)),
    ],
)
def test_wald_and_agresti_caffo_match_sas_output(
    method: str, counts: tuple[int, int, int, int], published: tuple[float, float]
) -> None:
    estimate = risk_difference(*counts, method=method)  # type: ignore[arg-type]
    assert _interval(estimate) == pytest.approx(published, abs=PRINTED_4_DECIMALS)


@pytest.mark.parametrize(
    ("method", "published"),
    [
        ("wald", (-0.1162, 0.0843)),
        ("newcombe", (-0.1177, 0.0851)),
        ("agresti-caffo", (-0.1168, 0.0850)),
        ("score", (-0.1191, 0.0860)),
    ],
)
def test_every_method_matches_the_sas_hiv_trial_example(method: str, published: tuple[float, float]) -> None:
    # Same paper (WUSS 2016, paper 127): 84/101 vs 89/105 responders in an HIV trial.
    estimate = risk_difference(84, 101, 89, 105, method=method)  # type: ignore[arg-type]
    assert _interval(estimate) == pytest.approx(published, abs=PRINTED_4_DECIMALS)


# --- risk difference: properties ----------------------------------------------------------------

METHODS = ["newcombe", "wald", "agresti-caffo", "score"]
GRID = [(x1, 12, x2, 15) for x1 in (0, 1, 5, 11, 12) for x2 in (0, 2, 8, 15)] + [(40, 61, 33, 59)]


@pytest.mark.parametrize("method", METHODS)
def test_swapping_the_groups_mirrors_the_interval(method: str) -> None:
    for x1, n1, x2, n2 in GRID:
        forward = risk_difference(x1, n1, x2, n2, method=method)  # type: ignore[arg-type]
        backward = risk_difference(x2, n2, x1, n1, method=method)  # type: ignore[arg-type]
        assert backward.value == pytest.approx(-forward.value, abs=1e-12)
        assert backward.ci_low == pytest.approx(-forward.ci_high, abs=1e-9)
        assert backward.ci_high == pytest.approx(-forward.ci_low, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_interval_lies_in_minus_one_to_one_and_holds_the_estimate(method: str) -> None:
    for counts in GRID:
        estimate = risk_difference(*counts, method=method)  # type: ignore[arg-type]
        assert -1.0 <= estimate.ci_low <= estimate.ci_high <= 1.0
        if method != "agresti-caffo":  # Agresti–Caffo is centred on the adjusted estimate
            assert estimate.ci_low - 1e-12 <= estimate.value <= estimate.ci_high + 1e-12


@pytest.mark.parametrize("method", METHODS)
def test_a_smaller_alpha_gives_a_wider_interval(method: str) -> None:
    widths = [
        risk_difference(30, 60, 20, 60, method=method, alpha=alpha).ci_high  # type: ignore[arg-type]
        - risk_difference(30, 60, 20, 60, method=method, alpha=alpha).ci_low  # type: ignore[arg-type]
        for alpha in (0.2, 0.1, 0.05, 0.01)
    ]
    assert widths == sorted(widths)
    assert len(set(widths)) == 4


def test_restricted_estimates_maximise_the_constrained_likelihood() -> None:
    # The hand-written Miettinen–Nurminen root against a numerical maximisation of
    # x1·log(p2+δ) + (n1−x1)·log(1−p2−δ) + x2·log(p2) + (n2−x2)·log(1−p2).
    for x1, n1, x2, n2 in [*GRID, (56, 70, 48, 80), (7, 34, 1, 34)]:
        for delta in (-0.9, -0.4, -0.05, 0.0, 0.1, 0.35, 0.8):

            def negative_log_likelihood(p2: float, x1=x1, n1=n1, x2=x2, n2=n2, delta=delta) -> float:
                p1 = p2 + delta
                terms = [(x1, p1), (n1 - x1, 1 - p1), (x2, p2), (n2 - x2, 1 - p2)]
                return -sum(count * math.log(p) for count, p in terms if count > 0)

            low, high = max(0.0, -delta), min(1.0, 1.0 - delta)
            best = optimize.minimize_scalar(
                negative_log_likelihood, bounds=(low + 1e-12, high - 1e-12), method="bounded", options={"xatol": 1e-10}
            )
            p1, p2 = _restricted_proportions(x1, n1, x2, n2, delta)
            assert p1 - p2 == pytest.approx(delta, abs=1e-12)
            assert low - 1e-12 <= p2 <= high + 1e-12
            assert negative_log_likelihood(min(max(p2, low + 1e-12), high - 1e-12)) <= best.fun + 1e-7, (
                x1,
                n1,
                x2,
                n2,
                delta,
            )


def test_score_p_value_agrees_with_its_interval_and_with_the_n_minus_one_chi_square() -> None:
    # The Miettinen–Nurminen test of p1 = p2 is Pearson's chi-square times (N − 1)/N.
    for x1, n1, x2, n2 in GRID:
        estimate = risk_difference(x1, n1, x2, n2, method="score")
        assert estimate.p_value is not None
        excludes_zero = estimate.ci_low > 0 or estimate.ci_high < 0
        assert (estimate.p_value < 0.05) == excludes_zero, (x1, n1, x2, n2)
        if 0 < x1 + x2 < n1 + n2:
            total = n1 + n2
            pearson = chi_square([[x1, n1 - x1], [x2, n2 - x2]], correction=False).statistic
            z_squared = float(np.square(scipy_stats.norm.isf(estimate.p_value / 2)))
            assert z_squared == pytest.approx(pearson * (total - 1) / total, rel=1e-6)


def test_wald_gives_its_standard_error_and_p_value() -> None:
    estimate = risk_difference(56, 70, 48, 80, method="wald")
    se = math.sqrt(0.8 * 0.2 / 70 + 0.6 * 0.4 / 80)
    assert estimate.se == pytest.approx(se, rel=1e-12)
    assert estimate.p_value == pytest.approx(2 * scipy_stats.norm.sf(0.2 / se), rel=1e-9)
    assert risk_difference(0, 10, 0, 20, method="wald").p_value is None  # zero standard error


# --- risk difference: bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((-1, 10, 2, 10), "x1 must not be negative"),
        ((11, 10, 2, 10), "cannot exceed n1"),
        ((1, 0, 2, 10), "no subjects"),
        ((1.5, 10, 2, 10), "whole number"),
        ((True, 10, 2, 10), "whole number"),
        (("3", 10, 2, 10), "whole number"),
        ((3, 10, 2, float("nan")), "whole number"),
    ],
)
def test_risk_difference_rejects_impossible_counts(arguments: tuple[object, ...], message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        risk_difference(*arguments)  # type: ignore[arg-type]


def test_risk_difference_rejects_an_unknown_method_and_alpha() -> None:
    with pytest.raises(StatsInputError, match="Unknown method 'exact'"):
        risk_difference(3, 10, 2, 10, method="exact")  # type: ignore[arg-type]
    with pytest.raises(StatsInputError, match="alpha"):
        risk_difference(3, 10, 2, 10, alpha=1.5)


def test_risk_difference_accepts_numpy_counts() -> None:
    counts = np.array([56, 70, 48, 80])
    assert _interval(risk_difference(*counts)) == pytest.approx((0.0524, 0.3339), abs=PRINTED_4_DECIMALS)


# --- relative risk ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "published"),
    [
        # R epitools::riskratio(matrix(c(232, 112, 24, 16), nrow=2)) → 1.333333 0.7347317 2.419628
        # (quoted in scipy's test_relative_risk.py).
        ((16, 128, 24, 256), (1.333333, 0.7347317, 2.419628)),
        # epitools::riskratio(matrix(c(311, 51, 768, 299), 2, 2)) → 1.200227 1.133086 1.271346
        ((299, 350, 768, 1079), (1.200227, 1.133086, 1.271346)),
        # epitools riskratio on 1017/165 vs 2260/992 → 2.185217 1.879441 2.540742
        ((992, 3252, 165, 1182), (2.185217, 1.879441, 2.540742)),
        # epitools::riskratio.wald, delays by airline AA 17736/45656 vs DL 27452/60940 → 1.159615 1.142957 1.176515
        ((27452, 60940, 17736, 45656), (1.159615, 1.142957, 1.176515)),
        # epitools riskratio(pork_table, correct=TRUE): 48/120 vs 54/169 → 1.251852 0.9176849 1.707703
        ((48, 120, 54, 169), (1.251852, 0.9176849, 1.707703)),
    ],
)
def test_relative_risk_matches_r_epitools_riskratio(
    counts: tuple[int, int, int, int], published: tuple[float, float, float]
) -> None:
    estimate = relative_risk(*counts)
    assert (estimate.value, estimate.ci_low, estimate.ci_high) == pytest.approx(published, rel=1e-6)


def test_relative_risk_gives_the_katz_standard_error_and_wald_p() -> None:
    estimate = relative_risk(16, 128, 24, 256)
    se = math.sqrt(1 / 16 - 1 / 128 + 1 / 24 - 1 / 256)
    assert estimate.se == pytest.approx(se, rel=1e-12)
    assert math.log(estimate.ci_high / estimate.value) == pytest.approx(1.959964 * se, rel=1e-6)
    assert estimate.p_value == pytest.approx(2 * scipy_stats.norm.sf(math.log(4 / 3) / se), rel=1e-9)


def test_swapping_groups_inverts_the_relative_risk() -> None:
    forward, backward = relative_risk(16, 128, 24, 256), relative_risk(24, 256, 16, 128)
    assert backward.value == pytest.approx(1 / forward.value)
    assert (backward.ci_low, backward.ci_high) == pytest.approx((1 / forward.ci_high, 1 / forward.ci_low))
    assert backward.p_value == pytest.approx(forward.p_value)
    assert relative_risk(10, 50, 10, 50).value == 1.0 and relative_risk(10, 50, 10, 50).p_value == pytest.approx(1.0)


def test_relative_risk_interval_widens_as_alpha_falls() -> None:
    wide, narrow = relative_risk(16, 128, 24, 256, alpha=0.01), relative_risk(16, 128, 24, 256, alpha=0.1)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


@pytest.mark.parametrize("counts", [(0, 10, 3, 10), (3, 10, 0, 10), (0, 10, 0, 10)])
def test_relative_risk_refuses_a_group_without_events(counts: tuple[int, int, int, int]) -> None:
    with pytest.raises(StatsInputError, match="at least one event in each group"):
        relative_risk(*counts)


# --- chi-square and Fisher ----------------------------------------------------------------------


def test_chi_square_matches_r_chisq_test_documentation_example() -> None:
    # R ?chisq.test: party identification by gender (Agresti 2007, p. 39),
    # M <- as.table(rbind(c(762, 327, 468), c(484, 239, 477))) → X-squared = 30.07, df = 2, p = 2.954e-07.
    result = chi_square([[762, 327, 468], [484, 239, 477]])
    assert isinstance(result, TestResult)
    assert result.statistic == pytest.approx(30.07, abs=5e-3)
    assert result.p_value == pytest.approx(2.954e-07, rel=2e-4)
    # Yates' correction is for 2 × 2 tables only.
    assert chi_square([[762, 327, 468], [484, 239, 477]], correction=False) == result


def test_chi_square_with_and_without_yates_matches_r_epitools() -> None:
    # epitools::riskratio(pork_table, correct = TRUE): chi.square p = 0.198536.
    corrected = chi_square([[48, 72], [54, 115]], correction=True)
    assert corrected.p_value == pytest.approx(0.198536, rel=2e-6)
    # epitools::riskratio(matrix(c(311, 51, 768, 299), 2, 2)): chi.square p = 9.982161e-08.
    assert chi_square([[311, 768], [51, 299]], correction=False).p_value == pytest.approx(9.982161e-08, rel=1e-6)
    uncorrected = chi_square([[48, 72], [54, 115]], correction=False)
    assert corrected.statistic < uncorrected.statistic


def test_chi_square_does_not_depend_on_orientation() -> None:
    table = np.array([[762, 327, 468], [484, 239, 477]])
    transposed, original = chi_square(table.T), chi_square(table)
    assert transposed.statistic == pytest.approx(original.statistic, rel=1e-12)
    assert transposed.p_value == pytest.approx(original.p_value, rel=1e-9)
    independent = chi_square([[10, 20], [30, 60]], correction=False)
    assert independent.statistic == pytest.approx(0.0, abs=1e-12) and independent.p_value == pytest.approx(1.0)


def test_fisher_exact_matches_the_tea_tasting_example_exactly() -> None:
    # R ?fisher.test, TeaTasting (Agresti 1990, pp. 61–62): [[3, 1], [1, 3]]. The two-sided
    # p-value sums the hypergeometric probabilities 1, 16, 16, 1 out of 70.
    result = fisher_exact([[3, 1], [1, 3]])
    assert result.p_value == pytest.approx(34 / 70, rel=1e-12)
    assert result.statistic == pytest.approx(9.0)  # the sample odds ratio (3·3)/(1·1)


@pytest.mark.parametrize(
    ("table", "published"),
    [
        ([[48, 72], [54, 115]], 0.1708777),  # epitools riskratio(pork_table): fisher.exact
        ([[311, 768], [51, 299]], 4.200177e-08),  # epitools riskratio(matrix(c(311, 51, 768, 299), 2, 2))
        ([[1017, 165], [2260, 992]], 7.357611e-31),  # epitools riskratio, 1017/165 vs 2260/992
        ([[27920, 17736], [33488, 27452]], 1.502078e-91),  # epitools riskratio.wald, AA vs DL delays
    ],
)
def test_fisher_exact_matches_r_fisher_test_via_epitools(table: list[list[int]], published: float) -> None:
    assert fisher_exact(table).p_value == pytest.approx(published, rel=1e-6)


def test_fisher_exact_handles_empty_cells() -> None:
    # Two tables are as extreme as [[5, 0], [0, 5]], each with probability 1 / C(10, 5).
    result = fisher_exact([[5, 0], [0, 5]])
    assert result.p_value == pytest.approx(2 / 252, rel=1e-12)
    assert result.statistic == math.inf


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ([1, 2, 3, 4], "two-dimensional"),
        ([[1, 2]], "at least 2 × 2"),
        ([[1, -2], [3, 4]], "negative"),
        ([[1.5, 2], [3, 4]], "whole-number"),
        ([[1, float("nan")], [3, 4]], "missing"),
        ([[0, 0], [3, 4]], "Row 1 of the table is empty"),
        ([[0, 5], [0, 4]], "Column 1 of the table is empty"),
        ([["a", "b"], ["c", "d"]], "must hold counts"),
    ],
)
def test_tables_are_checked(table: object, message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        chi_square(table)
    with pytest.raises(StatsInputError, match=message):
        fisher_exact(table)


def test_fisher_exact_is_for_two_by_two_tables() -> None:
    with pytest.raises(StatsInputError, match=r"2 × 2 table \(got 2 × 3\); use chi_square"):
        fisher_exact([[762, 327, 468], [484, 239, 477]])


# --- logistic regression ------------------------------------------------------------------------


def _azt_data() -> tuple[list[int], list[int], list[str]]:
    """Agresti, An Introduction to Categorical Data Analysis (2nd ed., 2007), the AZT
    example: 338 veterans with HIV, immediate AZT (yes/no) by race, AIDS symptoms
    (yes/no). Cells (race, AZT, symptoms yes, symptoms no)."""
    symptoms: list[int] = []
    azt: list[int] = []
    race: list[str] = []
    for race_label, azt_use, yes, no in [
        ("white", 1, 14, 93),
        ("white", 0, 32, 81),
        ("black", 1, 11, 52),
        ("black", 0, 12, 43),
    ]:
        for outcome, count in ((1, yes), (0, no)):
            symptoms += [outcome] * count
            azt += [azt_use] * count
            race += [race_label] * count
    return symptoms, azt, race


def test_logistic_regression_matches_agrestis_azt_example() -> None:
    # Published fit: logit(p) = −1.074 − 0.720·AZT + 0.056·white, SE of the AZT effect 0.279
    # (Agresti 2007; reproduced in Agresti & Franklin, Statistics: The Art and Science of
    # Learning from Data, ch. 13). Three decimals are printed; the maximum-likelihood AZT effect
    # is −0.71946, printed −0.720 by rounding −0.7195 again, so one unit in the third decimal is allowed.
    symptoms, azt, race = _azt_data()
    result = logistic_regression(symptoms, azt, {"race": race})
    assert result.n == 338 and result.events == 69
    assert set(result.coefficients) == {"intercept", "arm", "race[white]"}
    assert result.coefficients["intercept"].value == pytest.approx(-1.074, abs=1e-3)
    assert result.coefficients["arm"].value == pytest.approx(-0.720, abs=1e-3)
    assert result.coefficients["arm"].se == pytest.approx(0.279, abs=5e-4)
    assert result.coefficients["race[white]"].value == pytest.approx(0.056, abs=1e-3)
    odds_ratio = result.odds_ratio
    assert odds_ratio.value == pytest.approx(math.exp(result.coefficients["arm"].value), rel=1e-12)
    assert math.log(odds_ratio.ci_high) - math.log(odds_ratio.value) == pytest.approx(
        1.959964 * odds_ratio.se, rel=1e-6
    )
    assert odds_ratio.p_value == result.coefficients["arm"].p_value
    assert odds_ratio.p_value is not None and odds_ratio.p_value < 0.05


def test_the_azt_fit_agrees_with_a_grouped_binomial_glm() -> None:
    # The same model fitted a second way: statsmodels GLM on the four cells as (events, non-events).
    cells = np.array([[14, 93, 1, 1], [32, 81, 0, 1], [11, 52, 1, 0], [12, 43, 0, 0]], dtype=float)
    design = sm.add_constant(cells[:, 2:4])
    grouped = sm.GLM(cells[:, :2], design, family=sm.families.Binomial()).fit()
    symptoms, azt, race = _azt_data()
    result = logistic_regression(symptoms, azt, {"race": race})
    for index, term in enumerate(["intercept", "arm", "race[white]"]):
        assert result.coefficients[term].value == pytest.approx(grouped.params[index], rel=1e-8), term
        assert result.coefficients[term].se == pytest.approx(grouped.bse[index], rel=1e-6), term


def test_logistic_regression_matches_stata_on_the_spector_mazzeo_data() -> None:
    # Spector & Mazzeo (1980): did the PSI teaching method (the "arm") improve grades,
    # adjusting for GPA and TUCE. Stata's logit, as stored in statsmodels'
    # discrete/tests/results/results_discrete.py (also Greene, Econometric Analysis).
    data = sm.datasets.spector.load_pandas().data
    result = logistic_regression(
        data.GRADE.tolist(), data.PSI.tolist(), {"GPA": data.GPA.tolist(), "TUCE": data.TUCE.tolist()}
    )
    stata = {
        "GPA": (2.82611297201, 1.26294114526),
        "TUCE": (0.0951576702557, 0.141554207662),
        "arm": (2.37868772835, 1.06456430165),
        "intercept": (-13.0213483201, 4.93132462871),
    }
    for term, (coefficient, se) in stata.items():
        assert result.coefficients[term].value == pytest.approx(coefficient, rel=1e-6), term
        assert result.coefficients[term].se == pytest.approx(se, rel=1e-6), term


def test_stratification_factors_are_dummy_coded_as_statsmodels_formula_does() -> None:
    # Three sites coded 1/2/3: with `categorical` they are a factor, as C(site) in a formula.
    rng = np.random.default_rng(20240611)
    n = 400
    site = rng.integers(1, 4, size=n)
    arm = rng.integers(0, 2, size=n)
    indication = rng.choice(["cervix", "thyroid"], size=n)
    linear = -0.5 + 0.8 * arm + 0.4 * (site == 2) - 0.6 * (site == 3) + 0.3 * (indication == "thyroid")
    outcome = (rng.random(n) < 1 / (1 + np.exp(-linear))).astype(int)
    result = logistic_regression(
        outcome.tolist(),
        arm.tolist(),
        {"site": site.tolist(), "indication": indication.tolist()},
        categorical=["site"],
    )
    frame = pd.DataFrame({"outcome": outcome, "arm": arm, "site": site, "indication": indication})
    reference = smf.logit("outcome ~ arm + C(site) + C(indication)", data=frame).fit(disp=0)
    assert result.coefficients["arm"].value == pytest.approx(reference.params["arm"], rel=1e-8)
    assert result.coefficients["arm"].se == pytest.approx(reference.bse["arm"], rel=1e-8)
    assert result.coefficients["site[3]"].value == pytest.approx(reference.params["C(site)[T.3]"], rel=1e-8)
    assert result.coefficients["indication[thyroid]"].value == pytest.approx(
        reference.params["C(indication)[T.thyroid]"], rel=1e-8
    )
    low, high = reference.conf_int(alpha=0.05).loc["arm"]
    assert (result.odds_ratio.ci_low, result.odds_ratio.ci_high) == pytest.approx((math.exp(low), math.exp(high)))
    # Without `categorical`, site would be one numeric slope: a different model.
    numeric = logistic_regression(outcome.tolist(), arm.tolist(), {"site": site.tolist()})
    assert "site" in numeric.coefficients and "site[2]" not in numeric.coefficients


def test_without_covariates_the_odds_ratio_is_the_sample_odds_ratio() -> None:
    # 30/50 events with the arm, 20/50 without: OR = (30·30)/(20·20), SE = sqrt(1/30+1/20+1/20+1/30).
    outcome = [1] * 30 + [0] * 20 + [1] * 20 + [0] * 30
    arm = [1] * 50 + [0] * 50
    result = logistic_regression(outcome, arm)
    assert result.odds_ratio.value == pytest.approx(900 / 400, rel=1e-9)
    assert result.odds_ratio.se == pytest.approx(math.sqrt(2 / 30 + 2 / 20), rel=1e-9)
    flipped = logistic_regression(outcome, [1 - a for a in arm], alpha=0.1)
    assert flipped.odds_ratio.value == pytest.approx(400 / 900, rel=1e-9)
    assert flipped.odds_ratio.ci_high - flipped.odds_ratio.ci_low < (
        logistic_regression(outcome, [1 - a for a in arm]).odds_ratio.ci_high
        - logistic_regression(outcome, [1 - a for a in arm]).odds_ratio.ci_low
    )


def test_logistic_regression_refuses_a_stratum_without_events() -> None:
    outcome = [1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0]
    arm = [1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1]
    site = ["A"] * 6 + ["B"] * 4 + ["A"] * 2  # site B: no participant has the outcome
    with pytest.raises(StatsInputError, match="predicts the outcome perfectly"):
        logistic_regression(outcome, arm, {"site": site})


@pytest.mark.parametrize(
    ("outcome", "arm", "covariates", "message"),
    [
        ([0, 1, 2, 1], [0, 1, 0, 1], None, "outcome must be coded 0/1"),
        ([0, 1, 0, 1], ["A", "B", "A", "B"], None, "arm must be coded 0/1"),
        ([0, 1, 0, 1], [0, 1, 0], None, "arm has 3 values but the outcome has 4"),
        ([0, 1, 0, 1], [1, 1, 1, 1], None, "same arm"),
        ([1, 1, 1, 1], [0, 1, 0, 1], None, "outcome is the same"),
        ([0, 1, 0, float("nan")], [0, 1, 0, 1], None, "outcome contains missing"),
        ([], [], None, "outcome is empty"),
        ([0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 0, 1], {"site": ["A", None, "B", "A", "B", "A"]}, "missing for 1"),
        ([0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 0, 1], {"site": ["A", "B"]}, "has 2 values"),
        ([0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 0, 1], {"copy": [0, 1, 0, 1, 0, 1]}, "collinear"),
        ([0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 0, 1], {"age": [50, 50, 50, 50, 50, 50]}, "collinear"),
    ],
)
def test_logistic_regression_rejects_bad_input(
    outcome: list[object], arm: list[object], covariates: dict[str, list[object]] | None, message: str
) -> None:
    with pytest.raises(StatsInputError, match=message):
        logistic_regression(outcome, arm, covariates)


def test_categorical_must_name_given_covariates() -> None:
    with pytest.raises(StatsInputError, match="not given: \\['stratum'\\]"):
        logistic_regression([0, 1, 0, 1], [0, 1, 1, 0], {"site": [1, 2, 1, 2]}, categorical=["stratum"])


def test_numeric_factor_levels_are_ordered_as_numbers_with_the_lowest_as_reference() -> None:
    outcome = [1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1]
    arm = [1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0]
    site = [2, 2, 2, 2, 2, 2, 10, 10, 10, 10, 10, 10, 9, 9, 9, 9, 9, 9]
    result = logistic_regression(outcome, arm, {"site": site}, categorical=["site"])
    assert [term for term in result.coefficients if term.startswith("site")] == ["site[9]", "site[10]"]
