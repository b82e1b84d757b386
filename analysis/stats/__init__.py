"""analysis.stats: the statistics of the trial, as a public library.

Statisticians call it from notebooks and the reports call it from the
database; it imports without Django settings. Names and return shapes are a
contract: `Estimate` (value, ci_low, ci_high, se, p_value) and `TestResult`
(statistic, p_value); 95 % intervals unless `alpha` says otherwise.
statsmodels, scipy and lifelines do the work where they already do it; what
no maintained library does (DeLong, Gwet's AC1, Lan–DeMets boundaries) is
written here and tested against published values."""

from analysis.stats.core import DEFAULT_ALPHA, Estimate, StatsInputError, TestResult

__all__ = ["DEFAULT_ALPHA", "Estimate", "StatsInputError", "TestResult"]
