"""The SQL queries of every main page and API read do not grow with the
data: each is requested at a small trial and again after it has grown
(more participants, screening entries, images, AI results, reading tasks
and audit events, and more images for the participant a detail page
shows), and the two counts must be equal. A query per row (an N+1) makes
the larger count bigger and fails the test, naming the page.

The pages are requested by the role that uses them; the rows come from the
services (real uploads, the shipped model's AI results computed in-process,
reading tasks by rule, reading tasks started)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from imaging import services as imaging_services
from randomization.models import Arm
from readings import services as reading_services
from readings.models import ReadingTask, TaskKind, TaskStatus
from tests.conftest import actor_for, api_client, login
from tests.reading_fixtures import Case, colposcopy_png
from trial.models import Role, Trial

# (name, role, URL name, what the URL needs)
PAGES = [
    ("dashboard", Role.COORDINATOR, "trial:dashboard", None),
    ("participant list", Role.COORDINATOR, "trial:participant_list", None),
    ("participant detail", Role.COORDINATOR, "trial:participant_detail", "participant"),
    ("screening list", Role.COORDINATOR, "trial:screening_list", None),
    ("audit trail", Role.MONITOR, "trial:audit_list", None),
    ("worklist (clinician)", Role.CLINICIAN_READER, "readings:worklist", None),
    ("worklist (panel)", Role.BLINDED_READER, "readings:worklist", None),
    ("reading oversight", Role.TRIAL_ADMIN, "readings:oversight", None),
    ("reports", Role.STATISTICIAN_BLINDED, "analysis:reports", None),
    ("AI operations", Role.TRIAL_ADMIN, "ai_engine:operations", "code"),
    ("participant images", Role.COORDINATOR, "imaging:participant_images", "participant"),
    ("image detail", Role.COORDINATOR, "imaging:image_detail", "image"),
    ("unblindings", Role.TRIAL_ADMIN, "randomization:unblinding_list", None),
]
APIS = [
    ("trials", Role.COORDINATOR, "api-trial-list", None),
    ("sites", Role.COORDINATOR, "api-site-list", None),
    ("participants", Role.COORDINATOR, "api-participant-list", None),
    ("participant", Role.COORDINATOR, "api-participant-detail", "participant"),
    ("participant timeline", Role.COORDINATOR, "api-participant-timeline", "participant"),
    ("screening", Role.COORDINATOR, "api-screening-list", None),
    ("audit events", Role.MONITOR, "api-audit-events", None),
    ("reading tasks (clinician)", Role.CLINICIAN_READER, "api-reading-tasks", None),
    ("reading tasks (panel)", Role.BLINDED_READER, "api-reading-tasks", None),
    ("reading oversight", Role.TRIAL_ADMIN, "api-reading-oversight", None),
    ("participant images", Role.COORDINATOR, "api-participant-images", "participant"),
    ("image", Role.COORDINATOR, "api-image-detail", "image"),
    ("AI operations", Role.TRIAL_ADMIN, "api-ai-operations", "trial query"),
]


class GrowingTrial:
    """The growing trial: cases made through the services, the first of
    them the one whose detail pages are requested."""

    def __init__(
        self, make_case: Callable[..., Case], users: dict[str, Any], panel: list[Any], recruiting: Trial
    ) -> None:
        self.make_case = make_case
        self.users = users
        self.panel = panel
        self.trial = recruiting
        self.cases: list[Case] = []

    def grow(self, cases: int) -> None:
        for n in range(cases):
            arm = Arm.AI_ASSISTED if (len(self.cases) + n) % 2 == 0 else Arm.SPECIALIST_ONLY
            self.cases.append(self.make_case(arm, indication="cervical", images=("photo",)))
        first = self.cases[0]
        # More images for the participant the detail pages show.
        outcome = imaging_services.image_upload(
            actor=actor_for(self.users[Role.COORDINATOR]),
            participant=first.participant,
            name="colposcopy.png",
            data=colposcopy_png(seed=9000 + len(self.cases)),
        )
        assert outcome.status == "accepted", outcome.reason
        # Some tasks in progress, so that every section of the worklists has rows.
        for task in ReadingTask.objects.filter(
            kind__in=(TaskKind.CLINICAL, TaskKind.PANEL), status=TaskStatus.PENDING
        ).order_by("pk")[: cases // 2]:
            reader = self.users[Role.CLINICIAN_READER] if task.kind == TaskKind.CLINICAL else task.assignee
            reading_services.reading_task_start(actor=actor_for(reader), task=task)

    def url(self, name: str, needs: str | None) -> str:
        first = self.cases[0]
        if needs == "participant":
            return reverse(name, kwargs={"pk": first.participant.pk})
        if needs == "image":
            return reverse(name, kwargs={"pk": first.images[0].pk})
        if needs == "code":
            return reverse(name, kwargs={"code": self.trial.code})
        if needs == "trial query":
            return f"{reverse(name)}?trial={self.trial.code}"
        return reverse(name)


@pytest.fixture
def data(make_case: Callable[..., Case], users: dict[str, Any], panel: list[Any], recruiting: Trial) -> GrowingTrial:
    return GrowingTrial(make_case, users, panel, recruiting)


def queries(client: Client, url: str) -> int:
    """The queries of one GET (the second: the first may fill caches)."""
    assert client.get(url).status_code == 200, url
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, f"{url}: {response.status_code}"
    return len(captured.captured_queries)


def counts(
    data: GrowingTrial, endpoints: list[tuple[str, str, str, str | None]], client: Callable[[Any], Any]
) -> dict[str, int]:
    clients = {role: client(data.users[role]) for role in {role for _, role, _, _ in endpoints}}
    return {name: queries(clients[role], data.url(url, needs)) for name, role, url, needs in endpoints}


def grown(data: GrowingTrial, endpoints: list[tuple[str, str, str, str | None]], client: Callable[[Any], Any]) -> None:
    data.grow(2)
    small = counts(data, endpoints, client)
    data.grow(5)
    large = counts(data, endpoints, client)
    growing = {name: (small[name], large[name]) for name in small if small[name] != large[name]}
    assert not growing, f"queries grow with the data (small, large): {growing}"


def test_it_keeps_the_queries_of_every_page_constant_as_the_trial_grows(data: GrowingTrial) -> None:
    grown(data, PAGES, login)


def test_it_keeps_the_queries_of_every_api_read_constant_as_the_trial_grows(data: GrowingTrial) -> None:
    grown(data, APIS, api_client)
