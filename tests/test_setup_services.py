"""Trial set-up: creating a trial, its sites and protocol versions, granting
and revoking roles, opening and closing recruitment. Only the system, a
superuser or the trial's admin may do it; each refusal writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.conftest import CRITERIA, SYSTEM, actor_for
from trial import services
from trial.errors import Conflict, DomainError, NotAllowed, RuleViolation
from trial.models import AuditEvent, Membership, ProtocolVersion, Role, Site, Trial, TrialStatus

NON_ADMIN_ROLES = [role for role in Role.values if role != Role.TRIAL_ADMIN]


def written() -> dict[str, Any]:
    return {
        "trials": list(Trial.objects.order_by("pk").values_list("code", "status")),
        "sites": Site.objects.count(),
        "protocols": ProtocolVersion.objects.count(),
        "memberships": list(Membership.objects.order_by("pk").values_list("pk", "active")),
        "events": AuditEvent.objects.count(),
    }


@contextmanager
def refused(error: type[DomainError], match: str, field: str | None = None) -> Iterator[None]:
    """The block must raise `error` with a clear message and write nothing."""
    before = written()
    with pytest.raises(error, match=match) as caught:
        yield
    if field is not None:
        assert caught.value.field == field
    assert written() == before


@pytest.fixture
def admin(users: dict[str, Any]) -> Any:
    return users[Role.TRIAL_ADMIN]


@pytest.fixture
def superuser(db: Any) -> Any:
    return get_user_model().objects.create_superuser(username="root", password="a-long-root-password-7")


@pytest.fixture
def bare_trial(make_user: Callable[..., Any]) -> tuple[Trial, Any]:
    """A trial in set-up with no site and no protocol, and its admin."""
    trial = services.trial_create(
        actor=SYSTEM,
        code="BARE",
        title="Bare trial",
        indications=["thyroid"],
        planned_sample_size=20,
        start_date=dt.date(2026, 3, 1),
    )
    return trial, make_user("bare-admin", Role.TRIAL_ADMIN, trial=trial)


def create_trial(actor: Any, **overrides: Any) -> Trial:
    arguments: dict[str, Any] = {
        "actor": actor,
        "code": "NEXT",
        "title": "Next trial",
        "indications": ["cervical"],
        "planned_sample_size": 100,
        "start_date": dt.date(2026, 6, 1),
    }
    arguments.update(overrides)
    return services.trial_create(**arguments)


# --- trial_create -----------------------------------------------------------------------


def test_it_lets_a_superuser_create_a_trial(superuser: Any) -> None:
    trial = create_trial(actor_for(superuser), indications=["thyroid", "cervical", "thyroid"])
    assert trial.status == TrialStatus.SETUP
    assert trial.indications == ["cervical", "thyroid"]
    assert AuditEvent.objects.get(action="trial.create").role == "superuser"


@pytest.mark.parametrize("role", [Role.TRIAL_ADMIN, Role.COORDINATOR, Role.DSMB])
def test_it_refuses_trial_creation_by_a_user_who_is_not_superuser(users: dict[str, Any], role: str) -> None:
    with refused(NotAllowed, "Only the system or a superuser may create a trial"):
        create_trial(actor_for(users[role]))


def test_it_refuses_a_duplicate_trial_code(trial: Trial) -> None:
    with refused(Conflict, "A trial with code 'CONSILIUM' already exists", field="code"):
        create_trial(SYSTEM, code="CONSILIUM")


@pytest.mark.parametrize("indications", [[], ["lung"], ["cervical", "prostate"]])
def test_it_refuses_indications_not_offered(db: Any, indications: list[str]) -> None:
    with refused(RuleViolation, "Indications must be chosen from cervical, thyroid", field="indications"):
        create_trial(SYSTEM, indications=indications)


def test_it_refuses_a_trial_code_that_is_not_a_slug(db: Any) -> None:
    with refused(RuleViolation, "code: ", field="code"):
        create_trial(SYSTEM, code="two words")


@pytest.mark.parametrize(
    ("covariates", "message"),
    [
        ([{"name": "hpv", "choices": ["positive"]}], "at least two choices"),
        ([{"choices": ["a", "b"]}], "needs a name"),
        ([{"name": "hpv", "choices": ["a", "b"]}, {"name": "hpv", "choices": ["c", "d"]}], "'hpv' is defined twice"),
        ([{"name": "hpv", "choices": ["a", "b"], "indication": "lung"}], "'hpv' names an unknown indication"),
    ],
)
def test_it_refuses_malformed_stratification_covariates(db: Any, covariates: list[dict], message: str) -> None:
    with refused(RuleViolation, message, field="stratification_covariates"):
        create_trial(SYSTEM, stratification_covariates=covariates)


# --- trial_set_status -------------------------------------------------------------------


def test_it_lets_the_trial_admin_close_recruitment(admin: Any, recruiting: Trial) -> None:
    trial = services.trial_set_status(
        actor=actor_for(admin), trial=recruiting, status="recruitment_closed", reason="Sample size reached"
    )
    trial.refresh_from_db()
    assert trial.status == TrialStatus.RECRUITMENT_CLOSED
    event = AuditEvent.objects.get(action="trial.status", reason="Sample size reached")
    assert (event.before, event.after) == ({"status": "recruiting"}, {"status": "recruitment_closed"})


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_it_refuses_a_status_change_by_a_role_other_than_trial_admin(
    users: dict[str, Any], recruiting: Trial, role: str
) -> None:
    with refused(NotAllowed, "does not permit"):
        services.trial_set_status(actor=actor_for(users[role]), trial=recruiting, status="completed", reason="Done")


def test_it_refuses_a_status_change_by_the_admin_of_another_trial(
    recruiting: Trial, bare_trial: tuple[Trial, Any]
) -> None:
    _, other_admin = bare_trial
    with refused(NotAllowed, "does not permit"):
        services.trial_set_status(actor=actor_for(other_admin), trial=recruiting, status="completed", reason="Done")


def test_it_requires_a_reason_to_change_the_trial_status(admin: Any, recruiting: Trial) -> None:
    with refused(RuleViolation, "A reason is required to change the trial status", field="reason"):
        services.trial_set_status(actor=actor_for(admin), trial=recruiting, status="completed", reason=" ")


def test_it_refuses_an_unknown_trial_status(admin: Any, recruiting: Trial) -> None:
    with refused(RuleViolation, "Unknown trial status 'paused'", field="status"):
        services.trial_set_status(actor=actor_for(admin), trial=recruiting, status="paused", reason="Holiday")


def test_it_refuses_to_open_recruitment_without_a_site(bare_trial: tuple[Trial, Any]) -> None:
    trial, admin = bare_trial
    services.protocol_version_add(
        actor=actor_for(admin),
        trial=trial,
        version="1",
        effective_date=dt.date(2026, 3, 1),
        consent_form_version="1",
        eligibility_criteria=CRITERIA,
    )
    with refused(RuleViolation, "Recruitment cannot open before the trial has an active site"):
        services.trial_set_status(actor=actor_for(admin), trial=trial, status="recruiting", reason="Approved")


def test_it_refuses_to_open_recruitment_when_every_site_is_inactive(bare_trial: tuple[Trial, Any]) -> None:
    trial, admin = bare_trial
    services.protocol_version_add(
        actor=actor_for(admin),
        trial=trial,
        version="1",
        effective_date=dt.date(2026, 3, 1),
        consent_form_version="1",
        eligibility_criteria=CRITERIA,
    )
    site = services.site_add(actor=actor_for(admin), trial=trial, code="T01", name="Closed site")
    Site.objects.filter(pk=site.pk).update(active=False)
    with refused(RuleViolation, "active site"):
        services.trial_set_status(actor=actor_for(admin), trial=trial, status="recruiting", reason="Approved")


def test_it_refuses_to_open_recruitment_without_a_protocol(bare_trial: tuple[Trial, Any]) -> None:
    trial, admin = bare_trial
    services.site_add(actor=actor_for(admin), trial=trial, code="T01", name="Thyroid site")
    with refused(RuleViolation, "Recruitment cannot open before a protocol version is recorded"):
        services.trial_set_status(actor=actor_for(admin), trial=trial, status="recruiting", reason="Approved")


def test_it_opens_recruitment_with_a_site_and_a_protocol(bare_trial: tuple[Trial, Any]) -> None:
    trial, admin = bare_trial
    services.site_add(actor=actor_for(admin), trial=trial, code="T01", name="Thyroid site")
    services.protocol_version_add(
        actor=actor_for(admin),
        trial=trial,
        version="1",
        effective_date=dt.date(2026, 3, 1),
        consent_form_version="1",
        eligibility_criteria=CRITERIA,
    )
    services.trial_set_status(actor=actor_for(admin), trial=trial, status="recruiting", reason="Ethics approval")
    trial.refresh_from_db()
    assert trial.is_recruiting


# --- protocol_version_add ---------------------------------------------------------------


def add_protocol(actor: Any, trial: Trial, **overrides: Any) -> ProtocolVersion:
    arguments: dict[str, Any] = {
        "actor": actor,
        "trial": trial,
        "version": "2.0",
        "effective_date": dt.date(2026, 4, 1),
        "consent_form_version": "2.0",
        "eligibility_criteria": CRITERIA,
        "amendment_reason": "Amendment 1: thyroid nodules from 8 mm",
    }
    arguments.update(overrides)
    return services.protocol_version_add(**arguments)


def test_it_lets_the_trial_admin_amend_the_protocol_with_a_reason(admin: Any, recruiting: Trial) -> None:
    protocol = add_protocol(actor_for(admin), recruiting)
    assert protocol.amendment_reason == "Amendment 1: thyroid nodules from 8 mm"
    assert recruiting.protocol_versions.count() == 2
    assert AuditEvent.objects.get(action="protocol_version.add", object_id=str(protocol.pk)).reason == (
        "Amendment 1: thyroid nodules from 8 mm"
    )


def test_it_records_the_first_protocol_version_without_a_reason(bare_trial: tuple[Trial, Any]) -> None:
    trial, admin = bare_trial
    protocol = add_protocol(actor_for(admin), trial, version="1", amendment_reason="")
    assert protocol.amendment_reason == ""


def test_it_requires_a_reason_to_amend_the_protocol(admin: Any, recruiting: Trial) -> None:
    with refused(RuleViolation, "A reason is required to amend the protocol", field="reason"):
        add_protocol(actor_for(admin), recruiting, amendment_reason="")


def test_it_refuses_a_duplicate_protocol_version(admin: Any, recruiting: Trial) -> None:
    with refused(Conflict, r"Protocol version 1\.0 already exists", field="version"):
        add_protocol(actor_for(admin), recruiting, version="1.0")


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ([{"code": "IN1", "text": "Adult"}], "needs a code, a text and a kind"),
        ([{"code": "IN1", "text": "Adult", "kind": "maybe"}], "needs a code, a text and a kind"),
        (
            [
                {"code": "IN1", "text": "Adult", "kind": "inclusion"},
                {"code": "IN1", "text": "Again", "kind": "inclusion"},
            ],
            "'IN1' appears twice",
        ),
        ([{"code": "IN9", "text": "Lung", "kind": "inclusion", "indication": "lung"}], "'IN9' names an unknown"),
    ],
)
def test_it_refuses_malformed_eligibility_criteria(
    admin: Any, recruiting: Trial, criteria: list[dict], message: str
) -> None:
    with refused(RuleViolation, message, field="eligibility_criteria"):
        add_protocol(actor_for(admin), recruiting, eligibility_criteria=criteria)


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_it_refuses_a_protocol_amendment_by_a_role_other_than_trial_admin(
    users: dict[str, Any], recruiting: Trial, role: str
) -> None:
    with refused(NotAllowed, "does not permit"):
        add_protocol(actor_for(users[role]), recruiting)


# --- site_add ----------------------------------------------------------------------------


def test_it_lets_the_trial_admin_add_a_site(admin: Any, recruiting: Trial) -> None:
    site = services.site_add(
        actor=actor_for(admin), trial=recruiting, code="C03", name="Site C", country="Kenya", target_participants=40
    )
    assert (site.next_participant_number, site.next_screening_number, site.active) == (1, 1, True)
    assert AuditEvent.objects.get(action="site.add", object_id=str(site.pk)).site_id == site.pk


def test_it_refuses_a_duplicate_site_code_in_a_trial(admin: Any, recruiting: Trial) -> None:
    with refused(Conflict, "Site code 'C01' is already used in this trial", field="code"):
        services.site_add(actor=actor_for(admin), trial=recruiting, code="C01", name="Another A")


def test_it_allows_the_same_site_code_in_another_trial(recruiting: Trial, bare_trial: tuple[Trial, Any]) -> None:
    trial, admin = bare_trial
    assert services.site_add(actor=actor_for(admin), trial=trial, code="C01", name="Elsewhere").code == "C01"


def test_it_refuses_a_site_code_longer_than_its_field(admin: Any, recruiting: Trial) -> None:
    with refused(RuleViolation, "code: ", field="code"):
        services.site_add(actor=actor_for(admin), trial=recruiting, code="C0123456789", name="Long")


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_it_refuses_a_site_added_by_a_role_other_than_trial_admin(
    users: dict[str, Any], recruiting: Trial, role: str
) -> None:
    with refused(NotAllowed, "does not permit"):
        services.site_add(actor=actor_for(users[role]), trial=recruiting, code="C07", name="Site G")


# --- membership_grant / membership_revoke ----------------------------------------------------


def test_it_lets_the_trial_admin_grant_a_role_that_takes_effect_at_once(
    admin: Any, recruiting: Trial, site_b: Site, make_user: Callable[..., Any]
) -> None:
    nurse = make_user("nurse")
    services.membership_grant(actor=actor_for(admin), user=nurse, trial=recruiting, role=Role.COORDINATOR, site=site_b)
    entry = services.screening_create(
        actor=actor_for(nurse),
        site=site_b,
        screened_on=timezone.localdate(),
        indication="thyroid",
        year_of_birth=1970,
        sex="male",
    )
    assert entry.screening_number == "C02-S0001"


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_it_refuses_a_grant_by_a_role_other_than_trial_admin(
    users: dict[str, Any], recruiting: Trial, make_user: Callable[..., Any], role: str
) -> None:
    nurse = make_user("nurse")
    with refused(NotAllowed, "does not permit"):
        services.membership_grant(actor=actor_for(users[role]), user=nurse, trial=recruiting, role=Role.TRIAL_ADMIN)


def test_it_refuses_an_unknown_role(admin: Any, recruiting: Trial, make_user: Callable[..., Any]) -> None:
    with refused(RuleViolation, "Unknown role 'superhero'", field="role"):
        services.membership_grant(actor=actor_for(admin), user=make_user("nurse"), trial=recruiting, role="superhero")


def test_it_refuses_a_site_of_another_trial(
    admin: Any, recruiting: Trial, bare_trial: tuple[Trial, Any], make_user: Callable[..., Any]
) -> None:
    other_trial, other_admin = bare_trial
    other_site = services.site_add(actor=actor_for(other_admin), trial=other_trial, code="T01", name="Other")
    with refused(RuleViolation, "The site belongs to another trial", field="site"):
        services.membership_grant(
            actor=actor_for(admin), user=make_user("nurse"), trial=recruiting, role=Role.COORDINATOR, site=other_site
        )


def test_it_refuses_a_role_the_user_already_holds(
    admin: Any, coordinator: Any, recruiting: Trial, site_a: Site
) -> None:
    with refused(Conflict, "already holds this role here"):
        services.membership_grant(
            actor=actor_for(admin), user=coordinator, trial=recruiting, role=Role.COORDINATOR, site=site_a
        )


def test_it_grants_the_same_role_at_another_site(admin: Any, coordinator: Any, recruiting: Trial, site_b: Site) -> None:
    membership = services.membership_grant(
        actor=actor_for(admin), user=coordinator, trial=recruiting, role=Role.COORDINATOR, site=site_b
    )
    assert membership.site == site_b
    assert Membership.objects.filter(user=coordinator, role=Role.COORDINATOR, active=True).count() == 2


def test_it_reactivates_a_revoked_role_instead_of_duplicating_it(
    admin: Any, coordinator: Any, recruiting: Trial, site_a: Site
) -> None:
    membership = Membership.objects.get(user=coordinator, role=Role.COORDINATOR)
    services.membership_revoke(actor=actor_for(admin), membership=membership, reason="Parental leave")
    again = services.membership_grant(
        actor=actor_for(admin), user=coordinator, trial=recruiting, role=Role.COORDINATOR, site=site_a
    )
    assert again.pk == membership.pk
    assert again.active
    event = AuditEvent.objects.filter(action="membership.grant").order_by("-sequence").first()
    assert (event.before, event.after["active"]) == ({"active": False}, True)


def test_it_requires_a_reason_to_revoke_a_role(admin: Any, coordinator: Any) -> None:
    membership = Membership.objects.get(user=coordinator, role=Role.COORDINATOR)
    with refused(RuleViolation, "A reason is required to revoke a role", field="reason"):
        services.membership_revoke(actor=actor_for(admin), membership=membership, reason="")


def test_it_refuses_to_revoke_a_role_twice(admin: Any, coordinator: Any) -> None:
    membership = Membership.objects.get(user=coordinator, role=Role.COORDINATOR)
    services.membership_revoke(actor=actor_for(admin), membership=membership, reason="Left")
    with refused(Conflict, "already revoked"):
        services.membership_revoke(actor=actor_for(admin), membership=membership, reason="Left again")


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_it_refuses_a_revocation_by_a_role_other_than_trial_admin(
    users: dict[str, Any], coordinator: Any, role: str
) -> None:
    membership = Membership.objects.get(user=coordinator, role=Role.COORDINATOR)
    with refused(NotAllowed, "does not permit"):
        services.membership_revoke(actor=actor_for(users[role]), membership=membership, reason="Not liked")


def test_it_stops_a_revoked_coordinator_from_screening_at_once(admin: Any, coordinator: Any, site_a: Site) -> None:
    membership = Membership.objects.get(user=coordinator, role=Role.COORDINATOR)
    services.membership_revoke(actor=actor_for(admin), membership=membership, reason="Left the site")
    with refused(NotAllowed, "does not permit"):
        services.screening_create(
            actor=actor_for(coordinator),
            site=site_a,
            screened_on=timezone.localdate(),
            indication="cervical",
            year_of_birth=1980,
            sex="female",
        )


def test_it_stops_a_revoked_admin_from_managing_the_trial(admin: Any, recruiting: Trial) -> None:
    membership = Membership.objects.get(user=admin, role=Role.TRIAL_ADMIN)
    services.membership_revoke(actor=SYSTEM, membership=membership, reason="Handed over")
    with refused(NotAllowed, "does not permit"):
        services.site_add(actor=actor_for(admin), trial=recruiting, code="C05", name="Site E")
