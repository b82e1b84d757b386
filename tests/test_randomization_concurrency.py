"""Concurrent randomization with real threads and real transactions: exactly
one allocation per participant, trial-wide sequence numbers and stratum
positions without gaps or repeats, and an intact audit chain. Runs on SQLite
(serialized IMMEDIATE transactions) and PostgreSQL (row locks)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from randomization import algorithms, services
from randomization.models import Allocation, RandomizationScheme, StratumSequence
from tests.conftest import actor_for
from tests.threads import run_at_once
from trial.audit import verify_chain
from trial.models import AuditEvent, Indication, Participant

THREADS = 8
PER_THREAD = 4

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _database_shared_between_threads(transactional_db: Any) -> None:
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.fail("the concurrency tests need a file-based SQLite test database")


def randomize_by_id(user: Any, participant_id: int) -> services.RandomizationResult:
    """What a request does: read the participant afresh, then randomize."""
    participant = Participant.objects.select_related("trial", "site", "screening").get(pk=participant_id)
    return services.participant_randomize(actor=actor_for(user), participant=participant)


def assert_gapless(scheme: RandomizationScheme) -> None:
    allocations = list(Allocation.objects.order_by("sequence_number"))
    assert [a.sequence_number for a in allocations] == list(range(1, len(allocations) + 1))
    by_stratum: dict[str, list[int]] = {}
    for allocation in allocations:
        by_stratum.setdefault(allocation.stratum, []).append(allocation.stratum_position)
    for stratum, positions in by_stratum.items():
        assert sorted(positions) == list(range(1, len(positions) + 1)), stratum
        sequence = StratumSequence.objects.get(scheme=scheme, stratum=stratum)
        assert sequence.next_position == len(positions) + 1
    scheme.refresh_from_db()
    assert scheme.allocations_made == len(allocations)


def test_it_allocates_distinct_participants_concurrently_without_gaps(
    block_scheme: RandomizationScheme, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    indications = [Indication.CERVICAL, Indication.THYROID]
    ids = [enroll(indication=indications[n % 2]).pk for n in range(THREADS * PER_THREAD)]
    events_before = AuditEvent.objects.count()

    def work(index: int) -> list[int]:
        mine = ids[index * PER_THREAD : (index + 1) * PER_THREAD]
        return [randomize_by_id(coordinator, pk).allocation.pk for pk in mine]

    results, errors = run_at_once(work)

    assert errors == []
    assert Allocation.objects.count() == THREADS * PER_THREAD
    assert sorted(Allocation.objects.values_list("participant_id", flat=True)) == sorted(ids)
    assert len({pk for result in results for pk in result}) == THREADS * PER_THREAD
    assert_gapless(block_scheme)
    # The arms in each stratum are the regenerated sequence, in position order.
    seed = block_scheme.secret.seed
    for stratum in {a.stratum for a in Allocation.objects.all()}:
        arms = list(
            Allocation.objects.filter(stratum=stratum).order_by("stratum_position").values_list("arm", flat=True)
        )
        sequence = algorithms.block_sequence(seed, stratum, block_scheme.ratio, block_scheme.block_sizes)
        assert arms == [next(sequence) for _ in arms]
    assert AuditEvent.objects.filter(action="randomization.allocate").count() == THREADS * PER_THREAD
    assert AuditEvent.objects.count() == events_before + THREADS * PER_THREAD
    report = verify_chain()
    assert report.ok, report.problem


def test_it_allocates_a_participant_requested_concurrently_exactly_once(
    block_scheme: RandomizationScheme, coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    same = enroll().pk
    others = [enroll().pk for _ in range(THREADS // 2)]

    def work(index: int) -> tuple[int, int, bool]:
        # Half the threads race for one participant, the others each
        # randomize their own participant at the same time.
        pk = same if index % 2 == 0 else others[index // 2]
        result = randomize_by_id(coordinator, pk)
        return pk, result.allocation.pk, result.created

    results, errors = run_at_once(work)

    assert errors == []
    racing = [(allocation, created) for pk, allocation, created in results if pk == same]
    assert len(racing) == THREADS // 2
    assert len({allocation for allocation, _ in racing}) == 1
    assert Counter(created for _, created in racing) == {True: 1, False: THREADS // 2 - 1}
    assert Allocation.objects.filter(participant_id=same).count() == 1
    assert Allocation.objects.count() == 1 + len(others)
    assert_gapless(block_scheme)
    assert AuditEvent.objects.filter(action="randomization.allocate").count() == 1 + len(others)
    assert verify_chain().ok


def test_it_replays_concurrent_minimization_allocations_exactly(
    make_scheme: Callable[..., Any], coordinator: Any, enroll: Callable[..., Participant]
) -> None:
    """Under concurrency each minimization choice still sees every earlier
    allocation: verify_allocations replays them in sequence order."""
    scheme = make_scheme("minimization", factors=["site", "indication"])
    ids = [enroll(indication=[Indication.CERVICAL, Indication.THYROID][n % 2]).pk for n in range(THREADS * 2)]

    def work(index: int) -> None:
        for pk in ids[index * 2 : index * 2 + 2]:
            randomize_by_id(coordinator, pk)

    _, errors = run_at_once(work)

    assert errors == []
    assert_gapless(scheme)
    out = StringIO()
    call_command("verify_allocations", "--trial", scheme.trial.code, stdout=out)
    assert f"{THREADS * 2} allocation(s) verified" in out.getvalue()
