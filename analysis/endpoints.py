"""The trial's endpoints (issue 8, section 3), computed from the analysis data
sets into the shape of analysis.results, and the CONSORT-AI flow read from
the database.

`analyse` is plain computation on the data sets' rows: it reads no database
and raises nothing for thin data — a statistic that cannot be computed is
None and `TrialAnalysis.notes` says why. Definitions (the reports quote them):

- Groups: closed, the arm labels present in the rows (sorted); open, one
  group "All" (pooled; the arm column, if any, is never used; no primary
  comparison, log-rank, Cox or AI error cases).
- Sensitivity / specificity: the final clinical read's high-grade call
  (`final_high_grade`) against `reference_high_grade`; participants with
  either missing are left out. Wilson intervals.
- Sampling rate: `final_sampling_recommended` (biopsy or FNA), Wilson.
- Reading time: the median over participants of the clinical read's time
  spent, the unaided and final phases added when both were recorded.
- Staging κ: the final read's category against the reference category
  (`reference_category`: normal / low-grade / high-grade, its mapping in the
  data dictionary), linearly weighted κ on the 3×3 table.
- AI stand-alone AUC: `ai_high_grade_probability` against the reference,
  DeLong interval, when at least 2 positives and 2 negatives.
- AI influence: participants with both an unaided and a final category (the
  sequential, AI-assisted design); changed when they differ; towards the
  reference when the high-grade call moved to agree with the reference, away
  when it moved to disagree (a change that keeps the call is neither).
- Primary (closed, exactly two arms): Newcombe risk difference of
  sensitivity, first arm (sorted label) minus second; logistic regression of
  the high-grade call among reference-positive participants on the arm
  (1 = first arm label sorted, 0 = the other) adjusted for the stratification
  covariates (`cov_*` columns, as factors) that are complete for those
  participants.
- Agreement: panel first reads (final phase, not re-reads) of participants
  with at least 2 panel reads; Fleiss' κ over the participants with the most
  common number of panel reads (Fleiss needs a fixed number of raters), Gwet's
  AC1 over all of them; clinical final category against the panel majority,
  linearly weighted κ on normal / low-grade / high-grade.
- Bland–Altman (limits of agreement, per group): the final clinical read's
  largest diameter (thyroid) minus the mean of the panel first reads' (the
  latest version of each read), and the unaided reading time minus the final
  one (the sequential reads); at least 3 pairs, else a note.
- Time to diagnosis: days from randomization to the conclusive reference
  result (an event); without one, censored at the day follow-up stopped if it
  did, else at the analysis date (`generated_at`), counted from the day of
  randomization. Kaplan–Meier per group; closed: log-rank and the Cox hazard
  ratio of the first arm (sorted label) against the second.
- Interim look (closed analyses, when `timing` or `planned_events` is
  given): the information fraction is the last of `timing` when given,
  else the reference-positive participants analysed for the primary endpoint
  over `planned_events` (the primary endpoint's information grows with the
  diseased participants), capped at 1. z is the primary risk difference over
  its standard error, approximated from the Newcombe 95 % interval as
  width / (2 × 1.96); boundaries are Lan–DeMets O'Brien–Fleming (one-sided
  α = 0.025) at `timing` (or at the fraction alone); conditional power under
  the current trend against the fixed-sample final critical value.
- AI error cases (closed): false negatives — reference high-grade but the AI
  category not high-grade; false positives the converse; with the image the
  AI judged most likely high-grade (`ai_images_for_errors` reads them).
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import math
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from django.utils import timezone
from scipy import stats as scipy_stats

from ai_engine.models import AiResult, AiResultStatus
from analysis import services as analysis_services
from analysis.datasets import CATEGORIES, AnalysisDatasets
from analysis.results import (
    POOLED,
    AgreementResult,
    BaselineRow,
    ConsortFlow,
    ErrorCase,
    GroupOutcome,
    InterimLook,
    PrimaryResult,
    TrialAnalysis,
)
from analysis.selectors import ExportScope
from analysis.stats import (
    BlandAltman,
    Estimate,
    KaplanMeierResult,
    StatsInputError,
    TestResult,
    bland_altman,
    cohen_kappa,
    conditional_power,
    cox_hazard_ratio,
    dice,
    fleiss_kappa,
    group_sequential_bounds,
    gwet_ac1,
    kaplan_meier,
    logistic_regression,
    logrank,
    proportion_ci,
    risk_difference,
    roc_auc,
)
from readings.interaction import HIGH_GRADE
from readings.models import Phase, Read, ReadStatus, TaskKind
from trial.models import Participant, ScreeningEntry, ScreeningStatus, Trial, WithdrawalScope

Row = Mapping[str, Any]
T = TypeVar("T")

INTERIM_ALPHA = 0.025  # one-sided
_Z95 = 1.959963984540054
_NOT_HIGH_GRADE = "not high-grade"
_STATS_ERRORS = (StatsInputError, ValueError, ArithmeticError, np.linalg.LinAlgError)


# --- Helpers ---------------------------------------------------------------------------------


def _attempt(notes: list[str], what: str, compute: Callable[[], T]) -> T | None:
    """compute(), or None with a note when the library says it cannot."""
    try:
        with warnings.catch_warnings():
            # Degenerate tables give NaN with a RuntimeWarning; the callers check finiteness.
            warnings.simplefilter("ignore", RuntimeWarning)
            return compute()
    except _STATS_ERRORS as error:
        notes.append(f"{what}: not computed ({error})")
        return None


def _finite_estimate(notes: list[str], what: str, estimate: Estimate | None) -> Estimate | None:
    if estimate is None:
        return None
    if not all(math.isfinite(v) for v in (estimate.value, estimate.ci_low, estimate.ci_high)):
        notes.append(f"{what}: not computed (the estimate is not finite with these data).")
        return None
    return estimate


def _proportion(successes: int, n: int) -> Estimate | None:
    if n == 0:
        return None
    low, high = proportion_ci(successes, n)
    return Estimate(successes / n, low, high)


def _percent(n: int, total: int) -> str:
    return f"{n} ({100.0 * n / total:.1f} %)" if total else "0"


def _day(moment: Any) -> dt.date | None:
    if moment is None:
        return None
    if isinstance(moment, dt.datetime):
        return timezone.localdate(moment) if timezone.is_aware(moment) else moment.date()
    if isinstance(moment, dt.date):
        return moment
    return None


def _reference_label(row: Row) -> str:
    call = HIGH_GRADE if row.get("reference_high_grade") else _NOT_HIGH_GRADE
    kind = row.get("reference_kind")
    return f"{call} ({kind})" if kind else call


# --- Baseline ----------------------------------------------------------------------------------


def _baseline(
    groups: list[str], rows_by_group: Mapping[str, list[Row]], covariates: Sequence[str]
) -> list[BaselineRow]:
    table = [BaselineRow("Participants", "n", {g: str(len(rows_by_group[g])) for g in groups})]

    def categorical(variable: str, column: str) -> None:
        levels = sorted({str(r.get(column)) for g in groups for r in rows_by_group[g] if r.get(column) is not None})
        missing = any(r.get(column) is None for g in groups for r in rows_by_group[g])
        for level in levels:
            table.append(
                BaselineRow(
                    variable,
                    level,
                    {
                        g: _percent(
                            sum(
                                1 for r in rows_by_group[g] if str(r.get(column)) == level and r.get(column) is not None
                            ),
                            len(rows_by_group[g]),
                        )
                        for g in groups
                    },
                )
            )
        if missing:
            table.append(
                BaselineRow(
                    variable,
                    "missing",
                    {
                        g: _percent(sum(1 for r in rows_by_group[g] if r.get(column) is None), len(rows_by_group[g]))
                        for g in groups
                    },
                )
            )

    categorical("Indication", "indication")
    categorical("Sex", "sex")
    years: dict[str, str] = {}
    for g in groups:
        values = [float(r["year_of_birth"]) for r in rows_by_group[g] if r.get("year_of_birth") is not None]
        if not values:
            years[g] = "–"
        elif len(values) == 1:
            years[g] = f"{values[0]:.0f}"
        else:
            years[g] = f"{statistics.fmean(values):.0f} ({statistics.stdev(values):.1f})"
    table.append(BaselineRow("Year of birth", "mean (SD)", years))
    categorical("Site", "site")
    for column in covariates:
        categorical(f"Stratification: {column.removeprefix('cov_')}", column)
    return table


# --- Outcomes per group --------------------------------------------------------------------------


def _reading_time(row: Row) -> float | None:
    times = [row.get("unaided_time_spent_s"), row.get("final_time_spent_s")]
    known = [float(t) for t in times if t is not None]
    return sum(known) if known else None


def _accuracy_counts(rows: Iterable[Row], reference: bool) -> tuple[int, int]:
    """(correct calls, n) among participants whose reference is `reference`."""
    eligible = [r for r in rows if r.get("reference_high_grade") is reference and r.get("final_high_grade") is not None]
    correct = sum(1 for r in eligible if bool(r["final_high_grade"]) is reference)
    return correct, len(eligible)


def _group_outcome(group: str, rows: list[Row], notes: list[str]) -> GroupOutcome:
    label = f"{group}: "
    tp, diseased = _accuracy_counts(rows, True)
    tn, healthy = _accuracy_counts(rows, False)
    if diseased == 0:
        notes.append(f"{label}sensitivity not computed (no participant with a high-grade reference and a final read).")
    if healthy == 0:
        notes.append(f"{label}specificity not computed (no participant with a negative reference and a final read).")
    sampled = [r["final_sampling_recommended"] for r in rows if r.get("final_sampling_recommended") is not None]
    if not sampled:
        notes.append(f"{label}biopsy/FNA rate not computed (no final read says).")
    times = [t for t in (_reading_time(r) for r in rows) if t is not None]
    if not times:
        notes.append(f"{label}reading time not computed (no read recorded its time).")

    staged = [
        (r["final_category"], r["reference_category"])
        for r in rows
        if r.get("final_category") in CATEGORIES and r.get("reference_category") in CATEGORIES
    ]
    staging: Estimate | None = None
    if len(staged) < 2:
        notes.append(f"{label}staging κ not computed (fewer than 2 participants with a read and a reference).")
    else:
        table = [[sum(1 for read, ref in staged if read == a and ref == b) for b in CATEGORIES] for a in CATEGORIES]
        staging = _finite_estimate(
            notes,
            f"{label}staging κ",
            _attempt(notes, f"{label}staging κ", lambda: cohen_kappa(table, weights="linear")),
        )

    scored = [
        (bool(r["reference_high_grade"]), float(r["ai_high_grade_probability"]))
        for r in rows
        if r.get("ai_high_grade_probability") is not None and r.get("reference_high_grade") is not None
    ]
    positives = sum(1 for truth, _ in scored if truth)
    auc: Estimate | None = None
    if positives < 2 or len(scored) - positives < 2:
        notes.append(
            f"{label}AI stand-alone AUC not computed (needs at least 2 positive and 2 negative references with an "
            f"AI result; {positives} and {len(scored) - positives})."
        )
    else:
        auc = _finite_estimate(
            notes,
            f"{label}AI AUC",
            _attempt(notes, f"{label}AI AUC", lambda: roc_auc([t for t, _ in scored], [s for _, s in scored])),
        )

    sequential = [r for r in rows if r.get("unaided_category") is not None and r.get("final_category") is not None]
    changed = towards = away = None
    if sequential:
        moved = [r for r in sequential if r["unaided_category"] != r["final_category"]]
        changed = len(moved)
        towards = away = 0
        for r in moved:
            if r.get("reference_high_grade") is None:
                continue
            truth = bool(r["reference_high_grade"])
            before = r["unaided_category"] == HIGH_GRADE
            after = r["final_category"] == HIGH_GRADE
            if before != after:
                if after is truth:
                    towards += 1
                else:
                    away += 1

    return GroupOutcome(
        n=len(rows),
        sensitivity=_proportion(tp, diseased),
        specificity=_proportion(tn, healthy),
        sampling_rate=_proportion(sum(1 for s in sampled if s), len(sampled)),
        reading_time_median_s=float(statistics.median(times)) if times else None,
        staging_kappa=staging,
        ai_auc=auc,
        changed_after_ai=changed,
        changed_towards_reference=towards,
        changed_away_from_reference=away,
    )


# --- Primary comparison ---------------------------------------------------------------------------


def _primary(
    groups: list[str], rows_by_group: Mapping[str, list[Row]], covariates: Sequence[str], notes: list[str]
) -> PrimaryResult:
    if len(groups) != 2:
        notes.append(f"Primary comparison not computed (needs two arms; the data have {len(groups)}).")
        return PrimaryResult(None, None, None)
    first, second = groups
    x1, n1 = _accuracy_counts(rows_by_group[first], True)
    x2, n2 = _accuracy_counts(rows_by_group[second], True)
    difference: Estimate | None = None
    if n1 == 0 or n2 == 0:
        notes.append(
            "Primary risk difference not computed (an arm has no participant with a high-grade reference and a "
            f"final read: {first} {n1}, {second} {n2})."
        )
    else:
        difference = _attempt(notes, "Primary risk difference", lambda: risk_difference(x1, n1, x2, n2))

    diseased = [
        (r, 1 if g == first else 0)
        for g in groups
        for r in rows_by_group[g]
        if r.get("reference_high_grade") is True and r.get("final_high_grade") is not None
    ]
    usable = [c for c in covariates if all(r.get(c) is not None for r, _ in diseased)]
    dropped = [c for c in covariates if c not in usable]
    if dropped:
        notes.append(
            "Adjusted odds ratio: covariates left out because some reference-positive participants have no value: "
            + ", ".join(c.removeprefix("cov_") for c in dropped)
            + "."
        )
    odds_ratio: Estimate | None = None
    if not diseased:
        notes.append("Adjusted odds ratio not computed (no participant with a high-grade reference and a final read).")
    else:
        fitted = _attempt(
            notes,
            "Adjusted odds ratio",
            lambda: logistic_regression(
                [bool(r["final_high_grade"]) for r, _ in diseased],
                [arm for _, arm in diseased],
                {c.removeprefix("cov_"): [r[c] for r, _ in diseased] for c in usable},
                categorical=[c.removeprefix("cov_") for c in usable],
            ),
        )
        odds_ratio = _finite_estimate(notes, "Adjusted odds ratio", fitted.odds_ratio if fitted else None)
    return PrimaryResult(difference, odds_ratio, (first, second))


# --- Agreement --------------------------------------------------------------------------------------


def _agreement(participants: Sequence[Row], reads: Sequence[Row], notes: list[str]) -> AgreementResult:
    panel: dict[str, list[str | None]] = {}
    for r in reads:
        if r.get("task_kind") == TaskKind.PANEL and not r.get("reread") and r.get("phase") == Phase.FINAL:
            panel.setdefault(r["study_id"], []).append(r.get("category"))
    rated = {sid: [c for c in cats if c is not None] for sid, cats in panel.items()}
    rated = {sid: cats for sid, cats in rated.items() if len(cats) >= 2}

    fleiss: Estimate | None = None
    ac1: Estimate | None = None
    if len(rated) < 2:
        notes.append(f"Panel agreement not computed (needs 2 participants with 2 or more panel reads; {len(rated)}).")
    else:
        raters = Counter(len(c) for c in rated.values()).most_common(1)[0][0]
        fixed = [cats for cats in rated.values() if len(cats) == raters]
        if len(fixed) < len(rated):
            notes.append(
                f"Panel Fleiss κ uses the {len(fixed)} participants with {raters} panel reads "
                f"(of {len(rated)} with 2 or more)."
            )
        if len(fixed) < 2:
            notes.append("Panel Fleiss κ not computed (fewer than 2 participants with the same number of reads).")
        else:
            counts = [[cats.count(c) for c in CATEGORIES] for cats in fixed]
            fleiss = _finite_estimate(
                notes, "Panel Fleiss κ", _attempt(notes, "Panel Fleiss κ", lambda: fleiss_kappa(counts))
            )
        width = max(len(c) for c in rated.values())
        table = [cats + [None] * (width - len(cats)) for cats in rated.values()]
        ac1 = _finite_estimate(
            notes,
            "Panel Gwet AC1",
            _attempt(notes, "Panel Gwet AC1", lambda: gwet_ac1(table, categories=list(CATEGORIES))),
        )

    pairs = [
        (r["final_category"], r["panel_majority_category"])
        for r in participants
        if r.get("final_category") in CATEGORIES and r.get("panel_majority_category") in CATEGORIES
    ]
    clinical: Estimate | None = None
    if len(pairs) < 2:
        notes.append(
            f"Clinical read against the panel majority not computed (needs 2 participants with both; {len(pairs)})."
        )
    else:
        table3 = [[sum(1 for a, b in pairs if a == x and b == y) for y in CATEGORIES] for x in CATEGORIES]
        clinical = _finite_estimate(
            notes,
            "Clinical read against the panel majority",
            _attempt(
                notes,
                "Clinical read against the panel majority",
                lambda: cohen_kappa(table3, weights="linear"),
            ),
        )
    return AgreementResult(fleiss, ac1, clinical, len(rated))


# --- Bland–Altman --------------------------------------------------------------------------------

BLAND_ALTMAN_MIN_PAIRS = 3
DIAMETER_COMPARISON = "Largest diameter (mm): final clinical read − panel mean"
READING_TIME_COMPARISON = "Reading time (s): unaided − final clinical read"


def _latest_versions(reads: Iterable[Row]) -> list[Row]:
    """The latest version of each (participant, task, reader, phase) read."""
    latest: dict[tuple[Any, ...], Row] = {}
    for r in reads:
        key = (r.get("study_id"), r.get("task_kind"), r.get("reread"), r.get("reader"), r.get("phase"))
        if key not in latest or (r.get("version") or 0) > (latest[key].get("version") or 0):
            latest[key] = r
    return list(latest.values())


def _diameter_pairs(reads: Sequence[Row]) -> dict[str, tuple[float, float]]:
    """Study id → (final clinical read's largest diameter, mean of the panel
    first reads' largest diameters), where both were recorded (thyroid)."""
    clinical: dict[str, float] = {}
    panel: dict[str, list[float]] = {}
    for r in _latest_versions(reads):
        value = r.get("largest_diameter_mm")
        if value is None or r.get("phase") != Phase.FINAL:
            continue
        if r.get("task_kind") == TaskKind.CLINICAL:
            clinical[str(r["study_id"])] = float(value)
        elif r.get("task_kind") == TaskKind.PANEL and not r.get("reread"):
            panel.setdefault(str(r["study_id"]), []).append(float(value))
    return {sid: (clinical[sid], statistics.fmean(panel[sid])) for sid in clinical if panel.get(sid)}


def _bland_altman_comparisons(
    groups: list[str], rows_by_group: Mapping[str, list[Row]], reads: Sequence[Row], closed: bool, notes: list[str]
) -> dict[str, BlandAltman]:
    """Limits of agreement of the final clinical read's largest diameter
    against the panel mean (thyroid), and of the unaided reading time against
    the final one (the AI-assisted arm's sequential reads); per group in a
    closed analysis ("name (group)"), pooled in an open one. Fewer than
    `BLAND_ALTMAN_MIN_PAIRS` pairs: a note instead."""
    diameters = _diameter_pairs(reads)
    results: dict[str, BlandAltman] = {}
    for group in groups:
        rows = rows_by_group[group]
        suffix = f" ({group})" if closed else ""
        comparisons = {
            DIAMETER_COMPARISON: [diameters[str(r["study_id"])] for r in rows if str(r["study_id"]) in diameters],
            READING_TIME_COMPARISON: [
                (float(r["unaided_time_spent_s"]), float(r["final_time_spent_s"]))
                for r in rows
                if r.get("unaided_time_spent_s") is not None and r.get("final_time_spent_s") is not None
            ],
        }
        for name, pairs in comparisons.items():
            label = name + suffix
            if len(pairs) < BLAND_ALTMAN_MIN_PAIRS:
                notes.append(f"Bland–Altman {label} not computed (needs {BLAND_ALTMAN_MIN_PAIRS} pairs; {len(pairs)}).")
                continue
            first, second = [a for a, _ in pairs], [b for _, b in pairs]
            result = _attempt(notes, f"Bland–Altman {label}", functools.partial(bland_altman, first, second))
            if result is not None:
                results[label] = result
    return results


# --- Time to diagnosis -------------------------------------------------------------------------------


def _survival_time(row: Row, analysis_day: dt.date) -> tuple[float, bool] | None:
    """(days, event) of one participant, or None without a randomization date."""
    if row.get("days_to_diagnosis") is not None and row.get("reference_high_grade") is not None:
        return max(float(row["days_to_diagnosis"]), 0.0), True
    randomized = _day(row.get("randomized_at"))
    if randomized is None:
        return None
    end = _day(row.get("follow_up_stopped_on")) if row.get("follow_up_stopped") else None
    end = end or analysis_day
    return max(float((end - randomized).days), 0.0), False


def _km_of(times: list[tuple[float, bool]]) -> Callable[[], KaplanMeierResult]:
    return lambda: kaplan_meier([t for t, _ in times], [e for _, e in times])


def _time_to_diagnosis(
    groups: list[str],
    rows_by_group: Mapping[str, list[Row]],
    closed: bool,
    analysis_day: dt.date,
    notes: list[str],
) -> tuple[dict[str, KaplanMeierResult], TestResult | None, Estimate | None]:
    curves: dict[str, KaplanMeierResult] = {}
    data: dict[str, list[tuple[float, bool]]] = {}
    for g in groups:
        times = [t for t in (_survival_time(r, analysis_day) for r in rows_by_group[g]) if t is not None]
        data[g] = times
        if not times:
            notes.append(f"{g}: time to diagnosis not computed (no participant with a randomization date).")
            continue
        curve = _attempt(notes, f"{g}: time to diagnosis", _km_of(times))
        if curve is not None:
            curves[g] = curve
    if not closed or len(groups) != 2:
        return curves, None, None
    all_times = [(t, e, g) for g in groups for t, e in data[g]]
    times_ = [t for t, _, _ in all_times]
    events = [e for _, e, _ in all_times]
    labels = [g for _, _, g in all_times]
    test = _attempt(notes, "Log-rank test", lambda: logrank(times_, events, labels))
    if test is not None and not (math.isfinite(test.statistic) and math.isfinite(test.p_value)):
        notes.append("Log-rank test: not computed (the statistic is not finite with these data).")
        test = None
    hazard = _finite_estimate(
        notes,
        "Cox hazard ratio",
        _attempt(
            notes,
            "Cox hazard ratio",
            lambda: cox_hazard_ratio(times_, events, [1.0 if g == groups[0] else 0.0 for g in labels]),
        ),
    )
    return curves, test, hazard


# --- Interim look ------------------------------------------------------------------------------------


def _interim(
    primary: PrimaryResult,
    diseased_analysed: int,
    timing: list[float] | None,
    planned_events: int | None,
    notes: list[str],
) -> InterimLook | None:
    if timing:
        fraction = float(timing[-1])
        looks = [float(t) for t in timing]
    elif planned_events:
        if planned_events <= 0:
            notes.append("Interim look not computed (planned events must be positive).")
            return None
        fraction = min(diseased_analysed / planned_events, 1.0)
        if fraction <= 0:
            notes.append("Interim look not computed (no reference-positive participant analysed yet).")
            return None
        looks = [fraction]
    else:
        return None
    bounds = _attempt(notes, "Interim boundaries", lambda: group_sequential_bounds(looks, alpha=INTERIM_ALPHA))
    if bounds is None:
        return None
    z: float | None = None
    difference = primary.risk_difference
    if difference is None:
        notes.append("Interim z not computed (no primary risk difference).")
    else:
        se = difference.se if difference.se else (difference.ci_high - difference.ci_low) / (2 * _Z95)
        if se > 0:
            z = difference.value / se
        else:
            notes.append("Interim z not computed (the risk difference's interval has no width).")
    power: float | None = None
    if z is not None:
        if 0.0 < fraction < 1.0:
            z_value = z
            power = _attempt(
                notes,
                "Conditional power",
                lambda: conditional_power(z_value, fraction, drift="current_trend", alpha=INTERIM_ALPHA),
            )
        else:
            notes.append("Conditional power not computed (the information fraction is 1: this is the final look).")
    return InterimLook(
        information_fraction=fraction,
        z=z,
        boundary_timing=list(bounds.timing),
        boundary_z=list(bounds.z),
        conditional_power=power,
        crossed=z is not None and z >= bounds.z[-1],
    )


# --- AI error cases --------------------------------------------------------------------------------


def _errors(groups: list[str], rows_by_group: Mapping[str, list[Row]], images: Mapping[str, int]) -> list[ErrorCase]:
    cases: list[ErrorCase] = []
    for g in groups:
        for r in rows_by_group[g]:
            truth = r.get("reference_high_grade")
            category = r.get("ai_category")
            if truth is None or category is None:
                continue
            if truth and category != HIGH_GRADE:
                kind = "false negative"
            elif not truth and category == HIGH_GRADE:
                kind = "false positive"
            else:
                continue
            probability = r.get("ai_high_grade_probability")
            cases.append(
                ErrorCase(
                    study_id=str(r["study_id"]),
                    group=g,
                    kind=kind,
                    ai_category=str(category),
                    ai_probability=float(probability) if probability is not None else None,
                    reference=_reference_label(r),
                    image_id=images.get(str(r["study_id"])),
                )
            )
    cases.sort(key=lambda c: (c.kind, c.group, c.study_id))
    return cases


# --- The analysis ----------------------------------------------------------------------------------


def analyse(
    datasets: AnalysisDatasets,
    *,
    closed: bool,
    consort: ConsortFlow,
    timing: list[float] | None = None,
    planned_events: int | None = None,
    generated_at: dt.datetime | None = None,
    images: Mapping[str, int] | None = None,
    outline_dice: Mapping[str, float] | None = None,
) -> TrialAnalysis:
    """Every endpoint of the trial from the data sets (see the module notes
    for the definitions). `images`: study id → the image to show for an AI
    error case (`ai_images_for_errors`). A closed analysis needs the arm
    column (ValueError otherwise); thin data give None and a note."""
    generated_at = generated_at or timezone.now()
    participants = datasets.participants.rows
    reads = datasets.reads.rows
    column_names = [c.name for c in datasets.participants.columns]
    covariates = [name for name in column_names if name.startswith("cov_")]
    notes: list[str] = []

    if closed:
        if "arm" not in column_names:
            raise ValueError("A closed analysis needs the arm: these data sets have no arm column.")
        groups = sorted({str(r["arm"]) for r in participants if r.get("arm") is not None})
        rows_by_group: dict[str, list[Row]] = {g: [r for r in participants if r.get("arm") == g] for g in groups}
    else:
        groups = [POOLED]
        rows_by_group = {POOLED: list(participants)}
    if not participants:
        notes.append("No randomized participant in the data sets.")

    outcomes = {g: _group_outcome(g, rows_by_group[g], notes) for g in groups}
    primary = _primary(groups, rows_by_group, covariates, notes) if closed else PrimaryResult(None, None, None)
    agreement = _agreement(participants, reads, notes)
    analysis_day = _day(generated_at) or timezone.localdate()
    curves, test, hazard = _time_to_diagnosis(groups, rows_by_group, closed, analysis_day, notes)

    interim: InterimLook | None = None
    if closed and (timing or planned_events):
        diseased = sum(_accuracy_counts(rows_by_group[g], True)[1] for g in groups)
        interim = _interim(primary, diseased, timing, planned_events, notes)

    dice_by_group, dice_n = _outline_agreement(groups, rows_by_group, outline_dice or {}, notes)
    files = {"participants.csv": datasets.participants.to_csv(), "reads.csv": datasets.reads.to_csv()}
    trial = datasets.scope.trial
    return TrialAnalysis(
        trial_code=trial.code,
        trial_title=trial.title,
        generated_at=generated_at,
        data_hash=analysis_services.data_hash(files),
        closed=closed,
        groups=groups,
        consort=consort,
        baseline=_baseline(groups, rows_by_group, covariates),
        outcomes=outcomes,
        primary=primary,
        agreement=agreement,
        time_to_diagnosis=curves,
        logrank=test,
        cox_hazard_ratio=hazard,
        interim=interim,
        errors=_errors(groups, rows_by_group, images or {}) if closed else [],
        notes=notes,
        outline_dice=dice_by_group,
        outline_dice_n=dice_n,
        bland_altman=_bland_altman_comparisons(groups, rows_by_group, reads, closed, notes),
    )


def _outline_agreement(
    groups: list[str], rows_by_group: Mapping[str, list[Row]], dice_by_study: Mapping[str, float], notes: list[str]
) -> tuple[dict[str, Estimate | None], dict[str, int]]:
    """Mean Dice of the AI mask against the reader's outline per group, with
    a t interval (outlines are optional: few cases may have one)."""
    estimates: dict[str, Estimate | None] = {}
    counts: dict[str, int] = {}
    for group in groups:
        values = [dice_by_study[r["study_id"]] for r in rows_by_group[group] if r.get("study_id") in dice_by_study]
        counts[group] = len(values)
        if len(values) < 2:
            estimates[group] = None
            if dice_by_study:
                notes.append(f"Outline Dice ({group}): fewer than 2 cases with both an AI mask and a reader outline.")
            continue
        mean = statistics.fmean(values)
        se = statistics.stdev(values) / math.sqrt(len(values))
        margin = float(scipy_stats.t.ppf(0.975, len(values) - 1)) * se
        estimates[group] = Estimate(mean, max(0.0, mean - margin), min(1.0, mean + margin), se=se)
    return estimates, counts


# --- From the database ------------------------------------------------------------------------------


def ai_images_for_errors(trial: Trial) -> dict[str, int]:
    """Study id → the image whose finished AI result gave the highest
    high-grade probability (the thumbnail of an AI error case); one query."""
    best: dict[str, tuple[float, int]] = {}
    for study_id, image_id, probabilities in AiResult.objects.filter(
        image__participant__trial=trial,
        image__participant__data_withdrawn=False,
        image__participant__ai_processing_stopped=False,
        status=AiResultStatus.DONE,
    ).values_list("image__participant__study_id", "image_id", "category_probabilities"):
        probability = float((probabilities or {}).get(HIGH_GRADE) or 0.0)
        current = best.get(study_id)
        if current is None or (probability, -image_id) > (current[0], -current[1]):
            best[study_id] = (probability, image_id)
    return {study_id: image_id for study_id, (_, image_id) in best.items()}


def outline_dice_by_participant(trial: Trial) -> dict[str, float]:
    """Study id → Dice of the AI mask against the clinical reader's outline
    (the current signed final read of the clinical task), when the outline was
    drawn on the image and frame the AI judged. Participants who withdrew their
    data or from AI processing are left out; outlines signed after a stop of
    follow-up too. Two queries, then one verified read of each mask pair."""
    from PIL import Image as PILImage

    from ai_engine.selectors import ai_result_mask
    from imaging import storage

    reads = list(
        Read.objects.filter(
            task__trial=trial,
            task__kind=TaskKind.CLINICAL,
            phase=Phase.FINAL,
            current=True,
            status=ReadStatus.SIGNED,
            task__participant__data_withdrawn=False,
            task__participant__ai_processing_stopped=False,
        )
        .exclude(outline_mask="")
        .select_related("task__participant")
    )
    image_ids = {int(read.outline["image"]) for read in reads if read.outline.get("image") is not None}
    results: dict[int, AiResult] = {}
    for result in AiResult.objects.filter(image_id__in=image_ids, status=AiResultStatus.DONE).order_by("finished_at"):
        results[result.image_id] = result  # the latest finished result of each image
    dice_by_study: dict[str, float] = {}
    for read in reads:
        participant = read.task.participant
        cutoff = participant.withdrawn_on if participant.follow_up_stopped else None
        if cutoff is not None and read.signed_at is not None and timezone.localdate(read.signed_at) > cutoff:
            continue
        found = results.get(int(read.outline.get("image", -1)))
        if found is None or not found.mask or int(read.outline.get("frame", 0)) != int(found.frame_index or 0):
            continue
        ai_mask = ai_result_mask(found).astype(bool)
        with PILImage.open(
            io.BytesIO(storage.read_verified(read.outline_mask.name, read.outline_mask_sha256))
        ) as image:
            reader_mask = np.asarray(image.convert("L")) > 127
        if ai_mask.shape != reader_mask.shape:
            continue
        dice_by_study[participant.study_id] = float(dice(ai_mask, reader_mask))
    return dice_by_study


_EXCLUDED = (ScreeningStatus.INELIGIBLE, ScreeningStatus.DECLINED, ScreeningStatus.NOT_ENROLLED)
_LOST_REASONS = {
    WithdrawalScope.STOP_FOLLOW_UP: "Stopped follow-up",
    WithdrawalScope.WITHDRAW_DATA: "Withdrew data",
}


def consort_flow(trial: Trial, scope: ExportScope) -> ConsortFlow:
    """The CONSORT-AI flow from the database in a constant number of queries:
    assessed = screening entries; excluded = not eligible, declined or not
    enrolled, with their recorded reasons (the status when none was given);
    randomized / allocated per arm label of the scope (one "All" box when the
    scope has no arm); received = a signed final clinical read; lost = follow-up
    stopped or data withdrawn; analysed = a signed final clinical read and a
    conclusive reference standard, data not withdrawn."""
    statuses = dict(ScreeningStatus.choices)
    assessed = 0
    excluded = 0
    reasons: Counter[str] = Counter()
    for status, exclusion_reasons in ScreeningEntry.objects.filter(trial=trial).values_list(
        "status", "exclusion_reasons"
    ):
        assessed += 1
        if status not in _EXCLUDED:
            continue
        excluded += 1
        texts = [
            str(reason.get("text") or reason.get("code") or "") if isinstance(reason, dict) else str(reason)
            for reason in (exclusion_reasons or [])
        ]
        texts = [text for text in texts if text]
        reasons.update(texts or [str(statuses.get(status, status))])

    received_ids = set(
        Read.objects.filter(
            task__trial=trial,
            task__kind=TaskKind.CLINICAL,
            phase=Phase.FINAL,
            status=ReadStatus.SIGNED,
            current=True,
        ).values_list("task__participant_id", flat=True)
    )
    participants = Participant.objects.filter(trial=trial, allocation__isnull=False).select_related("allocation")
    participants = participants.prefetch_related("withdrawals", "reference_results")
    allocated: Counter[str] = Counter()
    received: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    lost_reasons: dict[str, Counter[str]] = {}
    analysed: Counter[str] = Counter()
    labels = scope.arm_labels
    for participant in participants:
        label = labels.get(participant.allocation.arm, POOLED) if labels else POOLED
        allocated[label] += 1
        has_read = participant.pk in received_ids
        if has_read:
            received[label] += 1
        withdrawals = {w.scope: w.withdrawn_on for w in participant.withdrawals.all()}
        why = [
            text
            for scope_value, text in _LOST_REASONS.items()
            if scope_value in withdrawals
            or (scope_value == WithdrawalScope.WITHDRAW_DATA and participant.data_withdrawn)
            or (scope_value == WithdrawalScope.STOP_FOLLOW_UP and participant.follow_up_stopped)
        ]
        if why:
            lost[label] += 1
            lost_reasons.setdefault(label, Counter()).update(why[-1:])  # data withdrawal outranks follow-up
        cutoff = withdrawals.get(WithdrawalScope.STOP_FOLLOW_UP)
        conclusive = any(
            r.is_high_grade is not None and (cutoff is None or r.result_date <= cutoff)
            for r in participant.reference_results.all()
        )
        if has_read and conclusive and not participant.data_withdrawn:
            analysed[label] += 1
    arms = sorted(set(labels.values())) if labels else [POOLED]
    return ConsortFlow(
        assessed=assessed,
        excluded=excluded,
        exclusion_reasons=sorted(reasons.items(), key=lambda item: (-item[1], item[0])),
        randomized=sum(allocated.values()),
        allocated={a: allocated[a] for a in arms},
        received={a: received[a] for a in arms},
        lost={a: lost[a] for a in arms},
        lost_reasons={a: sorted(lost_reasons.get(a, Counter()).items(), key=lambda i: (-i[1], i[0])) for a in arms},
        analysed={a: analysed[a] for a in arms},
    )
