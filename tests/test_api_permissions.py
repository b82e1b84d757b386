"""Every enrollment and audit endpoint, for every role and anonymous: the
status each must get. Site-scoped roles (coordinator, clinician reader,
pathologist, monitor) belong to site A; the others hold all sites."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.contrib.sessions.models import Session
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from readings import services as reading_services
from readings.models import TaskKind
from tests.conftest import ELIGIBLE_CERVICAL, PASSWORD, actor_for, api_client
from tests.reading_fixtures import valid_read
from trial import services
from trial.models import (
    AuditEvent,
    Participant,
    ReferenceKind,
    ReferenceStandardResult,
    Role,
    ScreeningEntry,
    Withdrawal,
)

ANONYMOUS = "anonymous"
ROLES = [*Role.values, ANONYMOUS]
SITE_A_ONLY = {Role.COORDINATOR, Role.CLINICIAN_READER, Role.PATHOLOGIST, Role.MONITOR}
ENROLLMENT_READERS = set(Role.values) - {Role.BLINDED_READER}
REFERENCE_READERS = ENROLLMENT_READERS - {Role.CLINICIAN_READER}


def expected_read(role: str, readers: set[str], *, at_site_b: bool = False) -> int:
    """Anonymous → 401; no access to this kind of data at all → 403; the
    object at a site outside the member's scope → 404, before any finer
    permission is considered, so its existence is not revealed."""
    if role == ANONYMOUS:
        return 401
    if role not in ENROLLMENT_READERS:
        return 403
    if at_site_b and role in SITE_A_ONLY:
        return 404
    if role not in readers:
        return 403
    return 200


@pytest.fixture
def world(users: dict[str, Any], enroll: Any, coordinator_b: Any, site_b: Any, screen: Any) -> dict[str, Any]:
    participant_a = enroll()
    participant_b = enroll(site=site_b, user=coordinator_b)
    pending_a = screen()
    result_a = services.reference_result_record(
        actor=actor_for(users[Role.PATHOLOGIST]),
        participant=participant_a,
        kind="cervical_histology",
        sample_date=timezone.localdate(),
        result_date=timezone.localdate(),
        cervical_histology="cin2",
    )
    return {"a": participant_a, "b": participant_b, "pending_a": pending_a, "result_a": result_a}


def client_for(role: str, users: dict[str, Any]) -> Any:
    return api_client(None if role == ANONYMOUS else users[role])


READ_ENDPOINTS = [
    ("/api/v1/sites/", ENROLLMENT_READERS, False),
    ("/api/v1/recruitment/", ENROLLMENT_READERS, False),
    ("/api/v1/screening/", ENROLLMENT_READERS, False),
    ("/api/v1/participants/", ENROLLMENT_READERS, False),
    ("/api/v1/screening/{pending_a}/", ENROLLMENT_READERS, False),
    ("/api/v1/participants/{a}/", ENROLLMENT_READERS, False),
    ("/api/v1/participants/{b}/", ENROLLMENT_READERS, True),
    ("/api/v1/participants/{a}/timeline/", ENROLLMENT_READERS, False),
    ("/api/v1/participants/{b}/timeline/", ENROLLMENT_READERS, True),
    ("/api/v1/participants/{a}/reference-results/", REFERENCE_READERS, False),
    ("/api/v1/participants/{b}/reference-results/", REFERENCE_READERS, True),
    ("/api/v1/audit-events/", {Role.MONITOR, Role.TRIAL_ADMIN}, False),
]


def _url(template: str, world: dict[str, Any]) -> str:
    return template.format(a=world["a"].pk, b=world["b"].pk, pending_a=world["pending_a"].pk)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("template", "readers", "at_site_b"), READ_ENDPOINTS)
def test_it_answers_each_read_endpoint_by_role_and_site(role, template, readers, at_site_b, users, world):
    response = client_for(role, users).get(_url(template, world))
    assert response.status_code == expected_read(role, readers, at_site_b=at_site_b), response.content


@pytest.mark.parametrize("role", ROLES)
def test_it_lists_only_the_participants_of_the_members_sites(role, users, world):
    response = client_for(role, users).get("/api/v1/participants/")
    if response.status_code != 200:
        assert role in (ANONYMOUS, Role.BLINDED_READER)
        return
    study_ids = {row["study_id"] for row in response.json()["results"]}
    if role in SITE_A_ONLY:
        assert study_ids == {world["a"].study_id}
    else:
        assert study_ids == {world["a"].study_id, world["b"].study_id}


@pytest.mark.parametrize("role", ROLES)
def test_it_hides_reference_results_from_the_timeline_of_roles_that_may_not_see_them(role, users, world):
    response = client_for(role, users).get(f"/api/v1/participants/{world['a'].pk}/timeline/")
    if response.status_code != 200:
        return
    actions = {event["action"] for event in response.json()}
    assert "participant.enroll" in actions
    assert ("reference_result.record" in actions) == (role in REFERENCE_READERS)


def _writes(world: dict[str, Any]) -> list[tuple[str, dict[str, Any], set[str], int]]:
    """(url, body, roles allowed, success status)."""
    today = timezone.localdate().isoformat()
    return [
        ("/api/v1/screening/{pending_a}/eligibility/", {"answers": ELIGIBLE_CERVICAL}, {Role.COORDINATOR}, 200),
        (
            "/api/v1/participants/{a}/withdraw/",
            {"withdrawn_on": today, "scope": "stop_follow_up", "reason": "Moved away"},
            {Role.COORDINATOR},
            201,
        ),
        (
            "/api/v1/participants/{b}/withdraw/",
            {"withdrawn_on": today, "scope": "stop_follow_up", "reason": "Moved away"},
            {Role.COORDINATOR},
            201,
        ),
        (
            "/api/v1/participants/{a}/reference-results/",
            {"kind": "cervical_histology", "sample_date": today, "result_date": today, "cervical_histology": "cin1"},
            {Role.COORDINATOR, Role.PATHOLOGIST},
            201,
        ),
    ]


WRITE_CASES = range(4)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", WRITE_CASES)
def test_it_allows_each_write_only_to_its_roles_and_writes_nothing_otherwise(role, case, users, world):
    template, body, allowed, success = _writes(world)[case]
    url = _url(template, world)
    at_site_b = "{b}" in template
    counts_before = (AuditEvent.objects.count(), Withdrawal.objects.count(), ReferenceStandardResult.objects.count())
    response = client_for(role, users).post(url, body, format="json")
    if role == ANONYMOUS:
        expected = 401
    elif role == Role.BLINDED_READER:
        expected = 403
    elif at_site_b and role in SITE_A_ONLY:
        expected = 404
    elif role in allowed and not at_site_b:
        expected = success
    else:
        expected = 403
    assert response.status_code == expected, response.content
    counts_after = (AuditEvent.objects.count(), Withdrawal.objects.count(), ReferenceStandardResult.objects.count())
    if expected >= 400:
        assert counts_after == counts_before
    else:
        assert counts_after[0] == counts_before[0] + 1


@pytest.mark.parametrize("role", ROLES)
def test_it_lets_only_a_coordinator_of_the_site_screen(role, users, site_a):
    body = {
        "site": site_a.pk,
        "screened_on": (timezone.localdate() - dt.timedelta(days=1)).isoformat(),
        "indication": "cervical",
        "year_of_birth": 1985,
        "sex": "female",
    }
    before = ScreeningEntry.objects.count()
    response = client_for(role, users).post("/api/v1/screening/", body, format="json")
    expected = {ANONYMOUS: 401, Role.COORDINATOR: 201}.get(role, 403)
    assert response.status_code == expected, response.content
    assert ScreeningEntry.objects.count() == before + (1 if expected == 201 else 0)


def test_it_gives_404_when_a_coordinator_screens_at_another_site(coordinator_b, site_a):
    body = {
        "site": site_a.pk,
        "screened_on": timezone.localdate().isoformat(),
        "indication": "cervical",
        "year_of_birth": 1985,
        "sex": "female",
    }
    response = api_client(coordinator_b).post("/api/v1/screening/", body, format="json")
    assert response.status_code == 404
    assert not ScreeningEntry.objects.exists()


def test_it_gives_404_when_a_coordinator_enrolls_another_sites_person(coordinator_b, screen):
    entry = screen(eligible=True)
    body = {
        "form_version": "1.0",
        "consented_at": timezone.now().isoformat(),
        "taken_by": coordinator_b.pk,
        "covariates": {"hpv_status": "positive"},
    }
    response = api_client(coordinator_b).post(f"/api/v1/screening/{entry.pk}/enroll/", body, format="json")
    assert response.status_code == 404
    assert not Participant.objects.exists()


# --- Every API write: the right is checked before the body -------------------------------
#
# A caller without the right to a write is refused (403, or 404 for an object
# outside their sites) whatever they send: an empty body and an invalid one
# get the same answer as a valid one would, never 400 with the input's rules,
# and nothing is written. The objects are at site A; the roles are the users
# fixture's, the blinded reader the panel reader of the case, and a
# coordinator of site B.

COORDINATOR_B = "coordinator_site_b"


@dataclass(frozen=True)
class ApiWrite:
    name: str
    writers: frozenset[str]
    url: Callable[[SimpleNamespace], dict[str, Any]] = lambda w: {}
    method: str = "post"
    multipart: bool = False


def _participant(w: SimpleNamespace) -> dict[str, Any]:
    return {"pk": w.participant.pk}


def _pending(w: SimpleNamespace) -> dict[str, Any]:
    return {"pk": w.pending.pk}


def _trial(w: SimpleNamespace) -> dict[str, Any]:
    return {"pk": w.participant.trial_id}


def _task(w: SimpleNamespace) -> dict[str, Any]:
    return {"pk": w.task.pk}


COORDINATORS = frozenset({Role.COORDINATOR})
ADMINS = frozenset({Role.TRIAL_ADMIN})
CLINICIANS = frozenset({Role.CLINICIAN_READER})

API_WRITES = [
    ApiWrite("api-screening-list", COORDINATORS),
    ApiWrite("api-screening-correct", COORDINATORS, _pending),
    ApiWrite("api-eligibility", COORDINATORS, _pending),
    ApiWrite("api-screening-close", COORDINATORS, _pending),
    ApiWrite("api-enroll", COORDINATORS, _pending),
    ApiWrite("api-withdraw", COORDINATORS, _participant),
    ApiWrite("api-consent-renew", COORDINATORS, _participant),
    ApiWrite("api-reference-results", frozenset({Role.COORDINATOR, Role.PATHOLOGIST}), _participant),
    ApiWrite(
        "api-reference-correct",
        frozenset({Role.COORDINATOR, Role.PATHOLOGIST}),
        lambda w: {"pk": w.participant.pk, "result_pk": w.reference.pk},
    ),
    ApiWrite("api-randomize", COORDINATORS, _participant),
    ApiWrite("api-unblind", ADMINS, _participant),
    ApiWrite("api-randomization-schemes", ADMINS, _trial),
    ApiWrite("api-randomization-activate", ADMINS, _trial),
    ApiWrite("api-randomization-table", ADMINS, _trial, multipart=True),
    ApiWrite("api-participant-images", COORDINATORS, _participant, multipart=True),
    ApiWrite("api-reading-task-start", CLINICIANS, _task),
    ApiWrite("api-reading-draft", CLINICIANS, _task, method="put"),
    ApiWrite("api-reading-sign", CLINICIANS, _task),
    ApiWrite("api-reading-correct", CLINICIANS, lambda w: {"pk": w.task.pk, "read_pk": w.read.pk}),
    ApiWrite("api-reading-policy", ADMINS, _trial, method="patch"),
]

# Every field any write takes, each of the wrong kind.
INVALID_BODY = {
    field: "?"
    for field in [
        "site",
        "screened_on",
        "indication",
        "year_of_birth",
        "sex",
        "reason",
        "answers",
        "outcome",
        "form_version",
        "consented_at",
        "taken_by",
        "covariates",
        "withdrawn_on",
        "scope",
        "kind",
        "sample_date",
        "result_date",
        "bethesda_category",
        "revealed_to",
        "confirmation",
        "method",
        "factors",
        "block_sizes",
        "ratio",
        "file",
        "phase",
        "data",
        "revision",
        "password",
        "outline",
        "panel_size",
    ]
}


def _api_write_names() -> set[str]:
    """The URL names of every API endpoint that takes a write method (the
    token endpoint, which checks a password, aside)."""
    names: set[str] = set()

    def walk(patterns: list[Any]) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if entry.app_name != "admin":
                    walk(entry.url_patterns)
                continue
            assert isinstance(entry, URLPattern)
            view_class = getattr(entry.callback, "view_class", None)
            writes = any(hasattr(view_class, method) for method in ("post", "put", "patch", "delete"))
            if (entry.name or "").startswith("api-") and writes:
                names.add(entry.name)

    walk(get_resolver().url_patterns)
    return names - {"api-token"}


def _rows_written() -> int:
    return sum(model.objects.count() for model in apps.get_models() if model is not Session)


@pytest.fixture
def write_world(
    users: dict[str, Any], coordinator_b: Any, panel: list[Any], make_case: Callable[..., Any], screen: Any
) -> SimpleNamespace:
    """A thyroid participant of site A in the AI-assisted arm with its
    images, reading tasks (the clinical unaided read signed) and a reference
    result; a screening entry still pending."""
    from randomization.models import Arm

    case = make_case(Arm.AI_ASSISTED)
    clinician = users[Role.CLINICIAN_READER]
    task = case.task()
    reading_services.reading_task_start(actor=actor_for(clinician), task=task)
    read = reading_services.read_sign(
        actor=actor_for(clinician),
        task=task,
        phase="unaided",
        data=valid_read("thyroid"),
        revision=0,
        password=PASSWORD,
    )
    reference = services.reference_result_record(
        actor=actor_for(users[Role.COORDINATOR]),
        participant=case.participant,
        kind=ReferenceKind.THYROID_CYTOLOGY,
        sample_date=timezone.localdate() - dt.timedelta(days=1),
        result_date=timezone.localdate(),
        bethesda_category=2,
    )
    people = {role: users[role] for role in Role.values}
    people[Role.BLINDED_READER] = case.tasks(TaskKind.PANEL)[0].assignee
    people[COORDINATOR_B] = coordinator_b
    return SimpleNamespace(
        people=people, participant=case.participant, task=task, read=read, reference=reference, pending=screen()
    )


def test_the_list_of_api_writes_is_every_api_write():
    assert {write.name for write in API_WRITES} == _api_write_names()


def test_a_caller_without_the_right_is_refused_whatever_the_body_and_nothing_is_written(write_world):
    failures = []
    for write in API_WRITES:
        path = reverse(write.name, kwargs=write.url(write_world))
        for who, user in write_world.people.items():
            if who in write.writers:
                continue
            if write.name == "api-screening-list" and who == COORDINATOR_B:
                continue  # may screen (at site B): test_it_refuses_screening_at_another_site_whatever_the_body
            client = api_client(user)
            for label, body in (("empty", {}), ("invalid", INVALID_BODY)):
                before = _rows_written()
                send = getattr(client, write.method)
                response = send(path, body, format="multipart" if write.multipart else "json")
                what = f"{write.method.upper()} {path} ({write.name}) as {who}, {label} body"
                if response.status_code not in (403, 404):
                    failures.append(f"{what}: {response.status_code} {response.content[:200]!r}")
                    continue
                answer = response.json()
                if answer.get("field") or answer.get("errors"):
                    failures.append(f"{what}: the refusal names an input field: {answer}")
                if _rows_written() != before:
                    failures.append(f"{what}: refused but wrote rows")
    assert not failures, "\n".join(failures)


def test_an_anonymous_caller_is_asked_to_log_in_whatever_the_body(write_world):
    client = api_client(None)
    for write in API_WRITES:
        path = reverse(write.name, kwargs=write.url(write_world))
        for body in ({}, INVALID_BODY):
            response = getattr(client, write.method)(path, body, format="multipart" if write.multipart else "json")
            assert response.status_code == 401, (write.name, response.content)


def test_it_refuses_screening_at_another_site_whatever_the_body(coordinator_b, site_a):
    """The site is named in the body: a coordinator of site B naming site A
    is refused (404) whatever the rest says; naming no valid site is an
    input error (400): they may screen, at their own site."""
    client = api_client(coordinator_b)
    for body in ({"site": site_a.pk}, {**INVALID_BODY, "site": site_a.pk}):
        response = client.post("/api/v1/screening/", body, format="json")
        assert response.status_code == 404, response.content
    response = client.post("/api/v1/screening/", {}, format="json")
    assert response.status_code == 400
    assert "site" in response.json()
    assert not ScreeningEntry.objects.exists()
