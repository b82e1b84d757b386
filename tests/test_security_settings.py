"""Login lockout, session expiry, CSRF, API throttling, the security headers
(Content-Security-Policy among them), and the production settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Page
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.browser import PageProblems, logged_in
from tests.conftest import PASSWORD, login
from trial.middleware import SESSION_REFRESHED_KEY
from trial.models import AuditEvent, Role

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
    assert settings.SESSION_COOKIE_AGE == 30 * 60 and settings.SESSION_REFRESH_SECONDS == 60
    Session.objects.update(expire_date=timezone.now() - timezone.timedelta(seconds=1))
    response = client.get("/participants/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def _stored_session() -> tuple[Session, dict[str, Any]]:
    [session] = Session.objects.all()
    return session, session.get_decoded()


def test_a_session_in_use_is_written_at_most_once_per_refresh_interval(coordinator, settings):
    client = Client()
    client.post("/accounts/login/", {"username": coordinator.username, "password": PASSWORD})
    assert client.get("/participants/").status_code == 200
    first, data = _stored_session()
    refreshed = data[SESSION_REFRESHED_KEY]
    # Within the interval: no write, the expiry stays.
    assert client.get("/participants/").status_code == 200
    second, data = _stored_session()
    assert second.expire_date == first.expire_date and data[SESSION_REFRESHED_KEY] == refreshed

    # Once the interval has passed (the stored time moved back), the next request writes it again.
    store = SessionStore(session_key=first.session_key)
    store[SESSION_REFRESHED_KEY] = refreshed - settings.SESSION_REFRESH_SECONDS
    store.save()
    Session.objects.update(expire_date=timezone.now() + timezone.timedelta(minutes=5))
    before = timezone.now()
    assert client.get("/participants/").status_code == 200
    third, data = _stored_session()
    assert data[SESSION_REFRESHED_KEY] >= refreshed
    # The expiry is moved on by the full idle timeout, never beyond it.
    assert third.expire_date >= before + timezone.timedelta(seconds=settings.SESSION_COOKIE_AGE - 1)
    assert third.expire_date <= timezone.now() + timezone.timedelta(seconds=settings.SESSION_COOKIE_AGE)


def test_a_session_ends_no_later_than_the_idle_timeout_after_its_last_request(coordinator, settings):
    client = Client()
    client.post("/accounts/login/", {"username": coordinator.username, "password": PASSWORD})
    for _ in range(3):
        assert client.get("/participants/").status_code == 200
        session, _data = _stored_session()
        assert session.expire_date <= timezone.now() + timezone.timedelta(seconds=settings.SESSION_COOKIE_AGE)


def test_anonymous_requests_create_no_session(db):
    client = Client()
    assert client.get("/accounts/login/").status_code == 200
    assert client.get("/participants/").status_code == 302
    assert not Session.objects.exists()


def test_it_refuses_a_form_post_without_its_csrf_token(coordinator, site_a):
    client = Client(enforce_csrf_checks=True)
    client.force_login(coordinator)
    response = client.post("/screening/new/", {"site": site_a.pk})
    assert response.status_code == 403


STRICT_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:", "blob:"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}


def policy_of(response: Any) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *sources = part.split()
        assert name not in directives, f"{name} twice in {header}"
        directives[name] = sources
    return directives


def assert_strict_headers(response: Any) -> None:
    policy = policy_of(response)
    assert policy == STRICT_POLICY
    for sources in policy.values():
        assert not {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*"} & set(sources), policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    # Plain HTTP in the tests (DEBUG on): no HSTS, which a browser ignores there anyway.
    assert "Strict-Transport-Security" not in response


@pytest.mark.parametrize(
    ("who", "path"),
    [
        (None, "/accounts/login/"),
        (Role.COORDINATOR, "/participants/"),
        (Role.COORDINATOR, "/api/v1/participants/"),
        (Role.COORDINATOR, "/api/docs/"),
        (Role.COORDINATOR, "/api/schema/"),
        (Role.TRIAL_ADMIN, "/admin/"),
        (Role.TRIAL_ADMIN, "/admin/trial/site/"),
        (Role.BLINDED_READER, "/participants/"),  # a refusal (403) carries the headers too
    ],
)
def test_it_sends_the_security_headers_with_a_strict_content_security_policy(users, who, path):
    client = login(users[who]) if who else Client()
    response = client.get(path)
    assert response.status_code == (403 if who == Role.BLINDED_READER else 200), path
    assert_strict_headers(response)


def test_the_api_docs_page_loads_its_setup_script_from_a_url_not_inline(coordinator):
    response = login(coordinator).get("/api/docs/")
    page = response.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "an inline <script> in the API docs"
    assert "<style" not in page and "style=" not in page
    [script] = re.findall(r'<script src="(/api/docs/\?[^"]+)"', page)
    setup = login(coordinator).get(script.replace("&amp;", "&"))
    assert setup.status_code == 200
    assert setup["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in setup.content


_PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "s" * 20 + "-production-secret-for-the-test-only-0a1b2c3d4e5f",
    "ALLOWED_HOSTS": "testserver",
}
# A request in a process with the production settings; the token endpoint
# answers a GET (405) without a template or a database row.
_PRODUCTION_REQUEST = """
import json, django
django.setup()
from django.test import Client
answers = {}
for secure in (True, False):
    response = Client().get("/api/v1/auth/token/", secure=secure)
    answers["https" if secure else "http"] = {"status": response.status_code, "headers": dict(response.headers)}
