"""The trial end to end, one browser test per role, in Chromium against the
live server and one real Celery worker (`celery -A config worker -Q
inference,reports`) on a real Redis broker, shared by the whole module:

- a coordinator screens a person, records eligibility and consent,
  randomizes and uploads an image; the AI analysis state appears on the
  page without a reload, computed by the worker with the shipped checkpoint;
- a clinician reader of the AI-assisted arm reads unaided, signs, sees the
  AI second opinion, reads again and signs;
- a blinded panel reader reads a case with nothing of arm, identity or AI;
- a blinded statistician requests an open report, watches it being built
  by the worker and downloads the PDF;
- a DSMB member opens the closed report the worker built and downloads it;
- a monitor browses and filters the audit trail, opens a participant's
  timeline and exports the audit trail as CSV;
- a pathologist records a reference-standard result, blind to the arm;
- a trial admin changes the reading policy (and a value out of range is refused).

Screenshots of each step go to the artifacts folder (tests/browser.py).

The worker is started once for the module, on the test database and a
media folder every test here shares (the live server and the test set the
same MEDIA_ROOT); each test is transactional (live_server), so the worker
sees the rows the test commits, and the database is emptied between tests
while the worker waits idle for its next job: a test that gave the worker a
job waits for it to end (results with their exports, reports built).
The worker's log is kept beside the screenshots (e2e-worker.log)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Download, Page, Response, expect

from ai_engine import services as ai_services
from ai_engine.models import AiResult, AiResultStatus, ModelVersion
from analysis.models import Report, ReportKind, ReportStatus
from analysis.simulation import SimulationConfig, simulate_trial
from config.workers import start_worker
from imaging.models import Image
from randomization.models import Allocation, Arm
from readings.models import AiDisplay, Phase, Read, ReadStatus, TaskStatus
from readings.selectors import case_label
from tests.browser import PageProblems, artifacts_dir, logged_in, screenshot
from tests.celery_worker import Worker, publishing_to, redis_url, wait_until, worker_environment
from tests.conftest import PASSWORD, actor_for
from tests.imaging_files import real_dicom
from tests.reading_fixtures import Case
from tests.test_browser_readings import AI_TEXTS, ARM_TEXTS, fill_read, sign
from trial.audit import verify_chain
from trial.models import AuditEvent, Participant, Role, Trial
from trial.views.audit import AUDIT_CSV_COLUMNS

# Inference of one image on one CPU thread takes seconds; a report of a
# small trial as long. The limits leave room for a machine that is busy.
AI_TIMEOUT_S = 120
REPORT_TIMEOUT_S = 120
FINAL_AI_STATES = (AiResultStatus.DONE, AiResultStatus.ABSTAINED)
ULTRASOUND = "examples_ybr_color.dcm"  # pydicom's real colour cine, with pixel spacing


# --- One worker for the module --------------------------------------------------------


@pytest.fixture(scope="module")
def shared_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-media")


@pytest.fixture(scope="module")
def module_broker() -> Iterator[str]:
    """Redis, in this test process's own database index, for the module."""
    url = redis_url()
    client = redis.Redis.from_url(url)
    client.ping()
    client.flushdb()
    with publishing_to(url):
        yield url
    client.flushdb()


@pytest.fixture(scope="module")
def worker(
    django_db_setup: Any, module_broker: str, shared_media: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """A real worker of both queues on the test database (set up by
    django_db_setup) and the module's media folder."""
    log_path = tmp_path_factory.mktemp("e2e-worker") / "worker.log"
    process = start_worker(
        env=worker_environment(module_broker, MEDIA_ROOT=str(shared_media)),
        log_path=log_path,
        hostname="e2e@%h",
    )
    running = Worker(process, log_path)
    try:
        running.wait_for_log("ready.")
        yield running
    finally:
        running.stop()
        # The worker's log beside the screenshots: what it did, for the record.
        folder = artifacts_dir()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "e2e-worker.log").write_text(running.log())


