"""HTML pages of screening, enrollment and the audit trail.

Thin views: a form checks what was typed, one selector reads (and decides who
may see what), one service writes (and decides who may do what). A domain
error re-renders the page with its message and its HTTP status; a success
redirects (post/redirect/get).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from trial import selectors, services
from trial.actors import Actor
from trial.errors import DomainError, RuleViolation
from trial.forms import (
    AuditFilterForm,
    ConsentForm,
    EligibilityForm,
    EnrollForm,
    ParticipantFilterForm,
    ReferenceCorrectForm,
    ReferenceResultForm,
    ScreeningCloseForm,
    ScreeningCorrectForm,
    ScreeningCreateForm,
    ScreeningFilterForm,
    WithdrawForm,
)
from trial.models import (
    AuditEvent,
    EligibilityAssessment,
    Participant,
    ProtocolVersion,
    Role,
    ScreeningEntry,
    ScreeningStatus,
    Trial,
)
from trial.permissions import Capability
from trial.selectors import AuditFilters, SiteRecruitment

T = TypeVar("T")

SCREENING_PAGE_SIZE = 50
PARTICIPANT_PAGE_SIZE = 50
AUDIT_PAGE_SIZE = 100

ROLE_LABELS: dict[str, str] = {**dict(Role.choices), "system": "System", "superuser": "Superuser"}

# What each role does here, for the home page of roles without the recruitment view.
ROLE_DUTIES: dict[str, str] = {
    Role.COORDINATOR: "Screens, checks eligibility, records consent and enrolls participants at your site.",
    Role.CLINICIAN_READER: "Reads the images of your site's participants (the clinical read).",
    Role.BLINDED_READER: (
        "Reads cases for the independent panel, in your own random order. Enrollment, arms, AI output, "
        "other readings and the reference standard are hidden from this role by the protocol's blinding rules."
    ),
    Role.PATHOLOGIST: "Records histology and cytology results (the reference standard).",
    Role.STATISTICIAN_BLINDED: "Runs open reports: pooled figures, arms masked.",
    Role.STATISTICIAN_UNBLINDED: "Runs closed reports by arm.",
    Role.DSMB: "Reviews closed reports and interim analyses.",
    Role.MONITOR: "Reviews the data and the audit trail of your sites (read-only).",
    Role.TRIAL_ADMIN: "Sets up the trial, its sites, users and roles.",
}


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


def _assessment_of(entry: ScreeningEntry) -> EligibilityAssessment | None:
    try:
        return entry.eligibility
    except EligibilityAssessment.DoesNotExist:
        return None


def _now_to_the_minute() -> dt.datetime:
    return timezone.now().replace(second=0, microsecond=0)


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


# --- Recruitment dashboard ----------------------------------------------------------


@dataclass
class TrialRecruitment:
    trial: Trial
    rows: list[SiteRecruitment] = field(default_factory=list)

    def _sum(self, name: str) -> int:
        return sum(getattr(row, name) for row in self.rows)

    @property
    def totals(self) -> dict[str, Any]:
        target = self._sum("target")
        consented = self._sum("consented")
        return {
            "screened": self._sum("screened"),
            "eligible": self._sum("eligible"),
            "ineligible": self._sum("ineligible"),
            "consented": consented,
            "withdrawn": self._sum("withdrawn"),
            "target": target,
            "percent_of_target": round(100.0 * consented / target, 1) if target else None,
        }


def _by_trial(rows: list[SiteRecruitment]) -> list[TrialRecruitment]:
    trials: dict[int, TrialRecruitment] = {}
    for row in rows:
        trials.setdefault(row.trial.pk, TrialRecruitment(row.trial)).rows.append(row)
    return list(trials.values())


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    try:
        rows = selectors.recruitment_summary(request.user)
    except PermissionDenied:
        # Roles outside enrollment (the blinded panel) get a home page instead.
        duties = [
            (membership, ROLE_DUTIES.get(membership.role, "")) for membership in selectors.memberships_of(request.user)
        ]
        return render(request, "trial/home.html", {"duties": duties})
    return render(
        request,
        "trial/dashboard.html",
        {"trials": _by_trial(rows), "exclusion_reasons": selectors.exclusion_reason_counts(request.user)},
    )


# --- Screening log ------------------------------------------------------------------


@login_required
@require_GET
def screening_list(request: HttpRequest) -> HttpResponse:
    form = ScreeningFilterForm(request.GET, sites=selectors.sites_for(request.user, Capability.VIEW_PARTICIPANTS))
    valid = form.is_valid()
    site = form.cleaned_data.get("site") if valid else None
    entries = selectors.screening_entries(
        request.user, site_id=site.pk if site else None, status=form.cleaned_data.get("status") if valid else None
    )
    if not valid:
        entries = entries.none()
    return render(
        request,
        "trial/screening_list.html",
        {"form": form, "page": _page(request, entries, SCREENING_PAGE_SIZE)},
        status=200 if valid else 400,
    )


@login_required
@require_http_methods(["GET", "POST"])
def screening_create(request: HttpRequest) -> HttpResponse:
    selectors.require_capability(request.user, Capability.SCREEN)
    sites = selectors.sites_for(request.user, Capability.SCREEN)
    if request.method == "GET":
        initial: dict[str, Any] = {"submission_key": uuid.uuid4(), "screened_on": timezone.localdate()}
        if len(sites) == 1:
            initial["site"] = sites[0].pk
        form = ScreeningCreateForm(initial=initial, sites=sites)
        return render(request, "trial/screening_create.html", {"form": form})
    form = ScreeningCreateForm(request.POST, sites=sites)
    entry, status = _submit(
        form,
        lambda: services.screening_create(
            actor=Actor.from_request(request),
            site=form.cleaned_data["site"],
            screened_on=form.cleaned_data["screened_on"],
            indication=form.cleaned_data["indication"],
            year_of_birth=form.cleaned_data["year_of_birth"],
            sex=form.cleaned_data["sex"],
            submission_key=form.cleaned_data["submission_key"],
        ),
    )
    if entry is None:
        return render(request, "trial/screening_create.html", {"form": form}, status=status)
    messages.success(request, f"Screening entry {entry.screening_number} recorded.")
    return redirect("trial:screening_detail", pk=entry.pk)


def _eligibility_form(entry: ScreeningEntry, protocol: ProtocolVersion | None, data: Any = None) -> EligibilityForm:
    assessment = _assessment_of(entry)
    return EligibilityForm(
        data,
        criteria=protocol.criteria_for(entry.indication) if protocol else [],
        reassessing=assessment is not None,
        initial=EligibilityForm.initial_from(assessment.answers) if assessment else None,
    )


def _enroll_form(
    request: HttpRequest, entry: ScreeningEntry, protocol: ProtocolVersion | None, data: Any = None
) -> EnrollForm:
    return EnrollForm(
        data,
        staff=selectors.staff_at_site(entry.site),
        covariates=entry.trial.covariates_for(entry.indication),
        initial={
            "form_version": protocol.consent_form_version if protocol else "",
            "consented_at": _now_to_the_minute(),
            "taken_by": request.user.pk,
        },
    )


def _screening_page(
    request: HttpRequest, entry: ScreeningEntry, *, status: int = 200, **bound: forms.Form
) -> HttpResponse:
    """The entry with the action forms the user's role permits; a form that
    was just posted (`bound`) is shown with its errors whatever the state."""
    user = request.user
    protocol, protocol_error = _current_protocol(entry.trial)
    assessment = _assessment_of(entry)
    may_screen = _may(user, Capability.SCREEN, entry)
    may_enroll = _may(user, Capability.ENROLL, entry)
    open_statuses = (ScreeningStatus.PENDING, ScreeningStatus.ELIGIBLE, ScreeningStatus.INELIGIBLE)
    context: dict[str, Any] = {
        "entry": entry,
        "assessment": assessment,
        "eligibility_rows": _eligibility_rows(entry, assessment),
        "protocol": protocol,
        "protocol_error": protocol_error,
        "timeline": _event_rows(selectors.screening_timeline(user, entry)),
    }
    if may_enroll and protocol and entry.status in open_statuses:
        context["eligibility_form"] = _eligibility_form(entry, protocol)
    if may_enroll and entry.status == ScreeningStatus.ELIGIBLE:
        context["enroll_form"] = _enroll_form(request, entry, protocol)
    if may_enroll and entry.status in (ScreeningStatus.PENDING, ScreeningStatus.ELIGIBLE):
        context["close_form"] = ScreeningCloseForm()
    if may_screen:
        context["correct_form"] = ScreeningCorrectForm(initial=ScreeningCorrectForm.initial_from(entry))
    context.update(bound)
    return render(request, "trial/screening_detail.html", context, status=status)


def _eligibility_rows(entry: ScreeningEntry, assessment: EligibilityAssessment | None) -> list[dict[str, Any]]:
    if assessment is None:
        return []
    failed = set(assessment.failed_criteria)
    return [
        {
            "criterion": criterion,
            "answer": assessment.answers.get(criterion["code"]),
            "met": criterion["code"] not in failed,
        }
        for criterion in assessment.protocol_version.criteria_for(entry.indication)
    ]


@login_required
@require_GET
def screening_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _screening_page(request, selectors.screening_get(request.user, pk))


@login_required
@require_POST
def eligibility_assess(request: HttpRequest, pk: int) -> HttpResponse:
    entry = selectors.screening_get(request.user, pk)
    _require(request.user, Capability.ENROLL, entry)
    protocol, _ = _current_protocol(entry.trial)
    form = _eligibility_form(entry, protocol, request.POST)
    assessment, status = _submit(
        form,
        lambda: services.eligibility_assess(
            actor=Actor.from_request(request),
            entry=entry,
            answers=form.answers(),
            reason=form.cleaned_data.get("reason", ""),
        ),
    )
    if assessment is None:
        return _screening_page(request, entry, status=status, eligibility_form=form)
    outcome = "eligible" if assessment.is_eligible else "not eligible"
    messages.success(request, f"Eligibility recorded: {entry.screening_number} is {outcome}.")
    return redirect("trial:screening_detail", pk=entry.pk)


@login_required
@require_POST
def enroll(request: HttpRequest, pk: int) -> HttpResponse:
    entry = selectors.screening_get(request.user, pk)
    _require(request.user, Capability.ENROLL, entry)
    protocol, _ = _current_protocol(entry.trial)
    form = _enroll_form(request, entry, protocol, request.POST)
    participant, status = _submit(
        form,
        lambda: services.participant_enroll(
            actor=Actor.from_request(request),
            entry=entry,
            form_version=form.cleaned_data["form_version"],
            consented_at=form.cleaned_data["consented_at"],
            taken_by=form.cleaned_data["taken_by"],
            covariates=form.covariates(),
        ),
    )
    if participant is None:
        return _screening_page(request, entry, status=status, enroll_form=form)
    messages.success(request, f"{entry.screening_number} enrolled as {participant.study_id}.")
    return redirect("trial:participant_detail", pk=participant.pk)


@login_required
@require_POST
def screening_close(request: HttpRequest, pk: int) -> HttpResponse:
    entry = selectors.screening_get(request.user, pk)
    _require(request.user, Capability.ENROLL, entry)
    form = ScreeningCloseForm(request.POST)
    closed, status = _submit(
        form,
        lambda: services.screening_close(
            actor=Actor.from_request(request),
            entry=entry,
            outcome=form.cleaned_data["outcome"],
            reason=form.cleaned_data["reason"],
        ),
    )
    if closed is None:
        return _screening_page(request, entry, status=status, close_form=form)
    messages.success(request, f"{closed.screening_number} closed: {closed.get_status_display().lower()}.")
    return redirect("trial:screening_detail", pk=entry.pk)


@login_required
@require_POST
def screening_correct(request: HttpRequest, pk: int) -> HttpResponse:
    entry = selectors.screening_get(request.user, pk)
    _require(request.user, Capability.SCREEN, entry)
    form = ScreeningCorrectForm(request.POST)
    corrected, status = _submit(
        form,
        lambda: services.screening_correct(
            actor=Actor.from_request(request),
            entry=entry,
            changes=form.changes(entry),
            reason=form.cleaned_data["reason"],
        ),
    )
    if corrected is None:
        return _screening_page(request, entry, status=status, correct_form=form)
    messages.success(request, f"{corrected.screening_number} corrected.")
    return redirect("trial:screening_detail", pk=entry.pk)


# --- Participants --------------------------------------------------------------------


@login_required
@require_GET
def participant_list(request: HttpRequest) -> HttpResponse:
    form = ParticipantFilterForm(request.GET, sites=selectors.sites_for(request.user, Capability.VIEW_PARTICIPANTS))
    valid = form.is_valid()
    site = form.cleaned_data.get("site") if valid else None
    found = selectors.participants(
        request.user, site_id=site.pk if site else None, search=form.cleaned_data.get("q", "") if valid else ""
    )
    if not valid:
        found = found.none()
    return render(
        request,
        "trial/participant_list.html",
        {"form": form, "page": _page(request, found, PARTICIPANT_PAGE_SIZE)},
        status=200 if valid else 400,
    )


def _consent_form(request: HttpRequest, participant: Participant, data: Any = None) -> ConsentForm:
    protocol, _ = _current_protocol(participant.trial)
    return ConsentForm(
        data,
        staff=selectors.staff_at_site(participant.site),
        initial={
            "form_version": protocol.consent_form_version if protocol else "",
            "consented_at": _now_to_the_minute(),
            "taken_by": request.user.pk,
        },
    )


def _participant_page(
    request: HttpRequest, participant: Participant, *, status: int = 200, **bound: forms.Form
) -> HttpResponse:
    user = request.user
    show_reference = selectors.can_see_reference_standard(user, participant)
    protocol, _ = _current_protocol(participant.trial)
    consents = list(participant.consents.select_related("taken_by", "recorded_by", "protocol_version"))
    may_record_reference = show_reference and _may(user, Capability.RECORD_REFERENCE_STANDARD, participant)
    labels = {d["name"]: d.get("label") or d["name"] for d in participant.trial.covariates_for(participant.indication)}
    context: dict[str, Any] = {
        "participant": participant,
        "entry": participant.screening,
        "covariates": [(labels.get(name, name), value) for name, value in participant.covariates.items()],
        "consents": consents,
        "withdrawals": participant.withdrawals.select_related("recorded_by"),
        "show_reference": show_reference,
        "reference_results": selectors.reference_results(user, participant) if show_reference else None,
        "may_record_reference": may_record_reference,
        "current_consent_version": protocol.consent_form_version if protocol else "",
        "timeline": _event_rows(selectors.participant_timeline(user, participant)),
    }
    if _may(user, Capability.WITHDRAW, participant) and not participant.data_withdrawn:
        context["withdraw_form"] = WithdrawForm(initial={"withdrawn_on": timezone.localdate()})
    if may_record_reference and participant.accepts_clinical_data:
        context["reference_form"] = ReferenceResultForm(indication=participant.indication)
    consented_versions = {consent.form_version for consent in consents}
    if (
        _may(user, Capability.ENROLL, participant)
        and participant.accepts_clinical_data
        and protocol
        and protocol.consent_form_version not in consented_versions
    ):
        context["consent_form"] = _consent_form(request, participant)
    context.update(bound)
    return render(request, "trial/participant_detail.html", context, status=status)


@login_required
@require_GET
def participant_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _participant_page(request, selectors.participant_get(request.user, pk))


@login_required
@require_POST
def withdraw(request: HttpRequest, pk: int) -> HttpResponse:
    participant = selectors.participant_get(request.user, pk)
    _require(request.user, Capability.WITHDRAW, participant)
    form = WithdrawForm(request.POST)
    withdrawal, status = _submit(
        form,
        lambda: services.participant_withdraw(
            actor=Actor.from_request(request),
            participant=participant,
            withdrawn_on=form.cleaned_data["withdrawn_on"],
            scope=form.cleaned_data["scope"],
            reason=form.cleaned_data["reason"],
        ),
    )
    if withdrawal is None:
        return _participant_page(request, participant, status=status, withdraw_form=form)
    messages.success(request, f"Withdrawal of {participant.study_id} recorded: {withdrawal.get_scope_display()}.")
    return redirect("trial:participant_detail", pk=participant.pk)


@login_required
@require_POST
def reference_record(request: HttpRequest, pk: int) -> HttpResponse:
    participant = selectors.participant_get(request.user, pk)
    _require(request.user, Capability.RECORD_REFERENCE_STANDARD, participant)
    form = ReferenceResultForm(request.POST, indication=participant.indication)
    result, status = _submit(
        form,
        lambda: services.reference_result_record(
            actor=Actor.from_request(request), participant=participant, **form.values()
        ),
    )
    if result is None:
        return _participant_page(request, participant, status=status, reference_form=form)
    messages.success(request, f"{result.get_kind_display()} result recorded for {participant.study_id}.")
    return redirect("trial:participant_detail", pk=participant.pk)


@login_required
@require_http_methods(["GET", "POST"])
def reference_correct(request: HttpRequest, pk: int, result_pk: int) -> HttpResponse:
    participant = selectors.participant_get(request.user, pk)
    result = selectors.reference_result_get(request.user, participant, result_pk)
    _require(request.user, Capability.RECORD_REFERENCE_STANDARD, participant)
    context = {"participant": participant, "result": result}
    if request.method == "GET":
        form = ReferenceCorrectForm(
            initial=ReferenceCorrectForm.initial_from(result), indication=participant.indication
        )
        return render(request, "trial/reference_correct.html", {**context, "form": form})
    form = ReferenceCorrectForm(request.POST, indication=participant.indication)
    corrected, status = _submit(
        form,
        lambda: services.reference_result_correct(
            actor=Actor.from_request(request),
            result=result,
            changes=form.changes(result),
            reason=form.cleaned_data["reason"],
        ),
    )
    if corrected is None:
        return render(request, "trial/reference_correct.html", {**context, "form": form}, status=status)
    messages.success(request, f"{corrected.get_kind_display()} result of {participant.study_id} corrected.")
    return redirect("trial:participant_detail", pk=participant.pk)


@login_required
@require_POST
def consent_renew(request: HttpRequest, pk: int) -> HttpResponse:
    participant = selectors.participant_get(request.user, pk)
    _require(request.user, Capability.ENROLL, participant)
    form = _consent_form(request, participant, request.POST)
    consent, status = _submit(
        form,
        lambda: services.consent_renew(
            actor=Actor.from_request(request),
            participant=participant,
            form_version=form.cleaned_data["form_version"],
            consented_at=form.cleaned_data["consented_at"],
            taken_by=form.cleaned_data["taken_by"],
        ),
    )
    if consent is None:
        return _participant_page(request, participant, status=status, consent_form=form)
    messages.success(request, f"Consent of {participant.study_id} on form v{consent.form_version} recorded.")
    return redirect("trial:participant_detail", pk=participant.pk)


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
