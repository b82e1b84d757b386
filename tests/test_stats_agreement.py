"""analysis.stats.agreement against published values (SAS, R irr, irrCAC,
psych, Shrout & Fleiss 1979, Bland & Altman 1986), plus properties and bad
input. No Django needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from analysis.stats.agreement import (
    ICC_FORMS,
    BlandAltman,
    bland_altman,
    cohen_kappa,
    fleiss_kappa,
    gwet_ac1,
    icc,
)
from analysis.stats.core import StatsInputError

# --- data sets ----------------------------------------------------------------------------------

# statsmodels stats/tests/test_inter_rater.py (table10), checked there against a SAS PROC FREQ printout.
SAS_TABLE = [[0, 4, 1], [0, 8, 0], [0, 1, 5]]

# R irr's `anxiety` data (20 subjects × 3 raters), as in statsmodels' test_inter_rater.py.
ANXIETY = np.array(
    [
        [3, 3, 3, 4, 5, 5, 2, 3, 5, 2, 2, 6, 1, 5, 2, 2, 1, 2, 4, 3],
        [3, 6, 4, 6, 2, 4, 2, 4, 3, 3, 2, 3, 3, 3, 2, 2, 1, 3, 3, 4],
        [2, 1, 4, 4, 3, 2, 1, 6, 1, 1, 1, 2, 3, 3, 1, 1, 3, 3, 2, 2],
    ]
).T

# R irr's `diagnoses` (Fleiss 1971): 30 patients, 6 psychiatrists, 5 categories; each row as
# stored in statsmodels' test_inter_rater.py (ratings sorted within the row, which leaves the
# counts unchanged).
DIAGNOSES = [
    [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
]  # fmt: skip

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories.
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]  # fmt: skip

# irrCAC's `distrib.6raters` (README / overview vignette): 15 subjects, 6 raters, 5 categories.
DISTRIB_6RATERS = [
    [0, 0, 0, 6, 0], [0, 3, 0, 0, 3], [0, 1, 4, 0, 1], [0, 0, 0, 0, 6], [0, 3, 0, 3, 0],
    [2, 0, 4, 0, 0], [0, 0, 4, 0, 2], [2, 0, 3, 1, 0], [2, 0, 0, 4, 0], [0, 0, 0, 0, 6],
    [1, 0, 0, 5, 0], [1, 1, 0, 4, 0], [0, 3, 3, 0, 0], [1, 0, 0, 5, 0], [0, 2, 0, 3, 1],
]  # fmt: skip

# irrCAC's `cac.raw4raters` (README): 12 subjects, 4 raters, NA = not rated.
N = None
CAC_RAW4RATERS: list[list[int | None]] = [
    [1, 1, N, 1], [2, 2, 3, 2], [3, 3, 3, 3], [3, 3, 3, 3], [2, 2, 2, 2], [1, 2, 3, 4],
    [4, 4, 4, 4], [1, 1, 2, 1], [2, 2, 2, 2], [N, 5, 5, 5], [N, N, 1, 1], [N, N, 3, N],
]  # fmt: skip

# irrCAC's `cont3x3abstractors` (README): 2 abstractors, 100 charts, 3 categories.
ABSTRACTORS = [[13, 0, 0], [0, 20, 7], [0, 4, 56]]

# Shrout & Fleiss (1979), Table 2: 6 targets × 4 judges.
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]

# real-statistics.com's wine example as shipped with pingouin (datasets/icc.csv): 8 wines × judges A–D.
WINE = np.array(
    [[1, 1, 3, 6, 6, 7, 8, 9], [2, 3, 8, 4, 5, 5, 7, 9], [0, 3, 1, 3, 5, 6, 7, 9], [1, 2, 4, 3, 6, 2, 9, 8]],
    dtype=float,
).T

# Bland & Altman (Lancet 1986;327:307–310), Table 1: PEFR (l/min), first reading with the
# Wright and with the mini Wright peak flow meter, 17 subjects.
WRIGHT = [494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478, 178, 423, 427]
MINI_WRIGHT = [512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477, 259, 350, 451]


def counts_per_subject(ratings: list[list[int]], categories: int) -> np.ndarray:
    return np.array([np.bincount(np.asarray(row) - 1, minlength=categories) for row in ratings])


def expand_counts(counts: list[list[int]]) -> list[list[int]]:
    """Counts per subject and category → one rating per rater (category index)."""
    return [[category for category, count in enumerate(row) for _ in range(count)] for row in counts]


def irr_table(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Cross-table over the levels either rater used, as R irr::kappa2 builds it."""
    levels = sorted(set(first) | set(second))
    index = {level: i for i, level in enumerate(levels)}
    table = np.zeros((len(levels), len(levels)))
    for a, b in zip(first, second, strict=True):
        table[index[a], index[b]] += 1
    return table


