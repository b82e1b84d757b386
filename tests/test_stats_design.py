"""analysis.stats.design against published values: Lan–DeMets boundaries from gsDesign
(its documented O'Brien–Fleming-type example and its numerical-integration test fixtures)
and rpact's unit tests (Pocock- and O'Brien–Fleming-type spending at unequal timing, and a
design stopped before information fraction 1); an independent multivariate normal check
(Genz's algorithm in scipy) of the alpha each boundary spends; conditional power checked
against the canonical joint distribution of the z statistics; sample sizes against R's
power.prop.test documentation and Zar's worked examples; edge cases and bad input."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.optimize import brentq

from analysis.stats.core import StatsInputError
from analysis.stats.design import (
    GroupSequentialBounds,
    alpha_spending,
    conditional_power,
    group_sequential_bounds,
    power_two_proportions,
    sample_size_two_proportions,
)

# --- Lan–DeMets boundaries: published values ----------------------------------------------------


def test_obrien_fleming_three_equal_looks_match_gsdesign() -> None:
    # gsDesign(k = 3, test.type = 1, sfu = sfLDOF)$upper$bound = 3.7103, 2.5114, 1.9930
    # (one-sided alpha 0.025; the value quoted in the trial's analysis specification).
    bounds = group_sequential_bounds([1 / 3, 2 / 3, 1])
    assert isinstance(bounds, GroupSequentialBounds)
    assert bounds.spending == "obrien-fleming"
    assert bounds.z == pytest.approx([3.7103, 2.5114, 1.9930], abs=1e-4)
    assert bounds.timing == pytest.approx([1 / 3, 2 / 3, 1])


def test_obrien_fleming_five_equal_looks_match_gsdesign_fixture() -> None:
    # gsDesign's tests/testthat/fixtures/numint-fixtures.R, case tt4_k5_LDOF:
    # gsDesign(k = 5, test.type = 4, sfu = sfLDOF, sfl = sfLDOF)$upper$bound. With a
    # non-binding futility bound the efficacy bounds are those of the one-sided design.
    # gsDesign integrates on a coarser grid (r = 18), hence 1e-5.
    bounds = group_sequential_bounds([0.2, 0.4, 0.6, 0.8, 1.0], alpha=0.025, spending="obrien-fleming")
    assert bounds.z == pytest.approx(
        [4.876884948776, 3.357010992883, 2.680279581382, 2.289816682347, 2.031032215060], abs=1e-5
    )


def test_pocock_unequal_timing_matches_rpact() -> None:
    # rpact tests/testthat/test-f_design_group_sequential.R, design x6a:
    # getDesignGroupSequential(kMax = 3, alpha = 0.13, typeOfDesign = "asP",
    #   informationRates = c(0.35, 0.7, 1), bindingFutility = FALSE, ...)
    # criticalValues 1.5446617 1.4828682 1.4620058; alphaSpent 0.061214062 0.10266465 0.13;
    # stageLevels 0.061214062 0.069054712 0.071869812 (non-binding futility: efficacy only).
    bounds = group_sequential_bounds([0.35, 0.7, 1.0], alpha=0.13, spending="pocock")
    assert bounds.z == pytest.approx([1.5446617, 1.4828682, 1.4620058], abs=1e-6)
    assert bounds.cumulative_alpha_spent == pytest.approx([0.061214062, 0.10266465, 0.13], abs=1e-8)
    assert bounds.nominal_alpha == pytest.approx([0.061214062, 0.069054712, 0.071869812], abs=1e-8)


def test_pocock_looks_so_far_match_rpact() -> None:
    # rpact, same file, design x6b: getDesignGroupSequential(informationRates = c(0.4, 0.7),
    # typeOfDesign = "asP") (alpha 0.025, one-sided): criticalValues 2.223875 2.3050796,
    # alphaSpent 0.013078429 0.0197432, stageLevels 0.013078429 0.010581057.
    bounds = group_sequential_bounds([0.4, 0.7], spending="pocock")
    assert bounds.z == pytest.approx([2.223875, 2.3050796], abs=1e-6)
    assert bounds.cumulative_alpha_spent == pytest.approx([0.013078429, 0.0197432], abs=1e-8)
    assert bounds.nominal_alpha == pytest.approx([0.013078429, 0.010581057], abs=1e-8)


def test_obrien_fleming_unequal_timing_matches_rpact() -> None:
    # rpact, same file, design x7a: getDesignGroupSequential(kMax = 3, alpha = 0.13,
    #   typeOfDesign = "asOF", informationRates = c(0.4, 0.75, 1), bindingFutility = FALSE, ...)
    # criticalValues 2.1280732 1.4368565 1.2468994; alphaSpent 0.016665509 0.080406163 0.13;
    # stageLevels 0.016665509 0.075379384 0.1062172.
    bounds = group_sequential_bounds([0.4, 0.75, 1.0], alpha=0.13, spending="obrien-fleming")
    assert bounds.z == pytest.approx([2.1280732, 1.4368565, 1.2468994], abs=1e-6)
    assert bounds.cumulative_alpha_spent == pytest.approx([0.016665509, 0.080406163, 0.13], abs=1e-8)
    assert bounds.nominal_alpha == pytest.approx([0.016665509, 0.075379384, 0.1062172], abs=1e-7)


def test_pocock_three_equal_looks() -> None:
    # No gsDesign or rpact publication of sfLDPocock at 1/3, 2/3, 1 was found; the values
    # (2.2794, 2.2949, 2.2959) are checked here by the independent multivariate normal
    # integral, and the method by rpact's published Pocock-type values above.
    bounds = group_sequential_bounds([1 / 3, 2 / 3, 1], spending="pocock")
    assert bounds.z == pytest.approx([2.2794, 2.2949, 2.2959], abs=1e-4)
    _assert_spends_its_alpha(bounds)


# --- Lan–DeMets boundaries: independent check and properties -------------------------------------


def _assert_spends_its_alpha(bounds: GroupSequentialBounds) -> None:
    """P(some Z_j ≥ b_j, j ≤ k) under the null, by scipy's multivariate normal CDF (Genz)
    with the canonical correlation √(t_i/t_j), equals the spending function at t_k."""
    timing = np.asarray(bounds.timing)
    correlation = np.sqrt(np.minimum.outer(timing, timing) / np.maximum.outer(timing, timing))
    for k in range(1, len(timing) + 1):
        if k == 1:
            crossed = scipy_stats.norm.sf(bounds.z[0])
        else:
            crossed = 1.0 - scipy_stats.multivariate_normal.cdf(
                np.asarray(bounds.z[:k]),
                mean=np.zeros(k),
                cov=correlation[:k, :k],
                abseps=1e-8,
                releps=1e-8,
                rng=20240611,
            )
        assert crossed == pytest.approx(bounds.cumulative_alpha_spent[k - 1], abs=2e-6)


@pytest.mark.parametrize("spending", ["obrien-fleming", "pocock"])
def test_unequal_timing_spends_exactly_the_spending_function(spending: str) -> None:
    bounds = group_sequential_bounds([0.25, 0.6, 1.0], spending=spending)  # type: ignore[arg-type]
    assert bounds.cumulative_alpha_spent[-1] == pytest.approx(0.025, abs=1e-15)
    _assert_spends_its_alpha(bounds)


def test_alpha_spending_functions_are_the_lan_demets_forms() -> None:
    # O'Brien–Fleming type 2 − 2Φ(z_{α/2}/√t) and Pocock type α ln(1 + (e − 1)t);
    # both spend the whole alpha at t = 1.
    obf = alpha_spending([0.5, 1.0], alpha=0.025, spending="obrien-fleming")
    assert obf[0] == pytest.approx(2 - 2 * scipy_stats.norm.cdf(scipy_stats.norm.ppf(1 - 0.0125) / math.sqrt(0.5)))
    assert obf[1] == pytest.approx(0.025, abs=1e-15)
    pocock = alpha_spending([0.5, 1.0], alpha=0.025, spending="pocock")
    assert pocock == pytest.approx([0.025 * math.log(1 + (math.e - 1) * 0.5), 0.025])


def test_single_final_look_is_the_fixed_sample_test() -> None:
    for spending in ("obrien-fleming", "pocock"):
        bounds = group_sequential_bounds([1.0], alpha=0.025, spending=spending)  # type: ignore[arg-type]
        assert bounds.z == pytest.approx([scipy_stats.norm.isf(0.025)], abs=1e-12)
        assert bounds.nominal_alpha == pytest.approx([0.025])


def test_boundaries_of_earlier_looks_do_not_depend_on_later_looks() -> None:
    full = group_sequential_bounds([0.25, 0.6, 1.0], spending="pocock")
    so_far = group_sequential_bounds([0.25, 0.6], spending="pocock")
    assert so_far.z == pytest.approx(full.z[:2], abs=1e-10)


def test_smaller_alpha_raises_every_boundary_and_pocock_spends_early() -> None:
    loose = group_sequential_bounds([1 / 3, 2 / 3, 1], alpha=0.05)
    strict = group_sequential_bounds([1 / 3, 2 / 3, 1], alpha=0.01)
    assert all(s > lo for s, lo in zip(strict.z, loose.z, strict=True))
    obf = group_sequential_bounds([1 / 3, 2 / 3, 1], spending="obrien-fleming")
    pocock = group_sequential_bounds([1 / 3, 2 / 3, 1], spending="pocock")
    assert pocock.z[0] < obf.z[0]
    assert pocock.z[-1] > obf.z[-1]  # the price of spending early is a stricter final test


def test_a_look_too_early_to_spend_anything_gets_no_finite_boundary() -> None:
    # α(0.001) for the O'Brien–Fleming type is below 1e-300: nothing can be spent there.
    bounds = group_sequential_bounds([0.001, 1.0])
    assert math.isinf(bounds.z[0])
    assert bounds.nominal_alpha[0] == 0.0
    assert bounds.z[1] == pytest.approx(scipy_stats.norm.isf(0.025), abs=1e-6)


@pytest.mark.parametrize(
    ("timing", "message"),
    [
        ([], "timing is empty"),
        ([0.5, 0.5, 1.0], "increase strictly"),
        ([0.6, 0.3, 1.0], "increase strictly"),
        ([0.0, 1.0], r"\(0, 1\]"),
        ([0.5, 1.2], r"\(0, 1\]"),
        ([float("nan"), 1.0], r"\(0, 1\]"),
        (["half", 1.0], "sequence of information fractions"),
    ],
)
def test_bad_timing_is_rejected(timing: list[object], message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        group_sequential_bounds(timing)  # type: ignore[arg-type]


def test_bad_alpha_or_spending_is_rejected() -> None:
    with pytest.raises(StatsInputError, match="alpha"):
        group_sequential_bounds([0.5, 1.0], alpha=0.0)
    with pytest.raises(StatsInputError, match="alpha"):
        group_sequential_bounds([0.5, 1.0], alpha=1.0)
    with pytest.raises(StatsInputError, match="spending must be one of"):
        group_sequential_bounds([0.5, 1.0], spending="haybittle-peto")  # type: ignore[arg-type]


# --- conditional power ------------------------------------------------------------------------------


def _conditional_power_from_joint_distribution(z: float, t: float, theta: float, critical: float) -> float:
    """P(Z_1 ≥ c | Z_t = z) from the canonical joint distribution of the interim and final z
    statistics (means θ√t and θ, correlation √t; Jennison & Turnbull 2000, ch. 3), by
    differentiating the bivariate normal CDF (scipy, Genz) numerically in z."""
    mean = np.array([theta * math.sqrt(t), theta])
    covariance = np.array([[1.0, math.sqrt(t)], [math.sqrt(t), 1.0]])
    h = 1e-3

    def interim_below_and_final_above(x: float) -> float:
        below = float(scipy_stats.norm.cdf(x, loc=mean[0]))
        both_below = float(
            scipy_stats.multivariate_normal.cdf(
                np.array([x, critical]), mean=mean, cov=covariance, abseps=1e-10, releps=1e-10, rng=7
            )
        )
        return below - both_below

    slope = (interim_below_and_final_above(z + h) - interim_below_and_final_above(z - h)) / (2 * h)
    return slope / float(scipy_stats.norm.pdf(z, loc=mean[0]))


@pytest.mark.parametrize(
    ("z", "t", "drift", "boundary"),
    [(1.0, 0.5, 2.8, None), (2.1, 0.33, 1.5, 1.993), (-0.4, 0.7, 3.2, 1.96), (0.8, 0.25, "current_trend", None)],
)
def test_conditional_power_agrees_with_the_joint_distribution_of_z_statistics(
    z: float, t: float, drift: float | str, boundary: float | None
) -> None:
    theta = z / math.sqrt(t) if drift == "current_trend" else float(drift)
    critical = scipy_stats.norm.isf(0.025) if boundary is None else boundary
    expected = _conditional_power_from_joint_distribution(z, t, theta, critical)
    got = conditional_power(z, t, drift=drift, boundary=boundary)  # type: ignore[arg-type]
    assert got == pytest.approx(expected, abs=1e-4)


def test_conditional_power_under_the_current_trend_is_the_proschan_lan_wittes_form() -> None:
    # Proschan, Lan & Wittes (2006), ch. 3: with θ = z_t/√t the B-value formula reduces to
    # CP = 1 − Φ((z_{1−α} − z_t/√t) / √(1 − t)). At z = 1, t = 0.5: (1.959964 − 1.414214)/0.707107.
    got = conditional_power(1.0, 0.5, drift="current_trend")
    assert got == pytest.approx(scipy_stats.norm.sf((1.959964 - math.sqrt(2)) / math.sqrt(0.5)), abs=1e-6)
    assert got == pytest.approx(0.22011, abs=1e-5)


def test_conditional_power_under_the_design_alternative() -> None:
    # Default drift: z_{1−α} + z_{power} = 1.959964 + 0.841621 = 2.801585. With no data yet
    # (t → 0, z = 0) conditional power is the design's unconditional power.
    assert conditional_power(0.0, 1e-12) == pytest.approx(0.8, abs=1e-6)
    assert conditional_power(0.0, 1e-12, power=0.9) == pytest.approx(0.9, abs=1e-6)
    # An interim exactly on the design's track (B(t) = θt) keeps CP above the design power.
    theta = scipy_stats.norm.isf(0.025) + scipy_stats.norm.ppf(0.8)
    on_track = conditional_power(theta * math.sqrt(0.5), 0.5)
    assert on_track == pytest.approx(scipy_stats.norm.cdf((theta - 1.959964) / math.sqrt(0.5)), abs=1e-6)
    assert on_track > 0.8


def test_conditional_power_properties() -> None:
    # Increases with the interim z; zero drift gives the conditional type I error, below CP
    # under any positive drift; a stricter final boundary lowers it.
    values = [conditional_power(z, 0.5, drift=2.0) for z in (-1.0, 0.0, 1.0, 2.0)]
    assert values == sorted(values)
    assert conditional_power(1.0, 0.5, drift=0.0) < conditional_power(1.0, 0.5, drift=1.0)
    assert conditional_power(1.0, 0.5, boundary=2.5) < conditional_power(1.0, 0.5)
    assert conditional_power(1.0, 0.5, alpha=0.01) < conditional_power(1.0, 0.5, alpha=0.025)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"z_interim": 1.0, "information_fraction": 0.0}, "strictly between 0 and 1"),
        ({"z_interim": 1.0, "information_fraction": 1.0}, "nothing left to predict"),
        ({"z_interim": float("nan"), "information_fraction": 0.5}, "z_interim must be finite"),
        ({"z_interim": 1.0, "information_fraction": 0.5, "drift": "observed"}, "current_trend"),
        ({"z_interim": 1.0, "information_fraction": 0.5, "power": 1.0}, "power"),
        ({"z_interim": 1.0, "information_fraction": 0.5, "boundary": float("inf")}, "boundary must be finite"),
        ({"z_interim": 1.0, "information_fraction": 0.5, "alpha": 1.5}, "alpha"),
    ],
)
def test_conditional_power_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        conditional_power(**kwargs)  # type: ignore[arg-type]


# --- sample size for two proportions ---------------------------------------------------------------


def _closed_form(p1: float, p2: float, alpha: float, power: float, ratio: float) -> float:
    """The power equation solved by hand for n1 (Fleiss, Levin & Paik 2003, ch. 4)."""
    pooled = (p1 + ratio * p2) / (1 + ratio)
    root_n = (
        scipy_stats.norm.isf(alpha / 2) * math.sqrt(pooled * (1 - pooled) * (1 + 1 / ratio))
        + scipy_stats.norm.ppf(power) * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2) / ratio)
    ) / abs(p1 - p2)
    return root_n**2


def _continuity_corrected(n: float, p1: float, p2: float, ratio: float) -> float:
    """The continuity correction of Fleiss, Tytun & Ury (1980), as used in Zar's example."""
    return n / 4 * (1 + math.sqrt(1 + 2 * (ratio + 1) / (n * ratio * abs(p1 - p2)))) ** 2


