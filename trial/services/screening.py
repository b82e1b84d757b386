"""Screening log and eligibility."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from trial import audit
from trial.actors import Actor
from trial.errors import Conflict, RuleViolation
from trial.models import (
    EligibilityAssessment,
    ProtocolVersion,
    ScreeningEntry,
    ScreeningStatus,
    Site,
    Trial,
)
from trial.permissions import Capability
from trial.services.checks import (
    authorize,
    clean_model,
    locked_site,
    not_in_future,
    require_reason,
    require_recruiting,
)


@transaction.atomic
def screening_create(
    *,
    actor: Actor,
    site: Site,
    screened_on: dt.date,
    indication: str,
    year_of_birth: int,
    sex: str,
    submission_key: uuid.UUID | None = None,
) -> ScreeningEntry:
    """Log one person assessed for eligibility. A repeated submission (same
    key, e.g. a double click) returns the first entry instead of a second."""
    role = authorize(actor, Capability.SCREEN, trial=site.trial, site=site)
    site = locked_site(site)
    trial = site.trial
    if submission_key is not None:
        earlier = ScreeningEntry.objects.filter(submission_key=submission_key).first()
        if earlier is not None:
            if earlier.site_id != site.pk:
                raise Conflict("This submission key was already used for another site.")
            return earlier
    require_recruiting(trial)
    if not site.active:
        raise RuleViolation(f"Site {site.code} is not active.")
    if indication not in trial.indications:
        raise RuleViolation(
            f"Indication {indication!r} is not studied in trial {trial.code} "
            f"(it studies: {', '.join(trial.indications)}).",
            field="indication",
        )
    not_in_future(screened_on, "screening date", "screened_on")
    if screened_on < trial.start_date:
        raise RuleViolation(
            f"The screening date is before the trial started ({trial.start_date.isoformat()}).", field="screened_on"
        )
    _check_year_of_birth(year_of_birth, screened_on)
    number = site.next_screening_number
    site.next_screening_number = number + 1
    site.save(update_fields=["next_screening_number"])
    entry = ScreeningEntry(
        trial=trial,
        site=site,
        screening_number=f"{site.code}-S{number:04d}",
        screened_on=screened_on,
        indication=indication,
        year_of_birth=year_of_birth,
        sex=sex,
        submission_key=submission_key,
        created_by=actor.user,
    )
    clean_model(entry, exclude=["trial", "site", "created_by"])
    try:
        with transaction.atomic():
            entry.save()
    except IntegrityError as error:
        raise Conflict("This screening entry was already submitted.") from error
    audit.record(
        actor=actor,
        role=role,
        action="screening.create",
        obj=entry,
        trial=trial,
        site=site,
        screening=entry,
        after=audit.snapshot(entry),
    )
    return entry


def _check_year_of_birth(year_of_birth: int, on: dt.date) -> None:
    if not isinstance(year_of_birth, int) or not (on.year - 120 <= year_of_birth <= on.year):
        raise RuleViolation(f"Year of birth must be between {on.year - 120} and {on.year}.", field="year_of_birth")


_CORRECTABLE_SCREENING_FIELDS = {"screened_on", "year_of_birth", "sex"}


@transaction.atomic
def screening_correct(*, actor: Actor, entry: ScreeningEntry, changes: dict[str, Any], reason: str) -> ScreeningEntry:
    """Correct data already entered; the reason and both values are audited."""
    role = authorize(actor, Capability.SCREEN, trial=entry.trial, site=entry.site)
    reason = require_reason(reason, "correct data already entered")
    unknown = set(changes) - _CORRECTABLE_SCREENING_FIELDS
    if unknown:
        raise RuleViolation(f"These fields cannot be corrected here: {', '.join(sorted(unknown))}.")
    entry = ScreeningEntry.objects.select_for_update().get(pk=entry.pk)
    before = audit.snapshot(entry, sorted(changes))
    for field, value in changes.items():
        setattr(entry, field, value)
    not_in_future(entry.screened_on, "screening date", "screened_on")
    if entry.screened_on < entry.trial.start_date:
        raise RuleViolation(
            f"The screening date is before the trial started ({entry.trial.start_date.isoformat()}).",
            field="screened_on",
        )
    _check_year_of_birth(entry.year_of_birth, entry.screened_on)
    if hasattr(entry, "participant") and entry.screened_on > timezone.localdate(entry.participant.enrolled_at):
        raise RuleViolation("The screening date cannot be after consent.", field="screened_on")
    clean_model(entry, exclude=["trial", "site", "created_by"])
    after = audit.snapshot(entry, sorted(changes))
    if before == after:
        raise RuleViolation("Nothing to correct: the values are unchanged.")
    entry.save(update_fields=sorted(changes))
    audit.record(
        actor=actor,
        role=role,
        action="screening.correct",
        obj=entry,
        trial=entry.trial,
        site=entry.site,
        screening=entry,
        before=before,
        after=after,
        reason=reason,
    )
    return entry


def current_protocol(trial: Trial, on: dt.date | None = None) -> ProtocolVersion:
    on = on or timezone.localdate()
    protocol = trial.protocol_versions.filter(effective_date__lte=on).order_by("-effective_date", "-id").first()
    if protocol is None:
        raise RuleViolation(f"Trial {trial.code} has no protocol version in effect on {on.isoformat()}.")
    return protocol


@transaction.atomic
def eligibility_assess(
    *, actor: Actor, entry: ScreeningEntry, answers: dict[str, bool], reason: str = ""
) -> EligibilityAssessment:
    """Answer the checklist of the protocol in effect; eligibility is derived:
    every inclusion criterion met and no exclusion criterion present."""
    role = authorize(actor, Capability.ENROLL, trial=entry.trial, site=entry.site)
    entry = ScreeningEntry.objects.select_for_update().get(pk=entry.pk)
    if entry.status == ScreeningStatus.ENROLLED:
        raise Conflict(f"{entry.screening_number} is already enrolled; its eligibility can no longer change.")
    if entry.status in (ScreeningStatus.DECLINED, ScreeningStatus.NOT_ENROLLED):
        raise Conflict(f"{entry.screening_number} is closed ({entry.get_status_display()}).")
    existing = EligibilityAssessment.objects.filter(screening=entry).first()
    if existing is not None:
        reason = require_reason(reason, "change an eligibility assessment already recorded")
    protocol = current_protocol(entry.trial)
    criteria = protocol.criteria_for(entry.indication)
    expected = {c["code"] for c in criteria}
    missing = sorted(expected - set(answers))
    unknown = sorted(set(answers) - expected)
    if unknown:
        raise RuleViolation(
            f"Unknown criteria for protocol v{protocol.version}: {', '.join(unknown)}.", field="answers"
        )
    if missing:
        raise RuleViolation(f"Every criterion must be answered; missing: {', '.join(missing)}.", field="answers")
    for code, value in answers.items():
        if not isinstance(value, bool):
            raise RuleViolation(f"Criterion {code} must be answered yes or no.", field="answers")
    failed = [
        c
        for c in criteria
        if (c["kind"] == "inclusion" and not answers[c["code"]]) or (c["kind"] == "exclusion" and answers[c["code"]])
    ]
    is_eligible = not failed
    before = audit.snapshot(existing) if existing is not None else None
    assessment = existing or EligibilityAssessment(screening=entry)
    assessment.protocol_version = protocol
    assessment.answers = {c["code"]: answers[c["code"]] for c in criteria}
    assessment.is_eligible = is_eligible
    assessment.failed_criteria = [c["code"] for c in failed]
    assessment.assessed_by = actor.user
    assessment.assessed_at = timezone.now()
    assessment.save()
    entry.status = ScreeningStatus.ELIGIBLE if is_eligible else ScreeningStatus.INELIGIBLE
    entry.exclusion_reasons = [{"code": c["code"], "text": c["text"]} for c in failed]
    entry.save(update_fields=["status", "exclusion_reasons"])
    audit.record(
        actor=actor,
        role=role,
        action="eligibility.assess" if existing is None else "eligibility.correct",
        obj=assessment,
        trial=entry.trial,
        site=entry.site,
        screening=entry,
        before=before,
        after=audit.snapshot(assessment),
        reason=reason.strip(),
    )
    return assessment


@transaction.atomic
def screening_close(*, actor: Actor, entry: ScreeningEntry, outcome: str, reason: str) -> ScreeningEntry:
    """Close a screening entry that will not lead to enrollment: the person
    declined, or another reason (lost, withdrew interest, site decision)."""
    role = authorize(actor, Capability.ENROLL, trial=entry.trial, site=entry.site)
    reason = require_reason(reason, "close a screening entry")
    entry = ScreeningEntry.objects.select_for_update().get(pk=entry.pk)
    allowed_from: dict[str, set[str]] = {
        ScreeningStatus.DECLINED: {ScreeningStatus.ELIGIBLE},
        ScreeningStatus.NOT_ENROLLED: {ScreeningStatus.PENDING, ScreeningStatus.ELIGIBLE},
    }
    if outcome not in allowed_from:
        raise RuleViolation("The outcome must be 'declined' or 'not_enrolled'.", field="outcome")
    if entry.status not in allowed_from[outcome]:
        raise Conflict(
            f"{entry.screening_number} is {entry.get_status_display().lower()}; "
            f"it cannot be closed as {ScreeningStatus(outcome).label.lower()}."
        )
    before = audit.snapshot(entry, ["status", "exclusion_reasons"])
    entry.status = outcome
    entry.exclusion_reasons = [{"code": outcome, "text": reason}]
    entry.save(update_fields=["status", "exclusion_reasons"])
    audit.record(
        actor=actor,
        role=role,
        action="screening.close",
        obj=entry,
        trial=entry.trial,
        site=entry.site,
        screening=entry,
        before=before,
        after=audit.snapshot(entry, ["status", "exclusion_reasons"]),
        reason=reason,
    )
    return entry
