#!/usr/bin/env python
"""Load benchmark: the app under gunicorn on PostgreSQL with Redis as the
Celery broker, and many concurrent users reading worklists and participants,
screening, enrolling, randomizing and uploading images for a bounded time.

    python bench/load.py [--users 50] [--duration 60] [--participants 300]
        [--think 1.0] [--database-url postgres://postgres@127.0.0.1:5432/load_bench]
        [--redis-url redis://127.0.0.1:6379/14] [--check]

    CI, small: python bench/load.py --users 10 --duration 15 --participants 60 --check

Set-up, all through the services and outside the measured window: the
PostgreSQL database named is dropped, created afresh and migrated; a
recruiting trial (bench/randomization_concurrency.py's build_trial: 3 sites,
both indications, permuted blocks) whose shipped thyroid checkpoint is
deployed; the users of the run, by role: coordinators (one site each),
clinician readers (one site each), blinded panel readers, monitors and trial
admins (the whole trial). The data grow in two steps, a fifth of
--participants and then all of them: each step enrolls its participants,
randomizes two in three and gives each randomized participant an accepted
image row (no pixels: the lists need rows, not files) and its reading tasks
by rule (readings.services.reading_tasks_ensure), so that readers have
worklists of realistic size (the default policy sends every case to two
panel readers).

Queries: after each step every page and API read of the run is requested
once per role in this process through Django's test Client (the whole
middleware stack) under django.test.utils.CaptureQueriesContext; the table
gives the queries of one request at both sizes. A count that grows with the
data is an N+1.

Load: gunicorn (config/gunicorn.py: gthread workers, DEBUG off, the same
settings as production but plain HTTP) on a free port, the Celery broker on
Redis (jobs just queue: no worker runs). Every user is signed in beforehand
(a session for the pages, an API token for the API; the password hasher is
deliberately slow and is not what is measured), then --users threads, one
per user, each with its own keep-alive connection, run for --duration
seconds: pick an action by the role's weights, send it, wait --think
seconds on average (uniformly 0.5–1.5 times it) as a person would, repeat.
Coordinators list and open participants (pages and API), open the
dashboard and the screening list, screen, assess, consent (enroll) and
randomize a new person (four API writes), and upload a real image through
the upload API (a DICOM ultrasound from pydicom's test files, each with a new
instance UID, for thyroid participants; a PNG photograph for cervical ones).
Readers open their worklist (page and API) and cases (page and API).
Monitors browse the audit trail (page and API), the reading oversight and
participants; trial admins the AI operations page, oversight and the audit
trail.

Prints the load average at start and end, requests per second, p50/p95/p99
latency and errors per kind (with the first error bodies), whether every
page and API read met p95 ≤ 250 ms (the issue's target; reported, never
asserted), the query table, and as its last line one JSON object with every
figure. With --check the exit status is 1 when any request failed or any
page's query count grew with the data; latency never fails it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import io
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from randomization_concurrency import (
    add_accepted_image_rows,
    build_trial,
    enroll_one,
    percentile,
    recreate_database,
    start_django,
)
from redis.exceptions import RedisError

ROOT = Path(__file__).resolve().parent.parent
TARGET_P95_MS = 250.0
BATCH = 100
ERROR_BODIES = 5
# Share of each role among the users (50 users: 20 coordinators, 12
# clinicians, 10 panel readers, 6 monitors, 2 trial admins).
ROLE_SHARES = (("coordinator", 0.40), ("clinician", 0.24), ("panel", 0.20), ("monitor", 0.12), ("admin", 0.04))
# Each role's actions and their weights; "enroll" is four writes in a row.
ACTIONS = {
    "coordinator": (
        ("participant_list_page", 12),
        ("participant_list_api", 10),
        ("participant_detail_page", 12),
        ("participant_detail_api", 10),
        ("dashboard_page", 8),
        ("screening_list_page", 8),
        ("enroll", 20),
        ("upload", 20),
    ),
    "clinician": (("worklist_page", 35), ("worklist_api", 35), ("case_page", 15), ("case_api", 15)),
    "panel": (("worklist_page", 35), ("worklist_api", 35), ("case_page", 15), ("case_api", 15)),
    "monitor": (
        ("audit_list_page", 25),
        ("audit_list_api", 20),
        ("oversight_page", 20),
        ("participant_list_page", 20),
        ("participant_detail_page", 15),
    ),
    "admin": (("ai_operations_page", 35), ("oversight_page", 30), ("audit_list_page", 35)),
}
WRITES = ("screening_create", "eligibility_assess", "enroll_consent", "randomize", "upload")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50, help="Concurrent users (threads), at least 5.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of load.")
    parser.add_argument("--participants", type=int, default=300, help="Enrolled participants at the larger size.")
    parser.add_argument("--think", type=float, default=1.0, help="A user's mean pause between requests, seconds.")
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/load_bench",
        help="A PostgreSQL database that is dropped and created afresh.",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/14",
        help="The Celery broker; its database is emptied at the end only if it was empty at the start.",
    )
    parser.add_argument("--seed", type=int, default=1, help="Seed of the data and of the users' choices.")
    parser.add_argument(
        "--check", action="store_true", help="Exit 1 on any failed request or any query count that grows."
    )
    arguments = parser.parse_args()
    if arguments.users < len(ROLE_SHARES):
        parser.error(f"--users must be at least {len(ROLE_SHARES)} (one per role)")
    if arguments.duration <= 0 or arguments.think < 0:
        parser.error("--duration must be positive and --think not negative")
    if arguments.participants < 30:
        parser.error("--participants must be at least 30 (the smaller size is a fifth of it)")
    if not arguments.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL")
    if not arguments.redis_url.startswith("redis://"):
        parser.error("--redis-url must be a redis:// URL")
    return arguments


def role_counts(users: int) -> dict[str, int]:
    """Users per role: one of each at least, the rest by share."""
    counts = {role: max(1, round(share * users)) for role, share in ROLE_SHARES}
    while sum(counts.values()) > users:
        counts[max(counts, key=lambda role: counts[role])] -= 1
    while sum(counts.values()) < users:
        counts["coordinator"] += 1
    return counts


# --- Set-up ---------------------------------------------------------------------------------


@dataclass
class Person:
    """One user of the run: who they are and what they hold."""

    role: str
    user: Any
    site_id: int | None
    token: str = ""
    session: str = ""
    participants: list[int] = field(default_factory=list)  # coordinators: their site's randomized participants


class Setup:
    def __init__(self, arguments: argparse.Namespace) -> None:
        from django.contrib.auth import get_user_model

        from ai_engine import services as ai_services
        from trial import services
        from trial.actors import Actor
        from trial.models import Participant, Role, Site

        self.rng = random.Random(arguments.seed)
        self.system = Actor.system("benchmark")
        self.small = arguments.participants // 5
        self.large = arguments.participants
        print(f"Building a recruiting trial with {self.small} enrolled participants ...", flush=True)
        self.trial, self.owners = build_trial(self.small, arguments.seed)
        self.sites = list(Site.objects.filter(trial=self.trial).order_by("code"))
        users = get_user_model().objects
        self.coordinators = {user.pk: user for user in users.filter(pk__in=set(self.owners.values()))}
        self.site_coordinator = {
            participant.site_id: self.coordinators[self.owners[participant.pk]]
            for participant in Participant.objects.filter(pk__in=self.owners)
        }
        model_version = ai_services.model_register(
            actor=self.system,
            path=ai_services.SHIPPED_CHECKPOINT,
            name="combined-thyroid-synthetic",
            version="1.0",
            indication="thyroid",
        )
        ai_services.model_activate(actor=self.system, trial=self.trial, model_version=model_version, reason="Benchmark")

        roles = {
            "coordinator": Role.COORDINATOR,
            "clinician": Role.CLINICIAN_READER,
            "panel": Role.BLINDED_READER,
            "monitor": Role.MONITOR,
            "admin": Role.TRIAL_ADMIN,
        }
        self.people: list[Person] = []
        for role, count in role_counts(arguments.users).items():
            for n in range(count):
                user = users.create_user(username=f"load-{role}-{n + 1:02d}", password=None)
                site = self.sites[n % len(self.sites)] if role in ("coordinator", "clinician") else None
                services.membership_grant(actor=self.system, user=user, trial=self.trial, role=roles[role], site=site)
                self.people.append(Person(role=role, user=user, site_id=site.pk if site else None))
        self.randomized: list[int] = []
        self.with_image: set[int] = set()
        self.grow(list(self.owners))

    def actor(self, user: Any) -> Any:
        from trial.actors import Actor

        return Actor(user=user, client_ip="127.0.0.1", request_id="bench")

    def enroll_more(self, count: int) -> None:
        from django.db import transaction

        started = time.perf_counter()
        new: list[int] = []
        for first in range(0, count, BATCH):
            with transaction.atomic():
                for _ in range(first, min(first + BATCH, count)):
                    site = self.rng.choice(self.sites)
                    coordinator = self.site_coordinator[site.pk]
                    participant = enroll_one(site, coordinator, self.rng)
                    self.owners[participant.pk] = coordinator.pk
                    new.append(participant.pk)
            print(f"  enrolled {min(first + BATCH, count)}/{count} ({time.perf_counter() - started:.1f} s)", flush=True)
        self.grow(new)

    def grow(self, participant_ids: list[int]) -> None:
        """Randomize two in three of these participants; each randomized one
        gets an accepted image row and its reading tasks by rule."""
        from django.db import transaction

        from randomization.services import participant_randomize
        from readings.services import reading_tasks_ensure
        from trial.models import Participant

        chosen = [pk for index, pk in enumerate(sorted(participant_ids)) if index % 3 != 2]
        started = time.perf_counter()
        for first in range(0, len(chosen), BATCH):
            batch = chosen[first : first + BATCH]
            with transaction.atomic():
                participants = list(
                    Participant.objects.filter(pk__in=batch).select_related("trial", "site", "screening")
                )
                for participant in participants:
                    coordinator = self.coordinators[self.owners[participant.pk]]
                    participant_randomize(actor=self.actor(coordinator), participant=participant)
                add_accepted_image_rows(participants, lambda p: self.coordinators[self.owners[p.pk]])
                for participant in participants:
                    reading_tasks_ensure(participant_id=participant.pk)
            self.randomized.extend(batch)
            self.with_image.update(batch)
            print(
                f"  randomized, with image and tasks: {first + len(batch)}/{len(chosen)} "
                f"({time.perf_counter() - started:.1f} s)",
                flush=True,
            )

    def sign_in(self) -> None:
        """A session and an API token for every user, made here (the slow
        password hasher is not what the run measures), and each
        coordinator's randomized participants; again after growing."""
        from django.conf import settings
        from django.test import Client
        from rest_framework.authtoken.models import Token

        from trial.models import Participant

        by_site: dict[int, list[int]] = defaultdict(list)
        for pk, site_id in Participant.objects.filter(pk__in=self.randomized).values_list("pk", "site_id"):
            by_site[site_id].append(pk)
        for person in self.people:
            if not person.session:
                client = Client()
                client.force_login(person.user)
                person.session = client.cookies[settings.SESSION_COOKIE_NAME].value
                person.token = Token.objects.create(user=person.user).key
            if person.site_id is not None:
                person.participants = list(by_site[person.site_id])