def z_from_two_sided(p_value: float | None) -> float:
    assert p_value is not None
    return float(scipy_stats.norm.isf(p_value / 2.0))


# --- Cohen's kappa: published values ------------------------------------------------------------


def test_cohen_kappa_matches_the_sas_printout() -> None:
    # SAS PROC FREQ via statsmodels' TestUnweightedCohens: 0.4842, ASE 0.1380, 0.2137–0.7547,
    # two-sided p (ASE under H0) 0.0011.
    result = cohen_kappa(SAS_TABLE)
    assert result.value == pytest.approx(0.4842, abs=5e-5)
    assert result.se == pytest.approx(0.1380, abs=5e-5)
    assert result.ci_low == pytest.approx(0.2137, abs=5e-5)
    assert result.ci_high == pytest.approx(0.7547, abs=5e-5)
    assert result.p_value == pytest.approx(0.0011, abs=5e-5)


def test_linear_weighted_kappa_matches_the_sas_printout() -> None:
    # SAS PROC FREQ (Cicchetti–Allison weights) via statsmodels' TestWeightedCohens:
    # 0.4701, ASE 0.1457, 0.1845–0.7558, two-sided p 0.0010.
    result = cohen_kappa(SAS_TABLE, weights="linear")
    assert result.value == pytest.approx(0.4701, abs=5e-5)
    assert result.se == pytest.approx(0.1457, abs=5e-5)
    assert result.ci_low == pytest.approx(0.1845, abs=5e-5)
    assert result.ci_high == pytest.approx(0.7558, abs=5e-5)
    assert result.p_value == pytest.approx(0.0010, abs=5e-5)


def test_quadratic_weighted_kappa_of_the_sas_table_is_pinned() -> None:
    # No published quadratic value exists for this table (statsmodels' tests and the SAS printout
    # give only simple and linear kappa). Hand check with Fleiss–Cohen agreement weights
    # 1 − (i−j)²/4: observed 16.75/19, chance from the margins → kappa 0.4501607717.
    observed = (8 + 5 + 4 * 0.75 + 1 * 0.0 + 1 * 0.75) / 19
    rows, columns = np.array([5, 8, 6]) / 19, np.array([0, 13, 6]) / 19
    weights = 1 - (np.subtract.outer(np.arange(3), np.arange(3)) ** 2) / 4
    chance = float(rows @ weights @ columns)
    result = cohen_kappa(SAS_TABLE, weights="quadratic")
    assert result.value == pytest.approx((observed - chance) / (1 - chance), abs=1e-12)
    assert result.value == pytest.approx(0.4501607717, abs=1e-9)


def test_quadratic_weighted_kappa_matches_irr_squared_weights() -> None:
    # R irr::kappa2(anxiety[, 2:3], "squared"): 0.2520325, z 1.437451, p 0.1505898
    # (statsmodels' test_cohens_kappa_irr).
    result = cohen_kappa(irr_table(ANXIETY[:, 1], ANXIETY[:, 2]), weights="quadratic")
    assert result.value == pytest.approx(0.2520325, abs=5e-7)
    assert result.p_value == pytest.approx(0.1505898, abs=5e-7)
    assert z_from_two_sided(result.p_value) == pytest.approx(1.437451, abs=5e-6)


def test_unweighted_and_linear_kappa_match_irr_on_anxiety() -> None:
    # R irr::kappa2(anxiety[, 2:3]) and (…, "equal") via statsmodels' test_cohens_kappa_irr.
    table = irr_table(ANXIETY[:, 1], ANXIETY[:, 2])
    unweighted = cohen_kappa(table)
    assert unweighted.value == pytest.approx(-0.006289308, abs=5e-9)
    assert unweighted.p_value == pytest.approx(0.9518317, abs=5e-7)
    linear = cohen_kappa(table, weights="linear")
    assert linear.value == pytest.approx(0.1459075, abs=5e-7)
    assert linear.p_value == pytest.approx(0.1996772, abs=5e-7)
    assert z_from_two_sided(linear.p_value) == pytest.approx(1.282472, abs=5e-6)


def test_cohen_kappa_matches_irr_printouts_of_rexrepos() -> None:
    # D. Wollschläger, RExRepos "interRaterICC": irr::kappa2 on a 100-subject 3×3 table prints
    # Kappa = 0.429, z = 5.46, p = 4.79e-08; on a 6×6 table with weight="equal", 0.316, z = 5.38,
    # p = 7.3e-08.
    three = cohen_kappa([[53, 5, 2], [11, 14, 5], [1, 6, 3]])
    assert three.value == pytest.approx(0.429, abs=5e-4)
    assert z_from_two_sided(three.p_value) == pytest.approx(5.46, abs=5e-3)
    assert three.p_value == pytest.approx(4.79e-08, rel=2e-3)
    six = [
        [5, 8, 1, 2, 4, 2], [3, 5, 3, 5, 5, 0], [1, 2, 6, 11, 2, 1],
        [0, 1, 5, 4, 3, 3], [0, 0, 1, 2, 5, 2], [0, 0, 1, 2, 1, 4],
    ]  # fmt: skip
    linear = cohen_kappa(six, weights="linear")
    assert linear.value == pytest.approx(0.316, abs=5e-4)
    assert z_from_two_sided(linear.p_value) == pytest.approx(5.38, abs=5e-3)
    assert linear.p_value == pytest.approx(7.3e-08, rel=1e-2)


