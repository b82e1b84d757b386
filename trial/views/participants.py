"""Participants: list, detail, withdrawal, reference standard, consent."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from randomization import selectors as randomization_selectors
from trial import selectors, services
from trial.actors import Actor
from trial.forms import (
    ConsentForm,
    ParticipantFilterForm,
    ReferenceCorrectForm,
    ReferenceResultForm,
    WithdrawForm,
)
from trial.models import Participant
from trial.permissions import Capability
from trial.views.common import _consent_initial, _current_protocol, _event_rows, _may, _page, _require, _submit

PARTICIPANT_PAGE_SIZE = 50


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
        initial=_consent_initial(request, protocol),
    )


def _allocation_context(user: Any, participant: Participant) -> dict[str, Any]:
    """The allocation card: the arm only as randomization.selectors shows it
    to this user, and the actions the user's role offers."""
    allocation, arm = randomization_selectors.allocation_of(user, participant)
    may_randomize = allocation is None and randomization_selectors.can_randomize(user, participant)
    return {
        "allocation": allocation,
        "arm": arm,
        "may_randomize": may_randomize and not participant.is_withdrawn,
        "randomization_ready": may_randomize and randomization_selectors.active_scheme(participant.trial) is not None,
        "may_unblind": allocation is not None and _may(user, Capability.UNBLIND, participant),
    }


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
        "may_view_images": _may(user, Capability.VIEW_IMAGES, participant),
        "current_consent_version": protocol.consent_form_version if protocol else "",
        "timeline": _event_rows(selectors.participant_timeline(user, participant)),
        **_allocation_context(user, participant),
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
