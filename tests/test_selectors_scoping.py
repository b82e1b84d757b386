"""Who sees what, for every role: participants, screening entries, audit
events and reference-standard results, read through the selectors (the one
place that decides). Site-scoped roles hold site A (C01) only; the others
hold every site of the trial.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils import timezone

from tests.conftest import SITE_SCOPED_ROLES, SYSTEM, actor_for
from trial import selectors, services
from trial.models import AuditEvent, Participant, Role, ScreeningEntry, Site, Trial

DENIED = "denied"  # PermissionDenied (403): the role has no such capability anywhere
BOTH = frozenset({"C01", "C02"})
SITE_A = frozenset({"C01"})


@dataclass(frozen=True)
class Sees:
    participants: frozenset[str] | str  # site codes seen, or DENIED
    screening: frozenset[str] | str
    audit: str  # DENIED, "site A" (site-A events only) or "trial" (every event of the trial)
    reference_at_a: bool | str  # True: sees the results, DENIED: PermissionDenied
    reference_at_b: bool | str


EXPECTED: dict[str, Sees] = {
    Role.COORDINATOR: Sees(SITE_A, SITE_A, DENIED, True, DENIED),
    Role.CLINICIAN_READER: Sees(SITE_A, SITE_A, DENIED, DENIED, DENIED),
    Role.BLINDED_READER: Sees(DENIED, DENIED, DENIED, DENIED, DENIED),
    Role.PATHOLOGIST: Sees(SITE_A, SITE_A, DENIED, True, DENIED),
    Role.STATISTICIAN_BLINDED: Sees(BOTH, BOTH, DENIED, True, True),
    Role.STATISTICIAN_UNBLINDED: Sees(BOTH, BOTH, DENIED, True, True),
    Role.DSMB: Sees(BOTH, BOTH, DENIED, True, True),
    Role.MONITOR: Sees(SITE_A, SITE_A, "site A", True, DENIED),
    Role.TRIAL_ADMIN: Sees(BOTH, BOTH, "trial", True, True),
}


def test_it_has_an_expectation_for_every_role() -> None:
    assert set(EXPECTED) == set(Role.values)


@dataclass(frozen=True)
class World:
    trial: Trial
    site_a: Site
    site_b: Site
    participant_a: Participant
    participant_b: Participant
    other_trial_entry: ScreeningEntry


@pytest.fixture
def world(
    recruiting: Trial,
    site_a: Site,
    site_b: Site,
    coordinator: Any,
    coordinator_b: Any,
    enroll: Callable[..., Participant],
    screen: Callable[..., ScreeningEntry],
    make_user: Callable[..., Any],
) -> World:
    """Two participants and one pending entry at each site, a reference result
    for each participant, and a second trial with an entry of its own."""
    participant_a = enroll()
    participant_b = enroll(site=site_b, user=coordinator_b)
    screen()
    screen(site=site_b, user=coordinator_b)
    for participant, user in ((participant_a, coordinator), (participant_b, coordinator_b)):
        services.reference_result_record(
            actor=actor_for(user),
            participant=participant,
            kind="cervical_histology",
            sample_date=timezone.localdate() - dt.timedelta(days=1),
            result_date=timezone.localdate(),
            cervical_histology="cin3",
        )
    other = services.trial_create(
        actor=SYSTEM,
        code="OTHER",
        title="Other trial",
        indications=["cervical"],
        planned_sample_size=10,
        start_date=dt.date(2026, 1, 1),
    )
    other_site = services.site_add(actor=SYSTEM, trial=other, code="C01", name="Other site A")
    services.protocol_version_add(
        actor=SYSTEM,
        trial=other,
        version="1",
        effective_date=dt.date(2026, 1, 1),
        consent_form_version="1",
        eligibility_criteria=[{"code": "IN1", "text": "Adult", "kind": "inclusion"}],
    )
    services.trial_set_status(actor=SYSTEM, trial=other, status="recruiting", reason="Approved")
    other_coordinator = make_user("other-coordinator", Role.COORDINATOR, trial=other, site=other_site)
    other_entry = services.screening_create(
        actor=actor_for(other_coordinator),
        site=other_site,
        screened_on=timezone.localdate(),
        indication="cervical",
        year_of_birth=1985,
        sex="female",
    )
    return World(recruiting, site_a, site_b, participant_a, participant_b, other_entry)


def fresh(user: Any) -> Any:
    """The user as a new request would load it (no cached memberships)."""
    return type(user).objects.get(pk=user.pk)


ROLES = list(Role.values)


@pytest.mark.parametrize("role", ROLES)
def test_it_shows_each_role_the_participants_of_its_sites(world: World, users: dict[str, Any], role: str) -> None:
    expected = EXPECTED[role].participants
    user = fresh(users[role])
    if expected == DENIED:
        with pytest.raises(PermissionDenied):
            selectors.participants(user)
        return
    seen = selectors.participants(user)
    assert {p.site.code for p in seen} == expected
    assert set(seen.values_list("pk", flat=True)) == set(
        Participant.objects.filter(trial=world.trial, site__code__in=expected).values_list("pk", flat=True)
    )


@pytest.mark.parametrize("role", ROLES)
def test_it_shows_each_role_the_screening_log_of_its_sites(world: World, users: dict[str, Any], role: str) -> None:
    expected = EXPECTED[role].screening
    user = fresh(users[role])
    if expected == DENIED:
        with pytest.raises(PermissionDenied):
            selectors.screening_entries(user)
        return
    seen = selectors.screening_entries(user)
    assert {entry.site.code for entry in seen} == expected
    assert {entry.trial_id for entry in seen} == {world.trial.pk}
    assert seen.count() == ScreeningEntry.objects.filter(trial=world.trial, site__code__in=expected).count()


@pytest.mark.parametrize("role", ROLES)
def test_it_shows_each_role_the_audit_events_of_its_scope(world: World, users: dict[str, Any], role: str) -> None:
    expected = EXPECTED[role].audit
    user = fresh(users[role])
    if expected == DENIED:
        with pytest.raises(PermissionDenied):
            selectors.audit_events(user)
        return
    seen = set(selectors.audit_events(user).values_list("pk", flat=True))
    trial_events = AuditEvent.objects.filter(trial=world.trial)
    if expected == "site A":
        wanted = set(trial_events.filter(site=world.site_a).values_list("pk", flat=True))
    else:
        wanted = set(trial_events.values_list("pk", flat=True))
    assert wanted
    assert seen == wanted


def test_it_hides_trial_wide_and_other_site_events_from_a_site_monitor(world: World, users: dict[str, Any]) -> None:
    seen = selectors.audit_events(fresh(users[Role.MONITOR]))
    assert seen.exists()
    assert not seen.filter(site__isnull=True).exists()
    assert not seen.filter(site=world.site_b).exists()
    assert AuditEvent.objects.filter(trial=world.trial, site__isnull=True, action="trial.status").exists()
    assert AuditEvent.objects.filter(site=world.site_b, action="participant.enroll").exists()


def test_it_hides_other_trials_events_from_a_trial_admin(world: World, users: dict[str, Any]) -> None:
    seen = selectors.audit_events(fresh(users[Role.TRIAL_ADMIN]))
    assert not seen.exclude(trial=world.trial).exists()
    assert AuditEvent.objects.exclude(trial=world.trial).exists()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("where", ["a", "b"])
def test_it_shows_reference_results_only_to_roles_that_may_see_them(
    world: World, users: dict[str, Any], role: str, where: str
) -> None:
    expected = EXPECTED[role].reference_at_a if where == "a" else EXPECTED[role].reference_at_b
    participant = world.participant_a if where == "a" else world.participant_b
    user = fresh(users[role])
    if expected == DENIED:
        with pytest.raises(PermissionDenied):
            selectors.reference_results(user, participant)
        return
    results = selectors.reference_results(user, participant)
    assert [r.cervical_histology for r in results] == ["cin3"]


@pytest.mark.parametrize("role", ROLES)
def test_it_answers_404_for_a_participant_outside_the_roles_sites(
    world: World, users: dict[str, Any], role: str
) -> None:
    expected = EXPECTED[role].participants
    user = fresh(users[role])
    if expected == DENIED:
        with pytest.raises(PermissionDenied):
            selectors.participant_get(user, world.participant_b.pk)
    elif "C02" in expected:
        assert selectors.participant_get(user, world.participant_b.pk) == world.participant_b
    else:
        with pytest.raises(Http404):
            selectors.participant_get(user, world.participant_b.pk)


@pytest.mark.parametrize("role", sorted(SITE_SCOPED_ROLES))
def test_it_answers_404_for_a_screening_entry_of_another_site(world: World, users: dict[str, Any], role: str) -> None:
    with pytest.raises(Http404):
        selectors.screening_get(fresh(users[role]), world.participant_b.screening_id)


@pytest.mark.parametrize("role", [r for r in ROLES if EXPECTED[r].participants != DENIED])
def test_it_answers_404_for_an_entry_of_another_trial(world: World, users: dict[str, Any], role: str) -> None:
    with pytest.raises(Http404):
        selectors.screening_get(fresh(users[role]), world.other_trial_entry.pk)


def test_it_answers_404_for_a_participant_id_that_does_not_exist(world: World, users: dict[str, Any]) -> None:
    with pytest.raises(Http404):
        selectors.participant_get(fresh(users[Role.TRIAL_ADMIN]), 999_999)


def test_it_shows_a_user_with_no_membership_nothing(world: World, make_user: Callable[..., Any]) -> None:
    stranger = make_user("stranger")
    with pytest.raises(PermissionDenied):
        selectors.participants(stranger)
    with pytest.raises(PermissionDenied):
        selectors.audit_events(stranger)
    assert not selectors.trials_visible(stranger).exists()


def test_it_shows_a_revoked_role_nothing(world: World, users: dict[str, Any]) -> None:
    monitor = users[Role.MONITOR]
    services.membership_revoke(actor=SYSTEM, membership=monitor.memberships.get(), reason="Monitoring ended")
    with pytest.raises(PermissionDenied):
        selectors.audit_events(fresh(monitor))


def test_it_hides_reference_events_from_a_clinician_readers_timeline(world: World, users: dict[str, Any]) -> None:
    clinician = fresh(users[Role.CLINICIAN_READER])
    timeline = selectors.participant_timeline(clinician, world.participant_a)
    assert timeline.filter(action="participant.enroll").exists()
    assert not timeline.filter(action__startswith="reference_result").exists()
    coordinator_timeline = selectors.participant_timeline(fresh(users[Role.COORDINATOR]), world.participant_a)
    assert coordinator_timeline.filter(action="reference_result.record").exists()


def test_it_gives_a_site_scoped_role_and_a_trial_wide_role_their_union(world: World, users: dict[str, Any]) -> None:
    """A coordinator at site A who is also the trial's blinded statistician sees
    both sites' participants (the statistician's view), not only site A."""
    coordinator = users[Role.COORDINATOR]
    services.membership_grant(actor=SYSTEM, user=coordinator, trial=world.trial, role=Role.STATISTICIAN_BLINDED)
    seen = selectors.participants(fresh(coordinator))
    assert {p.site.code for p in seen} == BOTH
