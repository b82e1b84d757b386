"""Celery tasks of the analysis app (queue "reports")."""

from __future__ import annotations

from celery import shared_task

REPORTS_QUEUE = "reports"


@shared_task(name="analysis.build_report", queue=REPORTS_QUEUE, ignore_result=True)
def build_report(report_id: int) -> str:
    """Build one requested report (analysis.reports.builder); its outcome is
    on the Report row."""
    from analysis.reports.builder import build_report as build

    return build(report_id).status