def test_sample_size_matches_r_power_prop_test_documentation() -> None:
    # R stats::power.prop.test help page: power.prop.test(p1 = .50, p2 = .75, power = .90)
    # "=> n = 76.7" (R prints n = 76.7069). 76.65294 is the arcsine approximation (below).
    n = sample_size_two_proportions(0.5, 0.75, power=0.9)
    assert n == pytest.approx(76.7, abs=0.05)
    assert n == pytest.approx(76.706928, abs=1e-6)
    assert n == pytest.approx(_closed_form(0.5, 0.75, 0.05, 0.9, 1.0), rel=1e-10)


def test_sample_size_for_80_percent_power() -> None:
    # power.prop.test(p1 = .50, p2 = .75, power = .80): n = 57.67 (closed form 57.673437).
    assert sample_size_two_proportions(0.5, 0.75) == pytest.approx(57.673437, abs=1e-6)


def test_power_matches_r_power_prop_test_documentation() -> None:
    # power.prop.test(n = 50, p1 = .50, p2 = .75) "=> power = 0.740", and
    # power.prop.test(n = 50, p1 = .5, power = .90) "=> p2 = 0.8026".
    assert round(power_two_proportions(50, 0.5, 0.75), 3) == 0.740
    p2 = brentq(lambda p: power_two_proportions(50, 0.5, p) - 0.9, 0.51, 0.99, xtol=1e-12)
    assert round(p2, 4) == 0.8026