# --- Requests ---------------------------------------------------------------------------------


def read_urls(setup: Setup, person: Person) -> dict[str, str]:
    """The page and API reads of one user, with the rows they open (their
    first participant, the first task of their worklist)."""
    from django.urls import reverse

    from readings import selectors as reading_selectors

    mine: dict[str, str] = {}
    if person.role in ("coordinator", "monitor"):
        participant = person.participants[0] if person.participants else setup.randomized[0]
        mine["participant_list_page"] = reverse("trial:participant_list")
        mine["participant_detail_page"] = reverse("trial:participant_detail", kwargs={"pk": participant})
    if person.role == "coordinator":
        mine["participant_list_api"] = reverse("api-participant-list")
        mine["participant_detail_api"] = reverse("api-participant-detail", kwargs={"pk": participant})
        mine["dashboard_page"] = reverse("trial:dashboard")
        mine["screening_list_page"] = reverse("trial:screening_list")
    if person.role in ("clinician", "panel"):
        work = reading_selectors.worklist_page(person.user, limit=1)
        task = next(rows[0].task for rows in work.sections.values() if rows)
        mine["worklist_page"] = reverse("readings:worklist")
        mine["worklist_api"] = reverse("api-reading-tasks")
        mine["case_page"] = reverse("readings:task", kwargs={"pk": task.pk})
        mine["case_api"] = reverse("api-reading-task", kwargs={"pk": task.pk})
    if person.role in ("monitor", "admin"):
        mine["audit_list_page"] = reverse("trial:audit_list")
        mine["oversight_page"] = reverse("readings:oversight")
    if person.role == "monitor":
        mine["audit_list_api"] = reverse("api-audit-events")
    if person.role == "admin":
        mine["ai_operations_page"] = reverse("ai_engine:operations", kwargs={"code": setup.trial.code})
    return mine


