"""`make demo` with the default settings, end to end in real processes: in a
fresh var dir (SQLite, the filesystem broker, no server of any kind),
`migrate`, `seed_demo` and `demo_server` run as an operator runs them; the
demo's own worker judges the seeded images while the web server answers,
and Ctrl-C stops both. Also: a child that dies takes the demo down with a
clear message, a port in use is refused before anything starts, and
seed_demo's images are uploaded (and their AI jobs queued) once."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.core.management import call_command

from ai_engine.models import AiResult, AiResultStatus
from imaging.models import FileFormat, Image, ImageStatus
from trial.audit import verify_chain
from trial.management.commands.seed_demo import DEMO_COLPOSCOPY, DEMO_ULTRASOUND, DEMO_USERS, TRIAL_CODE
from trial.models import AuditEvent, Indication, Role

BASE_DIR = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(BASE_DIR / "manage.py")]
SEEDED_IMAGES = len(DEMO_ULTRASOUND) + len(DEMO_COLPOSCOPY)
FINISHED = {"done", "abstained"}
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


def ai_statuses(database: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as connection:
        return [row[0] for row in connection.execute("SELECT status FROM ai_engine_airesult")]


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


def test_make_demo_processes_the_seeded_images_with_its_own_worker_and_stops_on_ctrl_c(
    tmp_path: Path, start_demo: Callable[[Path, int], Demo]
) -> None:
    manage(tmp_path, "migrate", "--noinput", timeout=180)
    seeded = manage(tmp_path, "seed_demo", timeout=300)
    assert f"Demo images: {SEEDED_IMAGES} uploaded" in seeded
    database = tmp_path / "consilium.sqlite3"
    # Seeding queued the jobs on the filesystem broker; no worker has run yet.
    assert ai_statuses(database) == ["queued"] * SEEDED_IMAGES
    assert len(list((tmp_path / "celery-broker" / "queue").iterdir())) >= SEEDED_IMAGES

    demo = start_demo(tmp_path, free_port())
    demo.wait(demo.find_children, timeout=30, what="the web server and worker processes")
    demo.wait(lambda: demo.login_page() == 200, timeout=60, what="the login page")

    def finished_while_the_site_answers() -> list[str]:
        assert demo.login_page() == 200, f"the login page stopped answering.\n{demo.logs()}"
        return all_finished(database)

    statuses = demo.wait(finished_while_the_site_answers, timeout=120, what=f"{SEEDED_IMAGES} finished AI results")
    assert "done" in statuses
    printed = _read(demo.output)
    assert f"Consilium is running at http://127.0.0.1:{demo.port}/" in printed and "Ctrl-C" in printed

    assert demo.stop(signal.SIGINT) == 0, demo.logs()
    assert "Consilium has stopped" in _read(demo.output)
    assert "Warm shutdown" in _read(tmp_path / "demo-worker.log")
    assert_gone(demo)


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


def test_seed_demo_uploads_the_demo_images_once_and_queues_their_ai_jobs(
    db: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        output = StringIO()
        call_command("seed_demo", stdout=output)
    assert f"Demo images: {SEEDED_IMAGES} uploaded" in output.getvalue()

    images = list(Image.objects.select_related("participant__screening", "site", "uploaded_by", "trial"))
    assert len(images) == SEEDED_IMAGES
    assert {image.trial.code for image in images} == {TRIAL_CODE}
    assert all(image.status in (ImageStatus.ACCEPTED, ImageStatus.NEEDS_REVIEW) for image in images)
    thyroid = [image for image in images if image.participant.indication == Indication.THYROID]
    cervical = [image for image in images if image.participant.indication == Indication.CERVICAL]
    assert sorted(image.original_name for image in thyroid) == sorted(DEMO_ULTRASOUND)
    assert {image.file_format for image in thyroid} == {FileFormat.DICOM}
    assert len(cervical) == len(DEMO_COLPOSCOPY) and {image.file_format for image in cervical} == {FileFormat.PNG}
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
