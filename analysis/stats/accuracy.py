"""Diagnostic accuracy: binomial intervals, sensitivity / specificity /
predictive values, ROC AUC with DeLong's variance, the DeLong test for two
correlated AUCs, and McNemar's test for paired proportions.

statsmodels computes the binomial intervals and McNemar's test. No maintained
Python library computes DeLong's variance, so it is written here, following
DeLong, DeLong & Clarke-Pearson (Biometrics 1988;44:837–845) with the fast
midrank algorithm of Sun & Xu (IEEE Signal Process Lett 2014;21:1389–1393),
and is checked against pROC (Robin et al., BMC Bioinformatics 2011;12:77).

Conventions: `truth` is 1 (or True) for the diseased / positive class, and a
higher score means "more likely positive"; the AUC is not flipped when it
falls below 0.5."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar
from statsmodels.stats.proportion import proportion_confint

from analysis.stats.core import DEFAULT_ALPHA, Estimate, StatsInputError, TestResult, check_alpha

ProportionMethod = Literal["wilson", "exact"]
# Counts may come from numpy or pandas sums; a float is accepted only when it is whole.
WholeNumber = int | float | np.integer[Any]

# Our method names → statsmodels' names ("beta" is Clopper–Pearson).
_PROPORTION_METHODS: dict[str, str] = {"wilson": "wilson", "exact": "beta"}


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


def _vector(values: Any, name: str) -> np.ndarray:
    """A non-empty one-dimensional array of finite numbers."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise StatsInputError(f"{name} must be one-dimensional (got shape {array.shape}).")
    if array.size == 0:
        raise StatsInputError(f"{name} is empty.")
    if array.dtype == np.bool_:
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.number):
        raise StatsInputError(f"{name} must hold numbers (got values of type {array.dtype}).")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise StatsInputError(f"{name} contains missing or infinite values; remove those subjects first.")
    return array


def _binary(values: Any, name: str) -> np.ndarray:
    """A vector of 0/1 (or False/True), returned as booleans."""
    array = _vector(values, name)
    if not np.all((array == 0) | (array == 1)):
        others = sorted({float(v) for v in array[(array != 0) & (array != 1)]})[:5]
        raise StatsInputError(f"{name} must be 0/1 or False/True (found {others}).")
    return array == 1


def _same_length(**vectors: np.ndarray) -> None:
    lengths = {name: len(vector) for name, vector in vectors.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise StatsInputError(f"The inputs must describe the same subjects: {described} values.")


# --- binomial proportions -----------------------------------------------------------------------


def proportion_ci(
    successes: WholeNumber, n: WholeNumber, method: ProportionMethod = "wilson", alpha: float = DEFAULT_ALPHA
) -> tuple[float, float]:
    """(1 − alpha) confidence interval (low, high) for the binomial proportion successes / n.

    method="wilson": Wilson's score interval without continuity correction (Wilson 1927;
    Newcombe 1998 method 3); method="exact": Clopper–Pearson (1934), the interval of R's
    `binom.test`. Computed by statsmodels' `proportion_confint` ("wilson" / "beta")."""
    alpha = check_alpha(alpha)
    successes = _count(successes, "successes")
    n = _count(n, "n")
    if n == 0:
        raise StatsInputError("n must be at least 1: a proportion of no subjects has no interval.")
    if successes > n:
        raise StatsInputError(f"successes ({successes}) cannot exceed n ({n}).")
    if method not in _PROPORTION_METHODS:
        raise StatsInputError(f"Unknown method {method!r}; use one of {sorted(_PROPORTION_METHODS)}.")
    low, high = proportion_confint(successes, n, alpha=alpha, method=_PROPORTION_METHODS[method])
    # The exact limits at 0/n and n/n are 0 and 1 by definition; clip float noise elsewhere.
    low = 0.0 if successes == 0 else min(max(float(low), 0.0), 1.0)
    high = 1.0 if successes == n else min(max(float(high), 0.0), 1.0)
    return low, high


def _proportion(successes: int, n: int, method: ProportionMethod, alpha: float) -> Estimate | None:
    if n == 0:
        return None
    low, high = proportion_ci(successes, n, method=method, alpha=alpha)
    return Estimate(value=successes / n, ci_low=low, ci_high=high)


@dataclass(frozen=True)
class DiagnosticAccuracy:
    """The 2×2 table of a binary test against the reference standard, and the four
    proportions with their confidence intervals.

    A proportion whose denominator is zero is None, not an error: with no diseased
    subjects sensitivity is undefined (None) while specificity still has a value, and
    with no positive calls the PPV is None. An interim report then shows what can be
    estimated instead of failing. `se` of each Estimate is None: the intervals are
    Wilson or Clopper–Pearson, not value ± z·SE."""

    tp: int
    fp: int
    fn: int
    tn: int
    sensitivity: Estimate | None  # tp / (tp + fn)
    specificity: Estimate | None  # tn / (tn + fp)
    ppv: Estimate | None  # tp / (tp + fp)
    npv: Estimate | None  # tn / (tn + fn)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def diagnostic_accuracy(
    truth: Sequence[int] | Sequence[bool] | np.ndarray,
    predicted: Sequence[int] | Sequence[bool] | np.ndarray,
    alpha: float = DEFAULT_ALPHA,
    method: ProportionMethod = "wilson",
) -> DiagnosticAccuracy:
    """Sensitivity, specificity, PPV and NPV of `predicted` against `truth` (both 0/1 or
    bool, one entry per subject, 1 = disease present / test positive), each an Estimate
    with a (1 − alpha) interval by `proportion_ci(method=...)` (Wilson by default; "exact"
    for Clopper–Pearson). Undefined proportions are None (see DiagnosticAccuracy)."""
    alpha = check_alpha(alpha)
    if method not in _PROPORTION_METHODS:
        raise StatsInputError(f"Unknown method {method!r}; use one of {sorted(_PROPORTION_METHODS)}.")
    truth_array = _binary(truth, "truth")
    predicted_array = _binary(predicted, "predicted")
    _same_length(truth=truth_array, predicted=predicted_array)
    tp = int(np.sum(truth_array & predicted_array))
    fp = int(np.sum(~truth_array & predicted_array))
    fn = int(np.sum(truth_array & ~predicted_array))
    tn = int(np.sum(~truth_array & ~predicted_array))
    return DiagnosticAccuracy(
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        sensitivity=_proportion(tp, tp + fn, method, alpha),
        specificity=_proportion(tn, tn + fp, method, alpha),
        ppv=_proportion(tp, tp + fp, method, alpha),
        npv=_proportion(tn, tn + fn, method, alpha),
    )


