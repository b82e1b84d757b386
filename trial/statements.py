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


def reserve_primary_keys(*model_classes: type[models.Model]) -> list[int | None]:
    """Reserve the next primary key of each model from its table's sequence
    (PostgreSQL, one round trip), so rows can reference each other before
    they are inserted; Nones where the database has no sequences (SQLite
    assigns the key on insert)."""
    if connection.vendor != "postgresql":
        return [None] * len(model_classes)
    calls = ", ".join(["nextval(pg_get_serial_sequence(%s, %s))"] * len(model_classes))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {calls}", [n for m in model_classes for n in (m._meta.db_table, m._meta.pk.column)])
        return [int(key) for key in cursor.fetchone()]


def execute_together(statements: Sequence[Statement]) -> None:
    """Run the statements in order, in one round trip on PostgreSQL (the
    driver binds parameters on the client, so several statements can share
    one message) and one by one elsewhere."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(statements) > 1:
            cursor.execute(";\n".join(sql for sql, _ in statements), [p for _, params in statements for p in params])
        else:
            for sql, params in statements:
                cursor.execute(sql, params)
