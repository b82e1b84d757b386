"""Every enrollment and audit endpoint, for every role and anonymous: the
status each must get. Site-scoped roles (coordinator, clinician reader,
pathologist, monitor) belong to site A; the others hold all sites."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from tests.conftest import ELIGIBLE_CERVICAL, actor_for, api_client
from trial import services
from trial.models import AuditEvent, Participant, ReferenceStandardResult, Role, ScreeningEntry, Withdrawal

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