def count_queries(setup: Setup) -> tuple[dict[str, int], dict[str, float]]:
    """Queries of one request of every read, by `role/kind`, through the
    test Client (the whole middleware stack), and its time alone (no other
    load of ours): the median of three after one warm-up."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    counts: dict[str, int] = {}
    alone_ms: dict[str, float] = {}
    people = {person.role: person for person in reversed(setup.people)}
    for role, person in people.items():
        client = Client(HTTP_AUTHORIZATION=f"Token {person.token}")
        client.force_login(person.user)
        for kind, url in read_urls(setup, person).items():
            client.get(url, secure=True)
            samples = []
            seconds = []
            for _ in range(3):
                started = time.perf_counter()
                with CaptureQueriesContext(connection) as captured:
                    response = client.get(url, secure=True)
                seconds.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise SystemExit(f"{role} {kind} {url}: status {response.status_code}")
                samples.append(len(captured.captured_queries))
            counts[f"{role}/{kind}"] = int(statistics.median(samples))
            alone_ms[f"{role}/{kind}"] = round(1000 * statistics.median(seconds), 1)
    return counts, alone_ms


class UploadFiles:
    """Real image files, each upload a new one (the server takes a file it
    already holds for the participant as a duplicate), made cheaply so that
    the users' own work does not load the machine: pydicom's real colour
    ultrasound file with a new SOP instance UID written over the old one
    (same length, so the file stays valid), and a 640 × 480 PNG photograph
    made once, with a new text chunk each time (metadata a camera could
    write; de-identification strips it)."""

    def __init__(self, dicom: bytes, seed: int) -> None:
        import numpy as np
        import pydicom
        from PIL import Image

        self.dicom = dicom
        self.uid = str(pydicom.dcmread(io.BytesIO(dicom)).SOPInstanceUID).encode()
        if dicom.count(self.uid) < 1:
            raise SystemExit("the DICOM template does not hold its SOP instance UID as written")
        generator = np.random.default_rng(seed)
        rows = np.linspace(40, 220, 480, dtype=np.float32)[:, None, None]
        columns = np.linspace(30, 200, 640, dtype=np.float32)[None, :, None]
        picture = (rows + columns) / 2 + generator.normal(0, 12, (480, 640, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        self.png = buffer.getvalue()
        self.lock = threading.Lock()
        self.made = 0

    def _next(self) -> int:
        with self.lock:
            self.made += 1
            return self.made

    def ultrasound(self) -> bytes:
        number = str(self._next())
        # A UID of the same length under the 2.25 (UUID-derived) root.
        uid = ("2.25.1" + number.rjust(len(self.uid) - 6, "0")).encode()[: len(self.uid)]
        return self.dicom.replace(self.uid, uid)

    def photograph(self) -> bytes:
        import struct
        import zlib

        text = b"Comment\x00upload " + str(self._next()).encode()
        chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
        end = self.png.rindex(b"IEND") - 4  # the IEND chunk starts with its length
        return self.png[:end] + chunk + self.png[end:]


@dataclass
class Sample:
    kind: str
    seconds: float
    status: int
    error: str = ""


class User(threading.Thread):
    """One person using the app: their own keep-alive connection, a choice
    of action by the role's weights, a pause, again, until the deadline."""

    def __init__(
        self,
        person: Person,
        urls: dict[str, str],
        port: int,
        extra: dict[str, Any],
        seed: int,
        think: float,
        start: threading.Event,
        deadline: list[float],
    ) -> None:
        super().__init__(daemon=True)
        self.person = person
        self.urls = urls
        self.port = port
        self.extra = extra
        self.rng = random.Random(seed)
        self.think = think
        self.start_event = start
        self.deadline = deadline
        self.samples: list[Sample] = []
        self.connection: http.client.HTTPConnection | None = None
        kinds, weights = zip(*ACTIONS[person.role], strict=True)
        self.kinds = list(kinds)
        self.weights = list(weights)

    def _request(
        self, kind: str, method: str, url: str, body: bytes | None = None, content_type: str = "", page: bool = False
    ) -> tuple[int, bytes]:
        headers = {"Host": "127.0.0.1", "Accept": "text/html" if page else "application/json"}
        if page:
            headers["Cookie"] = f"sessionid={self.person.session}"
        else:
            headers["Authorization"] = f"Token {self.person.token}"
        if content_type:
            headers["Content-Type"] = content_type
        started = time.perf_counter()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.connection.request(method, url, body=body, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
            status = response.status
            if response.getheader("Connection", "").lower() == "close":
                self.connection.close()
                self.connection = None
        except (OSError, http.client.HTTPException) as error:
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            self.samples.append(Sample(kind, time.perf_counter() - started, 0, f"{type(error).__name__}: {error}"))
            return 0, b""
        seconds = time.perf_counter() - started
        expected = {"upload": (201,), "randomize": (201,), "screening_create": (201,), "enroll_consent": (201,)}
        ok = status in expected.get(kind, (200,))
        self.samples.append(Sample(kind, seconds, status, "" if ok else data[:400].decode("utf-8", "replace")))
        return (status if ok else -status), data

    def _json(self, kind: str, url: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        status, data = self._request(kind, "POST", url, json.dumps(payload).encode(), "application/json")
        return json.loads(data) if status > 0 else None

    def enroll(self) -> None:
        """Screen, assess, consent and randomize one new person, as the
        coordinator's screens would, through the API."""
        from django.urls import reverse

        thyroid = self.rng.random() < 0.5
        entry = self._json(
            "screening_create",
            reverse("api-screening-list"),
            {
                "site": self.person.site_id,
                "screened_on": dt.date.today().isoformat(),
                "indication": "thyroid" if thyroid else "cervical",
                "year_of_birth": self.rng.randint(1961, 2000),
                "sex": self.rng.choice(["female", "male"]) if thyroid else "female",
            },
        )
        if entry is None:
            return
        if (
            self._json(
                "eligibility_assess", reverse("api-eligibility", kwargs={"pk": entry["id"]}), {"answers": {"IN1": True}}
            )
            is None
        ):
            return
        consented = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        participant = self._json(
            "enroll_consent",
            reverse("api-enroll", kwargs={"pk": entry["id"]}),
            {"form_version": "1.0", "consented_at": consented.isoformat(), "taken_by": self.person.user.pk},
        )
        if participant is None:
            return
        status, _ = self._request("randomize", "POST", reverse("api-randomize", kwargs={"pk": participant["id"]}))
        if status > 0:
            self.person.participants.append(participant["id"])
            self.extra["indication"][participant["id"]] = "thyroid" if thyroid else "cervical"

    def upload(self) -> None:
        from django.urls import reverse

        if not self.person.participants:
            return
        pk = self.rng.choice(self.person.participants)
        files: UploadFiles = self.extra["files"]
        if self.extra["indication"][pk] == "thyroid":
            name, data, kind = "ultrasound.dcm", files.ultrasound(), "application/dicom"
        else:
            name, data, kind = "photograph.png", files.photograph(), "image/png"
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                f"Content-Type: {kind}\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        self._request(
            "upload",
            "POST",
            reverse("api-participant-images", kwargs={"pk": pk}),
            body,
            f"multipart/form-data; boundary={boundary}",
        )

    def run(self) -> None:
        self.start_event.wait()
        while time.perf_counter() < self.deadline[0]:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            if kind == "enroll":
                self.enroll()
            elif kind == "upload":
                self.upload()
            else:
                self._request(kind, "GET", self.urls[kind], page=kind.endswith("_page"))
            pause = self.think * self.rng.uniform(0.5, 1.5)
            if time.perf_counter() + pause >= self.deadline[0]:
                break
            time.sleep(pause)
        if self.connection is not None:
            self.connection.close()


def warm_up(users: list[User]) -> None:
    """Every read of every user twice, unmeasured: each worker process
    opens its database connection and compiles its templates before the
    run, as a server that has been up a while has."""

    def reads(user: User) -> None:
        for _ in range(2):
            for kind, url in user.urls.items():
                user._request(kind, "GET", url, page=kind.endswith("_page"))

    # All users at once, so that every worker process gets its share.
    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(reads, users))
    for user in users:
        failed = [sample for sample in user.samples if sample.error]
        if failed:
            raise SystemExit(f"warm-up request failed: {failed[0].kind} status {failed[0].status}: {failed[0].error}")
        user.samples.clear()


