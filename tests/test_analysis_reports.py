"""Analysis reports: the PDF (every section, an open report without arms),
who may request and download which kind, the build task end to end on a
simulated trial, and the pages (list, JSON status, audited download)."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from analysis import services
from analysis.models import Report, ReportKind, ReportStatus
from analysis.reports.builder import build_report
from analysis.reports.pdf import ReportError, render_report
from analysis.results import POOLED
from analysis.simulation import SimulationConfig, simulate_trial
from tests.analysis_report_factory import ARMS, make_analysis
from tests.conftest import actor_for, login
from trial.errors import NotAllowed, RuleViolation
from trial.models import AuditEvent, Role, Trial

ARM_WORDS = (b"ai_assisted", b"specialist_only", b"AI-assisted", b"Specialist only", b"AI_ASSISTED")
REAL_ARM_ROLES = (Role.DSMB, Role.STATISTICIAN_UNBLINDED, Role.TRIAL_ADMIN)
NO_EXPORT_ROLES = (Role.COORDINATOR, Role.CLINICIAN_READER, Role.BLINDED_READER, Role.PATHOLOGIST, Role.MONITOR)
_STRING = re.compile(rb"\((?:\\.|[^\\)])*\)")


def _page_streams(pdf: bytes) -> list[bytes]:
    """The page streams (not the figures' pixels) of a compressed PDF, decoded."""
    found = re.findall(
        rb"<<\s*/Filter \[ /ASCII85Decode /FlateDecode \] /Length \d+\s*>>\s*stream\r?\n(.*?)endstream", pdf, re.S
    )
    return [zlib.decompress(base64.a85decode(body.strip(), adobe=True)) for body in found]


def pdf_text(pdf: bytes) -> str:
    """The text of the strings drawn in a PDF rendered with compress=False
    (its page streams are plain; only the figures' pixels are compressed),
    one per line."""
    strings = []
    for match in _STRING.finditer(pdf):
        raw = match.group()[1:-1]
        raw = re.sub(rb"\\([()\\])", rb"\1", raw)
        strings.append(raw.decode("latin-1"))
    return "\n".join(strings)


# --- The PDF ------------------------------------------------------------------------------------


def test_closed_report_renders_every_section() -> None:
    analysis = make_analysis(closed=True, n=400)
    pdf = render_report(analysis, requested_by="dsmb-chair", compress=False)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    text = pdf_text(pdf)
    for expected in (
        "CONS-1: analysis report",
        "Closed report (by arm)",
        "dsmb-chair",
        "ab" * 32,
        "2026-12-05 09:30 UTC",
        "1. CONSORT-AI flow diagram",
        "Assessed for eligibility (n = 812)",
        "Excluded (n = 412)",
        "declined consent (n = 182)",
        "Randomized (n = 400)",
        "ai_assisted: allocated (n = 200)",
        "specialist_only: allocated (n = 200)",
        "Analysed (n = 175)",
        "2. Baseline characteristics",
        "Age, median (IQR)",
        "3. Outcomes",
        "86.0 % (79.0",  # sensitivity of the AI arm
        "4. Primary result",
        "Risk difference, ai_assisted ",
        "5. Agreement",
        "Fleiss",
        "Bland\\226Altman limits of agreement",  # the en dash, WinAnsi octal as drawn
        "final clinical\nread (specialist_only)",
        "17.09 (12.02 to 22.16)",
        "6. Time to diagnosis",
        "Numbers at risk",
        "Log-rank",
        "7. Interim look",
        "observed z = 1.210",
        "8. AI error analysis",
        "S-0039",
        "false negative",
        "Notes",
        "12 reads had no reference category.",
        "9. CONSORT-AI checklist",
        "To be completed by the authors: say that the intervention involves AI",
        "Filled by Consilium: combined-thyroid 1.0",
    ):
        assert expected in text, expected
    # Numbers at risk at day 0 are everyone in the group.
    assert text.count("\n200\n") >= 2


def test_numbers_at_risk_follow_the_kaplan_meier_curves() -> None:
    analysis = make_analysis(closed=True, n=400)
    text = pdf_text(render_report(analysis, compress=False))
    lines = text.splitlines()
    header = lines.index("Numbers at risk")
    start = lines.index(ARMS[0], header)
    ticks = [float(t) for t in lines[header + 1 : start]]
    assert ticks[0] == 0 and len(ticks) >= 4 and ticks == sorted(ticks)
    for arm in ARMS:
        at = lines.index(arm, header)
        row = lines[at + 1 : at + 1 + len(ticks)]
        assert row == [str(n) for n in analysis.time_to_diagnosis[arm].at_risk(ticks)]
    assert row[0] == "200" and int(row[-1]) < 200


def test_open_report_has_no_arm_names_nor_per_arm_results() -> None:
    analysis = make_analysis(closed=False, n=400)
    pdf = render_report(analysis, requested_by="statistician", compress=False)
    text = pdf_text(pdf)
    assert "Open report (pooled, arms masked)" in text
    assert "allocated (n = 400)" in text
    assert "The comparison between arms is in the closed report only." in text
    assert "8. AI error analysis" not in text and "Log-rank" not in text
    assert "The observed z is in the closed report only." in text
    assert "Bland\\226Altman limits of agreement" in text and "9. CONSORT-AI checklist" in text
    for word in ARM_WORDS:
        assert word not in pdf, word
    assert POOLED in text.splitlines()


@pytest.mark.parametrize(
    "change",
    [
        {"groups": list(ARMS)},
        {"outcomes": "arms"},
        {"errors": "closed"},
        {"primary": "closed"},
    ],
)
def test_an_open_report_with_arms_is_refused(change: dict[str, Any]) -> None:
    open_analysis = make_analysis(closed=False, n=200)
    closed = make_analysis(closed=True, n=200)
    key, value = next(iter(change.items()))
    if value == "arms":
        value = closed.outcomes
    elif value == "closed":
        value = getattr(closed, key)
    broken = dataclasses.replace(open_analysis, **{key: value})
    with pytest.raises(ReportError, match="open report"):
        render_report(broken)


def test_error_thumbnails_are_drawn_when_given() -> None:
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(1, 1))
    png = io.BytesIO()
    figure.savefig(png, format="png")
    plt.close(figure)
    asked: list[int] = []

    def thumbnail(image_id: int) -> bytes | None:
        asked.append(image_id)
        return png.getvalue() if image_id % 2 else None

    analysis = make_analysis(closed=True, n=200)
    pdf = render_report(analysis, thumbnail=thumbnail, compress=False)
    assert sorted(asked) == [case.image_id for case in analysis.errors]
    without = render_report(analysis, compress=False)
    # Every odd image id has a thumbnail: 20 more images drawn.
    assert pdf.count(b" Do\n") - without.count(b" Do\n") == 20


