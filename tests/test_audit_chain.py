"""The hash-chained, append-only audit trail: one event per write, in the
write's transaction; the chain detects edited, removed and reordered events;
the database refuses UPDATE, DELETE and TRUNCATE; `manage.py verify_audit`
says so with its exit status.

Tampering simulates an attacker with database rights: the test drops the
append-only triggers inside its own transaction, rewrites rows with raw SQL,
and the test transaction's rollback brings the triggers back.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone

from tests.conftest import SYSTEM, actor_for
from trial import audit, services
from trial.actors import Actor
from trial.errors import DomainError, RuleViolation
from trial.models import (
    AuditChainHead,
    AuditEvent,
    Consent,
    EligibilityAssessment,
    Membership,
    Participant,
    ProtocolVersion,
    ReferenceStandardResult,
    Role,
    ScreeningEntry,
    Site,
    Trial,
    Withdrawal,
)

# --- Helpers --------------------------------------------------------------------


def execute(sql: str, params: list[Any] | tuple[Any, ...] = ()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def drop_protection() -> None:
    """What an attacker with DDL rights would do first. Undone by the test
    transaction's rollback (DDL is transactional on SQLite and PostgreSQL)."""
    statements = audit.POSTGRESQL_REMOVE if connection.vendor == "postgresql" else audit.SQLITE_REMOVE
    for statement in statements:
        execute(statement)


def last_sequence() -> int:
    return AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0


