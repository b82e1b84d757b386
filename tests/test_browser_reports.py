"""The reports page in a browser: a running report's progress bar moves
without a reload (static/js/report_progress.js polling the JSON status, no
inline script), and the download link appears once the report is done."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from playwright.sync_api import Page, expect

from analysis import services
from analysis.models import Report
from analysis.reports.pdf import render_report
from tests.analysis_report_factory import make_analysis
from tests.browser import PageProblems, logged_in, screenshot
from tests.conftest import PASSWORD, actor_for
from trial.models import Role, Trial


def test_the_progress_bar_follows_the_report_and_the_download_link_appears(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    users: dict[str, Any],
    recruiting: Trial,
    monkeypatch: Any,
) -> None:
    from analysis import tasks

    monkeypatch.setattr(tasks.build_report, "delay", lambda pk: None)
    dsmb = users[Role.DSMB]
    report = services.report_request(actor=actor_for(dsmb), trial=recruiting, kind="closed")

    logged_in(page, live_server, dsmb, PASSWORD)
    page.get_by_role("navigation", name="Main menu").get_by_role("link", name="Reports").click()
    page.wait_for_url(f"{live_server.url}{reverse('analysis:reports')}")
    row = page.locator(f"tr[data-report-status-url='{reverse('analysis:report_status', args=[report.pk])}']")
    bar = row.locator("progress")
    expect(bar).to_have_attribute("value", "0")
    assert page.locator("script:not([src])").count() == 0

    services.report_progress(report, 45, "Computing the endpoints")
    expect(row.locator("[data-role=message]")).to_have_text("Computing the endpoints", timeout=10_000)
    assert bar.evaluate("bar => bar.value") == 45
    expect(row.locator("[data-role=status]")).to_have_text("Running")
    screenshot(page, "reports-running")

    pdf = render_report(make_analysis(closed=True, n=100), requested_by=dsmb.username)
    services.report_finish(Report.objects.get(pk=report.pk), pdf=pdf, data_sha256="ef" * 32)
    link = row.locator("a", has_text="Download PDF")
    expect(link).to_be_visible(timeout=10_000)  # the page reloaded once the report was done
    expect(row.locator("[data-role=status]")).to_have_text("Done")
    screenshot(page, "reports-done")
    page_problems.assert_none()
