"""Agreement between raters and between methods: Cohen's (weighted) kappa,
Fleiss' kappa, Gwet's AC1, the Shrout & Fleiss intraclass correlations and
Bland–Altman limits of agreement.

statsmodels computes Cohen's kappa with its variances (Fleiss, Cohen & Everitt
1969, as SAS PROC FREQ) and the Fleiss kappa point estimate. No maintained
Python library gives a standard error for Fleiss' kappa, Gwet's AC1 or the ICC
confidence intervals, so those are written here from the papers and checked
against R's irr, irrCAC and psych.

Conventions: kappa-type intervals are clipped to [-1, 1] (irrCAC clips the
upper limit at 1); p-values test "coefficient = 0" and are two-sided, except the
ICC's, which is the one-sided F test of Shrout & Fleiss."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.inter_rater import cohens_kappa as statsmodels_cohens_kappa
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa

from analysis.stats.core import DEFAULT_ALPHA, Estimate, StatsInputError, check_alpha

KappaWeights = Literal["linear", "quadratic"]
IccForm = Literal["ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"]

ICC_FORMS: tuple[str, ...] = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")

# Bland & Altman's 95 % limits of agreement are mean ± 1.96 SD whatever the
# confidence level asked for the intervals around them.
LIMITS_OF_AGREEMENT_SD = 1.96


# --- shared helpers -----------------------------------------------------------------------------


def _count_table(values: Any, name: str) -> np.ndarray:
    """A two-dimensional, non-empty array of finite, non-negative counts."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise StatsInputError(f"{name} must be a rectangular table of counts ({error}).") from None
    if array.ndim != 2 or array.size == 0:
        raise StatsInputError(f"{name} must be a non-empty two-dimensional table (got shape {array.shape}).")
    if not np.all(np.isfinite(array)):
        raise StatsInputError(f"{name} contains missing or infinite counts.")
    if np.any(array < 0):
        raise StatsInputError(f"{name} contains negative counts.")
    return array


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _rows(ratings: Any, name: str) -> list[list[Any]]:
    """Subjects × raters as a list of equally long rows (a DataFrame, array or nested sequence)."""
    if hasattr(ratings, "to_numpy"):
        ratings = ratings.to_numpy(dtype=object)
    if isinstance(ratings, str | bytes) or not isinstance(ratings, Iterable):
        raise StatsInputError(f"{name} must be a table of subjects (rows) × raters (columns).")
    rows: list[list[Any]] = []
    for row in ratings:
        if isinstance(row, str | bytes) or not isinstance(row, Iterable):
            raise StatsInputError(f"{name} must be a table of subjects (rows) × raters (columns).")
        rows.append(list(row))
    if not rows or not rows[0]:
        raise StatsInputError(f"{name} is empty.")
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise StatsInputError(
            f"Every subject needs one column per rater; the rows of {name} have lengths {sorted(widths)}."
        )
    return rows


def _kappa_interval(value: float, se: float, quantile: float) -> tuple[float, float]:
    return max(-1.0, value - quantile * se), min(1.0, value + quantile * se)


def _t_test_two_sided(value: float, se: float, degrees_of_freedom: int) -> float:
    if se == 0.0:
        return 0.0 if value != 0.0 else 1.0
    return float(2.0 * scipy_stats.t.sf(abs(value / se), degrees_of_freedom))


def _gwet_linearised_se(value: float, subject_terms: np.ndarray, subject_chance: np.ndarray, chance: float) -> float:
    """Gwet's (2008, 2014 §5) linearisation variance of a chance-corrected
    coefficient: v = Σ (c*_i − c)² / (n(n−1)), c*_i = c_i − 2(1 − c)(pe_i − pe)/(1 − pe),
    without finite-population correction (irrCAC's N = Inf)."""
    n = len(subject_terms)
    adjusted = subject_terms - 2.0 * (1.0 - value) * (subject_chance - chance) / (1.0 - chance)
    return math.sqrt(float(np.sum((adjusted - value) ** 2)) / (n * (n - 1)))


# --- Cohen's kappa ------------------------------------------------------------------------------


