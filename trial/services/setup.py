"""Trial set-up: trials, protocol versions, sites, memberships, recruitment status."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from trial import audit
from trial.actors import Actor
from trial.errors import Conflict, RuleViolation
from trial.models import (
    Indication,
    Membership,
    ProtocolVersion,
    Role,
    Site,
    Trial,
    TrialStatus,
)
from trial.selectors import forget_memberships
from trial.services.checks import (
    authorize_trial_management,
    clean_model,
    require_reason,
)
from trial.signals import recruitment_opened


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
    role = authorize_trial_management(actor, None)
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
    clean_model(trial)
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
    role = authorize_trial_management(actor, trial)
    reason = require_reason(reason, "change the trial status")
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
    if status == TrialStatus.RECRUITING and before["status"] != TrialStatus.RECRUITING:
        recruitment_opened.send(sender=Trial, trial=trial, actor=actor)
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
    role = authorize_trial_management(actor, trial)
    if trial.protocol_versions.exists():
        amendment_reason = require_reason(amendment_reason, "amend the protocol")
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
    clean_model(protocol, exclude=["trial"])
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
    role = authorize_trial_management(actor, trial)
    if trial.sites.filter(code=code).exists():
        raise Conflict(f"Site code {code!r} is already used in this trial.", field="code")
    site = Site(trial=trial, code=code, name=name, country=country, target_participants=target_participants)
    clean_model(site, exclude=["trial"])
    site.save()
    audit.record(
        actor=actor, role=role, action="site.add", obj=site, trial=trial, site=site, after=audit.snapshot(site)
    )
    return site


@transaction.atomic
def membership_grant(*, actor: Actor, user: User, trial: Trial, role: str, site: Site | None = None) -> Membership:
    acting_role = authorize_trial_management(actor, trial)
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
    acting_role = authorize_trial_management(actor, membership.trial)
    reason = require_reason(reason, "revoke a role")
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
