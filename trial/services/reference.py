"""Reference-standard results: histology, cytology, surgical histology."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from trial import audit
from trial.actors import Actor
from trial.errors import RuleViolation
from trial.models import (
    INVASIVE_CERVICAL,
    KIND_FOR_INDICATION,
    MALIGNANT_THYROID,
    Indication,
    Participant,
    ReferenceKind,
    ReferenceStandardResult,
)
from trial.permissions import Capability
from trial.services.checks import (
    authorize,
    clean_model,
    not_in_future,
    require_reason,
)

REFERENCE_FIELDS = [
    "kind",
    "sample_date",
    "result_date",
    "cervical_histology",
    "bethesda_category",
    "thyroid_histology",
    "figo_stage",
    "tnm_t",
    "tnm_n",
    "tnm_m",
    "notes",
]


def _check_reference(result: ReferenceStandardResult, participant: Participant) -> None:
    allowed_kinds = KIND_FOR_INDICATION[Indication(participant.indication)]
    if result.kind not in allowed_kinds:
        raise RuleViolation(
            f"A {ReferenceKind(result.kind).label.lower()} result does not fit a {participant.indication} participant.",
            field="kind",
        )
    clean_model(result, exclude=["participant", "recorded_by"])
    not_in_future(result.result_date, "result date", "result_date")
    if result.sample_date > result.result_date:
        raise RuleViolation("The sample date is after the result date.", field="sample_date")
    if result.sample_date < participant.screening.screened_on:
        raise RuleViolation("The sample date is before the participant was screened.", field="sample_date")
    tnm = [result.tnm_t, result.tnm_n, result.tnm_m]
    if result.kind == ReferenceKind.CERVICAL_HISTOLOGY:
        if not result.cervical_histology:
            raise RuleViolation("Cervical histology needs a CIN grade or diagnosis.", field="cervical_histology")
        if result.bethesda_category or result.thyroid_histology or any(tnm):
            raise RuleViolation("Thyroid fields do not belong to a cervical result.")
        if result.figo_stage and result.cervical_histology not in INVASIVE_CERVICAL:
            raise RuleViolation("A FIGO stage is given only for invasive cancer.", field="figo_stage")
        return
    if result.cervical_histology or result.figo_stage:
        raise RuleViolation("Cervical fields do not belong to a thyroid result.")
    if result.kind == ReferenceKind.THYROID_CYTOLOGY:
        if result.bethesda_category is None:
            raise RuleViolation("Thyroid cytology needs a Bethesda category.", field="bethesda_category")
        if result.thyroid_histology or any(tnm):
            raise RuleViolation("Cytology carries a Bethesda category only; histology and TNM come from surgery.")
        return
    if not result.thyroid_histology:
        raise RuleViolation("Surgical histology needs a diagnosis.", field="thyroid_histology")
    if result.bethesda_category is not None:
        raise RuleViolation(
            "A Bethesda category belongs to cytology, not surgical histology.", field="bethesda_category"
        )
    if any(tnm):
        if result.thyroid_histology not in MALIGNANT_THYROID:
            raise RuleViolation("A TNM stage is given only for malignancy.", field="tnm_t")
        if not all(tnm):
            raise RuleViolation("Give T, N and M together.", field="tnm_t")


@transaction.atomic
def reference_result_record(*, actor: Actor, participant: Participant, **values: Any) -> ReferenceStandardResult:
    role = authorize(actor, Capability.RECORD_REFERENCE_STANDARD, trial=participant.trial, site=participant.site)
    unknown = set(values) - set(REFERENCE_FIELDS)
    if unknown:
        raise RuleViolation(f"Unknown fields: {', '.join(sorted(unknown))}.")
    participant = Participant.objects.select_for_update().select_related("screening").get(pk=participant.pk)
    if not participant.accepts_clinical_data:
        raise RuleViolation(
            f"{participant.study_id} has withdrawn ({participant.status_label.lower()}); "
            "no new clinical data can be recorded."
        )
    result = ReferenceStandardResult(participant=participant, recorded_by=actor.user, **values)
    _check_reference(result, participant)
    result.save()
    audit.record(
        actor=actor,
        role=role,
        action="reference_result.record",
        obj=result,
        trial=participant.trial,
        site=participant.site,
        screening=participant.screening,
        after=audit.snapshot(result, REFERENCE_FIELDS),
    )
    return result


@transaction.atomic
def reference_result_correct(
    *, actor: Actor, result: ReferenceStandardResult, changes: dict[str, Any], reason: str
) -> ReferenceStandardResult:
    participant = result.participant
    role = authorize(actor, Capability.RECORD_REFERENCE_STANDARD, trial=participant.trial, site=participant.site)
    reason = require_reason(reason, "correct a reference-standard result")
    unknown = set(changes) - set(REFERENCE_FIELDS)
    if unknown:
        raise RuleViolation(f"Unknown fields: {', '.join(sorted(unknown))}.")
    # The caller's participant may be stale: re-read it under the lock that
    # participant_withdraw takes, so a withdrawal of data cannot be overtaken.
    participant = Participant.objects.select_for_update().select_related("screening").get(pk=participant.pk)
    if participant.data_withdrawn:
        raise RuleViolation(f"{participant.study_id} has withdrawn their data; it can no longer be changed.")
    result = ReferenceStandardResult.objects.select_for_update().get(pk=result.pk)
    before = audit.snapshot(result, REFERENCE_FIELDS)
    for field, value in changes.items():
        setattr(result, field, value)
    _check_reference(result, participant)
    after = audit.snapshot(result, REFERENCE_FIELDS)
    if before == after:
        raise RuleViolation("Nothing to correct: the values are unchanged.")
    result.save()
    audit.record(
        actor=actor,
        role=role,
        action="reference_result.correct",
        obj=result,
        trial=participant.trial,
        site=participant.site,
        screening=participant.screening,
        before=before,
        after=after,
        reason=reason,
    )
    return result