def cohen_kappa(table: Any, weights: KappaWeights | None = None, alpha: float = DEFAULT_ALPHA) -> Estimate:
    """Cohen's kappa for two raters from a square table of counts (rows = first
    rater, columns = second rater, categories in the same order).

    `weights=None` is Cohen's (1960) kappa; "linear" (Cicchetti–Allison) and
    "quadratic" (Fleiss–Cohen) give Cohen's (1968) weighted kappa, with the
    categories taken as equally spaced in the order given. Computed by
    statsmodels (`cohens_kappa`): `se` is the large-sample standard error of
    Fleiss, Cohen & Everitt (1969) and the interval is kappa ± z·se, as SAS PROC
    FREQ; `p_value` is two-sided for kappa = 0 using the variance under that
    null, as SAS and R's irr::kappa2."""
    alpha = check_alpha(alpha)
    if weights not in (None, "linear", "quadratic"):
        raise StatsInputError(f'weights must be None, "linear" or "quadratic" (got {weights!r}).')
    counts = _count_table(table, "table")
    rows, columns = counts.shape
    if rows != columns:
        raise StatsInputError(f"table must be square, the same categories for both raters (got {rows}×{columns}).")
    if rows < 2:
        raise StatsInputError("table needs at least two categories.")
    if counts.sum() == 0:
        raise StatsInputError("table holds no ratings (all counts are zero).")
    occupied_rows = np.flatnonzero(counts.sum(axis=1))
    occupied_columns = np.flatnonzero(counts.sum(axis=0))
    if len(occupied_rows) == 1 and np.array_equal(occupied_rows, occupied_columns):
        raise StatsInputError(
            "Both raters used a single, identical category for every subject: chance agreement is 1 "
            "and kappa is undefined."
        )
    result = statsmodels_cohens_kappa(counts, wt=weights)
    value = float(result.kappa)
    se = math.sqrt(max(float(result.var_kappa), 0.0))
    low, high = _kappa_interval(value, se, float(scipy_stats.norm.ppf(1.0 - alpha / 2.0)))
    return Estimate(value=value, ci_low=low, ci_high=high, se=se, p_value=float(result.pvalue_two_sided))


# --- Fleiss' kappa ------------------------------------------------------------------------------


def fleiss_kappa(counts: Any, alpha: float = DEFAULT_ALPHA) -> Estimate:
    """Fleiss' (1971) kappa for a fixed number of raters per subject, from a
    subjects × categories table of how many raters put each subject in each
    category (every row must sum to the same number of raters, at least 2).

    The point estimate is statsmodels' `fleiss_kappa`. `se` and the interval
    are Gwet's (2014) linearisation variance, which does not assume kappa = 0,
    with a t quantile on n − 1 degrees of freedom, as irrCAC's
    fleiss.kappa.dist. `p_value` is two-sided for kappa = 0 with the
    large-sample variance under that null of Fleiss, Nee & Landis (1979), as
    R's irr::kappam.fleiss."""
    alpha = check_alpha(alpha)
    table = _count_table(counts, "counts")
    subjects = table.shape[0]
    if subjects < 2:
        raise StatsInputError(f"counts needs at least two subjects (got {subjects}).")
    raters_per_subject = table.sum(axis=1)
    raters = float(raters_per_subject[0])
    if not np.allclose(raters_per_subject, raters):
        raise StatsInputError(
            "Fleiss' kappa needs the same number of raters for every subject; the row totals range from "
            f"{raters_per_subject.min():g} to {raters_per_subject.max():g} (use gwet_ac1 for missing ratings)."
        )
    if raters < 2:
        raise StatsInputError(f"Every subject needs at least two ratings (the rows sum to {raters:g}).")
    proportions = table.sum(axis=0) / (subjects * raters)
    chance = float(np.sum(proportions**2))
    if chance >= 1.0 - 1e-12:
        raise StatsInputError("Every rating falls in one category: chance agreement is 1 and kappa is undefined.")
    value = float(statsmodels_fleiss_kappa(table, method="fleiss"))

    subject_agreement = np.sum(table * (table - 1.0), axis=1) / (raters * (raters - 1.0))
    subject_terms = (subject_agreement - chance) / (1.0 - chance)
    subject_chance = table @ proportions / raters
    se = _gwet_linearised_se(value, subject_terms, subject_chance, chance)
    quantile = float(scipy_stats.t.ppf(1.0 - alpha / 2.0, subjects - 1))
    low, high = _kappa_interval(value, se, quantile)

    spread = proportions * (1.0 - proportions)
    null_variance = (
        2.0
        / (float(np.sum(spread)) ** 2 * subjects * raters * (raters - 1.0))
        * (float(np.sum(spread)) ** 2 - float(np.sum(spread * ((1.0 - proportions) - proportions))))
    )
    p_value = float(2.0 * scipy_stats.norm.sf(abs(value) / math.sqrt(null_variance)))
    return Estimate(value=value, ci_low=low, ci_high=high, se=se, p_value=p_value)


