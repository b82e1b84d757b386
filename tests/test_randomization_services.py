"""Randomization services: scheme set-up and activation (the seed
commitment), allocation and its refusals, imported tables, emergency
unblinding, the seed reveal, the verify_allocations command, and what each
role sees of an arm."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from randomization import algorithms, services
from randomization.models import (
    Allocation,
    AllocationTableEntry,
    RandomizationScheme,
    SchemeSecret,
    SchemeStatus,
    SequenceSource,
    StratumSequence,
)
from randomization.selectors import arm_view
from tests.conftest import SYSTEM, actor_for
from trial import services as trial_services
from trial.errors import Conflict, NotAllowed, RuleViolation
from trial.models import (
    AuditEvent,
    Consent,
    EligibilityAssessment,
    Indication,
    Participant,
    Role,
    Site,
    Trial,
    TrialStatus,
    WithdrawalScope,
)
from trial.selectors import participant_timeline

AI = algorithms.AI_ASSISTED
SPECIALIST = algorithms.SPECIALIST_ONLY


def randomize(user: Any, participant: Participant) -> services.RandomizationResult:
    return services.participant_randomize(actor=actor_for(user), participant=participant)


def configure(trial: Trial, method: str = "permuted_blocks", **options: Any) -> RandomizationScheme:
    options.setdefault("factors", ["site", "indication"])
    if method == "permuted_blocks":
        options.setdefault("block_sizes", [2, 4, 6])
    return services.scheme_configure(actor=SYSTEM, trial=trial, method=method, **options)


def state() -> dict[str, Any]:
    """Everything a refused request must leave as it was."""
    return {
        "allocations": Allocation.objects.count(),
        "positions": sorted(StratumSequence.objects.values_list("stratum", "next_position", "block_index")),
        "allocations_made": sorted(RandomizationScheme.objects.values_list("pk", "allocations_made")),
        "table_used": AllocationTableEntry.objects.filter(used=True).count(),
        "audit_events": AuditEvent.objects.count(),
    }


# --- Scheme set-up --------------------------------------------------------------------


def test_it_refuses_an_unknown_factor(recruiting: Trial) -> None:
    with pytest.raises(RuleViolation, match="Unknown factors: smoking") as error:
        configure(recruiting, factors=["site", "smoking"])
    assert error.value.field == "factors"
    assert not RandomizationScheme.objects.exists()


def test_it_refuses_block_sizes_that_are_not_multiples_of_the_ratio(recruiting: Trial) -> None:
    with pytest.raises(RuleViolation, match="Block size 4 is not a positive multiple of 3"):
        configure(recruiting, ratio=(2, 1), block_sizes=[3, 4])
    with pytest.raises(RuleViolation, match="At least one block size"):
        configure(recruiting, block_sizes=[])
    assert not RandomizationScheme.objects.exists()


@pytest.mark.parametrize("probability", [0.49, 1.01, -1.0])
def test_it_refuses_a_minimization_probability_out_of_range(recruiting: Trial, probability: float) -> None:
    with pytest.raises(RuleViolation, match=r"between 0\.5 and 1") as error:
        configure(recruiting, "minimization", minimization_probability=probability)
    assert error.value.field == "minimization_probability"


def test_it_refuses_minimization_without_factors_or_with_bad_weights(recruiting: Trial) -> None:
    with pytest.raises(RuleViolation, match="at least one factor"):
        configure(recruiting, "minimization", factors=[])
    with pytest.raises(RuleViolation, match="not a factor"):
        configure(recruiting, "minimization", factor_weights={"hpv_status": 2.0})
    with pytest.raises(RuleViolation, match="positive number"):
        configure(recruiting, "minimization", factor_weights={"site": 0})


def test_it_refuses_an_unknown_method_or_measure(recruiting: Trial) -> None:
    with pytest.raises(RuleViolation, match="Unknown method 'urn'"):
        configure(recruiting, "urn")
    with pytest.raises(RuleViolation, match="'range' or 'variance'"):
        configure(recruiting, "minimization", imbalance_measure="entropy")


@pytest.mark.parametrize("role", [role for role in Role.values if role != Role.TRIAL_ADMIN])
def test_it_lets_only_the_trial_admin_configure_a_scheme(users: dict[str, Any], recruiting: Trial, role: str) -> None:
    with pytest.raises(NotAllowed):
        services.scheme_configure(actor=actor_for(users[role]), trial=recruiting, method="simple", factors=["site"])
    assert not RandomizationScheme.objects.exists()
    scheme = services.scheme_configure(
        actor=actor_for(users[Role.TRIAL_ADMIN]), trial=recruiting, method="simple", factors=["site"]
    )
    assert scheme.status == SchemeStatus.DRAFT


def test_it_keeps_the_seed_out_of_the_configuration_audit_event(recruiting: Trial) -> None:
    scheme = configure(recruiting)
    event = AuditEvent.objects.get(action="randomization.configure")
    assert scheme.secret.seed_hex not in str(event.after)
    assert event.after["block_sizes"] == [2, 4, 6]
    assert len(scheme.secret.seed) == 32


def test_it_replaces_an_earlier_draft(recruiting: Trial) -> None:
    first = configure(recruiting)
    second = configure(recruiting, "simple")
    first.refresh_from_db()
    assert first.status == SchemeStatus.SUPERSEDED
    assert (second.version, second.status) == (2, SchemeStatus.DRAFT)


def test_it_needs_a_reason_and_a_new_protocol_version_to_change_an_active_scheme(
    block_scheme: RandomizationScheme, recruiting: Trial, coordinator: Any, participant: Participant
) -> None:
    randomize(coordinator, participant)
    with pytest.raises(RuleViolation, match="A reason is required"):
        configure(recruiting, "minimization")
    with pytest.raises(RuleViolation, match="new protocol version"):
        configure(recruiting, "minimization", reason="Sites recruit unevenly")
    amendment = trial_services.protocol_version_add(
        actor=SYSTEM,
        trial=recruiting,
        version="2.0",
        effective_date=dt.date(2026, 2, 1),
        consent_form_version="1.0",
        eligibility_criteria=recruiting.protocol_versions.get().eligibility_criteria,
        amendment_reason="Minimization",
    )
    draft = configure(recruiting, "minimization", protocol_version=amendment, reason="Sites recruit unevenly")
    assert draft.change_reason == "Sites recruit unevenly"
    active = services.scheme_activate(actor=SYSTEM, trial=recruiting)
    block_scheme.refresh_from_db()
    assert active.pk == draft.pk and block_scheme.status == SchemeStatus.SUPERSEDED
    # The trial-wide running number carries over to the new version.
    assert active.allocations_made == 1


# --- Activation and the commitment ----------------------------------------------------


def test_it_commits_to_the_sha256_of_the_stored_seed(recruiting: Trial) -> None:
    draft = configure(recruiting)
    scheme = services.scheme_activate(actor=SYSTEM, trial=recruiting)
    seed = SchemeSecret.objects.get(scheme=scheme).seed
    event = AuditEvent.objects.get(action="randomization.commit")
    assert scheme.pk == draft.pk and scheme.status == SchemeStatus.ACTIVE
    assert event.after["seed_commitment"] == hashlib.sha256(seed).hexdigest() == scheme.seed_commitment
    assert seed.hex() not in str(event.after)


def test_it_refuses_to_activate_without_a_draft(recruiting: Trial) -> None:
    with pytest.raises(RuleViolation, match="no draft"):
        services.scheme_activate(actor=SYSTEM, trial=recruiting)


def test_it_activates_the_draft_when_recruitment_opens(trial: Trial, site_a: Site) -> None:
    draft = configure(trial)
    assert trial.status == TrialStatus.SETUP
    trial_services.trial_set_status(actor=SYSTEM, trial=trial, status=TrialStatus.RECRUITING, reason="Approved")
    draft.refresh_from_db()
    assert draft.status == SchemeStatus.ACTIVE
    assert draft.seed_commitment == algorithms.commitment(draft.secret.seed)
    commit = AuditEvent.objects.get(action="randomization.commit")
    opened = AuditEvent.objects.get(action="trial.status")
    assert commit.sequence > opened.sequence


# --- Allocation -----------------------------------------------------------------------------


def test_it_records_the_allocation(
    block_scheme: RandomizationScheme, coordinator: Any, participant: Participant
) -> None:
    before = timezone.now()
    result = randomize(coordinator, participant)
    allocation = Allocation.objects.get(participant=participant)
    assert result.created and result.allocation.pk == allocation.pk
    assert allocation.arm in (AI, SPECIALIST)
    assert allocation.stratum == "site=C01|indication=cervical"
    assert (allocation.stratum_position, allocation.sequence_number) == (1, 1)
    assert allocation.scheme_id == block_scheme.pk
    assert allocation.allocated_by == coordinator
    assert allocation.allocated_at >= before
    assert allocation.details["levels"] == {"site": "C01", "indication": "cervical"}
    expected = algorithms.block(block_scheme.secret.seed, allocation.stratum, 0, block_scheme.ratio, [2, 4, 6])[0]
    assert allocation.arm == expected


def test_it_records_one_allocation_audit_event(
    block_scheme: RandomizationScheme, coordinator: Any, participant: Participant
) -> None:
    allocation = randomize(coordinator, participant).allocation
    event = AuditEvent.objects.get(action="randomization.allocate")
    assert event.object_id == str(allocation.pk)
    assert event.actor == coordinator and event.role == Role.COORDINATOR
    assert event.screening_id == participant.screening_id
    assert event.after == {
        "arm": allocation.arm,
        "stratum": allocation.stratum,
        "stratum_position": 1,
        "sequence_number": 1,
        "scheme_version": block_scheme.version,
        "method": "permuted_blocks",
    }


def test_it_returns_the_first_allocation_when_asked_again(
    block_scheme: RandomizationScheme, coordinator: Any, participant: Participant
) -> None:
    first = randomize(coordinator, participant)
    before = state()
    again = randomize(coordinator, participant)
    assert not again.created and again.allocation.pk == first.allocation.pk
    assert again.allocation.arm == first.allocation.arm
    assert state() == before


def test_it_numbers_allocations_per_stratum_and_trial(
    block_scheme: RandomizationScheme, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    cervical = [enroll() for _ in range(3)]
    thyroid = [enroll(indication=Indication.THYROID) for _ in range(2)]
    results = [
        randomize(coordinator, p).allocation for p in [cervical[0], thyroid[0], cervical[1], thyroid[1], cervical[2]]
    ]
    assert [a.sequence_number for a in results] == [1, 2, 3, 4, 5]
    assert [(a.stratum.split("|")[1], a.stratum_position) for a in results] == [
        ("indication=cervical", 1),
        ("indication=thyroid", 1),
        ("indication=cervical", 2),
        ("indication=thyroid", 2),
        ("indication=cervical", 3),
    ]
    block_scheme.refresh_from_db()
    assert block_scheme.allocations_made == 5


def test_it_follows_the_regenerated_block_sequence(
    block_scheme: RandomizationScheme, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    arms = [randomize(coordinator, enroll()).allocation.arm for _ in range(12)]
    sequence = algorithms.block_sequence(
        block_scheme.secret.seed, "site=C01|indication=cervical", block_scheme.ratio, [2, 4, 6]
    )
    assert arms == [next(sequence) for _ in range(12)]


def test_it_stratifies_on_covariates_of_either_indication(
    make_scheme: Callable[..., Any], coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    make_scheme(factors=["site", "indication", "hpv_status", "nodule_size_band"])
    cervical = randomize(coordinator, enroll()).allocation
    thyroid = randomize(coordinator, enroll(indication=Indication.THYROID)).allocation
    assert cervical.stratum == "site=C01|indication=cervical|hpv_status=positive|nodule_size_band=n/a"
    assert thyroid.stratum == "site=C01|indication=thyroid|hpv_status=n/a|nodule_size_band=10-19"


def test_it_records_minimization_scores_and_draw(
    make_scheme: Callable[..., Any], coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    scheme = make_scheme("minimization", factors=["site", "indication"], factor_weights={"site": 2.0})
    first = randomize(coordinator, enroll()).allocation
    second = randomize(coordinator, enroll()).allocation
    assert first.stratum == second.stratum == "all"
    assert first.details["preferred"] is None  # nothing allocated yet: a tie
    assert first.details["draw"] == algorithms.uniform(scheme.secret.seed, "minimization", 1)
    # The second participant shares both levels: the other arm minimizes.
    other = SPECIALIST if first.arm == AI else AI
    assert second.details["preferred"] == other
    assert second.details["scores"] == {first.arm: 6.0, other: 0.0}
    assert second.details["draw"] == algorithms.uniform(scheme.secret.seed, "minimization", 2)
    assert second.arm == (other if second.details["draw"] < 0.8 else first.arm)


# --- Refusals: a clear error and nothing written ----------------------------------------------


def assert_refused(user: Any, participant: Participant, error: type[Exception], message: str) -> None:
    before = state()
    with pytest.raises(error, match=message):
        randomize(user, participant)
    assert state() == before
    assert not Allocation.objects.filter(participant=participant).exists()


@pytest.mark.usefixtures("block_scheme")
def test_it_refuses_a_participant_not_confirmed_eligible(coordinator: Any, participant: Participant) -> None:
    EligibilityAssessment.objects.filter(screening=participant.screening).update(is_eligible=False)
    assert_refused(coordinator, participant, RuleViolation, f"{participant.study_id} is not confirmed eligible")


@pytest.mark.usefixtures("block_scheme")
def test_it_refuses_a_participant_without_an_eligibility_assessment(coordinator: Any, participant: Participant) -> None:
    EligibilityAssessment.objects.filter(screening=participant.screening).delete()
    assert_refused(coordinator, participant, RuleViolation, "is not confirmed eligible")


@pytest.mark.usefixtures("block_scheme")
def test_it_refuses_a_participant_without_consent(coordinator: Any, participant: Participant) -> None:
    Consent.objects.filter(participant=participant).delete()
    assert_refused(coordinator, participant, RuleViolation, f"{participant.study_id} has not consented")


@pytest.mark.usefixtures("block_scheme")
@pytest.mark.parametrize("scope", WithdrawalScope.values)
def test_it_refuses_a_withdrawn_participant(coordinator: Any, participant: Participant, scope: str) -> None:
    trial_services.participant_withdraw(
        actor=actor_for(coordinator),
        participant=participant,
        withdrawn_on=timezone.localdate(),
        scope=scope,
        reason="Participant's wish",
    )
    participant.refresh_from_db()
    assert_refused(coordinator, participant, RuleViolation, f"{participant.study_id} has withdrawn")


@pytest.mark.usefixtures("block_scheme")
@pytest.mark.parametrize("status", [TrialStatus.RECRUITMENT_CLOSED, TrialStatus.COMPLETED])
def test_it_refuses_once_recruitment_is_closed(
    coordinator: Any, participant: Participant, recruiting: Trial, status: str
) -> None:
    trial_services.trial_set_status(actor=SYSTEM, trial=recruiting, status=status, reason="Target reached")
    participant.refresh_from_db()
    assert_refused(coordinator, participant, RuleViolation, "Recruitment is not open for trial CONSILIUM")


def test_it_refuses_without_an_active_scheme(recruiting: Trial, coordinator: Any, participant: Participant) -> None:
    configure(recruiting)  # a draft only
    assert_refused(coordinator, participant, RuleViolation, "has no active randomization scheme")


@pytest.mark.usefixtures("block_scheme")
def test_it_refuses_a_coordinator_of_another_site(coordinator_b: Any, participant: Participant) -> None:
    assert_refused(coordinator_b, participant, NotAllowed, "does not permit")


@pytest.mark.usefixtures("block_scheme")
@pytest.mark.parametrize("role", [role for role in Role.values if role != Role.COORDINATOR])
def test_it_lets_only_coordinators_randomize(users: dict[str, Any], participant: Participant, role: str) -> None:
    assert_refused(users[role], participant, NotAllowed, "does not permit")


@pytest.mark.usefixtures("block_scheme")
def test_it_refuses_to_return_an_allocation_to_another_site(
    coordinator: Any, coordinator_b: Any, participant: Participant
) -> None:
    randomize(coordinator, participant)
    before = state()
    with pytest.raises(NotAllowed):
        randomize(coordinator_b, participant)
    assert state() == before


# --- Imported allocation tables -------------------------------------------------------------

STRATA = [("C01", "cervical"), ("C01", "thyroid"), ("C02", "cervical"), ("C02", "thyroid")]


def table_csv(rows_per_stratum: int = 4, *, strata: list[tuple[str, str]] = STRATA, extra: str = "") -> bytes:
    lines = ["sequence,site,indication,arm"]
    for site, indication in strata:
        for position in range(1, rows_per_stratum + 1):
            arm = [AI, SPECIALIST, SPECIALIST, AI][(position - 1) % 4]
            lines.append(f"{position},{site},{indication},{arm}")
    return ("\n".join(lines) + "\n" + extra).encode()


def import_table(trial: Trial, content: bytes, **options: Any) -> RandomizationScheme:
    draft = configure(trial, **options)
    services.allocation_table_import(actor=SYSTEM, scheme=draft, content=content)
    return services.scheme_activate(actor=SYSTEM, trial=trial)


def test_it_allocates_from_an_imported_table_in_order(
    recruiting: Trial, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    content = table_csv()
    scheme = import_table(recruiting, content)
    assert scheme.source == SequenceSource.TABLE
    assert (
        AuditEvent.objects.get(action="randomization.commit").after["table_sha256"]
        == hashlib.sha256(content).hexdigest()
    )
    arms = [randomize(coordinator, enroll()).allocation.arm for _ in range(4)]
    assert arms == [AI, SPECIALIST, SPECIALIST, AI]
    used = AllocationTableEntry.objects.filter(scheme=scheme, used=True)
    assert sorted(used.values_list("stratum", "position")) == [("site=C01|indication=cervical", n) for n in range(1, 5)]


def test_it_warns_when_an_imported_table_runs_low(
    recruiting: Trial, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    import_table(recruiting, table_csv(3), low_table_warning=1)
    assert randomize(coordinator, enroll()).warnings == []
    warned = randomize(coordinator, enroll()).warnings
    assert warned == ["Only 1 allocation(s) left in stratum site=C01|indication=cervical of the imported table."]
    assert randomize(coordinator, enroll()).warnings == [
        "Only 0 allocation(s) left in stratum site=C01|indication=cervical of the imported table."
    ]


def test_it_refuses_to_allocate_from_an_exhausted_table(
    recruiting: Trial, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    import_table(recruiting, table_csv(2))
    for _ in range(2):
        randomize(coordinator, enroll())
    assert_refused(coordinator, enroll(), RuleViolation, "no entry left for stratum site=C01\\|indication=cervical")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (table_csv(extra="5,C01,cervical,placebo\n"), "Line 18: unknown arm 'placebo'"),
        (table_csv(extra="4,C01,thyroid,ai_assisted\n"), "sequence number 4 appears twice in stratum site=C01"),
        (table_csv(strata=STRATA[:3]), "no rows for the strata: site=C02\\|indication=thyroid"),
        (table_csv(extra="1,C09,cervical,ai_assisted\n"), "strata the trial does not have: site=C09"),
        (b"sequence,site,arm\n1,C01,ai_assisted\n", "lacks the columns: indication"),
        (table_csv(extra="6,C02,thyroid,ai_assisted\n"), "stratum site=C02\\|indication=thyroid have gaps"),
        (table_csv(extra="x,C02,thyroid,ai_assisted\n"), "Line 18: the sequence number is not a whole number"),
        (table_csv(extra="0,C02,thyroid,ai_assisted\n"), "Line 18: sequence numbers start at 1"),
        ("sequence,site,indication,arm\n1,C01,cervical,ai_assisted\n".encode("utf-16"), "not UTF-8"),
        (b"sequence,site,indication,arm\n", "has no rows"),
        (b"", "lacks the columns"),
    ],
    ids=[
        "unknown-arm",
        "duplicate-sequence",
        "missing-stratum",
        "unknown-stratum",
        "missing-column",
        "gap",
        "not-a-number",
        "zero",
        "not-utf8",
        "header-only",
        "empty",
    ],
)
def test_it_refuses_a_malformed_allocation_table(recruiting: Trial, content: bytes, message: str) -> None:
    draft = configure(recruiting)
    events = AuditEvent.objects.count()
    with pytest.raises(RuleViolation, match=message):
        services.allocation_table_import(actor=SYSTEM, scheme=draft, content=content)
    draft.refresh_from_db()
    assert not AllocationTableEntry.objects.exists()
    assert (draft.source, draft.table_sha256) == (SequenceSource.SEED, "")
    assert AuditEvent.objects.count() == events


def test_it_keeps_the_previous_table_when_a_new_one_is_malformed(recruiting: Trial) -> None:
    draft = configure(recruiting)
    services.allocation_table_import(actor=SYSTEM, scheme=draft, content=table_csv(2))
    with pytest.raises(RuleViolation):
        services.allocation_table_import(actor=SYSTEM, scheme=draft, content=table_csv(extra="9,C01,cervical,x\n"))
    assert AllocationTableEntry.objects.filter(scheme=draft).count() == 8


def test_it_refuses_a_table_for_a_scheme_already_in_use(block_scheme: RandomizationScheme) -> None:
    with pytest.raises(Conflict, match="only be loaded into a draft"):
        services.allocation_table_import(actor=SYSTEM, scheme=block_scheme, content=table_csv())
    assert not AllocationTableEntry.objects.exists()


def test_it_refuses_a_table_for_minimization(recruiting: Trial) -> None:
    draft = configure(recruiting, "minimization")
    with pytest.raises(RuleViolation, match="takes no allocation table"):
        services.allocation_table_import(actor=SYSTEM, scheme=draft, content=table_csv())


def test_it_refuses_a_table_import_by_a_coordinator(recruiting: Trial, coordinator: Any) -> None:
    draft = configure(recruiting)
    with pytest.raises(NotAllowed):
        services.allocation_table_import(actor=actor_for(coordinator), scheme=draft, content=table_csv())


def test_it_expects_table_strata_for_covariates_of_each_indication(recruiting: Trial) -> None:
    draft = configure(recruiting, factors=["indication", "hpv_status"])
    lines = ["sequence,indication,hpv_status,arm"]
    for indication, status in [
        ("cervical", "positive"),
        ("cervical", "negative"),
        ("cervical", "unknown"),
        ("thyroid", "n/a"),
    ]:
        lines += [f"1,{indication},{status},{AI}", f"2,{indication},{status},{SPECIALIST}"]
    imported = services.allocation_table_import(actor=SYSTEM, scheme=draft, content="\n".join(lines).encode())
    assert (imported.rows, imported.strata) == (8, 4)


# --- Emergency unblinding ---------------------------------------------------------------------


@pytest.fixture
def allocation(block_scheme: RandomizationScheme, coordinator: Any, participant: Participant) -> Allocation:
    return randomize(coordinator, participant).allocation


def unblind(users: dict[str, Any], allocation: Allocation, **changes: Any) -> Any:
    arguments: dict[str, Any] = {
        "actor": actor_for(users[Role.TRIAL_ADMIN]),
        "allocation": allocation,
        "revealed_to": users[Role.PATHOLOGIST],
        "reason": "Severe bleeding after biopsy; treating team must know the arm",
        "confirmation": f"UNBLIND {allocation.participant.study_id}",
    }
    arguments.update(changes)
    return services.allocation_unblind(**arguments)


def test_it_needs_a_reason_to_unblind(users: dict[str, Any], allocation: Allocation) -> None:
    with pytest.raises(RuleViolation, match="A reason is required to unblind"):
        unblind(users, allocation, reason="  ")


@pytest.mark.parametrize("typed", ["", "UNBLIND", "unblind C01-0001", "UNBLIND C01-0002"])
def test_it_needs_the_typed_confirmation_to_unblind(users: dict[str, Any], allocation: Allocation, typed: str) -> None:
    with pytest.raises(RuleViolation, match="Type 'UNBLIND C01-0001' to confirm") as error:
        unblind(users, allocation, confirmation=typed)
    assert error.value.field == "confirmation"
    assert not allocation.unblindings.exists()


def test_it_unblinds_only_a_member_of_the_trial(
    users: dict[str, Any], allocation: Allocation, make_user: Callable[..., Any]
) -> None:
    with pytest.raises(RuleViolation, match="active member of this trial"):
        unblind(users, allocation, revealed_to=make_user("outsider"))


def test_it_refuses_to_unblind_twice_for_the_same_person(users: dict[str, Any], allocation: Allocation) -> None:
    unblind(users, allocation)
    with pytest.raises(Conflict, match="already unblinded for user-pathologist"):
        unblind(users, allocation)
    assert allocation.unblindings.count() == 1


def test_it_lets_only_the_trial_admin_unblind(users: dict[str, Any], allocation: Allocation) -> None:
    with pytest.raises(NotAllowed):
        unblind(users, allocation, actor=actor_for(users[Role.COORDINATOR]))
    with pytest.raises(NotAllowed):
        unblind(users, allocation, actor=actor_for(users[Role.DSMB]))


def test_it_records_the_unblinding_in_the_audit_trail(users: dict[str, Any], allocation: Allocation) -> None:
    unblinding = unblind(users, allocation)
    event = AuditEvent.objects.get(action="randomization.unblind")
    assert event.object_id == str(unblinding.pk)
    assert event.reason.startswith("Severe bleeding")
    assert event.after == {"participant": "C01-0001", "revealed_to": "user-pathologist"}


def test_it_shows_the_pathologist_the_arm_after_unblinding(users: dict[str, Any], allocation: Allocation) -> None:
    assert not arm_view(users[Role.PATHOLOGIST], allocation).visible
    unblind(users, allocation)
    view = arm_view(users[Role.PATHOLOGIST], allocation)
    assert (view.arm, view.masked) == (allocation.arm, False)
    # Only for the person named: the blinded reader still sees nothing.
    assert not arm_view(users[Role.BLINDED_READER], allocation).visible


# --- Seed reveal --------------------------------------------------------------------------------


def test_it_reveals_the_seed_only_once_the_trial_is_completed(
    users: dict[str, Any], allocation: Allocation, recruiting: Trial
) -> None:
    with pytest.raises(RuleViolation, match="only once the trial is completed"):
        services.scheme_reveal_seed(actor=SYSTEM, trial=recruiting, reason="Final analysis")
    trial_services.trial_set_status(actor=SYSTEM, trial=recruiting, status=TrialStatus.COMPLETED, reason="Done")
    with pytest.raises(RuleViolation, match="A reason is required"):
        services.scheme_reveal_seed(actor=SYSTEM, trial=recruiting, reason="")
    with pytest.raises(NotAllowed):
        services.scheme_reveal_seed(actor=actor_for(users[Role.DSMB]), trial=recruiting, reason="Final analysis")
    assert not AuditEvent.objects.filter(action="randomization.reveal_seed").exists()


def test_it_writes_the_revealed_seed_in_the_audit_trail(allocation: Allocation, recruiting: Trial) -> None:
    trial_services.trial_set_status(actor=SYSTEM, trial=recruiting, status=TrialStatus.COMPLETED, reason="Done")
    [scheme] = services.scheme_reveal_seed(actor=SYSTEM, trial=recruiting, reason="Final analysis")
    event = AuditEvent.objects.get(action="randomization.reveal_seed")
    assert event.after == {"seed": scheme.secret.seed_hex, "seed_commitment": scheme.seed_commitment}
    assert algorithms.commitment(bytes.fromhex(event.after["seed"])) == scheme.seed_commitment
    assert scheme.seed_revealed_at is not None
    with pytest.raises(Conflict, match="already been revealed"):
        services.scheme_reveal_seed(actor=SYSTEM, trial=recruiting, reason="Again")


# --- verify_allocations -----------------------------------------------------------------------------


@pytest.fixture
def two_scheme_trial(
    block_scheme: RandomizationScheme, recruiting: Trial, coordinator: Any, enroll: Callable[..., Participant]
) -> Trial:
    """Ten allocations by permuted blocks, then ten by minimization after a
    protocol amendment."""
    for number in range(10):
        randomize(coordinator, enroll(indication="thyroid" if number % 3 == 0 else "cervical"))
    amendment = trial_services.protocol_version_add(
        actor=SYSTEM,
        trial=recruiting,
        version="2.0",
        effective_date=dt.date(2026, 2, 1),
        consent_form_version="1.0",
        eligibility_criteria=recruiting.protocol_versions.get().eligibility_criteria,
        amendment_reason="Minimization",
    )
    configure(
        recruiting, "minimization", factors=["site", "indication"], protocol_version=amendment, reason="Better balance"
    )
    services.scheme_activate(actor=SYSTEM, trial=recruiting)
    for number in range(10):
        randomize(coordinator, enroll(indication="thyroid" if number % 2 else "cervical"))
    return recruiting


def verify(*arguments: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_allocations", *arguments, stdout=out, stderr=err)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def seeds_of(trial: Trial) -> list[str]:
    return [
        f"--seed={s.seed_hex}"
        for s in SchemeSecret.objects.filter(scheme__trial=trial).exclude(scheme__seed_commitment="")
    ]


def test_it_verifies_every_allocation_of_a_real_trial(two_scheme_trial: Trial) -> None:
    code, out, err = verify("--trial", "CONSILIUM")
    assert (code, err) == (0, "")
    assert "20 allocation(s) verified, sequence numbers 1..20 without gaps: OK" in out
    assert "scheme v1 (Stratified permuted blocks" in out and "10 allocation(s)" in out
    assert "scheme v2 (Pocock–Simon minimization" in out


def test_it_verifies_with_the_revealed_seeds(two_scheme_trial: Trial) -> None:
    code, out, _ = verify("--trial", "CONSILIUM", *seeds_of(two_scheme_trial))
    assert code == 0 and out.rstrip().endswith("OK")


@pytest.mark.parametrize("sequence_number", [4, 15])
def test_it_fails_when_an_allocation_was_altered(two_scheme_trial: Trial, sequence_number: int) -> None:
    allocation = Allocation.objects.get(sequence_number=sequence_number)
    flipped = SPECIALIST if allocation.arm == AI else AI
    Allocation.objects.filter(pk=allocation.pk).update(arm=flipped)
    code, out, err = verify("--trial", "CONSILIUM")
    assert code == 1
    assert err.startswith(f"MISMATCH in trial CONSILIUM: allocation #{sequence_number} ")
    assert f"recorded arm {flipped}" in err
    assert "OK" not in out


def test_it_fails_with_a_wrong_seed(two_scheme_trial: Trial) -> None:
    code, _, err = verify("--trial", "CONSILIUM", "--seed", "00" * 32)
    assert code == 1
    assert "scheme v1: sha256 of the given seed does not equal the commitment" in err


def test_it_fails_when_a_stored_commitment_was_changed(two_scheme_trial: Trial) -> None:
    scheme = RandomizationScheme.objects.get(version=1)
    SchemeSecret.objects.filter(scheme=scheme).update(seed_hex="11" * 32)
    RandomizationScheme.objects.filter(pk=scheme.pk).update(seed_commitment=algorithms.commitment(b"\x11" * 32))
    code, _, err = verify("--trial", "CONSILIUM")
    assert code == 1 and "differs from the one recorded at activation" in err


def test_it_fails_when_a_stratum_position_was_skipped(two_scheme_trial: Trial) -> None:
    last = Allocation.objects.filter(scheme__version=1).order_by("-sequence_number").first()
    assert last is not None
    Allocation.objects.filter(pk=last.pk).update(stratum_position=last.stratum_position + 1)
    code, _, err = verify("--trial", "CONSILIUM")
    assert code == 1 and "a position skipped or given twice" in err


def test_it_verifies_allocations_from_an_imported_table(
    recruiting: Trial, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    import_table(recruiting, table_csv())
    for _ in range(3):
        randomize(coordinator, enroll())
    assert verify("--trial", "CONSILIUM")[0] == 0
    AllocationTableEntry.objects.filter(position=2, stratum="site=C01|indication=cervical").update(arm=AI)
    code, _, err = verify("--trial", "CONSILIUM")
    assert code == 1 and "allocation #2" in err


def test_it_refuses_an_unknown_trial_or_a_seed_that_is_not_hex(recruiting: Trial) -> None:
    with pytest.raises(CommandError, match="No trial with code 'NOPE'"):
        call_command("verify_allocations", "--trial", "NOPE")
    with pytest.raises(CommandError, match="hexadecimal"):
        call_command("verify_allocations", "--trial", "CONSILIUM", "--seed", "xyz")


# --- What each role sees of an arm ----------------------------------------------------------------

REAL_ARM_ROLES = [
    Role.COORDINATOR,
    Role.CLINICIAN_READER,
    Role.MONITOR,
    Role.TRIAL_ADMIN,
    Role.STATISTICIAN_UNBLINDED,
    Role.DSMB,
]
NO_ARM_ROLES = [Role.PATHOLOGIST, Role.BLINDED_READER]


def test_it_covers_every_role() -> None:
    assert set(REAL_ARM_ROLES) | set(NO_ARM_ROLES) | {Role.STATISTICIAN_BLINDED} == set(Role.values)


@pytest.mark.parametrize("role", REAL_ARM_ROLES)
def test_it_shows_the_real_arm_to(users: dict[str, Any], allocation: Allocation, role: str) -> None:
    view = arm_view(users[role], allocation)
    expected = "AI-assisted" if allocation.arm == AI else "Specialist only"
    assert (view.randomized, view.arm, view.label, view.masked) == (True, allocation.arm, expected, False)


@pytest.mark.parametrize("role", NO_ARM_ROLES)
def test_it_shows_no_arm_to(users: dict[str, Any], allocation: Allocation, role: str) -> None:
    view = arm_view(users[role], allocation)
    assert (view.randomized, view.arm, view.label, view.visible) == (True, None, "", False)


def test_it_shows_the_blinded_statistician_a_stable_masked_label(
    users: dict[str, Any], block_scheme: RandomizationScheme, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    allocations = [randomize(coordinator, enroll()).allocation for _ in range(6)]
    labels = algorithms.masked_labels(block_scheme.secret.seed)
    statistician = users[Role.STATISTICIAN_BLINDED]
    for allocation in allocations:
        view = arm_view(statistician, allocation)
        assert (view.arm, view.label, view.masked) == (None, labels[allocation.arm], True)
    assert {arm_view(statistician, a).label for a in allocations} == {"A", "B"}


def test_it_keeps_the_masked_labels_across_scheme_versions(users: dict[str, Any], two_scheme_trial: Trial) -> None:
    first_seed = RandomizationScheme.objects.get(version=1).secret.seed
    labels = algorithms.masked_labels(first_seed)
    for allocation in Allocation.objects.filter(scheme__version=2):
        assert arm_view(users[Role.STATISTICIAN_BLINDED], allocation).label == labels[allocation.arm]


def test_it_shows_the_blinded_statistician_the_real_arm_once_seeds_are_revealed(
    users: dict[str, Any], allocation: Allocation, recruiting: Trial
) -> None:
    trial_services.trial_set_status(actor=SYSTEM, trial=recruiting, status=TrialStatus.COMPLETED, reason="Done")
    services.scheme_reveal_seed(actor=SYSTEM, trial=recruiting, reason="Final analysis")
    view = arm_view(users[Role.STATISTICIAN_BLINDED], allocation)
    assert (view.arm, view.masked) == (allocation.arm, False)
    # Revealing seeds unmasks statistics, not the clinical blind.
    assert not arm_view(users[Role.PATHOLOGIST], allocation).visible


def test_it_shows_a_coordinator_of_another_site_no_arm(coordinator_b: Any, allocation: Allocation) -> None:
    assert not arm_view(coordinator_b, allocation).visible


def test_it_says_not_randomized_without_an_allocation(users: dict[str, Any]) -> None:
    assert arm_view(users[Role.COORDINATOR], None) == arm_view(users[Role.PATHOLOGIST], None)
    assert not arm_view(users[Role.COORDINATOR], None).randomized


@pytest.mark.parametrize("role", Role.values)
def test_it_hides_allocation_events_from_roles_blind_to_the_arm(
    users: dict[str, Any], allocation: Allocation, role: str
) -> None:
    participant = allocation.participant
    unblind(users, allocation, revealed_to=users[Role.BLINDED_READER])
    actions = set(participant_timeline(users[role], participant).values_list("action", flat=True))
    assert "participant.enroll" in actions
    if role in REAL_ARM_ROLES:
        assert {"randomization.allocate", "randomization.unblind"} <= actions
    else:
        assert not actions & {"randomization.allocate", "randomization.unblind"}