@pytest.mark.parametrize(("ratio", "published"), [(1.0, 127.2343), (3.0, 83.1527)])
def test_unequal_allocation_matches_zar_worked_example(ratio: float, published: float) -> None:
    # Zar (1999), Biostatistical Analysis, Example 24.26 (as reproduced in Unistat's manual,
    # §6.7.6.1): p1 = 0.45, p2 = 0.25, two-sided alpha 0.05, power 0.90, n2/n1 = 1 and 3 →
    # n1 = 127.2343 and 83.1527 with the Fleiss–Tytun–Ury continuity correction applied to
    # the uncorrected n that this function returns.
    n1 = sample_size_two_proportions(0.45, 0.25, alpha=0.05, power=0.9, ratio=ratio)
    assert n1 == pytest.approx(_closed_form(0.45, 0.25, 0.05, 0.9, ratio), rel=1e-10)
    assert _continuity_corrected(n1, 0.45, 0.25, ratio) == pytest.approx(published, abs=1e-4)


def test_sample_size_symmetries_and_monotonicity() -> None:
    n = sample_size_two_proportions(0.3, 0.45)
    assert sample_size_two_proportions(0.45, 0.3) == pytest.approx(n, rel=1e-12)
    # Group 1 of (p1, p2, ratio r) is group 2 of (p2, p1, ratio 1/r).
    n1 = sample_size_two_proportions(0.3, 0.45, ratio=2.0)
    assert sample_size_two_proportions(0.45, 0.3, ratio=0.5) == pytest.approx(2.0 * n1, rel=1e-10)
    assert sample_size_two_proportions(0.3, 0.45, alpha=0.01) > n
    assert sample_size_two_proportions(0.3, 0.45, power=0.9) > n
    assert power_two_proportions(n, 0.3, 0.45) == pytest.approx(0.8, abs=1e-10)