@pytest.fixture
def media(settings: Any, shared_media: Path) -> Path:
    """This test, its live server and the worker store files in one place."""
    settings.MEDIA_ROOT = shared_media
    return shared_media


# --- Shared set-up --------------------------------------------------------------------


def _deploy(trial: Trial, admin: Any, indication: str) -> ModelVersion:
    key = "thyroid" if indication == "thyroid" else "cervical"
    model_version = ai_services.model_register(
        actor=ai_services.AI_ENGINE,
        path=ai_services.SHIPPED_CHECKPOINTS[key],
        name=f"combined-{key}-synthetic",
        version="1.0",
        indication=indication,
    )
    ai_services.model_activate(
        actor=actor_for(admin), trial=trial, model_version=model_version, reason="Deployed for the test"
    )
    return model_version


@pytest.fixture
def thyroid_model(media: Path, recruiting: Trial, users: dict[str, Any]) -> ModelVersion:
    """The shipped thyroid checkpoint, deployed: accepted images go to the worker."""
    return _deploy(recruiting, users[Role.TRIAL_ADMIN], "thyroid")


def _finished(images: list[Image]) -> list[AiResult]:
    """The images' AI results once every one is judged and its exports
    made (the worker's last step); [] before."""
    results = list(AiResult.objects.filter(image__in=images).select_related("model_version"))
    if len(results) < len(images):
        return []
    if any(r.status not in FINAL_AI_STATES or ai_services.exports_pending(r) for r in results):
        return []
    return results


@pytest.fixture
def worker_case(worker: Worker, thyroid_model: ModelVersion, make_case: Callable[..., Case]) -> Callable[[str], Case]:
    """worker_case(arm): a thyroid participant of `arm` with pydicom's cine
    accepted and judged by the worker."""

    def make(arm: str) -> Case:
        case = make_case(arm, ai=False)
        results = wait_until(
            lambda: _finished(case.images), timeout=AI_TIMEOUT_S, what="the worker's AI result", worker=worker
        )
        assert {r.model_version_id for r in results} == {thyroid_model.pk}
        case.ai_results = results
        return case

    return make


@pytest.fixture
def simulated_trial(media: Path) -> Trial:
    """A small simulated trial with reads and reference results: something to report on."""
    config = SimulationConfig(participants=12, seed=3, trial_code="E2E-REPORTS", ai_model=False)
    return simulate_trial(config).trial


def request_report(page: Page, trial: Trial, kind: str) -> None:
    page.get_by_label("Trial:", exact=True).select_option(label=f"{trial.code} — {trial.title}")
    page.get_by_label("Report:", exact=True).select_option(kind)
    with page.expect_navigation():
        page.get_by_role("button", name="Request", exact=True).click()


def download(page: Page, page_problems: PageProblems, link_name: str, save_as: Path) -> Download:
    """Click the link to a file the server sends as an attachment and keep
    the file. Chromium reports the navigation that became a download as
    aborted (net::ERR_ABORTED): that one report is no problem, any other is."""
    with page.expect_download() as started:
        page.get_by_role("link", name=link_name).click()
    file = started.value
    file.save_as(save_as)
    assert file.failure() is None
    aborted = f"GET {file.url}: net::ERR_ABORTED"
    if aborted in page_problems.failed_requests:
        page_problems.failed_requests.remove(aborted)
    return file


def download_pdf_text(page: Page, page_problems: PageProblems, link_name: str, save_as: Path) -> str:
    download(page, page_problems, link_name, save_as)
    data = save_as.read_bytes()
    assert data.startswith(b"%PDF-"), data[:20]
    text = subprocess.run(["pdftotext", str(save_as), "-"], capture_output=True, text=True, check=True).stdout
    return text


def menu(page: Page, name: str) -> None:
    with page.expect_navigation():
        page.get_by_role("navigation", name="Main menu").get_by_role("link", name=name, exact=True).click()


# --- Coordinator ----------------------------------------------------------------------


