"""Pages of the analysis reports: the list with the request form, a JSON
status for the progress bars (static/js/report_progress.js) and the
download. Thin: analysis.selectors decide what each user may see,
analysis.services write and audit."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from analysis import selectors, services
from analysis.forms import ReportRequestForm
from analysis.models import Report
from imaging.storage import StoredFileCorrupt
from trial.actors import Actor
from trial.errors import DomainError
from trial.models import Trial
from trial.permissions import Capability
from trial.selectors import require_capability
from trial.views.common import _submit

REPORTS_SHOWN = 100


def _status(report: Report) -> dict[str, object]:
    return {
        "id": report.pk,
        "status": report.status,
        "status_display": report.get_status_display(),
        "progress": report.progress,
        "message": report.message,
        "error": report.error,
        "finished": report.finished,
    }


@login_required
@require_http_methods(["GET", "POST"])
def reports(request: HttpRequest) -> HttpResponse:
    require_capability(request.user, Capability.EXPORT_ANALYSIS_DATA)
    trials = selectors.report_trials(request.user)
    form = ReportRequestForm(request.POST or None, trials=trials)
    status = 200
    if request.method == "POST":

        def write() -> Report:
            trial = Trial.objects.get(pk=form.cleaned_data["trial"])
            return services.report_request(
                actor=Actor.from_request(request), trial=trial, kind=form.cleaned_data["kind"]
            )

        report, status = _submit(form, write)
        if report is not None:
            messages.success(request, f"Report #{report.pk} is queued; this page shows its progress.")
            return redirect("analysis:reports")
    context = {
        "form": form,
        "trials": trials,
        "reports": list(selectors.reports_visible(request.user)[:REPORTS_SHOWN]),
        "current": "reports",
        "section": "analysis",
    }
    return render(request, "analysis/reports.html", context, status=status)


@login_required
@require_GET
def report_status(request: HttpRequest, pk: int) -> JsonResponse:
    report = selectors.report_get(request.user, pk)
    return JsonResponse(_status(report))


@login_required
@require_GET
def report_download(request: HttpRequest, pk: int) -> HttpResponse:
    report = selectors.report_get(request.user, pk)
    try:
        data = services.report_download(actor=Actor.from_request(request), report=report)
    except DomainError as error:
        return HttpResponse(error.message, status=error.status_code, content_type="text/plain; charset=utf-8")
    except StoredFileCorrupt as error:
        return HttpResponse(str(error), status=500, content_type="text/plain; charset=utf-8")
    response = HttpResponse(data, content_type="application/pdf")
    name = f"consilium-{report.trial.code}-{report.kind}-report-{report.pk}.pdf"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Content-SHA256"] = report.sha256
    return response


def export_zip_response(export: services.AnalysisExport) -> HttpResponse:
    """The export's zip as an attachment named after the trial and data hash."""
    data = export.zip_bytes()
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{export.zip_name}"'
    response["Content-Length"] = str(len(data))
    response["X-Data-SHA256"] = export.data_sha256
    # Per-user content (the role decides the arm labels): shared caches must not keep it.
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_POST
def data_download(request: HttpRequest, pk: int) -> HttpResponse:
    """The analysis data sets of one trial as a zip (POST: each download is an
    audited export)."""
    scope = selectors.export_scope(request.user, pk)
    try:
        export = services.analysis_export_create(actor=Actor.from_request(request), trial=scope.trial)
    except DomainError as error:
        return HttpResponse(error.message, status=error.status_code, content_type="text/plain; charset=utf-8")
    return export_zip_response(export)
