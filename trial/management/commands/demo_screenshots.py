"""Screenshots of the main pages of a running demo (`make demo`), for the
README: Playwright drives Debian's Chromium (/usr/bin/chromium), signs in as
the demo users through the login form, and saves one PNG per page (the
window, not the whole page) under docs/screenshots/.

The pages are chosen from the demo trial in this project's database (the
one the server uses): a participant of the AI-assisted arm left in the middle
of being read (seed_demo --readings), their images, their final clinical
read with the AI second opinion, a blinded panel case opened by its reader,
the interim reports, the audit trail. Pages are only opened, as their users
would open them (the reading page records that the AI second opinion was
shown, as it does for anyone).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Case, When
from django.urls import reverse
from PIL import Image as PILImage
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, ViewportSize, sync_playwright

from config.workers import BASE_DIR
from readings.models import ReadingTask, TaskKind, TaskStatus
from trial.management.commands.seed_demo import PASSWORDS, TRIAL_CODE
from trial.models import Trial

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
TIMEOUT_MS = 30_000
LOADING = re.compile("Loading")


@dataclass(frozen=True)
class Shot:
    name: str  # the PNG's name, without .png
    username: str  # the demo user who looks at the page
    path: str
    caption: str
    height: int = 0  # the window's height for this page, when not the default
    check: str = ""  # the label of a checkbox to tick before the screenshot (an overlay)


class Command(BaseCommand):
    help = "Save screenshots of the main pages of a running demo (make demo) under docs/screenshots/."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="where the demo server answers")
        parser.add_argument(
            "--out", type=Path, default=BASE_DIR / "docs" / "screenshots", help="folder for the PNG files"
        )
        parser.add_argument("--width", type=int, default=1280, help="window width in pixels (default 1280)")
        parser.add_argument("--height", type=int, default=800, help="window height in pixels (default 800)")

    def handle(self, *args: Any, url: str, out: Path, width: int, height: int, **options: Any) -> None:
        if not (CHROMIUM.is_file()):
            raise CommandError(f"{CHROMIUM} is missing: install Debian's chromium package.")
        shots = demo_shots()
        out.mkdir(parents=True, exist_ok=True)
        base = url.rstrip("/")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                for shot in shots:
                    viewport: ViewportSize = {"width": width, "height": shot.height or height}
                    context = browser.new_context(viewport=viewport)
                    try:
                        page = context.new_page()
                        page.set_default_timeout(TIMEOUT_MS)
                        _sign_in(page, base, shot.username)
                        response = page.goto(f"{base}{shot.path}", wait_until="networkidle")
                        if response is None or response.status >= 400:
                            status = response.status if response is not None else "no answer"
                            raise CommandError(f"{shot.path} as {shot.username}: {status}")
                        if shot.check:
                            page.get_by_label(shot.check, exact=True).check()
                            # The overlay is fetched once ticked; the panel says so meanwhile.
                            page.locator("#ai-panel").get_by_text(LOADING).wait_for(state="hidden")
                            page.evaluate("window.scrollTo(0, 0)")
                        path = out / f"{shot.name}.png"
                        path.write_bytes(_optimized(page.screenshot(full_page=False)))
                    except PlaywrightError as error:
                        raise CommandError(f"{shot.path} as {shot.username}: {error}") from error
                    finally:
                        context.close()
                    self.stdout.write(f"{path}  ({path.stat().st_size // 1024} KiB)  {shot.caption}")
            finally:
                browser.close()


def demo_shots() -> list[Shot]:
    """The pages to show, picked from the demo trial (finished by demo_server)."""
    trial = Trial.objects.filter(code=TRIAL_CODE).first()
    if trial is None:
        raise CommandError(f"The demo trial {TRIAL_CODE} is not in this database: run make demo first.")
    in_progress = ReadingTask.objects.filter(trial=trial, status=TaskStatus.IN_PROGRESS)
    ai_read = (
        in_progress.filter(kind=TaskKind.CLINICAL, sequential=True, site__code="C01")
        .select_related("participant")
        .first()
    )
    panel_case = (
        in_progress.filter(kind=TaskKind.PANEL)
        .select_related("assignee")
        .order_by(Case(When(assignee__username="reader", then=0), default=1), "pk")
        .first()
    )
    if ai_read is None or panel_case is None or panel_case.assignee is None:
        raise CommandError(
            "The demo trial has no reading in progress at site C01 of the AI-assisted arm: "
            "let demo_server finish the demo trial (it says when) first."
        )
    participant = ai_read.participant
    return [
        Shot("dashboard", "coordinator", reverse("trial:dashboard"), "Recruitment at a site (coordinator)"),
        Shot("screening", "coordinator", reverse("trial:screening_list"), "Screening log of a site (coordinator)"),
        Shot(
            "participant",
            "coordinator",
            reverse("trial:participant_detail", args=[participant.pk]),
            "A participant of the AI-assisted arm (coordinator)",
        ),
        Shot(
            "participant-images",
            "coordinator",
            reverse("imaging:participant_images", args=[participant.pk]),
            "The participant's images and where their AI analysis stands (coordinator)",
        ),
        Shot("worklist", "clinician", reverse("readings:worklist"), "The reading worklist (clinician)"),
        Shot(
            "clinical-read-ai",
            "clinician",
            reverse("readings:task", args=[ai_read.pk]),
            "The final clinical read with the AI second opinion, after the unaided read (clinician)",
            height=1180,
            check="Contour",
        ),
        Shot(
            "panel-case",
            panel_case.assignee.get_username(),
            reverse("readings:task", args=[panel_case.pk]),
            "A blinded panel case: no arm, no site, no AI (blinded reader)",
        ),
        Shot("reports", "dsmb", reverse("analysis:reports"), "The interim reports, open and closed (DSMB member)"),
        Shot("audit-trail", "monitor", reverse("trial:audit_list"), "The audit trail (monitor)"),
    ]


def _sign_in(page: Page, base: str, username: str) -> None:
    login = reverse("login")
    page.goto(f"{base}{login}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORDS[username])
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    if page.url.rstrip("/").endswith(login.rstrip("/")):
        raise CommandError(f"{username} could not sign in at {base}: is this the demo's server and database?")


def _optimized(png: bytes) -> bytes:
    """The screenshot with at most 256 colours (a page has few): a few
    times smaller, the same to the eye."""
    image = PILImage.open(io.BytesIO(png)).convert("RGB")
    buffer = io.BytesIO()
    image.quantize(colors=256, method=PILImage.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
