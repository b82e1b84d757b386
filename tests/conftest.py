"""Shared fixtures: a recruiting trial with two sites, and one user for every
role (site-scoped roles at site A unless the fixture name says otherwise)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from trial import services
from trial.actors import Actor
from trial.models import Indication, Participant, Role, ScreeningEntry, Site, Trial, TrialStatus

PASSWORD = "correct-horse-battery-staple-42"
SYSTEM = Actor.system("tests")

CRITERIA = [
    {"code": "IN1", "text": "Aged 25 to 65 years", "kind": "inclusion", "indication": None},
    {
        "code": "IN2",
        "text": "Referred for colposcopy after abnormal screening",
        "kind": "inclusion",
        "indication": "cervical",
    },
    {
        "code": "IN3",
        "text": "Thyroid nodule of 1 cm or more on ultrasound",
        "kind": "inclusion",
        "indication": "thyroid",
    },
    {"code": "EX1", "text": "Pregnant", "kind": "exclusion", "indication": None},
    {"code": "EX2", "text": "Previous treatment of the cervix", "kind": "exclusion", "indication": "cervical"},
]
COVARIATES = [
    {
        "name": "hpv_status",
        "label": "HPV status",
        "choices": ["positive", "negative", "unknown"],
        "indication": "cervical",
    },
    {
        "name": "nodule_size_band",
        "label": "Nodule size band",
        "choices": ["10-19", "20-39", "40+"],
        "indication": "thyroid",
    },
]

# Roles whose fixture users are scoped to site A; the others hold all sites.
SITE_SCOPED_ROLES = {Role.COORDINATOR, Role.CLINICIAN_READER, Role.PATHOLOGIST, Role.MONITOR}


def make_trial(code: str = "CONSILIUM", title: str = "AI second opinion in colposcopy and thyroid ultrasound") -> Trial:
    """The tests' trial (both indications, CRITERIA, COVARIATES) with its
    protocol version 1.0, through the services."""
    trial = services.trial_create(
        actor=SYSTEM,
        code=code,
        title=title,
        indications=[Indication.CERVICAL, Indication.THYROID],
        planned_sample_size=400,
        start_date=dt.date(2026, 1, 5),
        stratification_covariates=COVARIATES,
    )
    services.protocol_version_add(
        actor=SYSTEM,
        trial=trial,
        version="1.0",
        effective_date=dt.date(2026, 1, 1),
        consent_form_version="1.0",
        eligibility_criteria=CRITERIA,
    )
    return trial


@pytest.fixture
def trial(db: Any) -> Trial:
    return make_trial()


@pytest.fixture
def site_a(trial: Trial) -> Site:
    return services.site_add(actor=SYSTEM, trial=trial, code="C01", name="Site A", target_participants=100)


@pytest.fixture
def site_b(trial: Trial) -> Site:
    return services.site_add(actor=SYSTEM, trial=trial, code="C02", name="Site B", target_participants=100)


@pytest.fixture
def recruiting(trial: Trial, site_a: Site, site_b: Site) -> Trial:
    return services.trial_set_status(actor=SYSTEM, trial=trial, status=TrialStatus.RECRUITING, reason="Ethics approval")


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    def make(username: str, role: str | None = None, *, trial: Trial | None = None, site: Site | None = None) -> Any:
        user = get_user_model().objects.create_user(username=username, password=PASSWORD)
        if role is not None:
            assert trial is not None
            services.membership_grant(actor=SYSTEM, user=user, trial=trial, role=role, site=site)
        return user

    return make


@pytest.fixture
def users(recruiting: Trial, site_a: Site, make_user: Callable[..., Any]) -> dict[str, Any]:
    """One user per role; site-scoped roles at site A."""
    return {
        role: make_user(f"user-{role}", role, trial=recruiting, site=site_a if role in SITE_SCOPED_ROLES else None)
        for role in Role.values
    }


@pytest.fixture
def coordinator(users: dict[str, Any]) -> Any:
    return users[Role.COORDINATOR]


@pytest.fixture
def coordinator_b(recruiting: Trial, site_b: Site, make_user: Callable[..., Any]) -> Any:
    return make_user("coordinator-b", Role.COORDINATOR, trial=recruiting, site=site_b)


def actor_for(user: Any) -> Actor:
    return Actor(user=user, client_ip="127.0.0.1", request_id="test-request")


ELIGIBLE_CERVICAL = {"IN1": True, "IN2": True, "EX1": False, "EX2": False}
ELIGIBLE_THYROID = {"IN1": True, "IN3": True, "EX1": False}


@pytest.fixture
def screen(coordinator: Any, site_a: Site) -> Callable[..., ScreeningEntry]:
    def make(
        *,
        site: Site | None = None,
        user: Any = None,
        indication: str = Indication.CERVICAL,
        eligible: bool | None = None,
    ) -> ScreeningEntry:
        entry = services.screening_create(
            actor=actor_for(user or coordinator),
            site=site or site_a,
            screened_on=timezone.localdate() - dt.timedelta(days=3),
            indication=indication,
            year_of_birth=1980,
            sex="female",
        )
        if eligible is not None:
            answers = dict(ELIGIBLE_CERVICAL if indication == Indication.CERVICAL else ELIGIBLE_THYROID)
            if not eligible:
                answers["EX1"] = True
            services.eligibility_assess(actor=actor_for(user or coordinator), entry=entry, answers=answers)
            entry.refresh_from_db()
        return entry

    return make


@pytest.fixture
def enroll(coordinator: Any, screen: Callable[..., ScreeningEntry]) -> Callable[..., Participant]:
    def make(*, site: Site | None = None, user: Any = None, indication: str = Indication.CERVICAL) -> Participant:
        entry = screen(site=site, user=user, indication=indication, eligible=True)
        covariates = {"hpv_status": "positive"} if indication == Indication.CERVICAL else {"nodule_size_band": "10-19"}
        who = user or coordinator
        return services.participant_enroll(
            actor=actor_for(who),
            entry=entry,
            form_version="1.0",
            consented_at=timezone.now() - dt.timedelta(hours=1),
            taken_by=who,
            covariates=covariates,
        )

    return make


@pytest.fixture
def participant(enroll: Callable[..., Participant]) -> Participant:
    return enroll()


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_client(user: Any | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def make_scheme(recruiting: Trial) -> Callable[..., Any]:
    """Configure and activate a randomization scheme for the recruiting trial."""
    from randomization import services as randomization_services

    def make(method: str = "permuted_blocks", **options: Any) -> Any:
        options.setdefault("factors", ["site", "indication"])
        if method == "permuted_blocks":
            options.setdefault("block_sizes", [2, 4, 6])
        randomization_services.scheme_configure(actor=SYSTEM, trial=recruiting, method=method, **options)
        return randomization_services.scheme_activate(actor=SYSTEM, trial=recruiting)

    return make


@pytest.fixture
def block_scheme(make_scheme: Callable[..., Any]) -> Any:
    return make_scheme()