def test_cohen_kappa_matches_irrcac_on_the_abstractors_table() -> None:
    # irrCAC README: kappa2.table(cont3x3abstractors) → 0.7964094, SE 0.05891072; the
    # kappa2.table help page's example with quadratic weights → 0.8921569.
    result = cohen_kappa(ABSTRACTORS)
    assert result.value == pytest.approx(0.7964094, abs=5e-8)
    assert result.se == pytest.approx(0.05891072, abs=5e-9)
    assert cohen_kappa(ABSTRACTORS, weights="quadratic").value == pytest.approx(0.8921569, abs=5e-8)


# --- Cohen's kappa: properties ------------------------------------------------------------------


def test_cohen_kappa_of_perfect_agreement_is_one_with_a_degenerate_interval() -> None:
    result = cohen_kappa([[7, 0, 0], [0, 4, 0], [0, 0, 9]])
    assert (result.value, result.ci_low, result.ci_high, result.se) == (1.0, 1.0, 1.0, 0.0)
    assert result.p_value is not None and result.p_value < 1e-4


def test_cohen_kappa_of_complete_disagreement_on_two_categories_is_minus_one() -> None:
    assert cohen_kappa([[0, 6], [6, 0]]).value == pytest.approx(-1.0)


def test_cohen_kappa_does_not_depend_on_which_rater_is_first() -> None:
    table = np.array(SAS_TABLE)
    for weights in (None, "linear", "quadratic"):
        forward, backward = cohen_kappa(table, weights=weights), cohen_kappa(table.T, weights=weights)
        assert backward.value == pytest.approx(forward.value, abs=1e-12)
        assert backward.se == pytest.approx(forward.se, abs=1e-12)
        assert backward.p_value == pytest.approx(forward.p_value, abs=1e-12)


def test_unweighted_kappa_does_not_depend_on_the_order_of_categories() -> None:
    table = np.array([[53, 5, 2], [11, 14, 5], [1, 6, 3]])
    order = [2, 0, 1]
    assert cohen_kappa(table[np.ix_(order, order)]).value == pytest.approx(cohen_kappa(table).value, abs=1e-12)


def test_weights_make_no_difference_with_two_categories() -> None:
    table = [[20, 5], [3, 12]]
    plain = cohen_kappa(table)
    for weights in ("linear", "quadratic"):
        weighted = cohen_kappa(table, weights=weights)
        assert weighted.value == pytest.approx(plain.value, abs=1e-12)
        assert weighted.se == pytest.approx(plain.se, abs=1e-12)


def test_a_smaller_alpha_widens_the_kappa_interval() -> None:
    wide, narrow = cohen_kappa(SAS_TABLE, alpha=0.01), cohen_kappa(SAS_TABLE, alpha=0.2)
    assert wide.ci_low < narrow.ci_low < narrow.value < narrow.ci_high < wide.ci_high
    assert wide.value == narrow.value
    z = scipy_stats.norm.ppf(0.995)
    assert wide.ci_high - wide.ci_low == pytest.approx(2 * z * wide.se, abs=1e-12)


def test_a_kappa_interval_never_leaves_minus_one_to_one() -> None:
    result = cohen_kappa([[3, 0], [1, 2]], alpha=0.001)
    assert result.ci_low >= -1.0 and result.ci_high == 1.0