def run_verify_audit(*arguments: str) -> tuple[int, str, str]:
    """Run the command; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("verify_audit", *arguments, stdout=out, stderr=err)
        status = 0
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    return status, out.getvalue(), err.getvalue()


def counts() -> dict[str, int]:
    return {
        "events": AuditEvent.objects.count(),
        "screening": ScreeningEntry.objects.count(),
        "participants": Participant.objects.count(),
        "consents": Consent.objects.count(),
        "references": ReferenceStandardResult.objects.count(),
    }


@pytest.fixture
def admin_user(users: dict[str, Any]) -> Any:
    return users[Role.TRIAL_ADMIN]


@pytest.fixture
def busy_trail(
    participant: Participant, coordinator: Any, enroll: Callable[..., Participant], users: dict[str, Any]
) -> int:
    """A trail of a few dozen events of every kind; returns its length."""
    services.reference_result_record(
        actor=actor_for(users[Role.PATHOLOGIST]),
        participant=participant,
        kind="cervical_histology",
        sample_date=timezone.localdate() - dt.timedelta(days=1),
        result_date=timezone.localdate(),
        cervical_histology="cin2",
    )
    second = enroll(indication="thyroid")
    services.participant_withdraw(
        actor=actor_for(coordinator),
        participant=second,
        withdrawn_on=timezone.localdate(),
        scope="stop_ai_processing",
        reason="Prefers no AI processing",
    )
    count = AuditEvent.objects.count()
    assert count >= 20
    return count


# --- One event per write, in the write's transaction ------------------------------


@dataclass(frozen=True)
class Expected:
    action: str
    model: type[models.Model]
    role: str
    before: dict[str, Any] | None = None  # subset the event's `before` must contain; None: must be empty
    after: dict[str, Any] | None = None  # subset the event's `after` must contain
    reason: str = ""


@dataclass
class Setting:
    """Everything a write scenario may need, built by the fixtures."""

    trial: Trial
    site_a: Site
    users: dict[str, Any]
    coordinator: Any
    superuser: Any
    screen: Callable[..., ScreeningEntry]
    enroll: Callable[..., Participant]

    @property
    def admin(self) -> Any:
        return self.users[Role.TRIAL_ADMIN]


def _trial_create(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    return s.superuser, lambda: services.trial_create(
        actor=actor_for(s.superuser),
        code="SECOND",
        title="Second trial",
        indications=["thyroid"],
        planned_sample_size=10,
        start_date=dt.date(2026, 1, 1),
    )


def _trial_set_status(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    return s.admin, lambda: services.trial_set_status(
        actor=actor_for(s.admin), trial=s.trial, status="recruitment_closed", reason="Target reached"
    )


def _protocol_version_add(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    return s.admin, lambda: services.protocol_version_add(
        actor=actor_for(s.admin),
        trial=s.trial,
        version="2.0",
        effective_date=dt.date(2026, 2, 1),
        consent_form_version="2.0",
        eligibility_criteria=[{"code": "IN1", "text": "Adult", "kind": "inclusion"}],
        amendment_reason="Amendment 1: wider age range",
    )


def _site_add(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    return s.admin, lambda: services.site_add(actor=actor_for(s.admin), trial=s.trial, code="C09", name="Site Z")


def _membership_grant(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    newcomer = get_user_model().objects.create_user(username="newcomer")
    return s.admin, lambda: services.membership_grant(
        actor=actor_for(s.admin), user=newcomer, trial=s.trial, role=Role.MONITOR, site=s.site_a
    )


def _membership_revoke(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    membership = Membership.objects.get(user=s.coordinator, role=Role.COORDINATOR)
    return s.admin, lambda: services.membership_revoke(
        actor=actor_for(s.admin), membership=membership, reason="Left the site"
    )


def _screening_create(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    return s.coordinator, lambda: services.screening_create(
        actor=actor_for(s.coordinator),
        site=s.site_a,
        screened_on=timezone.localdate(),
        indication="cervical",
        year_of_birth=1975,
        sex="female",
    )


def _screening_correct(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    entry = s.screen()
    return s.coordinator, lambda: services.screening_correct(
        actor=actor_for(s.coordinator), entry=entry, changes={"year_of_birth": 1981}, reason="Typo in year of birth"
    )


def _eligibility_assess(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    entry = s.screen()
    return s.coordinator, lambda: services.eligibility_assess(
        actor=actor_for(s.coordinator), entry=entry, answers={"IN1": True, "IN2": True, "EX1": False, "EX2": False}
    )


def _eligibility_reassess(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    entry = s.screen(eligible=True)
    return s.coordinator, lambda: services.eligibility_assess(
        actor=actor_for(s.coordinator),
        entry=entry,
        answers={"IN1": True, "IN2": True, "EX1": True, "EX2": False},
        reason="Pregnancy test came back positive",
    )


def _screening_close(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    entry = s.screen(eligible=True)
    return s.coordinator, lambda: services.screening_close(
        actor=actor_for(s.coordinator), entry=entry, outcome="declined", reason="Did not wish to take part"
    )


def _participant_enroll(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    entry = s.screen(eligible=True)
    return s.coordinator, lambda: services.participant_enroll(
        actor=actor_for(s.coordinator),
        entry=entry,
        form_version="1.0",
        consented_at=timezone.now() - dt.timedelta(minutes=5),
        taken_by=s.coordinator,
        covariates={"hpv_status": "positive"},
    )


def _consent_renew(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    participant = s.enroll()
    services.protocol_version_add(
        actor=SYSTEM,
        trial=s.trial,
        version="2.0",
        effective_date=timezone.localdate() - dt.timedelta(days=1),
        consent_form_version="2.0",
        eligibility_criteria=ProtocolVersion.objects.get(version="1.0").eligibility_criteria,
        amendment_reason="New consent form",
    )
    return s.coordinator, lambda: services.consent_renew(
        actor=actor_for(s.coordinator),
        participant=participant,
        form_version="2.0",
        consented_at=timezone.now() - dt.timedelta(minutes=1),
        taken_by=s.coordinator,
    )


def _participant_withdraw(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    participant = s.enroll()
    return s.coordinator, lambda: services.participant_withdraw(
        actor=actor_for(s.coordinator),
        participant=participant,
        withdrawn_on=timezone.localdate(),
        scope="stop_follow_up",
        reason="Moved abroad",
    )


def _reference_values() -> dict[str, Any]:
    return {
        "kind": "cervical_histology",
        "sample_date": timezone.localdate() - dt.timedelta(days=1),
        "result_date": timezone.localdate(),
        "cervical_histology": "cin1",
    }


def _reference_result_record(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    participant = s.enroll()
    pathologist = s.users[Role.PATHOLOGIST]
    return pathologist, lambda: services.reference_result_record(
        actor=actor_for(pathologist), participant=participant, **_reference_values()
    )


def _reference_result_correct(s: Setting) -> tuple[Any, Callable[[], models.Model]]:
    participant = s.enroll()
    pathologist = s.users[Role.PATHOLOGIST]
    result = services.reference_result_record(
        actor=actor_for(pathologist), participant=participant, **_reference_values()
    )
    return pathologist, lambda: services.reference_result_correct(
        actor=actor_for(pathologist),
        result=result,
        changes={"cervical_histology": "cin3"},
        reason="Second pathologist review",
    )


WRITES: dict[str, tuple[Callable[[Setting], tuple[Any, Callable[[], models.Model]]], Expected]] = {
    "trial_create": (_trial_create, Expected("trial.create", Trial, "superuser", after={"code": "SECOND"})),
    "trial_set_status": (
        _trial_set_status,
        Expected(
            "trial.status",
            Trial,
            Role.TRIAL_ADMIN,
            before={"status": "recruiting"},
            after={"status": "recruitment_closed"},
            reason="Target reached",
        ),
    ),
    "protocol_version_add": (
        _protocol_version_add,
        Expected(
            "protocol_version.add",
            ProtocolVersion,
            Role.TRIAL_ADMIN,
            after={"version": "2.0"},
            reason="Amendment 1: wider age range",
        ),
    ),
    "site_add": (_site_add, Expected("site.add", Site, Role.TRIAL_ADMIN, after={"code": "C09"})),
    "membership_grant": (
        _membership_grant,
        Expected("membership.grant", Membership, Role.TRIAL_ADMIN, after={"role": "monitor", "active": True}),
    ),
    "membership_revoke": (
        _membership_revoke,
        Expected(
            "membership.revoke",
            Membership,
            Role.TRIAL_ADMIN,
            before={"active": True},
            after={"active": False},
            reason="Left the site",
        ),
    ),
    "screening_create": (
        _screening_create,
        Expected(
            "screening.create", ScreeningEntry, Role.COORDINATOR, after={"year_of_birth": 1975, "status": "pending"}
        ),
    ),
    "screening_correct": (
        _screening_correct,
        Expected(
            "screening.correct",
            ScreeningEntry,
            Role.COORDINATOR,
            before={"year_of_birth": 1980},
            after={"year_of_birth": 1981},
            reason="Typo in year of birth",
        ),
    ),
    "eligibility_assess": (
        _eligibility_assess,
        Expected("eligibility.assess", EligibilityAssessment, Role.COORDINATOR, after={"is_eligible": True}),
    ),
    "eligibility_reassess": (
        _eligibility_reassess,
        Expected(
            "eligibility.correct",
            EligibilityAssessment,
            Role.COORDINATOR,
            before={"is_eligible": True},
            after={"is_eligible": False, "failed_criteria": ["EX1"]},
            reason="Pregnancy test came back positive",
        ),
    ),
    "screening_close": (
        _screening_close,
        Expected(
            "screening.close",
            ScreeningEntry,
            Role.COORDINATOR,
            before={"status": "eligible"},
            after={"status": "declined"},
            reason="Did not wish to take part",
        ),
    ),
    "participant_enroll": (_participant_enroll, Expected("participant.enroll", Participant, Role.COORDINATOR)),
    "consent_renew": (
        _consent_renew,
        Expected("consent.renew", Consent, Role.COORDINATOR, after={"form_version": "2.0"}),
    ),
    "participant_withdraw": (
        _participant_withdraw,
        Expected(
            "participant.withdraw",
            Withdrawal,
            Role.COORDINATOR,
            before={"follow_up_stopped": False},
            after={"follow_up_stopped": True, "scope": "stop_follow_up"},
            reason="Moved abroad",
        ),
    ),
    "reference_result_record": (
        _reference_result_record,
        Expected(
            "reference_result.record", ReferenceStandardResult, Role.PATHOLOGIST, after={"cervical_histology": "cin1"}
        ),
    ),
    "reference_result_correct": (
        _reference_result_correct,
        Expected(
            "reference_result.correct",
            ReferenceStandardResult,
            Role.PATHOLOGIST,
            before={"cervical_histology": "cin1"},
            after={"cervical_histology": "cin3"},
            reason="Second pathologist review",
        ),
    ),
}


@pytest.fixture
def setting(
    recruiting: Trial,
    site_a: Site,
    users: dict[str, Any],
    coordinator: Any,
    screen: Callable[..., ScreeningEntry],
    enroll: Callable[..., Participant],
) -> Setting:
    superuser = get_user_model().objects.create_superuser(username="root", password="x-long-password-1")
    return Setting(recruiting, site_a, users, coordinator, superuser, screen, enroll)


@pytest.mark.parametrize("name", list(WRITES))
def test_it_records_exactly_one_event_for_each_service_write(setting: Setting, name: str) -> None:
    prepare, expected = WRITES[name]
    user, write = prepare(setting)
    previous = AuditEvent.objects.order_by("-sequence").first()
    events_before = AuditEvent.objects.count()

    obj = write()

    assert AuditEvent.objects.count() == events_before + 1
    event = AuditEvent.objects.order_by("-sequence").get(sequence=previous.sequence + 1)
    assert event.action == expected.action
    assert event.actor_id == user.pk
    assert event.actor_username == user.username
    assert event.role == expected.role
    assert event.object_type == expected.model._meta.label_lower
    assert event.object_id == str(obj.pk)
    assert event.client_ip == "127.0.0.1"
    assert event.request_id == "test-request"
    assert event.reason == expected.reason
    assert event.previous_hash == previous.hash
    if expected.before is None:
        assert event.before is None
    else:
        assert expected.before.items() <= event.before.items()
    if expected.after is not None:
        assert expected.after.items() <= event.after.items()
    assert event.after


def test_it_records_the_enrollment_and_its_consent_in_one_event(participant: Participant) -> None:
    event = AuditEvent.objects.get(action="participant.enroll")
    consent = participant.consents.get()
    assert event.after["participant"]["study_id"] == participant.study_id
    assert event.after["consent"]["form_version"] == "1.0"
    assert event.after["consent"]["id"] == consent.pk
    assert event.screening_id == participant.screening_id
    assert event.site_id == participant.site_id
    assert event.trial_id == participant.trial_id


def test_it_records_the_system_as_actor_for_system_writes(trial: Trial) -> None:
    event = AuditEvent.objects.get(action="trial.create")
    assert event.actor_id is None
    assert event.actor_username == "system:tests"
    assert event.role == "system"
    assert event.request_id == "tests"


def test_it_rolls_back_the_write_when_its_audit_event_cannot_be_recorded(
    coordinator: Any, site_a: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = counts()

    def refuse(**kwargs: Any) -> None:
        raise DatabaseError("disk full")

    monkeypatch.setattr(audit, "record", refuse)
    with pytest.raises(DatabaseError):
        services.screening_create(
            actor=actor_for(coordinator),
            site=site_a,
            screened_on=timezone.localdate(),
            indication="cervical",
            year_of_birth=1980,
            sex="female",
        )
    assert counts() == before
    site_a.refresh_from_db()
    assert site_a.next_screening_number == 1


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_record_an_event_outside_a_transaction(trial: Trial) -> None:
    with pytest.raises(RuntimeError, match="inside the service's transaction"):
        audit.record(actor=SYSTEM, action="trial.poke", obj=trial, trial=trial)
    assert not AuditEvent.objects.filter(action="trial.poke").exists()


FAILING_WRITES: dict[str, Callable[[Any, ScreeningEntry], Any]] = {
    "consent in the future": lambda user, entry: services.participant_enroll(
        actor=actor_for(user),
        entry=entry,
        form_version="1.0",
        consented_at=timezone.now() + dt.timedelta(days=1),
        taken_by=user,
        covariates={"hpv_status": "positive"},
    ),
    "unknown covariate value": lambda user, entry: services.participant_enroll(
        actor=actor_for(user),
        entry=entry,
        form_version="1.0",
        consented_at=timezone.now(),
        taken_by=user,
        covariates={"hpv_status": "maybe"},
    ),
    "screening in the future": lambda user, entry: services.screening_create(
        actor=actor_for(user),
        site=entry.site,
        screened_on=timezone.localdate() + dt.timedelta(days=2),
        indication="cervical",
        year_of_birth=1980,
        sex="female",
    ),
    "correction without a reason": lambda user, entry: services.screening_correct(
        actor=actor_for(user), entry=entry, changes={"sex": "intersex"}, reason="  "
    ),
}


@pytest.mark.parametrize("name", list(FAILING_WRITES))
def test_it_leaves_no_event_and_no_row_when_a_service_refuses(
    coordinator: Any, screen: Callable[..., ScreeningEntry], name: str
) -> None:
    entry = screen(eligible=True)
    site_counters = (entry.site.next_participant_number, entry.site.next_screening_number)
    before = counts()
    head_before = AuditChainHead.objects.values_list("last_sequence", "last_hash").get()

    with pytest.raises(DomainError):
        FAILING_WRITES[name](coordinator, entry)

    assert counts() == before
    assert AuditChainHead.objects.values_list("last_sequence", "last_hash").get() == head_before
    entry.refresh_from_db()
    assert entry.status == "eligible"
    assert entry.sex == "female"
    entry.site.refresh_from_db()
    assert (entry.site.next_participant_number, entry.site.next_screening_number) == site_counters


# --- The chain ---------------------------------------------------------------------


def test_it_verifies_an_intact_chain_after_many_writes(busy_trail: int) -> None:
    report = audit.verify_chain()
    assert report.ok, report.problem
    assert report.events_checked == busy_trail
    assert report.first_bad_sequence is None


def test_it_numbers_events_one_by_one_and_links_each_to_the_one_before(busy_trail: int) -> None:
    events = list(AuditEvent.objects.order_by("sequence"))
    assert [e.sequence for e in events] == list(range(1, busy_trail + 1))
    assert events[0].previous_hash == audit.GENESIS_HASH
    for earlier, later in itertools.pairwise(events):
        assert later.previous_hash == earlier.hash
    head = AuditChainHead.objects.get()
    assert (head.last_sequence, head.last_hash) == (events[-1].sequence, events[-1].hash)


def test_it_verifies_in_batches_smaller_than_the_trail(busy_trail: int) -> None:
    report = audit.verify_chain(batch_size=3)
    assert report.ok, report.problem
    assert report.events_checked == busy_trail


def test_it_finds_the_stored_event_hashes_to_what_was_written(participant: Participant) -> None:
    """What the database gives back (JSON, datetimes) hashes to the stored hash."""
    for event in AuditEvent.objects.all():
        assert audit.event_hash(event.previous_hash, event) == event.hash


# --- Tampering: each kind is caught, naming the first bad event -------------------------


def tamper_edit(sequence: int) -> None:
    drop_protection()
    execute("UPDATE trial_auditevent SET reason = %s WHERE sequence = %s", ["nothing happened", sequence])


def tamper_edit_actor(sequence: int) -> None:
    drop_protection()
    execute("UPDATE trial_auditevent SET actor_username = %s WHERE sequence = %s", ["someone-else", sequence])


def tamper_edit_and_rehash(sequence: int) -> None:
    """Edit one event and recompute its own hash: the next event no longer links."""
    drop_protection()
    event = AuditEvent.objects.get(sequence=sequence)
    event.object_label = "forged"
    forged_hash = audit.event_hash(event.previous_hash, event)
    execute(
        "UPDATE trial_auditevent SET object_label = %s, hash = %s WHERE sequence = %s",
        ["forged", forged_hash, sequence],
    )


def tamper_delete(sequence: int) -> None:
    drop_protection()
    execute("DELETE FROM trial_auditevent WHERE sequence = %s", [sequence])


def tamper_delete_and_renumber(sequence: int) -> None:
    """Delete one event and close the gap by renumbering the ones after it."""
    drop_protection()
    execute("DELETE FROM trial_auditevent WHERE sequence = %s", [sequence])
    for later in (
        AuditEvent.objects.filter(sequence__gt=sequence).order_by("sequence").values_list("sequence", flat=True)
    ):
        execute("UPDATE trial_auditevent SET sequence = %s WHERE sequence = %s", [later - 1, later])
    execute("UPDATE trial_auditchainhead SET last_sequence = last_sequence - 1")


def tamper_swap_sequences(sequence: int) -> None:
    """Swap the sequence numbers of two neighbouring events (through a spare
    number: the unique constraint is checked row by row)."""
    drop_protection()
    execute("UPDATE trial_auditevent SET sequence = %s WHERE sequence = %s", [-1, sequence])
    execute("UPDATE trial_auditevent SET sequence = %s WHERE sequence = %s", [sequence, sequence + 1])
    execute("UPDATE trial_auditevent SET sequence = %s WHERE sequence = %s", [sequence + 1, -1])


_CONTENT_COLUMNS = [
    "actor_id",
    "actor_username",
    "role",
    "action",
    "object_type",
    "object_id",
    "object_label",
    "reason",
]
_JSON_COLUMNS = ["before", "after"]


def tamper_swap_content(sequence: int) -> None:
    """Swap what two neighbouring events say (who did what, to what), leaving
    their numbers and hashes in place."""
    drop_protection()
    selected = _CONTENT_COLUMNS + [f"CAST({column} AS TEXT)" for column in _JSON_COLUMNS]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT sequence, {', '.join(selected)} FROM trial_auditevent WHERE sequence IN (%s, %s)",
            [sequence, sequence + 1],
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    json_placeholder = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    assignments = [f"{column} = %s" for column in _CONTENT_COLUMNS]
    assignments += [f"{column} = {json_placeholder}" for column in _JSON_COLUMNS]
    for target, source in ((sequence, sequence + 1), (sequence + 1, sequence)):
        execute(f"UPDATE trial_auditevent SET {', '.join(assignments)} WHERE sequence = %s", [*rows[source], target])


@dataclass(frozen=True)
class Tampering:
    tamper: Callable[[int], None]
    first_bad: Callable[[int, int], int]  # (tampered sequence, trail length) → first bad event
    problem: str  # a phrase the problem must contain
    at_end: bool = False


TAMPERINGS = {
    "edited event": Tampering(tamper_edit, lambda k, n: k, "altered"),
    "edited actor": Tampering(tamper_edit_actor, lambda k, n: k, "altered"),
    "edited and re-hashed event": Tampering(tamper_edit_and_rehash, lambda k, n: k + 1, "does not link"),
    "deleted event in the middle": Tampering(tamper_delete, lambda k, n: k + 1, "missing"),
    "deleted event, later ones renumbered": Tampering(tamper_delete_and_renumber, lambda k, n: k, "does not link"),
    "deleted last event": Tampering(tamper_delete, lambda k, n: n, "removed", at_end=True),
    "reordered pair (sequence numbers swapped)": Tampering(tamper_swap_sequences, lambda k, n: k, "does not link"),
    "reordered pair (content swapped)": Tampering(tamper_swap_content, lambda k, n: k, "altered"),
}


def apply(tampering: Tampering, trail_length: int) -> int:
    """Tamper and return the sequence the verifier must name."""
    target = trail_length if tampering.at_end else trail_length // 2
    assert audit.verify_chain().ok
    tampering.tamper(target)
    return tampering.first_bad(target, trail_length)


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_it_detects_tampering_and_names_the_first_bad_event(busy_trail: int, name: str) -> None:
    tampering = TAMPERINGS[name]
    first_bad = apply(tampering, busy_trail)

    report = audit.verify_chain()

    assert not report.ok
    assert report.first_bad_sequence == first_bad
    assert f"#{first_bad}" in report.problem
    assert tampering.problem in report.problem


def test_it_says_which_events_are_missing_when_one_is_deleted(busy_trail: int) -> None:
    deleted = busy_trail // 2
    tamper_delete(deleted)
    report = audit.verify_chain()
    assert f"from #{deleted} are missing" in report.problem


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_it_exits_1_from_the_command_naming_the_first_bad_event(busy_trail: int, name: str) -> None:
    first_bad = apply(TAMPERINGS[name], busy_trail)

    status, out, err = run_verify_audit()

    assert status == 1
    assert out == ""
    assert err.startswith(f"audit trail BROKEN at event #{first_bad}: ")
    assert TAMPERINGS[name].problem in err


def test_it_reports_tampering_as_json_from_the_command(busy_trail: int) -> None:
    first_bad = apply(TAMPERINGS["edited event"], busy_trail)

    status, out, _ = run_verify_audit("--json")

    assert status == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["first_bad_sequence"] == first_bad
    assert report["events_checked"] == first_bad
    assert "altered" in report["problem"]


def test_it_reports_an_intact_trail_from_the_command(busy_trail: int) -> None:
    status, out, err = run_verify_audit()
    assert status == 0
    assert out.strip() == f"audit trail intact: {busy_trail} events"
    assert err == ""


def test_it_reports_an_intact_trail_as_json_from_the_command(busy_trail: int) -> None:
    status, out, _ = run_verify_audit("--json")
    assert status == 0
    assert json.loads(out) == {"ok": True, "events_checked": busy_trail, "first_bad_sequence": None, "problem": ""}


def test_it_reports_an_empty_trail_as_intact(db: Any) -> None:
    status, out, _ = run_verify_audit()
    assert status == 0
    assert out.strip() == "audit trail intact: 0 events"


# --- The database refuses changes to the trail ---------------------------------------


def refused(sql: str, params: list[Any] | None = None) -> str:
    """Run one statement that must fail; return the database's message.
    The inner atomic block keeps the test transaction usable afterwards."""
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params or [])
    return str(caught.value)


def test_it_refuses_a_raw_update_of_an_event(participant: Participant) -> None:
    event = AuditEvent.objects.get(action="participant.enroll")
    message = refused("UPDATE trial_auditevent SET reason = %s WHERE id = %s", ["rewritten", event.pk])
    assert "append-only" in message
    event.refresh_from_db()
    assert event.reason == ""
    assert audit.verify_chain().ok


def test_it_refuses_a_raw_delete_of_an_event(participant: Participant) -> None:
    events = AuditEvent.objects.count()
    message = refused("DELETE FROM trial_auditevent WHERE sequence = %s", [events])
    assert "append-only" in message
    assert AuditEvent.objects.count() == events
    assert audit.verify_chain().ok


def test_it_refuses_an_orm_update_of_events(participant: Participant) -> None:
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(action="participant.enroll").update(reason="rewritten")
    assert AuditEvent.objects.get(action="participant.enroll").reason == ""


def test_it_refuses_an_orm_delete_of_an_event(participant: Participant) -> None:
    events = AuditEvent.objects.count()
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(action="participant.enroll").delete()
    assert AuditEvent.objects.count() == events


def test_it_refuses_to_empty_the_audit_table(participant: Participant) -> None:
    events = AuditEvent.objects.count()
    if connection.vendor == "postgresql":
        # Check the deferred foreign keys of this transaction's inserts now;
        # PostgreSQL would otherwise refuse TRUNCATE for pending trigger events
        # and the test would not reach the append-only trigger.
        execute("SET CONSTRAINTS ALL IMMEDIATE")
        message = refused("TRUNCATE trial_auditevent")
        assert "TRUNCATE refused" in message
    else:
        # SQLite has no TRUNCATE; an unqualified DELETE is its equivalent.
        message = refused("DELETE FROM trial_auditevent")
        assert "DELETE refused" in message
    assert AuditEvent.objects.count() == events


def test_it_still_refuses_updates_and_deletes_after_tampering_tests_rolled_back(participant: Participant) -> None:
    """Earlier tests dropped the triggers inside their transaction; the rollback
    must have restored them (this test runs after them in this module)."""
    assert "append-only" in refused("UPDATE trial_auditevent SET role = 'x'")
    assert "append-only" in refused("DELETE FROM trial_auditevent WHERE sequence = 1")


def test_it_keeps_a_refused_write_from_touching_the_chain(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    """A domain error inside a service leaves the chain head where it was, so
    the next event continues the chain without a gap."""
    entry = screen()
    with pytest.raises(RuleViolation):
        services.participant_enroll(
            actor=actor_for(coordinator),
            entry=entry,
            form_version="1.0",
            consented_at=timezone.now(),
            taken_by=coordinator,
            covariates={"hpv_status": "positive"},
        )
    screen()
    report = audit.verify_chain()
    assert report.ok, report.problem


def test_it_records_the_request_origin_given_by_the_actor(coordinator: Any, site_a: Site) -> None:
    actor = Actor(user=coordinator, client_ip="2001:db8::7", request_id="req-0042-abcdef")
    entry = services.screening_create(
        actor=actor,
        site=site_a,
        screened_on=timezone.localdate(),
        indication="thyroid",
        year_of_birth=1990,
        sex="male",
    )
    event = AuditEvent.objects.get(action="screening.create", object_id=str(entry.pk))
    assert event.client_ip == "2001:db8::7"
    assert event.request_id == "req-0042-abcdef"
    assert audit.verify_chain().ok
