"""The shape of one analysis of the trial: what analysis.endpoints computes
from the analysis data sets and what the reports render. Plain data (no
Django), so a report can be drawn from it and tested without a database.

Arm labels are the export scope's: the real arm names for unblinded roles,
"A"/"B" for masked ones; an open (pooled) report uses one group, "All".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from analysis.stats import BlandAltman, Estimate, KaplanMeierResult, TestResult

POOLED = "All"


@dataclass(frozen=True)
class ConsortFlow:
    """The CONSORT-AI flow diagram's boxes, per arm where the box is per arm."""

    assessed: int
    excluded: int
    exclusion_reasons: list[tuple[str, int]]  # (reason, count), most frequent first
    randomized: int
    allocated: dict[str, int]
    received: dict[str, int]  # a signed final clinical read
    lost: dict[str, int]  # follow-up stopped or data withdrawn after randomization
    lost_reasons: dict[str, list[tuple[str, int]]]
    analysed: dict[str, int]  # final clinical read and a conclusive reference standard


@dataclass(frozen=True)
class BaselineRow:
    """One line of the baseline table: a variable (and level) by group,
    already formatted ("12 (34.3 %)", "1968 (11)")."""

    variable: str
    level: str
    by_group: dict[str, str]


@dataclass(frozen=True)
class GroupOutcome:
    """Outcomes of one group (arm, or all pooled)."""

    n: int
    sensitivity: Estimate | None  # final clinical read vs high-grade reference
    specificity: Estimate | None
    sampling_rate: Estimate | None  # biopsy (cervix) or FNA (thyroid) recommended
    reading_time_median_s: float | None
    staging_kappa: Estimate | None  # weighted κ of the read's category vs the reference category
    ai_auc: Estimate | None  # AI stand-alone: high-grade probability vs the reference
    changed_after_ai: int | None  # final category differs from the unaided one (AI arm)
    changed_towards_reference: int | None
    changed_away_from_reference: int | None


@dataclass(frozen=True)
class PrimaryResult:
    """Sensitivity of the final clinical read for high-grade disease,
    compared between the arms (closed analyses only)."""

    risk_difference: Estimate | None  # Newcombe, first arm minus second
    adjusted_odds_ratio: Estimate | None  # logistic regression on the stratification factors
    arms: tuple[str, str] | None


@dataclass(frozen=True)
class AgreementResult:
    panel_fleiss_kappa: Estimate | None
    panel_gwet_ac1: Estimate | None
    clinical_vs_panel_kappa: Estimate | None  # weighted κ, final clinical read vs panel majority
    n_cases: int


@dataclass(frozen=True)
class InterimLook:
    information_fraction: float
    z: float | None
    boundary_timing: list[float]
    boundary_z: list[float]
    conditional_power: float | None
    crossed: bool


@dataclass(frozen=True)
class ErrorCase:
    """An AI false negative or false positive (closed report only)."""

    study_id: str
    group: str
    kind: str  # "false negative" or "false positive"
    ai_category: str
    ai_probability: float | None
    reference: str
    image_id: int | None


@dataclass(frozen=True)
class ChecklistItem:
    """One item of the CONSORT-AI extension: `filled` when the platform wrote
    `text` from the trial's data, else `text` says what the authors must add."""

    item: str  # "5(i)"
    topic: str
    filled: bool
    text: str


@dataclass
class TrialAnalysis:
    trial_code: str
    trial_title: str
    generated_at: dt.datetime
    data_hash: str
    closed: bool  # by arm (closed) or pooled (open)
    groups: list[str]  # arm labels, or [POOLED]
    consort: ConsortFlow
    baseline: list[BaselineRow]
    outcomes: dict[str, GroupOutcome]
    primary: PrimaryResult
    agreement: AgreementResult
    time_to_diagnosis: dict[str, KaplanMeierResult] = field(default_factory=dict)
    logrank: TestResult | None = None
    cox_hazard_ratio: Estimate | None = None
    interim: InterimLook | None = None
    errors: list[ErrorCase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be computed, and why
    # Mean Dice of the AI mask against the clinical reader's outline (final
    # read, same image and frame), per group, with the number of outlines.
    outline_dice: dict[str, Estimate | None] = field(default_factory=dict)
    outline_dice_n: dict[str, int] = field(default_factory=dict)
    # Bland–Altman limits of agreement, keyed by the comparison
    # ("Reading time (s): unaided − final"; closed: "… (arm)").
    bland_altman: dict[str, BlandAltman] = field(default_factory=dict)
    # The CONSORT-AI checklist (analysis.checklist), filled after analyse.
    consort_ai: list[ChecklistItem] = field(default_factory=list)