# --- Gwet's AC1 ---------------------------------------------------------------------------------


def gwet_ac1(ratings: Any, alpha: float = DEFAULT_ALPHA, categories: Sequence[Hashable] | None = None) -> Estimate:
    """Gwet's AC1 (Gwet 2008, Br J Math Stat Psychol 61:29–48; Handbook of
    Inter-Rater Reliability, 4th ed., 2014) for any number of raters, from a
    subjects × raters table of category labels; `None` (or NaN) is a missing
    rating, so raters need not rate every subject.

    `categories` lists the possible categories; by default only those used are
    counted, which changes the chance agreement when a category is never used.
    Subjects with no rating are dropped; subjects with one rating count towards
    the category prevalences but not the observed agreement, as irrCAC's
    gwet.ac1.raw. `se` is Gwet's linearisation variance (no finite-population
    correction), the interval uses a t quantile on n − 1 degrees of freedom
    (clipped to [-1, 1]) and `p_value` is the two-sided t test of AC1 = 0."""
    alpha = check_alpha(alpha)
    rows = _rows(ratings, "ratings")
    rated_rows = [[value for value in row if not _is_missing(value)] for row in rows]
    rated_rows = [row for row in rated_rows if row]
    used = {value for row in rated_rows for value in row}
    if categories is None:
        labels = sorted(used, key=repr)
        if len(labels) < 2:
            raise StatsInputError(
                "All ratings fall in one category; pass categories= with the possible categories so that "
                "chance agreement can be computed."
            )
    else:
        labels = list(dict.fromkeys(categories))
        if len(labels) < 2:
            raise StatsInputError("categories must list at least two possible categories.")
        unknown = used - set(labels)
        if unknown:
            raise StatsInputError(f"ratings holds categories not in categories: {sorted(map(repr, unknown))[:5]}.")
    subjects = len(rated_rows)
    if subjects < 2:
        raise StatsInputError(f"ratings needs at least two rated subjects (got {subjects}).")
    column = {label: index for index, label in enumerate(labels)}
    q = len(labels)
    table = np.zeros((subjects, q))
    for subject, row in enumerate(rated_rows):
        for value in row:
            table[subject, column[value]] += 1.0
    per_subject = table.sum(axis=1)
    paired = per_subject >= 2
    paired_count = int(paired.sum())
    if paired_count == 0:
        raise StatsInputError("No subject was rated by two or more raters; agreement cannot be measured.")

    pair_agreement = np.sum(table * (table - 1.0), axis=1)
    subject_agreement = np.zeros(subjects)
    subject_agreement[paired] = pair_agreement[paired] / (per_subject[paired] * (per_subject[paired] - 1.0))
    observed = float(subject_agreement[paired].mean())
    prevalence = (table / per_subject[:, None]).mean(axis=0)
    chance = float(np.sum(prevalence * (1.0 - prevalence)) / (q - 1))
    value = (observed - chance) / (1.0 - chance)

    subject_terms = (subjects / paired_count) * (subject_agreement - chance * paired) / (1.0 - chance)
    subject_chance = (table @ (1.0 - prevalence)) / per_subject / (q - 1)
    se = _gwet_linearised_se(value, subject_terms, subject_chance, chance)
    quantile = float(scipy_stats.t.ppf(1.0 - alpha / 2.0, subjects - 1))
    low, high = _kappa_interval(value, se, quantile)
    p_value = _t_test_two_sided(value, se, subjects - 1)
    return Estimate(value=value, ci_low=low, ci_high=high, se=se, p_value=p_value)


# --- intraclass correlation ---------------------------------------------------------------------


def _spearman_brown(reliability: float, raters: int) -> float:
    return reliability * raters / (1.0 + (raters - 1.0) * reliability)


def _single_from_f(f_ratio: float, raters: int) -> float:
    """(F − 1) / (F + k − 1), the single-rater ICC bound for an F bound (1 when F is infinite)."""
    return 1.0 if math.isinf(f_ratio) else (f_ratio - 1.0) / (f_ratio + raters - 1.0)


