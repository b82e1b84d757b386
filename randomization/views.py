"""HTML pages of randomization: the confirm page of a randomization, the
emergency unblinding form, the scheme set-up page (versions, draft, table,
activation, balance) and the list of unblindings.

Thin, as trial.views: trial.selectors scopes the participant,
randomization.selectors decides what of an arm, a scheme or the balance the
user may see, one service writes. A domain error re-renders the page with its
message and status; a success redirects with a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from randomization import selectors, services
from randomization.forms import (
    ActivateForm,
    SchemeConfigureForm,
    TableUploadForm,
    UnblindForm,
    confirmation_phrase,
    factor_choices,
)
from randomization.models import Allocation, Method, RandomizationScheme, SchemeStatus
from trial import selectors as trial_selectors
from trial.actors import Actor
from trial.errors import DomainError, RuleViolation
from trial.models import Membership, Participant, Role, Trial
from trial.permissions import Capability
from trial.views.common import _page, _submit

UNBLINDING_PAGE_SIZE = 50
_ROLE_LABELS = dict(Role.choices)


def _arm_text(user: Any, allocation: Allocation) -> str:
    view = selectors.arm_view(user, allocation)
    if view.masked:
        return f"arm {view.label}"
    return view.label or "an arm concealed from your role"


# --- Randomizing one participant ------------------------------------------------------------


def _randomize_page(request: HttpRequest, participant: Participant, *, error: str = "", status: int = 200) -> Any:
    context = {
        "participant": participant,
        "has_active_scheme": selectors.active_scheme(participant.trial) is not None,
        "error": error,
    }
    return render(request, "randomization/randomize_confirm.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def randomize(request: HttpRequest, pk: int) -> HttpResponse:
    participant = trial_selectors.participant_get(request.user, pk)
    if not selectors.can_randomize(request.user, participant):
        raise PermissionDenied("Your role does not randomize participants here.")
    if request.method == "GET":
        allocation, _ = selectors.allocation_of(request.user, participant)
        if allocation is not None:
            messages.info(
                request,
                f"{participant.study_id} was randomized on {allocation.allocated_at:%Y-%m-%d} "
                f"to {_arm_text(request.user, allocation)}; a participant is randomized once.",
            )
            return redirect("trial:participant_detail", pk=participant.pk)
        return _randomize_page(request, participant)
    try:
        result = services.participant_randomize(actor=Actor.from_request(request), participant=participant)
    except DomainError as error:
        return _randomize_page(request, participant, error=error.message, status=error.status_code)
    arm = _arm_text(request.user, result.allocation)
    if result.created:
        messages.success(
            request,
            f"{participant.study_id} randomized to {arm} (allocation #{result.allocation.sequence_number}).",
        )
    else:
        messages.info(request, f"{participant.study_id} had already been randomized to {arm}; nothing changed.")
    for warning in result.warnings:
        messages.warning(request, warning)
    return redirect("trial:participant_detail", pk=participant.pk)


# --- Emergency unblinding -----------------------------------------------------------------


def _members(participant: Participant) -> tuple[QuerySet[Any], dict[int, list[str]]]:
    """Active members of the participant's trial, trial-wide or at the
    participant's site: the people an arm may be revealed to. A plain list of
    names for the admin's choice; the service checks the membership again."""
    memberships = Membership.objects.filter(
        Q(site__isnull=True) | Q(site_id=participant.site_id),
        trial_id=participant.trial_id,
        active=True,
        user__is_active=True,
    ).order_by("role")
    roles: dict[int, list[str]] = {}
    for user_id, role in memberships.values_list("user_id", "role"):
        roles.setdefault(user_id, []).append(_ROLE_LABELS.get(role, role))
    users = get_user_model().objects.filter(pk__in=roles).order_by("username")
    return users, roles


