"""Hand-built TrialAnalysis objects for the report tests (sized like a
trial of `n` participants)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from analysis.results import (
    POOLED,
    AgreementResult,
    BaselineRow,
    ChecklistItem,
    ConsortFlow,
    ErrorCase,
    GroupOutcome,
    InterimLook,
    PrimaryResult,
    TrialAnalysis,
)
from analysis.stats import Estimate, TestResult, bland_altman, group_sequential_bounds, kaplan_meier

ARMS = ("ai_assisted", "specialist_only")


def _outcome(n: int, shift: float) -> GroupOutcome:
    return GroupOutcome(
        n=n,
        sensitivity=Estimate(0.82 + shift, 0.75 + shift, 0.88 + shift),
        specificity=Estimate(0.71, 0.66, 0.75),
        sampling_rate=Estimate(0.41, 0.37, 0.45),
        reading_time_median_s=94.0 + 10 * shift,
        staging_kappa=Estimate(0.61, 0.55, 0.67, se=0.03),
        ai_auc=Estimate(0.88, 0.85, 0.91, se=0.015),
        changed_after_ai=37 if shift else None,
        changed_towards_reference=29 if shift else None,
        changed_away_from_reference=8 if shift else None,
    )


def make_analysis(*, closed: bool, n: int = 2000, seed: int = 1) -> TrialAnalysis:
    rng = np.random.default_rng(seed)
    groups = list(ARMS) if closed else [POOLED]
    per = {g: n // len(groups) for g in groups}
    times = {g: rng.exponential(60, per[g]).round(0) + 1 for g in groups}
    events = {g: rng.random(per[g]) < 0.7 for g in groups}
    look_timing = [1 / 3, 2 / 3, 1.0]
    flow = ConsortFlow(
        assessed=n + 412,
        excluded=412,
        exclusion_reasons=[("did not meet inclusion criterion IN2", 230), ("declined consent", 182)],
        randomized=n,
        allocated=per,
        received={g: per[g] - 11 for g in groups},
        lost={g: 14 for g in groups},
        lost_reasons={g: [("withdrew from follow-up", 9), ("lost to follow-up", 5)] for g in groups},
        analysed={g: per[g] - 25 for g in groups},
    )
    baseline = [
        BaselineRow("Age, median (IQR)", "", {g: "41 (33–52)" for g in groups}),
        BaselineRow("Indication", "cervical", {g: f"{per[g] // 2} (50.0 %)" for g in groups}),
        BaselineRow("Indication", "thyroid", {g: f"{per[g] // 2} (50.0 %)" for g in groups}),
    ]
    return TrialAnalysis(
        trial_code="CONS-1",
        trial_title="AI second opinion in colposcopy and thyroid ultrasound",
        generated_at=dt.datetime(2026, 12, 5, 9, 30, tzinfo=dt.UTC),
        data_hash="ab" * 32,
        closed=closed,
        groups=groups,
        consort=flow,
        baseline=baseline,
        outcomes={g: _outcome(per[g], 0.04 if g == ARMS[0] else 0.0) for g in groups},
        primary=PrimaryResult(
            risk_difference=Estimate(0.04, -0.01, 0.09, p_value=0.12) if closed else None,
            adjusted_odds_ratio=Estimate(1.31, 0.93, 1.84, p_value=0.12) if closed else None,
            arms=ARMS if closed else None,
        ),
        agreement=AgreementResult(
            panel_fleiss_kappa=Estimate(0.58, 0.54, 0.62),
            panel_gwet_ac1=Estimate(0.66, 0.62, 0.70),
            clinical_vs_panel_kappa=Estimate(0.63, 0.59, 0.67),
            n_cases=n - 50,
        ),
        time_to_diagnosis={g: kaplan_meier(times[g].tolist(), events[g].tolist()) for g in groups},
        logrank=TestResult(3.4, 0.065) if closed else None,
        cox_hazard_ratio=Estimate(1.12, 0.99, 1.27, p_value=0.07) if closed else None,
        interim=InterimLook(
            information_fraction=0.5,
            z=1.21 if closed else None,
            boundary_timing=look_timing,
            boundary_z=group_sequential_bounds(look_timing).z,
            conditional_power=0.64 if closed else None,
            crossed=False,
        ),
        errors=[
            ErrorCase(
                f"S-{k:04d}", ARMS[k % 2], "false negative" if k % 3 else "false positive", "low", 0.12, "CIN2", k
            )
            for k in range(40)
        ]
        if closed
        else [],
        notes=["Staging agreement: 12 reads had no reference category."],
        bland_altman={
            "Reading time (s): unaided − final clinical read" + ("" if g == POOLED else f" ({g})"): bland_altman(
                rng.normal(95, 20, per[g] // 2), rng.normal(80, 20, per[g] // 2)
            )
            for g in groups
        },
        consort_ai=[
            ChecklistItem("1a,b(i)", "AI in the title and abstract", False, "say that the intervention involves AI"),
            ChecklistItem("5(i)", "AI version", True, "combined-thyroid 1.0 (sha256 " + "cd" * 32 + "): 812 images"),
        ],
    )
