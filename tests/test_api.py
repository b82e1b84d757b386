"""The enrollment API end to end, and its answers to bad input."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.conftest import ELIGIBLE_CERVICAL, PASSWORD, api_client
from trial.models import AuditEvent, Participant, ScreeningEntry, ScreeningStatus


def _screening_body(for_site: Any, **overrides: Any) -> dict[str, Any]:
    body = {
        "site": for_site.pk,
        "screened_on": (timezone.localdate() - dt.timedelta(days=2)).isoformat(),
        "indication": "cervical",
        "year_of_birth": 1984,
        "sex": "female",
    }
    body.update(overrides)
    return body


def test_it_screens_assesses_and_enrolls_through_the_api(coordinator, site_a):
    client = api_client(coordinator)
    created = client.post("/api/v1/screening/", _screening_body(site_a), format="json")
    assert created.status_code == 201
    entry_id = created.json()["id"]
    assert created.json()["screening_number"] == "C01-S0001"

    assessed = client.post(f"/api/v1/screening/{entry_id}/eligibility/", {"answers": ELIGIBLE_CERVICAL}, format="json")
    assert assessed.status_code == 200
    assert assessed.json()["status"] == ScreeningStatus.ELIGIBLE
    assert assessed.json()["eligibility"]["is_eligible"] is True

    enrolled = client.post(
        f"/api/v1/screening/{entry_id}/enroll/",
        {
            "form_version": "1.0",
            "consented_at": (timezone.now() - dt.timedelta(minutes=5)).isoformat(),
            "taken_by": coordinator.pk,
            "covariates": {"hpv_status": "negative"},
        },
        format="json",
    )
    assert enrolled.status_code == 201, enrolled.content
    body = enrolled.json()
    assert body["study_id"] == "C01-0001"
    assert body["consents"][0]["form_version"] == "1.0"
    assert body["covariates"] == {"hpv_status": "negative"}


def test_it_records_the_client_ip_and_request_id_in_the_audit_event(coordinator, site_a):
    client = api_client(coordinator)
    response = client.post(
        "/api/v1/screening/",
        _screening_body(site_a),
        format="json",
        HTTP_X_REQUEST_ID="req-0123456789",
        REMOTE_ADDR="10.1.2.3",
    )
    assert response.status_code == 201
    event = AuditEvent.objects.get(action="screening.create")
    assert (event.client_ip, event.request_id, event.actor_username) == (
        "10.1.2.3",
        "req-0123456789",
        coordinator.username,
    )
    assert response["X-Request-ID"] == "req-0123456789"


def test_it_returns_the_first_entry_when_the_same_submission_is_repeated(coordinator, site_a):
    client = api_client(coordinator)
    key = str(uuid.uuid4())
    first = client.post("/api/v1/screening/", _screening_body(site_a), format="json", HTTP_IDEMPOTENCY_KEY=key)
    second = client.post("/api/v1/screening/", _screening_body(site_a), format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert first.status_code == 201 and second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert ScreeningEntry.objects.count() == 1
    assert AuditEvent.objects.filter(action="screening.create").count() == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"screened_on": "2026-13-45"}, "screened_on"),
        ({"screened_on": "yesterday"}, "screened_on"),
        ({"indication": "lung"}, "indication"),
        ({"sex": "robot"}, "sex"),
        ({"year_of_birth": "nineteen"}, "year_of_birth"),
        ({"site": "C01"}, "site"),
    ],
)
def test_it_rejects_malformed_screening_input_with_the_field_named(coordinator, site_a, overrides, field):
    response = api_client(coordinator).post("/api/v1/screening/", _screening_body(site_a, **overrides), format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not ScreeningEntry.objects.exists()
    assert not AuditEvent.objects.filter(action="screening.create").exists()


def test_it_explains_a_broken_rule_with_a_message_and_writes_nothing(coordinator, site_a):
    future = (timezone.localdate() + dt.timedelta(days=3)).isoformat()
    response = api_client(coordinator).post(
        "/api/v1/screening/", _screening_body(site_a, screened_on=future), format="json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == "screened_on"
    assert "in the future" in response.json()["detail"]
    assert not ScreeningEntry.objects.exists()


def test_it_refuses_consent_before_eligibility_is_confirmed(coordinator, screen):
    entry = screen()
    response = api_client(coordinator).post(
        f"/api/v1/screening/{entry.pk}/enroll/",
        {
            "form_version": "1.0",
            "consented_at": timezone.now().isoformat(),
            "taken_by": coordinator.pk,
            "covariates": {"hpv_status": "positive"},
        },
        format="json",
    )
    assert response.status_code == 400
    assert "before eligibility is confirmed" in response.json()["detail"]
    assert not Participant.objects.exists()


def test_it_answers_a_double_click_on_enroll_with_409_and_one_participant(coordinator, screen):
    entry = screen(eligible=True)
    body = {
        "form_version": "1.0",
        "consented_at": (timezone.now() - dt.timedelta(minutes=1)).isoformat(),
        "taken_by": coordinator.pk,
        "covariates": {"hpv_status": "positive"},
    }
    client = api_client(coordinator)
    assert client.post(f"/api/v1/screening/{entry.pk}/enroll/", body, format="json").status_code == 201
    second = client.post(f"/api/v1/screening/{entry.pk}/enroll/", body, format="json")
    assert second.status_code == 409
    assert "already enrolled as C01-0001" in second.json()["detail"]
    assert Participant.objects.count() == 1


def test_it_rejects_an_over_long_withdrawal_reason(coordinator, participant):
    response = api_client(coordinator).post(
        f"/api/v1/participants/{participant.pk}/withdraw/",
        {"withdrawn_on": timezone.localdate().isoformat(), "scope": "stop_follow_up", "reason": "x" * 2001},
        format="json",
    )
    assert response.status_code == 400
    assert "reason" in response.json()
    participant.refresh_from_db()
    assert not participant.follow_up_stopped


def test_it_returns_script_text_as_data_never_as_markup(coordinator, participant):
    reason = '<script>alert("x")</script>'
    client = api_client(coordinator)
    response = client.post(
        f"/api/v1/participants/{participant.pk}/withdraw/",
        {"withdrawn_on": timezone.localdate().isoformat(), "scope": "stop_ai_processing", "reason": reason},
        format="json",
    )
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    assert response.json()["reason"] == reason


def test_it_refuses_a_reference_result_for_a_participant_who_stopped_follow_up(coordinator, participant):
    client = api_client(coordinator)
    today = timezone.localdate().isoformat()
    client.post(
        f"/api/v1/participants/{participant.pk}/withdraw/",
        {"withdrawn_on": today, "scope": "stop_follow_up", "reason": "Moved abroad"},
        format="json",
    )
    response = client.post(
        f"/api/v1/participants/{participant.pk}/reference-results/",
        {"kind": "cervical_histology", "sample_date": today, "result_date": today, "cervical_histology": "cin3"},
        format="json",
    )
    assert response.status_code == 400
    assert "no new clinical data" in response.json()["detail"]
    assert not participant.reference_results.exists()


def test_it_requires_a_reason_to_correct_a_reference_result(coordinator, participant):
    client = api_client(coordinator)
    today = timezone.localdate().isoformat()
    created = client.post(
        f"/api/v1/participants/{participant.pk}/reference-results/",
        {"kind": "cervical_histology", "sample_date": today, "result_date": today, "cervical_histology": "cin1"},
        format="json",
    ).json()
    url = f"/api/v1/participants/{participant.pk}/reference-results/{created['id']}/correct/"
    assert client.post(url, {"cervical_histology": "cin2"}, format="json").status_code == 400
    corrected = client.post(url, {"cervical_histology": "cin2", "reason": "Second pathologist review"}, format="json")
    assert corrected.status_code == 200
    assert corrected.json()["is_high_grade"] is True
    event = AuditEvent.objects.get(action="reference_result.correct")
    assert (event.before["cervical_histology"], event.after["cervical_histology"]) == ("cin1", "cin2")
    assert event.reason == "Second pathologist review"


def test_it_filters_the_audit_trail_and_rejects_a_bad_date(users, participant):
    client = api_client(users["trial_admin"])
    response = client.get("/api/v1/audit-events/", {"action": "participant.enroll"})
    assert response.status_code == 200
    assert [e["action"] for e in response.json()["results"]] == ["participant.enroll"]
    assert client.get("/api/v1/audit-events/", {"date_from": "not-a-date"}).status_code == 400


def test_it_authenticates_with_a_token_from_the_management_command(coordinator, participant, capsys):
    call_command("drf_create_token", coordinator.username)
    token = Token.objects.get(user=coordinator)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.get(f"/api/v1/participants/{participant.pk}/")
    assert response.status_code == 200
    assert response.json()["study_id"] == participant.study_id


def test_it_issues_a_token_for_a_username_and_password(coordinator):
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": coordinator.username, "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["token"] == Token.objects.get(user=coordinator).key


def test_it_serves_an_openapi_schema_naming_the_enrollment_endpoints(coordinator):
    response = api_client(coordinator).get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in [
        "/api/v1/screening/",
        "/api/v1/screening/{id}/enroll/",
        "/api/v1/participants/{id}/withdraw/",
        "/api/v1/audit-events/",
    ]:
        assert path in paths


def test_it_serves_the_interactive_api_docs_from_local_files(coordinator):
    from django.test import Client

    client = Client()
    client.force_login(coordinator)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger-ui" in response.content
    assert b"cdn." not in response.content