def test_an_unused_category_still_spaces_the_others_for_the_weights() -> None:
    # Categories 1, 2 and 4 used, 3 never: linear distances 1, 2, 3 rather than 1, 1, 2.
    compressed = np.array([[6, 2, 1], [1, 5, 2], [0, 2, 7]])
    with_gap = np.zeros((4, 4))
    with_gap[np.ix_([0, 1, 3], [0, 1, 3])] = compressed
    assert cohen_kappa(with_gap).value == pytest.approx(cohen_kappa(compressed).value, abs=1e-12)
    assert cohen_kappa(with_gap, weights="linear").value != pytest.approx(
        cohen_kappa(compressed, weights="linear").value, abs=1e-3
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ([[1, 2, 3], [4, 5, 6]], "square"),
        ([1, 2, 3], "two-dimensional"),
        ([], "two-dimensional"),
        ([[5]], "at least two categories"),
        ([[1, -1], [2, 3]], "negative"),
        ([[1, float("nan")], [2, 3]], "missing or infinite"),
        ([[0, 0], [0, 0]], "no ratings"),
        ([[9, 0], [0, 0]], "single, identical category"),
        ([["a", "b"], ["c", "d"]], "table of counts"),
    ],
)
def test_cohen_kappa_rejects_bad_tables(table: object, message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        cohen_kappa(table)


def test_cohen_kappa_rejects_unknown_weights_and_alpha() -> None:
    with pytest.raises(StatsInputError, match="weights must be"):
        cohen_kappa(SAS_TABLE, weights="squared")  # type: ignore[arg-type]
    with pytest.raises(StatsInputError, match="alpha"):
        cohen_kappa(SAS_TABLE, alpha=1.5)


# --- Fleiss' kappa ------------------------------------------------------------------------------


def test_fleiss_kappa_matches_the_wikipedia_example() -> None:
    # Wikipedia "Fleiss' kappa": kappa = 0.210.
    assert fleiss_kappa(WIKIPEDIA_FLEISS).value == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_matches_irr_kappam_fleiss_on_diagnoses() -> None:
    # R irr::kappam.fleiss(diagnoses): Kappa 0.4302445, z 17.65183 (statsmodels'
    # test_fleiss_kappa_irr; printed as 0.43 and 17.7 in RExRepos "interRaterICC").
    result = fleiss_kappa(counts_per_subject(DIAGNOSES, 5))
    assert result.value == pytest.approx(0.4302445, abs=5e-8)
    assert z_from_two_sided(result.p_value) == pytest.approx(17.65183, abs=5e-6)


def test_fleiss_kappa_standard_error_matches_irrcac() -> None:
    # irrCAC README: fleiss.kappa.dist(distrib.6raters) → 0.4139265, SE 0.08119291, CI (0.24, 0.588).
    result = fleiss_kappa(DISTRIB_6RATERS)
    assert result.value == pytest.approx(0.4139265, abs=5e-8)
    assert result.se == pytest.approx(0.08119291, abs=5e-9)
    assert result.ci_low == pytest.approx(0.24, abs=5e-3)
    assert result.ci_high == pytest.approx(0.588, abs=5e-4)


def test_fleiss_kappa_of_perfect_agreement_is_one() -> None:
    result = fleiss_kappa([[4, 0, 0], [0, 4, 0], [0, 0, 4], [4, 0, 0]])
    assert (result.value, result.ci_low, result.ci_high, result.se) == (1.0, 1.0, 1.0, 0.0)


def test_fleiss_kappa_does_not_depend_on_the_order_of_subjects_or_categories() -> None:
    table = np.array(DISTRIB_6RATERS)
    reference = fleiss_kappa(table)
    shuffled = fleiss_kappa(table[::-1][:, [4, 2, 0, 1, 3]])
    assert shuffled.value == pytest.approx(reference.value, abs=1e-12)
    assert shuffled.se == pytest.approx(reference.se, abs=1e-12)
    assert shuffled.p_value == pytest.approx(reference.p_value, rel=1e-9)


def test_fleiss_kappa_equals_gwet_style_raw_computation_with_complete_ratings() -> None:
    # With every rater rating every subject, Fleiss' kappa from counts equals the same
    # statistic recomputed from observed and chance agreement by hand.
    table = np.array(WIKIPEDIA_FLEISS, dtype=float)
    raters = 14
    observed = np.mean((np.sum(table**2, axis=1) - raters) / (raters * (raters - 1)))
    shares = table.sum(axis=0) / table.sum()
    chance = np.sum(shares**2)
    assert fleiss_kappa(table).value == pytest.approx((observed - chance) / (1 - chance), abs=1e-12)


def test_a_smaller_alpha_widens_the_fleiss_interval() -> None:
    wide, narrow = fleiss_kappa(DISTRIB_6RATERS, alpha=0.01), fleiss_kappa(DISTRIB_6RATERS)
    assert wide.ci_low < narrow.ci_low and wide.ci_high > narrow.ci_high
    assert wide.se == narrow.se


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([[2, 1], [1, 1]], "same number of raters"),
        ([[1, 0], [0, 1]], "at least two ratings"),
        ([[3, 0, 0]], "at least two subjects"),
        ([[3, 0], [3, 0]], "one category"),
        ([[2, -1], [1, 0]], "negative"),
        ([3, 3], "two-dimensional"),
    ],
)
def test_fleiss_kappa_rejects_bad_tables(counts: object, message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        fleiss_kappa(counts)


# --- Gwet's AC1 ---------------------------------------------------------------------------------


def test_gwet_ac1_matches_irrcac_with_missing_ratings() -> None:
    # irrCAC README: gwet.ac1.raw(cac.raw4raters) → AC1 0.77544, SE 0.14295, CI (0.461, 1),
    # one-sided p 0.0001043605 (we report the two-sided p, twice that).
    result = gwet_ac1(CAC_RAW4RATERS)
    assert result.value == pytest.approx(0.77544, abs=5e-6)
    assert result.se == pytest.approx(0.14295, abs=5e-6)
    assert result.ci_low == pytest.approx(0.461, abs=5e-4)
    assert result.ci_high == 1.0
    assert result.p_value == pytest.approx(2 * 0.0001043605, rel=1e-6)


def test_gwet_ac1_matches_irrcac_for_the_distribution_of_six_raters() -> None:
    # irrCAC README: gwet.ac1.dist(distrib.6raters) → 0.4448007, SE 0.08418757,
    # CI (0.264, 0.625), one-sided p 5.779637e-05.
    result = gwet_ac1(expand_counts(DISTRIB_6RATERS))
    assert result.value == pytest.approx(0.4448007, abs=5e-8)
    assert result.se == pytest.approx(0.08418757, abs=5e-9)
    assert result.ci_low == pytest.approx(0.264, abs=5e-4)
    assert result.ci_high == pytest.approx(0.625, abs=5e-4)
    assert result.p_value == pytest.approx(2 * 5.779637e-05, rel=1e-6)


def test_gwet_ac1_matches_irrcac_for_two_raters() -> None:
    # irrCAC README: gwet.ac1.table(cont3x3abstractors) → 0.8493305 (its two-rater variance
    # formula differs from the multi-rater one used here, so only the coefficient is compared).
    pairs = [[row, column] for row in range(3) for column in range(3) for _ in range(ABSTRACTORS[row][column])]
    assert gwet_ac1(pairs).value == pytest.approx(0.8493305, abs=5e-8)


def test_gwet_ac1_by_hand_for_a_small_table() -> None:
    # Three subjects, two raters: pa = 2/3; prevalences a = 0.5, b = 0.5 → pe = 0.5; AC1 = 1/3.
    result = gwet_ac1([["a", "a"], ["b", "b"], ["a", "b"]])
    assert result.value == pytest.approx(1 / 3, abs=1e-12)


def test_gwet_ac1_accepts_labels_of_any_kind_and_nan_as_missing() -> None:
    numbers = gwet_ac1(CAC_RAW4RATERS)
    names = {1: "CIN1", 2: "CIN2", 3: "CIN3", 4: "cancer", 5: "normal"}
    labelled = gwet_ac1([[None if v is None else names[v] for v in row] for row in CAC_RAW4RATERS])
    with_nan = gwet_ac1(np.array([[np.nan if v is None else v for v in row] for row in CAC_RAW4RATERS]))
    for other in (labelled, with_nan):
        assert other.value == pytest.approx(numbers.value, abs=1e-12)
        assert other.se == pytest.approx(numbers.se, abs=1e-12)
    assert with_nan.value == pytest.approx(numbers.value, abs=1e-12)
    assert with_nan.se == pytest.approx(numbers.se, abs=1e-12)


def test_gwet_ac1_ignores_subjects_nobody_rated() -> None:
    assert gwet_ac1([*CAC_RAW4RATERS, [N, N, N, N]]) == gwet_ac1(CAC_RAW4RATERS)


def test_an_unused_category_changes_chance_agreement() -> None:
    ratings = [["a", "a"], ["b", "b"], ["a", "b"]]
    # pe = (0.25 + 0.25 + 0) / 2 = 0.25 with a third, unused category → AC1 = (2/3 − 1/4) / (3/4).
    widened = gwet_ac1(ratings, categories=["a", "b", "c"])
    assert widened.value == pytest.approx((2 / 3 - 0.25) / 0.75, abs=1e-12)


def test_gwet_ac1_of_perfect_agreement_is_one() -> None:
    result = gwet_ac1([["x", "x", "x"], ["y", "y", "y"], ["x", "x", "x"]])
    assert (result.value, result.ci_low, result.ci_high, result.se, result.p_value) == (1.0, 1.0, 1.0, 0.0, 0.0)


def test_a_smaller_alpha_widens_the_ac1_interval() -> None:
    wide, narrow = gwet_ac1(expand_counts(DISTRIB_6RATERS), alpha=0.01), gwet_ac1(expand_counts(DISTRIB_6RATERS))
    assert wide.ci_low < narrow.ci_low and wide.ci_high > narrow.ci_high


@pytest.mark.parametrize(
    ("ratings", "kwargs", "message"),
    [
        ([[1, 2], [1]], {}, "lengths"),
        ([["a", "b"], [N, N]], {}, "at least two rated subjects"),
        ([[1, N], [N, 2]], {}, "No subject was rated by two"),
        ([[1, 1], [1, 1]], {}, "one category"),
        ([[1, 3], [1, 1]], {"categories": [1, 2]}, "not in categories"),
        ([[1, 1], [2, 2]], {"categories": [1]}, "at least two possible"),
        ([], {}, "empty"),
        ([1, 2, 3], {}, "subjects \\(rows\\)"),
        ("ab", {}, "subjects \\(rows\\)"),
        ([[1, 1], [2, 2]], {"alpha": 0}, "alpha"),
    ],
)
def test_gwet_ac1_rejects_bad_input(ratings: object, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        gwet_ac1(ratings, **kwargs)  # type: ignore[arg-type]


# --- intraclass correlation ---------------------------------------------------------------------

# psych::ICC on Shrout & Fleiss's Table 2, as printed in RExRepos "interRaterICC" (and asserted in
# pingouin's test_reliability.py): ICC, lower and upper bound, p. The ICCs are Shrout & Fleiss's
# own Table 4 values (.17, .29, .71, .44, .62, .91).
PSYCH_SHROUT_FLEISS = {
    "ICC1": (0.17, -0.133, 0.72, 0.16477),
    "ICC2": (0.29, 0.019, 0.76, 0.00013),
    "ICC3": (0.71, 0.342, 0.95, 0.00013),
    "ICC1k": (0.44, -0.884, 0.91, 0.16477),
    "ICC2k": (0.62, 0.071, 0.93, 0.00013),
    "ICC3k": (0.91, 0.676, 0.99, 0.00013),
}


@pytest.mark.parametrize("form", ICC_FORMS)
def test_icc_matches_shrout_fleiss_and_psych(form: str) -> None:
    value, low, high, p_value = PSYCH_SHROUT_FLEISS[form]
    result = icc(SHROUT_FLEISS, form=form)  # type: ignore[arg-type]
    assert result.value == pytest.approx(value, abs=5e-3)
    assert result.ci_low == pytest.approx(low, abs=5e-4)
    assert result.ci_high == pytest.approx(high, abs=5e-3)
    assert result.p_value == pytest.approx(p_value, abs=5e-6)
    assert result.se is None


# psych::ICC(irr::anxiety)$results (ICC, lower bound, upper bound), printed to seven significant
# digits in a public statistics course page ("Agreement and reliability", Health-statistics).
PSYCH_ANXIETY = {
    "ICC1": (0.1750225, -0.07744650, 0.4843362),
    "ICC2": (0.1979983, -0.03891068, 0.4935740),
    "ICC3": (0.2160493, -0.04625793, 0.5222590),
    "ICC1k": (0.3889259, -0.27492318, 0.7380652),
    "ICC2k": (0.4254988, -0.12658288, 0.7451493),
    "ICC3k": (0.4525861, -0.15292145, 0.7663308),
}


@pytest.mark.parametrize("form", ICC_FORMS)
def test_icc_matches_psych_to_six_decimals_on_anxiety(form: str) -> None:
    value, low, high = PSYCH_ANXIETY[form]
    result = icc(ANXIETY, form=form)  # type: ignore[arg-type]
    assert result.value == pytest.approx(value, abs=1e-6)
    assert result.ci_low == pytest.approx(low, abs=1e-6)
    assert result.ci_high == pytest.approx(high, abs=1e-6)


# real-statistics.com's wine example as asserted in pingouin's test_reliability.py (psych::ICC
# agrees): ICCs, 95 % bounds to two decimals, p 2.2e-06 (one-way) and 5.0e-06 (two-way).
WINE_EXPECTED = {
    "ICC1": (0.73, 0.43, 0.93, 2.2e-06),
    "ICC2": (0.73, 0.43, 0.93, 5.0e-06),
    "ICC3": (0.73, 0.43, 0.93, 5.0e-06),
    "ICC1k": (0.91, 0.75, 0.98, 2.2e-06),
    "ICC2k": (0.91, 0.75, 0.98, 5.0e-06),
    "ICC3k": (0.92, 0.75, 0.98, 5.0e-06),
}


@pytest.mark.parametrize("form", ICC_FORMS)
def test_icc_matches_the_wine_example(form: str) -> None:
    value, low, high, p_value = WINE_EXPECTED[form]
    result = icc(WINE, form=form)  # type: ignore[arg-type]
    assert result.value == pytest.approx(value, abs=5e-3)
    assert result.ci_low == pytest.approx(low, abs=5e-3)
    assert result.ci_high == pytest.approx(high, abs=5e-3)
    assert result.p_value == pytest.approx(p_value, abs=5e-8)


def test_icc_uses_complete_cases_only() -> None:
    # pingouin's test (nan_policy="omit", listwise as psych): wine 4 / judge A missing →
    # ICCs 0.75, 0.75, 0.75, 0.92, 0.92, 0.92 from the 7 complete wines.
    with_gap = WINE.copy()
    with_gap[3, 0] = np.nan
    expected = dict(zip(ICC_FORMS, (0.75, 0.75, 0.75, 0.92, 0.92, 0.92), strict=True))
    for form in ICC_FORMS:
        result = icc(with_gap, form=form)  # type: ignore[arg-type]
        assert result.value == pytest.approx(expected[form], abs=5e-3)
        assert result == icc(np.delete(WINE, 3, axis=0), form=form)  # type: ignore[arg-type]
    as_none = [[None if math.isnan(v) else v for v in row] for row in with_gap]
    assert icc(as_none, form="ICC2") == icc(with_gap, form="ICC2")


def test_icc_by_hand_from_the_mean_squares() -> None:
    # Shrout & Fleiss Table 2 mean squares, computed by hand: BMS = 11.2417, WMS = 6.2639,
    # JMS = 32.4861, EMS = 1.0194 (the paper prints 11.24, 6.26, 32.49, 1.02).
    data = np.array(SHROUT_FLEISS, dtype=float)
    n, k = data.shape
    grand = data.mean()
    bms = k * np.sum((data.mean(axis=1) - grand) ** 2) / (n - 1)
    jms = n * np.sum((data.mean(axis=0) - grand) ** 2) / (k - 1)
    wms = (np.sum((data - grand) ** 2) - bms * (n - 1)) / (n * (k - 1))
    ems = (np.sum((data - grand) ** 2) - bms * (n - 1) - jms * (k - 1)) / ((n - 1) * (k - 1))
    assert (bms, wms, jms, ems) == pytest.approx((11.24, 6.26, 32.49, 1.02), abs=5e-3)
    assert icc(data, form="ICC1").value == pytest.approx((bms - wms) / (bms + (k - 1) * wms), abs=1e-12)
    assert icc(data, form="ICC2").value == pytest.approx(
        (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n), abs=1e-12
    )
    assert icc(data, form="ICC3k").value == pytest.approx((bms - ems) / bms, abs=1e-12)


def test_icc_of_identical_raters_is_one() -> None:
    for form in ICC_FORMS:
        result = icc([[1, 1, 1], [4, 4, 4], [2, 2, 2], [7, 7, 7]], form=form)  # type: ignore[arg-type]
        assert (result.value, result.ci_low, result.ci_high, result.p_value) == (1.0, 1.0, 1.0, 0.0)


def test_a_constant_rater_offset_lowers_absolute_agreement_but_not_consistency() -> None:
    ratings = [[1, 3], [4, 6], [2, 4], [7, 9]]
    assert icc(ratings, form="ICC3").value == 1.0
    assert icc(ratings, form="ICC3k").value == 1.0
    absolute = icc(ratings, form="ICC2")
    assert absolute.value < 1.0
    assert absolute.ci_low < absolute.value < absolute.ci_high < 1.0


def test_the_icc_does_not_depend_on_the_order_of_subjects_or_raters() -> None:
    shuffled = np.array(SHROUT_FLEISS, dtype=float)[[5, 0, 3, 1, 4, 2]][:, [2, 0, 3, 1]]
    for form in ICC_FORMS:
        moved, original = icc(shuffled, form=form), icc(SHROUT_FLEISS, form=form)  # type: ignore[arg-type]
        assert (moved.value, moved.ci_low, moved.ci_high, moved.p_value) == pytest.approx(
            (original.value, original.ci_low, original.ci_high, original.p_value), abs=1e-12
        )


def test_a_smaller_alpha_widens_the_icc_interval() -> None:
    for form in ICC_FORMS:
        wide = icc(ANXIETY, form=form, alpha=0.01)  # type: ignore[arg-type]
        narrow = icc(ANXIETY, form=form, alpha=0.10)  # type: ignore[arg-type]
        assert wide.ci_low < narrow.ci_low < narrow.value < narrow.ci_high < wide.ci_high


@pytest.mark.parametrize(
    ("ratings", "kwargs", "message"),
    [
        ([[1, 2], [3, 4]], {"form": "ICC4"}, "form must be"),
        ([[1], [2], [3]], {}, "at least two raters"),
        ([[1, 2], [3, None]], {}, "at least two subjects rated by every rater"),
        ([[1, 2], [2, 1]], {}, "same mean rating"),
        ([[1, "x"], [2, 3]], {}, "must hold numbers"),
        ([[1, float("inf")], [2, 3]], {}, "infinite"),
        ([[1, 2], [3]], {}, "lengths"),
        ([[1, 2], [3, 4]], {"alpha": -0.1}, "alpha"),
    ],
)
def test_icc_rejects_bad_input(ratings: object, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        icc(ratings, **kwargs)  # type: ignore[arg-type]


# --- Bland–Altman -------------------------------------------------------------------------------


def test_bland_altman_reproduces_the_lancet_example() -> None:
    # Bland & Altman 1986: mean difference −2.1 l/min, SD 38.8; with 2 SD the paper's limits are
    # −79.7 and 75.5 and the 95 % CI of the lower limit is −114.3 to −45.1 (t16 · √(3s²/n)).
    result = bland_altman(WRIGHT, MINI_WRIGHT)
    assert isinstance(result, BlandAltman)
    assert result.n == 17
    assert result.mean_difference == pytest.approx(-2.1, abs=0.05)
    assert result.sd_difference == pytest.approx(38.8, abs=0.05)
    # The paper's limits come from the rounded mean and SD.
    rounded_mean, rounded_sd = round(result.mean_difference, 1), round(result.sd_difference, 1)
    assert rounded_mean - 2 * rounded_sd == pytest.approx(-79.7, abs=1e-9)
    assert rounded_mean + 2 * rounded_sd == pytest.approx(75.5, abs=1e-9)
    lower_half_width = (result.lower_limit_ci[1] - result.lower_limit_ci[0]) / 2
    assert lower_half_width == pytest.approx((114.3 - 45.1) / 2, abs=0.1)


def test_bland_altman_limits_are_mean_plus_minus_1_96_sd() -> None:
    result = bland_altman(WRIGHT, MINI_WRIGHT)
    differences = np.array(WRIGHT, dtype=float) - np.array(MINI_WRIGHT, dtype=float)
    assert result.mean_difference == pytest.approx(differences.mean(), abs=1e-12)
    assert result.sd_difference == pytest.approx(differences.std(ddof=1), abs=1e-12)
    assert result.lower_limit == pytest.approx(differences.mean() - 1.96 * differences.std(ddof=1), abs=1e-12)
    assert result.upper_limit == pytest.approx(differences.mean() + 1.96 * differences.std(ddof=1), abs=1e-12)
    assert result.differences == tuple(differences)
    assert result.averages[0] == (494 + 512) / 2
    half_width = scipy_stats.t.ppf(0.975, 16) * differences.std(ddof=1) / math.sqrt(17)
    assert result.mean_difference_ci == pytest.approx(
        (differences.mean() - half_width, differences.mean() + half_width), abs=1e-12
    )
    assert result.as_dict()["upper_limit"] == result.upper_limit


def test_swapping_the_methods_mirrors_the_limits() -> None:
    forward, backward = bland_altman(WRIGHT, MINI_WRIGHT), bland_altman(MINI_WRIGHT, WRIGHT)
    assert backward.mean_difference == pytest.approx(-forward.mean_difference)
    assert backward.sd_difference == pytest.approx(forward.sd_difference)
    assert backward.lower_limit == pytest.approx(-forward.upper_limit)
    assert backward.upper_limit == pytest.approx(-forward.lower_limit)


def test_a_constant_offset_gives_zero_width_limits() -> None:
    result = bland_altman([10.0, 12.5, 9.0, 14.0], [9.0, 11.5, 8.0, 13.0])
    assert (result.mean_difference, result.sd_difference) == (1.0, 0.0)
    assert result.lower_limit == result.upper_limit == 1.0
    assert result.lower_limit_ci == (1.0, 1.0)


def test_bland_altman_leaves_out_incomplete_pairs() -> None:
    with_gaps = bland_altman([*WRIGHT, None, 300.0], [*MINI_WRIGHT, 310.0, float("nan")])
    assert with_gaps == bland_altman(WRIGHT, MINI_WRIGHT)


def test_a_smaller_alpha_widens_the_bland_altman_intervals_but_not_the_limits() -> None:
    wide, narrow = bland_altman(WRIGHT, MINI_WRIGHT, alpha=0.01), bland_altman(WRIGHT, MINI_WRIGHT)
    assert (wide.lower_limit, wide.upper_limit) == (narrow.lower_limit, narrow.upper_limit)
    assert wide.upper_limit_ci[0] < narrow.upper_limit_ci[0] and wide.upper_limit_ci[1] > narrow.upper_limit_ci[1]
    assert wide.mean_difference_ci[0] < narrow.mean_difference_ci[0]


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "same subjects"),
        ([1.0, None], [2.0, 3.0], "at least two complete pairs"),
        ([], [], "at least two complete pairs"),
        ([1.0, "x"], [1.0, 2.0], "must hold numbers"),
        ([1.0, float("inf")], [1.0, 2.0], "infinite"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "one-dimensional"),
        (5.0, [1.0], "sequence of measurements"),
    ],
)
def test_bland_altman_rejects_bad_input(a: object, b: object, message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        bland_altman(a, b)


def test_bland_altman_rejects_a_bad_alpha() -> None:
    with pytest.raises(StatsInputError, match="alpha"):
        bland_altman(WRIGHT, MINI_WRIGHT, alpha=1.0)
