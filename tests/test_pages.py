"""The enrollment pages as a coordinator, monitor or admin uses them: the
flow from screening to a study id, and what a page does with bad input."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.conftest import SYSTEM, actor_for, login
from trial import services
from trial.models import (
    AuditEvent,
    EligibilityAssessment,
    Participant,
    ReferenceKind,
    Role,
    ScreeningEntry,
    ScreeningStatus,
    Withdrawal,
    WithdrawalScope,
)
from trial.views import AUDIT_CSV_COLUMNS


def _days_ago(days: int) -> str:
    return (timezone.localdate() - dt.timedelta(days=days)).isoformat()


def _screening_data(site_a: Any, **overrides: Any) -> dict[str, Any]:
    data = {
        "site": site_a.pk,
        "screened_on": _days_ago(2),
        "indication": "cervical",
        "year_of_birth": "1980",
        "sex": "female",
        "submission_key": str(uuid.uuid4()),
    }
    data.update(overrides)
    return data


def _withdrawal_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "withdrawn_on": timezone.localdate().isoformat(),
        "scope": WithdrawalScope.STOP_FOLLOW_UP,
        "reason": "Moved away",
    }
    data.update(overrides)
    return data


# --- The enrollment flow ----------------------------------------------------------


def test_it_enrolls_a_person_from_screening_to_study_id(coordinator, site_a):
    client = login(coordinator)
    form_page = client.get(reverse("trial:screening_create"))
    submission_key = form_page.context["form"]["submission_key"].value()

    created = client.post(reverse("trial:screening_create"), _screening_data(site_a, submission_key=submission_key))
    entry = ScreeningEntry.objects.get()
    assert created.status_code == 302
    assert created["Location"] == reverse("trial:screening_detail", args=[entry.pk])

    checklist = {"criterion_IN1": "yes", "criterion_IN2": "yes", "criterion_EX1": "no", "criterion_EX2": "no"}
    assessed = client.post(reverse("trial:eligibility_assess", args=[entry.pk]), checklist)
    assert assessed.status_code == 302
    entry.refresh_from_db()
    assert entry.status == ScreeningStatus.ELIGIBLE

    consent = {
        "form_version": "1.0",
        "consented_at": (timezone.now() - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"),
        "taken_by": coordinator.pk,
        "covariate_hpv_status": "positive",
    }
    enrolled = client.post(reverse("trial:enroll", args=[entry.pk]), consent, follow=True)

    assert enrolled.status_code == 200
    assert enrolled.redirect_chain[-1][0] == reverse("trial:participant_detail", args=[Participant.objects.get().pk])
    assert "C01-0001" in enrolled.content.decode()


def test_it_shows_the_eligibility_checklist_of_the_current_protocol(coordinator, screen):
    entry = screen()

    response = login(coordinator).get(reverse("trial:screening_detail", args=[entry.pk]))

    fields = set(response.context["eligibility_form"].fields)
    assert fields == {"criterion_IN1", "criterion_IN2", "criterion_EX1", "criterion_EX2"}
    assert "Previous treatment of the cervix" in response.content.decode()


def test_it_preselects_the_only_site_a_coordinator_may_screen_at(coordinator, site_a):
    response = login(coordinator).get(reverse("trial:screening_create"))

    assert response.context["form"]["site"].value() == site_a.pk


def test_it_records_one_entry_for_a_double_submitted_screening_form(coordinator, site_a):
    client = login(coordinator)
    data = _screening_data(site_a)

    first = client.post(reverse("trial:screening_create"), data)
    second = client.post(reverse("trial:screening_create"), data)

    assert ScreeningEntry.objects.count() == 1
    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]


def test_it_requires_a_reason_to_reassess_eligibility(coordinator, screen):
    entry = screen(eligible=True)
    checklist = {"criterion_IN1": "yes", "criterion_IN2": "yes", "criterion_EX1": "yes", "criterion_EX2": "no"}

    response = login(coordinator).post(reverse("trial:eligibility_assess", args=[entry.pk]), checklist)

    assert response.status_code == 400
    assert "This field is required" in response.content.decode()
    entry.refresh_from_db()
    assert entry.status == ScreeningStatus.ELIGIBLE


def test_it_rejects_an_unanswered_criterion(coordinator, screen):
    entry = screen()

    response = login(coordinator).post(
        reverse("trial:eligibility_assess", args=[entry.pk]), {"criterion_IN1": "yes", "criterion_IN2": "yes"}
    )

    assert response.status_code == 400
    assert EligibilityAssessment.objects.count() == 0


def test_it_closes_an_entry_the_person_declined(coordinator, screen):
    entry = screen(eligible=True)

    response = login(coordinator).post(
        reverse("trial:screening_close", args=[entry.pk]), {"outcome": "declined", "reason": "Prefers not to"}
    )

    assert response.status_code == 302
    entry.refresh_from_db()
    assert entry.status == ScreeningStatus.DECLINED


def test_it_corrects_only_the_changed_screening_field(coordinator, screen):
    entry = screen()
    data = {
        "screened_on": entry.screened_on.isoformat(),
        "year_of_birth": "1981",
        "sex": entry.sex,
        "reason": "Transcription error",
    }

    response = login(coordinator).post(reverse("trial:screening_correct", args=[entry.pk]), data)

    assert response.status_code == 302
    event = AuditEvent.objects.get(action="screening.correct")
    assert (event.before, event.after) == ({"year_of_birth": 1980}, {"year_of_birth": 1981})


# --- Bad input --------------------------------------------------------------------


def test_it_shows_a_posted_script_as_text(coordinator, screen):
    entry = screen(eligible=True)
    client = login(coordinator)
    client.post(
        reverse("trial:screening_close", args=[entry.pk]),
        {"outcome": "not_enrolled", "reason": "<script>alert('x')</script>"},
    )

    page = client.get(reverse("trial:screening_detail", args=[entry.pk])).content.decode()

    assert "<script>alert(" not in page
    assert "&lt;script&gt;alert(" in page


def test_it_answers_400_and_writes_nothing_for_a_malformed_date(coordinator, site_a):
    events_before = AuditEvent.objects.count()

    response = login(coordinator).post(
        reverse("trial:screening_create"), _screening_data(site_a, screened_on="31/02/2026")
    )

    assert response.status_code == 400
    assert "Enter a valid date" in response.content.decode()
    assert ScreeningEntry.objects.count() == 0
    assert AuditEvent.objects.count() == events_before


@pytest.mark.parametrize(("field", "value"), [("sex", "robot"), ("indication", "liver"), ("site", "999999")])
def test_it_answers_400_for_an_unknown_choice(coordinator, site_a, field, value):
    response = login(coordinator).post(reverse("trial:screening_create"), _screening_data(site_a, **{field: value}))

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert ScreeningEntry.objects.count() == 0


def test_it_answers_400_for_an_unknown_withdrawal_scope(coordinator, participant):
    response = login(coordinator).post(
        reverse("trial:withdraw", args=[participant.pk]), _withdrawal_data(scope="vanish")
    )

    assert response.status_code == 400
    assert Withdrawal.objects.count() == 0


def test_it_answers_400_for_an_overlong_reason(coordinator, participant):
    response = login(coordinator).post(
        reverse("trial:withdraw", args=[participant.pk]), _withdrawal_data(reason="x" * 2001)
    )

    assert response.status_code == 400
    assert "at most 2000 characters" in response.content.decode()
    assert Withdrawal.objects.count() == 0


def test_it_shows_a_rule_violation_with_its_message_and_status(coordinator, participant):
    future = (timezone.localdate() + dt.timedelta(days=3)).isoformat()

    response = login(coordinator).post(
        reverse("trial:withdraw", args=[participant.pk]), _withdrawal_data(withdrawn_on=future)
    )

    assert response.status_code == 400
    assert "is in the future" in response.content.decode()
    assert Withdrawal.objects.count() == 0


def test_it_answers_409_for_a_second_withdrawal_with_the_same_scope(coordinator, participant):
    client = login(coordinator)
    client.post(reverse("trial:withdraw", args=[participant.pk]), _withdrawal_data())

    response = client.post(reverse("trial:withdraw", args=[participant.pk]), _withdrawal_data())

    assert response.status_code == 409
    assert "already withdrawn with this scope" in response.content.decode()
    assert Withdrawal.objects.count() == 1


def test_it_refuses_consent_before_eligibility(coordinator, screen):
    entry = screen()
    consent = {
        "form_version": "1.0",
        "consented_at": timezone.now().strftime("%Y-%m-%dT%H:%M"),
        "taken_by": coordinator.pk,
        "covariate_hpv_status": "positive",
    }

    response = login(coordinator).post(reverse("trial:enroll", args=[entry.pk]), consent)

    assert response.status_code == 400
    assert "before eligibility is confirmed" in response.content.decode()
    assert Participant.objects.count() == 0


def test_it_answers_400_for_an_invalid_screening_filter(coordinator, screen):
    screen()

    response = login(coordinator).get(reverse("trial:screening_list"), {"status": "lost"})

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()


# --- Lists ----------------------------------------------------------------------------


def test_it_filters_the_screening_log_by_status(coordinator, screen):
    pending = screen()
    eligible = screen(eligible=True)

    response = login(coordinator).get(reverse("trial:screening_list"), {"status": "eligible"})

    numbers = [entry.screening_number for entry in response.context["page"]]
    assert numbers == [eligible.screening_number]
    assert pending.screening_number not in response.content.decode()


def test_it_pages_the_screening_log_fifty_at_a_time(coordinator, screen):
    for _ in range(51):
        screen()

    first = login(coordinator).get(reverse("trial:screening_list"))
    second = login(coordinator).get(reverse("trial:screening_list"), {"page": 2})

    assert len(first.context["page"]) == 50
    assert len(second.context["page"]) == 1


def test_it_finds_a_participant_by_study_id(coordinator, enroll):
    enroll()
    enroll()

    response = login(coordinator).get(reverse("trial:participant_list"), {"q": "0002"})

    assert [p.study_id for p in response.context["page"]] == ["C01-0002"]


def test_the_dashboard_counts_screened_and_consented_with_totals(coordinator, screen, enroll):
    screen(eligible=False)
    enroll()

    response = login(coordinator).get(reverse("trial:dashboard"))

    (block,) = response.context["trials"]
    assert block.totals["screened"] == 2
    assert block.totals["ineligible"] == 1
    assert block.totals["consented"] == 1
    assert "Pregnant" in response.content.decode()


# --- Participant page -------------------------------------------------------------------


def test_the_participant_timeline_shows_actor_role_reason_and_changes(coordinator, participant):
    client = login(coordinator)
    client.post(reverse("trial:withdraw", args=[participant.pk]), _withdrawal_data(reason="Moved to another city"))

    response = client.get(reverse("trial:participant_detail", args=[participant.pk]))

    actions = [row.event.action for row in response.context["timeline"]]
    assert actions == ["screening.create", "eligibility.assess", "participant.enroll", "participant.withdraw"]
    withdrawal = response.context["timeline"][-1]
    assert withdrawal.role_label == "Coordinator"
    assert withdrawal.event.actor_username == coordinator.username
    page = response.content.decode()
    assert "Moved to another city" in page
    assert "follow_up_stopped" in page
    assert "Time (UTC)" in page


def test_it_records_a_reference_result_from_the_participant_page(coordinator, participant):
    data = {
        "kind": ReferenceKind.CERVICAL_HISTOLOGY,
        "sample_date": _days_ago(1),
        "result_date": _days_ago(0),
        "cervical_histology": "cin3",
        "figo_stage": "",
        "notes": "",
    }

    response = login(coordinator).post(reverse("trial:reference_record", args=[participant.pk]), data, follow=True)

    assert response.status_code == 200
    assert "CIN 3 (HSIL)" in response.content.decode()


def test_it_corrects_a_reference_result_with_a_reason(coordinator, participant):
    result = services.reference_result_record(
        actor=actor_for(coordinator),
        participant=participant,
        kind=ReferenceKind.CERVICAL_HISTOLOGY,
        sample_date=timezone.localdate() - dt.timedelta(days=1),
        result_date=timezone.localdate(),
        cervical_histology="cin2",
    )
    data = {
        "kind": ReferenceKind.CERVICAL_HISTOLOGY,
        "sample_date": result.sample_date.isoformat(),
        "result_date": result.result_date.isoformat(),
        "cervical_histology": "cin3",
        "reason": "Pathology review",
    }

    response = login(coordinator).post(reverse("trial:reference_correct", args=[participant.pk, result.pk]), data)

    assert response.status_code == 302
    result.refresh_from_db()
    assert result.cervical_histology == "cin3"
    event = AuditEvent.objects.get(action="reference_result.correct")
    assert event.after is not None
    assert event.after["cervical_histology"] == "cin3" and event.reason == "Pathology review"


def test_it_renews_consent_on_an_amended_form(coordinator, participant, recruiting):
    services.protocol_version_add(
        actor=SYSTEM,
        trial=recruiting,
        version="2.0",
        effective_date=timezone.localdate(),
        consent_form_version="2.0",
        eligibility_criteria=recruiting.protocol_versions.get().eligibility_criteria,
        amendment_reason="New imaging substudy",
    )
    data = {
        "form_version": "2.0",
        "consented_at": timezone.now().strftime("%Y-%m-%dT%H:%M"),
        "taken_by": coordinator.pk,
    }

    response = login(coordinator).post(reverse("trial:consent_renew", args=[participant.pk]), data)

    assert response.status_code == 302
    assert sorted(participant.consents.values_list("form_version", flat=True)) == ["1.0", "2.0"]


# --- Audit trail ----------------------------------------------------------------------------


def _export_rows(user: Any, **params: Any) -> list[dict[str, str]]:
    response = login(user).get(reverse("trial:audit_export"), params)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    text = response.getvalue().decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_the_audit_export_has_every_column_and_every_event(users, participant):
    response = login(users[Role.TRIAL_ADMIN]).get(reverse("trial:audit_export"))
    text = response.getvalue().decode()
    header, *rows = list(csv.reader(io.StringIO(text)))

    assert header == AUDIT_CSV_COLUMNS
    assert len(rows) == AuditEvent.objects.count()
    assert 'attachment; filename="consilium-audit-' in response["Content-Disposition"]


def test_the_audit_export_writes_an_event_as_recorded(users, participant):
    rows = _export_rows(users[Role.TRIAL_ADMIN], action="participant.enroll")

    (row,) = rows
    event = AuditEvent.objects.get(action="participant.enroll")
    assert row["sequence"] == str(event.sequence)
    assert row["occurred_at"] == event.occurred_at.astimezone(dt.UTC).isoformat()
    assert row["occurred_at"].endswith("+00:00")
    assert row["actor"] == "user-coordinator"
    assert row["role"] == Role.COORDINATOR
    assert (row["trial"], row["site"]) == ("CONSILIUM", "C01")
    assert row["object_label"] == "C01-0001"
    assert row["before"] == ""
    assert '"study_id": "C01-0001"' in row["after"]
    assert (row["previous_hash"], row["hash"]) == (event.previous_hash, event.hash)


def test_the_audit_export_defuses_spreadsheet_formulas(users, coordinator, participant):
    services.participant_withdraw(
        actor=actor_for(coordinator),
        participant=participant,
        withdrawn_on=timezone.localdate(),
        scope=WithdrawalScope.STOP_AI_PROCESSING,
        reason='=HYPERLINK("http://evil.example","click")',
    )

    (row,) = _export_rows(users[Role.TRIAL_ADMIN], action="participant.withdraw")

    assert row["reason"] == '\'=HYPERLINK("http://evil.example","click")'


def test_the_audit_list_filters_by_object(users, participant):
    response = login(users[Role.MONITOR]).get(
        reverse("trial:audit_list"), {"object_type": "trial.participant", "object_id": str(participant.pk)}
    )

    assert [row.event.action for row in response.context["rows"]] == ["participant.enroll"]


def test_the_audit_list_shows_errors_for_a_bad_filter(users, participant):
    response = login(users[Role.TRIAL_ADMIN]).get(
        reverse("trial:audit_list"), {"date_from": "yesterday", "site": "abc"}
    )

    assert response.status_code == 400
    page = response.content.decode()
    assert "Enter a valid date" in page
    assert "Select a valid choice" in page
    assert list(response.context["rows"]) == []


def test_the_audit_export_refuses_a_bad_filter(users, participant):
    response = login(users[Role.TRIAL_ADMIN]).get(
        reverse("trial:audit_export"), {"date_from": "2026-03-01", "date_to": "2026-02-01"}
    )

    assert response.status_code == 400
    assert "The end date is before the start date" in response.content.decode()
