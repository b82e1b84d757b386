"""The hash-chained, append-only audit trail (21 CFR Part 11 §11.10(e), ICH E6(R3)).

Each event stores the previous event's hash and its own:
    hash = sha256(previous_hash + canonical JSON of the event's content)
so an edited, removed or reordered event breaks the chain at that point.
`record` is called by services inside their transaction; `verify_chain` walks
the chain for `manage.py verify_audit`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection, models
from django.utils import timezone

from trial.actors import Actor
from trial.models import AuditChainHead, AuditEvent, ScreeningEntry, Site, Trial
from trial.statements import Statement, execute_together, insert_statement, quoted_table

GENESIS_HASH = "0" * 64


def to_json_value(value: Any) -> Any:
    """A JSON-native copy of `value` (dates as ISO strings, model rows as ids),
    so what is hashed is exactly what the database gives back."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat() if timezone.is_aware(value) else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, dict):
        return {str(key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [to_json_value(item) for item in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return str(value)


def snapshot(instance: models.Model, fields: list[str] | None = None) -> dict[str, Any]:
    """The named (or all concrete) fields of a row as JSON values, for the
    before/after of an event."""
    result: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        if fields is not None and field.name not in fields:
            continue
        if field.name == "submission_key":
            continue
        result[field.name] = to_json_value(getattr(instance, field.attname))
    return result


def canonical_content(event: AuditEvent) -> str:
    content = {
        "sequence": event.sequence,
        "occurred_at": to_json_value(event.occurred_at),
        "actor_id": event.actor_id,
        "actor_username": event.actor_username,
        "role": event.role,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "object_label": event.object_label,
        "trial_id": event.trial_id,
        "site_id": event.site_id,
        "screening_id": event.screening_id,
        "before": event.before,
        "after": event.after,
        "reason": event.reason,
        "client_ip": event.client_ip,
        "request_id": event.request_id,
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(previous_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256((previous_hash + canonical_content(event)).encode("utf-8")).hexdigest()


def record(
    *,
    actor: Actor,
    action: str,
    obj: models.Model,
    role: str = "",
    trial: Trial | None = None,
    site: Site | None = None,
    screening: ScreeningEntry | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> AuditEvent:
    """Append one event. Must run inside the caller's transaction, so the
    event and the change it describes commit or roll back together."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit.record must be called inside the service's transaction")
    event = build_event(
        actor=actor,
        action=action,
        obj=obj,
        role=role,
        trial=trial,
        site=site,
        screening=screening,
        before=before,
        after=after,
        reason=reason,
    )
    sequence, previous_hash, event_key = _advance_chain_head_reserving_a_key()
    seal_event(event, sequence=sequence, previous_hash=previous_hash)
    if event_key is None:  # SQLite assigns the key on insert
        event.save(force_insert=True)
        execute_together([head_update_statement(event)])
    else:  # PostgreSQL: the event and the new head in one round trip
        event.pk = event_key
        execute_together([insert_statement(event), head_update_statement(event)])
    return event


def build_event(
    *,
    actor: Actor,
    action: str,
    obj: models.Model,
    role: str = "",
    trial: Trial | None = None,
    site: Site | None = None,
    screening: ScreeningEntry | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> AuditEvent:
    """An unsaved, unchained event; `seal_event` numbers and hashes it once
    the chain head is locked."""
    return AuditEvent(
        actor=actor.user,
        actor_username=actor.username,
        role=role,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_label=str(obj)[:200],
        trial=trial,
        site=site,
        screening=screening,
        before=to_json_value(before) if before is not None else None,
        after=to_json_value(after) if after is not None else None,
        reason=reason,
        client_ip=actor.client_ip,
        request_id=actor.request_id[:64],
    )


def seal_event(event: AuditEvent, *, sequence: int, previous_hash: str) -> None:
    """Number, time-stamp and hash an event under the chain head's lock (so
    times rise with sequence numbers)."""
    event.sequence = sequence
    event.occurred_at = timezone.now()
    event.previous_hash = previous_hash
    event.hash = event_hash(previous_hash, event)


def head_update_statement(event: AuditEvent) -> Statement:
    return f"UPDATE {quoted_table(AuditChainHead)} SET last_hash = %s WHERE id = 1", [event.hash]  # noqa: S608


def advance_chain_head() -> tuple[int, str]:
    """Take the next sequence number and the previous hash in one statement,
    which also locks the head row until the transaction ends: events are
    chained one at a time, in commit order. Only the very first event of a
    database creates the row."""
    statement = (
        f"UPDATE {quoted_table(AuditChainHead)} SET last_sequence = last_sequence + 1 "  # noqa: S608
        "WHERE id = 1 RETURNING last_sequence, last_hash"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement)
        row = cursor.fetchone()
        if row is None:
            AuditChainHead.objects.get_or_create(id=1)
            cursor.execute(statement)
            row = cursor.fetchone()
    return int(row[0]), str(row[1])


def _advance_chain_head_reserving_a_key() -> tuple[int, str, int | None]:
    """advance_chain_head, and on PostgreSQL the next audit event key from
    its sequence in the same statement (None elsewhere)."""
    if connection.vendor != "postgresql":
        return (*advance_chain_head(), None)
    statement = (
        f"UPDATE {quoted_table(AuditChainHead)} SET last_sequence = last_sequence + 1 "  # noqa: S608
        "WHERE id = 1 RETURNING last_sequence, last_hash, nextval(pg_get_serial_sequence(%s, %s))"
    )
    params = [AuditEvent._meta.db_table, AuditEvent._meta.pk.column]
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone()
    if row is None:  # the very first event of a database
        return (*advance_chain_head(), None)
    return int(row[0]), str(row[1]), int(row[2])


@dataclass(frozen=True)
class ChainReport:
    events_checked: int
    ok: bool
    first_bad_sequence: int | None = None
    problem: str = ""


def verify_chain(batch_size: int = 2000) -> ChainReport:
    """Walk every event in sequence order and recompute the chain."""
    expected_previous = GENESIS_HASH
    expected_sequence = 1
    checked = 0
    queryset = AuditEvent.objects.order_by("sequence")
    for event in queryset.iterator(chunk_size=batch_size):
        checked += 1
        if event.sequence != expected_sequence:
            return ChainReport(
                checked,
                False,
                event.sequence,
                f"event #{event.sequence} follows #{expected_sequence - 1}: "
                f"event(s) from #{expected_sequence} are missing",
            )
        if event.previous_hash != expected_previous:
            return ChainReport(
                checked,
                False,
                event.sequence,
                f"event #{event.sequence} does not link to the event before it (removed or reordered)",
            )
        if event_hash(event.previous_hash, event) != event.hash:
            return ChainReport(
                checked, False, event.sequence, f"event #{event.sequence} was altered after it was written"
            )
        expected_previous = event.hash
        expected_sequence += 1
    head = AuditChainHead.objects.filter(id=1).first()
    if head is not None and (head.last_sequence, head.last_hash) != (expected_sequence - 1, expected_previous):
        return ChainReport(
            checked,
            False,
            expected_sequence,
            f"the chain ends at #{expected_sequence - 1} but #{head.last_sequence} was written: "
            "the latest event(s) were removed",
        )
    return ChainReport(checked, True)


# --- Database-level protection -----------------------------------------------------

TABLE = "trial_auditevent"
_PURGE_ALLOWED = threading.local()

POSTGRESQL_INSTALL = [
    """
    CREATE OR REPLACE FUNCTION consilium_audit_append_only() RETURNS trigger AS $$
    BEGIN
        -- Only a superuser (who could drop this trigger anyway) may empty the
        -- table, and only after asking for it: the test database between tests.
        IF TG_OP = 'TRUNCATE' AND current_setting('consilium.audit_purge', true) = 'on'
           AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'audit events are append-only: % refused on %', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END
    $$ LANGUAGE plpgsql
    """,
    f"""CREATE TRIGGER consilium_audit_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION consilium_audit_append_only()""",
    f"""CREATE TRIGGER consilium_audit_no_truncate BEFORE TRUNCATE ON {TABLE}
        FOR EACH STATEMENT EXECUTE FUNCTION consilium_audit_append_only()""",
]
POSTGRESQL_REMOVE = [
    f"DROP TRIGGER IF EXISTS consilium_audit_no_update_delete ON {TABLE}",
    f"DROP TRIGGER IF EXISTS consilium_audit_no_truncate ON {TABLE}",
    "DROP FUNCTION IF EXISTS consilium_audit_append_only()",
]
# SQLite has no session settings; the DELETE trigger asks a function that each
# Django connection registers (trial.apps) and that says yes only inside
# `purge_allowed()`. Any other client lacks the function, so its DELETE fails.
SQLITE_INSTALL = [
    f"""CREATE TRIGGER consilium_audit_no_update BEFORE UPDATE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only: UPDATE refused on {TABLE}'); END""",
    f"""CREATE TRIGGER consilium_audit_no_delete BEFORE DELETE ON {TABLE}
        WHEN NOT consilium_audit_purge_allowed()
        BEGIN SELECT RAISE(ABORT, 'audit events are append-only: DELETE refused on {TABLE}'); END""",
]
SQLITE_REMOVE = [
    "DROP TRIGGER IF EXISTS consilium_audit_no_update",
    "DROP TRIGGER IF EXISTS consilium_audit_no_delete",
]


def sqlite_purge_allowed() -> int:
    return 1 if getattr(_PURGE_ALLOWED, "value", False) else 0


@contextlib.contextmanager
def purge_allowed() -> Iterator[None]:
    """Lets the test database be emptied between transactional tests. Nothing
    in the application calls it."""
    _PURGE_ALLOWED.value = True
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET consilium.audit_purge = 'on'")
    try:
        yield
    finally:
        _PURGE_ALLOWED.value = False
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("RESET consilium.audit_purge")


def install_protection(schema_editor: Any, vendor: str) -> None:
    statements = {"postgresql": POSTGRESQL_INSTALL, "sqlite": SQLITE_INSTALL}.get(vendor)
    if statements is None:
        raise RuntimeError(f"no append-only protection for the {vendor} database")
    for statement in statements:
        schema_editor.execute(statement, params=None)


def remove_protection(schema_editor: Any, vendor: str) -> None:
    for statement in {"postgresql": POSTGRESQL_REMOVE, "sqlite": SQLITE_REMOVE}.get(vendor, []):
        schema_editor.execute(statement, params=None)
