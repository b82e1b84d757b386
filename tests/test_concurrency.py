"""Study ids and screening numbers handed out under concurrent enrollment:
unique and gapless per site, and the audit chain still links one event at a
time. Real threads and real transactions (transactional_db)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from tests.conftest import actor_for
from tests.threads import run_at_once
from trial import services
from trial.audit import verify_chain
from trial.models import AuditEvent, Participant, ScreeningEntry, Site

THREADS = 8

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _database_shared_between_threads(transactional_db: Any) -> None:
    """An in-memory SQLite test database shares one cache between threads and
    answers "database table is locked" at once instead of letting IMMEDIATE
    transactions queue; only a file database behaves as deployed."""
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.fail(
            "the concurrency tests need a file-based SQLite test database: "
            "set DATABASES['default']['TEST']['NAME'] to a file path"
        )


def test_it_hands_out_unique_gapless_study_ids_to_concurrent_enrollments(
    coordinator: Any, site_a: Site, screen: Callable[..., ScreeningEntry]
) -> None:
    entry_ids = [screen(eligible=True).pk for _ in range(THREADS)]

    def enroll(index: int) -> str:
        entry = ScreeningEntry.objects.get(pk=entry_ids[index])
        participant = services.participant_enroll(
            actor=actor_for(coordinator),
            entry=entry,
            form_version="1.0",
            consented_at=timezone.now() - dt.timedelta(hours=1),
            taken_by=coordinator,
            covariates={"hpv_status": "negative"},
        )
        return participant.study_id

    study_ids, errors = run_at_once(enroll)

    assert errors == []
    assert sorted(study_ids) == [f"C01-{number:04d}" for number in range(1, THREADS + 1)]
    assert sorted(Participant.objects.filter(site=site_a).values_list("study_id", flat=True)) == sorted(study_ids)
    site_a.refresh_from_db()
    assert site_a.next_participant_number == THREADS + 1


def test_it_keeps_the_audit_chain_intact_under_concurrent_enrollments(
    coordinator: Any, screen: Callable[..., ScreeningEntry]
) -> None:
    entry_ids = [screen(eligible=True).pk for _ in range(THREADS)]
    events_before = AuditEvent.objects.count()

    def enroll(index: int) -> None:
        services.participant_enroll(
            actor=actor_for(coordinator),
            entry=ScreeningEntry.objects.get(pk=entry_ids[index]),
            form_version="1.0",
            consented_at=timezone.now() - dt.timedelta(hours=1),
            taken_by=coordinator,
            covariates={"hpv_status": "positive"},
        )

    _, errors = run_at_once(enroll)

    assert errors == []
    assert AuditEvent.objects.filter(action="participant.enroll").count() == THREADS
    assert AuditEvent.objects.count() == events_before + THREADS
    sequences = sorted(AuditEvent.objects.values_list("sequence", flat=True))
    assert sequences == list(range(1, len(sequences) + 1))
    report = verify_chain()
    assert report.ok, report.problem
    assert report.events_checked == events_before + THREADS


def test_it_hands_out_unique_gapless_screening_numbers_to_concurrent_screenings(coordinator: Any, site_a: Site) -> None:
    def screen_one(index: int) -> str:
        entry = services.screening_create(
            actor=actor_for(coordinator),
            site=Site.objects.get(pk=site_a.pk),
            screened_on=timezone.localdate() - dt.timedelta(days=1),
            indication="thyroid",
            year_of_birth=1970 + index,
            sex="male",
        )
        return entry.screening_number

    numbers, errors = run_at_once(screen_one)

    assert errors == []
    assert sorted(numbers) == [f"C01-S{number:04d}" for number in range(1, THREADS + 1)]
    assert ScreeningEntry.objects.filter(site=site_a).count() == THREADS
    report = verify_chain()
    assert report.ok, report.problem


def test_it_keeps_two_sites_numbering_apart_under_concurrent_enrollments(
    coordinator: Any, coordinator_b: Any, site_a: Site, site_b: Site, screen: Callable[..., ScreeningEntry]
) -> None:
    half = THREADS // 2
    work_items = [(coordinator, screen(eligible=True).pk) for _ in range(half)]
    work_items += [(coordinator_b, screen(site=site_b, user=coordinator_b, eligible=True).pk) for _ in range(half)]

    def enroll(index: int) -> str:
        user, entry_id = work_items[index]
        return services.participant_enroll(
            actor=actor_for(user),
            entry=ScreeningEntry.objects.get(pk=entry_id),
            form_version="1.0",
            consented_at=timezone.now() - dt.timedelta(hours=1),
            taken_by=user,
            covariates={"hpv_status": "unknown"},
        ).study_id

    study_ids, errors = run_at_once(enroll)

    assert errors == []
    expected = [f"C01-{n:04d}" for n in range(1, half + 1)] + [f"C02-{n:04d}" for n in range(1, half + 1)]
    assert sorted(study_ids) == expected
    assert verify_chain().ok
