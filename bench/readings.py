#!/usr/bin/env python
"""Benchmark: the readings app on PostgreSQL: the reader's worklist and case
as pages and API, the viewer's pixels, a draft save and a signature.

    python bench/readings.py [--sizes 20,200,1000] [--repeat 30]
        [--database-url postgres://postgres@127.0.0.1:5432/consilium_bench_readings]

Set-up, all through the services: the PostgreSQL database named is dropped,
created afresh and migrated; a recruiting trial with as many enrolled
participants as the largest size (bench/randomization_concurrency.py's
build_trial: 3 sites, both indications, permuted blocks), every one of them
randomized; one clinician reader holding all three sites and two blinded
panel readers (the default reading policy sends every case to two panel
readers, so each reader has one task per case). The shipped thyroid
checkpoint is registered and deployed; the first thyroid participant of the
AI-assisted arm receives a real image, pydicom's 30-frame colour cine
(examples_ybr_color.dcm, 240 × 320) uploaded through
imaging.services.image_upload, whose AI result is computed in this process
(ai_engine.jobs.process). The other cases get an accepted image row each
(no pixels: the lists need rows, not files) and their tasks from
readings.services.reading_tasks_ensure, the rule that makes them. The
clinician and the first panel reader start the real case's tasks, so each
worklist has one task in progress and the rest pending.

Worklist, for each size (tasks per reader, the real case included): GET of
the page (readings:worklist) and of the API (api-reading-tasks) by the
clinician and by a panel reader, through Django's test Client (the whole
middleware stack, session and messages included; HTTPS as deployed):
p50/p95 latency over --repeat requests after two warm-ups, and the SQL
queries of one request (django.test.utils.CaptureQueriesContext, three
requests; min and max given when they differ). When the count grows with
the tasks, the statements that repeat more at the largest size than at the
smallest are printed, literals replaced by "?".

Case: the case page (readings:task) and API (api-reading-task) of the real
case for both readers. Pixels: readings.rendering.frame_png for each of the
30 frames with the decoded-frame cache emptied before each call (the first
call of an image: read, verify, decode) and with it filled (cached), the AI
contour_png and heatmap_png, and the API frame endpoint (api-reading-frame)
for each frame, cache filled. Writes: services.read_save_draft on the
clinician's open unaided read (--repeat saves), services.read_sign on
--repeat of the panel reader's tasks (each started first, untimed), with
the project's own password hasher: a signature checks the reader's password
once, timed on its own as well. The worklists are then measured once more
at the largest size, with those signed tasks done.

Prints the machine's core count and load average, a table per section, and
as its last line one JSON object with every figure. A benchmark, not a
test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from randomization_concurrency import add_accepted_image_rows, build_trial, percentile, recreate_database, start_django

PASSWORD = "bench-reader-password-2718"
SOURCE_FILE = "examples_ybr_color.dcm"
WARM_UPS = 2
QUERY_SAMPLES = 3
BATCH = 100
VIEWS = ("clinician_page", "clinician_api", "panel_page", "panel_api")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,200,1000", help="Reading tasks per reader, comma separated, ascending.")
    parser.add_argument("--repeat", type=int, default=30, help="Timed requests or calls per figure.")
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/consilium_bench_readings",
        help="A PostgreSQL database that is dropped and created afresh.",
    )
    parser.add_argument("--seed", type=int, default=1, help="Seed of the participants' sites and indications.")
    arguments = parser.parse_args()
    try:
        arguments.sizes = [int(size) for size in arguments.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error("--sizes must be whole numbers separated by commas, e.g. 20,200,1000")
    if not arguments.sizes or any(size < 1 for size in arguments.sizes):
        parser.error("--sizes must name at least one size, each at least 1")
    if arguments.sizes != sorted(set(arguments.sizes)):
        parser.error("--sizes must be ascending, without repeats (the trial grows from one size to the next)")
    if arguments.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not arguments.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL")
    return arguments


def ms(seconds: list[float]) -> dict[str, float]:
    values = [1000 * s for s in seconds]
    return {
        "p50_ms": round(statistics.median(values), 2),
        "p95_ms": round(percentile(values, 0.95), 2),
        "n": len(values),
    }


def normalized(sql: str) -> str:
    """A statement with its literals replaced, so that repeats of one query
    with other values count together."""
    sql = re.sub(r"'(?:[^']|'')*'", "?", sql)
    sql = re.sub(r"%s|\$\d+|\b\d+(?:\.\d+)?\b", "?", sql)
    return re.sub(r"\(\s*\?(?:\s*,\s*\?)*\s*\)", "(?…)", sql)


# --- Set-up ---------------------------------------------------------------------------------


class Setup:
    """The trial, its readers, the real case and the row-only cases."""

    def __init__(self, largest: int, seed: int) -> None:
        from django.contrib.auth import get_user_model

        from trial import services
        from trial.actors import Actor
        from trial.models import Participant, Role, Site

        self.system = Actor.system("benchmark")
        print(f"Building a recruiting trial with {largest} enrolled participants ...", flush=True)
        self.trial, self.owners = build_trial(largest, seed)
        users = get_user_model().objects
        self.coordinators = {user.pk: user for user in users.filter(pk__in=set(self.owners.values()))}
        self.clinician = users.create_user(username="bench-clinician", password=PASSWORD)
        for site in Site.objects.filter(trial=self.trial).order_by("code"):
            services.membership_grant(
                actor=self.system, user=self.clinician, trial=self.trial, role=Role.CLINICIAN_READER, site=site
            )
        self.panel = []
        for n in (1, 2):
            reader = users.create_user(username=f"bench-panel-{n}", password=PASSWORD)
            services.membership_grant(actor=self.system, user=reader, trial=self.trial, role=Role.BLINDED_READER)
            self.panel.append(reader)
        self.participant_ids = list(
            Participant.objects.filter(trial=self.trial).order_by("pk").values_list("pk", flat=True)
        )
        self.with_image: set[int] = set()

    def actor(self, user: Any) -> Any:
        from trial.actors import Actor

        return Actor(user=user, client_ip="127.0.0.1", request_id="bench")

    def randomize_all(self) -> None:
        from django.db import transaction

        from randomization.services import participant_randomize
        from trial.models import Participant

        started = time.perf_counter()
        for first in range(0, len(self.participant_ids), BATCH):
            with transaction.atomic():
                for pk in self.participant_ids[first : first + BATCH]:
                    participant = Participant.objects.select_related("trial", "site", "screening").get(pk=pk)
                    participant_randomize(actor=self.actor(self.coordinators[self.owners[pk]]), participant=participant)
            done = min(first + BATCH, len(self.participant_ids))
            print(
                f"  randomized {done}/{len(self.participant_ids)} ({time.perf_counter() - started:.1f} s)", flush=True
            )

    def real_case(self) -> dict[str, Any]:
        """The real cine for the first thyroid participant of the AI-assisted
        arm, uploaded as its coordinator would, and its AI result computed
        here; the clinician and the first panel reader start its tasks."""
        from pydicom.data import get_testdata_file

        from ai_engine import jobs
        from ai_engine import services as ai_services
        from ai_engine.models import AiResult
        from imaging.services import image_upload
        from randomization.models import Allocation, Arm
        from readings import services as reading_services
        from readings.models import ReadingTask, TaskKind
        from trial.models import Indication, Participant

        model_version = ai_services.model_register(
            actor=self.system,
            path=ai_services.SHIPPED_CHECKPOINT,
            name="combined-thyroid-synthetic",
            version="1.0",
            indication="thyroid",
        )
        ai_services.model_activate(actor=self.system, trial=self.trial, model_version=model_version, reason="Benchmark")
        allocation = (
            Allocation.objects.filter(
                participant__trial=self.trial,
                participant__screening__indication=Indication.THYROID,
                arm=Arm.AI_ASSISTED,
            )
            .order_by("participant_id")
            .first()
        )
        if allocation is None:
            raise SystemExit("no thyroid participant reached the AI-assisted arm: use a larger first size")
        participant = Participant.objects.select_related("trial", "site", "screening").get(pk=allocation.participant_id)
        source = get_testdata_file(SOURCE_FILE)
        if not isinstance(source, str):
            raise SystemExit(f"pydicom's test file {SOURCE_FILE} is not installed")
        data = Path(source).read_bytes()
        started = time.perf_counter()
        outcome = image_upload(
            actor=self.actor(self.coordinators[self.owners[participant.pk]]),
            participant=participant,
            name="cine.dcm",
            data=data,
        )
        upload_s = time.perf_counter() - started
        if outcome.status != "accepted" or outcome.image is None:
            raise SystemExit(f"the upload was {outcome.status}: {outcome.reason}")
        image = outcome.image
        # The upload's commit made the tasks (image_accepted); calling the
        # rule again makes nothing more.
        reading_services.reading_tasks_ensure(participant_id=participant.pk)
        started = time.perf_counter()
        results = [done for queued in AiResult.objects.filter(image=image) for done in jobs.process(queued.pk)]
        ai_s = time.perf_counter() - started
        if not results:
            raise SystemExit("the AI result of the real image was not computed")
        self.with_image.add(participant.pk)
        clinical = ReadingTask.objects.get(participant=participant, kind=TaskKind.CLINICAL)
        panel = ReadingTask.objects.get(participant=participant, kind=TaskKind.PANEL, assignee=self.panel[0])
        reading_services.reading_task_start(actor=self.actor(self.clinician), task=clinical)
        reading_services.reading_task_start(actor=self.actor(self.panel[0]), task=panel)
        image.refresh_from_db()
        return {
            "participant": participant,
            "image": image,
            "result": results[0],
            "clinical_task": clinical,
            "panel_task": panel,
            "upload_s": upload_s,
            "ai_s": ai_s,
        }

    def grow_to(self, cases: int) -> None:
        """Accepted image rows (no pixels) for more participants, and their
        tasks by rule, until `cases` participants have an image."""
        from django.db import transaction

        from readings.services import reading_tasks_ensure
        from trial.models import Participant

        todo = [pk for pk in self.participant_ids if pk not in self.with_image][: cases - len(self.with_image)]
        started = time.perf_counter()
        for first in range(0, len(todo), BATCH):
            batch = todo[first : first + BATCH]
            with transaction.atomic():
                participants = Participant.objects.filter(pk__in=batch).select_related("screening")
                add_accepted_image_rows(participants, lambda p: self.coordinators[self.owners[p.pk]])
                for pk in batch:
                    reading_tasks_ensure(participant_id=pk)
            self.with_image.update(batch)
            print(f"  cases with tasks: {len(self.with_image)} ({time.perf_counter() - started:.1f} s)", flush=True)


# --- Measuring requests -----------------------------------------------------------------------


class Measured:
    """Latency and queries of one GET, and the statements of one request."""

    def __init__(self, client: Any, url: str, repeat: int) -> None:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        for _ in range(WARM_UPS):
            self._get(client, url)
        seconds = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = self._get(client, url)
            seconds.append(time.perf_counter() - started)
        counts = []
        for _ in range(QUERY_SAMPLES):
            with CaptureQueriesContext(connection) as captured:
                self._get(client, url)
            counts.append(len(captured.captured_queries))
        self.statements = Counter(normalized(query["sql"]) for query in captured.captured_queries)
        self.figures: dict[str, Any] = {
            **ms(seconds),
            "queries": int(statistics.median(counts)),
            "queries_min": min(counts),
            "queries_max": max(counts),
            "bytes": len(response.content),
        }
        self.response = response

    @staticmethod
    def _get(client: Any, url: str) -> Any:
        response = client.get(url, secure=True)
        if response.status_code != 200:
            raise SystemExit(f"GET {url} answered {response.status_code}: {response.content[:500]!r}")
        return response


def clients(setup: Setup) -> dict[str, Any]:
    from django.test import Client

    made = {}
    for name, user in (("clinician", setup.clinician), ("panel", setup.panel[0])):
        client = Client()
        client.force_login(user)
        made[name] = client
    return made


def measure_worklists(made: dict[str, Any], repeat: int) -> tuple[dict[str, Any], dict[str, Counter[str]]]:
    from django.urls import reverse

    figures: dict[str, Any] = {}
    statements: dict[str, Counter[str]] = {}
    for view in VIEWS:
        reader, kind = view.split("_")
        url = reverse("readings:worklist") if kind == "page" else reverse("api-reading-tasks")
        measured = Measured(made[reader], url, repeat)
        figures[view] = {**measured.figures, "rows": worklist_rows(measured.response, kind)}
        statements[view] = measured.statements
    return figures, statements


def worklist_rows(response: Any, kind: str) -> int:
    """The tasks a worklist answer lists: the API's rows, the page's links
    to a case."""
    from django.urls import reverse

    if kind == "api":
        body = response.json()
        return sum(len(body[group]) for group in ("pending", "in_progress", "done", "upcoming"))
    prefix = reverse("readings:task", kwargs={"pk": 1}).removesuffix("1/")
    return len(re.findall(rf'href="{re.escape(prefix)}\d+/"', response.content.decode()))


def print_request_table(title: str, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    print(title)
    print(f"  {'':<14} {'view':<16} {'rows':>6} {'p50 ms':>9} {'p95 ms':>9} {'queries':>9} {'bytes':>9}")
    for first, view, row in rows:
        queries = str(row["queries"])
        if row["queries_min"] != row["queries_max"]:
            queries += f" ({row['queries_min']}–{row['queries_max']})"
        print(
            f"  {first:<14} {view.replace('_', ' '):<16} {row.get('rows', ''):>6} {row['p50_ms']:>9.1f} "
            f"{row['p95_ms']:>9.1f} {queries:>9} {row['bytes']:>9}"
        )
    print(flush=True)


def growth(statements: dict[int, dict[str, Counter[str]]]) -> list[dict[str, Any]]:
    """Statements executed more often at the largest size than at the smallest."""
    sizes = sorted(statements)
    grown = []
    for view in VIEWS:
        first, last = statements[sizes[0]][view], statements[sizes[-1]][view]
        for sql, count in last.items():
            if count > first.get(sql, 0):
                grown.append(
                    {
                        "view": view,
                        "sql": sql[:400],
                        "count_by_size": {str(size): statements[size][view].get(sql, 0) for size in sizes},
                    }
                )
    return grown


# --- Pixels and writes --------------------------------------------------------------------------


def measure_pixels(case: dict[str, Any], client: Any, repeat: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from readings import rendering

    image, result = case["image"], case["result"]
    frames = image.frames or 1
    decode, cached = [], []
    for index in range(frames):
        with rendering._cache_lock:
            rendering._cache.clear()
        started = time.perf_counter()
        rendering.frame_png(image, index)
        decode.append(time.perf_counter() - started)
    for index in range(frames):
        started = time.perf_counter()
        rendering.frame_png(image, index)
        cached.append(time.perf_counter() - started)
    figures: dict[str, Any] = {
        "frames": frames,
        "rows": image.rows,
        "columns": image.columns,
        "ai_status": result.status,
        "frame_png_first_call": ms(decode),
        "frame_png_cached": ms(cached),
    }
    for name, draw in (("contour_png", rendering.contour_png), ("heatmap_png", rendering.heatmap_png)):
        seconds = []
        try:
            for _ in range(repeat):
                started = time.perf_counter()
                draw(result, rows=image.rows or 0, columns=image.columns or 0)
                seconds.append(time.perf_counter() - started)
        except Exception as error:  # an abstained result has no mask: say so
            figures[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        figures[name] = ms(seconds)
    task = case["clinical_task"]
    urls = [
        reverse("api-reading-frame", kwargs={"pk": task.pk, "image_pk": image.pk, "n": index})
        for index in range(frames)
    ]
    Measured._get(client, urls[0])  # the decoded frames are in the cache
    seconds = []
    for url in urls:
        started = time.perf_counter()
        Measured._get(client, url)
        seconds.append(time.perf_counter() - started)
    with CaptureQueriesContext(connection) as captured:
        Measured._get(client, urls[-1])
    figures["api_frame"] = {**ms(seconds), "queries": len(captured.captured_queries)}
    return figures


def measure_writes(setup: Setup, case: dict[str, Any], repeat: int) -> dict[str, Any]:
    from django.contrib.auth.hashers import get_hasher

    from readings import services
    from readings.models import FormKind, Phase, ReadingTask, TaskKind, TaskStatus
    from tests.reading_fixtures import COLPOSCOPY_READ, THYROID_READ

    hasher = get_hasher()
    clinician = setup.clinician
    actor = setup.actor(clinician)
    task = case["clinical_task"]
    read = services.read_save_draft(actor=actor, task=task, phase=Phase.UNAIDED, data={}, revision=0)
    drafts = []
    for n in range(repeat):
        data = {**THYROID_READ, "time_spent_s": 60 + n}
        started = time.perf_counter()
        read = services.read_save_draft(actor=actor, task=task, phase=Phase.UNAIDED, data=data, revision=read.revision)
        drafts.append(time.perf_counter() - started)

    reader = setup.panel[0]
    reader_actor = setup.actor(reader)
    tasks = list(
        ReadingTask.objects.filter(assignee=reader, kind=TaskKind.PANEL, status=TaskStatus.PENDING).order_by("pk")[
            :repeat
        ]
    )
    signs = []
    for task in tasks:
        services.reading_task_start(actor=reader_actor, task=task)
        data = dict(THYROID_READ if task.form == FormKind.THYROID else COLPOSCOPY_READ)
        started = time.perf_counter()
        services.read_sign(actor=reader_actor, task=task, phase=Phase.FINAL, data=data, revision=0, password=PASSWORD)
        signs.append(time.perf_counter() - started)
    checks = []
    for _ in range(repeat):
        started = time.perf_counter()
        reader.check_password(PASSWORD)
        checks.append(time.perf_counter() - started)
    return {
        "hasher": f"{type(hasher).__module__}.{type(hasher).__name__}",
        "hasher_algorithm": hasher.algorithm,
        "hasher_iterations": getattr(hasher, "iterations", None),
        "draft_save": ms(drafts),
        "sign": ms(signs),
        "password_check": ms(checks),
    }


# --- Main -------------------------------------------------------------------------------------------


def main() -> None:
    arguments = parse_arguments()
    cores = os.cpu_count() or 1
    load_start = [round(x, 2) for x in os.getloadavg()]
    print(f"Cores: {cores}; load average at start (1, 5, 15 min): {load_start[0]} {load_start[1]} {load_start[2]}")
    work = Path(tempfile.mkdtemp(prefix="consilium-bench-readings-"))
    os.environ["CONSILIUM_VAR_DIR"] = str(work / "var")
    os.environ["MEDIA_ROOT"] = str(work / "media")
    os.environ["CELERY_BROKER_URL"] = "filesystem://localhost/"  # jobs are published, the AI runs here
    os.environ["ALLOWED_HOSTS"] = "testserver"  # the test Client's host; the rest as deployed (DEBUG off)
    try:
        print(f"Recreating {urlsplit(arguments.database_url).path.lstrip('/')} and migrating ...", flush=True)
        recreate_database(arguments.database_url)
        start_django(arguments.database_url)
        from django.core.management import call_command

        # DEBUG off serves static files from the manifest: the pages need it.
        call_command("collectstatic", interactive=False, verbosity=0)

        sizes = arguments.sizes
        setup = Setup(sizes[-1], arguments.seed)
        print("Randomizing every participant ...", flush=True)
        setup.randomize_all()
        print("Uploading the real cine and computing its AI result ...", flush=True)
        case = setup.real_case()
        print(
            f"  upload {case['upload_s'] * 1000:.0f} ms, "
            f"AI result {case['ai_s'] * 1000:.0f} ms ({case['result'].status})",
            flush=True,
        )
        made = clients(setup)
        figures: dict[str, Any] = {
            "cores": cores,
            "load_average_at_start": load_start,
            "sizes": sizes,
            "repeat": arguments.repeat,
            "worklist": {},
        }
        statements: dict[int, dict[str, Counter[str]]] = {}
        for size in sizes:
            setup.grow_to(size)
            print(f"Measuring the worklists at {size} tasks per reader ...", flush=True)
            figures["worklist"][str(size)], statements[size] = measure_worklists(made, arguments.repeat)
        print()
        rows = [(str(size), view, figures["worklist"][str(size)][view]) for size in sizes for view in VIEWS]
        print_request_table(
            f"Worklist ({cores} cores; {arguments.repeat} requests per row after {WARM_UPS} warm-ups; "
            f"queries of one request)",
            [(f"{first} tasks" if view == VIEWS[0] else "", view, row) for first, view, row in rows],
        )
        grown = growth(statements)
        figures["query_growth"] = grown
        if grown:
            print("Queries that repeat more with more tasks:")
            for item in grown:
                print(f"  {item['view']}: {item['count_by_size']} × {item['sql']}")
        else:
            print(f"Query counts: no statement repeats more at {sizes[-1]} tasks than at {sizes[0]}.")
        print(flush=True)

        from django.urls import reverse

        case_rows: list[tuple[str, str, dict[str, Any]]] = []
        figures["case"] = {}
        for reader, task in (("clinician", case["clinical_task"]), ("panel", case["panel_task"])):
            for kind, url in (
                ("page", reverse("readings:task", kwargs={"pk": task.pk})),
                ("api", reverse("api-reading-task", kwargs={"pk": task.pk})),
            ):
                view = f"{reader}_{kind}"
                figures["case"][view] = Measured(made[reader], url, arguments.repeat).figures
                case_rows.append(("1 task" if not case_rows else "", view, figures["case"][view]))
        print_request_table(
            f"Case of the real image ({cores} cores; {arguments.repeat} requests per row; open read in progress)",
            case_rows,
        )

        pixels = measure_pixels(case, made["clinician"], arguments.repeat)
        figures["pixels"] = pixels
        print(
            f"Pixels ({cores} cores; {SOURCE_FILE}: {pixels['frames']} frames of {pixels['rows']} × "
            f"{pixels['columns']}; AI result {pixels['ai_status']})"
        )
        print(f"  {'':<44} {'p50 ms':>9} {'p95 ms':>9} {'n':>5}")
        labels = {
            "frame_png_first_call": "frame_png, first call (read, verify, decode)",
            "frame_png_cached": "frame_png, decoded frames cached",
            "contour_png": "contour_png (AI outline layer)",
            "heatmap_png": "heatmap_png (AI probability layer)",
            "api_frame": "API frame endpoint (cached), per request",
        }
        for key, label in labels.items():
            row = pixels[key]
            if "error" in row:
                print(f"  {label:<44} not measured: {row['error']}")
                continue
            print(f"  {label:<44} {row['p50_ms']:>9.1f} {row['p95_ms']:>9.1f} {row['n']:>5}")
        print(f"  API frame endpoint queries per request: {pixels['api_frame']['queries']}")
        print(flush=True)

        writes = measure_writes(setup, case, arguments.repeat)
        figures["writes"] = writes
        print(
            f"Writes ({cores} cores; password hasher {writes['hasher']}, "
            f"{writes['hasher_iterations']} iterations; a signature includes one password check)"
        )
        print(f"  {'':<44} {'p50 ms':>9} {'p95 ms':>9} {'n':>5}")
        for key, label in (
            ("draft_save", "read_save_draft (clinician, unaided read)"),
            ("sign", "read_sign (panel read; finishes the task)"),
            ("password_check", "of which: one password check alone"),
        ):
            row = writes[key]
            print(f"  {label:<44} {row['p50_ms']:>9.1f} {row['p95_ms']:>9.1f} {row['n']:>5}")
        print(flush=True)

        after, _ = measure_worklists(made, arguments.repeat)
        figures["worklist_after_signing"] = after
        print_request_table(
            f"Worklist again at {sizes[-1]} tasks, {writes['sign']['n']} of the panel reader's tasks done "
            f"({cores} cores)",
            [(f"{sizes[-1]} tasks" if view == VIEWS[0] else "", view, after[view]) for view in VIEWS],
        )
        figures["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(f"Load average at end: {' '.join(map(str, figures['load_average_at_end']))}")
        print(json.dumps(figures))

    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
