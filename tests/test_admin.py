"""The admin: trial admins only, set-up through services (audited), clinical
data read-only, nothing deletable."""

from __future__ import annotations

import pytest

from tests.conftest import login
from trial.models import AuditEvent, Membership, Role, Site


@pytest.mark.parametrize("role", [r for r in Role.values if r != Role.TRIAL_ADMIN])
def test_it_keeps_every_other_role_out_of_the_admin(role, users):
    response = login(users[role]).get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_it_lets_a_trial_admin_in(users):
    assert login(users[Role.TRIAL_ADMIN]).get("/admin/").status_code == 200


def test_it_adds_a_site_through_the_service_with_an_audit_event(users, recruiting):
    client = login(users[Role.TRIAL_ADMIN])
    response = client.post(
        "/admin/trial/site/add/",
        {"trial": recruiting.pk, "code": "C09", "name": "Site Nine", "country": "Ireland", "target_participants": 40},
    )
    assert response.status_code == 302, response.content
    site = Site.objects.get(code="C09")
    event = AuditEvent.objects.get(action="site.add", object_id=str(site.pk))
    assert event.actor_username == users[Role.TRIAL_ADMIN].username
    assert event.role == Role.TRIAL_ADMIN


def test_it_refuses_a_duplicate_site_code_with_a_message_and_writes_nothing(users, recruiting, site_a):
    client = login(users[Role.TRIAL_ADMIN])
    before = AuditEvent.objects.count()
    response = client.post(
        "/admin/trial/site/add/",
        {"trial": recruiting.pk, "code": "C01", "name": "Again", "country": "", "target_participants": 1},
        follow=True,
    )
    assert b"errorlist" in response.content
    assert Site.objects.filter(code="C01").count() == 1
    assert AuditEvent.objects.count() == before


def test_it_needs_a_reason_to_revoke_a_membership(users):
    client = login(users[Role.TRIAL_ADMIN])
    membership = Membership.objects.get(user=users[Role.MONITOR])
    url = f"/admin/trial/membership/{membership.pk}/change/"
    response = client.post(url, {"active": "", "change_reason": ""})
    assert response.status_code == 200
    assert b"A reason is required" in response.content
    membership.refresh_from_db()
    assert membership.active
    response = client.post(url, {"active": "", "change_reason": "Left the monitoring team"})
    assert response.status_code == 302
    membership.refresh_from_db()
    assert not membership.active
    assert AuditEvent.objects.get(action="membership.revoke").reason == "Left the monitoring team"


def test_it_shows_clinical_data_read_only_and_deletes_nothing(users, participant):
    client = login(users[Role.TRIAL_ADMIN])
    assert client.get(f"/admin/trial/participant/{participant.pk}/change/").status_code == 200
    assert client.get("/admin/trial/participant/add/").status_code == 403
    assert client.post(f"/admin/trial/participant/{participant.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.post("/admin/trial/auditevent/1/delete/", {"post": "yes"}).status_code == 403


def test_it_reports_a_broken_rule_from_the_service_and_writes_nothing(users, recruiting):
    from trial.models import ProtocolVersion

    client = login(users[Role.TRIAL_ADMIN])
    before = AuditEvent.objects.count()
    response = client.post(
        "/admin/trial/protocolversion/add/",
        {
            "trial": recruiting.pk,
            "version": "2.0",
            "effective_date": "2026-06-01",
            "consent_form_version": "2.0",
            "amendment_reason": "",
            "criteria_json": '[{"code": "IN1", "text": "Adult", "kind": "inclusion"}]',
        },
        follow=True,
    )
    assert b"Not saved: A reason is required to amend the protocol" in response.content
    assert not ProtocolVersion.objects.filter(version="2.0").exists()
    assert AuditEvent.objects.count() == before
