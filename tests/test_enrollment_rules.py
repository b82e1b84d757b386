"""The rules of screening, eligibility, consent, enrollment, withdrawal and the
reference standard, as the services enforce them. Every refusal says why in
words a coordinator understands, and writes nothing: no row, no audit event.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.utils import timezone

from tests.conftest import ELIGIBLE_CERVICAL, ELIGIBLE_THYROID, SYSTEM, actor_for
from trial import services
from trial.errors import Conflict, DomainError, NotAllowed, RuleViolation
from trial.models import (
    AuditChainHead,
    AuditEvent,
    Consent,
    EligibilityAssessment,
    Participant,
    ProtocolVersion,
    ReferenceStandardResult,
    Role,
    ScreeningEntry,
    ScreeningStatus,
    Site,
    Trial,
    Withdrawal,
)

# --- Helpers ---------------------------------------------------------------------

MODELS = [
    ScreeningEntry,
    EligibilityAssessment,
    Participant,
    Consent,
    Withdrawal,
    ReferenceStandardResult,
    ProtocolVersion,
    AuditEvent,
]


def written() -> dict[str, Any]:
    state: dict[str, Any] = {model.__name__: model.objects.count() for model in MODELS}
    state["chain head"] = AuditChainHead.objects.values_list("last_sequence", "last_hash").first()
    state["site counters"] = list(
        Site.objects.order_by("pk").values_list("next_participant_number", "next_screening_number")
    )
    return state


@contextmanager
def refused(error: type[DomainError] = RuleViolation, match: str = "", field: str | None = None) -> Iterator[None]:
    """The block must raise `error` with a message matching `match` (and name
    `field` when given) and leave every table and the audit trail as they were."""
    before = written()
    with pytest.raises(error, match=match) as caught:
        yield
    if field is not None:
        assert caught.value.field == field
    assert written() == before


def today() -> dt.date:
    return timezone.localdate()


def an_hour_ago() -> dt.datetime:
    return timezone.now() - dt.timedelta(hours=1)


def enroll_entry(entry: ScreeningEntry, user: Any, **overrides: Any) -> Participant:
    arguments: dict[str, Any] = {
        "actor": actor_for(user),
        "entry": entry,
        "form_version": "1.0",
        "consented_at": an_hour_ago(),
        "taken_by": user,
        "covariates": {"hpv_status": "positive"} if entry.indication == "cervical" else {"nodule_size_band": "20-39"},
    }
    arguments.update(overrides)
    return services.participant_enroll(**arguments)


def screen_with(user: Any, site: Site, **overrides: Any) -> ScreeningEntry:
    arguments: dict[str, Any] = {
        "actor": actor_for(user),
        "site": site,
        "screened_on": today() - dt.timedelta(days=2),
        "indication": "cervical",
        "year_of_birth": 1980,
        "sex": "female",
    }
    arguments.update(overrides)
    return services.screening_create(**arguments)


def withdraw(participant: Participant, user: Any, **overrides: Any) -> Withdrawal:
    arguments: dict[str, Any] = {
        "actor": actor_for(user),
        "participant": participant,
        "withdrawn_on": today(),
        "scope": "stop_follow_up",
        "reason": "No longer wishes to attend",
    }
    arguments.update(overrides)
    return services.participant_withdraw(**arguments)


def cervical_result(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "kind": "cervical_histology",
        "sample_date": today() - dt.timedelta(days=1),
        "result_date": today(),
        "cervical_histology": "cin2",
    }
    values.update(overrides)
    return values


def thyroid_histology_result(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "kind": "thyroid_histology",
        "sample_date": today() - dt.timedelta(days=1),
        "result_date": today(),
        "thyroid_histology": "papillary",
    }
    values.update(overrides)
    return values


@pytest.fixture
def pathologist(users: dict[str, Any]) -> Any:
    return users[Role.PATHOLOGIST]


@pytest.fixture
def thyroid_participant(enroll: Callable[..., Participant]) -> Participant:
    return enroll(indication="thyroid")


@pytest.fixture
def record(pathologist: Any) -> Callable[..., ReferenceStandardResult]:
    def make(participant: Participant, **values: Any) -> ReferenceStandardResult:
        return services.reference_result_record(actor=actor_for(pathologist), participant=participant, **values)

    return make


# --- Consent and enrollment ---------------------------------------------------------


def test_it_refuses_consent_before_eligibility_is_confirmed(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen()
    with refused(RuleViolation, "before eligibility is confirmed"):
        enroll_entry(entry, coordinator)
    entry.refresh_from_db()
    assert entry.status == ScreeningStatus.PENDING


def test_it_refuses_consent_of_an_ineligible_person(coordinator: Any, screen: Callable[..., ScreeningEntry]) -> None:
    entry = screen(eligible=False)
    with refused(RuleViolation, "Only an eligible person can consent.*not eligible"):
        enroll_entry(entry, coordinator)


def test_it_refuses_consent_of_a_person_who_declined(coordinator: Any, screen: Callable[..., ScreeningEntry]) -> None:
    entry = screen(eligible=True)
    services.screening_close(actor=actor_for(coordinator), entry=entry, outcome="declined", reason="Declined")
    with refused(RuleViolation, "Only an eligible person can consent"):
        enroll_entry(entry, coordinator)


def test_it_refuses_consent_dated_in_the_future(coordinator: Any, screen: Callable[..., ScreeningEntry]) -> None:
    entry = screen(eligible=True)
    with refused(RuleViolation, "in the future", field="consented_at"):
        enroll_entry(entry, coordinator, consented_at=timezone.now() + dt.timedelta(minutes=10))


def test_it_refuses_consent_dated_before_screening(coordinator: Any, screen: Callable[..., ScreeningEntry]) -> None:
    entry = screen(eligible=True)  # screened three days ago
    with refused(RuleViolation, "cannot be dated before screening", field="consented_at"):
        enroll_entry(entry, coordinator, consented_at=timezone.now() - dt.timedelta(days=10))


def test_it_refuses_a_consent_time_without_a_time_zone(coordinator: Any, screen: Callable[..., ScreeningEntry]) -> None:
    entry = screen(eligible=True)
    with refused(RuleViolation, "time zone", field="consented_at"):
        enroll_entry(entry, coordinator, consented_at=dt.datetime.now() - dt.timedelta(hours=1))


def test_it_refuses_a_consent_form_version_not_approved(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    with refused(RuleViolation, r"Consent form v0\.9 is not the approved form of protocol v1\.0", field="form_version"):
        enroll_entry(entry, coordinator, form_version="0.9")


def test_it_refuses_consent_taken_by_staff_of_another_site(
    coordinator: Any, coordinator_b: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    with refused(RuleViolation, "taken by a coordinator or clinician of the participant's site", field="taken_by"):
        enroll_entry(entry, coordinator, taken_by=coordinator_b)


def test_it_refuses_consent_taken_by_a_pathologist(
    coordinator: Any, users: dict[str, Any], screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    with refused(RuleViolation, "taken by a coordinator or clinician", field="taken_by"):
        enroll_entry(entry, coordinator, taken_by=users[Role.PATHOLOGIST])


def test_it_refuses_consent_taken_by_a_user_whose_role_was_revoked(
    coordinator: Any, users: dict[str, Any], screen: Callable[..., ScreeningEntry]
) -> None:
    clinician = users[Role.CLINICIAN_READER]
    membership = clinician.memberships.get()
    services.membership_revoke(actor=SYSTEM, membership=membership, reason="Left the trial")
    entry = screen(eligible=True)
    with refused(RuleViolation, "taken by a coordinator or clinician", field="taken_by"):
        enroll_entry(entry, coordinator, taken_by=clinician)


def test_it_accepts_consent_taken_by_a_clinician_of_the_site(
    coordinator: Any, users: dict[str, Any], screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    participant = enroll_entry(entry, coordinator, taken_by=users[Role.CLINICIAN_READER])
    assert participant.consents.get().taken_by == users[Role.CLINICIAN_READER]
    assert participant.consents.get().recorded_by == coordinator


def test_it_refuses_a_second_consent_for_the_same_person(coordinator: Any, participant: Participant) -> None:
    entry = participant.screening
    with refused(Conflict, f"already enrolled as {participant.study_id}"):
        enroll_entry(entry, coordinator)
    assert Participant.objects.filter(screening=entry).count() == 1


def test_it_refuses_renewed_consent_on_a_form_already_signed(coordinator: Any, participant: Participant) -> None:
    with refused(Conflict, r"already consented on form v1\.0"):
        services.consent_renew(
            actor=actor_for(coordinator),
            participant=participant,
            form_version="1.0",
            consented_at=timezone.now(),
            taken_by=coordinator,
        )


def test_it_refuses_enrollment_without_a_required_covariate(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    with refused(RuleViolation, "Covariate HPV status is required", field="covariates"):
        enroll_entry(entry, coordinator, covariates={})


def test_it_refuses_enrollment_with_an_unknown_covariate(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    with refused(RuleViolation, "Unknown covariates: smoker", field="covariates"):
        enroll_entry(entry, coordinator, covariates={"hpv_status": "positive", "smoker": "yes"})


def test_it_refuses_enrollment_with_a_covariate_of_the_other_indication(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    with refused(RuleViolation, "Unknown covariates: nodule_size_band", field="covariates"):
        enroll_entry(entry, coordinator, covariates={"hpv_status": "positive", "nodule_size_band": "10-19"})


def test_it_refuses_enrollment_with_an_invalid_covariate_value(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    with refused(
        RuleViolation, "HPV status must be one of positive, negative, unknown, not 'maybe'", field="covariates"
    ):
        enroll_entry(entry, coordinator, covariates={"hpv_status": "maybe"})


def test_it_stores_only_the_covariates_of_the_participants_indication(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    participant = enroll_entry(screen(indication="thyroid", eligible=True), coordinator)
    assert participant.covariates == {"nodule_size_band": "20-39"}


def test_it_refuses_enrollment_at_another_site(coordinator_b: Any, screen: Callable[..., ScreeningEntry]) -> None:
    entry = screen(eligible=True)
    with refused(NotAllowed, "does not permit"):
        enroll_entry(entry, coordinator_b)


def test_it_refuses_enrollment_by_a_role_without_the_capability(
    users: dict[str, Any], screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    with refused(NotAllowed, "does not permit"):
        enroll_entry(entry, users[Role.CLINICIAN_READER])


def test_it_numbers_study_ids_sequentially_per_site(
    coordinator_b: Any, site_b: Site, enroll: Callable[..., Participant]
) -> None:
    first = enroll()
    second = enroll(indication="thyroid")
    at_b = enroll(site=site_b, user=coordinator_b)
    assert [first.study_id, second.study_id, at_b.study_id] == ["C01-0001", "C01-0002", "C02-0001"]


def test_it_does_not_use_up_a_study_id_on_a_refused_enrollment(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    with pytest.raises(RuleViolation):
        enroll_entry(entry, coordinator, form_version="9.9")
    assert enroll_entry(entry, coordinator).study_id == "C01-0001"


def test_it_marks_the_screening_entry_enrolled_with_its_consent(participant: Participant) -> None:
    consent = participant.consents.get()
    assert participant.screening.status == ScreeningStatus.ENROLLED
    assert consent.form_version == "1.0"
    assert consent.protocol_version.version == "1.0"
    assert participant.enrolled_at == consent.consented_at


# --- Screening --------------------------------------------------------------------------


def test_it_refuses_a_screening_date_in_the_future(coordinator: Any, site_a: Site) -> None:
    with refused(RuleViolation, "screening date .* is in the future", field="screened_on"):
        screen_with(coordinator, site_a, screened_on=today() + dt.timedelta(days=1))


def test_it_refuses_a_screening_date_before_the_trial_started(coordinator: Any, site_a: Site) -> None:
    with refused(RuleViolation, r"before the trial started \(2026-01-05\)", field="screened_on"):
        screen_with(coordinator, site_a, screened_on=dt.date(2026, 1, 4))


@pytest.mark.parametrize("year_of_birth", [1800, 1890, 3000])
def test_it_refuses_an_implausible_year_of_birth(coordinator: Any, site_a: Site, year_of_birth: int) -> None:
    with refused(RuleViolation, "Year of birth must be between", field="year_of_birth"):
        screen_with(coordinator, site_a, year_of_birth=year_of_birth)


def test_it_refuses_a_year_of_birth_that_is_not_a_number(coordinator: Any, site_a: Site) -> None:
    with refused(RuleViolation, "Year of birth", field="year_of_birth"):
        screen_with(coordinator, site_a, year_of_birth="1980")


def test_it_refuses_an_indication_the_trial_does_not_study(make_user: Callable[..., Any]) -> None:
    thyroid_trial = services.trial_create(
        actor=SYSTEM,
        code="THYROID-ONLY",
        title="Thyroid only",
        indications=["thyroid"],
        planned_sample_size=50,
        start_date=dt.date(2026, 1, 1),
    )
    site = services.site_add(actor=SYSTEM, trial=thyroid_trial, code="T01", name="Thyroid site")
    services.protocol_version_add(
        actor=SYSTEM,
        trial=thyroid_trial,
        version="1",
        effective_date=dt.date(2026, 1, 1),
        consent_form_version="1",
        eligibility_criteria=[{"code": "IN1", "text": "Adult", "kind": "inclusion"}],
    )
    services.trial_set_status(actor=SYSTEM, trial=thyroid_trial, status="recruiting", reason="Approved")
    coordinator = make_user("thyroid-coordinator", Role.COORDINATOR, trial=thyroid_trial, site=site)
    with refused(RuleViolation, "Indication 'cervical' is not studied in trial THYROID-ONLY", field="indication"):
        screen_with(coordinator, site, indication="cervical")


def test_it_refuses_an_unknown_indication(coordinator: Any, site_a: Site) -> None:
    with refused(RuleViolation, "Indication 'lung' is not studied", field="indication"):
        screen_with(coordinator, site_a, indication="lung")


def test_it_refuses_an_unknown_sex_naming_the_field(coordinator: Any, site_a: Site) -> None:
    with refused(RuleViolation, "sex: .*'robot' is not a valid choice", field="sex"):
        screen_with(coordinator, site_a, sex="robot")


def test_it_refuses_screening_when_recruitment_is_closed(coordinator: Any, recruiting: Trial, site_a: Site) -> None:
    services.trial_set_status(actor=SYSTEM, trial=recruiting, status="recruitment_closed", reason="Target reached")
    with refused(RuleViolation, "Recruitment is not open for trial CONSILIUM"):
        screen_with(coordinator, site_a)


def test_it_refuses_enrollment_when_recruitment_is_closed(
    coordinator: Any, recruiting: Trial, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    services.trial_set_status(actor=SYSTEM, trial=recruiting, status="recruitment_closed", reason="Target reached")
    with refused(RuleViolation, "Recruitment is not open"):
        enroll_entry(entry, coordinator)


def test_it_refuses_screening_at_an_inactive_site(coordinator: Any, site_a: Site) -> None:
    Site.objects.filter(pk=site_a.pk).update(active=False)
    site_a.refresh_from_db()
    with refused(RuleViolation, "Site C01 is not active"):
        screen_with(coordinator, site_a)


def test_it_refuses_screening_at_another_site(coordinator: Any, site_b: Site) -> None:
    with refused(NotAllowed, "does not permit"):
        screen_with(coordinator, site_b)


def test_it_numbers_screening_entries_sequentially_per_site(
    coordinator: Any, coordinator_b: Any, site_a: Site, site_b: Site
) -> None:
    numbers = [
        screen_with(coordinator, site_a).screening_number,
        screen_with(coordinator, site_a).screening_number,
        screen_with(coordinator_b, site_b).screening_number,
    ]
    assert numbers == ["C01-S0001", "C01-S0002", "C02-S0001"]


def test_it_returns_the_same_entry_for_a_repeated_submission(coordinator: Any, site_a: Site) -> None:
    key = uuid.uuid4()
    events_before = AuditEvent.objects.count()
    first = screen_with(coordinator, site_a, submission_key=key)
    again = screen_with(coordinator, site_a, submission_key=key)
    assert again.pk == first.pk
    assert ScreeningEntry.objects.filter(site=site_a).count() == 1
    assert AuditEvent.objects.count() == events_before + 1
    assert screen_with(coordinator, site_a).screening_number == "C01-S0002"


def test_it_refuses_a_submission_key_reused_at_another_site(
    coordinator: Any, coordinator_b: Any, site_a: Site, site_b: Site
) -> None:
    key = uuid.uuid4()
    screen_with(coordinator, site_a, submission_key=key)
    with refused(Conflict, "already used for another site"):
        screen_with(coordinator_b, site_b, submission_key=key)


def test_it_refuses_a_screening_correction_without_a_reason(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen()
    with refused(RuleViolation, "A reason is required to correct data already entered", field="reason"):
        services.screening_correct(
            actor=actor_for(coordinator), entry=entry, changes={"year_of_birth": 1981}, reason=""
        )
    entry.refresh_from_db()
    assert entry.year_of_birth == 1980


def test_it_refuses_an_unchanged_screening_correction(coordinator: Any, screen: Callable[..., ScreeningEntry]) -> None:
    entry = screen()
    with refused(RuleViolation, "Nothing to correct"):
        services.screening_correct(
            actor=actor_for(coordinator),
            entry=entry,
            changes={"year_of_birth": 1980},
            reason="Checked against the referral letter",
        )


def test_it_refuses_a_correction_of_a_field_that_cannot_be_corrected(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen()
    with refused(RuleViolation, "cannot be corrected here: indication"):
        services.screening_correct(
            actor=actor_for(coordinator), entry=entry, changes={"indication": "thyroid"}, reason="Wrong clinic"
        )


def test_it_refuses_a_correction_to_an_unknown_sex(coordinator: Any, screen: Callable[..., ScreeningEntry]) -> None:
    entry = screen()
    with refused(RuleViolation, "sex: ", field="sex"):
        services.screening_correct(actor=actor_for(coordinator), entry=entry, changes={"sex": "robot"}, reason="Typo")
    entry.refresh_from_db()
    assert entry.sex == "female"


def test_it_refuses_a_screening_date_corrected_to_before_the_trial_started(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen()
    with refused(RuleViolation, "before the trial started", field="screened_on"):
        services.screening_correct(
            actor=actor_for(coordinator), entry=entry, changes={"screened_on": dt.date(2025, 6, 1)}, reason="Typo"
        )
    entry.refresh_from_db()
    assert entry.screened_on != dt.date(2025, 6, 1)


def test_it_refuses_a_screening_date_corrected_to_after_consent(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)  # screened three days ago
    enroll_entry(entry, coordinator, consented_at=timezone.now() - dt.timedelta(days=2))
    with refused(RuleViolation, "screening date cannot be after consent", field="screened_on"):
        services.screening_correct(
            actor=actor_for(coordinator), entry=entry, changes={"screened_on": today()}, reason="Wrong date"
        )


def test_it_records_before_and_after_of_a_screening_correction(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen()
    services.screening_correct(
        actor=actor_for(coordinator),
        entry=entry,
        changes={"year_of_birth": 1979, "sex": "male"},
        reason="Copied from the wrong referral",
    )
    event = AuditEvent.objects.get(action="screening.correct")
    assert event.before == {"sex": "female", "year_of_birth": 1980}
    assert event.after == {"sex": "male", "year_of_birth": 1979}
    assert event.reason == "Copied from the wrong referral"
    entry.refresh_from_db()
    assert (entry.year_of_birth, entry.sex) == (1979, "male")


# --- Eligibility ----------------------------------------------------------------------------


def test_it_derives_ineligibility_from_an_exclusion_answered_yes(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen()
    assessment = services.eligibility_assess(
        actor=actor_for(coordinator), entry=entry, answers={**ELIGIBLE_CERVICAL, "EX2": True}
    )
    entry.refresh_from_db()
    assert assessment.is_eligible is False
    assert assessment.failed_criteria == ["EX2"]
    assert entry.status == ScreeningStatus.INELIGIBLE
    assert entry.exclusion_reasons == [{"code": "EX2", "text": "Previous treatment of the cervix"}]


def test_it_derives_ineligibility_from_an_inclusion_not_met(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen()
    assessment = services.eligibility_assess(
        actor=actor_for(coordinator), entry=entry, answers={**ELIGIBLE_CERVICAL, "IN1": False}
    )
    entry.refresh_from_db()
    assert assessment.is_eligible is False
    assert entry.exclusion_reasons == [{"code": "IN1", "text": "Aged 25 to 65 years"}]


def test_it_derives_eligibility_when_every_criterion_is_met(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(indication="thyroid")
    assessment = services.eligibility_assess(actor=actor_for(coordinator), entry=entry, answers=ELIGIBLE_THYROID)
    entry.refresh_from_db()
    assert assessment.is_eligible is True
    assert assessment.failed_criteria == []
    assert assessment.protocol_version.version == "1.0"
    assert entry.status == ScreeningStatus.ELIGIBLE
    assert entry.exclusion_reasons == []


def test_it_refuses_an_eligibility_checklist_with_a_criterion_unanswered(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen()
    answers = dict(ELIGIBLE_CERVICAL)
    del answers["EX2"]
    with refused(RuleViolation, "Every criterion must be answered; missing: EX2", field="answers"):
        services.eligibility_assess(actor=actor_for(coordinator), entry=entry, answers=answers)


def test_it_refuses_a_criterion_of_the_other_indication(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen()
    with refused(RuleViolation, "Unknown criteria for protocol v1.0: IN3", field="answers"):
        services.eligibility_assess(
            actor=actor_for(coordinator), entry=entry, answers={**ELIGIBLE_CERVICAL, "IN3": True}
        )


def test_it_refuses_an_answer_that_is_not_yes_or_no(coordinator: Any, screen: Callable[..., ScreeningEntry]) -> None:
    entry = screen()
    with refused(RuleViolation, "Criterion EX1 must be answered yes or no", field="answers"):
        services.eligibility_assess(
            actor=actor_for(coordinator), entry=entry, answers={**ELIGIBLE_CERVICAL, "EX1": "no"}
        )


def test_it_requires_a_reason_to_reassess_eligibility(coordinator: Any, screen: Callable[..., ScreeningEntry]) -> None:
    entry = screen(eligible=True)
    with refused(RuleViolation, "A reason is required to change an eligibility assessment", field="reason"):
        services.eligibility_assess(
            actor=actor_for(coordinator), entry=entry, answers={**ELIGIBLE_CERVICAL, "EX1": True}
        )
    entry.refresh_from_db()
    assert entry.status == ScreeningStatus.ELIGIBLE


def test_it_reassesses_eligibility_with_a_reason_and_audits_both_answers(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen(eligible=True)
    services.eligibility_assess(
        actor=actor_for(coordinator),
        entry=entry,
        answers={**ELIGIBLE_CERVICAL, "EX1": True},
        reason="Pregnancy confirmed",
    )
    entry.refresh_from_db()
    event = AuditEvent.objects.get(action="eligibility.correct")
    assert entry.status == ScreeningStatus.INELIGIBLE
    assert EligibilityAssessment.objects.filter(screening=entry).count() == 1
    assert event.before["answers"]["EX1"] is False
    assert event.after["answers"]["EX1"] is True
    assert event.reason == "Pregnancy confirmed"


def test_it_refuses_to_reassess_an_enrolled_person(coordinator: Any, participant: Participant) -> None:
    with refused(Conflict, "already enrolled; its eligibility can no longer change"):
        services.eligibility_assess(
            actor=actor_for(coordinator),
            entry=participant.screening,
            answers={**ELIGIBLE_CERVICAL, "EX1": True},
            reason="Late information",
        )


def test_it_refuses_to_close_a_pending_entry_as_declined(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry = screen()
    with refused(Conflict, "cannot be closed as eligible, declined"):
        services.screening_close(actor=actor_for(coordinator), entry=entry, outcome="declined", reason="Declined")


# --- Withdrawal ------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["stop_follow_up", "withdraw_data"])
def test_it_accepts_no_reference_result_after_withdrawal_of_follow_up(
    coordinator: Any, participant: Participant, record: Callable[..., Any], scope: str
) -> None:
    withdraw(participant, coordinator, scope=scope)
    with refused(RuleViolation, "has withdrawn .*no new clinical data can be recorded"):
        record(participant, **cervical_result())


def test_it_still_accepts_a_reference_result_after_ai_processing_stopped(
    coordinator: Any, participant: Participant, record: Callable[..., Any]
) -> None:
    """That scope stops the AI only; clinical follow-up continues."""
    withdraw(participant, coordinator, scope="stop_ai_processing")
    result = record(participant, **cervical_result())
    participant.refresh_from_db()
    assert result.pk is not None
    assert participant.accepts_clinical_data is True
    assert participant.accepts_ai_processing is False


def test_it_requires_a_reason_to_withdraw(coordinator: Any, participant: Participant) -> None:
    with refused(RuleViolation, "A reason is required to record a withdrawal", field="reason"):
        withdraw(participant, coordinator, reason="   ")
    participant.refresh_from_db()
    assert not participant.is_withdrawn


def test_it_refuses_the_same_withdrawal_scope_twice(coordinator: Any, participant: Participant) -> None:
    withdraw(participant, coordinator, scope="stop_ai_processing")
    with refused(Conflict, "already withdrawn with this scope"):
        withdraw(participant, coordinator, scope="stop_ai_processing")


@pytest.mark.parametrize("scope", ["stop_follow_up", "stop_ai_processing"])
def test_it_refuses_any_withdrawal_after_data_withdrawn(coordinator: Any, participant: Participant, scope: str) -> None:
    withdraw(participant, coordinator, scope="withdraw_data")
    with refused(Conflict, "already withdrawn their data; nothing more can be withdrawn"):
        withdraw(participant, coordinator, scope=scope)


def test_it_adds_a_wider_withdrawal_to_a_narrower_one(coordinator: Any, participant: Participant) -> None:
    withdraw(participant, coordinator, scope="stop_ai_processing")
    withdraw(participant, coordinator, scope="stop_follow_up")
    participant.refresh_from_db()
    assert participant.ai_processing_stopped and participant.follow_up_stopped
    assert not participant.data_withdrawn
    assert participant.withdrawals.count() == 2


def test_it_refuses_a_withdrawal_dated_before_enrollment(coordinator: Any, participant: Participant) -> None:
    with refused(RuleViolation, "withdrawal date is before enrollment", field="withdrawn_on"):
        withdraw(participant, coordinator, withdrawn_on=today() - dt.timedelta(days=5))


def test_it_refuses_a_withdrawal_dated_in_the_future(coordinator: Any, participant: Participant) -> None:
    with refused(RuleViolation, "withdrawal date .* is in the future", field="withdrawn_on"):
        withdraw(participant, coordinator, withdrawn_on=today() + dt.timedelta(days=1))


def test_it_refuses_an_unknown_withdrawal_scope_naming_the_field(coordinator: Any, participant: Participant) -> None:
    with refused(RuleViolation, "Unknown withdrawal scope 'everything'; choose one of", field="scope"):
        withdraw(participant, coordinator, scope="everything")


def test_it_refuses_a_withdrawal_reason_over_2000_characters(coordinator: Any, participant: Participant) -> None:
    with refused(RuleViolation, "at most 2000 characters", field="reason"):
        withdraw(participant, coordinator, reason="x" * 2001)


def test_it_accepts_a_withdrawal_reason_of_exactly_2000_characters(coordinator: Any, participant: Participant) -> None:
    assert len(withdraw(participant, coordinator, reason="x" * 2000).reason) == 2000


def test_it_refuses_renewed_consent_after_withdrawal(coordinator: Any, participant: Participant) -> None:
    withdraw(participant, coordinator, scope="stop_follow_up")
    with refused(RuleViolation, "has withdrawn; no new consent"):
        services.consent_renew(
            actor=actor_for(coordinator),
            participant=participant,
            form_version="2.0",
            consented_at=timezone.now(),
            taken_by=coordinator,
        )


def test_it_refuses_a_reference_correction_after_data_withdrawn(
    coordinator: Any, pathologist: Any, participant: Participant, record: Callable[..., Any]
) -> None:
    result = record(participant, **cervical_result())
    withdraw(participant, coordinator, scope="withdraw_data")
    with refused(RuleViolation, "withdrawn their data; it can no longer be changed"):
        services.reference_result_correct(
            actor=actor_for(pathologist), result=result, changes={"cervical_histology": "cin3"}, reason="Review"
        )


def test_it_accepts_a_withdrawal_on_the_local_day_of_a_late_evening_enrollment(
    settings: Any, coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    """In a time zone behind UTC, 23:00 local is already tomorrow in UTC; the
    withdrawal date is a local date and must be compared with the local date
    of enrollment."""
    settings.TIME_ZONE = "America/New_York"
    local = zoneinfo.ZoneInfo("America/New_York")
    enrollment_day = timezone.localdate() - dt.timedelta(days=2)
    consented_at = dt.datetime.combine(enrollment_day, dt.time(23, 0), tzinfo=local)
    entry = screen(eligible=True)  # screened three local days ago
    participant = enroll_entry(entry, coordinator, consented_at=consented_at)
    withdrawal = withdraw(participant, coordinator, withdrawn_on=enrollment_day)
    assert withdrawal.withdrawn_on == enrollment_day


def test_it_accepts_consent_on_the_local_day_of_screening_given_in_utc(
    settings: Any, coordinator: Any, site_a: Site
) -> None:
    """In a time zone ahead of UTC, 08:00 local is still yesterday in UTC; a
    consent time sent in UTC is on the local screening day, not before it."""
    settings.TIME_ZONE = "Pacific/Auckland"
    local = zoneinfo.ZoneInfo("Pacific/Auckland")
    screening_day = timezone.localdate() - dt.timedelta(days=2)
    entry = screen_with(coordinator, site_a, screened_on=screening_day)
    services.eligibility_assess(actor=actor_for(coordinator), entry=entry, answers=ELIGIBLE_CERVICAL)
    consented_at = dt.datetime.combine(screening_day, dt.time(8, 0), tzinfo=local).astimezone(dt.UTC)
    participant = enroll_entry(entry, coordinator, consented_at=consented_at)
    assert participant.study_id == "C01-0001"


# --- Reference standard --------------------------------------------------------------------


def test_it_refuses_a_reference_kind_that_does_not_fit_the_indication(
    participant: Participant, record: Callable[..., Any]
) -> None:
    with refused(RuleViolation, "thyroid cytology .* does not fit a cervical participant", field="kind"):
        record(
            participant,
            kind="thyroid_cytology",
            sample_date=today() - dt.timedelta(days=1),
            result_date=today(),
            bethesda_category=2,
        )


def test_it_refuses_a_cervical_result_for_a_thyroid_participant(
    thyroid_participant: Participant, record: Callable[..., Any]
) -> None:
    with refused(RuleViolation, "does not fit a thyroid participant", field="kind"):
        record(thyroid_participant, **cervical_result())


def test_it_refuses_a_figo_stage_for_non_invasive_histology(
    participant: Participant, record: Callable[..., Any]
) -> None:
    with refused(RuleViolation, "FIGO stage is given only for invasive cancer", field="figo_stage"):
        record(participant, **cervical_result(cervical_histology="cin3", figo_stage="IB1"))


def test_it_accepts_a_figo_stage_for_invasive_cancer(participant: Participant, record: Callable[..., Any]) -> None:
    result = record(participant, **cervical_result(cervical_histology="invasive_squamous", figo_stage="IB1"))
    assert result.summary == "Invasive squamous cell carcinoma, FIGO IB1"


def test_it_refuses_a_tnm_stage_for_benign_histology(
    thyroid_participant: Participant, record: Callable[..., Any]
) -> None:
    with refused(RuleViolation, "TNM stage is given only for malignancy", field="tnm_t"):
        record(
            thyroid_participant,
            **thyroid_histology_result(thyroid_histology="benign", tnm_t="T1a", tnm_n="N0a", tnm_m="M0"),
        )


def test_it_refuses_t_without_n_and_m(thyroid_participant: Participant, record: Callable[..., Any]) -> None:
    with refused(RuleViolation, "Give T, N and M together", field="tnm_t"):
        record(thyroid_participant, **thyroid_histology_result(tnm_t="T1a"))


def test_it_accepts_a_complete_tnm_stage_for_malignancy(
    thyroid_participant: Participant, record: Callable[..., Any]
) -> None:
    result = record(thyroid_participant, **thyroid_histology_result(tnm_t="T2", tnm_n="N1a", tnm_m="M0"))
    assert result.is_high_grade is True
    assert result.summary.endswith("T2 N1a M0")


def test_it_refuses_a_bethesda_category_on_surgical_histology(
    thyroid_participant: Participant, record: Callable[..., Any]
) -> None:
    with refused(RuleViolation, "Bethesda category belongs to cytology", field="bethesda_category"):
        record(thyroid_participant, **thyroid_histology_result(bethesda_category=6))


def test_it_refuses_a_bethesda_category_on_a_cervical_result(
    participant: Participant, record: Callable[..., Any]
) -> None:
    with refused(RuleViolation, "Thyroid fields do not belong to a cervical result"):
        record(participant, **cervical_result(bethesda_category=2))


def test_it_refuses_cytology_without_a_bethesda_category(
    thyroid_participant: Participant, record: Callable[..., Any]
) -> None:
    with refused(RuleViolation, "needs a Bethesda category", field="bethesda_category"):
        record(
            thyroid_participant,
            kind="thyroid_cytology",
            sample_date=today() - dt.timedelta(days=1),
            result_date=today(),
        )


def test_it_refuses_histology_or_tnm_on_cytology(thyroid_participant: Participant, record: Callable[..., Any]) -> None:
    with refused(RuleViolation, "Cytology carries a Bethesda category only"):
        record(
            thyroid_participant,
            kind="thyroid_cytology",
            sample_date=today() - dt.timedelta(days=1),
            result_date=today(),
            bethesda_category=6,
            thyroid_histology="papillary",
        )


def test_it_refuses_an_unknown_bethesda_category_naming_the_field(
    thyroid_participant: Participant, record: Callable[..., Any]
) -> None:
    with refused(RuleViolation, "bethesda_category: ", field="bethesda_category"):
        record(
            thyroid_participant,
            kind="thyroid_cytology",
            sample_date=today() - dt.timedelta(days=1),
            result_date=today(),
            bethesda_category=7,
        )


def test_it_refuses_a_sample_taken_after_the_result_date(participant: Participant, record: Callable[..., Any]) -> None:
    with refused(RuleViolation, "sample date is after the result date", field="sample_date"):
        record(participant, **cervical_result(sample_date=today(), result_date=today() - dt.timedelta(days=1)))


def test_it_refuses_a_result_date_in_the_future(participant: Participant, record: Callable[..., Any]) -> None:
    with refused(RuleViolation, "result date .* is in the future", field="result_date"):
        record(participant, **cervical_result(result_date=today() + dt.timedelta(days=3)))


def test_it_refuses_a_sample_taken_before_screening(participant: Participant, record: Callable[..., Any]) -> None:
    with refused(RuleViolation, "sample date is before the participant was screened", field="sample_date"):
        record(participant, **cervical_result(sample_date=today() - dt.timedelta(days=30)))


def test_it_refuses_an_unknown_histology_naming_the_field(participant: Participant, record: Callable[..., Any]) -> None:
    with refused(RuleViolation, "cervical_histology: .*'cin4' is not a valid choice", field="cervical_histology"):
        record(participant, **cervical_result(cervical_histology="cin4"))


def test_it_refuses_an_unknown_reference_field(participant: Participant, record: Callable[..., Any]) -> None:
    with refused(RuleViolation, "Unknown fields: arm"):
        record(participant, **cervical_result(arm="AI"))


def test_it_refuses_reference_notes_over_4000_characters(participant: Participant, record: Callable[..., Any]) -> None:
    with refused(RuleViolation, "notes: .*at most 4000 characters", field="notes"):
        record(participant, **cervical_result(notes="n" * 4001))


def test_it_refuses_a_reference_result_from_a_clinician_reader(users: dict[str, Any], participant: Participant) -> None:
    with refused(NotAllowed, "does not permit"):
        services.reference_result_record(
            actor=actor_for(users[Role.CLINICIAN_READER]), participant=participant, **cervical_result()
        )


def test_it_requires_a_reason_to_correct_a_reference_result(
    pathologist: Any, participant: Participant, record: Callable[..., Any]
) -> None:
    result = record(participant, **cervical_result())
    with refused(RuleViolation, "A reason is required to correct a reference-standard result", field="reason"):
        services.reference_result_correct(
            actor=actor_for(pathologist), result=result, changes={"cervical_histology": "cin3"}, reason=""
        )
    result.refresh_from_db()
    assert result.cervical_histology == "cin2"


def test_it_refuses_an_unchanged_reference_correction(
    pathologist: Any, participant: Participant, record: Callable[..., Any]
) -> None:
    result = record(participant, **cervical_result())
    with refused(RuleViolation, "Nothing to correct: the values are unchanged"):
        services.reference_result_correct(
            actor=actor_for(pathologist), result=result, changes={"cervical_histology": "cin2"}, reason="Second look"
        )


def test_it_refuses_a_reference_correction_that_breaks_a_rule(
    pathologist: Any, participant: Participant, record: Callable[..., Any]
) -> None:
    result = record(participant, **cervical_result())
    with refused(RuleViolation, "FIGO stage is given only for invasive cancer"):
        services.reference_result_correct(
            actor=actor_for(pathologist), result=result, changes={"figo_stage": "IA1"}, reason="Staging added"
        )
    result.refresh_from_db()
    assert result.figo_stage == ""


def test_it_refuses_a_correction_reason_over_2000_characters(
    pathologist: Any, participant: Participant, record: Callable[..., Any]
) -> None:
    result = record(participant, **cervical_result())
    with refused(RuleViolation, "at most 2000 characters", field="reason"):
        services.reference_result_correct(
            actor=actor_for(pathologist), result=result, changes={"cervical_histology": "cin3"}, reason="r" * 2001
        )


def test_it_records_before_and_after_of_a_reference_correction(
    pathologist: Any, participant: Participant, record: Callable[..., Any]
) -> None:
    result = record(participant, **cervical_result())
    services.reference_result_correct(
        actor=actor_for(pathologist),
        result=result,
        changes={"cervical_histology": "invasive_adenocarcinoma", "figo_stage": "IA2"},
        reason="Deeper levels cut",
    )
    event = AuditEvent.objects.get(action="reference_result.correct")
    assert (event.before["cervical_histology"], event.before["figo_stage"]) == ("cin2", "")
    assert (event.after["cervical_histology"], event.after["figo_stage"]) == ("invasive_adenocarcinoma", "IA2")
    assert event.reason == "Deeper levels cut"
    assert event.object_id == str(result.pk)
    result.refresh_from_db()
    assert result.figo_stage == "IA2"