def icc(ratings: Any, form: IccForm = "ICC1", alpha: float = DEFAULT_ALPHA) -> Estimate:
    """Intraclass correlation of Shrout & Fleiss (Psychol Bull 1979;86:420–428)
    from a subjects × raters table of numbers.

    ICC1: one-way random effects (each subject rated by different raters);
    ICC2: two-way random effects, absolute agreement; ICC3: two-way mixed,
    consistency; the "k" forms are the reliability of the mean of the k raters.
    Subjects with any missing rating (None or NaN) are left out (complete
    cases), as psych::ICC and irr::icc. The interval is F-based (Shrout &
    Fleiss; for ICC2 with Satterthwaite's degrees of freedom, and ICC2k its
    Spearman–Brown transform), as psych::ICC; `se` is None; `p_value` is the
    one-sided F test of ICC = 0."""
    alpha = check_alpha(alpha)
    if form not in ICC_FORMS:
        raise StatsInputError(f"form must be one of {', '.join(ICC_FORMS)} (got {form!r}).")
    rows = _rows(ratings, "ratings")
    try:
        data = np.array([[np.nan if _is_missing(v) else v for v in row] for row in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise StatsInputError("ratings must hold numbers (or None for a missing rating).") from None
    if np.any(np.isinf(data)):
        raise StatsInputError("ratings contains infinite values.")
    data = data[~np.isnan(data).any(axis=1)]
    n, k = data.shape
    if k < 2:
        raise StatsInputError(f"ratings needs at least two raters (got {k}).")
    if n < 2:
        raise StatsInputError(f"ratings needs at least two subjects rated by every rater (got {n}).")

    grand = data.mean()
    between_subjects = k * float(np.sum((data.mean(axis=1) - grand) ** 2))
    between_raters = n * float(np.sum((data.mean(axis=0) - grand) ** 2))
    total = float(np.sum((data - grand) ** 2))
    ms_subjects = between_subjects / (n - 1)
    ms_within = max(total - between_subjects, 0.0) / (n * (k - 1))
    ms_raters = between_raters / (k - 1)
    ms_error = max(total - between_subjects - between_raters, 0.0) / ((n - 1) * (k - 1))
    if ms_subjects == 0.0:
        raise StatsInputError("Every subject has the same mean rating: the ICC is undefined.")

    upper = 1.0 - alpha / 2.0
    if form in ("ICC1", "ICC1k"):
        residual, df_residual = ms_within, n * (k - 1)
    else:
        residual, df_residual = ms_error, (n - 1) * (k - 1)
    f_ratio = math.inf if residual == 0.0 else ms_subjects / residual
    p_value = 0.0 if math.isinf(f_ratio) else float(scipy_stats.f.sf(f_ratio, n - 1, df_residual))
    f_low = f_ratio / float(scipy_stats.f.ppf(upper, n - 1, df_residual))
    f_high = f_ratio * float(scipy_stats.f.ppf(upper, df_residual, n - 1))

    if form == "ICC1":
        value = (ms_subjects - ms_within) / (ms_subjects + (k - 1) * ms_within)
        low, high = _single_from_f(f_low, k), _single_from_f(f_high, k)
    elif form == "ICC3":
        value = (ms_subjects - ms_error) / (ms_subjects + (k - 1) * ms_error)
        low, high = _single_from_f(f_low, k), _single_from_f(f_high, k)
    elif form in ("ICC1k", "ICC3k"):
        value = (ms_subjects - residual) / ms_subjects
        low, high = 1.0 - 1.0 / f_low, 1.0 - 1.0 / f_high
    else:
        single = (ms_subjects - ms_error) / (ms_subjects + (k - 1) * ms_error + k * (ms_raters - ms_error) / n)
        low, high = _icc2_interval(single, n, k, ms_subjects, ms_raters, ms_error, upper)
        value = single
        if form == "ICC2k":
            value = (ms_subjects - ms_error) / (ms_subjects + (ms_raters - ms_error) / n)
            low, high = _spearman_brown(low, k), _spearman_brown(high, k)
    return Estimate(value=float(value), ci_low=float(low), ci_high=float(high), se=None, p_value=p_value)


def _icc2_interval(
    single: float, n: int, k: int, ms_subjects: float, ms_raters: float, ms_error: float, upper: float
) -> tuple[float, float]:
    """Shrout & Fleiss's interval for ICC(2,1), with Satterthwaite's degrees of
    freedom v; as the error mean square tends to 0, v tends to k − 1."""
    if ms_error == 0.0:
        dof = float(k - 1)
    else:
        raters_f = ms_raters / ms_error
        centre = n * (1.0 + (k - 1) * single) - k * single
        numerator = (k - 1) * (n - 1) * (k * single * raters_f + centre) ** 2
        denominator = (n - 1) * k**2 * single**2 * raters_f**2 + centre**2
        dof = numerator / denominator
    f_upper = float(scipy_stats.f.ppf(upper, n - 1, dof))
    f_lower = float(scipy_stats.f.ppf(upper, dof, n - 1))
    spread = k * ms_raters + (k * n - k - n) * ms_error
    low = n * (ms_subjects - f_upper * ms_error) / (f_upper * spread + n * ms_subjects)
    high = n * (f_lower * ms_subjects - ms_error) / (spread + n * f_lower * ms_subjects)
    return low, high


# --- Bland–Altman -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlandAltman:
    """Limits of agreement between two methods (differences a − b).

    `lower_limit`/`upper_limit` are mean ± 1.96 SD; the intervals are (1 −
    alpha) confidence intervals of the mean difference and of each limit.
    `averages` and `differences` are the points of the Bland–Altman plot."""

    n: int
    mean_difference: float
    sd_difference: float
    lower_limit: float
    upper_limit: float
    mean_difference_ci: tuple[float, float]
    lower_limit_ci: tuple[float, float]
    upper_limit_ci: tuple[float, float]
    averages: tuple[float, ...] = field(repr=False)
    differences: tuple[float, ...] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _measurements(values: Any, name: str) -> np.ndarray:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise StatsInputError(f"{name} must be a sequence of measurements.")
    items = list(values.to_numpy() if hasattr(values, "to_numpy") else values)
    try:
        array = np.array([np.nan if _is_missing(v) else v for v in items], dtype=np.float64)
    except (TypeError, ValueError):
        raise StatsInputError(f"{name} must hold numbers (or None for a missing measurement).") from None
    if array.ndim != 1:
        raise StatsInputError(f"{name} must be one-dimensional (got shape {array.shape}).")
    if np.any(np.isinf(array)):
        raise StatsInputError(f"{name} contains infinite values.")
    return array


def bland_altman(a: Any, b: Any, alpha: float = DEFAULT_ALPHA) -> BlandAltman:
    """Bland & Altman (Lancet 1986;327:307–310) limits of agreement of method
    `a` against method `b`: the differences are a − b, the limits mean ± 1.96
    SD (SD with n − 1). Pairs with a missing value (None or NaN) are left out.
    The interval of the mean difference is the t interval; that of each limit is
    limit ± t(n − 1)·√(3 SD² / n) (Bland & Altman 1986 and Stat Methods Med Res
    1999;8:135–160)."""
    alpha = check_alpha(alpha)
    first, second = _measurements(a, "a"), _measurements(b, "b")
    if len(first) != len(second):
        raise StatsInputError(f"a and b must pair the same subjects: a has {len(first)} values, b has {len(second)}.")
    complete = ~(np.isnan(first) | np.isnan(second))
    first, second = first[complete], second[complete]
    n = len(first)
    if n < 2:
        raise StatsInputError(f"Bland–Altman needs at least two complete pairs (got {n}).")
    differences = first - second
    mean = float(differences.mean())
    sd = float(differences.std(ddof=1))
    quantile = float(scipy_stats.t.ppf(1.0 - alpha / 2.0, n - 1))
    mean_half_width = quantile * sd / math.sqrt(n)
    limit_half_width = quantile * math.sqrt(3.0 * sd**2 / n)
    lower, upper = mean - LIMITS_OF_AGREEMENT_SD * sd, mean + LIMITS_OF_AGREEMENT_SD * sd
    return BlandAltman(
        n=n,
        mean_difference=mean,
        sd_difference=sd,
        lower_limit=lower,
        upper_limit=upper,
        mean_difference_ci=(mean - mean_half_width, mean + mean_half_width),
        lower_limit_ci=(lower - limit_half_width, lower + limit_half_width),
        upper_limit_ci=(upper - limit_half_width, upper + limit_half_width),
        averages=tuple(float(v) for v in (first + second) / 2.0),
        differences=tuple(float(v) for v in differences),
    )