def test_render_time_of_a_2000_participant_report() -> None:
    analysis = make_analysis(closed=True, n=2000)
    started = time.perf_counter()
    pdf = render_report(analysis)
    seconds = time.perf_counter() - started
    assert pdf.startswith(b"%PDF-")
    print(f"closed report of 2,000 participants: {len(pdf)} bytes in {seconds:.2f} s")
    assert seconds < 15


# --- Who may request which report ---------------------------------------------------------------


@pytest.mark.django_db
def test_request_permissions_per_role(users: dict[str, Any], recruiting: Trial) -> None:
    for role in REAL_ARM_ROLES:
        for kind in ReportKind.values:
            report = services.report_request(actor=actor_for(users[role]), trial=recruiting, kind=kind)
            assert report.status == ReportStatus.QUEUED and report.requested_by == users[role]
    blinded = actor_for(users[Role.STATISTICIAN_BLINDED])
    assert services.report_request(actor=blinded, trial=recruiting, kind=ReportKind.OPEN).kind == "open"
    with pytest.raises(NotAllowed, match="closed report"):
        services.report_request(actor=blinded, trial=recruiting, kind=ReportKind.CLOSED)
    for role in NO_EXPORT_ROLES:
        for kind in ReportKind.values:
            with pytest.raises(NotAllowed):
                services.report_request(actor=actor_for(users[role]), trial=recruiting, kind=kind)
    with pytest.raises(RuleViolation, match="Unknown report kind"):
        services.report_request(actor=actor_for(users[Role.DSMB]), trial=recruiting, kind="final")
    assert Report.objects.count() == 2 * len(REAL_ARM_ROLES) + 1
    events = AuditEvent.objects.filter(action="analysis.report_request")
    assert events.count() == Report.objects.count()
    event = events.get(actor_id=users[Role.STATISTICIAN_BLINDED].pk)
    assert event.role == Role.STATISTICIAN_BLINDED and event.after["kind"] == "open"
    assert event.after["arm"] == "masked"


