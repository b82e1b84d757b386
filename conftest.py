"""Root test set-up: lets the test database be emptied between transactional
tests although the audit table refuses DELETE/TRUNCATE everywhere else."""

from typing import Any

import pytest
from django.test import TransactionTestCase

_original_fixture_teardown = TransactionTestCase._fixture_teardown


def _fixture_teardown_with_audit_purge(self: Any) -> None:
    from trial.audit import purge_allowed

    with purge_allowed():
        _original_fixture_teardown(self)


TransactionTestCase._fixture_teardown = _fixture_teardown_with_audit_purge  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _test_settings(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    # Password hashing is deliberately slow; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
