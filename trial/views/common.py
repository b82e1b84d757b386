"""What the HTML pages share: the permission check, form submission with its
error status, pagination, the current protocol, and audit events as rows."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django import forms
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from trial import selectors, services
from trial.errors import DomainError, RuleViolation
from trial.models import AuditEvent, Participant, ProtocolVersion, Role, ScreeningEntry, Trial
from trial.permissions import Capability

T = TypeVar("T")

ROLE_LABELS: dict[str, str] = {**dict(Role.choices), "system": "System", "superuser": "Superuser"}


# --- Small helpers ----------------------------------------------------------------


def _may(user: Any, capability: Capability, obj: ScreeningEntry | Participant) -> bool:
    """Whether the user's role permits `capability` where this object lives:
    the same question the service asks before it writes."""
    return selectors.role_for(user, capability, trial_id=obj.trial_id, site_id=obj.site_id) is not None


def _require(user: Any, capability: Capability, obj: ScreeningEntry | Participant) -> None:
    if not _may(user, capability, obj):
        raise PermissionDenied("Your role does not permit this action here.")


def _submit(form: forms.Form, write: Callable[[], T]) -> tuple[T | None, int]:
    """Validate the form, then write. Returns (result, 200), or (None, the
    HTTP status) with the error added to the form."""
    if not form.is_valid():
        return None, 400
    try:
        return write(), 200
    except DomainError as error:
        form.add_error(error.field if error.field in form.fields else None, error.message)
        return None, error.status_code


def _page(request: HttpRequest, items: QuerySet[Any], size: int) -> Any:
    return Paginator(items, size).get_page(request.GET.get("page"))


def _current_protocol(trial: Trial) -> tuple[ProtocolVersion | None, str]:
    try:
        return services.current_protocol(trial), ""
    except RuleViolation as error:
        return None, error.message


def _now_to_the_minute() -> dt.datetime:
    return timezone.now().replace(second=0, microsecond=0)


def _consent_initial(request: HttpRequest, protocol: ProtocolVersion | None) -> dict[str, Any]:
    """What a consent form starts with: the protocol's current form version,
    now, and the user as the one who took it."""
    return {
        "form_version": protocol.consent_form_version if protocol else "",
        "consented_at": _now_to_the_minute(),
        "taken_by": request.user.pk,
    }


# --- Audit events as rows ---------------------------------------------------------


@dataclass(frozen=True)
class ChangedValue:
    field: str
    before: str
    after: str


@dataclass(frozen=True)
class EventRow:
    event: AuditEvent
    role_label: str
    changes: list[ChangedValue] = field(default_factory=list)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value} if prefix else {}


def _display(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def changed_values(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[ChangedValue]:
    """The fields whose value an event changed (or set, for a creation)."""
    old, new = _flatten(before or {}), _flatten(after or {})
    return [
        ChangedValue(name, _display(old.get(name)), _display(new.get(name)))
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def _event_rows(events: Iterable[AuditEvent]) -> list[EventRow]:
    return [
        EventRow(event, ROLE_LABELS.get(event.role, event.role), changed_values(event.before, event.after))
        for event in events
    ]
