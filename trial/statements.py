"""Raw statements for the few hot paths where round trips to the database
decide throughput (randomization under concurrency). Everything else uses
the ORM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, models

Statement = tuple[str, Sequence[Any]]


def quoted_table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def insert_statement(instance: models.Model) -> Statement:
    """An INSERT of every concrete field of `instance`, primary key included
    (it must be set), with values prepared as the ORM's save would."""
    if instance.pk is None:
        raise ValueError(f"{type(instance).__name__} needs its primary key before a batched insert")
    fields = instance._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    values = [field.get_db_prep_save(field.pre_save(instance, add=True), connection) for field in fields]
    # From here on the instance behaves as a saved row (a later save() updates it).
    instance._state.adding, instance._state.db = False, connection.alias
    return f"INSERT INTO {quoted_table(type(instance))} ({columns}) VALUES ({placeholders})", values  # noqa: S608


def reserve_primary_keys(
    *model_classes: type[models.Model], advisory_lock: tuple[int, int] | None = None
) -> list[int | None]:
    """Reserve the next primary key of each model from its table's sequence
    (PostgreSQL, one round trip), so rows can reference each other before
    they are inserted; Nones where the database has no sequences (SQLite
    assigns the key on insert). `advisory_lock` (two integer keys) also takes
    that transaction-scoped advisory lock in the same statement, waiting for
    it if need be (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        return [None] * len(model_classes)
    calls = ["nextval(pg_get_serial_sequence(%s, %s))"] * len(model_classes)
    params: list[Any] = [name for model in model_classes for name in (model._meta.db_table, model._meta.pk.column)]
    if advisory_lock is not None:
        calls.append("pg_advisory_xact_lock(%s, %s)")
        params.extend(advisory_lock)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(calls)}", params)
        row = cursor.fetchone()
    return [int(key) for key in row[: len(model_classes)]]


def execute_together(statements: Sequence[Statement]) -> None:
    """Run the statements in order, in one round trip on PostgreSQL and one by
    one elsewhere. Several statements can share one message only when the
    parameters are bound on the client, so on PostgreSQL this uses a
    client-binding cursor whatever the connection's default."""
    if connection.vendor == "postgresql" and len(statements) > 1:
        from django.db.backends.postgresql.base import Cursor as ClientBindingCursor  # type: ignore[attr-defined]

        connection.ensure_connection()
        raw = ClientBindingCursor(connection.connection)
        cursor = connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
        with cursor:
            cursor.execute(";\n".join(sql for sql, _ in statements), [p for _, params in statements for p in params])
        return
    with connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)
