"""Root test set-up: lets the test database be emptied between transactional
tests although the audit table refuses DELETE/TRUNCATE everywhere else."""

from typing import Any

import pytest
from django.test import TransactionTestCase

# Fixtures for tests with real Celery workers and a real Redis broker, and
# the AI tests' shared engine, outcomes and second checkpoint.
pytest_plugins = ["tests.celery_worker", "tests.ai_fixtures", "tests.reading_fixtures", "tests.browser"]

_original_fixture_teardown = TransactionTestCase._fixture_teardown


def _fixture_teardown_with_audit_purge(self: Any) -> None:
    from trial.audit import purge_allowed

    with purge_allowed():
        _original_fixture_teardown(self)


TransactionTestCase._fixture_teardown = _fixture_teardown_with_audit_purge  # type: ignore[method-assign]


def _celery_in_memory() -> None:
    """Jobs published by the code under test go to an in-memory broker that no
    worker reads, unless a test hands them to a real worker
    (tests/celery_worker.py); nothing is left in var/ between runs."""
    from config.celery import app

    app.conf.broker_url = "memory://"
    app.conf.broker_transport_options = {}


_celery_in_memory()


@pytest.fixture(autouse=True)
def _test_settings(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    # Password hashing is deliberately slow; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
