"""Who may open each enrollment page and post each form, for every role.

Expectations are written out here, not derived from trial.permissions, so a
wrong entry in the capability table shows up as a failing test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.conftest import SYSTEM, actor_for, login
from trial import services
from trial.models import (
    AuditEvent,
    Consent,
    EligibilityAssessment,
    Participant,
    ReferenceKind,
    ReferenceStandardResult,
    Role,
    ScreeningEntry,
    ScreeningStatus,
    Withdrawal,
    WithdrawalScope,
)

REFERENCE_NOTE = "Reference-note-4711: squamous epithelium with CIN 3"
EVERYONE: frozenset[str] = frozenset(Role.values)
ENROLLMENT_READERS = EVERYONE - {Role.BLINDED_READER}
COORDINATOR_ONLY = frozenset({Role.COORDINATOR})
REFERENCE_WRITERS = frozenset({Role.COORDINATOR, Role.PATHOLOGIST})
AUDIT_READERS = frozenset({Role.MONITOR, Role.TRIAL_ADMIN})


@pytest.fixture
def world(users: dict[str, Any], coordinator: Any, screen: Any, enroll: Any) -> SimpleNamespace:
    """Site-A objects in every state a page or form needs."""
    participant = enroll()
    result = services.reference_result_record(
        actor=actor_for(coordinator),
        participant=participant,
        kind=ReferenceKind.CERVICAL_HISTOLOGY,
        sample_date=timezone.localdate() - dt.timedelta(days=1),
        result_date=timezone.localdate(),
        cervical_histology="cin3",
        notes=REFERENCE_NOTE,
    )
    return SimpleNamespace(
        users=users,
        participant=participant,
        result=result,
        pending=screen(),
        eligible=screen(eligible=True),
    )


# --- Pages (GET) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    url: Callable[[SimpleNamespace], str]
    allowed: frozenset[str]
    site_a_object: bool = False


PAGES = {
    "dashboard": Page(lambda w: reverse("trial:dashboard"), EVERYONE),
    "screening_list": Page(lambda w: reverse("trial:screening_list"), ENROLLMENT_READERS),
    "screening_create": Page(lambda w: reverse("trial:screening_create"), COORDINATOR_ONLY),
    "screening_detail": Page(
        lambda w: reverse("trial:screening_detail", args=[w.pending.pk]), ENROLLMENT_READERS, site_a_object=True
    ),
    "participant_list": Page(lambda w: reverse("trial:participant_list"), ENROLLMENT_READERS),
    "participant_detail": Page(
        lambda w: reverse("trial:participant_detail", args=[w.participant.pk]), ENROLLMENT_READERS, site_a_object=True
    ),
    "reference_correct": Page(
        lambda w: reverse("trial:reference_correct", args=[w.participant.pk, w.result.pk]),
        REFERENCE_WRITERS,
        site_a_object=True,
    ),
    "audit_list": Page(lambda w: reverse("trial:audit_list"), AUDIT_READERS),
    "audit_export": Page(lambda w: reverse("trial:audit_export"), AUDIT_READERS),
}


@pytest.mark.parametrize("page", PAGES)
def test_an_anonymous_visitor_is_sent_to_the_login_page(world, page):
    url = PAGES[page].url(world)

    response = Client().get(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.parametrize("role", Role.values)
@pytest.mark.parametrize("page", PAGES)
def test_each_role_gets_each_page_or_403(world, page, role):
    expected = 200 if role in PAGES[page].allowed else 403

    response = login(world.users[role]).get(PAGES[page].url(world))

    assert response.status_code == expected


@pytest.mark.parametrize("page", [name for name, page in PAGES.items() if page.site_a_object])
def test_a_site_b_coordinator_gets_404_for_site_a_objects(world, coordinator_b, page):
    response = login(coordinator_b).get(PAGES[page].url(world))

    assert response.status_code == 404


def test_the_blinded_reader_gets_a_home_page_without_recruitment_figures(world):
    response = login(world.users[Role.BLINDED_READER]).get(reverse("trial:dashboard"))

    page = response.content.decode()
    assert response.status_code == 200
    assert "Blinded reader" in page
    assert "Screened" not in page
    assert "Screening log" not in page


def test_the_clinician_reader_sees_the_participant_but_not_the_reference_standard(world):
    response = login(world.users[Role.CLINICIAN_READER]).get(
        reverse("trial:participant_detail", args=[world.participant.pk])
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert world.participant.study_id in page
    assert "Reference standard" not in page
    assert REFERENCE_NOTE not in page
    assert "CIN 3 (HSIL)" not in page
    assert "reference_result.record" not in page


def test_the_pathologist_sees_the_reference_standard(world):
    response = login(world.users[Role.PATHOLOGIST]).get(
        reverse("trial:participant_detail", args=[world.participant.pk])
    )

    page = response.content.decode()
    assert REFERENCE_NOTE in page
    assert "CIN 3 (HSIL)" in page


def test_a_monitor_is_offered_no_action_forms(world):
    response = login(world.users[Role.MONITOR]).get(reverse("trial:screening_detail", args=[world.eligible.pk]))

    for form in ("eligibility_form", "enroll_form", "close_form", "correct_form"):
        assert form not in response.context
    assert reverse("trial:enroll", args=[world.eligible.pk]) not in response.content.decode()


def test_a_coordinator_is_offered_the_consent_form_for_an_eligible_person(world):
    response = login(world.users[Role.COORDINATOR]).get(reverse("trial:screening_detail", args=[world.eligible.pk]))

    assert "enroll_form" in response.context
    assert reverse("trial:enroll", args=[world.eligible.pk]) in response.content.decode()


# --- Audit scope -------------------------------------------------------------------


@pytest.fixture
def site_b_participant(world, coordinator_b, site_b, enroll):
    return enroll(site=site_b, user=coordinator_b)


def test_a_site_a_monitor_sees_no_site_b_events(world, site_b_participant):
    response = login(world.users[Role.MONITOR]).get(reverse("trial:audit_list"))

    sites = {row.event.site.code if row.event.site else None for row in response.context["rows"]}
    assert sites == {"C01"}
    assert site_b_participant.study_id not in response.content.decode()


def test_a_site_a_monitor_exports_no_site_b_events(world, site_b_participant):
    response = login(world.users[Role.MONITOR]).get(reverse("trial:audit_export"))

    text = response.getvalue().decode()
    assert "C01-0001" in text
    assert site_b_participant.study_id not in text
    assert "C02-S" not in text


def test_a_site_a_monitor_cannot_filter_on_site_b(world, site_b, site_b_participant):
    response = login(world.users[Role.MONITOR]).get(reverse("trial:audit_list"), {"site": site_b.pk})

    assert response.status_code == 400
    assert site_b_participant.study_id not in response.content.decode()


def test_a_trial_admin_sees_the_events_of_every_site(world, site_b_participant):
    response = login(world.users[Role.TRIAL_ADMIN]).get(reverse("trial:audit_list"))

    assert site_b_participant.study_id in response.content.decode()


# --- Forms (POST) --------------------------------------------------------------------


def _now_local_minute() -> str:
    return (timezone.now() - dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M")


def _add_protocol_v2(world: SimpleNamespace) -> None:
    trial = world.participant.trial
    services.protocol_version_add(
        actor=SYSTEM,
        trial=trial,
        version="2.0",
        effective_date=timezone.localdate(),
        consent_form_version="2.0",
        eligibility_criteria=trial.protocol_versions.get(version="1.0").eligibility_criteria,
        amendment_reason="Consent form updated",
    )


@dataclass(frozen=True)
class Action:
    url: Callable[[SimpleNamespace], str]
    data: Callable[[SimpleNamespace], dict[str, Any]]
    written: Callable[[], int]
    allowed: frozenset[str]
    prepare: Callable[[SimpleNamespace], None] | None = None


ACTIONS = {
    "screening_create": Action(
        lambda w: reverse("trial:screening_create"),
        lambda w: {
            "site": w.participant.site_id,
            "screened_on": timezone.localdate().isoformat(),
            "indication": "thyroid",
            "year_of_birth": "1970",
            "sex": "male",
            "submission_key": "0b0c9d36-2d5e-4d3c-9a55-1f0e8f6b1c11",
        },
        lambda: ScreeningEntry.objects.count(),
        COORDINATOR_ONLY,
    ),
    "eligibility_assess": Action(
        lambda w: reverse("trial:eligibility_assess", args=[w.pending.pk]),
        lambda w: {"criterion_IN1": "yes", "criterion_IN2": "yes", "criterion_EX1": "no", "criterion_EX2": "no"},
        lambda: EligibilityAssessment.objects.count(),
        COORDINATOR_ONLY,
    ),
    "enroll": Action(
        lambda w: reverse("trial:enroll", args=[w.eligible.pk]),
        lambda w: {
            "form_version": "1.0",
            "consented_at": _now_local_minute(),
            "taken_by": w.users[Role.COORDINATOR].pk,
            "covariate_hpv_status": "negative",
        },
        lambda: Participant.objects.count(),
        COORDINATOR_ONLY,
    ),
    "screening_close": Action(
        lambda w: reverse("trial:screening_close", args=[w.eligible.pk]),
        lambda w: {"outcome": "declined", "reason": "Does not wish to take part"},
        lambda: ScreeningEntry.objects.filter(status=ScreeningStatus.DECLINED).count(),
        COORDINATOR_ONLY,
    ),
    "screening_correct": Action(
        lambda w: reverse("trial:screening_correct", args=[w.pending.pk]),
        lambda w: {
            "screened_on": w.pending.screened_on.isoformat(),
            "year_of_birth": "1979",
            "sex": "female",
            "reason": "Typing error",
        },
        lambda: ScreeningEntry.objects.filter(year_of_birth=1979).count(),
        COORDINATOR_ONLY,
    ),
    "withdraw": Action(
        lambda w: reverse("trial:withdraw", args=[w.participant.pk]),
        lambda w: {
            "withdrawn_on": timezone.localdate().isoformat(),
            "scope": WithdrawalScope.STOP_AI_PROCESSING,
            "reason": "Does not want AI",
        },
        lambda: Withdrawal.objects.count(),
        COORDINATOR_ONLY,
    ),
    "reference_record": Action(
        lambda w: reverse("trial:reference_record", args=[w.participant.pk]),
        lambda w: {
            "kind": ReferenceKind.CERVICAL_HISTOLOGY,
            "sample_date": timezone.localdate().isoformat(),
            "result_date": timezone.localdate().isoformat(),
            "cervical_histology": "cin1",
        },
        lambda: ReferenceStandardResult.objects.count(),
        REFERENCE_WRITERS,
    ),
    "reference_correct": Action(
        lambda w: reverse("trial:reference_correct", args=[w.participant.pk, w.result.pk]),
        lambda w: {
            "kind": ReferenceKind.CERVICAL_HISTOLOGY,
            "sample_date": w.result.sample_date.isoformat(),
            "result_date": w.result.result_date.isoformat(),
            "cervical_histology": "cin2",
            "notes": REFERENCE_NOTE,
            "reason": "Second opinion of the slides",
        },
        lambda: ReferenceStandardResult.objects.filter(cervical_histology="cin2").count(),
        REFERENCE_WRITERS,
    ),
    "consent_renew": Action(
        lambda w: reverse("trial:consent_renew", args=[w.participant.pk]),
        lambda w: {
            "form_version": "2.0",
            "consented_at": _now_local_minute(),
            "taken_by": w.users[Role.COORDINATOR].pk,
        },
        lambda: Consent.objects.count(),
        COORDINATOR_ONLY,
        prepare=_add_protocol_v2,
    ),
}


def _post(world: SimpleNamespace, name: str, client: Client) -> tuple[Any, int, int]:
    """Post the action's form; the response and how many rows of its kind and
    audit events it added."""
    action = ACTIONS[name]
    if action.prepare:
        action.prepare(world)
    rows, events = action.written(), AuditEvent.objects.count()
    response = client.post(action.url(world), action.data(world))
    return response, action.written() - rows, AuditEvent.objects.count() - events


@pytest.mark.parametrize("role", Role.values)
@pytest.mark.parametrize("name", ACTIONS)
def test_each_role_may_post_each_form_or_gets_403_and_nothing_is_written(world, name, role):
    response, rows_added, events_added = _post(world, name, login(world.users[role]))

    if role in ACTIONS[name].allowed:
        assert response.status_code == 302
        assert (rows_added, events_added) == (1, 1)
    else:
        assert response.status_code == 403
        assert (rows_added, events_added) == (0, 0)


@pytest.mark.parametrize("name", ACTIONS)
def test_an_anonymous_post_is_sent_to_login_and_writes_nothing(world, name):
    response, rows_added, events_added = _post(world, name, Client())

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert (rows_added, events_added) == (0, 0)


@pytest.mark.parametrize("name", [name for name in ACTIONS if name != "screening_create"])
def test_a_site_b_coordinator_posting_on_site_a_objects_gets_404(world, coordinator_b, name):
    response, rows_added, events_added = _post(world, name, login(coordinator_b))

    assert response.status_code == 404
    assert (rows_added, events_added) == (0, 0)


def test_a_site_b_coordinator_cannot_screen_at_site_a(world, coordinator_b):
    response, rows_added, events_added = _post(world, "screening_create", login(coordinator_b))

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert (rows_added, events_added) == (0, 0)


def test_a_form_endpoint_refuses_get(world):
    response = login(world.users[Role.COORDINATOR]).get(reverse("trial:withdraw", args=[world.participant.pk]))

    assert response.status_code == 405
