"""HTML pages of readings: the reader's worklist, the case page (viewer and
case report form; the form works without JavaScript: save a draft and sign
by POST), the correction of a signed read, and the oversight pages of
monitors and trial admins with the reading policy.

Thin, as the other apps' views: readings.selectors decide what each reader
may see (the blinding of the panel, the AI second opinion in one arm only,
after the unaided read), readings.services write and validate. A domain
error re-renders the page with each field's message next to the field, a
summary at the top, the values entered and the error's status; a success
redirects with a message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from readings import forms, selectors, services
from readings.models import Phase, Read, ReadingTask, TaskKind, TaskStatus
from readings.scoring import ReadValidationError
from trial import selectors as trial_selectors
from trial.actors import Actor
from trial.errors import Conflict, DomainError, NotAllowed
from trial.permissions import Capability, role_can
from trial.services.checks import authorize
from trial.views.common import _page, _submit

OVERSIGHT_PAGE_SIZE = 50
PHASE_NAMES = {Phase.UNAIDED: "Unaided read", Phase.FINAL: "Final read"}


# --- The reader's worklist ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkRow:
    row: selectors.TaskRow
    clinical: selectors.ClinicalDetails | None

    @property
    def phase_name(self) -> str:
        return PHASE_NAMES[Phase(self.row.phase)]


@dataclass(frozen=True)
class WorklistSection:
    key: str
    title: str
    rows: list[WorkRow]
    count: int
    number: int
    num_pages: int
    first_url: str
    previous_url: str
    next_url: str
    last_url: str


WORKLIST_SECTIONS = (
    ("in_progress", "In progress"),
    ("pending", "Pending"),
    ("upcoming", "Upcoming re-reads"),
    ("done", "Done"),
)
WORKLIST_PAGE_SIZE = 50


def _requested_page(request: HttpRequest, key: str) -> int:
    """The page of a section asked for in `<key>_page`; a malformed number
    gives the first page, one out of range the nearest (as Paginator.get_page)."""
    try:
        return int(request.GET.get(f"{key}_page", "1"))
    except ValueError:
        return 1


def _page_url(request: HttpRequest, key: str, number: int) -> str:
    query = request.GET.copy()
    query[f"{key}_page"] = str(number)
    return f"?{query.urlencode()}#worklist-{key}"


@login_required
@require_GET
def worklist(request: HttpRequest) -> HttpResponse:
    work = selectors.worklist_page(
        request.user,
        limit=WORKLIST_PAGE_SIZE,
        pages={key: _requested_page(request, key) for key, _ in WORKLIST_SECTIONS},
    )
    details = selectors.clinical_details(request.user, [row.task for rows in work.sections.values() for row in rows])
    sections = []
    for key, title in WORKLIST_SECTIONS:
        number = work.offsets[key] // WORKLIST_PAGE_SIZE + 1
        num_pages = max(1, -(-work.counts[key] // WORKLIST_PAGE_SIZE))
        sections.append(
            WorklistSection(
                key=key,
                title=title,
                rows=[WorkRow(row, details.get(row.pk)) for row in work.sections[key]],
                count=work.counts[key],
                number=number,
                num_pages=num_pages,
                first_url=_page_url(request, key, 1),
                previous_url=_page_url(request, key, number - 1),
                next_url=_page_url(request, key, number + 1),
                last_url=_page_url(request, key, num_pages),
            )
        )
    context = {
        "sections": sections,
        "overdue": work.overdue,
        "any_clinical": bool(details),
    }
    return render(request, "readings/worklist.html", context)


# --- The case page -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ReadRow:
    read: Read
    values: list[tuple[str, str]]

    @property
    def phase_name(self) -> str:
        return PHASE_NAMES[Phase(self.read.phase)]


def _open_read(reads: list[Read], task: ReadingTask, phase: str) -> Read | None:
    if task.status != TaskStatus.IN_PROGRESS:
        return None
    return next((r for r in reads if r.phase == phase and r.current and not r.is_signed), None)


def _case_page(
    request: HttpRequest,
    task: ReadingTask,
    *,
    entered: dict[str, Any] | None = None,
    outline: str | None = None,
    revision: int | None = None,
    errors: dict[str, str] | None = None,
    summary: list[str] | None = None,
    conflict: bool = False,
    status: int = 200,
) -> HttpResponse:
    """The case as this reader may see it. `entered` (with the other keyword
    arguments) re-shows a refused form as the reader filled it in."""
    user = request.user
    phase = services.current_phase(task)
    reads = selectors.own_reads(user, task)
    open_read = _open_read(reads, task, phase)
    clinical = task.kind == TaskKind.CLINICAL
    field_errors = forms.form_field_errors(errors or {}, task.form)
    data = entered if entered is not None else (open_read.data if open_read else {})
    signed = [read for read in reads if read.is_signed]
    context = {
        "task": task,
        "label": selectors.case_label(task),
        "clinical": clinical,
        "arm": selectors.arm_label(user, task) if clinical else "",
        "phase": phase,
        "phase_name": PHASE_NAMES[Phase(phase)],
        "open_read": open_read,
        "upcoming": task.available_from > timezone.now(),
        "overdue": task.is_open and task.due_at < timezone.now(),
        "ai_visible": open_read is not None and clinical and selectors.ai_visible(user, task),
        "fields": forms.field_views(task.form, data, field_errors),
        "computed": forms.computed(task.form, data),
        "outline": outline if outline is not None else json.dumps(open_read.outline if open_read else {}),
        "revision": revision if revision is not None else (open_read.revision if open_read else 0),
        "meaning": services.SIGNATURE_MEANINGS[(TaskKind(task.kind), Phase(phase))],
        "password_error": (errors or {}).get("password", ""),
        "summary": summary or [],
        "field_errors": field_errors,
        "conflict": conflict,
        "saved_elsewhere": forms.value_rows(task.form, open_read.data) if conflict and open_read else [],
        "signed_reads": [_ReadRow(read, forms.value_rows(task.form, read.values)) for read in signed],
    }
    return render(request, "readings/case.html", context, status=status)


def _posted_outline(text: str) -> tuple[object, str]:
    """The outline the viewer left in the hidden input: None (keep the
    stored one) when empty; an error when it is not JSON."""
    if not text.strip():
        return None, ""
    try:
        return json.loads(text), ""
    except ValueError:
        return None, "The lesion outline sent by the page could not be read; draw it again."


def _posted_revision(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def _domain_errors(error: DomainError, form: str, what: str) -> tuple[dict[str, str], list[str]]:
    """A domain error as (messages by field, summary messages): the form's
    own fields are marked where they are; a problem of the whole read is
    in the summary."""
    if isinstance(error, ReadValidationError):
        return dict(error.errors), [
            f"{what} correct the fields marked below.",
            *forms.other_errors(error.errors, form),
        ]
    if error.field:
        return {error.field: error.message}, [error.message]
    return {}, [error.message]


def _require(request: HttpRequest, check: Callable[[Actor], str]) -> None:
    """Before a posted form is looked at: the service's own permission check,
    so that a caller who may not write gets 403 whatever they post."""
    try:
        check(Actor.from_request(request))
    except NotAllowed as refusal:
        raise PermissionDenied(refusal.message) from refusal


def _require_reader(request: HttpRequest, task: ReadingTask) -> None:
    _require(request, lambda actor: services.reader_role(actor, task))


def _save_or_sign(request: HttpRequest, task: ReadingTask, action: str) -> HttpResponse:
    post = request.POST
    phase = post.get("phase", "")
    data = forms.posted_data(task.form, post)
    outline_text = post.get("outline", "")
    outline, outline_error = _posted_outline(outline_text)
    revision = _posted_revision(post.get("revision", ""))
    if outline_error or revision is None:
        problem = outline_error or "The page did not send the read's revision; reload the page and enter again."
        return _case_page(
            request,
            task,
            entered=data,
            revision=revision,
            summary=[problem],
            status=400,
        )
    actor = Actor.from_request(request)
    try:
        if action == "save":
            read = services.read_save_draft(
                actor=actor, task=task, phase=phase, data=data, revision=revision, outline=outline
            )
        else:
            read = services.read_sign(
                actor=actor,
                task=task,
                phase=phase,
                data=data,
                revision=revision,
                password=post.get("password", ""),
                outline=outline,
            )
    except DomainError as error:
        errors, summary = _domain_errors(error, task.form, "The read was not saved:")
        conflict = isinstance(error, Conflict)
        if conflict:
            summary.append(
                "Your entries are kept in the form below, next to what was saved; saving again replaces "
                "the saved version with your entries."
            )
        fresh = selectors.task_get(request.user, task.pk)
        return _case_page(
            request,
            fresh,
            entered=data,
            outline=outline_text if outline is not None else None,
            # After a conflict the form holds the saved revision, so that
            # saving again is the reader's deliberate choice.
            revision=None if conflict else revision,
            errors=errors,
            summary=summary,
            conflict=conflict,
            status=error.status_code,
        )
    if action == "save":
        saved = timezone.localtime(read.saved_at or timezone.now()).strftime("%H:%M:%S")
        messages.success(request, f"Draft saved at {saved} (revision {read.revision}).")
    elif read.phase == Phase.UNAIDED:
        messages.success(
            request,
            "Your unaided read is signed and locked. The AI second opinion is now shown; "
            "complete and sign your final read.",
        )
    else:
        messages.success(request, "Your read is signed and locked; this task is done.")
    return redirect("readings:task", pk=task.pk)


@login_required
@require_http_methods(["GET", "POST"])
def task_page(request: HttpRequest, pk: int) -> HttpResponse:
    task = selectors.task_get(request.user, pk)
    if request.method == "GET":
        return _case_page(request, task)
    _require_reader(request, task)
    action = request.POST.get("action", "")
    if action in ("save", "sign"):
        return _save_or_sign(request, task, action)
    if action != "start":
        return _case_page(request, task, summary=["Unknown action; use the page's buttons."], status=400)
    try:
        services.reading_task_start(actor=Actor.from_request(request), task=task)
    except DomainError as error:
        return _case_page(
            request, selectors.task_get(request.user, pk), summary=[error.message], status=error.status_code
        )
    return redirect("readings:task", pk=task.pk)


# --- Correcting a signed read ---------------------------------------------------------------------


def _correct_page(
    request: HttpRequest,
    task: ReadingTask,
    read: Read,
    *,
    entered: dict[str, Any] | None = None,
    reason: str = "",
    errors: dict[str, str] | None = None,
    summary: list[str] | None = None,
    status: int = 200,
) -> HttpResponse:
    field_errors = forms.form_field_errors(errors or {}, task.form)
    context = {
        "task": task,
        "read": read,
        "label": selectors.case_label(task),
        "phase_name": PHASE_NAMES[Phase(read.phase)],
        "fields": forms.field_views(task.form, entered if entered is not None else read.data, field_errors),
        "computed": forms.computed(task.form, entered if entered is not None else read.data),
        "values": forms.value_rows(task.form, read.values),
        "reason": reason,
        "reason_error": (errors or {}).get("reason", ""),
        "password_error": (errors or {}).get("password", ""),
        "meaning": services.CORRECTION_MEANING,
        "summary": summary or [],
        "field_errors": field_errors,
    }
    return render(request, "readings/correct.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def correct(request: HttpRequest, pk: int, read_pk: int) -> HttpResponse:
    task = selectors.task_get(request.user, pk)
    read = selectors.read_get(request.user, task, read_pk)
    if not read.is_signed:
        messages.info(
            request, "This read is a draft: save or sign it on the case page; only a signed read is corrected."
        )
        return redirect("readings:task", pk=task.pk)
    if request.method == "GET":
        return _correct_page(request, task, read)
    _require_reader(request, task)
    data = forms.posted_data(task.form, request.POST)
    reason = request.POST.get("reason", "")
    try:
        new = services.read_correct(
            actor=Actor.from_request(request),
            read=read,
            data=data,
            reason=reason,
            password=request.POST.get("password", ""),
        )
    except DomainError as error:
        errors, summary = _domain_errors(error, task.form, "The correction was not signed:")
        return _correct_page(
            request,
            task,
            selectors.read_get(request.user, task, read_pk),
            entered=data,
            reason=reason,
            errors=errors,
            summary=summary,
            status=error.status_code,
        )
    messages.success(request, f"Correction signed: version {new.version} replaces version {read.version}.")
    return redirect("readings:task", pk=task.pk)


# --- Oversight ----------------------------------------------------------------------------------------


def _policy_trials(user: Any) -> list[Any]:
    """The trials whose reading policy the user sets (trial-wide memberships)."""
    trials = {
        m.trial_id: m.trial
        for m in trial_selectors.memberships_of(user)
        if m.site_id is None and role_can(m.role, Capability.CONFIGURE_READINGS)
    }
    return sorted(trials.values(), key=lambda trial: trial.code)


@login_required
@require_GET
def oversight(request: HttpRequest) -> HttpResponse:
    progress = selectors.reading_progress(request.user)
    form = forms.OversightFilter(request.GET)
    status = 200
    if form.is_valid():
        tasks = selectors.tasks_overseen(
            request.user, status=form.cleaned_data["status"], kind=form.cleaned_data["kind"]
        )
    else:
        tasks, status = selectors.tasks_overseen(request.user), 400
    context = {
        "progress": progress,
        "form": form,
        "page": _page(request, tasks, OVERSIGHT_PAGE_SIZE),
        "now": timezone.now(),
        "policy_trials": _policy_trials(request.user),
    }
    return render(request, "readings/oversight.html", context, status=status)


@login_required
@require_GET
def oversight_task(request: HttpRequest, pk: int) -> HttpResponse:
    task = selectors.task_overseen_get(request.user, pk)
    reads = selectors.signed_reads(request.user, task)
    context = {
        "task": task,
        "reads": [_ReadRow(read, forms.value_rows(task.form, read.values)) for read in reads],
        "displays": selectors.ai_displays_overseen(request.user, task),
    }
    return render(request, "readings/oversight_task.html", context)


# --- The reading policy --------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def policy(request: HttpRequest, trial_pk: int) -> HttpResponse:
    trial = selectors.policy_trial_get(request.user, trial_pk)
    current = services.reading_policy_for(trial)
    status = 200
    if request.method == "GET":
        form = forms.ReadingPolicyForm(initial=forms.ReadingPolicyForm.initial_from(current))
    else:
        _require(request, lambda actor: authorize(actor, Capability.CONFIGURE_READINGS, trial=trial, site=None))
        form = forms.ReadingPolicyForm(request.POST)
        changed, status = _submit(
            form,
            lambda: services.reading_policy_set(actor=Actor.from_request(request), trial=trial, **form.cleaned_data),
        )
        if changed is not None:
            messages.success(request, "Reading policy saved. New cases follow it; tasks already made keep theirs.")
            return redirect("readings:policy", trial_pk=trial.pk)
    return render(request, "readings/policy.html", {"trial": trial, "form": form}, status=status)