# --- The server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_gunicorn(port: int, environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "config" / "gunicorn.py"), "config.wsgi"]
    with log.open("wb") as output:
        server = subprocess.Popen(  # noqa: S603 — our own interpreter and fixed arguments
            command, cwd=ROOT, env={**environment, "GUNICORN_BIND": f"127.0.0.1:{port}"}, stdout=output, stderr=output
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/accounts/login/", headers={"Host": "127.0.0.1"})
            status = connection.getresponse().status
            connection.close()
            if status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"gunicorn did not answer on port {port} within 120 s:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# --- Figures ---------------------------------------------------------------------------------


def summarize(samples: list[Sample], duration: float) -> dict[str, Any]:
    by_kind: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_kind[sample.kind].append(sample)
    kinds: dict[str, Any] = {}
    for kind in sorted(by_kind):
        values = [1000 * sample.seconds for sample in by_kind[kind]]
        kinds[kind] = {
            "n": len(values),
            "per_s": round(len(values) / duration, 2),
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
            "p99_ms": round(percentile(values, 0.99), 1),
            "max_ms": round(max(values), 1),
            "errors": sum(1 for sample in by_kind[kind] if sample.error),
        }
    reads = [1000 * sample.seconds for sample in samples if sample.kind not in WRITES]
    return {
        "requests": len(samples),
        "per_s": round(len(samples) / duration, 2),
        "errors": sum(1 for sample in samples if sample.error),
        "reads_p95_ms": round(percentile(reads, 0.95), 1) if reads else None,
        "kinds": kinds,
    }


def redis_database(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5)


def main() -> None:
    arguments = parse_arguments()
    cores = os.cpu_count() or 1
    load_start = [round(x, 2) for x in os.getloadavg()]
    print(f"Cores: {cores}; load average at start (1, 5, 15 min): {load_start[0]} {load_start[1]} {load_start[2]}")
    broker = redis_database(arguments.redis_url)
    try:
        broker_was_empty = broker.dbsize() == 0
    except (OSError, RedisError) as error:
        raise SystemExit(f"Redis at {arguments.redis_url} does not answer: {error}") from error
    work = Path(tempfile.mkdtemp(prefix="consilium-bench-load-"))
    environment = {
        "CONSILIUM_VAR_DIR": str(work / "var"),
        "MEDIA_ROOT": str(work / "media"),
        "CELERY_BROKER_URL": arguments.redis_url,
        "ALLOWED_HOSTS": "127.0.0.1,testserver",
        # Plain HTTP on the loopback: no redirect to HTTPS (a proxy would
        # terminate TLS in production).
        "SECURE_SSL_REDIRECT": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(environment)
    server: subprocess.Popen[bytes] | None = None
    try:
        print(f"Recreating {urlsplit(arguments.database_url).path.lstrip('/')} and migrating ...", flush=True)
        recreate_database(arguments.database_url)
        start_django(arguments.database_url)
        from django.core.management import call_command
        from django.db import connections
        from pydicom.data import get_testdata_file

        from readings.selectors import worklist_page
        from trial.models import Participant

        # DEBUG off serves static files from the manifest: the pages need it.
        call_command("collectstatic", interactive=False, verbosity=0)
        setup = Setup(arguments)
        setup.sign_in()
        print(f"Counting queries at {setup.small} participants ...", flush=True)
        queries_small, _ = count_queries(setup)
        print(f"Growing to {setup.large} participants ...", flush=True)
        setup.enroll_more(setup.large - setup.small)
        setup.sign_in()
        print(f"Counting queries at {setup.large} participants ...", flush=True)
        queries_large, alone_ms = count_queries(setup)
        urls = [read_urls(setup, person) for person in setup.people]
        source = get_testdata_file("examples_rgb_color.dcm")
        if not isinstance(source, str):
            raise SystemExit("pydicom's test file examples_rgb_color.dcm is not installed")
        extra: dict[str, Any] = {
            "files": UploadFiles(Path(source).read_bytes(), arguments.seed),
            "indication": dict(
                Participant.objects.filter(trial=setup.trial).values_list("pk", "screening__indication")
            ),
        }
        sizes = {
            "participants": Participant.objects.filter(trial=setup.trial).count(),
            "randomized": len(setup.randomized),
        }
        for role in ("clinician", "panel"):
            sizes[f"tasks_per_{role}"] = max(
                sum(worklist_page(person.user, limit=0).counts.values())
                for person in setup.people
                if person.role == role
            )
        print(
            f"  {sizes['randomized']} randomized with an image; worklists: up to {sizes['tasks_per_clinician']} tasks "
            f"per clinician, {sizes['tasks_per_panel']} per panel reader",
            flush=True,
        )
        connections.close_all()

        port = free_port()
        print(f"Starting gunicorn (config/gunicorn.py) on 127.0.0.1:{port} ...", flush=True)
        server_environment = {
            **os.environ,
            "DEBUG": "0",
            "DATABASE_URL": arguments.database_url,
            # The users keep their connections for the whole run, as browsers
            # do between clicks; a shorter keep-alive makes the server close
            # one just as a user sends on it.
            "GUNICORN_KEEPALIVE": str(int(arguments.duration + 120)),
        }
        server = start_gunicorn(port, server_environment, work / "gunicorn.log")
        start = threading.Event()
        deadline = [0.0]
        users = [
            User(person, urls[n], port, extra, arguments.seed * 1000 + n, arguments.think, start, deadline)
            for n, person in enumerate(setup.people)
        ]
        warm_up(users)
        for user in users:
            user.start()
        load_before = [round(x, 2) for x in os.getloadavg()]
        print(
            f"{len(users)} users for {arguments.duration:.0f} s (think time {arguments.think} s on average); "
            f"load average now {' '.join(map(str, load_before))} ...",
            flush=True,
        )
        began = time.perf_counter()
        deadline[0] = began + arguments.duration
        start.set()
        for user in users:
            user.join(arguments.duration + 120)
        elapsed = time.perf_counter() - began
        load_end = [round(x, 2) for x in os.getloadavg()]
        samples = [sample for user in users for sample in user.samples]
        figures = summarize(samples, elapsed)
        stop(server)
        server = None
        server_log = (work / "gunicorn.log").read_text(errors="replace").splitlines()
    finally:
        if server is not None:
            stop(server)
        if broker_was_empty:
            broker.flushdb()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"Load: {len(users)} users ({', '.join(f'{n} {role}' for role, n in role_counts(arguments.users).items())}), "
        f"{elapsed:.1f} s, think time {arguments.think} s; {cores} cores; "
        f"{sizes['participants']} participants before the run"
    )
    print(f"Load average before the run {' '.join(map(str, load_before))}, at its end {' '.join(map(str, load_end))}")
    print(f"Requests: {figures['requests']} ({figures['per_s']} per second), errors: {figures['errors']}")
    print(f"  {'kind':<26} {'n':>6} {'per s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    for kind, row in figures["kinds"].items():
        print(
            f"  {kind:<26} {row['n']:>6} {row['per_s']:>7.2f} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
            f"{row['p99_ms']:>8.1f} {row['max_ms']:>8.1f} {row['errors']:>7}"
        )
    missed = [kind for kind, row in figures["kinds"].items() if kind not in WRITES and row["p95_ms"] > TARGET_P95_MS]
    figures["reads_over_target"] = missed
    print(
        f"Target p95 ≤ {TARGET_P95_MS:.0f} ms for pages and API reads: "
        + ("met by every kind" if not missed else f"missed by {', '.join(missed)}")
        + f" (all reads together: p95 {figures['reads_p95_ms']} ms)"
    )
    errors = [sample for sample in samples if sample.error]
    if errors:
        print(f"First {min(ERROR_BODIES, len(errors))} errors:")
        for sample in errors[:ERROR_BODIES]:
            print(f"  {sample.kind} status {sample.status}: {sample.error[:300]!r}")
        print("The server's log, last 20 lines:")
        for line in server_log[-20:]:
            print(f"  {line}")
    print()
    print(
        f"Queries of one request at {setup.small} and {setup.large} participants, and the time of one request "
        "alone at the larger size (in-process test Client, before the run):"
    )
    print(f"  {'role/kind':<40} {'small':>6} {'large':>6} {'alone ms':>9}")
    grown = []
    for key in queries_small:
        same = queries_small[key] == queries_large.get(key)
        if not same:
            grown.append(key)
        print(
            f"  {key:<40} {queries_small[key]:>6} {queries_large.get(key, -1):>6} {alone_ms.get(key, 0):>9.1f}"
            + ("" if same else "  GROWS")
        )
    print("Query counts: " + ("the same at both sizes." if not grown else f"grow for {', '.join(grown)}"))
    figures.update(
        {
            "cores": cores,
            "users": len(users),
            "duration_s": round(elapsed, 1),
            "think_s": arguments.think,
            "load_average_at_start": load_start,
            "load_average_before_run": load_before,
            "load_average_at_end": load_end,
            "sizes": sizes,
            "queries": {"small": queries_small, "large": queries_large, "participants": [setup.small, setup.large]},
            "alone_ms": alone_ms,
            "queries_grow": grown,
        }
    )
    print(json.dumps(figures))
    if arguments.check and (figures["errors"] or grown):
        print(
            "Check failed: "
            + "; ".join(
                part
                for part in (
                    f"{figures['errors']} requests failed" if figures["errors"] else "",
                    f"queries grow for {', '.join(grown)}" if grown else "",
                )
                if part
            )
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
