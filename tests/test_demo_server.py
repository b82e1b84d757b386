"""`make demo` with the default settings, end to end in real processes: in a
fresh var dir (SQLite, the filesystem broker, no server of any kind),
`migrate`, `seed_demo` and `demo_server` run as an operator runs them (with
fewer participants); the demo's own worker judges the seeded images while
the web server answers, demo_server then signs the reads and reference
results and the worker builds the interim reports, which download as PDFs;
Ctrl-C stops it all. Also: a child that dies takes the demo down with a
clear message, a port in use is refused before anything starts, and both
phases of seed_demo (in-process, on the test database) make every state of
the trial once, through the services."""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.core.management import CommandError, call_command

from ai_engine import jobs
from ai_engine.models import AiResult, AiResultStatus
from analysis.models import Report, ReportKind, ReportStatus
from imaging.models import FileFormat, Image, ImageStatus
from randomization.models import Arm
from readings.models import AiDisplay, Phase, Read, ReadingTask, ReadStatus, TaskKind, TaskStatus
from trial.audit import verify_chain
from trial.management.commands.seed_demo import (
    CONSENTED,
    DEMO_ULTRASOUND,
    DEMO_USERS,
    PASSWORDS,
    STATES_AT_EVERY_SITE,
    TRIAL_CODE,
    WITHDRAWN,
    awaiting_reads,
    demo_state_counts,
)
from trial.models import (
    AuditEvent,
    Indication,
    Participant,
    ReferenceStandardResult,
    Role,
    ScreeningEntry,
    ScreeningStatus,
    Site,
    Trial,
)

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(BASE_DIR / "manage.py")]
# A smaller demo: two participants followed up at each site (one of each
# indication), besides one person in each other state.
RANDOMIZED_PER_SITE = 2
SEEDED_IMAGES = 3 * RANDOMIZED_PER_SITE
FINISHED = {"done", "abstained"}
EVERY_STATE = {
    ScreeningStatus.PENDING.label,
    ScreeningStatus.INELIGIBLE.label,
    ScreeningStatus.DECLINED.label,
    ScreeningStatus.NOT_ENROLLED.label,
    ScreeningStatus.ELIGIBLE.label,
    CONSENTED,
    *WITHDRAWN.values(),
}
# Settings that would point the demo elsewhere than its defaults (CI may set some).
NOT_DEFAULT = ["CELERY_BROKER_URL", "SQLITE_PATH", "MEDIA_ROOT", "CELERY_TASK_ALWAYS_EAGER", "AI_DEVICE", "DEBUG"]

T = TypeVar("T")


