"""Consent, enrollment and withdrawal."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone

from trial import audit
from trial.actors import Actor
from trial.errors import Conflict, RuleViolation
from trial.models import (
    Consent,
    Participant,
    ProtocolVersion,
    ScreeningEntry,
    ScreeningStatus,
    Site,
    Trial,
    Withdrawal,
    WithdrawalScope,
)
from trial.permissions import Capability
from trial.selectors import staff_at_site
from trial.services.checks import (
    authorize,
    locked_site,
    not_in_future,
    require_reason,
    require_recruiting,
)
from trial.services.screening import current_protocol
from trial.signals import ai_processing_withdrawn, clinical_data_withdrawn


def _validate_covariates(trial: Trial, indication: str, covariates: dict[str, Any]) -> dict[str, Any]:
    definitions = trial.covariates_for(indication)
    names = {d["name"] for d in definitions}
    unknown = sorted(set(covariates) - names)
    if unknown:
        raise RuleViolation(f"Unknown covariates: {', '.join(unknown)}.", field="covariates")
    cleaned = {}
    for definition in definitions:
        value = covariates.get(definition["name"])
        if value in (None, ""):
            raise RuleViolation(f"Covariate {definition['label']} is required.", field="covariates")
        if value not in definition["choices"]:
            raise RuleViolation(
                f"{definition['label']} must be one of {', '.join(definition['choices'])}, not {value!r}.",
                field="covariates",
            )
        cleaned[definition["name"]] = value
    return cleaned


def _check_consent(
    *,
    participant_site: Site,
    protocol: ProtocolVersion,
    form_version: str,
    consented_at: dt.datetime,
    taken_by: Any,
    not_before: dt.date,
) -> None:
    if timezone.is_naive(consented_at):
        raise RuleViolation("The consent time must carry a time zone.", field="consented_at")
    if consented_at > timezone.now():
        raise RuleViolation("The consent date and time are in the future.", field="consented_at")
    if timezone.localdate(consented_at) < not_before:
        raise RuleViolation(
            f"Consent cannot be dated before screening ({not_before.isoformat()}).", field="consented_at"
        )
    if form_version != protocol.consent_form_version:
        raise RuleViolation(
            f"Consent form v{form_version} is not the approved form of protocol v{protocol.version} "
            f"(v{protocol.consent_form_version}).",
            field="form_version",
        )
    if not staff_at_site(participant_site).filter(pk=getattr(taken_by, "pk", None)).exists():
        raise RuleViolation(
            "Consent must be taken by a coordinator or clinician of the participant's site.", field="taken_by"
        )


@transaction.atomic
def participant_enroll(
    *,
    actor: Actor,
    entry: ScreeningEntry,
    form_version: str,
    consented_at: dt.datetime,
    taken_by: Any,
    covariates: dict[str, Any] | None = None,
) -> Participant:
    """Record consent of an eligible person and enroll them under a new study
    id (site code + running number, e.g. C01-0042)."""
    role = authorize(actor, Capability.ENROLL, trial=entry.trial, site=entry.site)
    entry = ScreeningEntry.objects.select_for_update(of=("self",)).select_related("trial").get(pk=entry.pk)
    trial = entry.trial
    if entry.status == ScreeningStatus.ENROLLED:
        raise Conflict(f"{entry.screening_number} is already enrolled as {entry.participant.study_id}.")
    if entry.status == ScreeningStatus.PENDING:
        raise RuleViolation("Consent cannot be recorded before eligibility is confirmed.")
    if entry.status != ScreeningStatus.ELIGIBLE:
        raise RuleViolation(
            f"Only an eligible person can consent; {entry.screening_number} is {entry.get_status_display().lower()}."
        )
    require_recruiting(trial)
    protocol = current_protocol(trial)
    _check_consent(
        participant_site=entry.site,
        protocol=protocol,
        form_version=form_version,
        consented_at=consented_at,
        taken_by=taken_by,
        not_before=entry.screened_on,
    )
    cleaned_covariates = _validate_covariates(trial, entry.indication, covariates or {})
    site = locked_site(entry.site)
    number = site.next_participant_number
    site.next_participant_number = number + 1
    site.save(update_fields=["next_participant_number"])
    participant = Participant.objects.create(
        trial=trial,
        site=site,
        screening=entry,
        study_id=f"{site.code}-{number:04d}",
        covariates=cleaned_covariates,
        enrolled_at=consented_at,
    )
    consent = Consent.objects.create(
        participant=participant,
        protocol_version=protocol,
        form_version=form_version,
        consented_at=consented_at,
        taken_by=taken_by,
        recorded_by=actor.user,
    )
    entry.status = ScreeningStatus.ENROLLED
    entry.save(update_fields=["status"])
    audit.record(
        actor=actor,
        role=role,
        action="participant.enroll",
        obj=participant,
        trial=trial,
        site=site,
        screening=entry,
        after={"participant": audit.snapshot(participant), "consent": audit.snapshot(consent)},
    )
    return participant


@transaction.atomic
def consent_renew(
    *, actor: Actor, participant: Participant, form_version: str, consented_at: dt.datetime, taken_by: Any
) -> Consent:
    """Re-consent on a newer consent form after a protocol amendment."""
    role = authorize(actor, Capability.ENROLL, trial=participant.trial, site=participant.site)
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    if not participant.accepts_clinical_data:
        raise RuleViolation(f"{participant.study_id} has withdrawn; no new consent can be recorded.")
    if participant.consents.filter(form_version=form_version).exists():
        raise Conflict(f"{participant.study_id} has already consented on form v{form_version}.")
    protocol = current_protocol(participant.trial)
    _check_consent(
        participant_site=participant.site,
        protocol=protocol,
        form_version=form_version,
        consented_at=consented_at,
        taken_by=taken_by,
        not_before=timezone.localdate(participant.enrolled_at),
    )
    consent = Consent.objects.create(
        participant=participant,
        protocol_version=protocol,
        form_version=form_version,
        consented_at=consented_at,
        taken_by=taken_by,
        recorded_by=actor.user,
    )
    audit.record(
        actor=actor,
        role=role,
        action="consent.renew",
        obj=consent,
        trial=participant.trial,
        site=participant.site,
        screening=participant.screening,
        after=audit.snapshot(consent),
    )
    return consent


# --- Withdrawal ---------------------------------------------------------------------------


@transaction.atomic
def participant_withdraw(
    *, actor: Actor, participant: Participant, withdrawn_on: dt.date, scope: str, reason: str
) -> Withdrawal:
    """Record a withdrawal with its scope. Scopes add up: a later, wider
    withdrawal can follow a narrower one; none is ever undone."""
    role = authorize(actor, Capability.WITHDRAW, trial=participant.trial, site=participant.site)
    reason = require_reason(reason, "record a withdrawal")
    if scope not in WithdrawalScope.values:
        raise RuleViolation(
            f"Unknown withdrawal scope {scope!r}; choose one of {', '.join(WithdrawalScope.values)}.", field="scope"
        )
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    not_in_future(withdrawn_on, "withdrawal date", "withdrawn_on")
    if withdrawn_on < timezone.localdate(participant.enrolled_at):
        raise RuleViolation("The withdrawal date is before enrollment.", field="withdrawn_on")
    if participant.data_withdrawn:
        raise Conflict(f"{participant.study_id} has already withdrawn their data; nothing more can be withdrawn.")
    if participant.withdrawals.filter(scope=scope).exists():
        raise Conflict(f"{participant.study_id} has already withdrawn with this scope.")
    before = audit.snapshot(
        participant, ["follow_up_stopped", "ai_processing_stopped", "data_withdrawn", "withdrawn_on"]
    )
    withdrawal = Withdrawal.objects.create(
        participant=participant, withdrawn_on=withdrawn_on, scope=scope, reason=reason, recorded_by=actor.user
    )
    if scope == WithdrawalScope.STOP_FOLLOW_UP:
        participant.follow_up_stopped = True
    elif scope == WithdrawalScope.STOP_AI_PROCESSING:
        participant.ai_processing_stopped = True
    else:
        participant.data_withdrawn = True
    if participant.withdrawn_on is None or withdrawn_on < participant.withdrawn_on:
        participant.withdrawn_on = withdrawn_on
    participant.save(update_fields=["follow_up_stopped", "ai_processing_stopped", "data_withdrawn", "withdrawn_on"])
    audit.record(
        actor=actor,
        role=role,
        action="participant.withdraw",
        obj=withdrawal,
        trial=participant.trial,
        site=participant.site,
        screening=participant.screening,
        before=before,
        after={
            **audit.snapshot(
                participant, ["follow_up_stopped", "ai_processing_stopped", "data_withdrawn", "withdrawn_on"]
            ),
            "scope": scope,
        },
        reason=reason,
    )
    if scope in (WithdrawalScope.STOP_AI_PROCESSING, WithdrawalScope.WITHDRAW_DATA):
        # Pending AI work is cancelled in this same transaction.
        ai_processing_withdrawn.send(sender=Participant, participant=participant, actor=actor, role=role, reason=reason)
    if not participant.accepts_clinical_data:
        # Open reading tasks are cancelled in this same transaction.
        clinical_data_withdrawn.send(sender=Participant, participant=participant, actor=actor, role=role, reason=reason)
    return withdrawal