@pytest.mark.django_db
def test_request_queues_the_task_on_commit(
    users: dict[str, Any], recruiting: Trial, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    from analysis import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.build_report, "delay", lambda pk: queued.append(pk))
    with django_capture_on_commit_callbacks(execute=True):
        report = services.report_request(actor=actor_for(users[Role.DSMB]), trial=recruiting, kind=ReportKind.CLOSED)
    assert queued == [report.pk]
    from config.celery import app

    assert app.amqp.router.route({}, "analysis.build_report")["queue"].name == "reports"


# --- Building a report from a simulated trial ---------------------------------------------------


@pytest.fixture
def simulated(db: Any, make_user: Any) -> dict[str, Any]:
    summary = simulate_trial(SimulationConfig(participants=24, seed=7, trial_code="REPORT-SIM", ai_model=False))
    trial = summary.trial
    return {
        "trial": trial,
        "dsmb": make_user("report-dsmb", Role.DSMB, trial=trial),
        "blinded": make_user("report-blinded", Role.STATISTICIAN_BLINDED, trial=trial),
        "coordinator": make_user("report-coordinator", Role.COORDINATOR, trial=trial, site=trial.sites.first()),
    }


def _export_hash(user: Any, trial: Trial) -> str:
    return services.analysis_export_create(actor=actor_for(user), trial=trial).data_sha256


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["closed", "open"])
def test_build_report_from_a_simulated_trial(
    simulated: dict[str, Any], kind: str, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    from analysis import tasks

    trial = simulated["trial"]
    user = simulated["dsmb"] if kind == "closed" else simulated["blinded"]
    monkeypatch.setattr(tasks.build_report, "delay", lambda pk: None)
    with django_capture_on_commit_callbacks(execute=True):
        report = services.report_request(actor=actor_for(user), trial=trial, kind=kind)
    progress: list[int] = []
    original = services.report_progress

    def spy(report: Report, value: int, message: str) -> None:
        progress.append(value)
        original(report, value, message)

    monkeypatch.setattr(services, "report_progress", spy)
    with django_capture_on_commit_callbacks(execute=True):
        built = build_report(report.pk)
    assert built.status == ReportStatus.DONE, built.error
    report.refresh_from_db()
    assert report.status == ReportStatus.DONE and report.progress == 100 and report.finished_at
    assert progress == sorted(progress) and len(progress) == 4
    assert report.file.name.startswith("reports/") and report.file.name.endswith(".pdf")
    with default_storage.open(report.file.name, "rb") as handle:
        pdf = handle.read()
    assert pdf.startswith(b"%PDF-") and services.sha256(pdf) == report.sha256
    assert report.data_hash == _export_hash(user, trial)
    if kind == "open":
        plain = b"".join(_page_streams(pdf))
        text = pdf_text(plain)
        assert "Open report (pooled, arms masked)" in text and "Randomized (n = 24)" in text, text[:2000]
        for word in (*ARM_WORDS, b": allocated"):
            assert word not in plain, word
    done = AuditEvent.objects.get(action="analysis.report_done", object_id=str(report.pk))
    assert done.after["sha256"] == report.sha256 and done.after["data_sha256"] == report.data_hash
    assert done.after["requested_by"] == user.username
    # A finished report is not built again.
    assert build_report(report.pk).sha256 == report.sha256
    assert AuditEvent.objects.filter(action="analysis.report_done").count() == 1


@pytest.mark.django_db
def test_a_requester_who_lost_the_right_gets_a_failed_report(simulated: dict[str, Any]) -> None:
    from trial.models import Membership

    trial, dsmb = simulated["trial"], simulated["dsmb"]
    report = Report.objects.create(trial=trial, kind=ReportKind.CLOSED, requested_by=dsmb)
    Membership.objects.filter(user=dsmb).update(active=False)
    built = build_report(report.pk)
    assert built.status == ReportStatus.FAILED and "permit" in built.error
    assert not built.file.name and not built.sha256
    assert AuditEvent.objects.filter(action="analysis.report_failed", object_id=str(report.pk)).exists()


# --- Pages --------------------------------------------------------------------------------------


def _done_report(trial: Trial, user: Any, kind: str) -> Report:
    report = Report.objects.create(trial=trial, kind=kind, requested_by=user)
    analysis = make_analysis(closed=kind == "closed", n=100)
    pdf = render_report(analysis, requested_by=user.username)
    return services.report_finish(report, pdf=pdf, data_sha256="cd" * 32)


@pytest.mark.django_db
def test_reports_page_lists_what_each_role_may_see(users: dict[str, Any], recruiting: Trial) -> None:
    closed = _done_report(recruiting, users[Role.DSMB], "closed")
    opened = _done_report(recruiting, users[Role.STATISTICIAN_BLINDED], "open")
    url = reverse("analysis:reports")

    page = login(users[Role.STATISTICIAN_BLINDED]).get(url)
    assert page.status_code == 200
    shown = [r.pk for r in page.context["reports"]]
    assert shown == [opened.pk]
    assert [value for value, _ in page.context["form"].fields["kind"].choices] == ["open"]
    assert b'href="/analysis/reports/"' in page.content  # the nav link
    assert b"report_progress.js" in page.content and b"<script>" not in page.content

    page = login(users[Role.DSMB]).get(url)
    assert sorted(r.pk for r in page.context["reports"]) == sorted([closed.pk, opened.pk])

    for role in NO_EXPORT_ROLES:
        client = login(users[role])
        assert client.get(url).status_code == 403
        assert b'href="/analysis/reports/"' not in client.get(reverse("trial:dashboard")).content


@pytest.mark.django_db
def test_request_form(users: dict[str, Any], recruiting: Trial, monkeypatch: Any) -> None:
    from analysis import tasks

    monkeypatch.setattr(tasks.build_report, "delay", lambda pk: None)
    url = reverse("analysis:reports")
    blinded = login(users[Role.STATISTICIAN_BLINDED])
    response = blinded.post(url, {"trial": recruiting.pk, "kind": "closed"})
    assert response.status_code == 400 and not Report.objects.exists()
    response = blinded.post(url, {"trial": recruiting.pk, "kind": "open"})
    assert response.status_code == 302
    report = Report.objects.get()
    assert report.kind == "open" and report.requested_by == users[Role.STATISTICIAN_BLINDED]

    status = blinded.get(reverse("analysis:report_status", args=[report.pk]))
    assert status.status_code == 200
    assert status.json() == {
        "id": report.pk,
        "status": "queued",
        "status_display": "Queued",
        "progress": 0,
        "message": report.message,
        "error": "",
        "finished": False,
    }
    dsmb = login(users[Role.DSMB])
    assert dsmb.post(url, {"trial": recruiting.pk, "kind": "closed"}).status_code == 302
    closed = Report.objects.get(kind="closed")
    assert blinded.get(reverse("analysis:report_status", args=[closed.pk])).status_code == 404


@pytest.mark.django_db
def test_download_is_audited_verified_and_hidden_from_others(users: dict[str, Any], recruiting: Trial) -> None:
    report = _done_report(recruiting, users[Role.DSMB], "closed")
    url = reverse("analysis:report_download", args=[report.pk])
    response = login(users[Role.STATISTICIAN_UNBLINDED]).get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == (
        f'attachment; filename="consilium-{recruiting.code}-closed-report-{report.pk}.pdf"'
    )
    assert services.sha256(response.content) == report.sha256
    event = AuditEvent.objects.get(action="analysis.report_download")
    assert event.actor_id == users[Role.STATISTICIAN_UNBLINDED].pk and event.after["sha256"] == report.sha256

    assert login(users[Role.STATISTICIAN_BLINDED]).get(url).status_code == 404
    for role in NO_EXPORT_ROLES:
        assert login(users[role]).get(url).status_code in (403, 404)
    assert AuditEvent.objects.filter(action="analysis.report_download").count() == 1

    # A file altered in storage is not handed out.
    with default_storage.open(report.file.name, "wb") as handle:
        handle.write(b"%PDF-1.4 altered")
    response = login(users[Role.DSMB]).get(url)
    assert response.status_code == 500 and b"does not match" in response.content
    assert AuditEvent.objects.filter(action="analysis.report_download").count() == 1


# --- A real worker of the reports queue ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_builds_a_requested_report(make_user: Any, redis_broker: str, start_celery_worker: Any) -> None:
    from tests.celery_worker import wait_until

    trial = simulate_trial(SimulationConfig(participants=12, seed=3, trial_code="REPORT-WORKER", ai_model=False)).trial
    dsmb = make_user("worker-dsmb", Role.DSMB, trial=trial)
    worker = start_celery_worker(redis_broker)  # the operator's queues: inference and reports
    report = services.report_request(actor=actor_for(dsmb), trial=trial, kind=ReportKind.CLOSED)

    def finished() -> bool:
        report.refresh_from_db()
        return report.finished

    wait_until(finished, timeout=120, what="the report", worker=worker)
    assert report.status == ReportStatus.DONE, report.error
    with default_storage.open(report.file.name, "rb") as handle:
        assert services.sha256(handle.read()) == report.sha256
    assert "analysis.build_report" in worker.log()


def test_error_case_pictures_are_the_ai_overlay_shrunk_else_the_images_thumbnail(
    make_case: Callable[..., Any],
) -> None:
    import io as _io

    from PIL import Image as PILImage

    from ai_engine.models import AiResult
    from analysis.reports import builder
    from randomization.models import Arm

    case = make_case(Arm.AI_ASSISTED, images=("palette",))
    image = case.images[0]
    result = AiResult.objects.get(image=image)
    assert result.overlay and result.overlay_sha256
    picture = builder._thumbnails([image.pk])(image.pk)
    assert picture is not None
    with PILImage.open(_io.BytesIO(picture)) as shrunk:
        assert max(shrunk.size) == builder.THUMBNAIL_EDGE
        assert shrunk.size[0] / shrunk.size[1] == pytest.approx(image.columns / image.rows, rel=0.02)
    # An overlay that fails its sha256 is not used: the image's own thumbnail is.
    AiResult.objects.filter(pk=result.pk).update(overlay_sha256="0" * 64)
    fallback = builder._thumbnails([image.pk])(image.pk)
    with image.thumbnail.open("rb") as handle:
        assert fallback == handle.read()


POPPLER = ("/usr/bin/pdftoppm", "/usr/bin/pdftotext")
CLOSED_SECTIONS = [
    "1. CONSORT-AI flow diagram",
    "2. Baseline characteristics",
    "3. Outcomes",
    "4. Primary result",
    "5. Agreement",
    "6. Time to diagnosis",
    "7. Interim look",
    "8. AI error analysis",
    "9. CONSORT-AI checklist",
]


def test_a_closed_report_of_a_simulated_trial_renders_in_poppler_with_every_section(
    simulated: dict[str, Any], tmp_path: Any
) -> None:
    """What a reader's PDF viewer does: poppler (.ci/run installs
    poppler-utils) draws every page and finds every section's heading."""
    import subprocess

    from PIL import Image as PILImage

    missing = [tool for tool in POPPLER if not Path(tool).is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: install poppler-utils (.ci/run does).", pytrace=False)
    trial, user = simulated["trial"], simulated["dsmb"]
    report = services.report_request(actor=actor_for(user), trial=trial, kind="closed")
    built = build_report(report.pk)
    assert built.status == ReportStatus.DONE, built.error
    path = tmp_path / "report.pdf"
    with built.file.open("rb") as handle:
        path.write_bytes(handle.read())
    subprocess.run([POPPLER[0], "-r", "40", "-png", str(path), str(tmp_path / "page")], check=True, timeout=120)
    pages = sorted(tmp_path.glob("page*.png"))
    assert len(pages) >= 5
    for page in pages:
        with PILImage.open(page) as picture:
            extrema = picture.convert("L").getextrema()
        assert extrema[0] < extrema[1], f"{page.name} is blank"
    text = subprocess.run(
        [POPPLER[1], "-layout", str(path), "-"], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    for heading in CLOSED_SECTIONS:
        assert heading in text, heading
    assert "Lan–DeMets" in text or "boundary" in text.lower()


def test_the_interim_looks_so_far_are_the_planned_fractions_passed_and_this_one(settings: Any) -> None:
    from analysis.reports.builder import interim_timing

    settings.ANALYSIS_INTERIM_FRACTIONS = [2 / 3, 1 / 3]
    assert interim_timing(300, 0) is None and interim_timing(0, 10) is None
    assert interim_timing(300, 60) == [pytest.approx(0.2)]
    assert interim_timing(300, 150) == [pytest.approx(1 / 3), pytest.approx(0.5)]
    assert interim_timing(300, 400) == [pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0]
