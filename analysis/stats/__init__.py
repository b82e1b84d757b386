"""analysis.stats: the statistics of the trial, as a public library.

Statisticians call it from notebooks and the reports call it from the
database; it imports without Django settings. Names and return shapes are a
contract: `Estimate` (value, ci_low, ci_high, se, p_value) and `TestResult`
(statistic, p_value); 95 % intervals unless `alpha` says otherwise.
statsmodels, scipy and lifelines do the work where they already do it; what
no maintained library does (DeLong, Gwet's AC1, Lan–DeMets boundaries) is
written here and tested against published values."""

from analysis.stats.accuracy import (
    DelongResult,
    DiagnosticAccuracy,
    delong_test,
    diagnostic_accuracy,
    mcnemar,
    proportion_ci,
    roc_auc,
)
from analysis.stats.agreement import BlandAltman, bland_altman, cohen_kappa, fleiss_kappa, gwet_ac1, icc
from analysis.stats.arms import (
    LogisticRegressionResult,
    chi_square,
    fisher_exact,
    logistic_regression,
    relative_risk,
    risk_difference,
)
from analysis.stats.core import DEFAULT_ALPHA, Estimate, StatsInputError, TestResult
from analysis.stats.design import (
    GroupSequentialBounds,
    alpha_spending,
    conditional_power,
    group_sequential_bounds,
    power_two_proportions,
    sample_size_two_proportions,
)
from analysis.stats.segmentation import dice, hd95, iou
from analysis.stats.survival import KaplanMeierResult, KaplanMeierStep, cox_hazard_ratio, kaplan_meier, logrank

__all__ = [
    "DEFAULT_ALPHA",
    "BlandAltman",
    "DelongResult",
    "DiagnosticAccuracy",
    "Estimate",
    "GroupSequentialBounds",
    "KaplanMeierResult",
    "KaplanMeierStep",
    "LogisticRegressionResult",
    "StatsInputError",
    "TestResult",
    "alpha_spending",
    "bland_altman",
    "chi_square",
    "cohen_kappa",
    "conditional_power",
    "cox_hazard_ratio",
    "delong_test",
    "diagnostic_accuracy",
    "dice",
    "fisher_exact",
    "fleiss_kappa",
    "group_sequential_bounds",
    "gwet_ac1",
    "hd95",
    "icc",
    "iou",
    "kaplan_meier",
    "logistic_regression",
    "logrank",
    "mcnemar",
    "power_two_proportions",
    "proportion_ci",
    "relative_risk",
    "risk_difference",
    "roc_auc",
    "sample_size_two_proportions",
]
