"""Faults of the running system, each with the real thing failing:
PostgreSQL restarted under concurrent writes (a cluster of the test's own,
the app under gunicorn), Redis stopped while images are uploaded (a Redis of
the test's own, a real worker), the image storage full (a tiny tmpfs, or a
real file-size limit where mounting is not allowed).

A worker killed mid-inference is tests/test_ai_worker.py::
test_a_worker_killed_during_a_task_leaves_exactly_one_result."""

from __future__ import annotations

import datetime as dt
import errno
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ELIGIBLE_CERVICAL, PASSWORD
from tests.faults import BASE_DIR, AppServer, PostgresCluster, app_environment, run_module
from trial.middleware import DATABASE_LOST_AFTER_SAVING, DATABASE_UNAVAILABLE

# --- PostgreSQL restarted during writes ------------------------------------------------------

CLIENTS = 4
FLOWS_BETWEEN_RESTARTS = 2
REQUEST_TIMEOUT = 30.0  # a request that hangs longer fails the test


@dataclass
class Call:
    step: str
    request_id: str
    status: int  # 0: no HTTP answer at all
    content_type: str
    body: str
    seconds: float

    @property
    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Flow:
    """One participant's way through screening, eligibility, enrollment with
    consent and randomization, each step repeated after a 503 until it
    succeeds (screening under one Idempotency-Key)."""

    screening_id: int | None = None
    participant_id: int | None = None
    randomized: bool = False
    calls: list[Call] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.randomized


