"""Login lockout, session expiry, CSRF, and the production settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from tests.conftest import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DEBUG", "SECRET_KEY"}}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def test_it_locks_a_username_out_after_repeated_failed_logins(coordinator, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": coordinator.username, "password": "wrong-password"})
    response = client.post("/accounts/login/", {"username": coordinator.username, "password": PASSWORD})
    assert response.status_code == 429
    assert b"locked" in response.content.lower()
    assert "_auth_user_id" not in client.session


def test_it_signs_in_with_the_right_password_before_any_lockout(coordinator):
    client = Client()
    response = client.post("/accounts/login/", {"username": coordinator.username, "password": PASSWORD})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(coordinator.pk)


def test_it_ends_a_session_after_the_idle_timeout(coordinator, settings):
    client = Client()
    client.post("/accounts/login/", {"username": coordinator.username, "password": PASSWORD})
    assert client.get("/participants/").status_code == 200
    assert settings.SESSION_SAVE_EVERY_REQUEST and settings.SESSION_COOKIE_AGE == 30 * 60
    Session.objects.update(expire_date=timezone.now() - timezone.timedelta(seconds=1))
    response = client.get("/participants/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_refuses_a_form_post_without_its_csrf_token(coordinator, site_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(coordinator)
    response = client.post("/screening/new/", {"site": site_a.pk})
    assert response.status_code == 403


def test_it_sends_the_security_headers(coordinator):
    client = Client()
    client.force_login(coordinator)
    response = client.get("/participants/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_it_refuses_to_start_in_production_without_a_secret_key():
    result = _run_python("import config.settings", DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_it_passes_the_deployment_checklist_with_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "DEBUG": "0",
            "SECRET_KEY": "k" * 20 + "-production-secret-for-the-check-only-9f8e7d6c5b4a",
            "ALLOWED_HOSTS": "consilium.example.org",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_it_uses_postgresql_when_database_url_is_set_and_sqlite_otherwise():
    code = "import config.settings as s; print(s.DATABASES['default']['ENGINE'])"
    assert "postgresql" in _run_python(code, DATABASE_URL="postgres://postgres@127.0.0.1:5432/x").stdout
    assert "sqlite3" in _run_python(code).stdout


def test_it_takes_the_celery_broker_from_the_environment():
    code = "from config.celery import app; print(app.conf.broker_url)"
    assert _run_python(code, CELERY_BROKER_URL="redis://127.0.0.1:6379/5").stdout.strip() == "redis://127.0.0.1:6379/5"
    assert _run_python(code).stdout.strip() == "filesystem://localhost/"