# --- ROC AUC and DeLong -------------------------------------------------------------------------


def _delong_placements(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components for k score vectors on the same subjects.

    scores: (k, subjects); truth: (subjects,) booleans. Returns aucs (k,), the positives'
    placements (k, m) — the share of negatives each positive outscores, ties counting one
    half — and the negatives' placements (k, n) — the share of positives that outscore
    each negative. Sun & Xu (2014): with midranks within the positives (tx), within the
    negatives (ty) and in the pooled sample (tz), a positive's placement is
    (tz − tx) / n and a negative's is 1 − (tz − ty) / m; the AUC is the positives' mean
    placement."""
    positives = scores[:, truth]  # (k, m)
    negatives = scores[:, ~truth]  # (k, n)
    m = positives.shape[1]
    n = negatives.shape[1]
    pooled = np.concatenate([positives, negatives], axis=1)  # (k, m + n)
    ranks_within_positives = scipy_stats.rankdata(positives, method="average", axis=1)
    ranks_within_negatives = scipy_stats.rankdata(negatives, method="average", axis=1)
    ranks_pooled = scipy_stats.rankdata(pooled, method="average", axis=1)
    positive_placements = (ranks_pooled[:, :m] - ranks_within_positives) / n
    negative_placements = 1.0 - (ranks_pooled[:, m:] - ranks_within_negatives) / m
    aucs = positive_placements.mean(axis=1)
    return aucs, positive_placements, negative_placements


def _delong_variance(positive_placements: np.ndarray, negative_placements: np.ndarray) -> float:
    """DeLong variance of one AUC (or of a difference, given differences of placements):
    S10 / m + S01 / n with the sample variances (n − 1 denominators) of the placements."""
    m = positive_placements.size
    n = negative_placements.size
    return float(np.var(positive_placements, ddof=1) / m + np.var(negative_placements, ddof=1) / n)


def _roc_inputs(truth: Any, score_vectors: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    truth_array = _binary(truth, "truth")
    arrays = {name: _vector(values, name) for name, values in score_vectors.items()}
    _same_length(truth=truth_array, **arrays)
    positives = int(truth_array.sum())
    negatives = truth_array.size - positives
    if positives < 2 or negatives < 2:
        raise StatsInputError(
            "DeLong's variance needs at least two positive and two negative subjects "
            f"(got {positives} positive, {negatives} negative)."
        )
    return truth_array, np.vstack(list(arrays.values()))


def roc_auc(
    truth: Sequence[int] | Sequence[bool] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    alpha: float = DEFAULT_ALPHA,
) -> Estimate:
    """Area under the empirical ROC curve (the Mann–Whitney probability that a positive
    subject scores higher than a negative one, ties counting one half), with DeLong's
    (1988) standard error and the interval AUC ± z(1 − alpha/2)·SE clipped to [0, 1], as
    pROC's `ci.auc(method = "delong")` computes it. truth: 0/1 (1 = positive); higher
    scores mean positive. `p_value` is None."""
    alpha = check_alpha(alpha)
    truth_array, score_matrix = _roc_inputs(truth, {"scores": scores})
    aucs, positive_placements, negative_placements = _delong_placements(truth_array, score_matrix)
    auc = float(aucs[0])
    se = math.sqrt(_delong_variance(positive_placements[0], negative_placements[0]))
    z = float(scipy_stats.norm.ppf(1.0 - alpha / 2.0))
    return Estimate(value=auc, ci_low=max(0.0, auc - z * se), ci_high=min(1.0, auc + z * se), se=se)


@dataclass(frozen=True)
class DelongResult(TestResult):
    """DeLong's test for two correlated AUCs: `statistic` is z, `p_value` two-sided, and
    `difference` is AUC(a) − AUC(b) with its DeLong SE, (1 − alpha) interval and the same
    p-value."""

    difference: Estimate

    def as_dict(self) -> dict[str, float]:
        values = super().as_dict()
        values.update(
            difference=self.difference.value,
            difference_ci_low=self.difference.ci_low,
            difference_ci_high=self.difference.ci_high,
        )
        if self.difference.se is not None:
            values["difference_se"] = self.difference.se
        return values


def delong_test(
    truth: Sequence[int] | Sequence[bool] | np.ndarray,
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    alpha: float = DEFAULT_ALPHA,
) -> DelongResult:
    """DeLong, DeLong & Clarke-Pearson (1988) test of AUC(a) = AUC(b) for two scores on the
    same subjects: z = (AUC_a − AUC_b) / SE, where SE² is the DeLong variance of the
    difference (both variances and their covariance), two-sided normal p-value; the
    difference's interval is ± z(1 − alpha/2)·SE, unclipped, as pROC's `roc.test(method =
    "delong", paired = TRUE)` reports it. Two scores that rank every subject identically
    give z = 0, p = 1 (as pROC); a zero variance with a non-zero difference (e.g. a
    perfect score against a constant one) has no z and raises StatsInputError."""
    alpha = check_alpha(alpha)
    truth_array, score_matrix = _roc_inputs(truth, {"scores_a": scores_a, "scores_b": scores_b})
    aucs, positive_placements, negative_placements = _delong_placements(truth_array, score_matrix)
    difference = float(aucs[0] - aucs[1])
    variance = _delong_variance(
        positive_placements[0] - positive_placements[1], negative_placements[0] - negative_placements[1]
    )
    se = math.sqrt(variance)
    if se == 0.0:
        if difference != 0.0:
            raise StatsInputError(
                "The DeLong variance of the AUC difference is zero while the AUCs differ "
                f"({aucs[0]:.4f} vs {aucs[1]:.4f}), e.g. a perfect score against a constant one; "
                "no z-test is defined."
            )
        return DelongResult(
            statistic=0.0, p_value=1.0, difference=Estimate(value=0.0, ci_low=0.0, ci_high=0.0, se=0.0, p_value=1.0)
        )
    statistic = difference / se
    p_value = float(2.0 * scipy_stats.norm.sf(abs(statistic)))
    z = float(scipy_stats.norm.ppf(1.0 - alpha / 2.0))
    return DelongResult(
        statistic=statistic,
        p_value=p_value,
        difference=Estimate(
            value=difference, ci_low=difference - z * se, ci_high=difference + z * se, se=se, p_value=p_value
        ),
    )


# --- McNemar ------------------------------------------------------------------------------------


def _two_by_two(table: Any) -> np.ndarray:
    try:
        array = np.asarray(table, dtype=np.float64)
    except (TypeError, ValueError):
        raise StatsInputError("table must be a 2×2 table of counts.") from None
    if array.shape != (2, 2):
        raise StatsInputError(f"table must be a 2×2 table of counts (got shape {array.shape}).")
    if not np.all(np.isfinite(array)):
        raise StatsInputError("table contains missing or infinite counts.")
    if np.any(array < 0):
        raise StatsInputError("table counts must not be negative.")
    if np.any(array != np.round(array)):
        raise StatsInputError("table counts must be whole numbers.")
    return array


def mcnemar(table: Any, exact: bool = False, correction: bool = False) -> TestResult:
    """McNemar's test for paired binary outcomes (statsmodels' `mcnemar`).

    table: 2×2 counts, rows = first test (positive, negative), columns = second test; only
    the discordant cells [0][1] and [1][0] (b, c) matter. exact=False: chi-square
    (b − c)² / (b + c), or (|b − c| − 1)² / (b + c) with correction=True (R's
    `mcnemar.test(correct = TRUE)`), 1 df. exact=True: two-sided binomial test of b against
    Binomial(b + c, 1/2); `statistic` is then min(b, c). The chi-square is undefined with no
    discordant pairs (StatsInputError); the exact test then gives p = 1."""
    array = _two_by_two(table)
    if exact and correction:
        raise StatsInputError("correction applies to the chi-square version only; do not combine it with exact=True.")
    discordant = array[0, 1] + array[1, 0]
    if not exact and discordant == 0:
        raise StatsInputError(
            "No discordant pairs: McNemar's chi-square is undefined (0/0); use exact=True, which gives p = 1."
        )
    result = statsmodels_mcnemar(array, exact=exact, correction=correction)
    return TestResult(statistic=float(result.statistic), p_value=min(1.0, float(result.pvalue)))