class Clients:
    """Coordinators writing through the API at the same time."""

    def __init__(self, server: AppServer, seeded: dict[str, Any]) -> None:
        self.server = server
        self.seeded = seeded
        self.stop = threading.Event()
        self.flows: list[Flow] = []
        self.page_calls: list[Call] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._logged_in: requests.Session | None = None
        self._threads = [threading.Thread(target=self._write, daemon=True) for _ in range(CLIENTS)]
        self._threads.append(threading.Thread(target=self._browse, daemon=True))

    def start(self) -> None:
        self._page_session()  # logged in before the faults begin
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
            assert not thread.is_alive(), "a client never finished: a request hung"

    def completed(self) -> int:
        with self._lock:
            return sum(flow.complete for flow in self.flows)

    def wait_for_flows(self, count: int, *, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while self.completed() < count:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, (
                f"only {self.completed()} of {count} flows completed:\n{self.server.log()[-3000:]}"
            )
            time.sleep(0.1)

    def call(self, session: requests.Session, step: str, method: str, path: str, **options: Any) -> Call:
        request_id = f"fault-{step}-{uuid.uuid4().hex}"
        headers = {"X-Request-ID": request_id, **options.pop("headers", {})}
        started = time.monotonic()
        try:
            response = session.request(
                method,
                self.server.url + path,
                headers=headers,
                timeout=REQUEST_TIMEOUT,
                allow_redirects=False,
                **options,
            )
        except requests.RequestException as error:
            return Call(step, request_id, 0, "", repr(error), time.monotonic() - started)
        return Call(
            step,
            request_id,
            response.status_code,
            response.headers.get("Content-Type", ""),
            response.text,
            time.monotonic() - started,
        )

    def _until_done(
        self, flow: Flow, session: requests.Session, step: str, path: str, *, method: str = "POST", **options: Any
    ) -> Call:
        """Repeat the request after a 503 that says nothing was saved, as
        the message asks; stop at any other answer, a 503 that says the
        change was saved included (the caller reloads instead)."""
        for _ in range(300):
            call = self.call(session, step, method, path, **options)
            flow.calls.append(call)
            if call.status != 503 or DATABASE_LOST_AFTER_SAVING in call.body:
                return call
            time.sleep(0.1)
        raise AssertionError(f"{step} still failing after 300 tries")

    def _reload_entry(self, flow: Flow, session: requests.Session) -> dict[str, Any]:
        """What the coordinator sees on reloading the screening entry."""
        while True:
            call = self._until_done(flow, session, "reload", f"/api/v1/screening/{flow.screening_id}/", method="GET")
            if call.status == 200:
                return dict(call.json)
            time.sleep(0.1)

    def flow(self, session: requests.Session) -> Flow:
        """One participant's way; each step either succeeds, or fails with a
        503 saying nothing was saved (repeated), or says its change was saved
        (the entry is reloaded to go on). Screening (one Idempotency-Key)
        and randomization (exactly once) may simply be repeated."""
        flow = Flow()
        with self._lock:
            self.flows.append(flow)
        screened_on = (dt.date.today() - dt.timedelta(days=1)).isoformat()
        body = {
            "site": self.seeded["site"],
            "screened_on": screened_on,
            "indication": "cervical",
            "year_of_birth": 1980,
            "sex": "female",
        }
        key = str(uuid.uuid4())
        call = self._until_done(
            flow, session, "screening", "/api/v1/screening/", json=body, headers={"Idempotency-Key": key}
        )
        while call.status == 503:  # saved: the same key returns the entry
            call = self._until_done(
                flow, session, "screening", "/api/v1/screening/", json=body, headers={"Idempotency-Key": key}
            )
        if call.status != 201:
            return flow
        flow.screening_id = call.json["id"]
        call = self._until_done(
            flow,
            session,
            "eligibility",
            f"/api/v1/screening/{flow.screening_id}/eligibility/",
            json={"answers": ELIGIBLE_CERVICAL},
        )
        if call.status == 503 and self._reload_entry(flow, session)["status"] != "eligible":
            return flow
        if call.status not in (200, 503):
            return flow
        consented_at = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat()
        enroll = {
            "form_version": "1.0",
            "consented_at": consented_at,
            "taken_by": self.seeded["user"],
            "covariates": {"hpv_status": "positive"},
        }
        call = self._until_done(flow, session, "enroll", f"/api/v1/screening/{flow.screening_id}/enroll/", json=enroll)
        if call.status == 503:
            participant = self._reload_entry(flow, session)["participant"]
            flow.participant_id = participant["id"] if participant else None
        elif call.status == 201:
            flow.participant_id = call.json["id"]
        if flow.participant_id is None:
            return flow
        path = f"/api/v1/participants/{flow.participant_id}/randomize/"
        call = self._until_done(flow, session, "randomize", path)
        while call.status == 503:  # saved: a repeated request returns the allocation
            call = self._until_done(flow, session, "randomize", path)
        flow.randomized = call.status in (200, 201)
        return flow

    def outage_calls(self) -> tuple[Call, Call]:
        """A page (logged in) and a screening write, once each."""
        page = self.call(self._page_session(), "page", "GET", "/participants/")
        body = {
            "site": self.seeded["site"],
            "screened_on": dt.date.today().isoformat(),
            "indication": "thyroid",
            "year_of_birth": 1970,
            "sex": "male",
        }
        write = self.call(self._api_session(), "screening", "POST", "/api/v1/screening/", json=body)
        return page, write

    def _api_session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {self.seeded['token']}"
        return session

    def _write(self) -> None:
        session = self._api_session()
        try:
            while not self.stop.is_set():
                self.flow(session)
        except Exception as error:  # reported by the test, not lost in the thread
            self.errors.append(repr(error))

    def _page_session(self) -> requests.Session:
        """A session logged in through the login form (tried again while
        the database is away, as a person would)."""
        while self._logged_in is None:
            session = requests.Session()
            session.get(self.server.url + "/accounts/login/", timeout=REQUEST_TIMEOUT)
            login = session.post(
                self.server.url + "/accounts/login/",
                data={
                    "username": self.seeded["username"],
                    "password": PASSWORD,
                    "csrfmiddlewaretoken": session.cookies["csrftoken"],
                },
                headers={"Referer": self.server.url + "/accounts/login/"},
                timeout=REQUEST_TIMEOUT,
                allow_redirects=False,
            )
            if login.status_code == 503:
                time.sleep(0.2)
                continue
            assert login.status_code == 302, login.text[:500]
            self._logged_in = session
        return self._logged_in

    def _browse(self) -> None:
        """A coordinator on the pages, logged in with a session."""
        try:
            session = self._page_session()
            while not self.stop.is_set():
                self.page_calls.append(self.call(session, "page", "GET", "/participants/"))
                time.sleep(0.2)
        except Exception as error:
            self.errors.append(repr(error))


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


def test_postgresql_restarted_during_writes_fails_requests_cleanly_and_loses_nothing(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> None:
    postgres_cluster.create_database("faults_app")
    environment = app_environment(postgres_cluster.url("faults_app"), tmp_path / "var")
    seeded = run_module("seed", environment)
    server = AppServer(environment, tmp_path / "gunicorn.log")
    clients = Clients(server, seeded)
    restarts: dict[str, float] = {}
    try:
        clients.start()
        target = FLOWS_BETWEEN_RESTARTS
        for mode in ("fast", "immediate"):
            clients.wait_for_flows(target)
            started = time.monotonic()
            postgres_cluster.restart(mode)
            restarts[mode] = time.monotonic() - started
            # The app recovers by itself: flows complete again after the restart.
            target = clients.completed() + FLOWS_BETWEEN_RESTARTS
        clients.wait_for_flows(target)
        clients.join()
        assert not clients.errors, clients.errors
        # A new participant right after: every step succeeds at the first try.
        after = clients.flow(clients._api_session())
        assert after.complete and all(call.status in (200, 201) for call in after.calls), after.calls
        # While the database is down: a page and a write answer 503 at once.
        postgres_cluster.stop()
        page, write = clients.outage_calls()
        postgres_cluster.start()
        _, recovered = clients.outage_calls()
    finally:
        clients.stop.set()
        server.stop()
    log = server.log()

    calls = [call for flow in clients.flows for call in flow.calls]
    everything = calls + clients.page_calls
    failed = [call for call in everything if call.status == 503]
    summary = {
        "flows": len(clients.flows),
        "requests": len(everything),
        "503": len(failed),
        "pages": len(clients.page_calls),
        "pages_503": sum(call.status == 503 for call in clients.page_calls),
        "lost_after_saving": sum(DATABASE_LOST_AFTER_SAVING in call.body for call in failed),
        "restart_seconds": {mode: round(seconds, 2) for mode, seconds in restarts.items()},
        "slowest": max((round(call.seconds, 2), call.step, call.status) for call in everything),
    }
    print(f"\nPostgreSQL restarts: {summary}")

    # Every request got an answer: success, or a clean 503 (never a hang, a
    # dropped connection, a 500 or a traceback page).
    unexpected = [call for call in everything if call.status not in (200, 201, 503)]
    assert not unexpected, [(call.step, call.status, call.body[:300]) for call in unexpected]
    assert failed, f"no request met the restarts: {summary}"
    assert not [call for call in everything if "Traceback" in call.body]
    for call in failed:
        if call.step == "page":
            assert call.content_type.startswith("text/html"), call.body[:500]
            assert DATABASE_UNAVAILABLE in call.body or DATABASE_LOST_AFTER_SAVING in call.body, call.body[:500]
        else:
            assert call.content_type == "application/json", call.body[:500]
            assert call.json["code"] == "DatabaseUnavailable"
            assert call.json["detail"] in (DATABASE_UNAVAILABLE, DATABASE_LOST_AFTER_SAVING)
    # With the database stopped: a plain page and a JSON answer saying so, at once.
    assert page.status == 503 and page.content_type.startswith("text/html"), (page.status, page.body[:500])
    assert DATABASE_UNAVAILABLE in page.body and "Traceback" not in page.body
    assert write.status == 503 and write.json == {"detail": DATABASE_UNAVAILABLE, "code": "DatabaseUnavailable"}
    assert recovered.status == 201, recovered.body[:500]
    # gunicorn never had to replace a worker: the same processes served throughout.
    assert log.count("Booting worker") == 2, log[-3000:]

    census = run_module("census", environment)
    flows = [flow for flow in clients.flows if flow.screening_id is not None]
    assert census["screening_ids"] == sorted([flow.screening_id for flow in flows] + [recovered.json["id"]])
    assert census["participant_ids"] == sorted(flow.participant_id for flow in flows if flow.participant_id)
    assert census["allocated_participant_ids"] == sorted(flow.participant_id for flow in flows if flow.randomized)
    assert all(flow.complete for flow in clients.flows), [flow.calls[-1] for flow in clients.flows if not flow.complete]
    assert census["participants_without_consent"] == []
    assert census["participants_without_enroll_event"] == []
    assert census["allocations_without_event"] == []
    # A 503 that says nothing was saved saved nothing: no audit event bears its request id.
    written = set(census["audit_request_ids"])
    said_nothing_saved = [call for call in [*calls, write] if call.status == 503 and DATABASE_UNAVAILABLE in call.body]
    assert not [call.request_id for call in said_nothing_saved if call.request_id in written]
    said_saved = [call for call in calls if call.status == 503 and DATABASE_LOST_AFTER_SAVING in call.body]
    assert all(call.request_id in written for call in said_saved)
    created = [call for call in calls if call.status == 201 and call.step in ("enroll", "randomize")]
    assert all(call.request_id in written for call in created)

    # `manage.py verify_audit`: the hash chain is intact after both restarts.
    assert census["verify_audit"]["exit"] == 0, census["verify_audit"]
    assert '"ok": true' in census["verify_audit"]["output"]
    print(f"verify_audit: {census['verify_audit']['output']}")


@pytest.mark.django_db(transaction=True)
def test_the_503_says_saved_only_when_a_write_of_the_request_committed(coordinator: Any, site_a: Any) -> None:
    """What the 503 tells the user rests on WriteTracker: a write counts once
    its transaction commits, never when it is rolled back."""
    from django.db import connection, transaction

    from trial import services
    from trial.actors import Actor
    from trial.errors import RuleViolation
    from trial.middleware import WriteTracker, database_unavailable_message

    actor = Actor(user=coordinator, client_ip="127.0.0.1", request_id="fault-tracker")
    request = type("Request", (), {})()
    request.database_writes = WriteTracker()
    with connection.execute_wrapper(request.database_writes):
        with pytest.raises(RuleViolation), transaction.atomic():
            services.screening_create(
                actor=actor,
                site=site_a,
                screened_on=dt.date.today(),
                indication="cervical",
                year_of_birth=1980,
                sex="female",
            )
            raise RuleViolation("rolled back after the write")
        assert database_unavailable_message(request) == DATABASE_UNAVAILABLE
        with transaction.atomic():
            services.screening_create(
                actor=actor,
                site=site_a,
                screened_on=dt.date.today(),
                indication="cervical",
                year_of_birth=1980,
                sex="female",
            )
            assert database_unavailable_message(request) == DATABASE_UNAVAILABLE  # not committed yet
    assert database_unavailable_message(request) == DATABASE_LOST_AFTER_SAVING


# --- The image storage full ------------------------------------------------------------------

SMALL_DISK_BYTES = 4 * 1024 * 1024


@pytest.fixture
def small_media(settings: Any, tmp_path: Path) -> Iterator[Path]:
    """MEDIA_ROOT on a tmpfs of 4 MB: a real file system that runs out of room."""
    media = tmp_path / "small-media"
    media.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_BYTES},mode=0755", "tmpfs", str(media)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"could not mount a tmpfs ({mounted.stderr.strip()}); the storage-full test needs root")
    settings.MEDIA_ROOT = media
    try:
        yield media
    finally:
        subprocess.run(["umount", "-l", str(media)], check=False)


def _fill_leaving(folder: Path, free_bytes: int) -> Path:
    """A filler file that leaves about `free_bytes` free on the file system."""
    filler = folder / "filler.bin"
    stats = os.statvfs(folder)
    size = stats.f_bavail * stats.f_frsize - free_bytes
    with open(filler, "wb") as handle:
        handle.write(b"\0" * size)
    return filler


def _files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_a_full_image_storage_gives_a_clear_error_and_keeps_nothing(
    small_media: Path, enroll: Any, block_scheme: Any, coordinator: Any
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from pydicom.data import get_testdata_file

    from imaging.models import Image
    from imaging.services import STORAGE_FULL_MESSAGE
    from tests.conftest import api_client
    from tests.imaging_files import randomized
    from trial.models import AuditEvent

    participant = randomized(enroll(indication="thyroid"), coordinator)
    data = Path(get_testdata_file("examples_rgb_color.dcm")).read_bytes()
    filler = _fill_leaving(small_media, len(data) // 2)  # the image's file is cut off half-way
    client = api_client(coordinator)
    url = f"/api/v1/participants/{participant.pk}/images/"
    events_before = AuditEvent.objects.count()

    full = client.post(url, {"file": SimpleUploadedFile("scan.dcm", data)}, format="multipart")

    assert full.status_code == 507, full.content
    [result] = full.json()
    assert result["status"] == "rejected" and result["image_id"] is None
    assert result["reason"] == STORAGE_FULL_MESSAGE
    assert not Image.objects.exists()  # no row, not even a rejected one: the file was fine
    assert AuditEvent.objects.count() == events_before
    assert _files_under(small_media) == ["filler.bin"]  # no partial file, no temporary file

    # The page says the same to a coordinator using the form.
    from tests.conftest import login

    page = login(coordinator).post(
        f"/imaging/participants/{participant.pk}/", {"file": SimpleUploadedFile("scan.dcm", data)}
    )
    assert page.status_code == 507
    assert "image storage is full" in page.content.decode()
    assert _files_under(small_media) == ["filler.bin"]

    filler.unlink()  # the data manager makes room
    stored = client.post(url, {"file": SimpleUploadedFile("scan.dcm", data)}, format="multipart")
    assert stored.status_code == 201, stored.content
    [image] = Image.objects.all()
    assert stored.json()[0]["image_id"] == image.pk and image.status != "rejected"
    assert AuditEvent.objects.filter(action="image.accept").count() == 1
    from imaging import storage

    storage.read_verified(image.file.name, image.sha256)  # whole, not the piece of the failed try


# --- Redis stopped while images are uploaded -------------------------------------------------

ULTRASOUND_FILES = ["examples_rgb_color.dcm", "examples_palette.dcm", "examples_jpeg2k.dcm", "examples_ybr_color.dcm"]


@pytest.mark.django_db(transaction=True)
def test_uploads_during_a_redis_outage_are_accepted_and_each_gets_exactly_one_result_when_it_is_back(
    recruiting: Any,
    users: dict[str, Any],
    enroll: Any,
    block_scheme: Any,
    coordinator: Any,
    own_redis: Any,
    start_celery_worker: Any,
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from pydicom.data import get_testdata_file

    from ai_engine import jobs
    from ai_engine import services as ai_services
    from ai_engine.models import AiResult, AiResultStatus
    from imaging import storage
    from imaging.models import Image
    from tests.celery_worker import publishing_to, wait_until
    from tests.conftest import actor_for, api_client
    from tests.imaging_files import randomized
    from trial.audit import verify_chain
    from trial.models import AuditEvent

    model_version = ai_services.model_register(
        actor=ai_services.AI_ENGINE,
        path=ai_services.SHIPPED_CHECKPOINT,
        name="combined-thyroid-synthetic",
        version="1.0",
        indication="thyroid",
    )
    ai_services.model_activate(
        actor=actor_for(users["trial_admin"]), trial=recruiting, model_version=model_version, reason="Deployed"
    )
    participant = randomized(enroll(indication="thyroid"), coordinator)
    client = api_client(coordinator)
    url = f"/api/v1/participants/{participant.pk}/images/"
    finished = (AiResultStatus.DONE, AiResultStatus.ABSTAINED)

    def upload(name: str) -> tuple[int, float]:
        started = time.monotonic()
        data = Path(get_testdata_file(name)).read_bytes()
        response = client.post(url, {"file": SimpleUploadedFile(name, data)}, format="multipart")
        assert response.status_code == 201, response.content
        [result] = response.json()
        assert result["status"] == "accepted", result
        return int(result["image_id"]), time.monotonic() - started

    def finished_results(count: int) -> list[AiResult]:
        results = list(AiResult.objects.filter(status__in=finished))
        if any(ai_services.exports_pending(result) for result in results):
            return []
        return results if len(results) >= count else []

    own_redis.start()
    worker = start_celery_worker(own_redis.url)
    with publishing_to(own_redis.url):
        # Broker up: the job goes straight to the running worker.
        first, _ = upload(ULTRASOUND_FILES[0])
        wait_until(lambda: finished_results(1), timeout=120, what="the first result", worker=worker)

        own_redis.stop()  # the broker goes away under the running app and worker
        during = [upload(name) for name in ULTRASOUND_FILES[1:]]
        outage_ids = [image_id for image_id, _ in during]
        for image in Image.objects.filter(pk__in=outage_ids):
            storage.read_verified(image.file.name, image.sha256)  # stored whole
        waiting = AiResult.objects.filter(image_id__in=outage_ids)
        assert sorted(result.image_id for result in waiting) == sorted(outage_ids)
        # The jobs wait in the outbox: queued, never handed to the broker.
        assert all(r.status == AiResultStatus.QUEUED and r.dispatched_at is None for r in waiting)
        assert jobs.dispatch_pending().dispatched == 0  # the sweeper, while the broker is still down

        own_redis.start()  # back on the same port
        sweep = jobs.dispatch_pending()  # as Celery beat runs it every 30 s
        assert sweep.dispatched == len(outage_ids) and sweep.waiting == 0
        # The worker reconnects by itself and does the work.
        results = wait_until(
            lambda: finished_results(len(ULTRASOUND_FILES)), timeout=180, what="the delayed results", worker=worker
        )
        assert jobs.dispatch_pending().dispatched == 0  # nothing is sent twice
    print(
        f"\nRedis outage: uploads took {[round(seconds, 2) for _, seconds in during]} s each, "
        f"results {[(r.image_id, r.status) for r in results]}"
    )
    assert sorted(result.image_id for result in results) == sorted([first, *outage_ids])
    assert AiResult.objects.count() == len(ULTRASOUND_FILES)  # exactly one per image
    assert all(result.attempts == 1 for result in results)
    assert AuditEvent.objects.filter(action="ai_result.store").count() == len(ULTRASOUND_FILES)
    assert "Connection to broker lost" in worker.log() or "Cannot connect to" in worker.log()
    assert verify_chain().ok


STORE_IN_CHILD = """
import sys
import django
django.setup()
from imaging import storage
data = open(sys.argv[1], "rb").read()
try:
    name, new = storage.store(data, "dcm")
    print("stored", name)
except storage.StorageFull as error:
    print("full", error.errno)
"""


def _store_in_a_child(media: Path, source: Path, *, max_file_bytes: int) -> str:
    """imaging.storage.store in a process of its own, where the kernel
    refuses to write a file past max_file_bytes (RLIMIT_FSIZE, SIGXFSZ
    ignored: the write fails with EFBIG): a real no-room error that needs no
    mount, without limiting the test process's own files."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    environment = {**os.environ, "MEDIA_ROOT": str(media), "PYTHONDONTWRITEBYTECODE": "1"}
    environment.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    completed = subprocess.run(
        [sys.executable, "-c", STORE_IN_CHILD, str(source)],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=limit,  # the limit and the ignored signal hold from the start of the child
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.strip().splitlines()[-1]


def test_a_write_cut_off_by_the_file_size_limit_leaves_no_partial_file(settings: Any, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    from imaging import storage

    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = media
    source = Path(get_testdata_file("examples_rgb_color.dcm"))
    assert _store_in_a_child(media, source, max_file_bytes=64 * 1024) == f"full {errno.EFBIG}"
    assert _files_under(media) == []  # the 64 KB written before the refusal are gone
    name, new = storage.store(source.read_bytes(), "dcm")
    assert new  # not mistaken for stored already by a piece left behind
    assert (media / name).read_bytes() == source.read_bytes()
