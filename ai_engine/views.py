"""HTML pages of the AI engine: the operations view for trial admins, and
the files of an AI result that other software reads (DICOM Segmentation,
PNG overlay, mask), for the same admins.

Thin, as the other apps' views: ai_engine.operations and ai_engine.selectors
decide who may see which trial, sites and files and compute every figure;
the views validate, read, record the download through its service, and
render or answer with the file.
"""

from __future__ import annotations

import logging

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from ai_engine import operations, selectors, services
from imaging import storage
from trial.actors import Actor
from trial.errors import NotAllowed

logger = logging.getLogger(__name__)

# The page reloads itself (a meta refresh: the site's CSP allows no inline script).
REFRESH_SECONDS = 15


class WindowForm(forms.Form):
    days = forms.IntegerField(
        label="Chosen window (days)",
        required=False,
        min_value=1,
        max_value=operations.MAX_WINDOW_DAYS,
        help_text="Adds a row to the latency table: results finished in the last N days.",
    )


@login_required
@require_GET
def operations_index(request: HttpRequest) -> HttpResponse:
    """The first trial (by code) whose AI the user administers."""
    trials = operations.operations_trials(request.user)
    return redirect("ai_engine:operations", code=trials[0].code)


@login_required
@require_GET
def operations_page(request: HttpRequest, code: str) -> HttpResponse:
    form = WindowForm(request.GET if "days" in request.GET else None)
    window_days = None
    status = 200
    if form.is_bound:
        if form.is_valid():
            window_days = form.cleaned_data["days"]
        else:
            status = 400
    summary = operations.operations_summary(request.user, trial_code=code, window_days=window_days)
    context = {
        "ops": summary,
        "trials": operations.operations_trials(request.user),
        "form": form,
        "refresh_seconds": REFRESH_SECONDS,
        "flag_min_n": operations.FLAG_MIN_N,
        "flag_standard_errors": operations.FLAG_STANDARD_ERRORS,
        "recent_failures": operations.RECENT_FAILURES,
        "recent_results": operations.RECENT_RESULTS,
    }
    return render(request, "ai_engine/operations.html", context, status=status)


INTEGRITY_MESSAGE = (
    "The stored {label} of AI result {pk} failed its integrity check: it no longer matches the sha256 "
    "recorded when it was made (altered or damaged), or it could not be read. It is not served; the "
    "incident is logged for the data manager.\n"
)


@login_required
@require_GET
def ai_result_file(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    """One file of an AI result as an attachment, checked against its sha256
    first; an altered file answers 409 and is never served. Each download
    is an audit event (who saw AI output, which file, which checkpoint)."""
    found = selectors.ai_result_file(request.user, pk, kind)
    try:
        data = storage.read_verified(found.name, found.sha256)
    except (storage.StoredFileCorrupt, OSError) as error:
        logger.error(
            "Integrity check failed: AI result %s, %s, stored file %s, user %s, request %s: %s",
            pk,
            kind,
            found.name,
            request.user.get_username(),
            getattr(request, "request_id", ""),
            error,
        )
        message = INTEGRITY_MESSAGE.format(label=found.kind.label, pk=pk)
        return HttpResponse(message, status=409, content_type="text/plain; charset=utf-8")
    try:
        services.ai_result_download(actor=Actor.from_request(request), result=found.result, kind=kind)
    except NotAllowed as error:
        raise PermissionDenied(error.message) from error
    response = HttpResponse(data, content_type=found.kind.content_type)
    response["Content-Disposition"] = f'attachment; filename="{found.download_name}"'
    response["Content-Length"] = str(len(data))
    response["X-Content-Type-Options"] = "nosniff"
    # Per-user permissions and an audit event per download: no cache keeps it.
    response["Cache-Control"] = "private, no-store"
    return response