def test_sample_size_is_not_the_arcsine_approximation() -> None:
    # statsmodels' NormalIndPower with proportion_effectsize (Cohen's arcsine h, as R's
    # pwr.2p.test) gives 76.65294 for p = 0.5 vs 0.75 at 90 % power; power.prop.test's
    # equation gives 76.70693. The function must follow power.prop.test.
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    arcsine = NormalIndPower().solve_power(effect_size=proportion_effectsize(0.75, 0.5), alpha=0.05, power=0.9)
    assert float(arcsine) == pytest.approx(76.65294, abs=1e-5)
    assert sample_size_two_proportions(0.5, 0.75, power=0.9) - float(arcsine) == pytest.approx(0.05399, abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p1": 0.4, "p2": 0.4}, "equal"),
        ({"p1": 0.0, "p2": 0.4}, "p1 must lie strictly between 0 and 1"),
        ({"p1": 0.4, "p2": 1.0}, "p2 must lie strictly between 0 and 1"),
        ({"p1": 0.4, "p2": 0.6, "power": 1.0}, "power"),
        ({"p1": 0.4, "p2": 0.6, "ratio": 0.0}, "ratio"),
        ({"p1": 0.4, "p2": 0.6, "alpha": 0.0}, "alpha"),
        ({"p1": 0.5, "p2": 0.75, "power": 0.01}, "below what the test reaches"),
    ],
)
def test_sample_size_bad_input(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        sample_size_two_proportions(**kwargs)


def test_power_bad_input() -> None:
    with pytest.raises(StatsInputError, match="n1 must be positive"):
        power_two_proportions(0, 0.5, 0.75)


def test_design_module_imports_without_django_or_torch() -> None:
    root = Path(__file__).resolve().parents[1]
    code = "import sys; import analysis.stats.design; print(sorted(m for m in ('django', 'torch') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
