"""Per-request facts the audit trail records: a request id and the client IP;
and a clear 503 when the database cannot be reached."""

from __future__ import annotations

import ipaddress
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError, connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

# Every service is one transaction, so a request that loses its database (a
# restart, a failover, a dropped connection) saved nothing, unless a
# transaction of it committed before the loss: `WriteTracker` tells which.
DATABASE_UNAVAILABLE = "The database is unavailable; nothing was saved. Try again in a moment."
DATABASE_LOST_AFTER_SAVING = (
    "The database became unavailable after your change was saved; reload the page to see it before repeating anything."
)
DATABASE_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 5
_WRITES = ("insert", "update", "delete")


class WriteTracker:
    """A database execute wrapper that notes whether a write of this request
    was committed: a write inside a transaction counts once the outermost
    transaction commits (on_commit), one outside any at once."""

    def __init__(self) -> None:
        self.saved = False

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        result = execute(sql, params, many, context)
        if not self.saved and sql[:24].lstrip().lower().startswith(_WRITES):
            if connection.in_atomic_block:
                transaction.on_commit(self._committed)
            else:
                self.saved = True
        return result

    def _committed(self) -> None:
        self.saved = True


def database_unavailable_message(request: object) -> str:
    tracker = getattr(request, "database_writes", None)
    return DATABASE_LOST_AFTER_SAVING if tracker is not None and tracker.saved else DATABASE_UNAVAILABLE


def database_unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 for a page or an API call whose database went away. The page is
    rendered without context processors: they would query the database."""
    message = database_unavailable_message(request)
    wants_json = request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")
    response: HttpResponse
    if wants_json:
        response = JsonResponse({"detail": message, "code": "DatabaseUnavailable"}, status=503)
    else:
        response = HttpResponse(loader.render_to_string("503.html", {"message": message}), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def client_ip(request: HttpRequest) -> str | None:
    """The client address: REMOTE_ADDR, or the entry of X-Forwarded-For added
    by the last trusted proxy when the deployment declares proxies."""
    candidate = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies > 0 and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            candidate = hops[-proxies]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _note_database_error(sender: object, request: HttpRequest | None = None, **kwargs: object) -> None:
    """Receiver of got_request_exception, sent while Django handles an
    exception that escaped a view or a middleware."""
    error = sys.exc_info()[1]
    if request is not None and isinstance(error, DATABASE_ERRORS):
        request.database_error = error  # type: ignore[attr-defined]


def _lost_the_database(request: HttpRequest, response: HttpResponse) -> bool:
    """Whether a failed answer comes from losing the database in a middleware
    after the view, where process_exception does not reach: Django turned the
    error into a 500 (noted by the receiver above), or the session middleware
    turned its failed save into a 400 (SessionInterrupted) and only the
    connection's error flag tells (the app catches no database error of
    this kind anywhere in a request)."""
    if response.status_code >= 500:
        return getattr(request, "database_error", None) is not None
    return response.status_code == 400 and connection.errors_occurred


got_request_exception.connect(_note_database_error, dispatch_uid="trial.middleware.database_error")


class RequestContextMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        supplied = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        request.client_ip = client_ip(request)  # type: ignore[attr-defined]
        tracker = WriteTracker()
        request.database_writes = tracker  # type: ignore[attr-defined]
        if connection.connection is None:
            # Left from a connection already closed; the next connect resets it.
            connection.errors_occurred = False
        with connection.execute_wrapper(tracker):
            response = self.get_response(request)
        if _lost_the_database(request, response):
            response = database_unavailable_response(request)
        response["X-Request-ID"] = request_id
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_ERRORS):
            logger.error(
                "Database unavailable during %s %s (request %s): %s",
                request.method,
                request.path,
                getattr(request, "request_id", ""),
                exception,
            )
            return database_unavailable_response(request)
        return None


SESSION_REFRESHED_KEY = "_consilium_refreshed_at"


class SessionRefreshMiddleware:
    """Keep a signed-in session alive while it is used, writing it at most
    once every SESSION_REFRESH_SECONDS rather than at every request
    (Django's SESSION_SAVE_EVERY_REQUEST costs every page a database write
    and a commit; see bench/load.py).

    The idle timeout stays a bound that is never exceeded: each write sets
    the session's expiry to SESSION_COOKIE_AGE from then, so a session ends
    between SESSION_COOKIE_AGE − SESSION_REFRESH_SECONDS and
    SESSION_COOKIE_AGE after its last request. Sits just inside Django's
    SessionMiddleware, which saves a session marked modified. A request
    without a session (anonymous, or signed out by this request) is left
    alone, so no session is created for it; so is a session that is not
    signed in."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        session = getattr(request, "session", None)
        if session is None or SESSION_KEY not in session or session.session_key is None:
            return response
        now = int(time.time())
        refreshed = session.get(SESSION_REFRESHED_KEY)
        if not isinstance(refreshed, int) or not 0 <= now - refreshed < settings.SESSION_REFRESH_SECONDS:
            session[SESSION_REFRESHED_KEY] = now
        return response
