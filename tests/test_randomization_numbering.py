"""The short, batched section of an allocation: numbering under the scheme's
and the audit chain head's row locks, and the raw statements it writes with."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from randomization import services
from randomization.models import Allocation, RandomizationScheme, SchemeStatus
from tests.conftest import actor_for
from trial.audit import verify_chain
from trial.errors import Conflict
from trial.models import AuditChainHead, AuditEvent, Participant
from trial.statements import execute_together, insert_statement, reserve_primary_keys


def test_it_refuses_to_number_an_allocation_of_a_superseded_scheme(block_scheme: RandomizationScheme) -> None:
    RandomizationScheme.objects.filter(pk=block_scheme.pk).update(status=SchemeStatus.SUPERSEDED)
    made_before = block_scheme.allocations_made
    with pytest.raises(Conflict, match="scheme changed while this request was under way"), transaction.atomic():
        services._number_allocation(block_scheme)
    block_scheme.refresh_from_db()
    assert block_scheme.allocations_made == made_before


def test_numbering_advances_the_scheme_counter_and_the_audit_chain_head_together(
    block_scheme: RandomizationScheme, coordinator: Any, participant: Participant
) -> None:
    services.participant_randomize(actor=actor_for(coordinator), participant=participant)
    head = AuditChainHead.objects.get()
    with transaction.atomic():
        number, audit_sequence, previous_hash = services._number_allocation(block_scheme)
        transaction.set_rollback(True)
    assert number == 2
    assert (audit_sequence, previous_hash) == (head.last_sequence + 1, head.last_hash)


def test_an_allocation_written_by_the_batched_statements_reads_back_as_the_orm_wrote_it(
    block_scheme: RandomizationScheme, coordinator: Any, participant: Participant
) -> None:
    result = services.participant_randomize(actor=actor_for(coordinator), participant=participant)

    stored = Allocation.objects.get(participant=participant)
    assert stored.pk == result.allocation.pk
    assert (stored.arm, stored.stratum, stored.stratum_position, stored.sequence_number) == (
        result.allocation.arm,
        result.allocation.stratum,
        1,
        1,
    )
    assert stored.details == result.allocation.details and "levels" in stored.details
    assert stored.allocated_at == result.allocation.allocated_at
    event = AuditEvent.objects.get(action="randomization.allocate")
    assert event.object_id == str(stored.pk)
    assert event.after["sequence_number"] == 1 and event.after["arm"] == stored.arm
    assert AuditChainHead.objects.get().last_hash == event.hash
    assert verify_chain().ok


def test_a_batched_insert_needs_the_primary_key_first(block_scheme: RandomizationScheme) -> None:
    with pytest.raises(ValueError, match="needs its primary key"):
        insert_statement(Allocation(scheme=block_scheme))


def test_a_failing_statement_in_a_batch_leaves_nothing_of_the_batch(block_scheme: RandomizationScheme) -> None:
    table = RandomizationScheme._meta.db_table
    before = RandomizationScheme.objects.get(pk=block_scheme.pk).allocations_made
    with pytest.raises(Exception, match=r"(?i)no such table|does not exist"), transaction.atomic():
        execute_together(
            [
                (f'UPDATE "{table}" SET allocations_made = allocations_made + 5 WHERE id = %s', [block_scheme.pk]),
                ("UPDATE consilium_no_such_table SET x = 1", []),
            ]
        )
    assert RandomizationScheme.objects.get(pk=block_scheme.pk).allocations_made == before


def test_reserved_primary_keys_are_new_and_distinct_where_the_database_has_sequences(
    block_scheme: RandomizationScheme,
) -> None:
    from django.db import connection

    first = reserve_primary_keys(Allocation, AuditEvent)
    second = reserve_primary_keys(Allocation, AuditEvent)
    if connection.vendor != "postgresql":
        assert first == second == [None, None]  # keys come from the insert instead
        return
    highest_event = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    assert first[1] > highest_event
    assert second[0] > first[0] and second[1] > first[1]
