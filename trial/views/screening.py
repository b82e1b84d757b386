"""The screening log: list, create, eligibility, enrollment, close, correct."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from trial import selectors, services
from trial.actors import Actor
from trial.forms import (
    EligibilityForm,
    EnrollForm,
    ScreeningCloseForm,
    ScreeningCorrectForm,
    ScreeningCreateForm,
    ScreeningFilterForm,
)
from trial.models import EligibilityAssessment, ProtocolVersion, ScreeningEntry, ScreeningStatus
from trial.permissions import Capability
from trial.views.common import _consent_initial, _current_protocol, _event_rows, _may, _page, _require, _submit

SCREENING_PAGE_SIZE = 50


def _assessment_of(entry: ScreeningEntry) -> EligibilityAssessment | None:
    try:
        return entry.eligibility
    except EligibilityAssessment.DoesNotExist:
        return None


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
        initial=_consent_initial(request, protocol),
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
