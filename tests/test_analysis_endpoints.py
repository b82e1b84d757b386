"""The trial's endpoints (analysis.endpoints): hand-made data set rows with
known counts checked against the statistics library on the same counts, the
open (pooled) analysis, thin data giving None with a note, and one analysis
of a small trial from the database with its CONSORT flow."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analysis import endpoints
from analysis.datasets import AnalysisDatasets, Dataset, build_datasets, participant_columns, read_columns
from analysis.results import POOLED, ConsortFlow
from analysis.selectors import ExportScope
from analysis.stats import (
    Estimate,
    bland_altman,
    cohen_kappa,
    conditional_power,
    fleiss_kappa,
    group_sequential_bounds,
    gwet_ac1,
    logistic_regression,
    proportion_ci,
    risk_difference,
    roc_auc,
)
from randomization.models import Arm
from readings import services as reading_services
from readings.models import Phase, Read, ReadingTask
from tests.conftest import PASSWORD, actor_for
from tests.reading_fixtures import THYROID_READ, Case
from trial.models import Role, ScreeningEntry, Trial, WithdrawalScope
from trial.services import participant_withdraw, reference_result_record

COVARIATES = [{"name": "band", "label": "Band", "choices": ["x", "y"]}]
RANDOMIZED = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
GENERATED = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)  # 60 days after randomization
FLOW = ConsortFlow(0, 0, [], 0, {}, {}, {}, {}, {})


def scope(arm_mode: str = "masked") -> ExportScope:
    trial = Trial(code="t1", title="A trial", stratification_covariates=COVARIATES)
    labels = {Arm.AI_ASSISTED: "A", Arm.SPECIALIST_ONLY: "B"} if arm_mode == "masked" else {}
    return ExportScope(trial, "statistician", arm_mode, labels)  # type: ignore[arg-type]


def person(n: int, arm: str = "A", **values: Any) -> dict[str, Any]:
    """A participant row: every column present, empty unless given."""
    row: dict[str, Any] = {c.name: None for c in participant_columns(scope().trial, "masked", scope().arm_labels)}
    row.update(
        study_id=f"P{n:03d}",
        site="S1",
        indication="thyroid",
        arm=arm,
        cov_band="x" if n % 2 else "y",
        year_of_birth=1970,
        sex="female",
        randomized_at=RANDOMIZED,
    )
    row.update(values)
    return row


def read(study_id: str, category: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in read_columns()}
    row.update(study_id=study_id, task_kind="panel", reread=False, phase="final", category=category)
    row.update(values)
    return row


def data(rows: list[dict[str, Any]], reads: list[dict[str, Any]] | None = None, arm_mode: str = "masked") -> Any:
    s = scope(arm_mode)
    columns = participant_columns(s.trial, s.arm_mode, s.arm_labels)
    if arm_mode == "none":
        rows = [{k: v for k, v in r.items() if k != "arm"} for r in rows]
    return AnalysisDatasets(s, Dataset("participants", columns, rows), Dataset("reads", read_columns(), reads or []))


def diagnosed(arm: str, start: int, diseased: int, detected: int, healthy: int, correct: int) -> list[dict[str, Any]]:
    """Participants of one arm with a final read and a conclusive reference."""
    rows = []
    for i in range(diseased):
        hit = i < detected
        rows.append(
            person(
                start + i,
                arm,
                reference_high_grade=True,
                reference_category="high-grade",
                final_high_grade=hit,
                final_category="high-grade" if hit else "low-grade",
                days_to_diagnosis=10 + i,
            )
        )
    for i in range(healthy):
        ok = i < correct
        rows.append(
            person(
                start + diseased + i,
                arm,
                reference_high_grade=False,
                reference_category="normal" if i % 2 else "low-grade",
                final_high_grade=not ok,
                final_category="normal" if ok else "high-grade",
                days_to_diagnosis=20 + i,
            )
        )
    return rows


def trial_rows() -> list[dict[str, Any]]:
    return diagnosed("A", 0, 10, 8, 10, 9) + diagnosed("B", 100, 10, 6, 10, 7)


def close(estimate: Estimate | None, expected: Estimate) -> None:
    assert estimate is not None
    assert estimate.value == pytest.approx(expected.value, abs=1e-12)
    assert estimate.ci_low == pytest.approx(expected.ci_low, abs=1e-12)
    assert estimate.ci_high == pytest.approx(expected.ci_high, abs=1e-12)


# --- Pure: hand-made rows ------------------------------------------------------------------------


def test_sensitivity_specificity_and_the_primary_comparison_by_arm() -> None:
    result = endpoints.analyse(data(trial_rows()), closed=True, consort=FLOW, generated_at=GENERATED)
    assert result.closed and result.groups == ["A", "B"]
    a, b = result.outcomes["A"], result.outcomes["B"]
    assert a.n == 20 and b.n == 20
    close(a.sensitivity, Estimate(0.8, *proportion_ci(8, 10)))
    close(a.specificity, Estimate(0.9, *proportion_ci(9, 10)))
    close(b.sensitivity, Estimate(0.6, *proportion_ci(6, 10)))
    close(b.specificity, Estimate(0.7, *proportion_ci(7, 10)))
    assert result.primary.arms == ("A", "B")
    close(result.primary.risk_difference, risk_difference(8, 10, 6, 10))
    assert result.primary.risk_difference is not None and result.primary.risk_difference.value == pytest.approx(0.2)
    # Logistic regression among the 20 reference-positive participants, arm 1 = "A".
    positives = [r for r in trial_rows() if r["reference_high_grade"]]
    expected = logistic_regression(
        [r["final_high_grade"] for r in positives],
        [1 if r["arm"] == "A" else 0 for r in positives],
        {"band": [r["cov_band"] for r in positives]},
        categorical=["band"],
    ).odds_ratio
    close(result.primary.adjusted_odds_ratio, expected)
    assert result.primary.adjusted_odds_ratio is not None and result.primary.adjusted_odds_ratio.value > 1
    # Three levels (normal, low-grade, high-grade) on both sides, linearly weighted.
    levels = ["normal", "low-grade", "high-grade"]
    rows_a = [r for r in trial_rows() if r["arm"] == "A"]
    table_a = [
        [sum(1 for r in rows_a if r["final_category"] == read and r["reference_category"] == ref) for ref in levels]
        for read in levels
    ]
    close(a.staging_kappa, cohen_kappa(table_a, weights="linear"))
    assert result.data_hash and len(result.data_hash) == 64
    assert result.errors == []  # no AI results in these rows


def test_the_open_analysis_pools_everyone_and_compares_no_arms() -> None:
    result = endpoints.analyse(data(trial_rows()), closed=False, consort=FLOW, generated_at=GENERATED)
    assert result.groups == [POOLED] and list(result.outcomes) == [POOLED]
    pooled = result.outcomes[POOLED]
    assert pooled.n == 40
    close(pooled.sensitivity, Estimate(0.7, *proportion_ci(14, 20)))
    close(pooled.specificity, Estimate(0.8, *proportion_ci(16, 20)))
    assert result.primary.risk_difference is None
    assert result.primary.adjusted_odds_ratio is None and result.primary.arms is None
    assert result.logrank is None and result.cox_hazard_ratio is None and result.interim is None
    assert result.errors == []
    assert list(result.time_to_diagnosis) == [POOLED]
    assert all(set(row.by_group) == {POOLED} for row in result.baseline)
    # The same without any arm column (a role that sees no arm).
    armless = endpoints.analyse(data(trial_rows(), arm_mode="none"), closed=False, consort=FLOW)
    assert armless.outcomes[POOLED] == pooled


def test_a_closed_analysis_needs_the_arm() -> None:
    with pytest.raises(ValueError, match="arm column"):
        endpoints.analyse(data(trial_rows(), arm_mode="none"), closed=True, consort=FLOW)


def test_the_baseline_table() -> None:
    rows = trial_rows()
    rows[0]["year_of_birth"] = 1980
    rows[1]["year_of_birth"] = 1960
    rows[2]["sex"] = None
    result = endpoints.analyse(data(rows), closed=True, consort=FLOW, generated_at=GENERATED)
    table = {(r.variable, r.level): r.by_group for r in result.baseline}
    assert table[("Participants", "n")] == {"A": "20", "B": "20"}
    assert table[("Indication", "thyroid")] == {"A": "20 (100.0 %)", "B": "20 (100.0 %)"}
    assert table[("Sex", "female")] == {"A": "19 (95.0 %)", "B": "20 (100.0 %)"}
    assert table[("Sex", "missing")] == {"A": "1 (5.0 %)", "B": "0 (0.0 %)"}
    sd = math.sqrt((10**2 + 10**2) / 19)
    assert table[("Year of birth", "mean (SD)")] == {"A": f"1970 ({sd:.1f})", "B": "1970 (0.0)"}
    assert table[("Stratification: band", "x")] == {"A": "10 (50.0 %)", "B": "10 (50.0 %)"}
    assert table[("Site", "S1")]["B"] == "20 (100.0 %)"


def test_sampling_reading_time_and_ai_influence() -> None:
    rows = [
        # AI arm (sequential): unaided then final.
        person(1, "A", reference_high_grade=True, unaided_category="low-grade", final_category="high-grade"),
        person(2, "A", reference_high_grade=False, unaided_category="normal", final_category="high-grade"),
        person(3, "A", reference_high_grade=False, unaided_category="normal", final_category="low-grade"),
        person(4, "A", reference_high_grade=True, unaided_category="high-grade", final_category="high-grade"),
        person(5, "A", reference_high_grade=None, unaided_category="normal", final_category="high-grade"),
        person(6, "B", final_category="normal"),
    ]
    for row, sampled, (unaided, final) in zip(
        rows, [True, False, True, None, True, False], [(30, 40), (20, 10), (None, 90), (None, None), (5, 5), (None, 60)]
    ):
        row["final_sampling_recommended"] = sampled
        row["unaided_time_spent_s"] = unaided
        row["final_time_spent_s"] = final
    result = endpoints.analyse(data(rows), closed=True, consort=FLOW, generated_at=GENERATED)
    a, b = result.outcomes["A"], result.outcomes["B"]
    close(a.sampling_rate, Estimate(0.75, *proportion_ci(3, 4)))
    assert a.reading_time_median_s == 50.0  # totals 70, 30, 90, 10
    assert b.reading_time_median_s == 60.0
    assert (a.changed_after_ai, a.changed_towards_reference, a.changed_away_from_reference) == (4, 1, 1)
    assert (b.changed_after_ai, b.changed_towards_reference, b.changed_away_from_reference) == (None, None, None)


def test_ai_auc_and_error_cases() -> None:
    probabilities = [(True, 0.9, "high-grade"), (True, 0.3, "low-grade"), (False, 0.2, "normal")]
    probabilities += [(False, 0.8, "high-grade"), (True, 0.7, "high-grade"), (False, 0.1, "normal")]
    rows = [
        person(n, "A" if n < 3 else "B", reference_high_grade=truth, reference_kind="thyroid_histology")
        | {"ai_high_grade_probability": p, "ai_category": category}
        for n, (truth, p, category) in enumerate(probabilities)
    ]
    images = {"P001": 11, "P003": 33}
    pooled = endpoints.analyse(data(rows), closed=False, consort=FLOW, images=images)
    close(pooled.outcomes[POOLED].ai_auc, roc_auc([t for t, _, _ in probabilities], [p for _, p, _ in probabilities]))
    assert pooled.errors == []  # the open report never shows them
    closed = endpoints.analyse(data(rows), closed=True, consort=FLOW, images=images)
    assert closed.outcomes["A"].ai_auc is None  # 2 positives but 1 negative
    assert any("A: AI stand-alone AUC not computed" in note for note in closed.notes)
    assert [(e.kind, e.study_id, e.group, e.image_id, e.ai_probability) for e in closed.errors] == [
        ("false negative", "P001", "A", 11, 0.3),
        ("false positive", "P003", "B", 33, 0.8),
    ]
    assert closed.errors[0].reference == "high-grade (thyroid_histology)"
    assert closed.errors[1].reference == "not high-grade (thyroid_histology)"


def test_agreement_within_the_panel_and_with_the_clinical_read() -> None:
    panel = {
        "P000": ["high-grade", "high-grade", "low-grade"],
        "P001": ["normal", "normal", "normal"],
        "P002": ["low-grade", "low-grade", "low-grade"],
        "P003": ["normal", "low-grade"],  # two reads: AC1 only
        "P004": ["high-grade"],  # one read: left out
    }
    reads = [read(sid, c) for sid, cats in panel.items() for c in cats]
    reads.append(read("P001", "high-grade", reread=True))  # re-reads are not first reads
    reads.append(read("P002", "high-grade", task_kind="clinical"))
    finals = ["high-grade", "normal", "normal", "low-grade"]
    majorities = ["high-grade", "normal", "low-grade", None]
    rows = [person(n, final_category=f, panel_majority_category=m) for n, (f, m) in enumerate(zip(finals, majorities))]
    result = endpoints.analyse(data(rows, reads), closed=False, consort=FLOW)
    agreement = result.agreement
    assert agreement.n_cases == 4
    close(agreement.panel_fleiss_kappa, fleiss_kappa([[0, 1, 2], [3, 0, 0], [0, 3, 0]]))
    close(
        agreement.panel_gwet_ac1,
        gwet_ac1(
            [[*cats, None][:3] for cats in list(panel.values())[:4]], categories=["normal", "low-grade", "high-grade"]
        ),
    )
    close(
        agreement.clinical_vs_panel_kappa,
        cohen_kappa([[1, 1, 0], [0, 0, 0], [0, 0, 1]], weights="linear"),
    )
    assert any("Fleiss κ uses the 3 participants with 3 panel reads" in note for note in result.notes)


def test_time_to_diagnosis_with_censoring() -> None:
    rows = trial_rows()
    # Two without a conclusive reference: censored at the analysis date (60 days) or
    # at the day follow-up stopped (15 days).
    rows.append(person(200, "A"))
    rows.append(person(201, "B", follow_up_stopped=True, follow_up_stopped_on=dt.date(2026, 1, 16)))
    rows.append(person(202, "B", days_to_diagnosis=5, reference_high_grade=None))  # inconclusive: censored
    result = endpoints.analyse(data(rows), closed=True, consort=FLOW, generated_at=GENERATED)
    a, b = result.time_to_diagnosis["A"], result.time_to_diagnosis["B"]
    assert (a.n, a.events, b.n, b.events) == (21, 20, 22, 20)
    assert 60.0 in a.censored_times and 15.0 in b.censored_times
    assert result.logrank is not None and 0.0 <= result.logrank.p_value <= 1.0
    assert result.cox_hazard_ratio is not None and result.cox_hazard_ratio.value > 0


def test_the_interim_look() -> None:
    result = endpoints.analyse(
        data(trial_rows()), closed=True, consort=FLOW, timing=[0.25, 0.5], generated_at=GENERATED
    )
    interim = result.interim
    assert interim is not None
    rd = risk_difference(8, 10, 6, 10)
    z = rd.value / ((rd.ci_high - rd.ci_low) / (2 * 1.959963984540054))
    assert interim.information_fraction == 0.5
    assert interim.z == pytest.approx(z)
    bounds = group_sequential_bounds([0.25, 0.5], alpha=0.025)
    assert interim.boundary_timing == [0.25, 0.5] and interim.boundary_z == pytest.approx(bounds.z)
    assert interim.conditional_power == pytest.approx(conditional_power(z, 0.5, drift="current_trend"))
    assert interim.crossed is (z >= bounds.z[-1]) and interim.crossed is False
    # From the planned events: 20 reference-positive participants of 80 planned.
    planned = endpoints.analyse(data(trial_rows()), closed=True, consort=FLOW, planned_events=80)
    assert planned.interim is not None and planned.interim.information_fraction == 0.25
    assert planned.interim.boundary_z == pytest.approx(group_sequential_bounds([0.25]).z)
    # At the final look there is no conditional power.
    final = endpoints.analyse(data(trial_rows()), closed=True, consort=FLOW, planned_events=20)
    assert final.interim is not None and final.interim.conditional_power is None
    assert endpoints.analyse(data(trial_rows()), closed=False, consort=FLOW, timing=[0.5]).interim is None


@pytest.mark.parametrize(
    "rows",
    [
        [],
        [person(1, "A")],
        [person(1, "A", reference_high_grade=True, final_high_grade=True, final_category="high-grade")],
        # Every reference-positive read detected in both arms: the regression cannot be estimated.
        diagnosed("A", 0, 3, 3, 2, 2) + diagnosed("B", 10, 3, 3, 2, 2),
    ],
)
def test_thin_data_give_none_and_a_note_never_an_error(rows: list[dict[str, Any]]) -> None:
    for closed in (True, False):
        result = endpoints.analyse(data(rows), closed=closed, consort=FLOW, timing=[0.5], generated_at=GENERATED)
        assert result.notes
        assert result.agreement.panel_fleiss_kappa is None and result.agreement.panel_gwet_ac1 is None
        if closed:
            assert result.primary.adjusted_odds_ratio is None
            assert any("Adjusted odds ratio" in n or "Primary comparison" in n for n in result.notes)


# --- From the database ---------------------------------------------------------------------------


def sign(user: Any, task: ReadingTask, data: dict[str, Any], phase: str = Phase.FINAL) -> Read:
    revision = Read.objects.get(task=task, phase=phase, current=True).revision
    return reading_services.read_sign(
        actor=actor_for(user), task=task, phase=phase, data=data, revision=revision, password=PASSWORD
    )


def read_clinical(clinician: Any, case: Case) -> None:
    task = case.task()
    reading_services.reading_task_start(actor=actor_for(clinician), task=task)
    task.refresh_from_db()
    if task.sequential:
        sign(clinician, task, {**THYROID_READ, "echogenicity": "hyperechoic_isoechoic"}, Phase.UNAIDED)
        task.refresh_from_db()
        for result in case.ai_results:
            reading_services.ai_display_record(actor=actor_for(clinician), task=task, ai_result=result, what="contour")
    sign(clinician, task, dict(THYROID_READ))


def test_an_analysis_of_a_small_trial_from_the_database(
    make_case: Callable[..., Case],
    users: dict[str, Any],
    recruiting: Trial,
    coordinator: Any,
    screen: Callable[..., ScreeningEntry],
) -> None:
    clinician, pathologist = users[Role.CLINICIAN_READER], users[Role.PATHOLOGIST]
    ai = make_case(Arm.AI_ASSISTED, images=("grey",), ai=True)
    specialist = make_case(Arm.SPECIALIST_ONLY, images=("grey",), ai=False)
    unread = make_case(Arm.SPECIALIST_ONLY, images=("grey",), ai=False)
    read_clinical(clinician, ai)
    read_clinical(clinician, specialist)
    today = timezone.localdate()
    for case, histology in ((ai, "papillary"), (specialist, "benign")):
        reference_result_record(
            actor=actor_for(pathologist),
            participant=case.participant,
            kind="thyroid_histology",
            thyroid_histology=histology,
            sample_date=today,
            result_date=today,
        )
    participant_withdraw(
        actor=actor_for(coordinator),
        participant=unread.participant,
        withdrawn_on=today,
        scope=WithdrawalScope.STOP_FOLLOW_UP,
        reason="Moved away",
    )
    screen(eligible=False)
    real = ExportScope(recruiting, Role.DSMB, "real", {code: code for code in Arm.values})

    with CaptureQueriesContext(connection) as queries:
        flow = endpoints.consort_flow(recruiting, real)
    small = len(queries)
    entries = ScreeningEntry.objects.filter(trial=recruiting)
    assert flow.assessed == entries.count() and flow.excluded == 1
    assert len(flow.exclusion_reasons) == 1 and flow.exclusion_reasons[0][1] == 1
    allocated = flow.allocated
    assert flow.randomized == sum(allocated.values()) >= 3
    assert flow.received == {Arm.AI_ASSISTED: 1, Arm.SPECIALIST_ONLY: 1}
    assert flow.analysed == {Arm.AI_ASSISTED: 1, Arm.SPECIALIST_ONLY: 1}
    assert flow.lost == {Arm.AI_ASSISTED: 0, Arm.SPECIALIST_ONLY: 1}
    assert flow.lost_reasons[Arm.SPECIALIST_ONLY] == [("Stopped follow-up", 1)]

    datasets = build_datasets(real)
    images = endpoints.ai_images_for_errors(recruiting)
    assert images == {ai.participant.study_id: ai.images[0].pk}
    result = endpoints.analyse(datasets, closed=True, consort=flow, images=images)
    assert result.groups == sorted({Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY})
    assert result.trial_code == recruiting.code
    ai_outcome = result.outcomes[Arm.AI_ASSISTED]
    # The final read is TR4 (high-grade) against a papillary carcinoma.
    close(ai_outcome.sensitivity, Estimate(1.0, *proportion_ci(1, 1)))
    assert ai_outcome.changed_after_ai == 1 and ai_outcome.changed_towards_reference == 1
    assert result.outcomes[Arm.SPECIALIST_ONLY].specificity is not None
    assert result.outcomes[Arm.SPECIALIST_ONLY].specificity.value == 0.0  # TR4 against benign
    for error in result.errors:
        assert error.image_id == images[error.study_id]
    pooled = endpoints.analyse(datasets, closed=False, consort=flow)
    assert pooled.groups == [POOLED] and pooled.outcomes[POOLED].n == len(datasets.participants.rows)

    for _ in range(2):
        make_case(Arm.AI_ASSISTED, images=("grey",), ai=False)
    with CaptureQueriesContext(connection) as queries:
        endpoints.consort_flow(recruiting, real)
    assert len(queries) == small <= 6


def test_outline_dice_compares_the_ai_mask_with_the_readers_outline_on_the_ai_frame(
    make_case: Callable[..., Case], users: dict[str, Any]
) -> None:
    import io as _io

    import numpy as np
    from PIL import Image as PILImage

    from ai_engine.selectors import ai_result_mask
    from analysis.selectors import export_scope
    from analysis.stats import dice
    from imaging import storage

    clinician = users[Role.CLINICIAN_READER]
    expected: dict[str, float] = {}
    for n in range(2):
        case = make_case(Arm.AI_ASSISTED, images=("palette",))
        [result] = case.ai_results
        image = case.images[0]
        task = case.task()
        reading_services.reading_task_start(actor=actor_for(clinician), task=task)
        reading_services.read_sign(
            actor=actor_for(clinician), task=task, phase=Phase.UNAIDED, data=THYROID_READ, revision=0, password=PASSWORD
        )
        size = 60 + 40 * n
        outline = {
            "image": image.pk,
            "frame": result.frame_index or 0,
            "points": [[100, 100], [100 + size, 100], [100 + size, 100 + size], [100, 100 + size]],
        }
        final = reading_services.read_sign(
            actor=actor_for(clinician),
            task=task,
            phase=Phase.FINAL,
            data=THYROID_READ,
            revision=0,
            password=PASSWORD,
            outline=outline,
        )
        data = storage.read_verified(final.outline_mask.name, final.outline_mask_sha256)
        with PILImage.open(_io.BytesIO(data)) as picture:
            reader = np.asarray(picture.convert("L")) > 127
        expected[case.participant.study_id] = float(dice(ai_result_mask(result).astype(bool), reader))
    trial = ReadingTask.objects.first().trial  # type: ignore[union-attr]
    found = endpoints.outline_dice_by_participant(trial)
    assert found == pytest.approx(expected)
    scope = export_scope(users[Role.DSMB], trial.pk)
    analysis = endpoints.analyse(
        build_datasets(scope), closed=True, consort=endpoints.consort_flow(trial, scope), outline_dice=found
    )
    group = next(g for g in analysis.groups if analysis.outline_dice_n.get(g))
    assert analysis.outline_dice_n[group] == 2
    estimate = analysis.outline_dice[group]
    assert estimate is not None and estimate.value == pytest.approx(sum(expected.values()) / 2)
    assert estimate.ci_low <= estimate.value <= estimate.ci_high


# --- Bland–Altman ------------------------------------------------------------------------------------


def test_bland_altman_of_reading_time_and_of_the_diameter_against_the_panel() -> None:
    unaided = {0: 120, 1: 90, 2: 150, 3: 60, 4: 100}
    final = {0: 100, 1: 95, 2: 110, 3: 70, 4: 80}
    rows = [
        person(n, "A" if n < 3 else "B", unaided_time_spent_s=unaided[n], final_time_spent_s=final[n]) for n in range(5)
    ]
    rows.append(person(5, "B", final_time_spent_s=40))  # no unaided read: not a pair
    clinical = {"P000": 18.0, "P001": 22.0, "P002": 9.0, "P003": 31.0}
    panel = {"P000": [17.0, 20.0], "P001": [22.0], "P002": [10.0, 11.0, 9.0], "P003": [30.0, 29.0]}
    reads = [
        read(sid, "low-grade", task_kind="clinical", largest_diameter_mm=v, version=2) for sid, v in clinical.items()
    ]
    # The clinical reads were corrected: the earlier version does not count.
    reads.append(read("P000", "low-grade", task_kind="clinical", largest_diameter_mm=99.0, version=1))
    reads += [
        read(sid, "low-grade", largest_diameter_mm=v, reader=f"R{k}")
        for sid, vs in panel.items()
        for k, v in enumerate(vs)
    ]
    reads.append(read("P001", "low-grade", largest_diameter_mm=80.0, reread=True))  # re-reads are left out
    reads.append(read("P002", "low-grade", task_kind="clinical", phase="unaided", largest_diameter_mm=50.0))

    pooled = endpoints.analyse(data(rows, reads, arm_mode="none"), closed=False, consort=FLOW)
    time = pooled.bland_altman[endpoints.READING_TIME_COMPARISON]
    expected = bland_altman([unaided[n] for n in range(5)], [final[n] for n in range(5)])
    assert time == expected
    diameter = pooled.bland_altman[endpoints.DIAMETER_COMPARISON]
    panel_means = [sum(v) / len(v) for v in panel.values()]
    assert diameter == bland_altman(list(clinical.values()), panel_means)
    assert diameter.n == 4 and diameter.mean_difference == pytest.approx((-0.5 + 0 - 1 + 1.5) / 4, abs=1e-12)

    closed = endpoints.analyse(data(rows, reads), closed=True, consort=FLOW)
    # Arm A: 3 pairs of each; arm B: 2 reading-time pairs and 1 diameter pair, too few.
    assert set(closed.bland_altman) == {
        f"{endpoints.READING_TIME_COMPARISON} (A)",
        f"{endpoints.DIAMETER_COMPARISON} (A)",
    }
    assert closed.bland_altman[f"{endpoints.READING_TIME_COMPARISON} (A)"] == bland_altman(
        [120, 90, 150], [100, 95, 110]
    )
    assert f"Bland–Altman {endpoints.READING_TIME_COMPARISON} (B) not computed (needs 3 pairs; 2)." in closed.notes
    assert f"Bland–Altman {endpoints.DIAMETER_COMPARISON} (B) not computed (needs 3 pairs; 1)." in closed.notes


def test_bland_altman_with_too_few_pairs_is_a_note() -> None:
    rows = [person(n, unaided_time_spent_s=60 + n, final_time_spent_s=50) for n in range(2)]
    result = endpoints.analyse(data(rows, arm_mode="none"), closed=False, consort=FLOW)
    assert result.bland_altman == {}
    assert f"Bland–Altman {endpoints.READING_TIME_COMPARISON} not computed (needs 3 pairs; 2)." in result.notes
    assert f"Bland–Altman {endpoints.DIAMETER_COMPARISON} not computed (needs 3 pairs; 0)." in result.notes
