"""Every randomization endpoint and page, for every role and anonymous: the
status each must get, that a refused write writes nothing, and what blinded
roles may see of an arm.

Site-scoped roles (coordinator, clinician reader, pathologist, monitor)
belong to site A; the others hold all sites. Expectations are written out
here, not derived from trial.permissions, so a wrong entry in the capability
table shows up as a failing test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from randomization import services
from randomization.models import Allocation, AllocationTableEntry, RandomizationScheme, SchemeSecret, Unblinding
from tests.conftest import SYSTEM, actor_for, api_client, login
from trial import services as trial_services
from trial.models import AuditEvent, Role

ANONYMOUS = "anonymous"
ROLES = [*Role.values, ANONYMOUS]
EVERYONE = frozenset(Role.values)
SITE_A_ONLY = frozenset({Role.COORDINATOR, Role.CLINICIAN_READER, Role.PATHOLOGIST, Role.MONITOR})
PARTICIPANT_READERS = EVERYONE - {Role.BLINDED_READER}
RANDOMIZERS = frozenset({Role.COORDINATOR})
CONFIGURERS = frozenset({Role.TRIAL_ADMIN})
OVERSEERS = frozenset({Role.TRIAL_ADMIN, Role.DSMB, Role.STATISTICIAN_UNBLINDED})
UNBLINDERS = frozenset({Role.TRIAL_ADMIN})
UNBLINDING_READERS = frozenset({Role.TRIAL_ADMIN, Role.DSMB, Role.STATISTICIAN_UNBLINDED, Role.MONITOR})

ARM_WORDS = ("ai_assisted", "specialist_only", "AI-assisted", "Specialist only")
TABLE_CSV = b"sequence,arm,site\n1,ai_assisted,C01\n2,specialist_only,C01\n1,specialist_only,C02\n2,ai_assisted,C02\n"


@pytest.fixture
def world(users: dict[str, Any], coordinator: Any, coordinator_b: Any, site_b: Any, enroll: Any, block_scheme: Any):
    """Site A: one randomized participant and one waiting; site B the same.
    Scheme v1 is active; a draft v2 (permuted blocks by site, protocol 2.0)
    waits to be activated."""
    randomized_a = enroll()
    waiting_a = enroll()
    randomized_b = enroll(site=site_b, user=coordinator_b)
    waiting_b = enroll(site=site_b, user=coordinator_b)
    services.participant_randomize(actor=actor_for(coordinator), participant=randomized_a)
    services.participant_randomize(actor=actor_for(coordinator_b), participant=randomized_b)
    trial = block_scheme.trial
    trial_services.protocol_version_add(
        actor=SYSTEM,
        trial=trial,
        version="2.0",
        effective_date=dt.date(2026, 1, 2),
        consent_form_version="1.0",
        eligibility_criteria=trial.protocol_versions.get(version="1.0").eligibility_criteria,
        amendment_reason="Randomization by site only",
    )
    services.scheme_configure(
        actor=SYSTEM,
        trial=trial,
        method="permuted_blocks",
        factors=["site"],
        block_sizes=[2],
        protocol_version=trial.protocol_versions.get(version="2.0"),
        reason="Protocol 2.0 stratifies by site only",
    )
    return SimpleNamespace(
        users=users,
        trial=trial,
        randomized_a=randomized_a,
        waiting_a=waiting_a,
        randomized_b=randomized_b,
        waiting_b=waiting_b,
    )


def api_for(role: str, users: dict[str, Any]) -> Any:
    return api_client(None if role == ANONYMOUS else users[role])


def expected(role: str, allowed: frozenset[str], *, success: int, participant_at_b: bool = False) -> int:
    """Anonymous → 401; a participant outside the member's sites → 404
    before any finer permission; then allowed → success, else 403 (the
    blinded reader, who sees no participant at all, included)."""
    if role == ANONYMOUS:
        return 401
    if participant_at_b and role in SITE_A_ONLY:
        return 404
    return success if role in allowed else 403


# --- API ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    url: Callable[[SimpleNamespace], str]
    allowed: frozenset[str]
    success: int
    body: Callable[[SimpleNamespace], dict[str, Any]] | None = None
    participant_at_b: bool = False
    multipart: bool = False


def _unblind_body(w: SimpleNamespace) -> dict[str, Any]:
    return {
        "revealed_to": w.users[Role.PATHOLOGIST].pk,
        "reason": "Suspected adverse reaction; the treating pathologist needs the arm",
        "confirmation": f"UNBLIND {w.randomized_a.study_id}",
    }


ENDPOINTS = {
    "randomize": Endpoint("post", lambda w: f"/api/v1/participants/{w.waiting_a.pk}/randomize/", RANDOMIZERS, 201),
    "randomize_site_b": Endpoint(
        "post", lambda w: f"/api/v1/participants/{w.waiting_b.pk}/randomize/", frozenset(), 201, participant_at_b=True
    ),
    "randomize_again": Endpoint(
        "post", lambda w: f"/api/v1/participants/{w.randomized_a.pk}/randomize/", RANDOMIZERS, 200
    ),
    "allocation": Endpoint(
        "get", lambda w: f"/api/v1/participants/{w.randomized_a.pk}/allocation/", PARTICIPANT_READERS, 200
    ),
    "allocation_site_b": Endpoint(
        "get",
        lambda w: f"/api/v1/participants/{w.randomized_b.pk}/allocation/",
        PARTICIPANT_READERS,
        200,
        participant_at_b=True,
    ),
    "allocation_waiting": Endpoint(
        "get", lambda w: f"/api/v1/participants/{w.waiting_a.pk}/allocation/", PARTICIPANT_READERS, 200
    ),
    "schemes": Endpoint("get", lambda w: f"/api/v1/trials/{w.trial.pk}/randomization/schemes/", OVERSEERS, 200),
    "configure": Endpoint(
        "post",
        lambda w: f"/api/v1/trials/{w.trial.pk}/randomization/schemes/",
        CONFIGURERS,
        201,
        body=lambda w: {
            "method": "minimization",
            "factors": ["site", "indication"],
            "protocol_version": w.trial.protocol_versions.get(version="2.0").pk,
            "reason": "Minimization from protocol 2.0",
        },
    ),
    "activate": Endpoint("post", lambda w: f"/api/v1/trials/{w.trial.pk}/randomization/activate/", CONFIGURERS, 200),
    "table": Endpoint(
        "post",
        lambda w: f"/api/v1/trials/{w.trial.pk}/randomization/table/",
        CONFIGURERS,
        201,
        body=lambda w: {"file": _csv_upload()},
        multipart=True,
    ),
    "balance": Endpoint("get", lambda w: f"/api/v1/trials/{w.trial.pk}/randomization/balance/", OVERSEERS, 200),
    "unblind": Endpoint(
        "post", lambda w: f"/api/v1/participants/{w.randomized_a.pk}/unblind/", UNBLINDERS, 201, body=_unblind_body
    ),
    "unblind_site_b": Endpoint(
        "post",
        lambda w: f"/api/v1/participants/{w.randomized_b.pk}/unblind/",
        UNBLINDERS,
        201,
        body=lambda w: {**_unblind_body(w), "confirmation": f"UNBLIND {w.randomized_b.study_id}"},
        participant_at_b=True,
    ),
    "unblindings": Endpoint("get", lambda w: "/api/v1/unblindings/", UNBLINDING_READERS, 200),
}


def _csv_upload() -> Any:
    return SimpleUploadedFile("table.csv", TABLE_CSV, content_type="text/csv")


def _written() -> tuple[int, ...]:
    return (
        Allocation.objects.count(),
        RandomizationScheme.objects.count(),
        AllocationTableEntry.objects.count(),
        Unblinding.objects.count(),
        RandomizationScheme.objects.filter(status="active").values_list("version", flat=True).first() or 0,
        AuditEvent.objects.count(),
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", ENDPOINTS)
def test_each_role_gets_each_randomization_endpoint_or_its_refusal(world, role, name):
    endpoint = ENDPOINTS[name]
    client = api_for(role, world.users)
    before = _written()

    if endpoint.method == "get":
        response = client.get(endpoint.url(world))
    else:
        body = endpoint.body(world) if endpoint.body else {}
        response = client.post(endpoint.url(world), body, format="multipart" if endpoint.multipart else "json")

    assert response.status_code == expected(
        role, endpoint.allowed, success=endpoint.success, participant_at_b=endpoint.participant_at_b
    ), response.content
    if endpoint.method == "post" and response.status_code >= 400:
        assert _written() == before, "a refused request wrote something"


@pytest.mark.parametrize("role", [Role.PATHOLOGIST, Role.BLINDED_READER])
def test_a_blinded_reader_or_pathologist_never_receives_an_arm(world, role):
    """The content rule, for the roles blind to the arm: the allocation API,
    the timeline API and the participant page of a randomized participant
    carry no arm name or code."""
    user = world.users[role]
    pk = world.randomized_a.pk
    responses = [
        api_client(user).get(f"/api/v1/participants/{pk}/allocation/"),
        api_client(user).get(f"/api/v1/participants/{pk}/timeline/"),
        api_client(user).get(f"/api/v1/participants/{pk}/"),
        login(user).get(reverse("trial:participant_detail", args=[pk])),
    ]
    for response in responses:
        text = response.content.decode()
        for word in ARM_WORDS:
            assert word not in text, (response.request["PATH_INFO"], word)
    if role == Role.PATHOLOGIST:
        assert responses[0].json() == {
            "randomized": True,
            "arm": None,
            "arm_label": None,
            "masked": False,
            "sequence_number": 1,
            "allocated_at": responses[0].json()["allocated_at"],
        }
        assert "Randomized (arm concealed)" in responses[3].content.decode()
    else:
        assert all(response.status_code == 403 for response in responses)


def test_the_blinded_statistician_sees_a_masked_label_only(world):
    user = world.users[Role.STATISTICIAN_BLINDED]
    pk = world.randomized_a.pk

    allocation = api_client(user).get(f"/api/v1/participants/{pk}/allocation/").json()
    page = login(user).get(reverse("trial:participant_detail", args=[pk])).content.decode()
    timeline = api_client(user).get(f"/api/v1/participants/{pk}/timeline/").content.decode()

    assert allocation["arm"] is None
    assert allocation["masked"] is True
    assert allocation["arm_label"] in ("A", "B")
    assert f"Arm {allocation['arm_label']}" in page
    for text in (page, timeline, str(allocation)):
        for word in ARM_WORDS:
            assert word not in text


# --- Pages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    url: Callable[[SimpleNamespace], str]
    allowed: frozenset[str]
    participant_page: bool = False


PAGES = {
    "index": Page(lambda w: reverse("randomization:index"), OVERSEERS),
    "setup": Page(lambda w: reverse("randomization:setup", args=[w.trial.pk]), OVERSEERS),
    "unblinding_list": Page(lambda w: reverse("randomization:unblinding_list"), UNBLINDING_READERS),
    "randomize": Page(
        lambda w: reverse("randomization:randomize", args=[w.waiting_a.pk]), RANDOMIZERS, participant_page=True
    ),
    "unblind": Page(
        lambda w: reverse("randomization:unblind", args=[w.randomized_a.pk]), UNBLINDERS, participant_page=True
    ),
    "participant_detail": Page(
        lambda w: reverse("trial:participant_detail", args=[w.randomized_a.pk]),
        PARTICIPANT_READERS,
        participant_page=True,
    ),
    "dashboard": Page(lambda w: reverse("trial:dashboard"), EVERYONE),
}


@pytest.mark.parametrize("page", PAGES)
def test_an_anonymous_visitor_is_sent_to_the_login_page(world, page):
    response = Client().get(PAGES[page].url(world))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.parametrize("role", Role.values)
@pytest.mark.parametrize("page", PAGES)
def test_each_role_gets_each_randomization_page_or_403(world, role, page):
    response = login(world.users[role]).get(PAGES[page].url(world))

    assert response.status_code == (200 if role in PAGES[page].allowed else 403)


@pytest.mark.parametrize("page", ["randomize", "unblind", "participant_detail"])
def test_a_site_b_coordinator_gets_404_for_site_a_participant_pages(world, coordinator_b, page):
    response = login(coordinator_b).get(PAGES[page].url(world))

    assert response.status_code == 404


@dataclass(frozen=True)
class Form:
    url: Callable[[SimpleNamespace], str]
    allowed: frozenset[str]
    data: Callable[[SimpleNamespace], dict[str, Any]]


FORMS = {
    "randomize": Form(lambda w: reverse("randomization:randomize", args=[w.waiting_a.pk]), RANDOMIZERS, lambda w: {}),
    "unblind": Form(
        lambda w: reverse("randomization:unblind", args=[w.randomized_a.pk]),
        UNBLINDERS,
        _unblind_body,
    ),
    "configure": Form(
        lambda w: reverse("randomization:configure", args=[w.trial.pk]),
        CONFIGURERS,
        lambda w: {
            "method": "simple",
            "ratio": "1:1",
            "factors": ["site"],
            "imbalance_measure": "range",
            "minimization_probability": "0.8",
            "low_table_warning": "10",
            "protocol_version": str(w.trial.protocol_versions.get(version="2.0").pk),
            "reason": "Simple randomization from protocol 2.0",
        },
    ),
    "table": Form(
        lambda w: reverse("randomization:table_upload", args=[w.trial.pk]),
        CONFIGURERS,
        lambda w: {"file": _csv_upload()},
    ),
    "activate": Form(
        lambda w: reverse("randomization:activate", args=[w.trial.pk]), CONFIGURERS, lambda w: {"confirm": "on"}
    ),
}


@pytest.mark.parametrize("role", Role.values)
@pytest.mark.parametrize("form", FORMS)
def test_each_form_is_accepted_from_its_roles_only_and_a_refusal_writes_nothing(world, role, form):
    before = _written()

    response = login(world.users[role]).post(FORMS[form].url(world), FORMS[form].data(world))

    if role in FORMS[form].allowed:
        assert response.status_code == 302, response.content.decode()[:2000]
        assert _written() != before
    else:
        assert response.status_code == 403
        assert _written() == before


@pytest.mark.parametrize("form", FORMS)
def test_an_anonymous_post_writes_nothing(world, form):
    before = _written()

    response = Client().post(FORMS[form].url(world), FORMS[form].data(world))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert _written() == before


# --- The seed ----------------------------------------------------------------------------


def test_no_answer_to_the_trial_admin_contains_a_seed(world):
    """The seed decides every arm; only its commitment may be published
    before the trial is unblinded."""
    admin = world.users[Role.TRIAL_ADMIN]
    client = api_client(admin)
    trial = world.trial
    base = f"/api/v1/trials/{trial.pk}/randomization"
    responses = [
        client.get(f"{base}/schemes/"),
        client.post(f"{base}/table/", {"file": _csv_upload()}, format="multipart"),
        client.post(
            f"{base}/schemes/",
            {
                "method": "minimization",
                "factors": ["site"],
                "protocol_version": trial.protocol_versions.get(version="2.0").pk,
                "reason": "Minimization from protocol 2.0",
            },
            format="json",
        ),
        client.post(f"{base}/activate/"),
        client.get(f"{base}/schemes/"),
        client.get(f"{base}/balance/"),
        client.get(f"/api/v1/participants/{world.randomized_a.pk}/allocation/"),
        client.get(f"/api/v1/participants/{world.randomized_a.pk}/timeline/"),
        client.get("/api/v1/audit-events/?limit=1000"),
        client.get("/api/schema/"),
        login(admin).get(reverse("randomization:setup", args=[trial.pk])),
        login(admin).get(reverse("trial:participant_detail", args=[world.randomized_a.pk])),
    ]
    seeds = list(SchemeSecret.objects.values_list("seed_hex", flat=True))
    assert len(seeds) == 3
    for response in responses:
        assert response.status_code in (200, 201), (response.request["PATH_INFO"], response.content[:500])
        text = response.content.decode()
        for seed in seeds:
            assert seed not in text
            assert seed.upper() not in text
    commitments = [c for c in RandomizationScheme.objects.values_list("seed_commitment", flat=True) if c]
    assert commitments and all(c in responses[4].content.decode() for c in commitments)