def demo_environment(var_dir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in NOT_DEFAULT}
    env.update(CONSILIUM_VAR_DIR=str(var_dir), DATABASE_URL="", AI_TORCH_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def manage(var_dir: Path, *arguments: str, timeout: float) -> str:
    completed = subprocess.run(
        [*MANAGE, *arguments],
        cwd=BASE_DIR,
        env=demo_environment(var_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, f"manage.py {' '.join(arguments)}:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Demo:
    """`manage.py demo_server` in its own session (so that only it gets the
    signals the test sends), its output in a file."""

    def __init__(self, var_dir: Path, port: int) -> None:
        self.var_dir, self.port = var_dir, port
        self.output = var_dir / "demo-server.out"
        with open(self.output, "wb") as output:
            self.process = subprocess.Popen(
                [*MANAGE, "demo_server", "--port", str(port)],
                cwd=BASE_DIR,
                env=demo_environment(var_dir),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children: dict[str, int] = {}

    def logs(self) -> str:
        text = f"--- demo_server (exit code {self.process.poll()}):\n{_read(self.output)}"
        return text + f"\n--- worker log (end):\n{_read(self.var_dir / 'demo-worker.log')[-6000:]}"

    def find_children(self) -> dict[str, int]:
        """The web server's and the worker's process ids (each the id of its own process group)."""
        found: dict[str, int] = {}
        for pid in _child_pids(self.process.pid):
            command = _command_line(pid)
            if "runserver" in command:
                found["server"] = pid
            elif "celery" in command:
                found["worker"] = pid
        if len(found) == 2:
            self.children = found
            return found
        return {}

    def wait(self, condition: Callable[[], T], *, timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            assert self.process.poll() is None, f"demo_server exited while waiting for {what}.\n{self.logs()}"
            time.sleep(0.5)
        pytest.fail(f"Timed out after {timeout:g} s waiting for {what}.\n{self.logs()}")

    def login_page(self) -> int:
        url = f"http://127.0.0.1:{self.port}/accounts/login/"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return int(response.status)
        except (urllib.error.URLError, ConnectionError):
            return 0

    def stop(self, number: int = signal.SIGINT, timeout: float = 60) -> int:
        os.kill(self.process.pid, number)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"demo_server did not stop within {timeout:g} s.\n{self.logs()}")

    def kill_everything(self) -> None:
        for pid in [self.process.pid, *self.children.values()]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@pytest.fixture
def start_demo() -> Iterator[Callable[[Path, int], Demo]]:
    demos: list[Demo] = []

    def start(var_dir: Path, port: int) -> Demo:
        demos.append(Demo(var_dir, port))
        return demos[-1]

    yield start
    for demo in demos:
        demo.kill_everything()


def query(database: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection:
        return list(connection.execute(sql))


def ai_statuses(database: Path) -> list[str]:
    return [row[0] for row in query(database, "SELECT status FROM ai_engine_airesult")]


def download_as(url: str, username: str, path: str) -> bytes:
    """Sign in through the login form (cookies and CSRF token as a browser
    keeps them) and fetch the path."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(f"{url}accounts/login/", timeout=30) as response:
        page = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token, page
    form = {"csrfmiddlewaretoken": token.group(1), "username": username, "password": PASSWORDS[username]}
    request = urllib.request.Request(
        f"{url}accounts/login/", data=urllib.parse.urlencode(form).encode(), headers={"Referer": url}
    )
    with opener.open(request, timeout=30) as response:
        assert "/accounts/login/" not in response.url, f"{username} could not sign in"
    with opener.open(f"{url}{path}", timeout=60) as response:
        assert response.status == 200
        return bytes(response.read())


def all_finished(database: Path) -> list[str]:
    statuses = ai_statuses(database)
    return statuses if len(statuses) == SEEDED_IMAGES and set(statuses) <= FINISHED else []


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_gone(demo: Demo) -> None:
    """No process of the web server's or the worker's group is left
    (reaping a killed grandchild may take a moment), and the port is closed."""
    deadline = time.monotonic() + 10
    while any(process_group_alive(pgid) for pgid in demo.children.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {name: pgid for name, pgid in demo.children.items() if process_group_alive(pgid)}
    assert not left, f"processes left behind: {left}\n{demo.logs()}"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", demo.port), timeout=5).close()


def test_make_demo_finishes_the_whole_trial_with_its_own_worker_and_stops_on_ctrl_c(
    tmp_path: Path, start_demo: Callable[[Path, int], Demo]
) -> None:
    manage(tmp_path, "migrate", "--noinput", timeout=180)
    seeded = manage(tmp_path, "seed_demo", "--randomized-per-site", str(RANDOMIZED_PER_SITE), timeout=300)
    assert f"Demo images: {SEEDED_IMAGES} uploaded" in seeded
    database = tmp_path / "consilium.sqlite3"
    # Seeding queued the jobs on the filesystem broker; no worker has run yet.
    assert ai_statuses(database) == ["queued"] * SEEDED_IMAGES
    assert len(list((tmp_path / "celery-broker" / "queue").iterdir())) >= SEEDED_IMAGES
    # The reads follow the AI second opinion: the second phase is refused before it.
    early = subprocess.run(
        [*MANAGE, "seed_demo", "--readings"],
        cwd=BASE_DIR,
        env=demo_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert early.returncode == 1 and f"{SEEDED_IMAGES} AI results" in early.stderr, early.stderr
    assert query(database, "SELECT count(*) FROM readings_read")[0][0] == 0

    demo = start_demo(tmp_path, free_port())
    demo.wait(demo.find_children, timeout=30, what="the web server and worker processes")
    demo.wait(lambda: demo.login_page() == 200, timeout=60, what="the login page")

    def finished_while_the_site_answers() -> bool:
        assert demo.login_page() == 200, f"the login page stopped answering.\n{demo.logs()}"
        return "Stop it with Ctrl-C" in _read(demo.output)

    demo.wait(finished_while_the_site_answers, timeout=300, what="the demo trial to be finished")
    printed = _read(demo.output)
    url = f"http://127.0.0.1:{demo.port}/"
    assert f"Consilium is running at {url}" in printed, demo.logs()
    assert f"The interim reports are ready to download at {url}analysis/reports/" in printed, demo.logs()
    logins = printed[printed.index("One login per role") :]
    for role in Role:
        username, password = next((name, word) for name, each, _, word in DEMO_USERS if each == role)
        assert re.search(rf"{re.escape(role.label)}\s+{re.escape(username)}\s+{re.escape(password)}", logins), role

    # The worker judged every image with the shipped checkpoint.
    statuses = all_finished(database)
    assert statuses and "done" in statuses, demo.logs()
    # Clinical reads: unaided then final in the AI-assisted arm, a final read
    # alone in the specialist-only arm, each signed after the AI result.
    signed = query(
        database,
        "SELECT t.kind, r.phase, t.sequential, count(*) FROM readings_read r "
        "JOIN readings_readingtask t ON t.id = r.task_id WHERE r.status = 'signed' GROUP BY 1, 2, 3",
    )
    kinds = {(kind, phase, bool(sequential)): count for kind, phase, sequential, count in signed}
    assert kinds.get(("clinical", "final", False), 0) + kinds.get(("clinical", "final", True), 0) >= SEEDED_IMAGES - 3
    assert kinds.get(("clinical", "unaided", True), 0) >= kinds.get(("clinical", "final", True), 0)
    assert kinds.get(("panel", "final", False), 0) >= 2 * (SEEDED_IMAGES - 3)
    late = query(
        database,
        "SELECT count(*) FROM readings_read r JOIN readings_readingtask t ON t.id = r.task_id "
        "JOIN imaging_image i ON i.participant_id = t.participant_id "
        "JOIN ai_engine_airesult a ON a.image_id = i.id "
        "WHERE t.kind = 'clinical' AND r.status = 'signed' AND r.signed_at < a.finished_at",
    )
    assert late == [(0,)]  # no clinical read was signed before the AI result existed
    assert query(database, "SELECT count(*) FROM trial_referencestandardresult")[0][0] >= 1
    reports = query(database, "SELECT id, kind, status, file FROM analysis_report ORDER BY kind")
    assert [(kind, status) for _, kind, status, _ in reports] == [("closed", "done"), ("open", "done")], reports
    for _, _, _, name in reports:
        assert (tmp_path / "media" / name).read_bytes().startswith(b"%PDF-")
    # The open report downloads for the blinded statistician, as a PDF.
    open_report = next(pk for pk, kind, _, _ in reports if kind == "open")
    pdf = download_as(url, "statistician", f"analysis/reports/{open_report}/download/")
    assert pdf.startswith(b"%PDF-") and len(pdf) > 10_000

    assert demo.stop(signal.SIGINT) == 0, demo.logs()
    assert "Consilium has stopped" in _read(demo.output)
    assert "Warm shutdown" in _read(tmp_path / "demo-worker.log")
    assert_gone(demo)


def test_ctrl_c_while_the_demo_trial_is_being_finished_stops_the_second_phase_too(
    tmp_path: Path, start_demo: Callable[[Path, int], Demo]
) -> None:
    manage(tmp_path, "migrate", "--noinput", timeout=180)
    manage(tmp_path, "seed_demo", "--randomized-per-site", str(RANDOMIZED_PER_SITE), timeout=300)
    demo = start_demo(tmp_path, free_port())
    demo.wait(demo.find_children, timeout=30, what="the web server and worker processes")

    def second_phase() -> int:
        return next((pid for pid in _child_pids(demo.process.pid) if "--readings" in _command_line(pid)), 0)

    demo.children["readings"] = demo.wait(second_phase, timeout=300, what="seed_demo --readings to start")

    assert demo.stop(signal.SIGINT) == 0, demo.logs()
    output = _read(demo.output)
    assert "Consilium has stopped" in output and "Consilium is running at" not in output, demo.logs()
    assert_gone(demo)  # the second phase's process group too
    # Nothing half-written: each participant's reads commit together.
    clinical = query(
        tmp_path / "consilium.sqlite3",
        "SELECT t.status, count(r.id) FROM readings_readingtask t LEFT JOIN readings_read r "
        "ON r.task_id = t.id AND r.status = 'signed' WHERE t.kind = 'clinical' GROUP BY t.id",
    )
    assert len(clinical) == SEEDED_IMAGES
    assert all((status == "pending") == (signed == 0) for status, signed in clinical), clinical
    assert "audit trail intact" in manage(tmp_path, "verify_audit", timeout=120)


@pytest.mark.parametrize(
    ("child", "message"),
    [("server", "The web server stopped unexpectedly"), ("worker", "The AI worker stopped unexpectedly")],
)
def test_a_child_that_dies_stops_the_demo_with_a_clear_message(
    child: str, message: str, tmp_path: Path, start_demo: Callable[[Path, int], Demo]
) -> None:
    manage(tmp_path, "migrate", "--noinput", timeout=180)
    demo = start_demo(tmp_path, free_port())
    children = demo.wait(demo.find_children, timeout=30, what="the web server and worker processes")
    demo.wait(lambda: demo.login_page() == 200, timeout=60, what="the login page")

    os.killpg(children[child], signal.SIGKILL)

    try:
        code = demo.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"demo_server kept running after its {child} died.\n{demo.logs()}")
    assert code == 1, demo.logs()
    output = _read(demo.output)
    assert message in output and "The demo has stopped." in output, demo.logs()
    assert "was killed" not in output  # the survivor stopped in time
    assert_gone(demo)


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = subprocess.run(
            [*MANAGE, "demo_server", "--port", str(port)],
            cwd=BASE_DIR,
            env=demo_environment(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert completed.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in completed.stderr and "--port" in completed.stderr
    assert not (tmp_path / "demo-worker.log").exists()  # no worker was started


def test_seed_demo_loads_every_state_and_uploads_the_images_once_queueing_their_ai_jobs(
    db: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        output = StringIO()
        call_command("seed_demo", "--randomized-per-site", str(RANDOMIZED_PER_SITE), stdout=output)
    assert f"Demo images: {SEEDED_IMAGES} uploaded" in output.getvalue()
    trial = Trial.objects.get(code=TRIAL_CODE)

    # Every state of the flow, for both indications, and one person in each
    # of those states at every site.
    counts = demo_state_counts(trial)
    assert set(counts) >= EVERY_STATE, counts
    for state in EVERY_STATE:
        assert set(counts[state]) == {Indication.CERVICAL, Indication.THYROID}, (state, counts[state])
    per_site = len(STATES_AT_EVERY_SITE) + RANDOMIZED_PER_SITE
    for site in Site.objects.filter(trial=trial):
        assert ScreeningEntry.objects.filter(site=site).count() == per_site
        assert Participant.objects.filter(site=site, allocation__isnull=True).count() == 1  # consented
        assert Participant.objects.filter(site=site, data_withdrawn=True).count() == 1
    assert ScreeningEntry.objects.filter(trial=trial).count() == 3 * per_site
    arms = set(Participant.objects.filter(trial=trial).values_list("allocation__arm", flat=True))
    assert {Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY} <= arms

    images = list(Image.objects.select_related("participant__screening", "site", "uploaded_by", "trial"))
    assert len(images) == SEEDED_IMAGES
    assert {image.trial.code for image in images} == {TRIAL_CODE}
    assert all(image.status in (ImageStatus.ACCEPTED, ImageStatus.NEEDS_REVIEW) for image in images)
    thyroid = [image for image in images if image.participant.indication == Indication.THYROID]
    cervical = [image for image in images if image.participant.indication == Indication.CERVICAL]
    assert thyroid and cervical and {image.file_format for image in thyroid} == {FileFormat.DICOM}
    # pydicom's real ultrasound files go first, synthetic frames after them.
    assert [image.original_name for image in thyroid if image.original_name in DEMO_ULTRASOUND]
    assert {image.file_format for image in cervical} == {FileFormat.PNG}
    coordinators = {site: username for username, role, site, _ in DEMO_USERS if role == Role.COORDINATOR}
    for image in images:
        participant = image.participant
        assert image.uploaded_by.username == coordinators[image.site.code]
        assert participant.allocation and participant.accepts_ai_processing and not participant.is_withdrawn
    assert len({image.participant_id for image in images}) == SEEDED_IMAGES  # one image each

    # Each accepted image has its queued AI result, published to the broker.
    results = AiResult.objects.filter(image__in=images)
    assert results.count() == SEEDED_IMAGES
    assert all(result.status == AiResultStatus.QUEUED and result.dispatched_at for result in results)
    assert AuditEvent.objects.filter(action="image.accept").count() == SEEDED_IMAGES
    events = AuditEvent.objects.count()

    with django_capture_on_commit_callbacks(execute=True):
        again = StringIO()
        call_command("seed_demo", stdout=again)  # a second run adds nothing
    assert f"Demo images: all {SEEDED_IMAGES} already uploaded." in again.getvalue()
    assert Image.objects.count() == SEEDED_IMAGES and AiResult.objects.count() == SEEDED_IMAGES
    assert AuditEvent.objects.count() == events
    assert verify_chain().ok


def test_seed_demo_readings_signs_the_reads_after_the_ai_results_records_references_and_queues_reports(
    db: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # Six followed up a site (the passwords are hashed fast in the tests): both arms among those read.
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--randomized-per-site", "6", stdout=StringIO())
    trial = Trial.objects.get(code=TRIAL_CODE)
    images = 3 * 6

    # Before the AI results, the second phase is refused and writes nothing.
    events = AuditEvent.objects.count()
    with pytest.raises(CommandError, match=f"{images} AI results of the demo images are still waiting"):
        call_command("seed_demo", "--readings", stdout=StringIO())
    assert AuditEvent.objects.count() == events and not Read.objects.exists() and not Report.objects.exists()

    # The worker's work, done here in-process (the end-to-end test above runs the real worker).
    for result in AiResult.objects.all():
        jobs.process(result.pk, batch_limit=1)
    assert set(AiResult.objects.values_list("status", flat=True)) <= FINISHED
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        output = StringIO()
        call_command("seed_demo", "--readings", stdout=output)
    assert callbacks  # the report requests are sent to the worker once they commit

    in_progress = awaiting_reads(trial)
    assert len(in_progress) == 3 and {participant.site.code for participant in in_progress} == {"C01", "C02", "C03"}
    followed = Participant.objects.filter(trial=trial, images__isnull=False).select_related("allocation")
    assert followed.count() == images
    arms_read = set()
    for participant in followed:
        clinical = ReadingTask.objects.get(participant=participant, kind=TaskKind.CLINICAL)
        ai_result = AiResult.objects.get(image__participant=participant)
        signed = Read.objects.filter(task=clinical, status=ReadStatus.SIGNED, current=True)
        panel = ReadingTask.objects.filter(participant=participant, kind=TaskKind.PANEL)
        assert panel.count() == 2 and len({task.assignee_id for task in panel}) == 2
        ai_arm = participant.allocation.arm == Arm.AI_ASSISTED
        assert clinical.sequential == ai_arm
        if participant in in_progress:
            # In the middle of being read: the unaided read signed (AI arm), the panel's reads opened.
            assert clinical.status == TaskStatus.IN_PROGRESS
            assert {read.phase for read in signed} == ({Phase.UNAIDED} if ai_arm else set())
            assert {task.status for task in panel} == {TaskStatus.IN_PROGRESS}
            continue
        arms_read.add(participant.allocation.arm)
        assert clinical.status == TaskStatus.DONE and clinical.assignee is not None
        assert clinical.assignee.username.startswith("clinician")
        assert {read.phase for read in signed} == ({Phase.UNAIDED, Phase.FINAL} if ai_arm else {Phase.FINAL})
        finished_at = ai_result.finished_at
        assert finished_at is not None
        assert all(read.signed_at is not None and read.signed_at > finished_at for read in signed)
        shown = AiDisplay.objects.filter(task=clinical)
        if ai_arm and ai_result.status == AiResultStatus.DONE:
            final = signed.get(phase=Phase.FINAL)
            assert shown.exists() and final.interaction["ai_result"] == ai_result.pk
        else:
            assert not shown.exists()  # never in the specialist-only arm
        assert {task.status for task in panel} == {TaskStatus.DONE}
        assert all(
            Read.objects.filter(task=task, status=ReadStatus.SIGNED, reader=task.assignee).exists() for task in panel
        )
        adjudication = ReadingTask.objects.filter(participant=participant, kind=TaskKind.ADJUDICATION).first()
        if adjudication is not None:
            assert adjudication.status == TaskStatus.DONE
            assert adjudication.assignee_id not in {task.assignee_id for task in panel}
        references = ReferenceStandardResult.objects.filter(participant=participant)
        assert all(reference.recorded_by.username == "pathologist" for reference in references)
    assert arms_read == {Arm.AI_ASSISTED, Arm.SPECIALIST_ONLY}
    assert ReferenceStandardResult.objects.filter(participant__trial=trial).exists()
    requested = {(report.kind, report.requested_by.username) for report in Report.objects.all()}
    assert requested == {(ReportKind.OPEN, "statistician"), (ReportKind.CLOSED, "dsmb")}
    assert set(Report.objects.values_list("status", flat=True)) == {ReportStatus.QUEUED}
    assert (
        AuditEvent.objects.filter(action="read.sign").count() == Read.objects.filter(status=ReadStatus.SIGNED).count()
    )

    # A second run changes nothing.
    events = AuditEvent.objects.count()
    again = StringIO()
    call_command("seed_demo", "--readings", stdout=again)
    assert "0 participants read now" in again.getvalue() and "queued" not in again.getvalue()
    assert AuditEvent.objects.count() == events and Report.objects.count() == 2
    assert verify_chain().ok


def _child_pids(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no file)"
