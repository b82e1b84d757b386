"""The two result shapes of analysis.stats: an estimate with its confidence
interval, and a test statistic with its p-value."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its (1 − alpha) confidence interval; `se` and
    `p_value` are None where the method gives none."""

    value: float
    ci_low: float
    ci_high: float
    se: float | None = None
    p_value: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "se": self.se,
            "p_value": self.p_value,
        }


@dataclass(frozen=True)
class TestResult:
    """A test statistic and its p-value."""

    __test__ = False  # not a pytest test class

    statistic: float
    p_value: float

    def as_dict(self) -> dict[str, float]:
        return {"statistic": self.statistic, "p_value": self.p_value}


class StatsInputError(ValueError):
    """The data cannot be analysed as asked (wrong shape, empty, negative
    counts…); the message says what is wrong."""


def check_alpha(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise StatsInputError(f"alpha must lie strictly between 0 and 1 (got {alpha}).")
    return float(alpha)
