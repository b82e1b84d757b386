"""Every write to the trial: checks its rules, writes, and records its audit
event in the same transaction. Keyword-only arguments; domain errors raised.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from trial import audit
from trial.actors import Actor
from trial.errors import Conflict, NotAllowed, RuleViolation
from trial.models import (
    INVASIVE_CERVICAL,
    KIND_FOR_INDICATION,
    MALIGNANT_THYROID,
    Consent,
    EligibilityAssessment,
    Indication,
    Membership,
    Participant,
    ProtocolVersion,
    ReferenceKind,
    ReferenceStandardResult,
    Role,
    ScreeningEntry,
    ScreeningStatus,
    Site,
    Trial,
    TrialStatus,
    Withdrawal,
    WithdrawalScope,
)
from trial.permissions import Capability
from trial.selectors import forget_memberships, role_for, staff_at_site

# --- Shared checks --------------------------------------------------------------


def _authorize(actor: Actor, capability: Capability, *, trial: Trial, site: Site | None) -> str:
    """The role under which the actor may act here; NotAllowed otherwise."""
    if actor.is_system:
        return "system"
    role = role_for(actor.user, capability, trial_id=trial.pk, site_id=site.pk if site else None)
    if role is None:
        raise NotAllowed("Your role does not permit this action here.")
    return role


def _authorize_trial_management(actor: Actor, trial: Trial | None) -> str:
    if actor.is_system:
        return "system"
    if getattr(actor.user, "is_superuser", False):
        return "superuser"
    if trial is None:
        raise NotAllowed("Only the system or a superuser may create a trial.")
    return _authorize(actor, Capability.MANAGE_TRIAL, trial=trial, site=None)


def _clean(instance: models.Model, *, exclude: list[str] | None = None) -> None:
    """Model-level validation (choices, lengths, required fields) with a message
    naming each bad field."""
    try:
        instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
        # Django enforces a TextField's max_length in forms only, not in full_clean.
        for text_field in instance._meta.concrete_fields:
            if not isinstance(text_field, models.TextField) or not text_field.max_length:
                continue
            limit, length = text_field.max_length, len(getattr(instance, text_field.attname) or "")
            if length > limit and text_field.name not in (exclude or []):
                raise ValidationError(
                    {text_field.name: f"Ensure this value has at most {limit} characters (it has {length})."}
                )
    except ValidationError as error:
        details = "; ".join(
            f"{field}: {' '.join(str(m) for m in messages)}" for field, messages in error.message_dict.items()
        )
        field = next(iter(error.message_dict), None)
        raise RuleViolation(f"Invalid value — {details}", field=field) from error


def _require_reason(reason: str, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise RuleViolation(f"A reason is required to {what}.", field="reason")
    if len(reason) > 2000:
        raise RuleViolation("The reason must be at most 2000 characters.", field="reason")
    return reason


def _not_in_future(value: dt.date, what: str, field: str) -> None:
    if value > timezone.localdate():
        raise RuleViolation(f"The {what} ({value.isoformat()}) is in the future.", field=field)


def _require_recruiting(trial: Trial) -> None:
    if trial.status != TrialStatus.RECRUITING:
        raise RuleViolation(f"Recruitment is not open for trial {trial.code} (status: {trial.get_status_display()}).")


def _locked_site(site: Site) -> Site:
    """Re-read the site under a row lock (PostgreSQL) or the write lock
    (SQLite, IMMEDIATE transactions), so counters hand out each number once."""
    return Site.objects.select_for_update(of=("self",)).select_related("trial").get(pk=site.pk)


# --- Trial set-up ---------------------------------------------------------------------


@transaction.atomic
def trial_create(
    *,
    actor: Actor,
    code: str,
    title: str,
    indications: list[str],
    planned_sample_size: int,
    start_date: dt.date,
    registry_id: str = "",
    duration_months: int = 17,
    stratification_covariates: list[dict[str, Any]] | None = None,
) -> Trial:
    role = _authorize_trial_management(actor, None)
    unknown = sorted(set(indications) - set(Indication.values))
    if not indications or unknown:
        raise RuleViolation(f"Indications must be chosen from {', '.join(Indication.values)}.", field="indications")
    covariates = stratification_covariates or []
    _validate_covariate_definitions(covariates)
    if Trial.objects.filter(code=code).exists():
        raise Conflict(f"A trial with code {code!r} already exists.", field="code")
    trial = Trial(
        code=code,
        title=title,
        registry_id=registry_id,
        indications=sorted(set(indications)),
        planned_sample_size=planned_sample_size,
        start_date=start_date,
        duration_months=duration_months,
        stratification_covariates=covariates,
    )
    _clean(trial)
    trial.save()
    audit.record(actor=actor, role=role, action="trial.create", obj=trial, trial=trial, after=audit.snapshot(trial))
    return trial


def _validate_covariate_definitions(covariates: list[dict[str, Any]]) -> None:
    names = set()
    for covariate in covariates:
        name = covariate.get("name")
        choices = covariate.get("choices")
        if not name or not isinstance(choices, list) or len(choices) < 2:
            raise RuleViolation(
                "Each covariate needs a name and at least two choices.", field="stratification_covariates"
            )
        if name in names:
            raise RuleViolation(f"Covariate {name!r} is defined twice.", field="stratification_covariates")
        if covariate.get("indication") not in (None, *Indication.values):
            raise RuleViolation(f"Covariate {name!r} names an unknown indication.", field="stratification_covariates")
        names.add(name)


@transaction.atomic
def trial_set_status(*, actor: Actor, trial: Trial, status: str, reason: str) -> Trial:
    role = _authorize_trial_management(actor, trial)
    reason = _require_reason(reason, "change the trial status")
    if status not in TrialStatus.values:
        raise RuleViolation(f"Unknown trial status {status!r}.", field="status")
    trial = Trial.objects.select_for_update().get(pk=trial.pk)
    if status == TrialStatus.RECRUITING:
        if not trial.sites.filter(active=True).exists():
            raise RuleViolation("Recruitment cannot open before the trial has an active site.")
        if not trial.protocol_versions.exists():
            raise RuleViolation("Recruitment cannot open before a protocol version is recorded.")
    before = audit.snapshot(trial, ["status"])
    trial.status = status
    trial.save(update_fields=["status"])
    audit.record(
        actor=actor,
        role=role,
        action="trial.status",
        obj=trial,
        trial=trial,
        before=before,
        after=audit.snapshot(trial, ["status"]),
        reason=reason,
    )
    return trial


@transaction.atomic
def protocol_version_add(
    *,
    actor: Actor,
    trial: Trial,
    version: str,
    effective_date: dt.date,
    consent_form_version: str,
    eligibility_criteria: list[dict[str, Any]],
    amendment_reason: str = "",
) -> ProtocolVersion:
    role = _authorize_trial_management(actor, trial)
    if trial.protocol_versions.exists():
        amendment_reason = _require_reason(amendment_reason, "amend the protocol")
    codes = set()
    for criterion in eligibility_criteria:
        code, text, kind = criterion.get("code"), criterion.get("text"), criterion.get("kind")
        if not code or not text or kind not in ("inclusion", "exclusion"):
            raise RuleViolation(
                "Each criterion needs a code, a text and a kind (inclusion or exclusion).",
                field="eligibility_criteria",
            )
        if code in codes:
            raise RuleViolation(f"Criterion code {code!r} appears twice.", field="eligibility_criteria")
        if criterion.get("indication") not in (None, *Indication.values):
            raise RuleViolation(f"Criterion {code!r} names an unknown indication.", field="eligibility_criteria")
        codes.add(code)
    if trial.protocol_versions.filter(version=version).exists():
        raise Conflict(f"Protocol version {version} already exists.", field="version")
    protocol = ProtocolVersion(
        trial=trial,
        version=version,
        effective_date=effective_date,
        consent_form_version=consent_form_version,
        eligibility_criteria=eligibility_criteria,
        amendment_reason=amendment_reason,
    )
    _clean(protocol, exclude=["trial"])
    protocol.save()
    audit.record(
        actor=actor,
        role=role,
        action="protocol_version.add",
        obj=protocol,
        trial=trial,
        after=audit.snapshot(protocol),
        reason=amendment_reason,
    )
    return protocol


@transaction.atomic
def site_add(
    *, actor: Actor, trial: Trial, code: str, name: str, country: str = "", target_participants: int = 0
) -> Site:
    role = _authorize_trial_management(actor, trial)
    if trial.sites.filter(code=code).exists():
        raise Conflict(f"Site code {code!r} is already used in this trial.", field="code")
    site = Site(trial=trial, code=code, name=name, country=country, target_participants=target_participants)
    _clean(site, exclude=["trial"])
    site.save()
    audit.record(
        actor=actor, role=role, action="site.add", obj=site, trial=trial, site=site, after=audit.snapshot(site)
    )
    return site


@transaction.atomic
def membership_grant(*, actor: Actor, user: User, trial: Trial, role: str, site: Site | None = None) -> Membership:
    acting_role = _authorize_trial_management(actor, trial)
    if role not in Role.values:
        raise RuleViolation(f"Unknown role {role!r}.", field="role")
    if site is not None and site.trial_id != trial.pk:
        raise RuleViolation("The site belongs to another trial.", field="site")
    existing = Membership.objects.filter(user=user, trial=trial, role=role, site=site).first()
    if existing is not None and existing.active:
        raise Conflict("The user already holds this role here.")
    if existing is not None:
        before = audit.snapshot(existing, ["active"])
        existing.active = True
        existing.save(update_fields=["active"])
        membership = existing
    else:
        before = None
        membership = Membership.objects.create(user=user, trial=trial, role=role, site=site)
    audit.record(
        actor=actor,
        role=acting_role,
        action="membership.grant",
        obj=membership,
        trial=trial,
        site=site,
        before=before,
        after=audit.snapshot(membership),
    )
    forget_memberships(user)
    return membership


@transaction.atomic
def membership_revoke(*, actor: Actor, membership: Membership, reason: str) -> Membership:
    acting_role = _authorize_trial_management(actor, membership.trial)
    reason = _require_reason(reason, "revoke a role")
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if not membership.active:
        raise Conflict("This role was already revoked.")
    membership.active = False
    membership.save(update_fields=["active"])
    audit.record(
        actor=actor,
        role=acting_role,
        action="membership.revoke",
        obj=membership,
        trial=membership.trial,
        site=membership.site,
        before={"active": True},
        after={"active": False},
        reason=reason,
    )
    forget_memberships(membership.user)
    return membership


# --- Screening and eligibility --------------------------------------------------------


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
    role = _authorize(actor, Capability.SCREEN, trial=site.trial, site=site)
    site = _locked_site(site)
    trial = site.trial
    if submission_key is not None:
        earlier = ScreeningEntry.objects.filter(submission_key=submission_key).first()
        if earlier is not None:
            if earlier.site_id != site.pk:
                raise Conflict("This submission key was already used for another site.")
            return earlier
    _require_recruiting(trial)
    if not site.active:
        raise RuleViolation(f"Site {site.code} is not active.")
    if indication not in trial.indications:
        raise RuleViolation(
            f"Indication {indication!r} is not studied in trial {trial.code} "
            f"(it studies: {', '.join(trial.indications)}).",
            field="indication",
        )
    _not_in_future(screened_on, "screening date", "screened_on")
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
    _clean(entry, exclude=["trial", "site", "created_by"])
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
    role = _authorize(actor, Capability.SCREEN, trial=entry.trial, site=entry.site)
    reason = _require_reason(reason, "correct data already entered")
    unknown = set(changes) - _CORRECTABLE_SCREENING_FIELDS
    if unknown:
        raise RuleViolation(f"These fields cannot be corrected here: {', '.join(sorted(unknown))}.")
    entry = ScreeningEntry.objects.select_for_update().get(pk=entry.pk)
    before = audit.snapshot(entry, sorted(changes))
    for field, value in changes.items():
        setattr(entry, field, value)
    _not_in_future(entry.screened_on, "screening date", "screened_on")
    if entry.screened_on < entry.trial.start_date:
        raise RuleViolation(
            f"The screening date is before the trial started ({entry.trial.start_date.isoformat()}).",
            field="screened_on",
        )
    _check_year_of_birth(entry.year_of_birth, entry.screened_on)
    if hasattr(entry, "participant") and entry.screened_on > timezone.localdate(entry.participant.enrolled_at):
        raise RuleViolation("The screening date cannot be after consent.", field="screened_on")
    _clean(entry, exclude=["trial", "site", "created_by"])
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
    role = _authorize(actor, Capability.ENROLL, trial=entry.trial, site=entry.site)
    entry = ScreeningEntry.objects.select_for_update().get(pk=entry.pk)
    if entry.status == ScreeningStatus.ENROLLED:
        raise Conflict(f"{entry.screening_number} is already enrolled; its eligibility can no longer change.")
    if entry.status in (ScreeningStatus.DECLINED, ScreeningStatus.NOT_ENROLLED):
        raise Conflict(f"{entry.screening_number} is closed ({entry.get_status_display()}).")
    existing = EligibilityAssessment.objects.filter(screening=entry).first()
    if existing is not None:
        reason = _require_reason(reason, "change an eligibility assessment already recorded")
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
    role = _authorize(actor, Capability.ENROLL, trial=entry.trial, site=entry.site)
    reason = _require_reason(reason, "close a screening entry")
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


# --- Consent and enrollment -----------------------------------------------------------


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
    role = _authorize(actor, Capability.ENROLL, trial=entry.trial, site=entry.site)
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
    _require_recruiting(trial)
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
    site = _locked_site(entry.site)
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
    role = _authorize(actor, Capability.ENROLL, trial=participant.trial, site=participant.site)
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
    role = _authorize(actor, Capability.WITHDRAW, trial=participant.trial, site=participant.site)
    reason = _require_reason(reason, "record a withdrawal")
    if scope not in WithdrawalScope.values:
        raise RuleViolation(
            f"Unknown withdrawal scope {scope!r}; choose one of {', '.join(WithdrawalScope.values)}.", field="scope"
        )
    participant = Participant.objects.select_for_update().get(pk=participant.pk)
    _not_in_future(withdrawn_on, "withdrawal date", "withdrawn_on")
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
    return withdrawal


# --- Reference standard -------------------------------------------------------------

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
    _clean(result, exclude=["participant", "recorded_by"])
    _not_in_future(result.result_date, "result date", "result_date")
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
    role = _authorize(actor, Capability.RECORD_REFERENCE_STANDARD, trial=participant.trial, site=participant.site)
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
    role = _authorize(actor, Capability.RECORD_REFERENCE_STANDARD, trial=participant.trial, site=participant.site)
    reason = _require_reason(reason, "correct a reference-standard result")
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