def test_a_coordinator_screens_consents_randomizes_and_uploads_and_the_ai_state_follows_live(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    users: dict[str, Any],
    coordinator: Any,
    block_scheme: Any,
    thyroid_model: ModelVersion,
    worker: Worker,
    tmp_path: Path,
) -> None:
    logged_in(page, live_server, coordinator, PASSWORD)

    # Screening.
    menu(page, "Screen a person")
    page.get_by_label("Screening date").fill((timezone.localdate() - dt.timedelta(days=1)).isoformat())
    page.get_by_label("Indication").select_option("thyroid")
    page.get_by_label("Year of birth").fill("1979")
    page.get_by_label("Sex").select_option("female")
    screenshot(page, "e2e-coordinator-1-screening")
    with page.expect_navigation():
        page.get_by_role("button", name="Record screening").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Screening entry")

    # Eligibility: every inclusion criterion met, no exclusion.
    for code, answer in (("IN1", "yes"), ("IN3", "yes"), ("EX1", "no")):
        page.locator(f"input[name='criterion_{code}'][value='{answer}']").check()
    with page.expect_navigation():
        page.get_by_role("button", name="Record eligibility").click()
    expect(page.locator(".badge.status-eligible").first).to_be_visible()
    screenshot(page, "e2e-coordinator-2-eligible")

    # Consent and enrollment.
    consented = (timezone.now() - dt.timedelta(hours=1)).astimezone(dt.UTC)
    page.get_by_label("Consent form version").fill("1.0")
    page.get_by_label("Consent date and time (UTC)").fill(consented.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Consent taken by").select_option(label=coordinator.username)
    page.get_by_label("Nodule size band").select_option("20-39")
    with page.expect_navigation():
        page.get_by_role("button", name="Record consent and enroll").click()
    participant = Participant.objects.get()
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Participant {participant.study_id}")
    screenshot(page, "e2e-coordinator-3-enrolled")

    # Randomization.
    with page.expect_navigation():
        page.get_by_role("link", name="Randomize…").click()
    with page.expect_navigation():
        page.get_by_role("button", name=f"Randomize {participant.study_id} now").click()
    allocation = Allocation.objects.get(participant=participant)
    expect(page.locator("#allocation")).to_contain_text(f"#{allocation.sequence_number}")
    screenshot(page, "e2e-coordinator-4-randomized")

    # Upload in the browser; the AI state then follows without a reload.
    with page.expect_navigation():
        page.get_by_role("link", name="Images", exact=True).click()
    section = page.locator("#ai-analysis")
    expect(section).to_contain_text("No images yet.")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    status_bodies: list[str] = []

    def keep_status(response: Response) -> None:
        if "/ai-status/" in response.url and response.status == 200:
            status_bodies.append(response.text())

    page.on("response", keep_status)
    scan = tmp_path / "thyroid-scan.dcm"
    scan.write_bytes(real_dicom(ULTRASOUND))
    page.locator("form[data-upload-url] input[type=file]").set_input_files(str(scan))
    expect(page.locator("[data-upload-results] .upload-status")).to_have_text("accepted", timeout=30_000)
    [image] = Image.objects.filter(participant=participant)
    badge = section.locator(f"tr[data-ai-image='{image.pk}'] [data-ai-state]")
    expect(badge).to_be_visible()
    screenshot(page, "e2e-coordinator-5-uploaded")
    expect(badge).to_have_attribute("data-ai-state", re.compile("^(done|abstained)$"), timeout=AI_TIMEOUT_S * 1000)
    # The worker's last step (the exports) done, so the database is emptied after it.
    [result] = wait_until(lambda: _finished([image]), timeout=AI_TIMEOUT_S, what="the AI exports", worker=worker)
    assert result.model_version_id == thyroid_model.pk
    assert result.claimed_by and "ai_engine.run_inference" in worker.log()
    expect(badge).to_have_text({"done": "Done", "abstained": "Abstained (image unfit for the model)"}[result.status])
    assert navigations == [], navigations  # no reload, by hand or by script
    screenshot(page, "e2e-coordinator-6-ai-done")

    # The coordinator saw where the work stood, never what the AI said.
    assert status_bodies
    page_text = page.content()
    for body in (*status_bodies, page_text):
        for output in (result.category, result.model_version.sha256, "measurements", "category", "probability"):
            assert not output or output not in body, output
    assert page.locator("script:not([src])").count() == 0
    assert verify_chain().ok
    page_problems.assert_none()


# --- Clinician reader (AI-assisted arm) -----------------------------------------------


def test_a_clinician_reads_from_the_worklist_unaided_then_with_the_ai_second_opinion(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    users: dict[str, Any],
    worker_case: Callable[[str], Case],
) -> None:
    case = worker_case(Arm.AI_ASSISTED)
    task = case.task()
    clinician = users[Role.CLINICIAN_READER]
    logged_in(page, live_server, clinician, PASSWORD)
    menu(page, "Reading")
    screenshot(page, "e2e-clinician-1-worklist")
    with page.expect_navigation():
        page.get_by_role("link", name=case.participant.study_id, exact=True).click()
    start = page.get_by_role("button", name="Start reading")
    if start.count():
        with page.expect_navigation():
            start.click()
    page.locator("#viewer canvas").first.wait_for()
    assert page.locator("#ai-panel").count() == 0  # nothing of the AI before the unaided read is signed
    unaided = {
        "composition": "solid",
        "echogenicity": "hypoechoic",
        "shape": "wider_than_tall",
        "margin": "smooth",
        "echogenic_foci": ["none"],
        "largest_diameter_mm": 18,
        "cancer_suspected": False,
        "confidence": 3,
        "time_spent_s": 80,
        "note": "",
    }
    fill_read(page, unaided)
    screenshot(page, "e2e-clinician-2-unaided")
    sign(page)
    assert Read.objects.get(task=task, phase=Phase.UNAIDED).status == ReadStatus.SIGNED

    [result] = case.ai_results
    panel = page.locator("#ai-panel")
    expect(panel).to_contain_text(result.model_version.name)
    if result.status == AiResultStatus.DONE:
        with page.expect_response(lambda r: "/ai/" in r.url and r.url.endswith("contour.png")) as layer:
            page.get_by_label("Contour").check()
        assert layer.value.status == 200
    screenshot(page, "e2e-clinician-3-ai-second-opinion")

    fill_read(page, {**unaided, "margin": "lobulated_irregular", "confidence": 4})
    sign(page)
    task.refresh_from_db()
    assert task.status == TaskStatus.DONE
    final = Read.objects.get(task=task, phase=Phase.FINAL, current=True)
    assert final.status == ReadStatus.SIGNED and final.interaction["ai_viewed"] is True
    assert "margin" in final.interaction["changed_fields"]
    assert AiDisplay.objects.filter(task=task).exists()
    screenshot(page, "e2e-clinician-4-signed")
    assert verify_chain().ok
    page_problems.assert_none()


# --- Blinded panel reader -------------------------------------------------------------


def test_a_blinded_panel_reader_reads_a_case_from_the_worklist_blind_to_arm_identity_and_ai(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    panel: list[Any],
    worker_case: Callable[[str], Case],
) -> None:
    case = worker_case(Arm.AI_ASSISTED)
    task = case.tasks("panel")[0]
    bodies: list[tuple[str, str]] = []

    def keep(response: Response) -> None:
        kind = response.headers.get("content-type", "")
        if "/static/" not in response.url and ("html" in kind or "json" in kind):
            bodies.append((response.url, response.text()))

    page.on("response", keep)
    logged_in(page, live_server, task.assignee, PASSWORD)
    menu(page, "Reading")
    screenshot(page, "e2e-blinded-1-worklist")
    with page.expect_navigation():
        page.get_by_role("link", name=case_label(task), exact=True).click()
    start = page.get_by_role("button", name="Start reading")
    if start.count():
        with page.expect_navigation():
            start.click()
    page.locator("#viewer canvas").first.wait_for()
    page.wait_for_load_state("networkidle")
    screenshot(page, "e2e-blinded-2-case")
    fill_read(
        page,
        {
            "composition": "mixed_cystic_solid",
            "echogenicity": "hyperechoic_isoechoic",
            "shape": "wider_than_tall",
            "margin": "smooth",
            "echogenic_foci": ["none"],
            "largest_diameter_mm": 12,
            "cancer_suspected": False,
            "confidence": 4,
            "time_spent_s": 70,
            "note": "",
        },
    )
    sign(page)
    page.wait_for_load_state("networkidle")
    task.refresh_from_db()
    assert task.status == TaskStatus.DONE
    screenshot(page, "e2e-blinded-3-signed")

    participant = case.participant
    forbidden = (*ARM_TEXTS, *AI_TEXTS, participant.study_id, participant.site.name, f"{participant.site.code}-")
    assert bodies
    for url, body in bodies:
        for text in forbidden:
            assert text not in body, f"{url} carries {text!r}"
    assert page.locator("#ai-panel").count() == 0
    page_problems.assert_none()


# --- Statistician (blinded): an open report -------------------------------------------


def test_a_statistician_requests_an_open_report_built_by_the_worker_and_downloads_the_pdf(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    make_user: Callable[..., Any],
    simulated_trial: Trial,
    worker: Worker,
    tmp_path: Path,
) -> None:
    statistician = make_user("e2e-statistician", Role.STATISTICIAN_BLINDED, trial=simulated_trial)
    logged_in(page, live_server, statistician, PASSWORD)
    menu(page, "Reports")
    # A blinded statistician is offered open reports only.
    options = page.get_by_label("Report:", exact=True).locator("option").all_inner_texts()
    assert options == [ReportKind.OPEN.label], options
    request_report(page, simulated_trial, ReportKind.OPEN)
    report = Report.objects.get(trial=simulated_trial)
    assert report.kind == ReportKind.OPEN and report.requested_by_id == statistician.pk
    row = page.locator(f"tr[data-report-status-url='{reverse('analysis:report_status', args=[report.pk])}']")
    expect(row).to_be_visible()
    screenshot(page, "e2e-statistician-1-requested")

    # report_progress.js follows the build and reloads the page once it is done.
    link = row.get_by_role("link", name="Download PDF")
    expect(link).to_be_visible(timeout=REPORT_TIMEOUT_S * 1000)
    expect(row.locator("[data-role=status]")).to_have_text("Done")
    report.refresh_from_db()
    assert report.status == ReportStatus.DONE and "analysis.build_report" in worker.log()
    screenshot(page, "e2e-statistician-2-done")

    text = download_pdf_text(page, page_problems, "Download PDF", tmp_path / "open.pdf")
    assert f"{simulated_trial.code}: analysis report" in text
    assert "OPEN REPORT: pooled over both arms" in text and "CLOSED REPORT" not in text
    assert statistician.username in text and report.data_hash in text.replace("\n", "")
    assert AuditEvent.objects.filter(action="analysis.report_download", actor_id=statistician.pk).count() == 1
    page_problems.assert_none()


# --- DSMB member: the closed report ---------------------------------------------------


def test_a_dsmb_member_opens_the_closed_report_the_worker_built_and_downloads_it(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    make_user: Callable[..., Any],
    simulated_trial: Trial,
    worker: Worker,
    tmp_path: Path,
) -> None:
    from analysis import services as analysis_services

    dsmb = make_user("e2e-dsmb", Role.DSMB, trial=simulated_trial)
    report = analysis_services.report_request(actor=actor_for(dsmb), trial=simulated_trial, kind=ReportKind.CLOSED)

    def built() -> bool:
        report.refresh_from_db()
        return report.finished

    wait_until(built, timeout=REPORT_TIMEOUT_S, what="the closed report", worker=worker)
    assert report.status == ReportStatus.DONE, report.error

    logged_in(page, live_server, dsmb, PASSWORD)
    menu(page, "Reports")
    row = page.locator(f"tr[data-report-status-url='{reverse('analysis:report_status', args=[report.pk])}']")
    expect(row).to_contain_text(ReportKind.CLOSED.label)
    expect(row.locator("[data-role=status]")).to_have_text("Done")
    screenshot(page, "e2e-dsmb-1-reports")

    text = download_pdf_text(page, page_problems, "Download PDF", tmp_path / "closed.pdf")
    assert f"{simulated_trial.code}: analysis report" in text
    assert "CLOSED REPORT: results by arm" in text
    assert AuditEvent.objects.filter(action="analysis.report_download", actor_id=dsmb.pk).count() == 1
    page_problems.assert_none()


# --- Monitor: the audit trail ---------------------------------------------------------


def test_a_monitor_filters_the_audit_trail_opens_a_timeline_and_exports_the_csv(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    users: dict[str, Any],
    enroll: Callable[..., Participant],
    block_scheme: Any,
    coordinator: Any,
    coordinator_b: Any,
    site_b: Any,
) -> None:
    from randomization.services import participant_randomize

    here = [enroll(), enroll(indication="thyroid")]
    elsewhere = enroll(site=site_b, user=coordinator_b)
    participant_randomize(actor=actor_for(coordinator), participant=here[0])
    monitor = users[Role.MONITOR]

    logged_in(page, live_server, monitor, PASSWORD)
    menu(page, "Audit trail")
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit trail")
    screenshot(page, "e2e-monitor-1-audit")

    page.get_by_label("Action").fill("participant.enroll")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(len(here))
    assert set(rows.locator("td:nth-child(5)").all_inner_texts()) == {"participant.enroll"}
    table = page.locator("table.audit").inner_text()
    assert all(p.study_id in table for p in here) and elsewhere.study_id not in table
    screenshot(page, "e2e-monitor-2-filtered")

    # The export takes the same filter.
    saved = artifacts_dir() / "e2e-monitor-audit.csv"
    saved.parent.mkdir(parents=True, exist_ok=True)
    exported_file = download(page, page_problems, "Export CSV", saved)
    assert re.fullmatch(r"consilium-audit-\d{8}T\d{6}Z\.csv", exported_file.suggested_filename)
    assert "action=participant.enroll" in exported_file.url
    exported = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert list(exported[0]) == AUDIT_CSV_COLUMNS
    assert {row["action"] for row in exported} == {"participant.enroll"}
    assert sorted(row["object_label"] for row in exported) == sorted(p.study_id for p in here)
    events = AuditEvent.objects.filter(action="participant.enroll").exclude(site=site_b)
    assert sorted(row["hash"] for row in exported) == sorted(events.values_list("hash", flat=True))
    assert all(row["site"] == "C01" and row["actor"] == coordinator.username for row in exported)

    # A participant's timeline.
    menu(page, "Participants")
    with page.expect_navigation():
        page.get_by_role("link", name=here[0].study_id, exact=True).click()
    timeline = page.locator("table.timeline")
    for action in ("participant.enroll", "randomization.allocate"):
        expect(timeline).to_contain_text(action)
    screenshot(page, "e2e-monitor-3-timeline")
    page_problems.assert_none()


# --- Pathologist: a reference-standard result -----------------------------------------


def test_a_pathologist_records_a_reference_result_blind_to_the_arm(
    page: Page,
    page_problems: PageProblems,
    live_server: Any,
    users: dict[str, Any],
    enroll: Callable[..., Participant],
    block_scheme: Any,
    coordinator: Any,
) -> None:
    from randomization.services import participant_randomize

    participant = enroll(indication="thyroid")
    participant_randomize(actor=actor_for(coordinator), participant=participant)
    pathologist = users[Role.PATHOLOGIST]
    logged_in(page, live_server, pathologist, PASSWORD)
    menu(page, "Participants")
    with page.expect_navigation():
        page.get_by_role("link", name=participant.study_id, exact=True).click()
    expect(page.locator("#allocation")).to_contain_text("Your role stays blind to the arm by protocol.")

    sampled = timezone.localdate() - dt.timedelta(days=2)
    page.get_by_label("Kind of result").select_option(label="Thyroid cytology (FNA)")
    page.get_by_label("Sample date").fill(sampled.isoformat())
    page.get_by_label("Result date").fill((sampled + dt.timedelta(days=1)).isoformat())
    page.get_by_label("Bethesda category").select_option(label="II — Benign")
    page.get_by_label("Notes").fill("Benign follicular nodule.")
    screenshot(page, "e2e-pathologist-1-form")
    with page.expect_navigation():
        page.get_by_role("button", name="Record result").click()
    reference = page.locator("#reference-standard")
    expect(reference).to_contain_text("Thyroid cytology (FNA)")
    expect(reference).to_contain_text("Benign follicular nodule.")
    screenshot(page, "e2e-pathologist-2-recorded")

    [result] = participant.reference_results.all()
    assert result.bethesda_category == 2 and result.recorded_by_id == pathologist.pk
    event = AuditEvent.objects.get(action="reference_result.record")
    assert event.actor_id == pathologist.pk and event.role == Role.PATHOLOGIST
    content = page.content()
    for text in ARM_TEXTS:
        assert text not in content, text
    page_problems.assert_none()


# --- Trial admin: the reading policy --------------------------------------------------


def test_a_trial_admin_changes_the_reading_policy(
    page: Page, page_problems: PageProblems, live_server: Any, users: dict[str, Any], recruiting: Trial
) -> None:
    from readings.services import reading_policy_for

    admin = users[Role.TRIAL_ADMIN]
    logged_in(page, live_server, admin, PASSWORD)
    menu(page, "Reading oversight")
    with page.expect_navigation():
        page.get_by_role("link", name=f"Reading policy · {recruiting.code}").click()
    screenshot(page, "e2e-admin-1-policy")

    page.get_by_label("Share of cases read by the panel").fill("0.5")
    page.get_by_label("Panel readers per case").fill("3")
    page.get_by_label("Wash-out before a re-read (days)").fill("28")
    with page.expect_navigation():
        page.get_by_role("button", name="Save the policy").click()
    expect(page.get_by_text("Reading policy saved.")).to_be_visible()
    expect(page.get_by_label("Panel readers per case")).to_have_value("3")
    screenshot(page, "e2e-admin-2-policy-saved")

    policy = reading_policy_for(recruiting)
    assert (policy.panel_fraction, policy.panel_readers_per_case, policy.washout_days) == (0.5, 3, 28)
    event = AuditEvent.objects.get(action="reading_policy.change")
    assert event.actor_id == admin.pk
    assert event.before is not None and event.after is not None
    assert event.after["panel_readers_per_case"] == 3 and event.before["panel_readers_per_case"] != 3

    # A value out of range is refused with the field's message; nothing changes.
    page.get_by_label("Panel readers per case").fill("11")
    with page.expect_navigation():
        page.get_by_role("button", name="Save the policy").click()
    expect(page.locator(".field-error").first).to_be_visible()
    screenshot(page, "e2e-admin-3-policy-refused")
    assert reading_policy_for(recruiting).panel_readers_per_case == 3
    assert AuditEvent.objects.filter(action="reading_policy.change").count() == 1
    # The refusal is the one expected problem: a 400 answer, which Chromium also logs.
    url = f"{live_server.url}{reverse('readings:policy', args=[recruiting.pk])}"
    page_problems.failed_requests.remove(f"POST {url} → 400")
    page_problems.console_errors.remove(
        f"Failed to load resource: the server responded with a status of 400 (Bad Request) ({url})"
    )
    page_problems.assert_none()