def _unblind_page(
    request: HttpRequest, participant: Participant, allocation: Allocation, form: UnblindForm, status: int = 200
) -> HttpResponse:
    context = {
        "participant": participant,
        "allocation": allocation,
        "form": form,
        "phrase": confirmation_phrase(participant.study_id),
        "previous": selectors.unblindings(request.user).filter(allocation=allocation),
    }
    return render(request, "randomization/unblind.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def unblind(request: HttpRequest, pk: int) -> HttpResponse:
    participant = trial_selectors.participant_get(request.user, pk)
    if (
        trial_selectors.role_for(
            request.user, Capability.UNBLIND, trial_id=participant.trial_id, site_id=participant.site_id
        )
        is None
    ):
        raise PermissionDenied("Only the trial admin performs emergency unblinding.")
    allocation, _ = selectors.allocation_of(request.user, participant)
    if allocation is None:
        raise Http404(f"{participant.study_id} has not been randomized; there is no arm to reveal.")
    members, roles = _members(participant)
    form_options: dict[str, Any] = {"members": members, "roles": roles, "study_id": participant.study_id}
    if request.method == "GET":
        return _unblind_page(request, participant, allocation, UnblindForm(**form_options))
    form = UnblindForm(request.POST, **form_options)
    unblinding, status = _submit(
        form,
        lambda: services.allocation_unblind(
            actor=Actor.from_request(request),
            allocation=allocation,
            revealed_to=form.cleaned_data["revealed_to"],
            reason=form.cleaned_data["reason"],
            confirmation=form.cleaned_data["confirmation"],
        ),
    )
    if unblinding is None:
        return _unblind_page(request, participant, allocation, form, status)
    messages.success(
        request,
        f"The arm of {participant.study_id} is now revealed to {unblinding.revealed_to.get_username()}; "
        "the unblinding is recorded with your reason.",
    )
    return redirect("trial:participant_detail", pk=participant.pk)


@login_required
@require_GET
def unblinding_list(request: HttpRequest) -> HttpResponse:
    found = selectors.unblindings(request.user).select_related("allocation__site")
    return render(request, "randomization/unblinding_list.html", {"page": _page(request, found, UNBLINDING_PAGE_SIZE)})


# --- Scheme set-up ------------------------------------------------------------------------


def _may_configure(user: Any, trial: Trial) -> bool:
    return (
        trial_selectors.role_for(user, Capability.CONFIGURE_RANDOMIZATION, trial_id=trial.pk, site_id=None) is not None
    )


def _require_configure(user: Any, trial: Trial) -> None:
    if not _may_configure(user, trial):
        raise PermissionDenied("Only the trial admin configures randomization.")


def _balance_or_none(user: Any, trial: Trial) -> selectors.Balance | None:
    try:
        return selectors.balance(user, trial.pk)
    except (PermissionDenied, Http404):
        return None


@dataclass(frozen=True)
class SchemeRow:
    """A scheme version with its factors named for people."""

    scheme: RandomizationScheme
    factors: str
    table_rows: int
    allocations: int  # made under this version


def _scheme_row(scheme: RandomizationScheme, labels: dict[str, str]) -> SchemeRow:
    names = []
    for factor in scheme.factors:
        name = labels.get(factor, factor)
        if scheme.method == Method.MINIMIZATION:
            name += f" (weight {scheme.factor_weights.get(factor, 1.0):g})"
        names.append(name)
    table_rows = scheme.table_entries.count() if scheme.table_sha256 else 0
    return SchemeRow(scheme, ", ".join(names), table_rows, scheme.allocations.count())


def _setup_page(
    request: HttpRequest,
    trial: Trial,
    schemes: QuerySet[RandomizationScheme],
    *,
    status: int = 200,
    **bound: forms.Form,
) -> HttpResponse:
    user = request.user
    versions = list(schemes)
    draft = next((scheme for scheme in versions if scheme.status == SchemeStatus.DRAFT), None)
    active = next((scheme for scheme in versions if scheme.status == SchemeStatus.ACTIVE), None)
    may_configure = _may_configure(user, trial)
    labels = dict(factor_choices(trial))
    balance = _balance_or_none(user, trial)
    context: dict[str, Any] = {
        "trial": trial,
        "scheme_rows": [_scheme_row(scheme, labels) for scheme in versions],
        "draft": draft,
        "draft_row": _scheme_row(draft, labels) if draft else None,
        "active": active,
        "may_configure": may_configure,
        "balance": balance,
        "balance_overall": [balance.overall] if balance else [],
    }
    if may_configure:
        context["configure_form"] = SchemeConfigureForm(trial=trial)
        if draft is not None:
            context["activate_form"] = ActivateForm()
            if draft.method != Method.MINIMIZATION:
                context["table_form"] = TableUploadForm()
    context.update(bound)
    return render(request, "randomization/setup.html", context, status=status)


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """The trials whose randomization the user configures or oversees."""
    if not (
        trial_selectors.has_capability(request.user, Capability.CONFIGURE_RANDOMIZATION)
        or trial_selectors.has_capability(request.user, Capability.VIEW_BALANCE)
    ):
        raise PermissionDenied("Your role does not configure or oversee randomization.")
    rows = []
    for trial in trial_selectors.trials_visible(request.user):
        try:
            _, schemes = selectors.schemes(request.user, trial.pk)
        except (PermissionDenied, Http404):
            continue
        versions = list(schemes)
        rows.append(
            {
                "trial": trial,
                "active": next((s for s in versions if s.status == SchemeStatus.ACTIVE), None),
                "draft": next((s for s in versions if s.status == SchemeStatus.DRAFT), None),
            }
        )
    return render(request, "randomization/index.html", {"rows": rows})


@login_required
@require_GET
def setup(request: HttpRequest, pk: int) -> HttpResponse:
    trial, schemes = selectors.schemes(request.user, pk)
    return _setup_page(request, trial, schemes)


@login_required
@require_POST
def scheme_configure(request: HttpRequest, pk: int) -> HttpResponse:
    trial, schemes = selectors.schemes(request.user, pk)
    _require_configure(request.user, trial)
    form = SchemeConfigureForm(request.POST, trial=trial)
    scheme, status = _submit(
        form,
        lambda: services.scheme_configure(actor=Actor.from_request(request), trial=trial, **form.values()),
    )
    if scheme is None:
        return _setup_page(request, trial, schemes, status=status, configure_form=form)
    messages.success(
        request,
        f"Draft v{scheme.version} saved ({scheme.get_method_display()}, {scheme.ratio_label}). "
        "Check it, then activate it to use it.",
    )
    return redirect("randomization:setup", pk=trial.pk)


@login_required
@require_POST
def table_upload(request: HttpRequest, pk: int) -> HttpResponse:
    trial, schemes = selectors.schemes(request.user, pk)
    _require_configure(request.user, trial)
    form = TableUploadForm(request.POST, request.FILES)
    draft = schemes.filter(status=SchemeStatus.DRAFT).first()

    def load() -> services.TableImport:
        if draft is None:
            raise RuleViolation("There is no draft scheme to load a table into; configure one first.")
        return services.allocation_table_import(
            actor=Actor.from_request(request), scheme=draft, content=form.cleaned_data["file"].read()
        )

    imported, status = _submit(form, load)
    if imported is None:
        return _setup_page(request, trial, schemes, status=status, table_form=form)
    messages.success(
        request,
        f"Allocation table loaded into draft v{draft.version if draft else ''}: {imported.rows} rows in "
        f"{imported.strata} strata (sha256 {imported.sha256[:12]}…).",
    )
    return redirect("randomization:setup", pk=trial.pk)


@login_required
@require_POST
def scheme_activate(request: HttpRequest, pk: int) -> HttpResponse:
    trial, schemes = selectors.schemes(request.user, pk)
    _require_configure(request.user, trial)
    form = ActivateForm(request.POST)
    scheme, status = _submit(form, lambda: services.scheme_activate(actor=Actor.from_request(request), trial=trial))
    if scheme is None:
        return _setup_page(request, trial, schemes, status=status, activate_form=form)
    messages.success(
        request,
        f"Scheme v{scheme.version} is active and locked; its seed commitment is {scheme.seed_commitment}.",
    )
    return redirect("randomization:setup", pk=trial.pk)
