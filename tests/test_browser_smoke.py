"""First browser tests (tests/browser.py): the login, a coordinator's
participants, the AI operations page for a trial admin and its refusal to a
coordinator, in a real Chromium against the live server. Each saves
screenshots under the artifacts folder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.urls import reverse
from playwright.sync_api import Page, Response

from ai_engine import services as ai_services
from ai_engine.views import REFRESH_SECONDS
from imaging import services as imaging_services
from randomization.models import Allocation, Arm
from tests.browser import PageProblems, logged_in, screenshot
from tests.conftest import PASSWORD, actor_for
from tests.imaging_files import randomized, ultrasound_dicom
from trial.models import Indication, Participant, Role

ARM_TEXTS = [Arm.AI_ASSISTED.label, Arm.SPECIALIST_ONLY.label, Arm.AI_ASSISTED.value, Arm.SPECIALIST_ONLY.value]

# The page asks for no inline script, event handler or style attribute: a
# Content-Security-Policy without 'unsafe-inline' blocks none of it.
INLINE_CODE = """() => ({
  scripts: document.querySelectorAll("script:not([src])").length,
  handlers: [...document.querySelectorAll("*")].filter(
    (element) => [...element.attributes].some((attribute) => attribute.name.startsWith("on"))
  ).length,
  styles: document.querySelectorAll("[style]").length,
})"""


def assert_security_headers(response: Response | None) -> None:
    """The headers config/settings.py asks of Django's security middleware,
    and the request id of trial.middleware."""
    assert response is not None
    headers = response.headers
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert len(headers["x-request-id"]) == 32
    policy = headers.get("content-security-policy")
    if policy is not None:
        directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
        scripts = directives.get("script-src", directives.get("default-src"))
        assert scripts is not None and "'unsafe-inline'" not in scripts, policy


def assert_no_inline_code(page: Page) -> None:
    assert page.evaluate(INLINE_CODE) == {"scripts": 0, "handlers": 0, "styles": 0}


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def test_the_login_refuses_a_wrong_password_and_signs_in_with_the_right_one(
    page: Page, page_problems: PageProblems, live_server: Any, coordinator: Any
) -> None:
    response = page.goto(f"{live_server.url}{reverse('login')}")
    assert response is not None and response.status == 200
    assert_security_headers(response)
    assert page.title() == "Sign in · Consilium"
    assert page.get_by_role("heading", name="Sign in").is_visible()
    assert page.locator("link[rel=stylesheet]").evaluate("link => link.sheet.cssRules.length") > 0
    assert_no_inline_code(page)
    screenshot(page, "login-page")

    page.get_by_label("Username").fill(coordinator.username)
    page.get_by_label("Password").fill("not-the-password-1")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Sign in").click()
    assert navigation.value is not None and navigation.value.status == 200
    assert path_of(page) == reverse("login")
    assert page.get_by_role("alert").inner_text().startswith("Please enter a correct username and password.")
    assert page.get_by_label("Username").input_value() == coordinator.username
    assert page.get_by_label("Password").input_value() == ""
    screenshot(page, "login-wrong-password")

    logged_in(page, live_server, coordinator, PASSWORD)
    assert path_of(page) == reverse("trial:dashboard")
    assert page.locator(".who-name").inner_text() == coordinator.username
    assert page.get_by_role("navigation", name="Main menu").get_by_role("link", name="Participants").is_visible()
    assert_no_inline_code(page)
    [session] = [cookie for cookie in page.context.cookies() if cookie["name"] == "sessionid"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert session["expires"] == -1  # ends with the browser
    screenshot(page, "home-after-login")
    page_problems.assert_none()


def test_a_coordinator_sees_the_participants_of_their_site_and_opens_one(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    coordinator: Any,
    coordinator_b: Any,
    site_b: Any,
    enroll: Callable[..., Participant],
) -> None:
    cervical = enroll()
    thyroid = enroll(indication=Indication.THYROID)
    elsewhere = enroll(site=site_b, user=coordinator_b)

    logged_in(page, live_server, coordinator, PASSWORD)
    page.get_by_role("navigation", name="Main menu").get_by_role("link", name="Participants").click()
    page.wait_for_url(f"{live_server.url}{reverse('trial:participant_list')}")
    assert page.get_by_role("heading", name="Participants", exact=True).is_visible()
    rows = page.locator("table.table tbody tr")
    assert sorted(rows.locator("td:first-child").all_inner_texts()) == sorted([cervical.study_id, thyroid.study_id])
    assert elsewhere.study_id not in page.content()
    assert_no_inline_code(page)
    screenshot(page, "participant-list")

    page.get_by_role("link", name=thyroid.study_id, exact=True).click()
    page.wait_for_url(f"{live_server.url}{reverse('trial:participant_detail', args=[thyroid.pk])}")
    assert page.get_by_role("heading", level=1).inner_text().startswith(f"Participant {thyroid.study_id}")
    details = page.locator("dl.details").first
    assert "Thyroid nodule/cancer (ultrasound)" in details.inner_text()
    assert "C01 Site A" in details.inner_text()
    assert_no_inline_code(page)
    screenshot(page, "participant-detail")
    page_problems.assert_none()


def test_a_trial_admin_sees_the_ai_operations_without_any_arm(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    users: dict[str, Any],
    coordinator: Any,
    block_scheme: Any,
    enroll: Callable[..., Participant],
) -> None:
    model_version = ai_services.model_register(
        actor=ai_services.AI_ENGINE,
        path=ai_services.SHIPPED_CHECKPOINT,
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )
    # Participants of both arms, each with an image and its AI result; one failed.
    participants: list[Participant] = []
    while set(Allocation.objects.values_list("arm", flat=True)) != set(Arm.values):
        participants.append(randomized(enroll(indication=Indication.THYROID), coordinator))
    results = []
    for participant in participants:
        upload = imaging_services.image_upload(
            actor=actor_for(coordinator), participant=participant, name="scan.dcm", data=ultrasound_dicom()
        )
        assert upload.image is not None
        results.append(ai_services.ai_result_queue(image=upload.image, model_version=model_version))
    ai_services.ai_result_fail(result=ai_services.ai_result_start(result=results[0]), reason="bad-input: truncated")

    logged_in(page, live_server, users[Role.TRIAL_ADMIN], PASSWORD)
    page.get_by_role("navigation", name="Main menu").get_by_role("link", name="AI operations").click()
    page.wait_for_url(f"{live_server.url}{reverse('ai_engine:operations', args=['CONSILIUM'])}")
    assert page.get_by_role("heading", level=1).inner_text().startswith("AI operations · CONSILIUM")
    assert page.locator("meta[http-equiv=refresh]").get_attribute("content") == str(REFRESH_SECONDS)

    statuses = page.locator("#statuses table")
    assert statuses.is_visible()
    counts = {
        row.locator("td .badge").inner_text(): int(row.locator("td.num").inner_text())
        for row in statuses.locator("tbody tr").all()
    }
    assert counts == {
        "queued": len(participants) - 1,
        "running": 0,
        "done": 0,
        "failed": 1,
        "abstained": 0,
        "cancelled": 0,
    }
    assert statuses.locator("tfoot td, tfoot th").last.inner_text() == str(len(participants))
    failures = page.locator("#failures tbody").inner_text()
    assert participants[0].study_id in failures and "bad-input: truncated" in failures

    text = page.locator("body").inner_text()
    for arm in ARM_TEXTS:
        assert arm not in text, arm
        assert arm not in page.content(), arm
    assert_no_inline_code(page)
    screenshot(page, "ai-operations")
    page_problems.assert_none()


def test_a_coordinator_gets_the_access_denied_page_for_ai_operations(
    page: Page, page_problems: PageProblems, live_server: Any, coordinator: Any
) -> None:
    logged_in(page, live_server, coordinator, PASSWORD)
    assert page.get_by_role("link", name="AI operations").count() == 0
    url = f"{live_server.url}{reverse('ai_engine:operations_index')}"
    response = page.goto(url)
    assert response is not None and response.status == 403
    assert_security_headers(response)
    assert page.get_by_role("heading", level=1).inner_text() == "Access denied"
    assert page.get_by_role("link", name="Back to the start page").is_visible()
    screenshot(page, "ai-operations-forbidden")
    assert page_problems.failed_requests == [f"GET {url} → 403"]
    assert page_problems.console_errors == [
        f"Failed to load resource: the server responded with a status of 403 (Forbidden) ({url})"
    ]
    assert page_problems.page_errors == []
