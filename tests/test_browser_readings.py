"""The reading issue's browser tests, in Chromium against the live server:
- a clinician reads an AI-arm case: unaided read → signed → the AI second
  opinion shown (each display recorded) → final read → signed;
- a clinician reads a specialist-only case: no AI control ever exists and no
  AI request is made;
- a blinded panel reader reads a case: no page or data response carries the
  arm, the study id, the site or any AI output.
Screenshots of each step are saved as artifacts."""

from __future__ import annotations

import json
from typing import Any

from django.urls import reverse
from playwright.sync_api import Page, Response

from readings.models import AiDisplay, Phase, Read, ReadStatus, TaskStatus
from tests.browser import PageProblems, logged_in, screenshot
from tests.conftest import PASSWORD
from tests.reading_fixtures import Case, valid_read
from trial.audit import verify_chain
from trial.models import AuditEvent, Role

ARM_TEXTS = ("AI-assisted", "Specialist only", "ai_assisted", "specialist_only")
AI_TEXTS = ("AI second opinion", "category_probability", "heatmap", "contour", "model_version", "sha256")


def fill_read(page: Page, data: dict[str, Any]) -> None:
    """Enter a read into the case page's form, whatever control each field uses."""
    form = page.locator("#read-form")
    for name, value in data.items():
        controls = form.locator(f"[name='{name}']")
        if controls.count() == 0:
            continue
        first = controls.first
        tag = first.evaluate("element => element.tagName.toLowerCase()")
        kind = (first.get_attribute("type") or "").lower()
        if tag == "select":
            text = {True: "true", False: "false"}.get(value, str(value)) if isinstance(value, bool) else str(value)
            options = first.locator("option").evaluate_all("options => options.map(o => o.value)")
            if text not in options and isinstance(value, bool):
                text = next(
                    o
                    for o in options
                    if o.lower() in (("yes", "true", "on", "1") if value else ("no", "false", "off", "0"))
                )
            first.select_option(text)
        elif kind == "radio":
            text = str(value).lower() if isinstance(value, bool) else str(value)
            form.locator(f"[name='{name}'][value='{text}']").check()
        elif kind == "checkbox":
            wanted = {str(v) for v in (value if isinstance(value, list) else [value])}
            for index in range(controls.count()):
                box = controls.nth(index)
                if (box.get_attribute("value") or "") in wanted or (value is True and controls.count() == 1):
                    box.check()
                else:
                    box.uncheck()
        else:
            first.fill("" if value is None else str(value))


def sign(page: Page) -> None:
    page.locator("#read-form [name='password']").fill(PASSWORD)
    with page.expect_navigation():
        page.locator("#read-form button[name='action'][value='sign']").click()


def open_case(page: Page, live_server: Any, task_pk: int) -> None:
    page.goto(f"{live_server.url}{reverse('readings:task', args=[task_pk])}")
    start = page.get_by_role("button", name="Start reading")
    if start.count():
        with page.expect_navigation():
            start.click()
    page.locator("#read-form").wait_for()


