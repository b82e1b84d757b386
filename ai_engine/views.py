"""HTML pages of the AI engine: the operations view for trial admins.

Thin, as the other apps' views: ai_engine.operations decides who may see
which trial and sites and computes every figure; the view validates the
chosen window and renders.
"""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from ai_engine import operations

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
    }
    return render(request, "ai_engine/operations.html", context, status=status)
