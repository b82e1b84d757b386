"""The worklist page and API are paginated: each section shows one page of
its rows under the count of all of them, and walking the pages gives every
task once, in the order of the whole worklist (panel cases in the reader's
own random order, the others by due date)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from imaging.models import Image, ImageKind, ImageStatus
from randomization.services import participant_randomize
from readings import selectors, views
from readings import services as reading_services
from readings.models import ReadingTask, TaskKind
from tests.conftest import actor_for, api_client, login
from trial.models import Participant, Role

CASES = 5
PAGE_SIZE = 2


@pytest.fixture
def cases(
    users: dict[str, Any],
    panel: list[Any],
    enroll: Callable[..., Participant],
    block_scheme: Any,
    coordinator: Any,
) -> list[Participant]:
    """Randomized participants at site A, each with an accepted image row
    and the reading tasks the rules make for it."""
    made = []
    for n in range(CASES):
        participant = enroll()
        participant_randomize(actor=actor_for(coordinator), participant=participant)
        Image.objects.create(
            participant=participant,
            trial_id=participant.trial_id,
            site_id=participant.site_id,
            status=ImageStatus.ACCEPTED,
            kind=ImageKind.PHOTOGRAPH,
            source_sha256=f"{n + 1:064x}",
            uploaded_by=coordinator,
        )
        reading_services.reading_tasks_ensure(participant_id=participant.pk)
        made.append(participant)
    return made


def section(page: str, key: str) -> str:
    match = re.search(rf'<section class="card" id="worklist-{key}">(.*?)</section>', page, re.S)
    assert match is not None, f"no {key} section"
    return match.group(1)


def task_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'href="/readings/tasks/(\d+)/"', html)]


def badge(html: str) -> int:
    match = re.search(r'<h2>[^<]*<span class="badge">(\d+)</span></h2>', html)
    assert match is not None
    return int(match.group(1))


def walk_pages(client: Any, key: str) -> list[int]:
    """The task ids of a section, page after page, as the reader sees them."""
    first = section(client.get(reverse("readings:worklist")).content.decode(), key)
    pages = int(m.group(1)) if (m := re.search(r"page 1 of (\d+)", first)) else 1
    seen = []
    for number in range(1, pages + 1):
        html = section(client.get(reverse("readings:worklist"), {f"{key}_page": number}).content.decode(), key)
        rows = task_ids(html)
        assert len(rows) <= PAGE_SIZE
        seen.extend(rows)
    return seen


def test_the_worklist_page_shows_a_page_of_each_section_under_its_full_count(
    cases: list[Participant], users: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "WORKLIST_PAGE_SIZE", PAGE_SIZE)
    clinician = users[Role.CLINICIAN_READER]
    started = ReadingTask.objects.filter(kind=TaskKind.CLINICAL).order_by("pk").first()
    assert started is not None
    reading_services.reading_task_start(actor=actor_for(clinician), task=started)
    client = login(clinician)
    page = client.get(reverse("readings:worklist")).content.decode()

    pending = section(page, "pending")
    assert badge(pending) == CASES - 1
    assert len(task_ids(pending)) == PAGE_SIZE
    assert "page 1 of 2" in pending
    assert badge(section(page, "in_progress")) == 1
    whole = selectors.worklist(clinician)
    assert walk_pages(client, "pending") == [row.pk for row in whole.pending]
    # A page past the last shows the last; a malformed one the first.
    last = section(client.get(reverse("readings:worklist"), {"pending_page": 99}).content.decode(), "pending")
    assert task_ids(last) == [row.pk for row in whole.pending][PAGE_SIZE:]
    first = section(client.get(reverse("readings:worklist"), {"pending_page": "x"}).content.decode(), "pending")
    assert task_ids(first) == [row.pk for row in whole.pending][:PAGE_SIZE]


def test_the_panel_order_is_kept_across_the_pages(
    cases: list[Participant], panel: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "WORKLIST_PAGE_SIZE", PAGE_SIZE)
    reader = max(panel, key=lambda user: ReadingTask.objects.filter(assignee=user).count())
    expected = [row.pk for row in selectors.worklist(reader).pending]
    assert len(expected) > PAGE_SIZE
    tasks = ReadingTask.objects.in_bulk(expected)
    assert [tasks[pk].order_key for pk in expected] == sorted(tasks[pk].order_key for pk in expected)
    assert walk_pages(login(reader), "pending") == expected


def test_the_worklist_api_pages_each_section_with_limit_and_offset(cases: list[Participant], panel: list[Any]) -> None:
    reader = max(panel, key=lambda user: ReadingTask.objects.filter(assignee=user).count())
    expected = [row.pk for row in selectors.worklist(reader).pending]
    client = api_client(reader)
    url = reverse("api-reading-tasks")
    seen: list[int] = []
    body = client.get(url, {"limit": PAGE_SIZE}).json()
    assert body["previous"] is None
    while True:
        assert body["counts"]["pending"] == len(expected)
        assert len(body["pending"]) <= PAGE_SIZE
        seen.extend(row["id"] for row in body["pending"])
        if body["next"] is None:
            break
        body = client.get(body["next"]).json()
        assert body["previous"] is not None
    assert seen == expected
    # Without a limit, a section holds up to 50 rows: here all of them.
    assert [row["id"] for row in client.get(url).json()["pending"]] == expected