def test_a_clinician_reads_an_ai_arm_case_unaided_then_with_the_ai_second_opinion(
    page: Page, page_problems: PageProblems, live_server: Any, users: dict[str, Any], ai_case: Case
) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = ai_case.task()
    logged_in(page, live_server, clinician, PASSWORD)
    page.goto(f"{live_server.url}{reverse('readings:worklist')}")
    assert page.get_by_text(ai_case.participant.study_id).count() >= 1
    screenshot(page, "reading-worklist-clinician")

    open_case(page, live_server, task.pk)
    # Before the unaided read is signed, nothing of the AI is on the page.
    assert page.locator("#ai-panel").count() == 0
    assert page.locator("#viewer[data-ai-api]").count() == 0
    page.locator("#viewer canvas").first.wait_for()
    screenshot(page, "reading-ai-arm-unaided")
    unaided = valid_read("thyroid")
    fill_read(page, unaided)
    sign(page)
    assert Read.objects.get(task=task, phase=Phase.UNAIDED).status == ReadStatus.SIGNED

    # The AI second opinion appears; the contour layer is drawn when asked for.
    panel = page.locator("#ai-panel")
    panel.wait_for()
    model = ai_case.ai_results[0].model_version
    page.wait_for_function("name => document.querySelector('#ai-panel').innerText.includes(name)", arg=model.name)
    assert model.version in panel.inner_text()
    before = AiDisplay.objects.filter(task=task, what="contour").count()
    with page.expect_response(lambda r: "/ai/" in r.url and r.url.endswith("contour.png")) as layer:
        page.get_by_label("Contour").check()
    assert layer.value.status == 200
    assert AiDisplay.objects.filter(task=task, what="contour").count() == before + 1
    screenshot(page, "reading-ai-arm-ai-shown")

    final = {**unaided, "echogenicity": "very_hypoechoic", "confidence": 5}
    fill_read(page, final)
    sign(page)
    task.refresh_from_db()
    assert task.status == TaskStatus.DONE
    signed = Read.objects.get(task=task, phase=Phase.FINAL, current=True)
    assert signed.status == ReadStatus.SIGNED and signed.values["points"] == 5
    assert signed.interaction["ai_viewed"] is True
    assert "echogenicity" in signed.interaction["changed_fields"]
    assert AuditEvent.objects.filter(action="ai_result.display").count() >= 2  # the suggestion and the contour
    assert verify_chain().ok
    screenshot(page, "reading-ai-arm-signed")
    page_problems.assert_none()


def test_a_clinician_reads_a_specialist_only_case_without_any_ai_control(
    page: Page, page_problems: PageProblems, live_server: Any, users: dict[str, Any], specialist_case: Case
) -> None:
    clinician = users[Role.CLINICIAN_READER]
    task = specialist_case.task()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    logged_in(page, live_server, clinician, PASSWORD)
    open_case(page, live_server, task.pk)
    page.locator("#viewer canvas").first.wait_for()
    for selector in ("#ai-panel", "#viewer[data-ai-api]"):
        assert page.locator(selector).count() == 0
    assert page.get_by_label("Contour").count() == 0 and page.get_by_label("Heat map").count() == 0
    assert "AI second opinion" not in page.content()
    fill_read(page, valid_read("thyroid"))
    sign(page)
    task.refresh_from_db()
    assert task.status == TaskStatus.DONE
    assert page.locator("#ai-panel").count() == 0
    assert not [url for url in requested if "/ai/" in url]
    assert not AiDisplay.objects.filter(task=task).exists()
    screenshot(page, "reading-specialist-only-signed")
    page_problems.assert_none()


def test_a_blinded_reader_receives_no_arm_identity_or_ai_data(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    users: dict[str, Any],
    panel: list[Any],
    ai_case: Case,
) -> None:
    task = ai_case.tasks("panel")[0]
    reader = task.assignee
    bodies: list[tuple[str, str]] = []

    def keep(response: Response) -> None:
        kind = response.headers.get("content-type", "")
        if "/static/" in response.url or not ("html" in kind or "json" in kind):
            return
        bodies.append((response.url, response.text()))

    page.on("response", keep)
    logged_in(page, live_server, reader, PASSWORD)
    page.goto(f"{live_server.url}{reverse('readings:worklist')}")
    screenshot(page, "reading-worklist-blinded")
    open_case(page, live_server, task.pk)
    page.locator("#viewer canvas").first.wait_for()
    page.wait_for_load_state("networkidle")
    screenshot(page, "reading-blinded-case")
    fill_read(page, valid_read("thyroid"))
    sign(page)
    page.wait_for_load_state("networkidle")
    task.refresh_from_db()
    assert task.status == TaskStatus.DONE

    participant = ai_case.participant
    forbidden = (*ARM_TEXTS, *AI_TEXTS, participant.study_id, participant.site.name, f"{participant.site.code}-")
    assert bodies, "no page or data response was seen"
    for url, body in bodies:
        for text in forbidden:
            assert text not in body, f"{url} carries {text!r}"
    for url, body in bodies:
        if body.lstrip().startswith("{"):
            keys = json.dumps(json.loads(body))
            assert '"arm"' not in keys and '"ai_' not in keys, url
    assert page.locator("#ai-panel").count() == 0
    page_problems.assert_none()