print(json.dumps(answers))
"""


def test_production_sends_hsts_over_tls_and_redirects_plain_http_without_it():
    result = _run_python(_PRODUCTION_REQUEST, DJANGO_SETTINGS_MODULE="config.settings", **_PRODUCTION)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    https, http = answers["https"], answers["http"]
    assert https["status"] == 405
    assert https["headers"]["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert https["headers"]["X-Frame-Options"] == "DENY"
    assert https["headers"]["X-Content-Type-Options"] == "nosniff"
    assert "'unsafe-inline'" not in https["headers"]["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in https["headers"]["Content-Security-Policy"]
    assert http["status"] == 301
    assert http["headers"]["Location"] == "https://testserver/api/v1/auth/token/"
    assert "Strict-Transport-Security" not in http["headers"]


def test_production_takes_every_secret_from_the_environment():
    code = (
        "import json, config.settings as s; d = s.DATABASES['default']; "
        "print(json.dumps([s.SECRET_KEY, d['PASSWORD'], d['USER'], d['HOST'], s.CELERY_BROKER_URL]))"
    )
    result = _run_python(
        code,
        **_PRODUCTION,
        DATABASE_URL="postgres://consilium:pw-from-the-environment@db.internal:5432/consilium",
        CELERY_BROKER_URL="redis://:broker-pw-from-the-environment@cache.internal:6379/0",
    )
    assert result.returncode == 0, result.stderr
    secret, password, user, host, broker = json.loads(result.stdout)
    assert secret == _PRODUCTION["SECRET_KEY"]
    assert (password, user, host) == ("pw-from-the-environment", "consilium", "db.internal")
    assert broker == "redis://:broker-pw-from-the-environment@cache.internal:6379/0"


# A URL with credentials in it (scheme://user:password@host), or a password
# or secret key given a literal value.
_HARD_CODED = re.compile(
    r"[a-z+]+://[^/\s\"'@:]*:[^/\s\"'@]+@|\b(PASSWORD|SECRET_KEY|SECRET)\b\s*[=:]\s*[\"'][^\"']+[\"']",
    re.IGNORECASE,
)


def test_no_credential_is_written_into_the_configuration():
    files = [*sorted((ROOT / "config").glob("*.py")), ROOT / "manage.py"]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _HARD_CODED.search(line)
    ]
    assert found == []
    # The only key written down is the development one, refused when DEBUG is off
    # (test_it_refuses_to_start_in_production_without_a_secret_key).
    source = (ROOT / "config" / "settings.py").read_text()
    assert 'SECRET_KEY = env_str("SECRET_KEY", _DEVELOPMENT_SECRET_KEY if DEBUG else "")' in source


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


# --- The API: tokens, throttling, expired sessions ------------------------------------


@pytest.fixture
def empty_throttle_cache() -> Any:
    """The throttle counters live in the cache, which outlives a test."""
    cache.clear()
    yield
    cache.clear()


def _anonymous_rate() -> int:
    rate = django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["anon"]
    number, period = rate.split("/")
    assert period in {"minute", "min", "m"}, rate
    return int(number)


def test_it_throttles_anonymous_token_requests_from_one_address(coordinator, empty_throttle_cache):
    client = APIClient()
    allowed = _anonymous_rate()
    answers = [
        client.post("/api/v1/auth/token/", {"username": f"guess-{n}", "password": "wrong"}, format="json")
        for n in range(allowed)
    ]
    assert {response.status_code for response in answers} == {400}
    response = client.post("/api/v1/auth/token/", {"username": coordinator.username, "password": PASSWORD})
    assert response.status_code == 429
    assert "Retry-After" in response
    assert not Token.objects.exists()
    # Another address is not held up by the first.
    other = APIClient(REMOTE_ADDR="10.0.0.7").post(
        "/api/v1/auth/token/", {"username": coordinator.username, "password": PASSWORD}, format="json"
    )
    assert other.status_code == 200


def test_it_locks_a_username_out_of_the_token_endpoint_after_repeated_failures(
    coordinator, settings, empty_throttle_cache
):
    client = APIClient()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(
            "/api/v1/auth/token/", {"username": coordinator.username, "password": "wrong-password"}, format="json"
        )
        assert response.status_code == 400
    response = client.post(
        "/api/v1/auth/token/", {"username": coordinator.username, "password": PASSWORD}, format="json"
    )
    # The right password no longer opens it: django-axes refuses the
    # authentication, which the token view reports as bad credentials.
    assert response.status_code == 400
    assert response.json()["non_field_errors"] == ["Unable to log in with provided credentials."]
    assert not Token.objects.filter(user=coordinator).exists()
    # The form login is locked for that username too.
    assert (
        Client().post("/accounts/login/", {"username": coordinator.username, "password": PASSWORD}).status_code == 429
    )


def test_it_does_not_throttle_signed_in_api_users(coordinator, empty_throttle_cache):
    client = APIClient()
    client.force_login(coordinator)
    statuses = {client.get("/api/v1/participants/").status_code for _ in range(_anonymous_rate() + 5)}
    assert statuses == {200}


def test_it_refuses_an_expired_session_on_the_api(coordinator):
    client = APIClient()
    assert client.post("/accounts/login/", {"username": coordinator.username, "password": PASSWORD}).status_code == 302
    assert client.get("/api/v1/participants/").status_code == 200
    Session.objects.update(expire_date=timezone.now() - timezone.timedelta(seconds=1))
    response = client.get("/api/v1/participants/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    # A write with the expired session is refused and writes nothing.
    events = AuditEvent.objects.count()
    response = client.post("/api/v1/screening/", {"site": coordinator.memberships.get().site_id}, format="json")
    assert response.status_code == 401
    assert AuditEvent.objects.count() == events


def test_it_refuses_a_deleted_token(coordinator):
    token = Token.objects.create(user=coordinator)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/v1/participants/").status_code == 200
    token.delete()
    assert client.get("/api/v1/participants/").status_code == 401


# --- In a browser: the pages outside the app's own templates under the policy ----------


def test_the_api_docs_and_the_admin_run_under_the_policy_without_a_violation(
    page: Page, page_problems: PageProblems, live_server: Any, users: dict[str, Any]
) -> None:
    admin = users[Role.TRIAL_ADMIN]
    logged_in(page, live_server, admin, PASSWORD)

    response = page.goto(f"{live_server.url}/api/docs/")
    assert response is not None and response.status == 200
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    page.locator(".swagger-ui .info .title").wait_for()
    assert "Consilium API" in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() > 20
    # The page's own styles came from our stylesheet, not an inline <style>.
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px"

    for path in ("/admin/", "/admin/trial/site/", "/admin/trial/site/add/", "/admin/trial/auditevent/"):
        response = page.goto(f"{live_server.url}{path}")
        assert response is not None and response.status == 200, path
        assert page.locator("#site-name").is_visible()
    page_problems.assert_none()
