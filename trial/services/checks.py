"""Shared checks of the trial services: who may act, and common rules."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from trial.actors import Actor
from trial.errors import NotAllowed, RuleViolation
from trial.models import (
    Site,
    Trial,
    TrialStatus,
)
from trial.permissions import Capability
from trial.selectors import role_for


def authorize(actor: Actor, capability: Capability, *, trial: Trial, site: Site | None) -> str:
    """The role under which the actor may act here; NotAllowed otherwise."""
    if actor.is_system:
        return "system"
    role = role_for(actor.user, capability, trial_id=trial.pk, site_id=site.pk if site else None)
    if role is None:
        raise NotAllowed("Your role does not permit this action here.")
    return role


def authorize_trial_management(actor: Actor, trial: Trial | None) -> str:
    if actor.is_system:
        return "system"
    if getattr(actor.user, "is_superuser", False):
        return "superuser"
    if trial is None:
        raise NotAllowed("Only the system or a superuser may create a trial.")
    return authorize(actor, Capability.MANAGE_TRIAL, trial=trial, site=None)


def clean_model(instance: models.Model, *, exclude: list[str] | None = None) -> None:
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


def require_reason(reason: str, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise RuleViolation(f"A reason is required to {what}.", field="reason")
    if len(reason) > 2000:
        raise RuleViolation("The reason must be at most 2000 characters.", field="reason")
    return reason


def not_in_future(value: dt.date, what: str, field: str) -> None:
    if value > timezone.localdate():
        raise RuleViolation(f"The {what} ({value.isoformat()}) is in the future.", field=field)


def require_recruiting(trial: Trial) -> None:
    if trial.status != TrialStatus.RECRUITING:
        raise RuleViolation(f"Recruitment is not open for trial {trial.code} (status: {trial.get_status_display()}).")


def locked_site(site: Site) -> Site:
    """Re-read the site under a row lock (PostgreSQL) or the write lock
    (SQLite, IMMEDIATE transactions), so counters hand out each number once.
    FOR NO KEY UPDATE, not FOR UPDATE: it still queues the site's counters
    one writer at a time, but lets other transactions insert rows that refer
    to the site (their foreign-key check takes FOR KEY SHARE). With FOR
    UPDATE, a writer holding the audit chain head and inserting an event for
    this site waits for the lock holder, who waits for the chain head: a
    deadlock under concurrent screening and enrollment."""
    return Site.objects.select_for_update(of=("self",), no_key=True).select_related("trial").get(pk=site.pk)
