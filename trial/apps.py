from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _register_sqlite_functions(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "sqlite":
        from trial.audit import sqlite_purge_allowed

        connection.connection.create_function("consilium_audit_purge_allowed", 0, sqlite_purge_allowed)


class TrialConfig(AppConfig):
    name = "trial"
    verbose_name = "Trial, enrollment and audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        connection_created.connect(_register_sqlite_functions, dispatch_uid="consilium-sqlite-functions")
