"""The audit trail: the filtered browser and its CSV export."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from trial import selectors
from trial.forms import AuditFilterForm
from trial.models import AuditEvent
from trial.permissions import Capability
from trial.selectors import AuditFilters
from trial.views.common import _event_rows, _page

AUDIT_PAGE_SIZE = 100


# --- Audit trail ----------------------------------------------------------------------

AUDIT_CSV_COLUMNS = [
    "sequence",
    "occurred_at",
    "actor",
    "role",
    "action",
    "object_type",
    "object_id",
    "object_label",
    "trial",
    "site",
    "before",
    "after",
    "reason",
    "client_ip",
    "request_id",
    "previous_hash",
    "hash",
]
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _audit_filters(request: HttpRequest) -> tuple[AuditFilterForm, AuditFilters | None]:
    """The filter form and, when it is valid, the filters it asks for."""
    form = AuditFilterForm(
        request.GET,
        trials=selectors.trials_visible(request.user),
        sites=selectors.sites_for(request.user, Capability.VIEW_AUDIT),
    )
    if not form.is_valid():
        return form, None
    data = form.cleaned_data
    return form, AuditFilters(
        trial_id=data["trial"].pk if data["trial"] else None,
        site_id=data["site"].pk if data["site"] else None,
        actor=data["actor"].strip(),
        action=data["action"].strip(),
        object_type=data["object_type"].strip(),
        object_id=data["object_id"].strip(),
        date_from=data["date_from"],
        date_to=data["date_to"],
    )


def _audit_page(request: HttpRequest, form: AuditFilterForm, events: QuerySet[AuditEvent], status: int) -> HttpResponse:
    page = _page(request, events, AUDIT_PAGE_SIZE)
    return render(
        request,
        "trial/audit_list.html",
        {"form": form, "page": page, "rows": _event_rows(page.object_list)},
        status=status,
    )


@login_required
@require_GET
def audit_list(request: HttpRequest) -> HttpResponse:
    form, filters = _audit_filters(request)
    events = selectors.audit_events(request.user, filters)
    if filters is None:
        return _audit_page(request, form, events.none(), 400)
    return _audit_page(request, form, events, 200)


def csv_safe(value: Any) -> Any:
    """A cell a spreadsheet will show as text, never run as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def _json_cell(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(events: QuerySet[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(AUDIT_CSV_COLUMNS)
    for event in events.iterator(chunk_size=500):
        cells = [
            event.sequence,
            event.occurred_at.astimezone(dt.UTC).isoformat(),
            event.actor_username,
            event.role,
            event.action,
            event.object_type,
            event.object_id,
            event.object_label,
            event.trial.code if event.trial else "",
            event.site.code if event.site else "",
            _json_cell(event.before),
            _json_cell(event.after),
            event.reason,
            event.client_ip or "",
            event.request_id,
            event.previous_hash,
            event.hash,
        ]
        yield writer.writerow([csv_safe(cell) for cell in cells])


@login_required
@require_GET
def audit_export(request: HttpRequest) -> HttpResponseBase:
    form, filters = _audit_filters(request)
    events = selectors.audit_events(request.user, filters)
    if filters is None:
        return _audit_page(request, form, events.none(), 400)
    stamp = timezone.now().astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(_csv_lines(events), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="consilium-audit-{stamp}.csv"'
    return response
