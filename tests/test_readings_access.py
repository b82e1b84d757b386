"""Every reading page and API endpoint, for every role (anonymous included,
plus a clinician of another site and a panel reader the case is not
assigned to): the status each gets, and, in what a blinded reader does
receive, no arm, no identity of the participant and no AI output.

The scene: a thyroid case in the AI-assisted arm whose clinical read the
site-A clinician has started and whose unaided read is signed (so the AI
second opinion is open to that clinician), with its panel tasks; and a
specialist-only case the clinician has started (its AI result exists in
shadow mode and must stay invisible)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from readings import services
from readings.models import ReadingTask, TaskKind
from tests.conftest import PASSWORD, actor_for
from tests.reading_fixtures import Case, valid_read
from trial.models import Role, Site

ANONYMOUS = "anonymous"
CLINICIAN_B = "clinician_site_b"
OTHER_PANEL = "panel_reader_not_assigned"
PANEL = "panel_reader_assigned"
EVERYONE = [*Role.values, CLINICIAN_B, PANEL, OTHER_PANEL, ANONYMOUS]
ARM_TEXTS = ("AI-assisted", "Specialist only", "ai_assisted", "specialist_only")
AI_TEXTS = ("AI second opinion", "category_probability", "heatmap", "contour", '"model"', "ai_result")


@dataclass
class Scene:
    ai_task: ReadingTask
    specialist_task: ReadingTask
    panel_task: ReadingTask
    ai_result_pk: int
    image_pk: int
    trial_pk: int
    ai_case: Case
    people: dict[str, Any]


@pytest.fixture
def scene(
    users: dict[str, Any],
    panel: list[Any],
    site_b: Site,
    make_user: Callable[..., Any],
    ai_case: Case,
    specialist_case: Case,
) -> Scene:
    clinician = users[Role.CLINICIAN_READER]
    ai_task = ai_case.task()
    services.reading_task_start(actor=actor_for(clinician), task=ai_task)
    services.read_sign(
        actor=actor_for(clinician),
        task=ai_task,
        phase="unaided",
        data=valid_read("thyroid"),
        revision=0,
        password=PASSWORD,
    )
    specialist_task = specialist_case.task()
    services.reading_task_start(actor=actor_for(clinician), task=specialist_task)
    panel_task = ai_case.tasks(TaskKind.PANEL)[0]
    assigned = {t.assignee_id for t in ai_case.tasks(TaskKind.PANEL)}
    people = {role: users[role] for role in Role.values}
    people[CLINICIAN_B] = make_user("clinician-b", Role.CLINICIAN_READER, trial=ai_task.trial, site=site_b)
    people[PANEL] = panel_task.assignee
    people[OTHER_PANEL] = next(reader for reader in panel if reader.pk not in assigned)
    people[ANONYMOUS] = None
    return Scene(
        ai_task=ai_task,
        specialist_task=specialist_task,
        panel_task=panel_task,
        ai_result_pk=ai_case.ai_results[0].pk,
        image_pk=ai_case.images[0].pk,
        trial_pk=ai_task.trial_id,
        ai_case=ai_case,
        people=people,
    )


def client_for(user: Any) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def expected(allowed: dict[str, int], *, readers_elsewhere: int = 404, default: int = 403) -> dict[str, int]:
    """Status per caller: `allowed` as given; anonymous → login (pages 302,
    the API 401/403 by its authentication); other readers `readers_elsewhere`;
    everyone else `default`."""
    readers = {Role.CLINICIAN_READER, Role.BLINDED_READER, CLINICIAN_B, PANEL, OTHER_PANEL}
    table = {}
    for who in EVERYONE:
        if who in allowed:
            table[who] = allowed[who]
        elif who in readers:
            table[who] = readers_elsewhere
        else:
            table[who] = default
    return table


def _blinded_view(who: str, scene: Scene) -> bool:
    return who in (Role.BLINDED_READER, PANEL, OTHER_PANEL)


def check(scene: Scene, url: str, statuses: dict[str, int], *, api: bool) -> None:
    participant = scene.ai_case.participant
    forbidden = (*ARM_TEXTS, *AI_TEXTS, participant.study_id, participant.site.name)
    failures = []
    for who in EVERYONE:
        response = client_for(scene.people[who]).get(url)
        want = statuses[who]
        if who == ANONYMOUS:
            ok = response.status_code in ((401, 403) if api else (302,))
        else:
            ok = response.status_code == want
        if not ok:
            failures.append(f"{who}: {response.status_code} (expected {want})")
            continue
        content_type = response.get("Content-Type", "")
        if (
            response.status_code == 200
            and _blinded_view(who, scene)
            and ("json" in content_type or "html" in content_type)
        ):
            body = response.content.decode()
            leaked = [text for text in forbidden if text in body]
            if "json" in content_type and ('"arm"' in body or '"ai_' in json.dumps(json.loads(body))):
                leaked.append("arm/ai key")
            if leaked:
                failures.append(f"{who}: {url} carries {leaked}")
        if response.status_code in (403, 404) and _blinded_view(who, scene):
            body = response.content.decode(errors="replace")
            if any(text in body for text in (*ARM_TEXTS, participant.study_id)):
                failures.append(f"{who}: the refusal of {url} names the arm or the participant")
    assert not failures, "\n".join([url, *failures])


def test_reading_pages_answer_each_role_as_the_rules_say(scene: Scene) -> None:
    readers_lists = {
        Role.CLINICIAN_READER: 200,
        Role.BLINDED_READER: 200,
        CLINICIAN_B: 200,
        PANEL: 200,
        OTHER_PANEL: 200,
    }
    check(scene, reverse("readings:worklist"), expected(readers_lists), api=False)
    check(scene, reverse("readings:task", args=[scene.ai_task.pk]), expected({Role.CLINICIAN_READER: 200}), api=False)
    check(
        scene,
        reverse("readings:task", args=[scene.specialist_task.pk]),
        expected({Role.CLINICIAN_READER: 200}),
        api=False,
    )
    # The panel reader not assigned sees the case exists in their trial's panel: 403, not 404.
    panel_page = expected(
        {
            PANEL: 200,
            OTHER_PANEL: 403,
            Role.BLINDED_READER: 200 if scene.people[PANEL] == scene.people[Role.BLINDED_READER] else 403,
        }
    )
    check(scene, reverse("readings:task", args=[scene.panel_task.pk]), panel_page, api=False)
    oversight = {Role.MONITOR: 200, Role.TRIAL_ADMIN: 200}
    check(scene, reverse("readings:oversight"), expected(oversight, readers_elsewhere=403), api=False)
    check(
        scene,
        reverse("readings:oversight_task", args=[scene.ai_task.pk]),
        expected(oversight, readers_elsewhere=403),
        api=False,
    )
    check(
        scene,
        reverse("readings:policy", args=[scene.trial_pk]),
        expected({Role.TRIAL_ADMIN: 200}, readers_elsewhere=403),
        api=False,
    )


def test_reading_api_answers_each_role_as_the_rules_say(scene: Scene) -> None:
    readers_lists = {
        Role.CLINICIAN_READER: 200,
        Role.BLINDED_READER: 200,
        CLINICIAN_B: 200,
        PANEL: 200,
        OTHER_PANEL: 200,
    }
    check(scene, reverse("api-reading-tasks"), expected(readers_lists), api=True)
    only_clinician = expected({Role.CLINICIAN_READER: 200})
    check(scene, reverse("api-reading-task", args=[scene.ai_task.pk]), only_clinician, api=True)
    check(scene, reverse("api-reading-ai", args=[scene.ai_task.pk]), only_clinician, api=True)
    for layer in ("contour", "heatmap"):
        check(
            scene,
            reverse("api-reading-ai-layer", args=[scene.ai_task.pk, scene.ai_result_pk, layer]),
            only_clinician,
            api=True,
        )
    check(
        scene,
        reverse("api-reading-frame", args=[scene.ai_task.pk, scene.image_pk, 0]),
        only_clinician,
        api=True,
    )
    # The specialist-only arm: the AI does not exist, even for its own reader.
    check(scene, reverse("api-reading-ai", args=[scene.specialist_task.pk]), expected({}), api=True)
    panel_only = expected(
        {
            PANEL: 200,
            OTHER_PANEL: 403,
            Role.BLINDED_READER: 200 if scene.people[PANEL] == scene.people[Role.BLINDED_READER] else 403,
        }
    )
    check(scene, reverse("api-reading-task", args=[scene.panel_task.pk]), panel_only, api=True)
    check(
        scene,
        reverse("api-reading-frame", args=[scene.panel_task.pk, scene.image_pk, 0]),
        panel_only,
        api=True,
    )
    # The AI of a panel case does not exist for anyone reading it.
    no_ai_for_panel = expected({PANEL: 404, Role.BLINDED_READER: 404, OTHER_PANEL: 403})
    if scene.people[PANEL] != scene.people[Role.BLINDED_READER]:
        no_ai_for_panel[Role.BLINDED_READER] = 403
    check(scene, reverse("api-reading-ai", args=[scene.panel_task.pk]), no_ai_for_panel, api=True)
    oversight = {Role.MONITOR: 200, Role.TRIAL_ADMIN: 200}
    check(scene, reverse("api-reading-oversight"), expected(oversight, readers_elsewhere=403), api=True)
    check(
        scene,
        reverse("api-reading-oversight-task", args=[scene.ai_task.pk]),
        expected(oversight, readers_elsewhere=403),
        api=True,
    )
    check(
        scene,
        reverse("api-reading-policy", args=[scene.trial_pk]),
        expected({Role.TRIAL_ADMIN: 200}, readers_elsewhere=403),
        api=True,
    )
